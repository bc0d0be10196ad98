// Fast content fingerprints (XXH64) of models, files and texts: the keys that identify models and
// datasets in the experiment store. Reentrant; any thread.
#include "pocket/io/fingerprint.h"

#include <xxhash.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

namespace pocket {

namespace fs = std::filesystem;

namespace {

std::string hex64(std::uint64_t h)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "xxh64:%016" PRIx64, h);
    return buf;
}

using HashState = std::unique_ptr<XXH64_state_t, XXH_errorcode (*)(XXH64_state_t*)>;

void hashU64(XXH64_state_t* state, std::uint64_t v)
{
    unsigned char le[8];
    for (int i = 0; i < 8; ++i)
        le[i] = static_cast<unsigned char>(v >> (8 * i));
    XXH64_update(state, le, sizeof le);
}

// Size, first MiB and last MiB (not overlapping the first) of one file.
Status hashEnds(XXH64_state_t* state, const fs::path& file)
{
    constexpr std::uint64_t kMiB = 1 << 20;
    std::error_code ec;
    const std::uint64_t size = fs::file_size(file, ec);
    if (ec)
        return fileError(file.string(), "cannot read: " + ec.message());
    std::ifstream in(file, std::ios::binary);
    if (!in)
        return fileError(file.string(), "cannot open for reading");
    hashU64(state, size);
    std::vector<char> buf(static_cast<std::size_t>(std::min(size, kMiB)));
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (!in)
        return fileError(file.string(), "cannot read");
    XXH64_update(state, buf.data(), buf.size());
    const std::uint64_t tail = std::min(kMiB, size - buf.size());
    if (tail > 0) {
        buf.resize(static_cast<std::size_t>(tail));
        in.seekg(static_cast<std::streamoff>(size - tail));
        in.read(buf.data(), static_cast<std::streamsize>(tail));
        if (!in)
            return fileError(file.string(), "cannot read");
        XXH64_update(state, buf.data(), buf.size());
    }
    return {};
}

} // namespace

Result<std::string> modelFingerprint(const std::string& path)
{
    HashState state(XXH64_createState(), XXH64_freeState);
    XXH64_reset(state.get(), 0);
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
        const fs::path config = fs::path(path) / "config.json";
        std::ifstream in(config, std::ios::binary);
        if (!in)
            return fileError(config.string(), "cannot open for reading");
        const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
        XXH64_update(state.get(), text.data(), text.size());
        std::vector<fs::path> files;
        for (const auto& entry : fs::directory_iterator(path, ec)) {
            const std::string ext = entry.path().extension().string();
            const bool weights = ext == ".safetensors" || ext == ".bin" || ext == ".pth" || ext == ".json";
            if (entry.is_regular_file() && weights && entry.path().filename() != "config.json")
                files.push_back(entry.path());
        }
        if (ec)
            return fileError(path, "cannot list the folder: " + ec.message());
        std::sort(files.begin(), files.end());
        for (const fs::path& f : files) {
            const std::string name = f.filename().string();
            XXH64_update(state.get(), name.data(), name.size() + 1); // with its NUL: names cannot run into data
            if (auto s = hashEnds(state.get(), f); !s)
                return s.error();
        }
    } else if (auto s = hashEnds(state.get(), path); !s) {
        return s.error();
    }
    return hex64(XXH64_digest(state.get()));
}

std::string textFingerprint(const std::string& text) { return hex64(XXH64(text.data(), text.size(), 0)); }

Result<std::string> fileFingerprint(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return fileError(path, "cannot open for reading");
    HashState state(XXH64_createState(), XXH64_freeState);
    XXH64_reset(state.get(), 0);
    std::vector<char> buf(1 << 20);
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        XXH64_update(state.get(), buf.data(), static_cast<std::size_t>(in.gcount()));
    }
    if (in.bad())
        return fileError(path, "cannot read");
    return hex64(XXH64_digest(state.get()));
}

} // namespace pocket

// What the fuzz targets share: the readers take paths (they map files), so each input is written to
// a file of the right name in a folder of this process's own, on tmpfs when there is one. A reader
// must refuse bad input with an error; a crash, a sanitizer report, a hang or a leak is a finding.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

namespace fuzz {

inline const std::filesystem::path& folder()
{
    static const std::filesystem::path dir = [] {
        spdlog::set_level(spdlog::level::off); // the readers' warnings are not findings
        const std::filesystem::path base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
        std::filesystem::path d = base / ("pocket-fuzz-" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        return d;
    }();
    return dir;
}

// Writes the input as `name` in this process's folder; its path.
inline std::string writeInput(const std::string& name, const std::uint8_t* data, std::size_t size)
{
    const std::string path = (folder() / name).string();
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f)
        __builtin_trap();
    if (size > 0 && std::fwrite(data, 1, size, f) != size)
        __builtin_trap();
    std::fclose(f);
    return path;
}

// Everything a tensor's values say, read (so that every byte a reader hands out is touched).
template <typename T>
inline void consume(const T& values)
{
    volatile float sink = 0;
    for (const auto v : values)
        sink = sink + static_cast<float>(v);
}

// Encodes and decodes a few strings that reach the tokenizers' odd corners.
template <typename Tokenizer>
inline void exercise(const Tokenizer& t)
{
    static const char* const texts[] = {"Hello world!  Two  spaces,\n\nnew\tlines; 1234567 3.14",
                                        "emoji \xF0\x9F\xA6\x99 CJK \xE6\x97\xA5\xE6\x9C\xAC combining e\xCC\x81 \xCE\xA9",
                                        "", " ", "\xFF\xFE invalid UTF-8 \xC3"};
    for (const char* text : texts) {
        const auto ids = t.encode(text);
        for (const auto id : ids)
            if (id < 0 || id >= t.vocabSize())
                __builtin_trap(); // an id outside the vocabulary
        (void)t.decode(ids);
    }
    std::vector<std::int32_t> special{0, t.vocabSize() - 1};
    for (const auto id : {t.bosId(), t.eosId()})
        if (id >= 0 && id < t.vocabSize())
            special.push_back(id);
    (void)t.decode(special);
}

} // namespace fuzz

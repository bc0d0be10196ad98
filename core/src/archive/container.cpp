// The .pllm container (docs/archive-format.md): magic, version, 64-byte aligned checksummed
// sections, a JSON manifest, and a trailer that locates the manifest.
#include "pocket/archive/container.h"

#include "manifest_fields.h"

#include "pocket/io/atomic_file.h"
#include "pocket/io/mapped_file.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace pocket {

using namespace archive_detail;

namespace {

// docs/archive-format.md describes every constant here.
constexpr std::uint8_t kMagic[8] = {0x89, 'P', 'L', 'L', 'M', '\r', '\n', 0x1a};
constexpr std::uint8_t kEndMagic[8] = {'P', 'L', 'L', 'M', '_', 'E', 'N', 'D'};
constexpr std::uint64_t kHeaderSize = 16;
constexpr std::uint64_t kAlignment = 64;
constexpr std::uint64_t kTrailerSize = 32;

void putLe32(std::uint8_t* p, std::uint32_t v)
{
    for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void putLe64(std::uint8_t* p, std::uint64_t v)
{
    for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint32_t getLe32(const std::uint8_t* p)
{
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
std::uint64_t getLe64(const std::uint8_t* p)
{
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

std::string hex64(std::uint64_t v)
{
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(v));
    return text;
}

bool parseHex64(const std::string& text, std::uint64_t& out)
{
    if (text.size() != 16)
        return false;
    std::uint64_t v = 0;
    for (const char c : text) {
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return false;
        v = (v << 4) | static_cast<std::uint64_t>(d);
    }
    out = v;
    return true;
}

std::uint64_t alignUp(std::uint64_t v) { return (v + kAlignment - 1) / kAlignment * kAlignment; }

} // namespace

// ---------------------------------------------------------------------------------------------
// ContainerWriter

struct ContainerWriter::Impl {
    enum class State { Fresh, Open, Failed, Finished };
    std::string path;
    std::string kind;
    std::uint32_t version = kArchiveFormatVersion;
    AtomicFile file;
    State state = State::Fresh;
    std::uint64_t pos = 0;
    std::vector<ContainerSection> sections;
    std::set<std::string> names;

    Impl(std::string p, std::string k) : path(p), kind(std::move(k)), file(std::move(p)) {}

    Status usable() const
    {
        switch (state) {
        case State::Open: return {};
        case State::Fresh: return fileError(path, "the archive writer was not opened");
        case State::Failed: return fileError(path, "the archive writer failed earlier");
        case State::Finished: return fileError(path, "the archive is already finished");
        }
        return {};
    }
    Status fail(Status s)
    {
        state = State::Failed;
        return s;
    }
    Status fail(const std::string& what) { return fail(fileError(path, what)); }
    Status write(const void* bytes, std::size_t count)
    {
        if (auto s = file.write(bytes, count); !s)
            return fail(s);
        pos += count;
        return {};
    }
    Status pad()
    {
        static const std::uint8_t zeros[kAlignment] = {};
        return write(zeros, static_cast<std::size_t>(alignUp(pos) - pos));
    }
};

ContainerWriter::ContainerWriter(std::string path, std::string kind, std::uint32_t formatVersion)
    : m_impl(std::make_unique<Impl>(std::move(path), std::move(kind)))
{
    m_impl->version = formatVersion;
}

ContainerWriter::~ContainerWriter() = default; // AtomicFile removes the temporary file unless committed

Status ContainerWriter::open()
{
    Impl& d = *m_impl;
    return guarded(d.path, [&]() -> Status {
        if (d.state != Impl::State::Fresh)
            return fileError(d.path, "the archive writer was already opened");
        if (d.kind.empty())
            return d.fail("the archive kind is empty");
        if (d.version < kMinArchiveFormatVersion || d.version > kArchiveFormatVersion)
            return d.fail("cannot write format version " + std::to_string(d.version));
        if (auto s = d.file.open(); !s)
            return d.fail(s);
        d.state = Impl::State::Open;
        std::uint8_t header[kHeaderSize] = {};
        std::memcpy(header, kMagic, 8);
        putLe32(header + 8, d.version);
        putLe32(header + 12, 0);
        return d.write(header, sizeof header);
    });
}

Status ContainerWriter::addSection(const std::string& name, const void* bytes, std::size_t size)
{
    return addSection(name, size, [&](const Sink& sink) { return sink(bytes, size); });
}

Status ContainerWriter::addSection(const std::string& name, std::uint64_t size, const std::function<Status(const Sink&)>& produce)
{
    Impl& d = *m_impl;
    return guarded(d.path, [&]() -> Status {
        if (auto s = d.usable(); !s)
            return s;
        if (name.empty())
            return d.fail("a section needs a name");
        if (!d.names.insert(name).second)
            return d.fail("section '" + name + "' added twice");
        if (auto s = d.pad(); !s)
            return s;
        ContainerSection section{name, d.pos, size, 0};
        std::unique_ptr<XXH64_state_t, XXH_errorcode (*)(XXH64_state_t*)> hash(XXH64_createState(), XXH64_freeState);
        if (!hash)
            throw std::bad_alloc();
        XXH64_reset(hash.get(), 0);
        std::uint64_t written = 0;
        bool sinkFailed = false;
        const Sink sink = [&](const void* bytes, std::size_t count) -> Status {
            if (count == 0)
                return {};
            if (count > size - written) {
                sinkFailed = true;
                return fileError(d.path, "section '" + name + "' produced more than its " + std::to_string(size) + " bytes");
            }
            if (auto s = d.write(bytes, count); !s) {
                sinkFailed = true;
                return s;
            }
            XXH64_update(hash.get(), bytes, count);
            written += count;
            return {};
        };
        if (auto s = produce(sink); !s)
            return d.fail(s);
        if (sinkFailed)
            return d.fail("section '" + name + "': writing failed");
        if (written != size)
            return d.fail("section '" + name + "' produced " + std::to_string(written) + " bytes, expected " + std::to_string(size));
        section.xxh64 = XXH64_digest(hash.get());
        d.sections.push_back(std::move(section));
        return {};
    });
}

Status ContainerWriter::finish(const std::string& manifestJson)
{
    Impl& d = *m_impl;
    return guarded(d.path, [&]() -> Status {
        if (auto s = d.usable(); !s)
            return s;
        auto caller = parseJson(manifestJson.data(), manifestJson.size(), d.path, "the manifest");
        if (!caller)
            return d.fail(caller.error());
        for (const char* reserved : {"format_version", "kind", "sections"})
            if (caller->contains(reserved))
                return d.fail(std::string("the manifest must not set '") + reserved + "' (the container writes it)");
        Json m = Json::object();
        m["format_version"] = d.version;
        m["kind"] = d.kind;
        for (auto it = caller->begin(); it != caller->end(); ++it) m[it.key()] = std::move(it.value());
        Json sections = Json::array();
        for (const ContainerSection& s : d.sections)
            sections.push_back(Json{{"name", s.name}, {"offset", s.offset}, {"size", s.size}, {"xxh64", hex64(s.xxh64)}});
        m["sections"] = std::move(sections);
        auto text = dumpStrict(m, d.path);
        if (!text)
            return d.fail(text.error());
        if (auto s = d.pad(); !s)
            return s;
        const std::uint64_t manifestOffset = d.pos;
        if (auto s = d.write(text->data(), text->size()); !s)
            return s;
        std::uint8_t trailer[kTrailerSize];
        putLe64(trailer, manifestOffset);
        putLe64(trailer + 8, text->size());
        putLe64(trailer + 16, XXH64(text->data(), text->size(), 0));
        std::memcpy(trailer + 24, kEndMagic, 8);
        if (auto s = d.write(trailer, sizeof trailer); !s)
            return s;
        if (auto s = d.file.commit(); !s)
            return d.fail(s);
        d.state = Impl::State::Finished;
        return {};
    });
}

// ---------------------------------------------------------------------------------------------
// ContainerReader

struct ContainerReader::Impl {
    std::shared_ptr<MappedFile> file;
    std::string path;
    std::string kind;
    std::uint32_t version = 0;
    std::string manifest;
    std::vector<ContainerSection> sections;
    std::map<std::string, std::size_t> index;
    // Sections already checked (all of them with Verify::All; otherwise on first access).
    std::unique_ptr<std::atomic<bool>[]> verified;

    static Result<std::shared_ptr<Impl>> load(const std::string& path, Verify verify);
    Status check(std::size_t i) const
    {
        if (verified[i].load(std::memory_order_acquire))
            return {};
        const ContainerSection& s = sections[i];
        const std::uint64_t actual = XXH64(file->data() + s.offset, static_cast<std::size_t>(s.size), 0);
        if (actual != s.xxh64)
            return fileError(path, "section '" + s.name + "' checksum mismatch (stored " + hex64(s.xxh64) + ", computed " + hex64(actual) +
                                       "): the file is corrupt");
        verified[i].store(true, std::memory_order_release);
        return {};
    }
};

Result<std::shared_ptr<ContainerReader::Impl>> ContainerReader::Impl::load(const std::string& path, Verify verify)
{
    auto mapped = MappedFile::open(path);
    if (!mapped)
        return mapped.error();
    auto d = std::make_shared<Impl>();
    d->file = *mapped;
    d->path = path;
    const std::uint8_t* base = d->file->data();
    const std::uint64_t size = d->file->size();

    if (size < 8) {
        if (size > 0 && std::memcmp(base, kMagic, static_cast<std::size_t>(size)) == 0)
            return fileError(path, "truncated: " + std::to_string(size) + " bytes is too short for a .pllm archive");
        return fileError(path, "not a .pllm archive (" + std::to_string(size) + " bytes, no PLLM magic)");
    }
    if (std::memcmp(base, kMagic, 8) != 0)
        return fileError(path, "not a .pllm archive (the file does not start with the PLLM magic bytes)");
    if (size < kHeaderSize)
        return fileError(path, "truncated: " + std::to_string(size) + " bytes is too short for the .pllm header");
    d->version = getLe32(base + 8);
    if (d->version < kMinArchiveFormatVersion || d->version > kArchiveFormatVersion)
        return fileError(path, "archive format version " + std::to_string(d->version) + " is not supported (this build reads versions " +
                                   std::to_string(kMinArchiveFormatVersion) + " to " + std::to_string(kArchiveFormatVersion) + ")",
                         ErrorKind::Unsupported);
    if (const std::uint32_t reserved = getLe32(base + 12); reserved != 0)
        return fileError(path, "corrupt header: the reserved field is " + std::to_string(reserved) + ", not 0");
    if (size < kAlignment + kTrailerSize)
        return fileError(path, "truncated: " + std::to_string(size) + " bytes leaves no room for a manifest and the trailer");
    const std::uint8_t* trailer = base + size - kTrailerSize;
    if (std::memcmp(trailer + 24, kEndMagic, 8) != 0)
        return fileError(path, "truncated or corrupt: the trailer's end marker is missing (" + std::to_string(size) + " bytes; file cut short?)");
    const std::uint64_t manifestOffset = getLe64(trailer);
    const std::uint64_t manifestSize = getLe64(trailer + 8);
    const std::uint64_t manifestHash = getLe64(trailer + 16);
    const std::uint64_t trailerStart = size - kTrailerSize;
    if (manifestOffset % kAlignment != 0 || manifestOffset < kAlignment || manifestOffset > trailerStart || manifestSize != trailerStart - manifestOffset)
        return fileError(path, "truncated or corrupt: the trailer places the manifest at offset " + std::to_string(manifestOffset) + " with " +
                                   std::to_string(manifestSize) + " bytes, which does not end where the trailer starts (" + std::to_string(trailerStart) + ")");
    const char* manifestText = reinterpret_cast<const char*>(base + manifestOffset);
    const std::size_t manifestLength = static_cast<std::size_t>(manifestSize);
    if (const std::uint64_t actual = XXH64(manifestText, manifestLength, 0); actual != manifestHash)
        return fileError(path, "manifest checksum mismatch (stored " + hex64(manifestHash) + ", computed " + hex64(actual) + "): the file is corrupt");
    auto parsed = parseJson(manifestText, manifestLength, path, "the manifest");
    if (!parsed)
        return parsed.error();
    const Json& j = *parsed;
    const Fields f{path, "manifest", j};
    std::uint64_t jsonVersion = 0;
    POCKET_TRY(f.u64("format_version", jsonVersion));
    if (jsonVersion != d->version)
        return f.bad("format_version " + std::to_string(jsonVersion) + " differs from the header's version " + std::to_string(d->version));
    POCKET_TRY(f.string("kind", d->kind));
    if (d->kind.empty())
        return f.bad("kind is empty");
    auto list = f.array("sections");
    if (!list)
        return list.error();
    for (std::size_t i = 0; i < (*list)->size(); ++i) {
        const Json& e = (**list)[i];
        if (!e.is_object())
            return f.bad("sections[" + std::to_string(i) + "] is not an object");
        const Fields s{path, "manifest sections[" + std::to_string(i) + "]", e};
        ContainerSection sec;
        std::string hash;
        POCKET_TRY(s.string("name", sec.name));
        POCKET_TRY(s.u64("offset", sec.offset));
        POCKET_TRY(s.u64("size", sec.size));
        POCKET_TRY(s.string("xxh64", hash));
        if (!parseHex64(hash, sec.xxh64))
            return s.bad("xxh64 '" + hash + "' is not 16 hex digits");
        if (sec.name.empty())
            return s.bad("the section name is empty");
        const std::string where = "section '" + sec.name + "'";
        if (sec.offset % kAlignment != 0 || sec.offset < kAlignment)
            return fileError(path, where + ": offset " + std::to_string(sec.offset) + " is not a multiple of 64 past the header");
        if (sec.offset > manifestOffset || sec.size > manifestOffset - sec.offset)
            return fileError(path, where + ": bytes [" + std::to_string(sec.offset) + ", +" + std::to_string(sec.size) +
                                       ") run into the manifest at " + std::to_string(manifestOffset) + " (truncated or corrupt file)");
        if (!d->index.emplace(sec.name, d->sections.size()).second)
            return fileError(path, where + " appears twice in the manifest");
        d->sections.push_back(std::move(sec));
    }
    std::vector<const ContainerSection*> byOffset;
    for (const auto& s : d->sections)
        if (s.size > 0)
            byOffset.push_back(&s);
    std::sort(byOffset.begin(), byOffset.end(), [](const ContainerSection* a, const ContainerSection* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < byOffset.size(); ++i)
        if (byOffset[i]->offset < byOffset[i - 1]->offset + byOffset[i - 1]->size)
            return fileError(path, "sections '" + byOffset[i - 1]->name + "' and '" + byOffset[i]->name + "' overlap");
    d->manifest.assign(manifestText, manifestLength);
    d->verified = std::make_unique<std::atomic<bool>[]>(d->sections.size());
    for (std::size_t i = 0; i < d->sections.size(); ++i) d->verified[i].store(false);
    if (verify == ContainerReader::Verify::All) {
        // Every byte outside the header, sections, manifest and trailer is padding and must be zero,
        // so that any damage anywhere in the file is noticed.
        std::uint64_t cursor = kHeaderSize;
        auto zeros = [&](std::uint64_t from, std::uint64_t to) -> Status {
            for (std::uint64_t k = from; k < to; ++k)
                if (base[k] != 0)
                    return fileError(path, "corrupt file: padding byte at offset " + std::to_string(k) + " is not zero");
            return {};
        };
        for (const ContainerSection* s : byOffset) {
            POCKET_TRY(zeros(cursor, s->offset));
            cursor = s->offset + s->size;
        }
        POCKET_TRY(zeros(cursor, manifestOffset));
        for (std::size_t i = 0; i < d->sections.size(); ++i) POCKET_TRY(d->check(i));
    }
    return d;
}

Result<std::shared_ptr<ContainerReader>> ContainerReader::open(const std::string& path, Verify verify)
{
    return guarded(path, [&]() -> Result<std::shared_ptr<ContainerReader>> {
        auto impl = Impl::load(path, verify);
        if (!impl)
            return impl.error();
        auto reader = std::make_shared<ContainerReader>();
        reader->m_impl = std::move(*impl);
        return reader;
    });
}

const std::string& ContainerReader::path() const { return m_impl->path; }
const std::string& ContainerReader::kind() const { return m_impl->kind; }
std::uint32_t ContainerReader::formatVersion() const { return m_impl->version; }
std::uint64_t ContainerReader::fileSize() const { return m_impl->file->size(); }
const std::string& ContainerReader::manifestJson() const { return m_impl->manifest; }
std::uint64_t ContainerReader::manifestBytes() const { return m_impl->manifest.size(); }
const std::vector<ContainerSection>& ContainerReader::sections() const { return m_impl->sections; }

const ContainerSection* ContainerReader::find(const std::string& name) const
{
    const auto it = m_impl->index.find(name);
    return it == m_impl->index.end() ? nullptr : &m_impl->sections[it->second];
}

Result<TensorData> ContainerReader::section(const std::string& name) const
{
    const auto it = m_impl->index.find(name);
    if (it == m_impl->index.end())
        return fileError(m_impl->path, "no section named '" + name + "'");
    if (auto s = m_impl->check(it->second); !s)
        return s.error();
    const ContainerSection& s = m_impl->sections[it->second];
    TensorData out;
    out.info.name = s.name;
    out.info.dtype = DType::U8;
    out.info.shape = {static_cast<std::int64_t>(s.size)};
    out.info.byteSize = s.size;
    out.data = m_impl->file->data() + s.offset;
    m_impl->file->prefetch(s.offset, s.size);
    out.owner = m_impl->file->lease(s.offset, s.size);
    return out;
}

Status ContainerReader::verify(const std::string& name) const
{
    const auto it = m_impl->index.find(name);
    if (it == m_impl->index.end())
        return fileError(m_impl->path, "no section named '" + name + "'");
    m_impl->verified[it->second].store(false);
    return m_impl->check(it->second);
}

bool isPllmFile(const std::string& path)
{
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return false;
    struct stat st {};
    std::uint8_t head[8];
    const bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ::read(fd, head, 8) == 8 && std::memcmp(head, kMagic, 8) == 0;
    ::close(fd);
    return ok;
}

} // namespace pocket

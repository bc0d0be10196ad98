#include "pocket/archive.h"

#include "pocket/atomic_file.h"
#include "pocket/checkpoint.h"
#include "pocket/mapped_file.h"

#include <nlohmann/json.hpp>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <map>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace pocket {

namespace {

using Json = nlohmann::ordered_json;

// docs/archive-format.md describes every constant here.
constexpr std::uint8_t kMagic[8] = {0x89, 'P', 'L', 'L', 'M', '\r', '\n', 0x1a};
constexpr std::uint8_t kEndMagic[8] = {'P', 'L', 'L', 'M', '_', 'E', 'N', 'D'};
constexpr std::uint64_t kHeaderSize = 16;
constexpr std::uint64_t kAlignment = 64;
constexpr std::uint64_t kTrailerSize = 32;
constexpr int kMaxJsonDepth = 100;
constexpr std::int64_t kMaxMatrixDim = std::int64_t(1) << 31; // rows * cols stays far inside int64

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

// Runs `f`, turning anything thrown (allocation failures, library exceptions) into an Error that
// names the file: nothing may escape core.
template <class F>
auto guarded(const std::string& path, F&& f) -> decltype(f())
{
    try {
        return f();
    } catch (const std::bad_alloc&) {
        return fileError(path, "not enough memory");
    } catch (const std::exception& e) {
        return fileError(path, e.what());
    }
}

// nlohmann's parser is iterative but dump() recurses; hostile nesting must not reach it.
bool nestingWithin(const char* p, std::size_t n, int maxDepth)
{
    int depth = 0;
    bool inString = false, escape = false;
    for (std::size_t i = 0; i < n; ++i) {
        const char c = p[i];
        if (inString) {
            if (escape) escape = false;
            else if (c == '\\') escape = true;
            else if (c == '"') inString = false;
        } else if (c == '"') {
            inString = true;
        } else if (c == '[' || c == '{') {
            if (++depth > maxDepth)
                return false;
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return true;
}

Result<Json> parseJson(const char* p, std::size_t n, const std::string& file, const std::string& what)
{
    if (!nestingWithin(p, n, kMaxJsonDepth))
        return fileError(file, what + " nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    Json j = Json::parse(p, p + n, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded())
        return fileError(file, what + " is not valid JSON");
    if (!j.is_object())
        return fileError(file, what + " is not a JSON object");
    return j;
}

// Strict dump: text that is not UTF-8 becomes an error instead of a corrupt manifest.
Result<std::string> dumpStrict(const Json& j, const std::string& file)
{
    try {
        return j.dump();
    } catch (const Json::exception& e) {
        return fileError(file, std::string("cannot write the manifest (names must be UTF-8): ") + e.what());
    }
}

// ----- typed reads of manifest fields; every error names the file, the place and the key

struct Fields {
    const std::string& file;
    std::string where; // "group 2 ('type:q_proj')", "tensor 'x'", "" for the top level
    const Json& obj;

    Error bad(const std::string& what) const { return fileError(file, where.empty() ? what : where + ": " + what); }
    const Json* get(const char* key) const
    {
        const auto it = obj.find(key);
        return it == obj.end() ? nullptr : &*it;
    }
    Result<const Json*> need(const char* key) const
    {
        const Json* v = get(key);
        if (!v)
            return bad(std::string("missing key '") + key + "'");
        return v;
    }
    Status string(const char* key, std::string& out) const
    {
        auto v = need(key);
        if (!v) return v.error();
        if (!(*v)->is_string()) return bad(std::string("key '") + key + "' must be a string");
        out = (*v)->get<std::string>();
        return {};
    }
    Status u64(const char* key, std::uint64_t& out) const
    {
        auto v = need(key);
        if (!v) return v.error();
        if (!(*v)->is_number_unsigned()) return bad(std::string("key '") + key + "' must be a non-negative integer");
        out = (*v)->get<std::uint64_t>();
        return {};
    }
    Status integer(const char* key, std::int64_t min, std::int64_t max, std::int64_t& out) const
    {
        auto v = need(key);
        if (!v) return v.error();
        const Json& j = **v;
        bool inRange = false;
        if (j.is_number_unsigned()) {
            const auto u = j.get<std::uint64_t>();
            inRange = max >= 0 && u <= static_cast<std::uint64_t>(max) && (min <= 0 || u >= static_cast<std::uint64_t>(min));
        } else if (j.is_number_integer()) {
            inRange = j.get<std::int64_t>() >= min && j.get<std::int64_t>() <= max;
        } else {
            return bad(std::string("key '") + key + "' must be an integer");
        }
        if (!inRange)
            return bad(std::string("key '") + key + "' = " + j.dump() + " is out of range [" + std::to_string(min) + ", " + std::to_string(max) + "]");
        out = j.is_number_unsigned() ? static_cast<std::int64_t>(j.get<std::uint64_t>()) : j.get<std::int64_t>();
        return {};
    }
    // Finite numbers are JSON numbers; non-finite ones are the strings "inf", "-inf", "nan".
    Status real(const char* key, double& out) const
    {
        auto v = need(key);
        if (!v) return v.error();
        const Json& j = **v;
        if (j.is_number()) {
            out = j.get<double>();
            return {};
        }
        if (j.is_string()) {
            const auto s = j.get<std::string>();
            if (s == "inf") { out = std::numeric_limits<double>::infinity(); return {}; }
            if (s == "-inf") { out = -std::numeric_limits<double>::infinity(); return {}; }
            if (s == "nan") { out = std::numeric_limits<double>::quiet_NaN(); return {}; }
        }
        return bad(std::string("key '") + key + "' must be a number (or \"inf\", \"-inf\", \"nan\")");
    }
    Result<const Json*> object(const char* key) const
    {
        auto v = need(key);
        if (!v) return v.error();
        if (!(*v)->is_object()) return bad(std::string("key '") + key + "' must be an object");
        return *v;
    }
    Result<const Json*> array(const char* key) const
    {
        auto v = need(key);
        if (!v) return v.error();
        if (!(*v)->is_array()) return bad(std::string("key '") + key + "' must be an array");
        return *v;
    }
    Status strings(const char* key, std::vector<std::string>& out) const
    {
        auto v = array(key);
        if (!v) return v.error();
        out.clear();
        for (const Json& e : **v) {
            if (!e.is_string())
                return bad(std::string("key '") + key + "' must be an array of strings");
            out.push_back(e.get<std::string>());
        }
        return {};
    }
    Status bits(const char* key, BitCounts& out) const
    {
        auto v = object(key);
        if (!v) return v.error();
        const Fields f{file, where.empty() ? key : where + ", " + key, **v};
        for (const Status& s : {f.u64("index", out.indexBits), f.u64("codebook", out.codebookBits), f.u64("decoder", out.decoderBits), f.u64("scale", out.scaleBits)})
            if (!s) return s;
        return {};
    }
};

#define POCKET_TRY(expr)                 \
    do {                                 \
        if (auto s_ = (expr); !s_)       \
            return s_.error();           \
    } while (0)

Json realJson(double v)
{
    if (std::isfinite(v)) return v;
    if (std::isnan(v)) return "nan";
    return v > 0 ? "inf" : "-inf";
}

Json bitsJson(const BitCounts& b)
{
    Json j = Json::object();
    j["index"] = b.indexBits;
    j["codebook"] = b.codebookBits;
    j["decoder"] = b.decoderBits;
    j["scale"] = b.scaleBits;
    return j;
}

// "" counts as {} so a method without parameters or meta facts need not spell it out.
Result<Json> objectFromText(const std::string& text, const std::string& file, const std::string& what)
{
    if (text.empty())
        return Json::object();
    return parseJson(text.data(), text.size(), file, what);
}

std::string groupWhere(std::size_t index, const std::string& id)
{
    return "group " + std::to_string(index) + " ('" + id + "')";
}

Result<Json> payloadToJson(const GroupPayload& p, const std::string& file)
{
    const std::string where = "group '" + p.groupId + "'";
    auto params = objectFromText(p.paramsJson, file, where + ": params");
    if (!params) return params.error();
    auto meta = objectFromText(p.metaJson, file, where + ": meta");
    if (!meta) return meta.error();
    Json j = Json::object();
    j["id"] = p.groupId;
    j["method"] = p.methodId;
    j["method_version"] = p.methodVersion;
    j["params"] = std::move(*params);
    j["meta"] = std::move(*meta);
    j["shared_bits"] = bitsJson(p.sharedBits);
    Json matrices = Json::array();
    for (const MatrixResult& m : p.matrices) {
        Json e = Json::object();
        e["name"] = m.ref.name;
        e["layer"] = m.ref.layer;
        e["type"] = matrixTypeName(m.ref.type);
        e["rows"] = m.ref.rows;
        e["cols"] = m.ref.cols;
        e["bits"] = bitsJson(m.bits);
        e["mse"] = realJson(m.mse);
        e["snr_db"] = realJson(m.snrDb);
        matrices.push_back(std::move(e));
    }
    j["matrices"] = std::move(matrices);
    Json names = Json::array();
    std::set<std::string> seen;
    for (const PayloadSection& s : p.sections) {
        if (s.name.empty())
            return fileError(file, where + ": a payload section has no name");
        if (!seen.insert(s.name).second)
            return fileError(file, where + ": payload section '" + s.name + "' appears twice");
        names.push_back(s.name);
    }
    j["section_names"] = std::move(names);
    return j;
}

// The payload fields of `j` (other keys are ignored); sections get their names, no bytes.
Result<GroupPayload> payloadFromJson(const Json& j, const std::string& file, const std::string& where)
{
    const Fields f{file, where, j};
    GroupPayload p;
    std::int64_t version = 0;
    POCKET_TRY(f.string("id", p.groupId));
    POCKET_TRY(f.string("method", p.methodId));
    POCKET_TRY(f.integer("method_version", 0, INT_MAX, version));
    p.methodVersion = static_cast<int>(version);
    auto params = f.object("params");
    if (!params) return params.error();
    p.paramsJson = (*params)->dump();
    auto meta = f.object("meta");
    if (!meta) return meta.error();
    p.metaJson = (*meta)->dump();
    POCKET_TRY(f.bits("shared_bits", p.sharedBits));
    auto matrices = f.array("matrices");
    if (!matrices) return matrices.error();
    for (std::size_t i = 0; i < (*matrices)->size(); ++i) {
        const Json& e = (**matrices)[i];
        const std::string mwhere = (where.empty() ? "" : where + ", ") + "matrix " + std::to_string(i);
        if (!e.is_object())
            return fileError(file, mwhere + ": must be an object");
        const Fields m{file, mwhere, e};
        MatrixResult r;
        std::int64_t layer = 0;
        std::string type;
        POCKET_TRY(m.string("name", r.ref.name));
        POCKET_TRY(m.integer("layer", 0, INT_MAX, layer));
        r.ref.layer = static_cast<int>(layer);
        POCKET_TRY(m.string("type", type));
        if (!parseMatrixTypeName(type, r.ref.type))
            return m.bad("unknown matrix type '" + type + "' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj)");
        POCKET_TRY(m.integer("rows", 1, kMaxMatrixDim, r.ref.rows));
        POCKET_TRY(m.integer("cols", 1, kMaxMatrixDim, r.ref.cols));
        POCKET_TRY(m.bits("bits", r.bits));
        POCKET_TRY(m.real("mse", r.mse));
        POCKET_TRY(m.real("snr_db", r.snrDb));
        p.matrices.push_back(std::move(r));
    }
    std::vector<std::string> names;
    POCKET_TRY(f.strings("section_names", names));
    std::set<std::string> seen;
    for (const std::string& name : names) {
        if (name.empty())
            return f.bad("a section name is empty");
        if (!seen.insert(name).second)
            return f.bad("section name '" + name + "' appears twice");
        p.sections.push_back({name, {}});
    }
    return p;
}

std::string tensorSectionName(const std::string& tensor) { return "tensor/" + tensor; }
std::string groupSectionName(std::size_t group, const std::string& name) { return "group/" + std::to_string(group) + "/" + name; }
constexpr const char* kTokenizerSection = "tokenizer";

// Byte size of `count` elements of `type`, or false on overflow.
bool byteSize(const std::vector<std::int64_t>& shape, DType type, std::uint64_t& out)
{
    std::uint64_t count = 1;
    for (const std::int64_t d : shape) {
        if (d < 0)
            return false;
        const auto dim = static_cast<std::uint64_t>(d);
        if (dim != 0 && count > std::numeric_limits<std::uint64_t>::max() / 16 / dim)
            return false;
        count *= dim;
    }
    out = count * dtypeSize(type);
    return true;
}

// Every tensor of the architecture is either stored or compressed, exactly once, with its shape.
Status checkModelLayout(const ArchiveManifest& m, const std::string& file)
{
    POCKET_TRY(m.config.validate(file));
    std::map<std::string, std::vector<std::int64_t>> expected;
    for (const TensorInfo& t : expectedTensors(m.config)) expected[t.name] = t.shape;
    std::set<std::string> seen;
    auto place = [&](const std::string& name, const std::vector<std::int64_t>& shape, const std::string& where) -> Status {
        const auto it = expected.find(name);
        if (it == expected.end())
            return fileError(file, where + ": '" + name + "' is not a tensor of this " + m.config.architecture + " model");
        if (it->second != shape)
            return fileError(file, where + ": '" + name + "' has shape " + shapeString(shape) + " but the model needs " + shapeString(it->second));
        if (!seen.insert(name).second)
            return fileError(file, where + ": '" + name + "' is stored more than once");
        return {};
    };
    for (const ArchiveTensor& t : m.tensors) {
        if (!isFloatType(t.dtype))
            return fileError(file, "tensor '" + t.name + "': dtype " + dtypeName(t.dtype) + " is not a float type");
        POCKET_TRY(place(t.name, t.shape, "tensor '" + t.name + "'"));
    }
    std::set<std::string> ids;
    for (std::size_t g = 0; g < m.groups.size(); ++g) {
        const GroupPayload& p = m.groups[g].payload;
        const std::string where = groupWhere(g, p.groupId);
        if (!ids.insert(p.groupId).second)
            return fileError(file, where + ": the group id appears twice");
        if (m.groups[g].sectionNames.size() != p.sections.size())
            return fileError(file, where + ": " + std::to_string(p.sections.size()) + " payload sections but " +
                                       std::to_string(m.groups[g].sectionNames.size()) + " container sections");
        for (const MatrixResult& r : p.matrices) {
            if (r.ref.layer < 0 || r.ref.layer >= m.config.numLayers || r.ref.name != matrixTensorName(r.ref.layer, r.ref.type))
                return fileError(file, where + ": matrix '" + r.ref.name + "' does not match its layer " + std::to_string(r.ref.layer) + " and type " + matrixTypeName(r.ref.type));
            POCKET_TRY(place(r.ref.name, {r.ref.rows, r.ref.cols}, where));
        }
    }
    for (const TensorInfo& t : expectedTensors(m.config))
        if (!seen.count(t.name))
            return fileError(file, "tensor '" + t.name + "' is neither stored nor compressed");
    return {};
}

} // namespace

// ---------------------------------------------------------------------------------------------
// ContainerWriter

struct ContainerWriter::Impl {
    enum class State { Fresh, Open, Failed, Finished };
    std::string path;
    std::string kind;
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

ContainerWriter::ContainerWriter(std::string path, std::string kind) : m_impl(std::make_unique<Impl>(std::move(path), std::move(kind))) {}

ContainerWriter::~ContainerWriter() = default; // AtomicFile removes the temporary file unless committed

Status ContainerWriter::open()
{
    Impl& d = *m_impl;
    return guarded(d.path, [&]() -> Status {
        if (d.state != Impl::State::Fresh)
            return fileError(d.path, "the archive writer was already opened");
        if (d.kind.empty())
            return d.fail("the archive kind is empty");
        if (auto s = d.file.open(); !s)
            return d.fail(s);
        d.state = Impl::State::Open;
        std::uint8_t header[kHeaderSize] = {};
        std::memcpy(header, kMagic, 8);
        putLe32(header + 8, kArchiveFormatVersion);
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
        m["format_version"] = kArchiveFormatVersion;
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
    if (d->version != kArchiveFormatVersion)
        return fileError(path, "archive format version " + std::to_string(d->version) + " is not supported (this build reads version " +
                                   std::to_string(kArchiveFormatVersion) + ")");
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

// ---------------------------------------------------------------------------------------------
// Model archives

double ArchiveBits::bpwAllIn() const { return totalWeights ? static_cast<double>(totalBits()) / static_cast<double>(totalWeights) : 0.0; }
double ArchiveBits::bpwCompressed() const
{
    return compressedWeights ? static_cast<double>(compressed.total()) / static_cast<double>(compressedWeights) : 0.0;
}
double ArchiveBits::ratioFp16() const { return totalBits() ? 16.0 * static_cast<double>(totalWeights) / static_cast<double>(totalBits()) : 0.0; }
double ArchiveBits::ratioFp32() const { return totalBits() ? 32.0 * static_cast<double>(totalWeights) / static_cast<double>(totalBits()) : 0.0; }

ArchiveBits accountBits(const ArchiveManifest& manifest)
{
    ArchiveBits bits;
    for (const TensorInfo& t : expectedTensors(manifest.config))
        bits.totalWeights += static_cast<std::uint64_t>(elementCount(t.shape));
    for (const ArchiveGroup& g : manifest.groups) {
        for (const MatrixResult& m : g.payload.matrices) bits.compressedWeights += static_cast<std::uint64_t>(m.ref.weights());
        bits.compressed += g.payload.totalBits();
    }
    for (const ArchiveTensor& t : manifest.tensors)
        bits.uncompressedBits += static_cast<std::uint64_t>(elementCount(t.shape)) * dtypeSize(t.dtype) * 8;
    return bits;
}

namespace {
Status writeArchiveUnguarded(const std::string& path, ArchiveInput& input)
{
    ArchiveManifest& m = input.manifest;
    for (ArchiveTensor& t : m.tensors) t.section = tensorSectionName(t.name);
    for (std::size_t g = 0; g < m.groups.size(); ++g) {
        auto& group = m.groups[g];
        group.sectionNames.clear();
        for (const PayloadSection& s : group.payload.sections) group.sectionNames.push_back(groupSectionName(g, s.name));
    }
    POCKET_TRY(checkModelLayout(m, path));
    const bool hasTokenizer = !m.tokenizerKind.empty();
    if (hasTokenizer && input.tokenizerBytes.empty())
        return fileError(path, "tokenizer '" + m.tokenizerKind + "' has no bytes to embed");
    if (!hasTokenizer && !input.tokenizerBytes.empty())
        return fileError(path, "tokenizer bytes given without a tokenizer kind");
    if (!m.tensors.empty() && !input.tensorBytes)
        return fileError(path, "no source for the uncompressed tensors");

    Json j = Json::object();
    const std::string configText = hfConfigJson(m.config);
    auto model = parseJson(configText.data(), configText.size(), path, "the model config");
    if (!model)
        return model.error();
    j["model"] = std::move(*model);
    j["source"] = m.sourceName;
    j["creator"] = m.creator;
    if (hasTokenizer)
        j["tokenizer"] = Json{{"kind", m.tokenizerKind}, {"file_name", m.tokenizerFileName}, {"section", kTokenizerSection}};
    else
        j["tokenizer"] = nullptr;
    Json tensors = Json::array();
    for (const ArchiveTensor& t : m.tensors)
        tensors.push_back(Json{{"name", t.name}, {"dtype", dtypeName(t.dtype)}, {"shape", t.shape}, {"section", t.section}});
    j["tensors"] = std::move(tensors);
    Json groups = Json::array();
    for (const ArchiveGroup& g : m.groups) {
        auto pj = payloadToJson(g.payload, path);
        if (!pj)
            return pj.error();
        (*pj)["sections"] = g.sectionNames;
        groups.push_back(std::move(*pj));
    }
    j["groups"] = std::move(groups);
    auto selection = objectFromText(m.selectionJson, path, "the layer selection");
    if (!selection)
        return selection.error();
    j["selection"] = std::move(*selection);
    auto text = dumpStrict(j, path);
    if (!text)
        return text.error();

    ContainerWriter writer(path, "model");
    POCKET_TRY(writer.open());
    if (hasTokenizer)
        POCKET_TRY(writer.addSection(kTokenizerSection, input.tokenizerBytes.data(), input.tokenizerBytes.size()));
    for (const ArchiveTensor& t : m.tensors) {
        std::uint64_t size = 0;
        if (!byteSize(t.shape, t.dtype, size))
            return fileError(path, "tensor '" + t.name + "': shape " + shapeString(t.shape) + " is too large");
        POCKET_TRY(writer.addSection(t.section, size, [&](const ContainerWriter::Sink& sink) { return input.tensorBytes(t, sink); }));
    }
    for (const ArchiveGroup& g : m.groups)
        for (std::size_t k = 0; k < g.payload.sections.size(); ++k)
            POCKET_TRY(writer.addSection(g.sectionNames[k], g.payload.sections[k].bytes.data(), g.payload.sections[k].bytes.size()));
    return writer.finish(*text);
}

Status openArchiveManifest(const ContainerReader& c, ArchiveManifest& m)
{
    const std::string& path = c.path();
    if (c.kind() != "model")
        return fileError(path, "is a '" + c.kind() + "' container, not a model archive");
    auto parsed = parseJson(c.manifestJson().data(), c.manifestJson().size(), path, "the manifest");
    if (!parsed)
        return parsed.error();
    const Json& j = *parsed;
    const Fields f{path, "manifest", j};
    std::set<std::string> used; // container sections referenced so far
    auto useSection = [&](const std::string& name, const std::string& where) -> Result<const ContainerSection*> {
        const ContainerSection* s = c.find(name);
        if (!s)
            return fileError(path, where + ": section '" + name + "' does not exist");
        if (!used.insert(name).second)
            return fileError(path, where + ": section '" + name + "' is used twice");
        return s;
    };

    auto model = f.object("model");
    if (!model)
        return model.error();
    auto config = parseHfConfig((*model)->dump(), path + ": manifest 'model'");
    if (!config)
        return config.error();
    m.config = std::move(*config);
    POCKET_TRY(f.string("source", m.sourceName));
    POCKET_TRY(f.string("creator", m.creator));

    auto tokenizer = f.need("tokenizer");
    if (!tokenizer)
        return tokenizer.error();
    if (!(*tokenizer)->is_null()) {
        if (!(*tokenizer)->is_object())
            return f.bad("key 'tokenizer' must be an object or null");
        const Fields t{path, "manifest tokenizer", **tokenizer};
        std::string section;
        POCKET_TRY(t.string("kind", m.tokenizerKind));
        POCKET_TRY(t.string("file_name", m.tokenizerFileName));
        POCKET_TRY(t.string("section", section));
        if (m.tokenizerKind.empty())
            return t.bad("kind is empty");
        POCKET_TRY(useSection(section, "tokenizer"));
        if (section != kTokenizerSection)
            return t.bad(std::string("section must be '") + kTokenizerSection + "'");
    }

    auto tensors = f.array("tensors");
    if (!tensors)
        return tensors.error();
    for (std::size_t i = 0; i < (*tensors)->size(); ++i) {
        const Json& e = (**tensors)[i];
        if (!e.is_object())
            return f.bad("tensors[" + std::to_string(i) + "] is not an object");
        const Fields t{path, "manifest tensors[" + std::to_string(i) + "]", e};
        ArchiveTensor tensor;
        std::string dtype;
        POCKET_TRY(t.string("name", tensor.name));
        POCKET_TRY(t.string("dtype", dtype));
        const auto parsedType = parseDType(dtype);
        if (!parsedType)
            return t.bad("unknown dtype '" + dtype + "'");
        tensor.dtype = *parsedType;
        auto shape = t.array("shape");
        if (!shape)
            return shape.error();
        for (const Json& d : **shape) {
            if (!d.is_number_unsigned() || d.get<std::uint64_t>() > static_cast<std::uint64_t>(kMaxMatrixDim))
                return t.bad("shape entries must be integers in [0, " + std::to_string(kMaxMatrixDim) + "]");
            tensor.shape.push_back(static_cast<std::int64_t>(d.get<std::uint64_t>()));
        }
        POCKET_TRY(t.string("section", tensor.section));
        m.tensors.push_back(std::move(tensor));
    }

    auto groups = f.array("groups");
    if (!groups)
        return groups.error();
    for (std::size_t g = 0; g < (*groups)->size(); ++g) {
        const Json& e = (**groups)[g];
        const std::string where = "group " + std::to_string(g);
        if (!e.is_object())
            return fileError(path, where + ": must be an object");
        auto payload = payloadFromJson(e, path, where);
        if (!payload)
            return payload.error();
        ArchiveGroup group;
        group.payload = std::move(*payload);
        POCKET_TRY((Fields{path, groupWhere(g, group.payload.groupId), e}.strings("sections", group.sectionNames)));
        m.groups.push_back(std::move(group));
    }

    auto selection = f.object("selection");
    if (!selection)
        return selection.error();
    m.selectionJson = (*selection)->dump();

    POCKET_TRY(checkModelLayout(m, path));
    for (const ArchiveTensor& t : m.tensors) {
        auto s = useSection(t.section, "tensor '" + t.name + "'");
        if (!s)
            return s.error();
        std::uint64_t size = 0;
        if (!byteSize(t.shape, t.dtype, size) || size != (*s)->size)
            return fileError(path, "tensor '" + t.name + "': shape " + shapeString(t.shape) + " of " + dtypeName(t.dtype) + " needs " +
                                       std::to_string(size) + " bytes but section '" + t.section + "' holds " + std::to_string((*s)->size));
    }
    for (std::size_t g = 0; g < m.groups.size(); ++g)
        for (const std::string& name : m.groups[g].sectionNames)
            if (auto s = useSection(name, groupWhere(g, m.groups[g].payload.groupId)); !s)
                return s.error();
    for (const ContainerSection& s : c.sections())
        if (!used.count(s.name))
            return fileError(path, "section '" + s.name + "' is not referenced by the manifest");
    return {};
}
} // namespace

Status writeArchive(const std::string& path, ArchiveInput input)
{
    return guarded(path, [&]() { return writeArchiveUnguarded(path, input); });
}

Result<std::shared_ptr<Archive>> Archive::open(const std::string& path, ContainerReader::Verify verify)
{
    return guarded(path, [&]() -> Result<std::shared_ptr<Archive>> {
        auto container = ContainerReader::open(path, verify);
        if (!container)
            return container.error();
        auto archive = std::make_shared<Archive>();
        archive->m_container = std::move(*container);
        POCKET_TRY(openArchiveManifest(*archive->m_container, archive->m_manifest));
        return archive;
    });
}

Result<GroupPayload> Archive::groupPayload(std::size_t groupIndex) const
{
    const std::string& path = m_container->path();
    return guarded(path, [&]() -> Result<GroupPayload> {
        if (groupIndex >= m_manifest.groups.size())
            return fileError(path, "no group " + std::to_string(groupIndex) + " (the archive has " + std::to_string(m_manifest.groups.size()) + ")");
        const ArchiveGroup& g = m_manifest.groups[groupIndex];
        GroupPayload p = g.payload;
        for (std::size_t k = 0; k < p.sections.size(); ++k) {
            auto bytes = m_container->section(g.sectionNames[k]);
            if (!bytes)
                return bytes.error();
            p.sections[k].bytes.assign(bytes->data, bytes->data + bytes->info.byteSize);
        }
        return p;
    });
}

Result<TensorData> Archive::tensor(const std::string& name) const
{
    const auto it = std::find_if(m_manifest.tensors.begin(), m_manifest.tensors.end(), [&](const ArchiveTensor& t) { return t.name == name; });
    if (it == m_manifest.tensors.end())
        return fileError(m_container->path(), "no stored tensor named '" + name + "'");
    auto bytes = m_container->section(it->section);
    if (!bytes)
        return bytes.error();
    TensorData out = std::move(*bytes);
    out.info.name = it->name;
    out.info.dtype = it->dtype;
    out.info.shape = it->shape;
    return out;
}

Result<std::vector<std::uint8_t>> Archive::tokenizerBytes() const
{
    if (m_manifest.tokenizerKind.empty())
        return std::vector<std::uint8_t>();
    return guarded(m_container->path(), [&]() -> Result<std::vector<std::uint8_t>> {
        auto bytes = m_container->section(kTokenizerSection);
        if (!bytes)
            return bytes.error();
        return std::vector<std::uint8_t>(bytes->data, bytes->data + bytes->info.byteSize);
    });
}

// ---------------------------------------------------------------------------------------------
// Group files and payload JSON

Status writeGroupFile(const std::string& path, const GroupPayload& payload)
{
    return guarded(path, [&]() -> Status {
        auto j = payloadToJson(payload, path);
        if (!j)
            return j.error();
        auto text = dumpStrict(*j, path);
        if (!text)
            return text.error();
        ContainerWriter writer(path, "group");
        POCKET_TRY(writer.open());
        for (const PayloadSection& s : payload.sections) POCKET_TRY(writer.addSection(s.name, s.bytes.data(), s.bytes.size()));
        return writer.finish(*text);
    });
}

Result<GroupPayload> readGroupFile(const std::string& path)
{
    return guarded(path, [&]() -> Result<GroupPayload> {
        auto c = ContainerReader::open(path, ContainerReader::Verify::All);
        if (!c)
            return c.error();
        if ((*c)->kind() != "group")
            return fileError(path, "is a '" + (*c)->kind() + "' container, not a group file");
        auto j = parseJson((*c)->manifestJson().data(), (*c)->manifestJson().size(), path, "the manifest");
        if (!j)
            return j.error();
        auto p = payloadFromJson(*j, path, "");
        if (!p)
            return p.error();
        if ((*c)->sections().size() != p->sections.size())
            return fileError(path, "the file holds " + std::to_string((*c)->sections().size()) + " sections but the payload names " +
                                       std::to_string(p->sections.size()));
        for (PayloadSection& s : p->sections) {
            auto bytes = (*c)->section(s.name);
            if (!bytes)
                return bytes.error();
            s.bytes.assign(bytes->data, bytes->data + bytes->info.byteSize);
        }
        return std::move(*p);
    });
}

std::string groupPayloadToJson(const GroupPayload& payload)
{
    try {
        auto j = payloadToJson(payload, "group payload");
        if (!j)
            return std::string();
        return j->dump(-1, ' ', false, Json::error_handler_t::replace);
    } catch (const std::exception&) {
        return std::string();
    }
}

Result<GroupPayload> groupPayloadFromJson(const std::string& json, const std::string& fileForErrors)
{
    return guarded(fileForErrors, [&]() -> Result<GroupPayload> {
        auto j = parseJson(json.data(), json.size(), fileForErrors, "the group payload");
        if (!j)
            return j.error();
        return payloadFromJson(*j, fileForErrors, "");
    });
}

} // namespace pocket

#include "pocket/io/gguf.h"

#include "pocket/io/mapped_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

namespace pocket {

namespace {

constexpr std::uint32_t kMagic = 0x46554747; // "GGUF"
constexpr std::uint64_t kMaxStringBytes = std::uint64_t(1) << 30;
constexpr int kMaxDims = 4;

} // namespace

// Reads the file front to back with a cursor that never passes the end; every error names the file
// and the place.
class GgufParser {
public:
    GgufParser(GgufFile& out) : m_out(out), m_base(out.m_file->data()), m_size(out.m_file->size()) {}

    Status parse()
    {
        if (m_size < 4 || std::memcmp(m_base, "GGUF", 4) != 0)
            return fail("not a GGUF file (no GGUF magic at the start)");
        m_pos = 4;
        std::uint32_t version = 0;
        POCKET_TRY(u32(version, "the header"));
        if (version == 1)
            return Error{m_out.m_path + ": GGUF version 1 is not supported (only versions 2 and 3)", ErrorKind::Unsupported};
        if (version != 2 && version != 3)
            return Error{m_out.m_path + ": GGUF version " + std::to_string(version) + " is not supported (only 2 and 3; big-endian files read as a huge version)",
                         ErrorKind::Unsupported};
        m_out.m_version = version;
        std::uint64_t tensorCount = 0, kvCount = 0;
        POCKET_TRY(u64(tensorCount, "the header"));
        POCKET_TRY(u64(kvCount, "the header"));
        // Each key-value pair takes at least 12 bytes and each tensor info at least 24.
        if (kvCount > remaining() / 12)
            return fail("the header counts " + std::to_string(kvCount) + " metadata entries, more than the file can hold");
        if (tensorCount > remaining() / 24)
            return fail("the header counts " + std::to_string(tensorCount) + " tensors, more than the file can hold");
        for (std::uint64_t i = 0; i < kvCount; ++i)
            POCKET_TRY(keyValue(i));
        if (const GgufValue* a = m_out.find("general.alignment")) {
            if (!a->isInteger() || a->integer < 1 || a->integer > 65536 || (a->integer & (a->integer - 1)) != 0)
                return fail("general.alignment must be a power of two between 1 and 65536");
            m_out.m_alignment = static_cast<std::uint32_t>(a->integer);
        }
        for (std::uint64_t i = 0; i < tensorCount; ++i)
            POCKET_TRY(tensorInfo(i));
        return placeTensors();
    }

private:
    Error fail(const std::string& what) const { return fileError(m_out.m_path, what); }
    std::uint64_t remaining() const { return m_size - m_pos; }

    Status bytes(void* out, std::uint64_t n, const std::string& where)
    {
        if (n > remaining())
            return fail("truncated in " + where + " (needs " + std::to_string(n) + " bytes at offset " + std::to_string(m_pos) + ", " +
                        std::to_string(remaining()) + " left)");
        std::memcpy(out, m_base + m_pos, static_cast<std::size_t>(n));
        m_pos += n;
        return {};
    }
    Status u32(std::uint32_t& v, const std::string& where) { return bytes(&v, 4, where); }
    Status u64(std::uint64_t& v, const std::string& where) { return bytes(&v, 8, where); }

    Status string(std::string& out, const std::string& where)
    {
        std::uint64_t n = 0;
        POCKET_TRY(u64(n, where));
        if (n > kMaxStringBytes || n > remaining())
            return fail("truncated or corrupt: a string of " + std::to_string(n) + " bytes in " + where + " runs past the end of the file");
        out.assign(reinterpret_cast<const char*>(m_base + m_pos), static_cast<std::size_t>(n));
        m_pos += n;
        return {};
    }

    static int scalarBytes(GgufValueType t)
    {
        switch (t) {
        case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::Bool: return 1;
        case GgufValueType::U16: case GgufValueType::I16: return 2;
        case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
        case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
        default: return 0;
        }
    }

    // One scalar of type `t` into `v` (integer, real or boolean).
    Status scalar(GgufValueType t, GgufValue& v, const std::string& where)
    {
        std::uint8_t raw[8] = {};
        POCKET_TRY(bytes(raw, static_cast<std::uint64_t>(scalarBytes(t)), where));
        switch (t) {
        case GgufValueType::U8: v.integer = raw[0]; break;
        case GgufValueType::I8: v.integer = static_cast<std::int8_t>(raw[0]); break;
        case GgufValueType::U16: { std::uint16_t x; std::memcpy(&x, raw, 2); v.integer = x; break; }
        case GgufValueType::I16: { std::int16_t x; std::memcpy(&x, raw, 2); v.integer = x; break; }
        case GgufValueType::U32: { std::uint32_t x; std::memcpy(&x, raw, 4); v.integer = x; break; }
        case GgufValueType::I32: { std::int32_t x; std::memcpy(&x, raw, 4); v.integer = x; break; }
        case GgufValueType::I64: { std::int64_t x; std::memcpy(&x, raw, 8); v.integer = x; break; }
        case GgufValueType::U64: {
            std::uint64_t x;
            std::memcpy(&x, raw, 8);
            if (x > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                return fail(where + ": an unsigned 64-bit value beyond 2^63");
            v.integer = static_cast<std::int64_t>(x);
            break;
        }
        case GgufValueType::F32: { float x; std::memcpy(&x, raw, 4); v.real = x; break; }
        case GgufValueType::F64: { std::memcpy(&v.real, raw, 8); break; }
        case GgufValueType::Bool:
            if (raw[0] > 1)
                return fail(where + ": a boolean that is neither 0 nor 1");
            v.boolean = raw[0] == 1;
            break;
        default: return fail(where + ": not a scalar type");
        }
        return {};
    }

    Status value(GgufValueType t, GgufValue& v, const std::string& where, int depth)
    {
        v.type = t;
        if (t == GgufValueType::String)
            return string(v.text, where);
        if (t != GgufValueType::Array) {
            if (scalarBytes(t) == 0)
                return fail(where + ": unknown value type " + std::to_string(static_cast<std::uint32_t>(t)));
            return scalar(t, v, where);
        }
        if (depth > 2)
            return fail(where + ": arrays nest too deep");
        std::uint32_t element = 0;
        POCKET_TRY(u32(element, where));
        v.elementType = static_cast<GgufValueType>(element);
        POCKET_TRY(u64(v.count, where));
        const int size = scalarBytes(v.elementType);
        const std::uint64_t minimum = v.elementType == GgufValueType::String ? 8 : v.elementType == GgufValueType::Array ? 12 : size;
        if (minimum == 0)
            return fail(where + ": array of unknown element type " + std::to_string(element));
        if (v.count > remaining() / minimum)
            return fail("truncated or corrupt: an array of " + std::to_string(v.count) + " elements in " + where + " runs past the end of the file");
        if (v.elementType == GgufValueType::String) {
            v.strings.resize(static_cast<std::size_t>(v.count));
            for (auto& s : v.strings)
                POCKET_TRY(string(s, where));
        } else if (v.elementType == GgufValueType::Array) {
            for (std::uint64_t i = 0; i < v.count; ++i) { // read past, not kept
                GgufValue inner;
                POCKET_TRY(value(GgufValueType::Array, inner, where, depth + 1));
            }
        } else {
            v.numbers.resize(static_cast<std::size_t>(v.count));
            for (auto& n : v.numbers) {
                GgufValue item;
                POCKET_TRY(scalar(v.elementType, item, where));
                if (v.elementType == GgufValueType::Bool)
                    n = item.boolean ? 1 : 0;
                else if (v.elementType == GgufValueType::F32 || v.elementType == GgufValueType::F64)
                    n = item.real;
                else
                    n = static_cast<double>(item.integer);
            }
        }
        return {};
    }

    Status keyValue(std::uint64_t index)
    {
        const std::string where = "metadata entry " + std::to_string(index);
        std::string key;
        POCKET_TRY(string(key, where));
        if (key.empty())
            return fail(where + ": an empty key");
        std::uint32_t type = 0;
        POCKET_TRY(u32(type, where + " ('" + key + "')"));
        GgufValue v;
        POCKET_TRY(value(static_cast<GgufValueType>(type), v, "'" + key + "'", 0));
        if (!m_out.m_metadata.emplace(key, std::move(v)).second)
            return fail("metadata key '" + key + "' appears twice");
        return {};
    }

    Status tensorInfo(std::uint64_t index)
    {
        GgufTensor t;
        POCKET_TRY(string(t.name, "tensor info " + std::to_string(index)));
        const std::string where = "tensor '" + t.name + "'";
        if (t.name.empty())
            return fail("tensor info " + std::to_string(index) + ": an empty name");
        std::uint32_t dims = 0;
        POCKET_TRY(u32(dims, where));
        if (dims < 1 || dims > kMaxDims)
            return fail(where + ": " + std::to_string(dims) + " dimensions (1 to 4 allowed)");
        std::vector<std::int64_t> ne(dims);
        std::uint64_t elements = 1;
        for (auto& d : ne) {
            std::uint64_t v = 0;
            POCKET_TRY(u64(v, where));
            if (v == 0 || v > (std::uint64_t(1) << 40) || elements > (std::uint64_t(1) << 50) / v)
                return fail(where + ": dimension " + std::to_string(v) + " is zero or absurd");
            elements *= v;
            d = static_cast<std::int64_t>(v);
        }
        std::uint32_t type = 0;
        POCKET_TRY(u32(type, where));
        const GgmlTypeTraits traits = ggmlTypeTraits(type);
        if (traits.blockSize == 0)
            return Error{m_out.m_path + ": " + where + " has unknown tensor type " + std::to_string(type), ErrorKind::Unsupported};
        t.type = static_cast<GgmlType>(type);
        if (ne[0] % traits.blockSize != 0)
            return fail(where + ": its rows of " + std::to_string(ne[0]) + " weights are not a multiple of " + traits.name + "'s block of " +
                        std::to_string(traits.blockSize));
        POCKET_TRY(u64(t.offset, where));
        t.bytes = elements / static_cast<std::uint64_t>(traits.blockSize) * static_cast<std::uint64_t>(traits.blockBytes);
        t.shape.assign(ne.rbegin(), ne.rend());
        if (!m_out.m_index.emplace(t.name, m_out.m_tensors.size()).second)
            return fail(where + " appears twice");
        m_out.m_tensors.push_back(std::move(t));
        return {};
    }

    // The data section starts at the next multiple of the alignment; every tensor must lie inside
    // the file, aligned, and apart from the others.
    Status placeTensors()
    {
        const std::uint64_t a = m_out.m_alignment;
        const std::uint64_t dataStart = (m_pos + a - 1) / a * a;
        std::vector<std::pair<std::uint64_t, std::size_t>> order;
        for (std::size_t i = 0; i < m_out.m_tensors.size(); ++i) {
            GgufTensor& t = m_out.m_tensors[i];
            const std::string where = "tensor '" + t.name + "'";
            if (t.offset % a != 0)
                return fail(where + ": offset " + std::to_string(t.offset) + " is not a multiple of the alignment " + std::to_string(a));
            if (dataStart > m_size || t.offset > m_size - dataStart || t.bytes > m_size - dataStart - t.offset)
                return fail("truncated or corrupt: " + where + " (" + std::to_string(t.bytes) + " bytes at data offset " + std::to_string(t.offset) +
                            ") runs past the end of the file (" + std::to_string(m_size) + " bytes)");
            t.offset += dataStart;
            order.push_back({t.offset, i});
        }
        std::sort(order.begin(), order.end());
        for (std::size_t k = 1; k < order.size(); ++k) {
            const GgufTensor& prev = m_out.m_tensors[order[k - 1].second];
            const GgufTensor& cur = m_out.m_tensors[order[k].second];
            if (cur.offset < prev.offset + prev.bytes)
                return fail("tensors '" + prev.name + "' and '" + cur.name + "' overlap");
        }
        return {};
    }

    GgufFile& m_out;
    const std::uint8_t* m_base;
    std::uint64_t m_size;
    std::uint64_t m_pos = 0;
};

bool GgufValue::isInteger() const
{
    switch (type) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::U16: case GgufValueType::I16:
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::U64: case GgufValueType::I64: return true;
    default: return false;
    }
}

bool GgufValue::isNumber() const { return isInteger() || type == GgufValueType::F32 || type == GgufValueType::F64; }

double GgufValue::number() const { return isInteger() ? static_cast<double>(integer) : real; }

std::string ggufTypeName(const GgufValue& v)
{
    static const char* const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
    const auto name = [](GgufValueType t) { return static_cast<std::uint32_t>(t) < 13 ? names[static_cast<std::uint32_t>(t)] : "?"; };
    if (v.type == GgufValueType::Array)
        return std::string("array[") + name(v.elementType) + "]";
    return name(v.type);
}

std::int64_t GgufTensor::elements() const
{
    std::int64_t n = 1;
    for (std::int64_t d : shape)
        n *= d;
    return n;
}

Result<std::shared_ptr<GgufFile>> GgufFile::open(const std::string& path)
{
    auto mapped = MappedFile::open(path);
    if (!mapped)
        return mapped.error();
    std::shared_ptr<GgufFile> file(new GgufFile);
    file->m_path = path;
    file->m_file = *mapped;
    try {
        GgufParser parser(*file);
        POCKET_TRY(parser.parse());
    } catch (const std::bad_alloc&) {
        return fileError(path, "not enough memory to read the GGUF metadata", ErrorKind::Io);
    }
    return file;
}

const GgufValue* GgufFile::find(const std::string& key) const
{
    const auto it = m_metadata.find(key);
    return it == m_metadata.end() ? nullptr : &it->second;
}

Result<std::int64_t> GgufFile::integer(const std::string& key) const
{
    const GgufValue* v = find(key);
    if (!v)
        return fileError(m_path, "missing metadata key '" + key + "'");
    if (!v->isInteger())
        return fileError(m_path, "metadata key '" + key + "' is a " + ggufTypeName(*v) + ", not an integer");
    return v->integer;
}

Result<double> GgufFile::number(const std::string& key) const
{
    const GgufValue* v = find(key);
    if (!v)
        return fileError(m_path, "missing metadata key '" + key + "'");
    if (!v->isNumber())
        return fileError(m_path, "metadata key '" + key + "' is a " + ggufTypeName(*v) + ", not a number");
    return v->number();
}

Result<std::string> GgufFile::text(const std::string& key) const
{
    const GgufValue* v = find(key);
    if (!v)
        return fileError(m_path, "missing metadata key '" + key + "'");
    if (v->type != GgufValueType::String)
        return fileError(m_path, "metadata key '" + key + "' is a " + ggufTypeName(*v) + ", not a string");
    return v->text;
}

std::optional<std::int64_t> GgufFile::optionalInteger(const std::string& key) const
{
    const GgufValue* v = find(key);
    return v && v->isInteger() ? std::optional<std::int64_t>(v->integer) : std::nullopt;
}

std::optional<double> GgufFile::optionalNumber(const std::string& key) const
{
    const GgufValue* v = find(key);
    return v && v->isNumber() ? std::optional<double>(v->number()) : std::nullopt;
}

const GgufTensor* GgufFile::tensor(const std::string& name) const
{
    const auto it = m_index.find(name);
    return it == m_index.end() ? nullptr : &m_tensors[it->second];
}

const std::uint8_t* GgufFile::data(const GgufTensor& tensor) const { return m_file->data() + tensor.offset; }

bool isGgufFile(const std::string& path)
{
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return false;
    char head[4];
    const bool ok = ::read(fd, head, 4) == 4 && std::memcmp(head, "GGUF", 4) == 0;
    ::close(fd);
    return ok;
}

} // namespace pocket

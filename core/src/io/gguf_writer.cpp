#include "pocket/io/gguf_writer.h"

#include "pocket/io/atomic_file.h"

#include <algorithm>
#include <cstring>
#include <memory>

namespace pocket {

namespace {

// Little-endian bytes of the header, metadata and tensor directory.
class Bytes {
public:
    void raw(const void* p, std::size_t n) { m_out.insert(m_out.end(), static_cast<const std::uint8_t*>(p), static_cast<const std::uint8_t*>(p) + n); }
    template <class T>
    void scalar(T v) { raw(&v, sizeof v); }
    void string(const std::string& s)
    {
        scalar<std::uint64_t>(s.size());
        raw(s.data(), s.size());
    }
    void value(const GgufValue& v)
    {
        switch (v.type) {
        case GgufValueType::U8: scalar<std::uint8_t>(static_cast<std::uint8_t>(v.integer)); break;
        case GgufValueType::I8: scalar<std::int8_t>(static_cast<std::int8_t>(v.integer)); break;
        case GgufValueType::U16: scalar<std::uint16_t>(static_cast<std::uint16_t>(v.integer)); break;
        case GgufValueType::I16: scalar<std::int16_t>(static_cast<std::int16_t>(v.integer)); break;
        case GgufValueType::U32: scalar<std::uint32_t>(static_cast<std::uint32_t>(v.integer)); break;
        case GgufValueType::I32: scalar<std::int32_t>(static_cast<std::int32_t>(v.integer)); break;
        case GgufValueType::U64: scalar<std::uint64_t>(static_cast<std::uint64_t>(v.integer)); break;
        case GgufValueType::I64: scalar<std::int64_t>(v.integer); break;
        case GgufValueType::F32: scalar<float>(static_cast<float>(v.real)); break;
        case GgufValueType::F64: scalar<double>(v.real); break;
        case GgufValueType::Bool: scalar<std::uint8_t>(v.boolean ? 1 : 0); break;
        case GgufValueType::String: string(v.text); break;
        case GgufValueType::Array: {
            scalar<std::uint32_t>(static_cast<std::uint32_t>(v.elementType));
            if (v.elementType == GgufValueType::String) {
                scalar<std::uint64_t>(v.strings.size());
                for (const std::string& s : v.strings)
                    string(s);
            } else {
                scalar<std::uint64_t>(v.numbers.size());
                GgufValue item;
                item.type = v.elementType;
                for (double n : v.numbers) {
                    item.integer = static_cast<std::int64_t>(n);
                    item.real = n;
                    item.boolean = n != 0;
                    value(item);
                }
            }
            break;
        }
        }
    }
    std::vector<std::uint8_t>& data() { return m_out; }

private:
    std::vector<std::uint8_t> m_out;
};

GgufValue scalarValue(GgufValueType type)
{
    GgufValue v;
    v.type = type;
    return v;
}

} // namespace

void GgufWriter::set(const std::string& key, GgufValue value) { m_metadata.emplace_back(key, std::move(value)); }

void GgufWriter::setString(const std::string& key, const std::string& value)
{
    GgufValue v = scalarValue(GgufValueType::String);
    v.text = value;
    set(key, std::move(v));
}

void GgufWriter::setU32(const std::string& key, std::uint32_t value)
{
    GgufValue v = scalarValue(GgufValueType::U32);
    v.integer = value;
    set(key, std::move(v));
}

void GgufWriter::setI32(const std::string& key, std::int32_t value)
{
    GgufValue v = scalarValue(GgufValueType::I32);
    v.integer = value;
    set(key, std::move(v));
}

void GgufWriter::setF32(const std::string& key, float value)
{
    GgufValue v = scalarValue(GgufValueType::F32);
    v.real = value;
    set(key, std::move(v));
}

void GgufWriter::setBool(const std::string& key, bool value)
{
    GgufValue v = scalarValue(GgufValueType::Bool);
    v.boolean = value;
    set(key, std::move(v));
}

void GgufWriter::setStrings(const std::string& key, std::vector<std::string> values)
{
    GgufValue v = scalarValue(GgufValueType::Array);
    v.elementType = GgufValueType::String;
    v.strings = std::move(values);
    set(key, std::move(v));
}

void GgufWriter::setF32s(const std::string& key, const std::vector<float>& values)
{
    GgufValue v = scalarValue(GgufValueType::Array);
    v.elementType = GgufValueType::F32;
    v.numbers.assign(values.begin(), values.end());
    set(key, std::move(v));
}

void GgufWriter::setI32s(const std::string& key, const std::vector<std::int32_t>& values)
{
    GgufValue v = scalarValue(GgufValueType::Array);
    v.elementType = GgufValueType::I32;
    v.numbers.assign(values.begin(), values.end());
    set(key, std::move(v));
}

void GgufWriter::add(const std::string& name, GgmlType type, std::vector<std::int64_t> shape, Producer producer)
{
    m_tensors.push_back({name, type, std::move(shape), std::move(producer)});
}

void GgufWriter::addBytes(const std::string& name, GgmlType type, std::vector<std::int64_t> shape, std::vector<std::uint8_t> bytes)
{
    auto shared = std::make_shared<std::vector<std::uint8_t>>(std::move(bytes));
    add(name, type, std::move(shape), [shared](const Sink& sink) { return sink(shared->data(), shared->size()); });
}

Status GgufWriter::write(const std::string& path) const
{
    Bytes head;
    head.raw("GGUF", 4);
    head.scalar<std::uint32_t>(version);
    head.scalar<std::uint64_t>(m_tensors.size());
    head.scalar<std::uint64_t>(m_metadata.size());
    for (const auto& [key, value] : m_metadata) {
        head.string(key);
        head.scalar<std::uint32_t>(static_cast<std::uint32_t>(value.type));
        head.value(value);
    }
    std::vector<std::uint64_t> sizes;
    std::uint64_t offset = 0;
    for (const Entry& t : m_tensors) {
        std::int64_t elements = 1;
        for (std::int64_t d : t.shape)
            elements *= d;
        const auto rowBytes = ggmlRowBytes(t.type, t.shape.empty() ? 1 : t.shape.back());
        if (!rowBytes || t.shape.empty())
            return fileError(path, "tensor '" + t.name + "': its rows do not hold whole blocks of " + ggmlTypeTraits(static_cast<std::uint32_t>(t.type)).name);
        const std::uint64_t bytes = *rowBytes * static_cast<std::uint64_t>(elements / t.shape.back());
        head.string(t.name);
        head.scalar<std::uint32_t>(static_cast<std::uint32_t>(t.shape.size()));
        for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) // ggml's ne: innermost first
            head.scalar<std::uint64_t>(static_cast<std::uint64_t>(*it));
        head.scalar<std::uint32_t>(static_cast<std::uint32_t>(t.type));
        head.scalar<std::uint64_t>(offset);
        sizes.push_back(bytes);
        offset += (bytes + alignment - 1) / alignment * alignment;
    }
    AtomicFile file(path);
    POCKET_TRY(file.open());
    static const std::uint8_t zeros[64] = {};
    const auto pad = [&](std::uint64_t written) -> Status {
        const std::uint64_t padding = (alignment - written % alignment) % alignment;
        for (std::uint64_t left = padding; left > 0;) {
            const std::uint64_t n = std::min<std::uint64_t>(left, sizeof zeros);
            POCKET_TRY(file.write(zeros, static_cast<std::size_t>(n)));
            left -= n;
        }
        return {};
    };
    POCKET_TRY(file.write(head.data().data(), head.data().size()));
    POCKET_TRY(pad(head.data().size()));
    for (std::size_t i = 0; i < m_tensors.size(); ++i) {
        std::uint64_t written = 0;
        const Sink sink = [&](const void* bytes, std::size_t count) -> Status {
            if (written + count > sizes[i])
                return fileError(path, "tensor '" + m_tensors[i].name + "' produced more than its " + std::to_string(sizes[i]) + " bytes");
            written += count;
            return file.write(bytes, count);
        };
        POCKET_TRY(m_tensors[i].producer(sink));
        if (written != sizes[i])
            return fileError(path, "tensor '" + m_tensors[i].name + "' produced " + std::to_string(written) + " bytes, expected " + std::to_string(sizes[i]));
        POCKET_TRY(pad(written));
    }
    return file.commit();
}

} // namespace pocket

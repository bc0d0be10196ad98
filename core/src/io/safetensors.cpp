#include "pocket/io/safetensors.h"

#include "pocket/io/atomic_file.h"
#include "pocket/io/mapped_file.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <limits>

namespace pocket {

namespace {
constexpr std::uint64_t kMaxHeaderBytes = 100u * 1024u * 1024u; // the reference implementation's limit

std::uint64_t readLe64(const std::uint8_t* p)
{
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
} // namespace

std::vector<float> TensorData::toFloat() const
{
    const auto n = static_cast<std::size_t>(elementCount(info.shape));
    std::vector<float> out(n);
    convertToFloat(info.dtype, data, n, out.data());
    return out;
}

const std::string& SafetensorsFile::path() const { return m_file->path(); }

Result<std::shared_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path)
{
    auto mapped = MappedFile::open(path);
    if (!mapped)
        return mapped.error();
    auto file = std::make_shared<SafetensorsFile>();
    file->m_file = *mapped;
    const std::uint64_t size = file->m_file->size();
    if (size < 8)
        return fileError(path, "truncated: " + std::to_string(size) + " bytes is too short for a safetensors header");
    const std::uint64_t headerLen = readLe64(file->m_file->data());
    if (headerLen > kMaxHeaderBytes)
        return fileError(path, "header length " + std::to_string(headerLen) + " is larger than the 100 MB limit (not a safetensors file?)");
    if (headerLen > size - 8)
        return fileError(path, "header length " + std::to_string(headerLen) + " runs past the end of the file (" +
                                   std::to_string(size) + " bytes): truncated or not a safetensors file");
    file->m_dataStart = 8 + headerLen;
    const std::uint64_t dataSize = size - file->m_dataStart;

    nlohmann::json header;
    try {
        header = nlohmann::json::parse(reinterpret_cast<const char*>(file->m_file->data() + 8),
                                       reinterpret_cast<const char*>(file->m_file->data() + 8 + headerLen));
    } catch (const std::exception& e) {
        return fileError(path, std::string("header is not valid JSON: ") + e.what());
    }
    if (!header.is_object())
        return fileError(path, "header is not a JSON object");

    struct Raw {
        TensorInfo info;
        std::uint64_t begin, end;
    };
    std::vector<Raw> raws;
    for (auto it = header.begin(); it != header.end(); ++it) {
        const std::string& name = it.key();
        const auto& v = it.value();
        if (name == "__metadata__") {
            if (!v.is_object())
                return fileError(path, "__metadata__ is not an object");
            for (auto m = v.begin(); m != v.end(); ++m) {
                if (!m.value().is_string()) // the format defines metadata as string -> string
                    return fileError(path, "__metadata__ entry '" + m.key() + "' is not a string");
                file->m_metadata[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        const std::string where = "tensor '" + name + "'";
        if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
            return fileError(path, where + " needs dtype, shape and data_offsets");
        if (!v["dtype"].is_string())
            return fileError(path, where + ": dtype is not a string");
        const std::string dtypeName = v["dtype"].get<std::string>();
        const auto dtype = parseDType(dtypeName);
        if (!dtype)
            return fileError(path, where + ": unknown or unsupported dtype '" + dtypeName + "'", ErrorKind::Unsupported);
        const auto& shape = v["shape"];
        const auto& offsets = v["data_offsets"];
        if (!shape.is_array())
            return fileError(path, where + ": shape is not an array");
        if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
            return fileError(path, where + ": data_offsets must be two non-negative integers");
        Raw raw;
        raw.info.name = name;
        raw.info.dtype = *dtype;
        // Count elements with overflow checks: a hostile shape must not wrap around.
        std::uint64_t count = 1;
        for (const auto& d : shape) {
            if (!d.is_number_unsigned())
                return fileError(path, where + ": shape entries must be non-negative integers");
            const auto dim = d.get<std::uint64_t>();
            if (dim != 0 && count > std::numeric_limits<std::uint64_t>::max() / 16 / dim)
                return fileError(path, where + ": shape " + shape.dump() + " is too large");
            count *= dim;
            raw.info.shape.push_back(static_cast<std::int64_t>(dim));
        }
        raw.begin = offsets[0].get<std::uint64_t>();
        raw.end = offsets[1].get<std::uint64_t>();
        if (raw.end < raw.begin)
            return fileError(path, where + ": data_offsets end before they begin");
        if (raw.end > dataSize)
            return fileError(path, where + ": data_offsets [" + std::to_string(raw.begin) + ", " + std::to_string(raw.end) +
                                       ") run past the end of the data (" + std::to_string(dataSize) + " bytes): truncated file?");
        raw.info.byteSize = raw.end - raw.begin;
        const std::uint64_t expected = count * dtypeSize(*dtype);
        if (expected != raw.info.byteSize)
            return fileError(path, where + ": shape " + shapeString(raw.info.shape) + " of " + dtypeName + " needs " +
                                       std::to_string(expected) + " bytes but data_offsets give " + std::to_string(raw.info.byteSize));
        raws.push_back(std::move(raw));
    }
    std::sort(raws.begin(), raws.end(), [](const Raw& a, const Raw& b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
    // Zero-sized tensors may sit anywhere; non-empty byte ranges may not share a byte. Compare each
    // range with the furthest-reaching non-empty range before it (sorted by start).
    const Raw* furthest = nullptr;
    for (const Raw& cur : raws) {
        if (cur.end == cur.begin)
            continue;
        if (furthest && cur.begin < furthest->end)
            return fileError(path, "tensors '" + furthest->info.name + "' and '" + cur.info.name + "' overlap in the data section");
        if (!furthest || cur.end > furthest->end)
            furthest = &cur;
    }
    for (auto& raw : raws) {
        file->m_index[raw.info.name] = file->m_tensors.size();
        file->m_tensors.push_back(std::move(raw.info));
        file->m_offsets.push_back(raw.begin);
    }
    return file;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const
{
    const auto it = m_index.find(name);
    return it == m_index.end() ? nullptr : &m_tensors[it->second];
}

Result<TensorData> SafetensorsFile::load(const std::string& name) const
{
    const auto it = m_index.find(name);
    if (it == m_index.end())
        return fileError(path(), "no tensor named '" + name + "'");
    TensorData out;
    out.info = m_tensors[it->second];
    const std::uint64_t offset = m_dataStart + m_offsets[it->second];
    out.data = m_file->data() + offset;
    m_file->prefetch(offset, out.info.byteSize);
    out.owner = m_file->lease(offset, out.info.byteSize);
    return out;
}

void SafetensorsWriter::setMetadata(const std::string& key, const std::string& value) { m_metadata[key] = value; }

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<std::int64_t> shape, Producer producer)
{
    m_entries.push_back({name, dtype, std::move(shape), std::move(producer)});
}

void SafetensorsWriter::addBytes(const std::string& name, DType dtype, std::vector<std::int64_t> shape, std::vector<std::uint8_t> bytes)
{
    auto shared = std::make_shared<std::vector<std::uint8_t>>(std::move(bytes));
    add(name, dtype, std::move(shape), [shared](const Sink& sink) { return sink(shared->data(), shared->size()); });
}

void SafetensorsWriter::addFloats(const std::string& name, DType dtype, std::vector<std::int64_t> shape, std::vector<float> values)
{
    std::vector<std::uint8_t> bytes(values.size() * dtypeSize(dtype));
    convertFromFloat(values.data(), values.size(), dtype, bytes.data());
    addBytes(name, dtype, std::move(shape), std::move(bytes));
}

Status SafetensorsWriter::write(const std::string& path) const
{
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!m_metadata.empty()) {
        nlohmann::ordered_json meta = nlohmann::ordered_json::object();
        for (const auto& [k, v] : m_metadata) meta[k] = v;
        header["__metadata__"] = meta;
    }
    std::vector<std::uint64_t> sizes;
    std::uint64_t offset = 0;
    for (const auto& e : m_entries) {
        if (header.contains(e.name))
            return fileError(path, "tensor '" + e.name + "' added twice");
        const std::uint64_t size = static_cast<std::uint64_t>(elementCount(e.shape)) * dtypeSize(e.dtype);
        header[e.name] = {{"dtype", dtypeName(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + size}}};
        sizes.push_back(size);
        offset += size;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' '); // keeps the data section 8-byte aligned
    std::uint8_t lenBytes[8];
    for (int i = 0; i < 8; ++i) lenBytes[i] = static_cast<std::uint8_t>((static_cast<std::uint64_t>(text.size()) >> (8 * i)) & 0xff);

    AtomicFile file(path);
    if (auto s = file.open(); !s) return s;
    if (auto s = file.write(lenBytes, 8); !s) return s;
    if (auto s = file.write(text.data(), text.size()); !s) return s;
    for (std::size_t i = 0; i < m_entries.size(); ++i) {
        std::uint64_t written = 0;
        const Sink sink = [&](const void* bytes, std::size_t count) -> Status {
            if (written + count > sizes[i])
                return fileError(path, "tensor '" + m_entries[i].name + "' produced more bytes than its shape holds");
            written += count;
            return file.write(bytes, count);
        };
        if (auto s = m_entries[i].producer(sink); !s) return s;
        if (written != sizes[i])
            return fileError(path, "tensor '" + m_entries[i].name + "' produced " + std::to_string(written) + " bytes, expected " + std::to_string(sizes[i]));
    }
    return file.commit();
}

} // namespace pocket

// Writing GGUF files (version 3): typed metadata, then tensors whose bytes come from producers one
// at a time, so a model larger than memory can be written. Written under a temporary name and
// renamed into place. Not thread-safe; use from one thread.
#pragma once

#include "pocket/io/ggml_types.h"
#include "pocket/io/gguf.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace pocket {

class GgufWriter {
public:
    // Receives the bytes of the current tensor; may be called several times per tensor.
    using Sink = std::function<Status(const void* bytes, std::size_t count)>;
    // Must pass exactly the tensor's byte size to the sink, in order.
    using Producer = std::function<Status(const Sink& sink)>;

    // Metadata, in the order added (keys unique).
    void set(const std::string& key, GgufValue value);
    void setString(const std::string& key, const std::string& value);
    void setU32(const std::string& key, std::uint32_t value);
    void setI32(const std::string& key, std::int32_t value);
    void setF32(const std::string& key, float value);
    void setBool(const std::string& key, bool value);
    void setStrings(const std::string& key, std::vector<std::string> values);
    void setF32s(const std::string& key, const std::vector<float>& values);
    void setI32s(const std::string& key, const std::vector<std::int32_t>& values);

    // A tensor of `shape` (row-major, outermost first) stored as `type`; its byte size must be the
    // type's for that shape (rows of whole blocks).
    void add(const std::string& name, GgmlType type, std::vector<std::int64_t> shape, Producer producer);
    // Convenience: bytes already in memory (copied).
    void addBytes(const std::string& name, GgmlType type, std::vector<std::int64_t> shape, std::vector<std::uint8_t> bytes);

    std::uint32_t alignment = 32;
    std::uint32_t version = 3;

    Status write(const std::string& path) const;

private:
    struct Entry {
        std::string name;
        GgmlType type;
        std::vector<std::int64_t> shape;
        Producer producer;
    };
    std::vector<std::pair<std::string, GgufValue>> m_metadata;
    std::vector<Entry> m_tensors;
};

} // namespace pocket

// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
// an 8-byte little-endian header length, a JSON header, then the raw tensor bytes.
#pragma once

#include "pocket/support/result.h"
#include "pocket/io/tensor_data.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pocket {

class MappedFile;

// One memory-mapped .safetensors file. Opening validates the whole header (lengths, offsets in
// range and not overlapping, known dtypes, shapes that match the byte counts) and reads no tensor
// bytes. Thread-safe once opened.
class SafetensorsFile {
public:
    static Result<std::shared_ptr<SafetensorsFile>> open(const std::string& path);

    const std::string& path() const;
    // Tensors in the order of their data offsets.
    const std::vector<TensorInfo>& tensors() const { return m_tensors; }
    const TensorInfo* find(const std::string& name) const;
    const std::map<std::string, std::string>& metadata() const { return m_metadata; }
    // A view of the tensor's bytes straight from the mapping (no copy).
    Result<TensorData> load(const std::string& name) const;

private:
    std::shared_ptr<MappedFile> m_file;
    std::uint64_t m_dataStart = 0;
    std::vector<TensorInfo> m_tensors;
    std::vector<std::uint64_t> m_offsets; // parallel to m_tensors, relative to m_dataStart
    std::map<std::string, std::size_t> m_index;
    std::map<std::string, std::string> m_metadata;
};

// Writes a safetensors file tensor by tensor: each tensor's bytes come from a producer called
// during write(), so a file larger than RAM can be written with one tensor in memory at a time.
// The file is written under a temporary name and renamed into place, so a failed or interrupted
// write never leaves a partial file at `path`. Not thread-safe; use from one thread.
class SafetensorsWriter {
public:
    // Receives the bytes of the current tensor; may be called several times per tensor.
    using Sink = std::function<Status(const void* bytes, std::size_t count)>;
    // Must pass exactly the tensor's byte size to the sink, in order.
    using Producer = std::function<Status(const Sink& sink)>;

    void setMetadata(const std::string& key, const std::string& value);
    void add(const std::string& name, DType dtype, std::vector<std::int64_t> shape, Producer producer);
    // Convenience: a tensor whose bytes are already in memory (copied).
    void addBytes(const std::string& name, DType dtype, std::vector<std::int64_t> shape, std::vector<std::uint8_t> bytes);
    // Convenience: float32 values stored as `dtype` (F32, F16 or BF16).
    void addFloats(const std::string& name, DType dtype, std::vector<std::int64_t> shape, std::vector<float> values);

    Status write(const std::string& path) const;

private:
    struct Entry {
        std::string name;
        DType dtype;
        std::vector<std::int64_t> shape;
        Producer producer;
    };
    std::vector<Entry> m_entries;
    std::map<std::string, std::string> m_metadata;
};

} // namespace pocket

// Reading GGUF files (llama.cpp, Ollama, LM Studio; format versions 2 and 3, little-endian): the
// header, the typed metadata and the tensor directory, validated on open, with the tensors' bytes
// read lazily from the memory map. Opening checks every length, count, type, dimension, alignment
// and offset against the file, so a truncated or hostile file is refused with an error naming the
// file and the place, never a crash or a hang. Thread-safe once opened.
#pragma once

#include "pocket/io/ggml_types.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pocket {

class MappedFile;

// GGUF metadata value types (gguf_type).
enum class GgufValueType : std::uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10, I64 = 11, F64 = 12,
};

// One metadata value. Scalars live in the field of their kind; arrays of strings in `strings`, arrays
// of numbers and booleans in `numbers` (arrays of arrays are skipped: `elementType` Array, no items).
struct GgufValue {
    GgufValueType type = GgufValueType::U32;
    GgufValueType elementType = GgufValueType::U32; // arrays
    std::int64_t integer = 0;  // signed and unsigned integers (U64 above 2^63 is refused)
    double real = 0;           // F32, F64
    bool boolean = false;
    std::string text;          // String
    std::vector<std::string> strings;
    std::vector<double> numbers;
    std::uint64_t count = 0;   // arrays: the element count as stored

    bool isInteger() const;
    bool isNumber() const;     // integer or float
    double number() const;     // an integer or float as double
};

// "u32", "string", "array[string]", ... for messages.
std::string ggufTypeName(const GgufValue& value);

struct GgufTensor {
    std::string name;
    std::vector<std::int64_t> shape; // row-major, outermost first (ggml's ne reversed): [rows, cols]
    GgmlType type = GgmlType::F32;
    std::uint64_t offset = 0;        // from the start of the file
    std::uint64_t bytes = 0;
    std::int64_t elements() const;
};

class GgufFile {
public:
    // Maps and validates `path`. Errors name the file and what is wrong where.
    static Result<std::shared_ptr<GgufFile>> open(const std::string& path);

    const std::string& path() const { return m_path; }
    std::uint32_t version() const { return m_version; }
    std::uint32_t alignment() const { return m_alignment; }
    const std::map<std::string, GgufValue>& metadata() const { return m_metadata; }
    const GgufValue* find(const std::string& key) const;
    // Typed look-ups; an error names the file and the key when it is missing or of another type.
    Result<std::int64_t> integer(const std::string& key) const;
    Result<double> number(const std::string& key) const;
    Result<std::string> text(const std::string& key) const;
    std::optional<std::int64_t> optionalInteger(const std::string& key) const;
    std::optional<double> optionalNumber(const std::string& key) const;

    // Tensors in directory order.
    const std::vector<GgufTensor>& tensors() const { return m_tensors; }
    const GgufTensor* tensor(const std::string& name) const;
    // The tensor's bytes in the mapping (valid while this object lives).
    const std::uint8_t* data(const GgufTensor& tensor) const;
    const std::shared_ptr<MappedFile>& file() const { return m_file; }

private:
    std::string m_path;
    std::shared_ptr<MappedFile> m_file;
    std::uint32_t m_version = 0;
    std::uint32_t m_alignment = 32;
    std::map<std::string, GgufValue> m_metadata;
    std::vector<GgufTensor> m_tensors;
    std::map<std::string, std::size_t> m_index;

    friend class GgufParser;
};

// True when the file starts with the GGUF magic (cheap; reads 4 bytes).
bool isGgufFile(const std::string& path);

// llama.cpp's GGUF name of a Hugging Face tensor name ("model.layers.3.mlp.up_proj.weight" ->
// "blk.3.ffn_up.weight"); "" for a name it has none for.
std::string ggufTensorName(const std::string& hfName);

} // namespace pocket

// Descriptions of stored tensors and read-only views of their bytes, without LibTorch.
#pragma once

#include "pocket/io/dtype.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pocket {

// What a checkpoint says about one tensor, before any of its bytes are read.
struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;        // of the bytes load() returns
    std::vector<std::int64_t> shape;
    std::uint64_t byteSize = 0;      // as stored in the file
    // A stored type that is not a DType (a GGUF block type: "Q4_K", "IQ4_NL", ...): load() returns
    // the tensor dequantised to `dtype` (F32). "" when the stored type is `dtype` itself.
    std::string storedType;
    double storedBitsPerWeight = 0;  // with `storedType`: bits per weight of that type
};

// The bytes of one tensor. `data` stays valid while this object (or a copy) lives: `owner`
// keeps the mapping or buffer alive. Releasing the last copy lets the OS drop the pages again,
// so walking a model one tensor at a time keeps only one tensor resident.
struct TensorData {
    TensorInfo info;
    const std::uint8_t* data = nullptr;
    std::shared_ptr<const void> owner;

    // The elements as float32 (copies; converts F16/BF16/F64).
    std::vector<float> toFloat() const;
};

} // namespace pocket

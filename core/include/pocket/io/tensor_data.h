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
    DType dtype = DType::F32;
    std::vector<std::int64_t> shape;
    std::uint64_t byteSize = 0;
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

// Bit accounting over a whole archive (method doc section 5): method bits of the compressed
// matrices plus the stored tensors at their dtype, and the ratios quoted everywhere.
#pragma once

#include "pocket/methods/method.h"

#include <cstdint>
#include <string>
#include <vector>

namespace pocket {

struct ArchiveManifest;

// Bit accounting over a whole archive (method doc section 5).
struct ArchiveBits {
    std::uint64_t totalWeights = 0;       // every parameter of the model
    std::uint64_t compressedWeights = 0;  // weights of compressed matrices
    BitCounts compressed;                 // all method bits (indices, codebooks, decoders, scales)
    std::uint64_t uncompressedBits = 0;   // stored tensors at their stored dtype
    std::uint64_t adapterBits = 0;        // LoRA adapters (fp16 A and B), charged to the compressed matrices
    std::uint64_t totalBits() const { return compressed.total() + adapterBits + uncompressedBits; }
    double bpwAllIn() const;              // totalBits / totalWeights
    double bpwCompressed() const;         // (compressed.total() + adapterBits) / compressedWeights
    double bpwAdapters() const;           // adapterBits / compressedWeights
    double ratioFp16() const;             // 16 * totalWeights / totalBits
    double ratioFp32() const;             // 32 * totalWeights / totalBits (the paper's convention)
};
ArchiveBits accountBits(const ArchiveManifest& manifest);


// What one compressed matrix cost and how close it came: the one per-matrix report that the CLI
// prints, the workbench shows and the experiment store records.
struct MatrixReport {
    std::string name;     // tensor name
    std::string groupId;
    std::string methodId;
    std::int64_t rows = 0;
    std::int64_t cols = 0;
    BitCounts bits;       // the matrix's own bits
    double bpw = 0;       // own bits plus its share of the group's shared bits (matrixBitsPerWeight)
    double mse = 0;
    double snrDb = 0;
};

// One report per matrix of `groups`, in group order.
std::vector<MatrixReport> matrixReports(const std::vector<GroupPayload>& groups);
std::vector<MatrixReport> matrixReports(const GroupPayload& group);

} // namespace pocket

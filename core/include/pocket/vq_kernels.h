// Plain-CPU building blocks shared by vector-quantisation methods (PocketLLM, k-means VQ):
// nearest-codeword search in bounded memory, and bit packing of code streams. No LibTorch.
// All functions are reentrant; the parallel ones use `threads` worker threads of their own.
#pragma once

#include <cstdint>
#include <vector>

namespace pocket {

// For each of the `count` vectors of `dim` floats in `vectors` (row-major), the index of the
// nearest of the `codewords` rows (K x dim, row-major) in squared Euclidean distance; ties go to
// the lowest index. Memory beyond the output is O(threads * tile), never count x K.
// `distances`, when not null, receives the squared distance to the chosen codeword.
// threads <= 0 means one per core. Deterministic whatever the thread count.
void nearestCodewords(const float* vectors, std::int64_t count, const float* codewords, std::int64_t codewordCount, int dim,
                      std::int32_t* indices, float* distances = nullptr, int threads = 0);

// Bits needed for an index into `codewordCount` entries: ceil(log2 K), at least 1.
int indexBits(std::int64_t codewordCount);

// Packs `count` values of `bits` bits each (1..32), LSB first into little-endian bytes:
// value i occupies bits [i*bits, (i+1)*bits) of the stream. Size: ceil(count*bits/8) bytes.
// Values must be < 2^bits.
std::vector<std::uint8_t> packBits(const std::int32_t* values, std::int64_t count, int bits);
// The inverse. Returns false if `bytes` is shorter than ceil(count*bits/8).
bool unpackBits(const std::uint8_t* bytes, std::uint64_t byteCount, std::int64_t count, int bits, std::int32_t* values);

} // namespace pocket

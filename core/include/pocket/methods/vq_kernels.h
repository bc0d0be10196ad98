// Plain-CPU building blocks shared by vector-quantisation methods (PocketLLM, k-means VQ):
// nearest-codeword search in bounded memory, and bit packing of code streams. No LibTorch.
// All functions are reentrant; the parallel ones use `threads` worker threads of their own.
#pragma once

#include "pocket/support/parallel.h" // parallelFor (the plugins reach it through here)

#include <cstdint>
#include <functional>
#include <vector>

namespace pocket {

// For each of the `count` vectors of `dim` floats in `vectors` (row-major), the index of the
// nearest of the `codewords` rows (K x dim, row-major) in squared Euclidean distance; ties go to
// the lowest index. Memory beyond the output is O(K * dim + threads * tile), never count x K.
// `distances`, when not null, receives the squared distance to the chosen codeword, summed in
// double and rounded to float.
// Guarantee: the search ranks by |c-m|^2 - 2 (z-m).(c-m) in float (m: the mean codeword), so for
// finite inputs without overflow the chosen codeword c satisfies
//   |z-c|^2 <= |z-c*|^2 + (dim + 8) * 2^-22 * (|z-m|^2 + |c-m|^2 + |c*-m|^2)
// where c* is a true nearest codeword. Identical codewords always resolve to the lowest index;
// distinct codewords at (nearly) equal distance may resolve either way within that bound.
// threads <= 0 means one per core. Deterministic whatever the thread count (the result may differ
// between instruction sets; POCKET_VQ_ISA=generic|avx2 caps the one used, for tests).
// Throws std::invalid_argument on a broken precondition (dim < 1, K outside 1..2^31-1, ...).
void nearestCodewords(const float* vectors, std::int64_t count, const float* codewords, std::int64_t codewordCount, int dim,
                      std::int32_t* indices, float* distances = nullptr, int threads = 0);

// Bits needed for an index into `codewordCount` entries: ceil(log2 K), at least 1.
int indexBits(std::int64_t codewordCount);

// Packs `count` values of `bits` bits each (1..32), LSB first into little-endian bytes:
// value i occupies bits [i*bits, (i+1)*bits) of the stream. Size: ceil(count*bits/8) bytes.
// Values must be < 2^bits (as unsigned: at 32 bits any int32 pattern); throws
// std::invalid_argument otherwise or for bits outside 1..32.
std::vector<std::uint8_t> packBits(const std::int32_t* values, std::int64_t count, int bits);
// The inverse. Returns false if `bytes` is shorter than ceil(count*bits/8) or bits is outside 1..32.
bool unpackBits(const std::uint8_t* bytes, std::uint64_t byteCount, std::int64_t count, int bits, std::int32_t* values);

// Value `index` of a packed stream (see packBits) of `bits` bits (1..24), read on its own; the
// caller guarantees (index+1)*bits <= byteCount*8. For decoders that read codes out of order.
inline std::uint32_t packedValue(const std::uint8_t* bytes, std::uint64_t byteCount, std::uint64_t index, int bits)
{
    const std::uint64_t bit = index * static_cast<std::uint64_t>(bits);
    const std::uint64_t pos = bit >> 3;
    std::uint32_t word = 0;
    for (std::uint64_t k = 0; k < 4 && pos + k < byteCount; ++k)
        word |= static_cast<std::uint32_t>(bytes[pos + k]) << (8 * k);
    return (word >> (bit & 7)) & ((1u << bits) - 1);
}

// Values [first, first + count) of a packed stream of `bits` bits (1..8), each mapped through
// `table` (2^bits entries): out[i] = table[value(first + i)]. The caller guarantees the stream
// holds them. Byte-aligned runs of 2-, 4- and 8-bit values take a fast path.
void unpackThroughTable(const std::uint8_t* bytes, std::uint64_t byteCount, std::uint64_t first, std::int64_t count, int bits,
                        const float* table, float* out);

// values[i] = halfToFloat(floatToHalf(values[i])) for i < n, bit for bit, with the CPU's F16C
// conversions where it has them.
void roundThroughHalf(float* values, std::size_t n);

// The sub-vector layout of the method doc (section 2): a [rows, cols] matrix is cut along cols into
// blocks of width d (the last padded with zeros when d does not divide cols), and the blocks are
// stacked, giving ceil(cols/d)*rows sub-vectors of d floats: sub-vector (b*rows + r) holds row r,
// columns [b*d, b*d + d). `out` receives ceil(cols/d)*rows*d floats.
void toSubvectors(const float* matrix, std::int64_t rows, std::int64_t cols, int d, float* out);
// The inverse: writes rows*cols floats (padding dropped).
void fromSubvectors(const float* subvectors, std::int64_t rows, std::int64_t cols, int d, float* matrix);

} // namespace pocket

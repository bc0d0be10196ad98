// Static rANS entropy coding of symbol streams (Duda's asymmetric numeral systems, range variant;
// the layout follows ryg_rans's 64-bit coder: state in [2^31, 2^63), 32-bit words, 8 interleaved
// states). The lossless stage of the archive (docs/archive-format.md, "Coded sections"): a
// payload's code and index streams are stored as their symbols' rANS code with the frequency table
// in front. Chosen over libzstd by measurement (docs/benchmarks.md, "Lossless stage").
//
// A coded stream (all integers little-endian; varint = unsigned LEB128):
//   u8  format      1
//   u8  symbolBits  1..16: symbols are < 2^symbolBits
//   u8  precision   P, 1..16: frequencies sum to 2^P
//   u8  lanes       1..32 interleaved states; symbol i is coded by state i mod lanes
//   varint count    symbols
//   table           (count > 0 only) varint n = largest symbol + 1; then for s = 0 .. n-1 a varint
//                   frequency f_s; after each zero frequency, a varint r: the next r symbols have
//                   frequency 0 as well (skipped)
//   words           (count > 0 only) u32 words: the final states (two words each, low first, lane 0
//                   first) and the renormalisation words in decoding order; the stream ends with
//                   the last word
// Decoding checks everything: a stream that is not exactly what the encoder writes for its symbol
// count (a damaged table, a short or long word stream, states that do not end where the encoder
// started) is refused, and no input makes the decoder read or write outside its buffers.
// Reentrant; no shared state.
#pragma once

#include "pocket/support/result.h"

#include <cstdint>
#include <vector>

namespace pocket::rans {

constexpr int kMaxSymbolBits = 16;
constexpr int kFormat = 1;

// Σ c log2(total / c) over the nonzero counts: the empirical entropy of a stream, in bits.
double entropyBits(const std::vector<std::uint64_t>& counts);

// Counts of each symbol value 0 .. 2^symbolBits - 1.
std::vector<std::uint64_t> histogram(const std::uint16_t* symbols, std::uint64_t count, int symbolBits);

// The sizes of a coded stream, as its header says (parsed and checked).
struct StreamInfo {
    int symbolBits = 0;
    int precision = 0;
    int lanes = 0;
    std::uint64_t count = 0;
    std::uint64_t headerBytes = 0; // format .. count
    std::uint64_t tableBytes = 0;
    std::uint64_t wordBytes = 0;
    std::vector<std::uint32_t> frequencies; // n entries
};
Result<StreamInfo> inspect(const std::uint8_t* coded, std::uint64_t size);

// Codes `count` symbols (each < 2^symbolBits, symbolBits 1..16). Chooses the precision that
// minimises table plus code, and 8 lanes (1 for short streams). Throws std::invalid_argument on a
// symbol out of range (a caller's bug).
std::vector<std::uint8_t> encode(const std::uint16_t* symbols, std::uint64_t count, int symbolBits);
// Same, with a given precision and lane count (tests; the reference coder).
std::vector<std::uint8_t> encodeWith(const std::uint16_t* symbols, std::uint64_t count, int symbolBits, int precision, int lanes);

// Decodes a stream that must hold exactly `count` symbols of `symbolBits` bits into `out`.
// Errors say what is wrong ("frequency table ...", "word stream ...").
Status decode(const std::uint8_t* coded, std::uint64_t size, std::uint64_t count, int symbolBits, std::uint16_t* out);

// The `count` values of a packed stream of `bits` bits (1..16; packBits' layout) as symbols; the
// caller guarantees ceil(count*bits/8) <= packedBytes.
void unpack(const std::uint8_t* packed, std::uint64_t packedBytes, std::uint64_t count, int bits, std::uint16_t* symbols);

// The inverse: `count` symbols (each < 2^bits, unchecked) packed into ceil(count*bits/8) bytes.
void pack(const std::uint16_t* symbols, std::uint64_t count, int bits, std::uint8_t* packed);
void pack(const std::uint8_t* symbols, std::uint64_t count, int bits, std::uint8_t* packed);

// Packed streams (packBits' layout: value i in bits [i*bits, (i+1)*bits), LSB first).
// Codes the `count` values of a packed stream of `bits` bits.
std::vector<std::uint8_t> encodePacked(const std::uint8_t* packed, std::uint64_t packedBytes, std::uint64_t count, int bits);
// Decodes into a packed stream of ceil(count*bits/8) bytes at `packed` (trailing bits zero).
Status decodePacked(const std::uint8_t* coded, std::uint64_t size, std::uint64_t count, int bits, std::uint8_t* packed,
                    std::uint64_t packedBytes);

} // namespace pocket::rans

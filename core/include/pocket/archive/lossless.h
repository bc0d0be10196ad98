// The archive's lossless stage ("double compression", arXiv 2502.15443, step 3): the code and index
// streams of a payload (PayloadSection::symbolBits > 0) stored rANS-coded (pocket/support/rans.h)
// where that pays. Bit accounting follows the stored sizes: a coded stream's bits are its coded
// bytes (table included), counted in its matrix's index bits.
#pragma once

#include "pocket/archive/model_archive.h"
#include "pocket/support/result.h"

#include <string>
#include <vector>

namespace pocket {

enum class EntropyMode {
    None, // streams stay packed at their fixed width
    Auto, // a stream is coded where that saves at least EntropyOptions::minSaving of its bytes
    On,   // every stream the coder takes is coded
};
const char* entropyModeName(EntropyMode mode); // "none", "auto", "on"
Result<EntropyMode> parseEntropyMode(const std::string& text);

// Which coder a coded stream gets.
enum class EntropyCoder {
    Fastest, // zstd where it comes within EntropyOptions::zstdSlack of rANS's size, else rANS
    Rans,    // always rANS (the smallest: within 0.1% of the entropy plus the table on large streams)
    Zstd,    // always zstd (level 1; its Huffman literals decode fastest)
};
const char* entropyCoderName(EntropyCoder coder); // "fastest", "rans", "zstd"
Result<EntropyCoder> parseEntropyCoder(const std::string& text);
// "none", "rans", "zstd"
const char* codecName(SectionCoding::Codec codec);

struct EntropyOptions {
    EntropyMode mode = EntropyMode::Auto;
    EntropyCoder coder = EntropyCoder::Fastest;
    double zstdSlack = 0.01; // Fastest: zstd is taken when at most this fraction larger than rANS
    double minSaving = 0.02; // Auto: fraction of the packed size a stream must save
    int threads = 0;         // streams coded in parallel (<= 0: one per core)
};

// Codes the code streams of `group` (its payload holds packed bytes, nothing coded yet) in place:
// section bytes replaced by their coded form where `options` says so, `group.coding` filled (the
// entropy of every stream measured, coded or not), matrix and shared index bits set to what is
// stored. Streams of more than 16-bit symbols stay packed.
Status applyLosslessStage(ArchiveGroup& group, const EntropyOptions& options);

// The same for every group of an archive, groups in parallel (options.threads).
Status applyLosslessStage(std::vector<ArchiveGroup>& groups, const EntropyOptions& options);

// Bytes of a code stream packed at its fixed width: ceil(symbols * symbolBits / 8).
std::uint64_t packedCodeBytes(const PayloadSection& section);

// The most codes a coded stream of `payload` may hold: its matrices' weights (a reader refuses more;
// a stream of one repeated code codes any count in a few bytes, so only the matrices bound it).
std::uint64_t codeLimit(const GroupPayload& payload);

// Decodes the coded sections of `payload` (bytes as stored, in `group`'s section order) back to
// their packed form. Errors name `file` and the section.
Status decodeLosslessStage(const ArchiveGroup& group, GroupPayload& payload, const std::string& file);

// Writes `outPath`: the archive at `inPath` with its code streams coded afresh under `options`
// (everything else as it was; the bit accounting follows). `outPath` may be `inPath`.
Status repackArchive(const std::string& inPath, const std::string& outPath, const EntropyOptions& options);

// Per-section facts for `inspect`: fixed-width bits, stored bits, empirical entropy.
struct SectionCodeReport {
    std::string section;      // payload section name
    std::string codec;        // "none", "rans" or "zstd"
    int symbolBits = 0;
    std::uint64_t symbols = 0;
    std::uint64_t fixedBits = 0;  // symbols * symbolBits
    std::uint64_t storedBits = 0; // stored bytes * 8
    double entropyBits = -1;      // -1: not measured
};
std::vector<SectionCodeReport> sectionCodeReports(const ArchiveGroup& group);

} // namespace pocket

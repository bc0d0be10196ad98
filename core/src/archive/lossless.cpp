// The archive's lossless stage (see pocket/archive/lossless.h).
#include "pocket/archive/lossless.h"

#include "manifest_fields.h"

#include "pocket/support/parallel.h"
#include "pocket/support/rans.h"

#include <zstd.h>

#include <algorithm>
#include <stdexcept>

namespace pocket {

using archive_detail::guarded;

namespace {

bool codable(const PayloadSection& s)
{
    return s.symbolBits >= 1 && s.symbolBits <= rans::kMaxSymbolBits && s.symbols > 0;
}

} // namespace

std::uint64_t packedCodeBytes(const PayloadSection& s)
{
    return (s.symbols * static_cast<std::uint64_t>(s.symbolBits) + 7) / 8;
}

std::uint64_t codeLimit(const GroupPayload& payload)
{
    std::uint64_t weights = 0;
    for (const MatrixResult& m : payload.matrices)
        weights += static_cast<std::uint64_t>(std::max<std::int64_t>(0, m.ref.rows)) * static_cast<std::uint64_t>(std::max<std::int64_t>(0, m.ref.cols));
    return weights;
}

namespace {

// The bits a stream is counted in: its matrix's, for "<kind>/<matrix name>", else the group's shared bits.
BitCounts& streamBits(GroupPayload& p, const std::string& section)
{
    const auto slash = section.find('/');
    if (slash != std::string::npos)
        for (MatrixResult& m : p.matrices)
            if (m.ref.name == section.substr(slash + 1))
                return m.bits;
    return p.sharedBits;
}

// A stream's index bits counted at `to` bits instead of `from` (never below zero).
void recount(BitCounts& bits, std::uint64_t from, std::uint64_t to)
{
    bits.indexBits = bits.indexBits + to >= from ? bits.indexBits + to - from : 0;
}

struct Coded {
    std::vector<std::uint8_t> bytes; // empty: stays packed
    SectionCoding::Codec codec = SectionCoding::Codec::None;
    double entropyBits = -1;
};

constexpr int kZstdLevel = 1; // its literals are Huffman-coded like level 19's; matches are not worth more here

// The codes one byte each (two, little-endian, above 8 bits): the zstd codec's input.
std::vector<std::uint8_t> codeBytes(const std::vector<std::uint16_t>& symbols, int bits)
{
    std::vector<std::uint8_t> out(symbols.size() * (bits > 8 ? 2 : 1));
    if (bits > 8) {
        for (std::size_t i = 0; i < symbols.size(); ++i) {
            out[2 * i] = static_cast<std::uint8_t>(symbols[i]);
            out[2 * i + 1] = static_cast<std::uint8_t>(symbols[i] >> 8);
        }
    } else {
        for (std::size_t i = 0; i < symbols.size(); ++i)
            out[i] = static_cast<std::uint8_t>(symbols[i]);
    }
    return out;
}

std::vector<std::uint8_t> zstdEncode(const std::vector<std::uint16_t>& symbols, int bits)
{
    const std::vector<std::uint8_t> raw = codeBytes(symbols, bits);
    std::vector<std::uint8_t> out(ZSTD_compressBound(raw.size()));
    const std::size_t n = ZSTD_compress(out.data(), out.size(), raw.data(), raw.size(), kZstdLevel);
    if (ZSTD_isError(n))
        throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(n));
    out.resize(n);
    return out;
}

// A zstd section back to its packed codes: the frame must hold exactly count codes of `bits` bits.
Status zstdDecodePacked(const std::vector<std::uint8_t>& coded, std::uint64_t count, int bits, std::vector<std::uint8_t>& packed)
{
    const std::uint64_t width = bits > 8 ? 2 : 1;
    const unsigned long long declared = ZSTD_getFrameContentSize(coded.data(), coded.size());
    if (declared == ZSTD_CONTENTSIZE_ERROR || declared == ZSTD_CONTENTSIZE_UNKNOWN || declared != count * width)
        return Error("zstd frame damaged: it does not declare " + std::to_string(count) + " codes");
    if (ZSTD_findFrameCompressedSize(coded.data(), coded.size()) != coded.size())
        return Error("zstd frame damaged: the section is not exactly one frame");
    std::vector<std::uint8_t> raw(count * width);
    const std::size_t n = ZSTD_decompress(raw.data(), raw.size(), coded.data(), coded.size());
    if (ZSTD_isError(n) || n != raw.size())
        return Error(std::string("zstd frame damaged: ") + (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short"));
    // Every code must fit its width (a crafted frame could hold any byte); checked in one pass the
    // compiler vectorises, then packed.
    if (width == 1) {
        std::uint8_t any = 0;
        for (std::uint8_t v : raw)
            any |= v;
        if (bits < 8 && (any >> bits) != 0)
            return Error("zstd frame damaged: a code does not fit " + std::to_string(bits) + " bits");
        rans::pack(raw.data(), count, bits, packed.data());
        return {};
    }
    std::vector<std::uint16_t> codes(count);
    std::uint16_t any = 0;
    for (std::uint64_t i = 0; i < count; ++i) {
        codes[i] = static_cast<std::uint16_t>(raw[2 * i] | raw[2 * i + 1] << 8);
        any |= codes[i];
    }
    if (bits < 16 && (any >> bits) != 0)
        return Error("zstd frame damaged: a code does not fit " + std::to_string(bits) + " bits");
    rans::pack(codes.data(), count, bits, packed.data());
    return {};
}

Result<Coded> codeStream(const PayloadSection& s, const EntropyOptions& options)
{
    if (s.bytes.size() != packedCodeBytes(s))
        return Error::internal("payload section '" + s.name + "' holds " + std::to_string(s.bytes.size()) + " bytes, not the " +
                               std::to_string(packedCodeBytes(s)) + " of its packed codes");
    std::vector<std::uint16_t> symbols(s.symbols);
    rans::unpack(s.bytes.data(), s.bytes.size(), s.symbols, s.symbolBits, symbols.data());
    Coded out;
    out.entropyBits = rans::entropyBits(rans::histogram(symbols.data(), symbols.size(), s.symbolBits));
    if (options.mode == EntropyMode::None)
        return out;
    std::vector<std::uint8_t> coded;
    SectionCoding::Codec codec = SectionCoding::Codec::Rans;
    if (options.coder != EntropyCoder::Zstd)
        coded = rans::encode(symbols.data(), symbols.size(), s.symbolBits);
    if (options.coder != EntropyCoder::Rans) {
        std::vector<std::uint8_t> z = zstdEncode(symbols, s.symbolBits);
        if (options.coder == EntropyCoder::Zstd ||
            static_cast<double>(z.size()) <= static_cast<double>(coded.size()) * (1.0 + options.zstdSlack)) {
            coded = std::move(z);
            codec = SectionCoding::Codec::Zstd;
        }
    }
    const double limit = static_cast<double>(s.bytes.size()) * (1.0 - options.minSaving);
    if (options.mode == EntropyMode::On || static_cast<double>(coded.size()) <= limit) {
        out.bytes = std::move(coded);
        out.codec = codec;
    }
    return out;
}

} // namespace

const char* entropyModeName(EntropyMode mode)
{
    switch (mode) {
    case EntropyMode::None: return "none";
    case EntropyMode::Auto: return "auto";
    case EntropyMode::On: return "on";
    }
    return "?";
}

const char* entropyCoderName(EntropyCoder coder)
{
    switch (coder) {
    case EntropyCoder::Fastest: return "fastest";
    case EntropyCoder::Rans: return "rans";
    case EntropyCoder::Zstd: return "zstd";
    }
    return "?";
}

Result<EntropyCoder> parseEntropyCoder(const std::string& text)
{
    for (EntropyCoder c : {EntropyCoder::Fastest, EntropyCoder::Rans, EntropyCoder::Zstd})
        if (text == entropyCoderName(c))
            return c;
    return Error::usage("entropy coder '" + text + "' is not one of fastest, rans, zstd", "entropy coder");
}

const char* codecName(SectionCoding::Codec codec)
{
    switch (codec) {
    case SectionCoding::Codec::None: return "none";
    case SectionCoding::Codec::Rans: return "rans";
    case SectionCoding::Codec::Zstd: return "zstd";
    }
    return "?";
}

Result<EntropyMode> parseEntropyMode(const std::string& text)
{
    for (EntropyMode m : {EntropyMode::None, EntropyMode::Auto, EntropyMode::On})
        if (text == entropyModeName(m))
            return m;
    return Error::usage("entropy coding '" + text + "' is not one of none, auto, on", "entropy");
}

Status applyLosslessStage(ArchiveGroup& group, const EntropyOptions& options)
{
    GroupPayload& p = group.payload;
    if (group.anyCoded())
        return Error::internal("group '" + p.groupId + "' is already entropy-coded");
    group.coding.assign(p.sections.size(), SectionCoding{});
    // A reader allows a coded stream at most as many codes as the group has weights (a coded stream
    // of one repeated code is a few bytes for any count, so the count is bounded by the matrices).
    const std::uint64_t limit = codeLimit(p);
    std::vector<std::size_t> streams;
    for (std::size_t k = 0; k < p.sections.size(); ++k)
        if (codable(p.sections[k]) && p.sections[k].symbols <= limit)
            streams.push_back(k);
    std::vector<Result<Coded>> results(streams.size(), Result<Coded>(Coded{}));
    try {
        parallelFor(static_cast<std::int64_t>(streams.size()), options.threads, 1, [&](std::int64_t a, std::int64_t b) {
            for (auto i = static_cast<std::size_t>(a); i < static_cast<std::size_t>(b); ++i)
                results[i] = codeStream(p.sections[streams[i]], options);
        });
    } catch (const std::bad_alloc&) {
        return Error("not enough memory to entropy-code group '" + p.groupId + "'");
    } catch (const std::exception& e) {
        return Error::internal("group '" + p.groupId + "': " + e.what());
    }
    for (std::size_t i = 0; i < streams.size(); ++i) {
        if (!results[i])
            return results[i].error();
        PayloadSection& s = p.sections[streams[i]];
        SectionCoding& c = group.coding[streams[i]];
        c.entropyBits = results[i]->entropyBits;
        if (!results[i]->bytes.empty()) {
            // The method counted the stream at its fixed width; count what is stored instead.
            recount(streamBits(p, s.name), s.symbols * static_cast<std::uint64_t>(s.symbolBits), 8ull * results[i]->bytes.size());
            s.bytes = std::move(results[i]->bytes);
            c.codec = results[i]->codec;
        }
    }
    for (std::size_t k = 0; k < p.sections.size(); ++k)
        group.coding[k].storedBytes = p.sections[k].bytes.size();
    return {};
}

Status applyLosslessStage(std::vector<ArchiveGroup>& groups, const EntropyOptions& options)
{
    EntropyOptions one = options;
    one.threads = 1;
    std::vector<Status> status(groups.size());
    try {
        parallelFor(static_cast<std::int64_t>(groups.size()), options.threads, 1, [&](std::int64_t a, std::int64_t b) {
            for (auto g = static_cast<std::size_t>(a); g < static_cast<std::size_t>(b); ++g)
                status[g] = applyLosslessStage(groups[g], one);
        });
    } catch (const std::bad_alloc&) {
        return Error("not enough memory to entropy-code the archive's code streams");
    }
    for (const Status& s : status)
        if (!s)
            return s;
    return {};
}

Status decodeLosslessStage(const ArchiveGroup& group, GroupPayload& payload, const std::string& file)
{
    return guarded(file, [&]() -> Status {
        for (std::size_t k = 0; k < payload.sections.size(); ++k) {
            if (!group.coded(k))
                continue;
            PayloadSection& s = payload.sections[k];
            std::vector<std::uint8_t> packed(packedCodeBytes(s));
            const Status st = group.coding[k].codec == SectionCoding::Codec::Zstd
                                  ? zstdDecodePacked(s.bytes, s.symbols, s.symbolBits, packed)
                                  : rans::decodePacked(s.bytes.data(), s.bytes.size(), s.symbols, s.symbolBits, packed.data(), packed.size());
            if (!st)
                return fileError(file, "group '" + payload.groupId + "', section '" + s.name + "': " + st.message());
            s.bytes = std::move(packed);
        }
        return Status{};
    });
}

Status repackArchive(const std::string& inPath, const std::string& outPath, const EntropyOptions& options)
{
    auto archive = Archive::open(inPath);
    if (!archive)
        return archive.error();
    const Archive& a = **archive;
    ArchiveInput input;
    input.manifest = a.manifest();
    for (std::size_t g = 0; g < input.manifest.groups.size(); ++g) {
        ArchiveGroup& group = input.manifest.groups[g];
        auto payload = a.groupPayload(g);
        if (!payload)
            return payload.error();
        // Back to what the method counted: each coded stream at its fixed width.
        for (std::size_t k = 0; k < payload->sections.size(); ++k) {
            if (!group.coded(k))
                continue;
            const PayloadSection& s = payload->sections[k];
            recount(streamBits(*payload, s.name), 8 * group.coding[k].storedBytes, s.symbols * static_cast<std::uint64_t>(s.symbolBits));
        }
        group.payload = std::move(*payload);
        group.coding.clear();
    }
    POCKET_TRY(applyLosslessStage(input.manifest.groups, options));
    POCKET_TRY(loadAdapterBytes(a, input.manifest));
    POCKET_TRY(copyStoredParts(a, input));
    return writeArchive(outPath, std::move(input));
}

std::vector<SectionCodeReport> sectionCodeReports(const ArchiveGroup& group)
{
    std::vector<SectionCodeReport> out;
    for (std::size_t k = 0; k < group.payload.sections.size(); ++k) {
        const PayloadSection& s = group.payload.sections[k];
        if (s.symbolBits <= 0)
            continue;
        SectionCodeReport r;
        r.section = s.name;
        r.codec = codecName(k < group.coding.size() ? group.coding[k].codec : SectionCoding::Codec::None);
        r.symbolBits = s.symbolBits;
        r.symbols = s.symbols;
        r.fixedBits = s.symbols * static_cast<std::uint64_t>(s.symbolBits);
        r.storedBits = k < group.coding.size() ? 8 * group.coding[k].storedBytes : 8 * packedCodeBytes(s);
        r.entropyBits = k < group.coding.size() ? group.coding[k].entropyBits : -1;
        out.push_back(std::move(r));
    }
    return out;
}

} // namespace pocket

#include "pocket/archive/archive_gguf.h"

#include "pocket/archive/archive_checkpoint.h"
#include "pocket/archive/bit_accounting.h"
#include "pocket/archive/container.h"
#include "pocket/archive/model_archive.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/dtype.h"
#include "pocket/io/gguf.h"
#include "pocket/io/gguf_export.h"
#include "pocket/methods/uniform_quant.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

namespace pocket {

namespace {

// Where each compressed matrix of an archive lives, and the last group read (groups are read once
// for all their matrices: the checkpoint lists a group's matrices one after another).
constexpr const char* kAdapterMerged = "its LoRA adapter is merged into the decoded weights (the codes alone would drop it)";

class ArchiveCodes {
public:
    explicit ArchiveCodes(std::shared_ptr<Archive> archive) : m_archive(archive), m_payloads(std::move(archive))
    {
        const auto& groups = m_archive->manifest().groups;
        for (std::size_t g = 0; g < groups.size(); ++g)
            for (std::size_t k = 0; k < groups[g].payload.matrices.size(); ++k)
                m_where[groups[g].payload.matrices[k].ref.name] = {g, k};
    }
    bool compressed(const std::string& name) const { return m_where.count(name) > 0; }
    // Whether the archive has a LoRA adapter on the matrix (its codes alone would drop it).
    bool adapted(const std::string& name) const { return hasAdapter(m_archive->manifest(), name); }
    const GroupPayload& manifestPayload(const std::string& name) const { return m_archive->manifest().groups[m_where.at(name).first].payload; }
    std::size_t indexInGroup(const std::string& name) const { return m_where.at(name).second; }
    // The group's payload with its bytes.
    Result<const GroupPayload*> payload(const std::string& name) { return m_payloads.get(m_where.at(name).first); }

private:
    std::shared_ptr<Archive> m_archive;
    PayloadCache m_payloads;
    std::map<std::string, std::pair<std::size_t, std::size_t>> m_where;
};

// Why a uniform-quantised matrix has no exact block type ("" when Q4_1/Q5_1 fits).
std::string noExactType(const std::string& method, int bits, std::int64_t groupCols, std::int64_t cols, bool intZero)
{
    if (method != "rtn" && method != "gptq")
        return method + " has no ggml block type";
    if (intZero)
        return "integer zero points: Q4_1/Q5_1 store an fp16 minimum, which would round -zero*scale";
    if (bits != 4 && bits != 5)
        return std::to_string(bits) + "-bit codes: ggml's asymmetric 32-blocks are 4-bit (Q4_1) and 5-bit (Q5_1)";
    if (groupCols % 32 != 0 || cols % 32 != 0)
        return "groups of " + std::to_string(groupCols) + " columns in rows of " + std::to_string(cols) + " do not fill 32-weight blocks";
    return {};
}

// The method, bits and group width of a compressed matrix as its manifest gives them.
struct UniformLayout {
    std::string method;
    int bits = 0;
    std::int64_t groupCols = 0;
    bool intZero = false;
};
UniformLayout layoutOf(const GroupPayload& payload, std::size_t k)
{
    UniformLayout l;
    l.method = payload.methodId;
    const auto meta = nlohmann::json::parse(payload.metaJson, nullptr, false);
    if (meta.is_object() && meta.contains("bits") && meta["bits"].is_number_integer() && meta.contains("groups") && meta["groups"].is_array() &&
        meta["groups"].size() > k && meta["groups"][k].is_number_integer()) {
        l.bits = meta["bits"].get<int>();
        l.groupCols = meta["groups"][k].get<std::int64_t>();
    }
    l.intZero = uniform::intZeroOf(meta);
    return l;
}

// The rows of one matrix as Q4_1 or Q5_1 blocks: codes, scales and minima copied.
std::vector<std::uint8_t> encodeBlocks(const MatrixRef& ref, int bits, std::int64_t groupCols, const std::vector<std::int32_t>& codes,
                                       const std::uint8_t* scales, const std::uint8_t* mins)
{
    const bool five = bits == 5;
    const std::size_t blockBytes = five ? 24 : 20;
    const std::int64_t perRow = (ref.cols + groupCols - 1) / groupCols, blocksPerRow = ref.cols / 32;
    std::vector<std::uint8_t> out(static_cast<std::size_t>(ref.rows * blocksPerRow) * blockBytes, 0);
    for (std::int64_t r = 0; r < ref.rows; ++r)
        for (std::int64_t b = 0; b < blocksPerRow; ++b) {
            std::uint8_t* block = out.data() + static_cast<std::size_t>(r * blocksPerRow + b) * blockBytes;
            const std::size_t group = static_cast<std::size_t>(r * perRow + b * 32 / groupCols) * 2;
            std::memcpy(block, scales + group, 2); // d
            std::memcpy(block + 2, mins + group, 2); // m
            const std::int32_t* q = codes.data() + r * ref.cols + b * 32;
            std::uint8_t* qs = block + (five ? 8 : 4);
            std::uint32_t qh = 0;
            for (int j = 0; j < 16; ++j) {
                qs[j] = static_cast<std::uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
                qh |= static_cast<std::uint32_t>((q[j] >> 4) & 1) << j;
                qh |= static_cast<std::uint32_t>((q[j + 16] >> 4) & 1) << (j + 16);
            }
            if (five)
                std::memcpy(block + 4, &qh, 4);
        }
    return out;
}

// The block type a compressed matrix re-encodes into exactly, or nothing (with the reason in `why`).
std::optional<GgmlType> exactType(const ArchiveCodes& codes, const std::string& name, std::string& why)
{
    const GroupPayload& manifest = codes.manifestPayload(name);
    const std::size_t k = codes.indexInGroup(name);
    const UniformLayout layout = layoutOf(manifest, k);
    why = codes.adapted(name) ? kAdapterMerged : noExactType(manifest.methodId, layout.bits, layout.groupCols, manifest.matrices[k].ref.cols, layout.intZero);
    if (!why.empty())
        return std::nullopt;
    return layout.bits == 4 ? GgmlType::Q4_1 : GgmlType::Q5_1;
}

// The blocks of a matrix exactType() accepted, and the largest deviation of llama.cpp's weights
// from the archive's.
Result<std::vector<std::uint8_t>> exactBlocks(ArchiveCodes& codes, const std::string& name, double& deviation)
{
    const GroupPayload& manifest = codes.manifestPayload(name);
    const std::size_t k = codes.indexInGroup(name);
    const MatrixRef& ref = manifest.matrices[k].ref;
    const UniformLayout layout = layoutOf(manifest, k);
    const int bits = layout.bits;
    const std::int64_t groupCols = layout.groupCols;
    auto payload = codes.payload(name);
    if (!payload)
        return payload.error();
    const GroupPayload& p = **payload;
    const PayloadSection* c = p.section("codes/" + name);
    const PayloadSection* s = p.section("scales/" + name);
    const PayloadSection* m = p.section("mins/" + name);
    const std::uint64_t groups = static_cast<std::uint64_t>(ref.rows * ((ref.cols + groupCols - 1) / groupCols));
    std::vector<std::int32_t> q(static_cast<std::size_t>(ref.weights()));
    if (!c || !s || !m || s->bytes.size() != groups * 2 || m->bytes.size() != groups * 2 ||
        !unpackBits(c->bytes.data(), c->bytes.size(), ref.weights(), bits, q.data()))
        return Error{name + ": the " + manifest.methodId + " payload's sections are missing or of the wrong size"};
    std::vector<std::uint8_t> encoded = encodeBlocks(ref, bits, groupCols, q, s->bytes.data(), m->bytes.data());
    // What llama.cpp will compute from the blocks, against what the archive decodes to.
    auto decoded = uniform::decodePayload(p, manifest.methodId);
    if (!decoded)
        return decoded.error();
    const std::vector<float>& ours = (*decoded)[k];
    std::vector<float> theirs(ours.size());
    dequantizeRow(bits == 4 ? GgmlType::Q4_1 : GgmlType::Q5_1, encoded.data(), theirs.data(), static_cast<std::int64_t>(theirs.size()));
    deviation = 0;
    for (std::size_t i = 0; i < ours.size(); ++i)
        deviation = std::max(deviation, static_cast<double>(std::fabs(ours[i] - theirs[i])));
    return encoded;
}

} // namespace

Result<std::vector<ArchiveGgufTensor>> planGgufExport(const std::string& source, const MethodRegistry& registry, const ArchiveGgufOptions& options)
{
    auto ckpt = openModelOrArchive(source, registry);
    if (!ckpt)
        return ckpt.error();
    std::map<std::string, std::pair<const GroupPayload*, std::size_t>> compressed;
    std::shared_ptr<Archive> archive;
    if (isPllmFile(source)) {
        auto a = Archive::open(source, ContainerReader::Verify::ManifestOnly);
        if (!a)
            return a.error();
        archive = *a;
        for (const ArchiveGroup& g : archive->manifest().groups)
            for (std::size_t k = 0; k < g.payload.matrices.size(); ++k)
                compressed[g.payload.matrices[k].ref.name] = {&g.payload, k};
    }
    std::vector<ArchiveGgufTensor> plan;
    for (const TensorInfo& t : (*ckpt)->tensors()) {
        ArchiveGgufTensor p;
        p.name = t.name;
        p.weights = elementCount(t.shape);
        const std::string gguf = ggufTensorName(t.name);
        GgmlType type = GgmlType::F32;
        p.how = "stored";
        if (t.shape.size() == 2) {
            type = gguf == "token_embd.weight" || gguf == "output.weight" ? options.embedding : options.fallback;
            if (const auto it = compressed.find(t.name); it != compressed.end()) {
                const UniformLayout l = layoutOf(*it->second.first, it->second.second);
                p.method = l.method;
                p.how = "decoded";
                p.reason = !options.exact                              ? "exact re-encoding turned off"
                           : hasAdapter(archive->manifest(), t.name) ? kAdapterMerged
                                          : noExactType(l.method, l.bits, l.groupCols, t.shape[1], l.intZero);
                if (p.reason.empty()) {
                    p.how = "exact";
                    type = l.bits == 4 ? GgmlType::Q4_1 : GgmlType::Q5_1;
                }
            }
            if (!ggmlRowBytes(type, t.shape[1])) {
                p.how = "refused";
                p.reason = "rows of " + std::to_string(t.shape[1]) + " weights do not fill " + ggmlTypeTraits(static_cast<std::uint32_t>(type)).name + " blocks";
            }
        }
        p.type = ggmlTypeTraits(static_cast<std::uint32_t>(type)).name;
        plan.push_back(std::move(p));
    }
    return plan;
}

Result<ArchiveGgufReport> exportGguf(const std::string& source, const std::string& outPath, const MethodRegistry& registry,
                                     const ArchiveGgufOptions& options)
{
    auto ckpt = openModelOrArchive(source, registry);
    if (!ckpt)
        return ckpt.error();
    std::shared_ptr<Archive> archive;
    ArchiveGgufReport report;
    if (isPllmFile(source)) {
        auto a = Archive::open(source, ContainerReader::Verify::ManifestOnly);
        if (!a)
            return a.error();
        archive = *a;
        report.archiveBpwLinear = accountBits(archive->manifest()).bpwCompressed();
    }
    std::unique_ptr<ArchiveCodes> codes = archive ? std::make_unique<ArchiveCodes>(archive) : nullptr;
    std::map<std::string, ArchiveGgufTensor> notes;
    GgufExportOptions o;
    o.overwrite = options.overwrite;
    o.onTensor = options.onTensor;
    o.matrixType = options.fallback;
    o.embeddingType = options.embedding;
    o.encode = [&](const TensorInfo& t) -> Result<std::optional<GgufEncodedTensor>> {
        if (!codes || !codes->compressed(t.name))
            return std::optional<GgufEncodedTensor>();
        ArchiveGgufTensor& note = notes[t.name];
        note.method = codes->manifestPayload(t.name).methodId;
        if (!options.exact) {
            note.reason = "exact re-encoding turned off";
            return std::optional<GgufEncodedTensor>();
        }
        const auto type = exactType(*codes, t.name, note.reason);
        if (!type)
            return std::optional<GgufEncodedTensor>();
        GgufEncodedTensor e;
        e.type = *type;
        e.produce = [&codes, &note, name = t.name] { return exactBlocks(*codes, name, note.maxDeviation); };
        return std::optional<GgufEncodedTensor>(std::move(e));
    };
    // general.file_type: Q4_1 or Q5_1 when exact matrices of that type hold most compressed weights.
    if (archive && options.exact) {
        std::map<int, std::int64_t> byBits;
        std::int64_t compressedWeights = 0;
        for (const ArchiveGroup& g : archive->manifest().groups)
            for (std::size_t k = 0; k < g.payload.matrices.size(); ++k) {
                const MatrixRef& ref = g.payload.matrices[k].ref;
                const UniformLayout l = layoutOf(g.payload, k);
                compressedWeights += ref.weights();
                if (noExactType(l.method, l.bits, l.groupCols, ref.cols, l.intZero).empty())
                    byBits[l.bits] += ref.weights();
            }
        for (const auto& [bits, weights] : byBits)
            if (2 * weights > compressedWeights)
                o.fileType = bits == 4 ? 3u : 9u; // LLAMA_FTYPE_MOSTLY_Q4_1, LLAMA_FTYPE_MOSTLY_Q5_1
    }
    std::vector<GgufTensorReport> written;
    o.report = &written;
    POCKET_TRY(writeGgufModel(**ckpt, outPath, o));
    for (const GgufTensorReport& w : written) {
        ArchiveGgufTensor t = notes.count(w.name) ? notes[w.name] : ArchiveGgufTensor{};
        t.name = w.name;
        t.type = w.type;
        t.weights = w.elements;
        t.bytes = w.bytes;
        t.how = w.encoded ? "exact" : !t.method.empty() ? "decoded" : "stored";
        report.exact += w.encoded ? 1 : 0;
        report.decoded += t.how == "decoded" ? 1 : 0;
        report.tensors.push_back(std::move(t));
    }
    // Bits counted by reading the file back, as any GGUF's are.
    auto back = openCheckpoint(outPath);
    if (!back)
        return back.error();
    const StoredTypes stored = storedTypes(**back);
    report.bpwLinear = stored.linearBitsPerWeight;
    report.bpwAllIn = stored.allBitsPerWeight;
    std::error_code ec;
    report.fileBytes = std::filesystem::file_size(outPath, ec);
    return report;
}

} // namespace pocket

#include "pocket/archive/archive_gptq.h"

#include "pocket/archive/archive_checkpoint.h"
#include "pocket/archive/model_archive.h"
#include "pocket/io/atomic_file.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/dtype.h"
#include "pocket/io/model_config.h"
#include "pocket/io/safetensors.h"
#include "pocket/methods/uniform_quant.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <unistd.h>

namespace pocket {

namespace {

namespace fs = std::filesystem;

// One compressed matrix's codes, scales and integer zero points, as the archive stores them.
struct IntZeroMatrix {
    MatrixRef ref;
    std::vector<std::int32_t> codes;   // [rows, cols]
    std::vector<std::uint16_t> scales; // [rows, groups] fp16
    std::vector<std::int32_t> zeros;   // [rows, groups]
};

Result<IntZeroMatrix> readMatrix(const GroupPayload& p, std::size_t k, int bits, std::int64_t group)
{
    IntZeroMatrix m;
    m.ref = p.matrices[k].ref;
    const std::string& name = m.ref.name;
    const PayloadSection* c = p.section("codes/" + name);
    const PayloadSection* s = p.section("scales/" + name);
    const PayloadSection* z = p.section("mins/" + name);
    const std::size_t groups = static_cast<std::size_t>(m.ref.rows * (m.ref.cols / group));
    m.codes.resize(static_cast<std::size_t>(m.ref.weights()));
    if (!c || !s || !z || s->bytes.size() != groups * 2 || z->bytes.size() != groups * 2 ||
        !unpackBits(c->bytes.data(), c->bytes.size(), m.ref.weights(), bits, m.codes.data()))
        return Error{name + ": the " + p.methodId + " payload's sections are missing or of the wrong size"};
    m.scales.resize(groups);
    std::memcpy(m.scales.data(), s->bytes.data(), groups * 2);
    m.zeros.resize(groups);
    for (std::size_t g = 0; g < groups; ++g) {
        std::uint16_t h;
        std::memcpy(&h, z->bytes.data() + 2 * g, 2);
        m.zeros[g] = static_cast<std::int32_t>(halfToFloat(h));
        if (m.zeros[g] < 1 || m.zeros[g] > (1 << bits) - 1)
            return Error{name + ": a zero point of " + std::to_string(m.zeros[g]) + " cannot be stored in the GPTQ v1 format (it stores zero - 1, unsigned)",
                         ErrorKind::Unsupported};
    }
    return m;
}

// AutoGPTQ's pack(): qweight [cols*bits/32, rows], qzeros [groups, rows*bits/32], scales
// [groups, rows], g_idx [cols], in that order.
std::vector<std::vector<std::uint8_t>> packMatrix(const IntZeroMatrix& m, int bits, std::int64_t group)
{
    const std::int64_t rows = m.ref.rows, cols = m.ref.cols, per = 32 / bits, groups = cols / group;
    const std::uint32_t mask = (1u << bits) - 1;
    std::vector<std::int32_t> qweight(static_cast<std::size_t>(cols / per * rows), 0);
    for (std::int64_t j = 0; j < cols / per; ++j)
        for (std::int64_t r = 0; r < rows; ++r) {
            std::uint32_t v = 0;
            for (std::int64_t k = 0; k < per; ++k)
                v |= (static_cast<std::uint32_t>(m.codes[static_cast<std::size_t>(r * cols + j * per + k)]) & mask) << (bits * k);
            qweight[static_cast<std::size_t>(j * rows + r)] = static_cast<std::int32_t>(v);
        }
    std::vector<std::int32_t> qzeros(static_cast<std::size_t>(groups * (rows / per)), 0);
    std::vector<std::uint16_t> scales(static_cast<std::size_t>(groups * rows));
    for (std::int64_t g = 0; g < groups; ++g) {
        for (std::int64_t r = 0; r < rows; ++r)
            scales[static_cast<std::size_t>(g * rows + r)] = m.scales[static_cast<std::size_t>(r * groups + g)];
        for (std::int64_t j = 0; j < rows / per; ++j) {
            std::uint32_t v = 0;
            for (std::int64_t k = 0; k < per; ++k) // v1 stores zero - 1 (AutoGPTQ's `zeros -= 1`)
                v |= (static_cast<std::uint32_t>(m.zeros[static_cast<std::size_t>((j * per + k) * groups + g)] - 1) & mask) << (bits * k);
            qzeros[static_cast<std::size_t>(g * (rows / per) + j)] = static_cast<std::int32_t>(v);
        }
    }
    std::vector<std::int32_t> gIdx(static_cast<std::size_t>(cols));
    for (std::int64_t i = 0; i < cols; ++i)
        gIdx[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i / group);
    const auto bytesOf = [](const auto& v) {
        std::vector<std::uint8_t> b(v.size() * sizeof(v[0]));
        std::memcpy(b.data(), v.data(), b.size());
        return b;
    };
    return {bytesOf(qweight), bytesOf(qzeros), bytesOf(scales), bytesOf(gIdx)};
}

// One tensor of a matrix's quantised form.
struct Part {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;
};

// Adds the parts of one matrix, whose bytes `make` produces together, when the first is written:
// one matrix in memory at a time.
void addParts(SafetensorsWriter& w, const std::vector<Part>& parts, std::function<Result<std::vector<std::vector<std::uint8_t>>>()> make)
{
    auto made = std::make_shared<std::vector<std::vector<std::uint8_t>>>();
    for (std::size_t i = 0; i < parts.size(); ++i)
        w.add(parts[i].name, parts[i].dtype, parts[i].shape, [made, make, i, last = parts.size() - 1](const SafetensorsWriter::Sink& sink) -> Status {
            if (made->empty()) {
                auto bytes = make();
                if (!bytes)
                    return bytes.error();
                *made = std::move(*bytes);
            }
            const std::vector<std::uint8_t> bytes = std::move((*made)[i]);
            if (i == last)
                made->clear();
            return sink(bytes.data(), bytes.size());
        });
}

std::string baseName(const std::string& weightName) { return weightName.substr(0, weightName.size() - std::string(".weight").size()); }

// Why the archive cannot be written as GPTQ ("" when it can); fills bits and group.
std::string checkGptqLayout(const ArchiveManifest& m, int& bits, std::int64_t& group)
{
    std::size_t matrices = 0;
    bits = 0;
    group = 0;
    for (const ArchiveGroup& g : m.groups) {
        const auto meta = nlohmann::json::parse(g.payload.metaJson, nullptr, false);
        if (g.payload.methodId != "rtn" && g.payload.methodId != "gptq")
            return "method " + g.payload.methodId + " has no GPTQ form (rtn and gptq only)";
        if (!uniform::intZeroOf(meta))
            return g.payload.methodId + " with fp16 minima: the GPTQ format needs integer zero points (compress with --set zero=int)";
        const int b = meta.value("bits", 0);
        if (b != 2 && b != 4 && b != 8)
            return std::to_string(b) + "-bit codes: this export packs 2, 4 and 8 bits";
        for (std::size_t k = 0; k < g.payload.matrices.size(); ++k) {
            const MatrixRef& ref = g.payload.matrices[k].ref;
            const std::int64_t gc = meta["groups"].size() > k ? meta["groups"][k].get<std::int64_t>() : 0;
            if ((bits && b != bits) || (group && gc != group))
                return "matrices of different bits or group widths: the GPTQ config has one of each";
            bits = b;
            group = gc;
            if (gc <= 0 || ref.cols % gc != 0)
                return ref.name + ": groups of " + std::to_string(gc) + " do not divide its rows of " + std::to_string(ref.cols);
            if (ref.rows % (32 / b) != 0)
                return ref.name + ": " + std::to_string(ref.rows) + " output rows do not pack into int32 zero points";
            ++matrices;
        }
    }
    if (matrices != static_cast<std::size_t>(7 * m.config.numLayers))
        return "the GPTQ format expects every linear matrix of every block quantised; the archive compressed " + std::to_string(matrices) +
               " of " + std::to_string(7 * m.config.numLayers);
    return {};
}

} // namespace

namespace {

// Writes a quantised Hugging Face folder: `addQuantised` puts each compressed matrix's tensors into
// the writer (one group payload at a time) and names the matrices it covered; every other tensor
// is written fp16; config.json gets `quant` as its quantization_config (and quantize_config.json
// when `quantizeConfigFile`); the tokenizer is copied. Temporary folder, then moved into place.
Status writeQuantisedFolder(const std::string& archivePath, const MethodRegistry& registry, const std::string& outDir, bool overwrite,
                            const std::function<bool(int, int)>& onTensor, const nlohmann::ordered_json& quant, bool quantizeConfigFile,
                            const std::function<Status(SafetensorsWriter&, std::map<std::string, bool>&, const std::function<bool()>&)>& addQuantised,
                            std::uint64_t& bytes)
{
    auto decoded = openArchiveCheckpoint(archivePath, registry); // the uncompressed tensors and the tokenizer
    if (!decoded)
        return decoded.error();
    std::error_code ec;
    auto folder = TempFolder::create(outDir, overwrite);
    if (!folder)
        return folder.error();
    const fs::path temp = (*folder)->path();
    SafetensorsWriter w;
    w.setMetadata("format", "pt");
    std::map<std::string, bool> covered;
    const int total = static_cast<int>((*decoded)->tensors().size());
    int done = 0;
    const auto progress = [&] { return !onTensor || onTensor(++done, total); };
    POCKET_TRY(addQuantised(w, covered, progress));
    for (const TensorInfo& t : (*decoded)->tensors()) {
        if (covered.count(t.name))
            continue;
        const Checkpoint& source = **decoded;
        w.add(t.name, DType::F16, t.shape, [&source, &progress, name = t.name](const SafetensorsWriter::Sink& sink) -> Status {
            auto data = source.load(name);
            if (!data)
                return data.error();
            const std::vector<float> values = data->toFloat();
            std::vector<std::uint8_t> bytes(values.size() * 2);
            convertFromFloat(values.data(), values.size(), DType::F16, bytes.data());
            POCKET_TRY(sink(bytes.data(), bytes.size()));
            return progress() ? Status{} : Status{Error::cancelled()};
        });
    }
    POCKET_TRY(w.write((temp / "model.safetensors").string()));
    bytes = fs::file_size(temp / "model.safetensors", ec);
    ModelConfig stored = (*decoded)->config();
    stored.torchDtype = "float16";
    auto config = nlohmann::ordered_json::parse(hfConfigJson(stored));
    config["quantization_config"] = quant;
    POCKET_TRY(writeFileAtomically((temp / "config.json").string(), config.dump(2) + "\n"));
    if (quantizeConfigFile)
        POCKET_TRY(writeFileAtomically((temp / "quantize_config.json").string(), quant.dump(2) + "\n"));
    if (const std::string tok = (*decoded)->tokenizerPath(); !tok.empty()) {
        const fs::path ext = fs::path(tok).extension();
        fs::copy_file(tok, temp / (ext == ".model" ? "tokenizer.model" : ext == ".json" ? "tokenizer.json" : "tokenizer.bin"),
                      fs::copy_options::overwrite_existing, ec);
        if (ec)
            return fileError(tok, "cannot copy the tokenizer: " + ec.message(), ErrorKind::Io);
    }
    return (*folder)->commit();
}

} // namespace

Result<GptqExportReport> exportGptq(const std::string& archivePath, const std::string& outDir, const MethodRegistry& registry,
                                    const GptqExportOptions& options)
{
    auto archive = Archive::open(archivePath, ContainerReader::Verify::ManifestOnly); // openArchiveCheckpoint verifies every section
    if (!archive)
        return archive.error();
    const ArchiveManifest& m = (*archive)->manifest();
    GptqExportReport report;
    if (!m.adapters.empty())
        return Error{archivePath + ": has LoRA adapters, which the GPTQ format cannot hold (its codes alone would drop them): export it as GGUF "
                                   "(adapters merged into F16 matrices) or decompress it",
                     ErrorKind::Unsupported};
    if (const std::string why = checkGptqLayout(m, report.bits, report.groupSize); !why.empty())
        return Error{archivePath + ": cannot be written in the GPTQ format: " + why, ErrorKind::Unsupported};
    std::uint64_t quantBits = 0, quantWeights = 0;
    auto payloads = std::make_shared<PayloadCache>(*archive);
    const auto add = [&](SafetensorsWriter& w, std::map<std::string, bool>& covered, const std::function<bool()>& progress) -> Status {
        const int bits = report.bits;
        const std::int64_t group = report.groupSize, per = 32 / bits;
        for (std::size_t gi = 0; gi < m.groups.size(); ++gi)
            for (std::size_t k = 0; k < m.groups[gi].payload.matrices.size(); ++k) {
                const MatrixRef& ref = m.groups[gi].payload.matrices[k].ref;
                const std::string base = baseName(ref.name);
                const std::int64_t groups = ref.cols / group;
                addParts(w,
                         {{base + ".qweight", DType::I32, {ref.cols / per, ref.rows}},
                          {base + ".qzeros", DType::I32, {groups, ref.rows / per}},
                          {base + ".scales", DType::F16, {groups, ref.rows}},
                          {base + ".g_idx", DType::I32, {ref.cols}}},
                         [payloads, gi, k, bits, group, progress]() -> Result<std::vector<std::vector<std::uint8_t>>> {
                             auto p = payloads->get(gi);
                             if (!p)
                                 return p.error();
                             auto matrix = readMatrix(**p, k, bits, group);
                             if (!matrix)
                                 return matrix.error();
                             if (!progress())
                                 return Error::cancelled();
                             return packMatrix(*matrix, bits, group);
                         });
                covered[ref.name] = true;
                ++report.quantized;
                const std::uint64_t n = static_cast<std::uint64_t>(ref.weights()), g = n / static_cast<std::uint64_t>(group);
                quantWeights += n;
                quantBits += n * static_cast<std::uint64_t>(bits) + g * (16 + static_cast<std::uint64_t>(bits)) + 32 * static_cast<std::uint64_t>(ref.cols);
            }
        return {};
    };
    const nlohmann::ordered_json quant{{"bits", report.bits},          {"group_size", report.groupSize}, {"desc_act", false},
                                       {"sym", false},                 {"true_sequential", true},        {"damp_percent", 0.01},
                                       {"static_groups", false},       {"checkpoint_format", "gptq"},    {"quant_method", "gptq"},
                                       {"pack_dtype", "int32"},        {"model_name_or_path", nullptr},  {"model_file_base_name", "model"}};
    POCKET_TRY(writeQuantisedFolder(archivePath, registry, outDir, options.overwrite, options.onTensor, quant, true, add, report.bytes));
    report.bpwLinear = quantWeights ? static_cast<double>(quantBits) / static_cast<double>(quantWeights) : 0;
    return report;
}

// Why the archive cannot be written as AQLM ("" when it can); fills nbits, d and whether codebooks
// are shared.
std::string checkAqlmLayout(const ArchiveManifest& m, AqlmExportReport& report)
{
    std::size_t matrices = 0;
    std::string why;
    for (const ArchiveGroup& g : m.groups) {
        const auto meta = nlohmann::json::parse(g.payload.metaJson, nullptr, false);
        if (!meta.is_object() || (g.payload.methodId != "vq" && g.payload.methodId != "aqlm")) {
            why = "method " + g.payload.methodId + " has no AQLM form (vq and aqlm only)";
            break;
        }
        const bool aqlm = g.payload.methodId == "aqlm";
        const int d = meta.value(aqlm ? "g" : "d", 0), books = aqlm ? meta.value("M", 0) : 1;
        const std::int64_t k = aqlm ? std::int64_t{1} << std::clamp(meta.value("B", 0), 0, 30) : meta.value("K", std::int64_t{0});
        const int nbits = k > 1 ? indexBits(k) : 0;
        if (d < 1 || books < 1 || nbits < 1 || nbits > 16) {
            why = "a codebook of " + std::to_string(k) + " entries: AQLM holds up to 2^16";
            break;
        }
        if ((report.nbits && nbits != report.nbits) || (report.inGroupSize && d != report.inGroupSize) ||
            (report.numCodebooks && books != report.numCodebooks)) {
            why = "groups of different group sizes, codebook counts or codebook sizes: the AQLM config has one of each";
            break;
        }
        report.nbits = nbits;
        report.inGroupSize = d;
        report.numCodebooks = books;
        report.sharedCodebooksCopied = report.sharedCodebooksCopied || g.payload.matrices.size() > 1;
        for (const MatrixResult& r : g.payload.matrices) {
            if (r.ref.cols % d != 0)
                why = r.ref.name + ": rows of " + std::to_string(r.ref.cols) + " do not divide into sub-vectors of " + std::to_string(d);
            ++matrices;
        }
        if (!why.empty())
            break;
    }
    if (why.empty() && matrices != static_cast<std::size_t>(7 * m.config.numLayers))
        why = "the AQLM format expects every linear matrix of every block quantised; the archive compressed " + std::to_string(matrices) + " of " +
              std::to_string(7 * m.config.numLayers);
    return why;
}

Result<AqlmExportReport> exportAqlm(const std::string& archivePath, const std::string& outDir, const MethodRegistry& registry,
                                    const GptqExportOptions& options)
{
    auto archive = Archive::open(archivePath, ContainerReader::Verify::ManifestOnly); // openArchiveCheckpoint verifies every section
    if (!archive)
        return archive.error();
    const ArchiveManifest& m = (*archive)->manifest();
    AqlmExportReport report;
    if (!m.adapters.empty())
        return Error{archivePath + ": has LoRA adapters, which the AQLM format cannot hold (its codes alone would drop them): export it as GGUF "
                                   "(adapters merged into F16 matrices) or decompress it",
                     ErrorKind::Unsupported};
    const std::string why = checkAqlmLayout(m, report);
    if (!why.empty())
        return Error{archivePath + ": cannot be written in the AQLM format: " + why, ErrorKind::Unsupported};
    const int d = report.inGroupSize, nbits = report.nbits, books = report.numCodebooks;
    const std::int64_t entries = std::int64_t{1} << nbits;
    std::uint64_t quantBits = 0, quantWeights = 0;
    auto payloads = std::make_shared<PayloadCache>(*archive);
    const std::string source = archivePath;
    // One matrix's codes [rows, cols/d, M] (signed), padded codebooks [M, 2^nbits, 1, d], scales [rows, 1, 1, 1].
    const auto makeParts = [payloads, source, d, nbits, entries, books](std::size_t gi, const MatrixRef& ref) -> Result<std::vector<std::vector<std::uint8_t>>> {
        auto pr = payloads->get(gi);
        if (!pr)
            return pr.error();
        const GroupPayload& p = **pr;
        const bool aqlm = p.methodId == "aqlm";
        const auto meta = nlohmann::json::parse(p.metaJson, nullptr, false);
        const std::int64_t k = aqlm ? entries : meta.value("K", std::int64_t{0});
        const PayloadSection* codebook = p.section(aqlm ? "codebooks" : "codebook");
        if (!codebook || codebook->bytes.size() != static_cast<std::size_t>(k * d * books) * 2)
            return Error{source + ": group " + p.groupId + ": the codebook section is missing or of the wrong size"};
        std::vector<std::uint8_t> padded(static_cast<std::size_t>(entries * d * books) * 2, 0); // fp16 zeros
        std::memcpy(padded.data(), codebook->bytes.data(), codebook->bytes.size());
        const std::int64_t rows = ref.rows, blocks = ref.cols / d, count = rows * blocks * books;
        const PayloadSection* indices = p.section((aqlm ? "codes/" : "indices/") + ref.name);
        std::vector<std::int32_t> idx(static_cast<std::size_t>(count));
        if (!indices || !unpackBits(indices->bytes.data(), indices->bytes.size(), count, nbits, idx.data()))
            return Error{source + ": " + ref.name + ": the index section is missing or too short"};
        // codes[o, g, m] = code m of sub-vector (g * rows + o), stored signed.
        const bool wide = nbits > 8;
        std::vector<std::uint8_t> codes(static_cast<std::size_t>(count) * (wide ? 2 : 1));
        for (std::int64_t o = 0; o < rows; ++o)
            for (std::int64_t g = 0; g < blocks; ++g)
                for (int mb = 0; mb < books; ++mb) {
                    std::int32_t v = idx[static_cast<std::size_t>((g * rows + o) * books + mb)];
                    if (v >= (1 << (nbits - 1)) && (wide ? nbits == 16 : nbits == 8))
                        v -= 1 << nbits;
                    const std::size_t at = static_cast<std::size_t>((o * blocks + g) * books + mb);
                    if (wide) {
                        const auto s16 = static_cast<std::int16_t>(v);
                        std::memcpy(codes.data() + 2 * at, &s16, 2);
                    } else {
                        codes[at] = static_cast<std::uint8_t>(static_cast<std::int8_t>(v));
                    }
                }
        std::vector<std::uint8_t> scales(static_cast<std::size_t>(rows) * 2);
        if (aqlm || meta.value("row_scale", false)) {
            const PayloadSection* rs = p.section("row_scales/" + ref.name);
            if (!rs || rs->bytes.size() != scales.size())
                return Error{source + ": " + ref.name + ": the row scale section is missing or of the wrong size"};
            scales = rs->bytes;
        } else {
            const std::uint16_t one = floatToHalf(1.0f);
            for (std::int64_t o = 0; o < rows; ++o)
                std::memcpy(scales.data() + 2 * o, &one, 2);
        }
        return std::vector<std::vector<std::uint8_t>>{std::move(codes), std::move(padded), std::move(scales)};
    };
    const auto add = [&](SafetensorsWriter& w, std::map<std::string, bool>& covered, const std::function<bool()>& progress) -> Status {
        for (std::size_t gi = 0; gi < m.groups.size(); ++gi)
            for (const MatrixResult& r : m.groups[gi].payload.matrices) {
                const std::string base = baseName(r.ref.name);
                const std::int64_t rows = r.ref.rows, blocks = r.ref.cols / d;
                addParts(w,
                         {{base + ".codes", nbits > 8 ? DType::I16 : DType::I8, {rows, blocks, books}},
                          {base + ".codebooks", DType::F16, {books, entries, 1, d}},
                          {base + ".scales", DType::F16, {rows, 1, 1, 1}}},
                         [makeParts, gi, ref = r.ref, progress]() -> Result<std::vector<std::vector<std::uint8_t>>> {
                             if (!progress())
                                 return Error::cancelled();
                             return makeParts(gi, ref);
                         });
                covered[r.ref.name] = true;
                ++report.quantized;
                quantWeights += static_cast<std::uint64_t>(r.ref.weights());
                quantBits += static_cast<std::uint64_t>(rows * blocks * books * nbits + books * entries * d * 16 + rows * 16);
            }
        return {};
    };
    const nlohmann::ordered_json quant{{"quant_method", "aqlm"},
                                       {"nbits_per_codebook", nbits},
                                       {"num_codebooks", books},
                                       {"out_group_size", 1},
                                       {"in_group_size", d},
                                       {"linear_weights_not_to_quantize", {"model.embed_tokens.weight", "lm_head.weight"}}};
    POCKET_TRY(writeQuantisedFolder(archivePath, registry, outDir, options.overwrite, options.onTensor, quant, false, add, report.bytes));
    report.bpwLinear = quantWeights ? static_cast<double>(quantBits) / static_cast<double>(quantWeights) : 0;
    return report;
}

} // namespace pocket

// The .pllm model archive (docs/archive-format.md): a compressed model that stands alone. A
// container of kind "model" whose manifest holds the model config, the embedded tokenizer, the
// method groups with their parameters and bit accounting, and the per-tensor layout.
#pragma once

#include "pocket/archive/bit_accounting.h"
#include "pocket/archive/container.h"
#include "pocket/io/dtype.h"
#include "pocket/io/model_config.h"
#include "pocket/io/tensor_data.h"
#include "pocket/methods/method.h"
#include "pocket/model/llama_model.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace pocket {


// A tensor stored as is (embedding, norms, head, unselected matrices).
struct ArchiveTensor {
    std::string name;
    DType dtype = DType::F16;
    std::vector<std::int64_t> shape;
    std::string section; // "tensor/<name>"
};

// A compressed group: its payload without the bytes, which live in sections
// "group/<index>/<payload section name>".
// How a code-stream section is stored (docs/archive-format.md, "Coded sections").
struct SectionCoding {
    enum class Codec { None, Rans, Zstd };
    Codec codec = Codec::None;   // None: packed at fixed width; Rans: rans.h's stream; Zstd: a zstd
                                 // frame of the codes, one byte each (two, little-endian, above 8 bits)
    double entropyBits = -1;     // empirical entropy of the symbols (-1: not measured)
    std::uint64_t storedBytes = 0;
};

struct ArchiveGroup {
    GroupPayload payload; // sections[].bytes empty; names as the method gave them
    std::vector<std::string> sectionNames; // container section names, parallel to payload.sections
    std::vector<SectionCoding> coding;     // parallel to payload.sections (empty: nothing coded)
    bool anyCoded() const;
    // Whether section k is stored entropy-coded (rANS or zstd).
    bool coded(std::size_t k) const { return k < coding.size() && coding[k].codec != SectionCoding::Codec::None; }
};

// A LoRA adapter on a compressed matrix (format version 3; docs/archive-format.md section 10.2):
// y = W x + (alpha / rank) B (A x), A [rank, cols] and B [rows, rank] stored as fp16, row-major.
struct ArchiveAdapter {
    std::string tensor;     // the matrix's tensor name
    int rank = 0;
    double alpha = 0;
    std::int64_t rows = 0, cols = 0;
    std::string sectionA, sectionB;           // "adapter/<tensor>/a" and ".../b" (assigned when written)
    std::vector<std::uint8_t> bytesA, bytesB; // fp16 little-endian; filled to write, empty as read
};
// The stored form of a model's adapter (values rounded to fp16), and back.
ArchiveAdapter archiveAdapter(const LoraAdapter& adapter);

struct ArchiveManifest {
    ModelConfig config;
    std::string sourceName;         // file or folder name of the source model (no directories)
    std::string creator;            // "pocketllm-workbench 0.1.0 (rev)"
    std::string tokenizerKind;      // "sentencepiece", "llama2c" or "" (none embedded)
    std::string tokenizerFileName;  // "tokenizer.model" / "tokenizer.bin"
    std::vector<ArchiveTensor> tensors; // uncompressed tensors
    std::vector<ArchiveGroup> groups;
    std::string selectionJson;      // the layer selection used, JSON object (informational)
    std::vector<ArchiveAdapter> adapters; // LoRA adapters of compressed matrices (none: format 1 or 2)
};

// Whether `manifest` has a LoRA adapter on the matrix `tensor`.
bool hasAdapter(const ArchiveManifest& manifest, const std::string& tensor);


// Writes a model archive: the uncompressed tensors come from `tensorBytes(name, sink)` (streamed,
// each exactly its dtype size), the groups from their payloads (taken with their bytes), the
// tokenizer from `tokenizerBytes`. Written to a temporary name and renamed into place. The
// section names (ArchiveTensor::section, ArchiveGroup::sectionNames) are assigned here; the
// manifest must cover every tensor of the config exactly once (docs/archive-format.md 8.3).
struct ArchiveInput {
    ArchiveManifest manifest;                    // groups[].payload.sections hold the bytes
    std::vector<std::uint8_t> tokenizerBytes;
    std::function<Status(const ArchiveTensor& tensor, const ContainerWriter::Sink& sink)> tensorBytes;
};
Status writeArchive(const std::string& path, ArchiveInput input);

// An opened model archive. Errors name the file.
class Archive {
public:
    static Result<std::shared_ptr<Archive>> open(const std::string& path, ContainerReader::Verify verify = ContainerReader::Verify::All);
    const ArchiveManifest& manifest() const { return m_manifest; }
    const ContainerReader& container() const { return *m_container; }
    // The group's payload with its section bytes (copied), coded sections decoded.
    Result<GroupPayload> groupPayload(std::size_t groupIndex) const;
    // The same with the sections as stored (coded sections still coded; see lossless.h).
    Result<GroupPayload> storedPayload(std::size_t groupIndex) const;
    // An uncompressed tensor's bytes (a view).
    Result<TensorData> tensor(const std::string& name) const;
    // The embedded tokenizer's bytes (empty if none).
    Result<std::vector<std::uint8_t>> tokenizerBytes() const;
    // The adapters with their values (fp32 from the stored fp16), in manifest order.
    Result<std::vector<LoraAdapter>> adapters() const;

private:
    std::shared_ptr<ContainerReader> m_container;
    ArchiveManifest m_manifest;
};

// Fills `input`'s tokenizer bytes and its source of uncompressed tensors from `archive`, as stored:
// for writers that rewrite an archive (`archive` must outlive the write).
Status copyStoredParts(const Archive& archive, ArchiveInput& input);

// Fills the bytes of `manifest.adapters` from `archive` (to write them again, as a repack does).
Status loadAdapterBytes(const Archive& archive, ArchiveManifest& manifest);

// Writes `outPath`: the archive `inPath` with everything as stored (groups, coded sections,
// tensors, tokenizer) and `adapters` instead of any it had (none: the adapters are removed). Each
// adapter must be on a compressed matrix of the archive, with its shape.
Status writeArchiveWithAdapters(const std::string& inPath, const std::string& outPath, const std::vector<LoraAdapter>& adapters);

// An archive's group payloads read one at a time, the last one kept: for writers that visit a
// group's matrices one after another (the GGUF and GPTQ exports). Use from one thread.
class PayloadCache {
public:
    explicit PayloadCache(std::shared_ptr<Archive> archive) : m_archive(std::move(archive)) {}
    const Archive& archive() const { return *m_archive; }
    Result<const GroupPayload*> get(std::size_t group);

private:
    std::shared_ptr<Archive> m_archive;
    std::unique_ptr<GroupPayload> m_payload;
    std::size_t m_group = 0;
};

} // namespace pocket

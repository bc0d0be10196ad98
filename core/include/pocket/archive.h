// The .pllm archive (docs/archive-format.md): a compressed model that stands alone. A container of
// named, checksummed byte sections plus a JSON manifest (model config, embedded tokenizer, method
// groups with their parameters and bit accounting, per-tensor layout). The same container, with
// another kind string, holds one finished group in a job's work folder.
#pragma once

#include "pocket/dtype.h"
#include "pocket/method.h"
#include "pocket/model_config.h"
#include "pocket/result.h"
#include "pocket/tensor_data.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace pocket {

constexpr std::uint32_t kArchiveFormatVersion = 1;

// ---------------------------------------------------------------------------------------------
// Container layer: magic, version, sections, manifest, trailer. Knows nothing of models.

struct ContainerSection {
    std::string name;
    std::uint64_t offset = 0; // from the start of the file
    std::uint64_t size = 0;
    std::uint64_t xxh64 = 0;  // XXH64 (seed 0) of the section's bytes
};

// Writes a container under a temporary name; finish() renames it into place. A failure (disk
// full, cancel, destruction before finish) leaves nothing at `path`. Not thread-safe.
class ContainerWriter {
public:
    // `kind` is stored in the manifest ("model" for archives, "group" for work-folder files).
    ContainerWriter(std::string path, std::string kind);
    ~ContainerWriter();
    ContainerWriter(const ContainerWriter&) = delete;
    ContainerWriter& operator=(const ContainerWriter&) = delete;

    Status open();
    // Appends a section (names unique; sections start 64-byte aligned).
    Status addSection(const std::string& name, const void* bytes, std::size_t size);
    // Appends a section of `size` bytes that `produce` passes to the sink, possibly in pieces.
    using Sink = std::function<Status(const void* bytes, std::size_t count)>;
    Status addSection(const std::string& name, std::uint64_t size, const std::function<Status(const Sink&)>& produce);
    // Writes `manifestJson` (a JSON object; the container adds "kind", "format_version" and
    // "sections" to it), the trailer, syncs and renames into place.
    Status finish(const std::string& manifestJson);

private:
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

// A validated, memory-mapped container. Opening checks the magic, version, trailer, the
// manifest's checksum and JSON, every section's bounds (inside the file, no overlaps) and, with
// Verify::All, every section's checksum. Errors name the file and the problem. Thread-safe once open.
class ContainerReader {
public:
    enum class Verify { ManifestOnly, All };
    static Result<std::shared_ptr<ContainerReader>> open(const std::string& path, Verify verify = Verify::All);

    const std::string& path() const;
    const std::string& kind() const;
    std::uint32_t formatVersion() const;
    std::uint64_t fileSize() const;
    // The manifest JSON as stored (including "kind", "format_version", "sections").
    const std::string& manifestJson() const;
    std::uint64_t manifestBytes() const;
    const std::vector<ContainerSection>& sections() const;
    const ContainerSection* find(const std::string& name) const;
    // A view of a section's bytes (kept alive by the returned owner). Opened with
    // Verify::ManifestOnly, the section's checksum is checked on its first access.
    Result<TensorData> section(const std::string& name) const;
    // Re-checks one section's checksum.
    Status verify(const std::string& name) const;

private:
    struct Impl;
    std::shared_ptr<Impl> m_impl;
};

// True when the file starts with the container magic (cheap; reads 8 bytes).
bool isPllmFile(const std::string& path);

// ---------------------------------------------------------------------------------------------
// Model archive layer.

// A tensor stored as is (embedding, norms, head, unselected matrices).
struct ArchiveTensor {
    std::string name;
    DType dtype = DType::F16;
    std::vector<std::int64_t> shape;
    std::string section; // "tensor/<name>"
};

// A compressed group: its payload without the bytes, which live in sections
// "group/<index>/<payload section name>".
struct ArchiveGroup {
    GroupPayload payload; // sections[].bytes empty; names as the method gave them
    std::vector<std::string> sectionNames; // container section names, parallel to payload.sections
};

struct ArchiveManifest {
    ModelConfig config;
    std::string sourceName;         // file or folder name of the source model (no directories)
    std::string creator;            // "pocketllm-workbench 0.1.0 (rev)"
    std::string tokenizerKind;      // "sentencepiece", "llama2c" or "" (none embedded)
    std::string tokenizerFileName;  // "tokenizer.model" / "tokenizer.bin"
    std::vector<ArchiveTensor> tensors; // uncompressed tensors
    std::vector<ArchiveGroup> groups;
    std::string selectionJson;      // the layer selection used, JSON object (informational)
};

// Bit accounting over a whole archive (method doc section 5).
struct ArchiveBits {
    std::uint64_t totalWeights = 0;       // every parameter of the model
    std::uint64_t compressedWeights = 0;  // weights of compressed matrices
    BitCounts compressed;                 // all method bits (indices, codebooks, decoders, scales)
    std::uint64_t uncompressedBits = 0;   // stored tensors at their stored dtype
    std::uint64_t totalBits() const { return compressed.total() + uncompressedBits; }
    double bpwAllIn() const;              // totalBits / totalWeights
    double bpwCompressed() const;         // compressed.total() / compressedWeights
    double ratioFp16() const;             // 16 * totalWeights / totalBits
    double ratioFp32() const;             // 32 * totalWeights / totalBits (the paper's convention)
};
ArchiveBits accountBits(const ArchiveManifest& manifest);

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
    // The group's payload with its section bytes (copied).
    Result<GroupPayload> groupPayload(std::size_t groupIndex) const;
    // An uncompressed tensor's bytes (a view).
    Result<TensorData> tensor(const std::string& name) const;
    // The embedded tokenizer's bytes (empty if none).
    Result<std::vector<std::uint8_t>> tokenizerBytes() const;

private:
    std::shared_ptr<ContainerReader> m_container;
    ArchiveManifest m_manifest;
};

// Work-folder files: one finished group each, in the same container format (kind "group").
Status writeGroupFile(const std::string& path, const GroupPayload& payload);
Result<GroupPayload> readGroupFile(const std::string& path);

// JSON of a GroupPayload without bytes (used in manifests and group files), and back. The JSON is
// "" when paramsJson or metaJson is not a JSON object ("" counts as {}) or section names repeat.
std::string groupPayloadToJson(const GroupPayload& payload);
Result<GroupPayload> groupPayloadFromJson(const std::string& json, const std::string& fileForErrors);

} // namespace pocket

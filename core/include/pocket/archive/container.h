// The .pllm container (docs/archive-format.md): named, checksummed byte sections plus a JSON
// manifest and a trailer. Knows nothing of models: the model archive (model_archive.h) and the
// work folder's group files (group_file.h) are containers with another "kind".
#pragma once

#include "pocket/io/tensor_data.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace pocket {

// Versions read; a writer writes the lowest version that holds its file (1 unless a section is
// entropy-coded: docs/archive-format.md, section 13).
constexpr std::uint32_t kMinArchiveFormatVersion = 1;
constexpr std::uint32_t kArchiveFormatVersion = 3;

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
    ContainerWriter(std::string path, std::string kind, std::uint32_t formatVersion = kMinArchiveFormatVersion);
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

} // namespace pocket

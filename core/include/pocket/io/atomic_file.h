// Writing a file so that a crash, a full disk or an error never leaves a partial file in place:
// bytes go to "<path>.tmp-<pid>" and commit() renames it over `path`. Not thread-safe.
#pragma once

#include "pocket/support/result.h"

#include <cstdio>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pocket {

class AtomicFile {
public:
    explicit AtomicFile(std::string path);
    // Removes the temporary file unless commit() succeeded.
    ~AtomicFile();
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    Status open();
    // Errors name the final path and the cause (e.g. "No space left on device").
    Status write(const void* bytes, std::size_t count);
    // Flushes, syncs and renames into place.
    Status commit();

private:
    std::string m_path;
    std::string m_tempPath;
    std::FILE* m_file = nullptr;
    bool m_committed = false;
};

// Writes `text` to `path` atomically.
Status writeFileAtomically(const std::string& path, const std::string& text);

// A folder written under a temporary name beside `finalDir` and moved into place by commit()
// (moveFolderIntoPlace); removed with what is in it unless committed.
class TempFolder {
public:
    // Refuses an existing non-empty `finalDir` unless `overwrite`; errors name `finalDir`.
    static Result<std::unique_ptr<TempFolder>> create(const std::string& finalDir, bool overwrite);
    ~TempFolder();
    TempFolder(const TempFolder&) = delete;
    TempFolder& operator=(const TempFolder&) = delete;
    const std::string& path() const { return m_temp; }
    Status commit();

private:
    TempFolder() = default;
    std::string m_final;
    std::string m_temp;
    bool m_committed = false;
};

// Moves a completed folder `tempDir` to `finalDir`; an existing `finalDir` is moved aside first and
// removed only once the new one is in place (put back if the move fails). Errors name `finalDir`.
Status moveFolderIntoPlace(const std::string& tempDir, const std::string& finalDir);

// The bytes of a whole file. Errors name the file.
Result<std::vector<std::uint8_t>> readWholeFile(const std::string& path);

} // namespace pocket

// A read-only memory mapping of a whole file. Thread-safe to read once opened.
#pragma once

#include "pocket/support/result.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace pocket {

class MappedFile {
public:
    // Maps `path` read-only. Errors name the file: missing, not a regular file, unreadable.
    static Result<std::shared_ptr<MappedFile>> open(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const std::uint8_t* data() const { return m_data; }
    std::uint64_t size() const { return m_size; }
    const std::string& path() const { return m_path; }

    // Tells the OS the pages of [offset, offset+length) are no longer needed (they are re-read
    // from the file on the next access). Safe to call while others read other ranges.
    void release(std::uint64_t offset, std::uint64_t length) const;

    // Asks the OS to read [offset, offset+length) ahead (one call instead of a fault per page).
    void prefetch(std::uint64_t offset, std::uint64_t length) const;

    // A view of [offset, offset+length) that keeps this mapping alive and, when the last copy is
    // dropped, releases the pages (see release()).
    std::shared_ptr<const void> lease(std::uint64_t offset, std::uint64_t length) const;

private:
    MappedFile() = default;
    std::string m_path;
    const std::uint8_t* m_data = nullptr;
    std::uint64_t m_size = 0;
    std::weak_ptr<const MappedFile> m_self;
};

} // namespace pocket

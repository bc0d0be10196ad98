#include "pocket/io/mapped_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pocket {

Result<std::shared_ptr<MappedFile>> MappedFile::open(const std::string& path)
{
    // O_NONBLOCK: opening a named pipe must not wait for a writer; we refuse non-regular files below.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return fileError(path, errno == ENOENT ? "no such file" : std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return fileError(path, "not a regular file");
    }
    std::shared_ptr<MappedFile> file(new MappedFile());
    file->m_path = path;
    file->m_size = static_cast<std::uint64_t>(st.st_size);
    if (file->m_size > 0) {
        void* p = ::mmap(nullptr, file->m_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            const int err = errno;
            ::close(fd);
            return fileError(path, std::string("cannot map: ") + std::strerror(err));
        }
        file->m_data = static_cast<const std::uint8_t*>(p);
    }
    ::close(fd); // the mapping keeps the file open
    file->m_self = file;
    return file;
}

MappedFile::~MappedFile()
{
    if (m_data)
        ::munmap(const_cast<std::uint8_t*>(m_data), m_size);
}

void MappedFile::release(std::uint64_t offset, std::uint64_t length) const
{
    if (!m_data || length == 0)
        return;
    static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    // Only whole pages inside the range: neighbouring tensors may share the edge pages.
    const std::uint64_t begin = (offset + page - 1) / page * page;
    const std::uint64_t end = (offset + length) / page * page;
    if (end > begin)
        ::madvise(const_cast<std::uint8_t*>(m_data) + begin, end - begin, MADV_DONTNEED);
}

void MappedFile::prefetch(std::uint64_t offset, std::uint64_t length) const
{
    if (!m_data || length == 0)
        return;
    static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    const std::uint64_t begin = offset / page * page;
    ::madvise(const_cast<std::uint8_t*>(m_data) + begin, offset + length - begin, MADV_WILLNEED);
}

std::shared_ptr<const void> MappedFile::lease(std::uint64_t offset, std::uint64_t length) const
{
    auto self = m_self.lock();
    return std::shared_ptr<const void>(m_data + offset, [self, offset, length](const void*) {
        if (self)
            self->release(offset, length);
    });
}

} // namespace pocket

#include "pocket/io/atomic_file.h"

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <cstring>
#include <unistd.h>

namespace pocket {

AtomicFile::AtomicFile(std::string path)
    : m_path(std::move(path)), m_tempPath(m_path + ".tmp-" + std::to_string(::getpid()))
{
}

AtomicFile::~AtomicFile()
{
    if (m_file)
        std::fclose(m_file);
    if (!m_committed)
        std::remove(m_tempPath.c_str());
}

Status AtomicFile::open()
{
    m_file = std::fopen(m_tempPath.c_str(), "wb");
    if (!m_file)
        return fileError(m_path, std::string("cannot create: ") + std::strerror(errno), ErrorKind::Io);
    return {};
}

Status AtomicFile::write(const void* bytes, std::size_t count)
{
    if (count == 0)
        return {};
    if (std::fwrite(bytes, 1, count, m_file) != count)
        return fileError(m_path, std::string("write failed: ") + std::strerror(errno), ErrorKind::Io);
    return {};
}

Status AtomicFile::commit()
{
    if (std::fflush(m_file) != 0 || ::fsync(::fileno(m_file)) != 0)
        return fileError(m_path, std::string("write failed: ") + std::strerror(errno), ErrorKind::Io);
    const int rc = std::fclose(m_file);
    m_file = nullptr;
    if (rc != 0)
        return fileError(m_path, std::string("write failed: ") + std::strerror(errno), ErrorKind::Io);
    if (std::rename(m_tempPath.c_str(), m_path.c_str()) != 0)
        return fileError(m_path, std::string("cannot rename into place: ") + std::strerror(errno), ErrorKind::Io);
    m_committed = true;
    return {};
}

Status writeFileAtomically(const std::string& path, const std::string& text)
{
    AtomicFile file(path);
    if (auto s = file.open(); !s) return s;
    if (auto s = file.write(text.data(), text.size()); !s) return s;
    return file.commit();
}

Result<std::vector<std::uint8_t>> readWholeFile(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return fileError(path, "cannot open");
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad())
        return fileError(path, "read error", ErrorKind::Io);
    return bytes;
}

Result<std::unique_ptr<TempFolder>> TempFolder::create(const std::string& finalDir, bool overwrite)
{
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::path target = fs::path(finalDir).lexically_normal();
    if (!target.has_filename()) // "out/" names the folder "out"
        target = target.parent_path();
    if (target.empty())
        return Error::usage("no output folder given", "output");
    if (fs::exists(target, ec) && !overwrite && !(fs::is_directory(target, ec) && fs::is_empty(target, ec)))
        return Error{finalDir + ": already exists; choose to overwrite it to replace it", ErrorKind::Input, "overwrite"};
    std::unique_ptr<TempFolder> f(new TempFolder);
    f->m_final = target.string();
    f->m_temp = target.string() + ".partial-" + std::to_string(::getpid());
    fs::remove_all(f->m_temp, ec);
    if (!fs::create_directories(f->m_temp, ec) && ec)
        return fileError(finalDir, "cannot create the output folder: " + ec.message(), ErrorKind::Io);
    return f;
}

TempFolder::~TempFolder()
{
    std::error_code ec;
    if (!m_committed)
        std::filesystem::remove_all(m_temp, ec);
}

Status TempFolder::commit()
{
    POCKET_TRY(moveFolderIntoPlace(m_temp, m_final));
    m_committed = true;
    return {};
}

Status moveFolderIntoPlace(const std::string& tempDir, const std::string& finalDir)
{
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path oldDir = finalDir + ".old-" + std::to_string(::getpid());
    const bool replacing = fs::exists(finalDir, ec);
    if (replacing) {
        fs::rename(finalDir, oldDir, ec);
        if (ec)
            return fileError(finalDir, "cannot move the existing folder aside: " + ec.message(), ErrorKind::Io);
    }
    fs::rename(tempDir, finalDir, ec);
    if (ec) {
        const std::string cause = ec.message();
        if (replacing)
            fs::rename(oldDir, finalDir, ec);
        return fileError(finalDir, "cannot move the new folder into place: " + cause, ErrorKind::Io);
    }
    if (replacing)
        fs::remove_all(oldDir, ec);
    return {};
}

} // namespace pocket

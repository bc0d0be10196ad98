#include "work_folder.h"

#include "pocket/archive/group_file.h"
#include "pocket/io/atomic_file.h"
#include "pocket/jobs/compress_job.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace pocket {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

// Names the first top-level key on which two identities differ.
std::string firstDifference(const json& a, const json& b)
{
    for (auto it = a.begin(); it != a.end(); ++it)
        if (!b.contains(it.key()) || b.at(it.key()) != it.value())
            return it.key();
    return "format";
}

} // namespace

std::string defaultWorkFolder(const std::string& archivePath) { return archivePath + ".work"; }


Result<std::unique_ptr<WorkFolder>> WorkFolder::open(const std::string& dir, const json& identity, bool resume)
{
    std::error_code ec;
    const std::string jobFile = dir + "/job.json";
    if (fs::exists(dir, ec)) {
        if (!resume)
            return Error{dir + ": a work folder from an earlier run exists; resume it, or delete it", ErrorKind::Usage, "resume"};
        auto text = readWholeFile(jobFile);
        json previous = text ? json::parse(text->begin(), text->end(), nullptr, false) : json();
        if (!text || previous.is_discarded())
            return fileError(jobFile, "unreadable; delete the work folder " + dir + " to start afresh");
        if (previous != identity)
            return fileError(dir, "belongs to a different job (" + firstDifference(identity, previous) +
                                      " differs); delete it or choose another output");
        return std::unique_ptr<WorkFolder>(new WorkFolder(dir, false));
    }
    if (resume)
        spdlog::info("{}: nothing to resume, starting afresh", dir);
    std::unique_ptr<WorkFolder> folder(new WorkFolder(dir, true));
    fs::create_directories(dir, ec);
    if (ec)
        return fileError(dir, "cannot create the work folder: " + ec.message(), ErrorKind::Io);
    POCKET_TRY(writeFileAtomically(jobFile, identity.dump(2) + "\n"));
    return folder;
}

WorkFolder::~WorkFolder()
{
    std::error_code ec;
    if (!m_created || m_dir.empty() || !fs::is_directory(m_dir, ec))
        return;
    for (const auto& item : fs::directory_iterator(m_dir, ec))
        if (item.path().filename().string().rfind("group-", 0) == 0)
            return;
    fs::remove_all(m_dir, ec);
}

std::string WorkFolder::groupFile(std::size_t index) const
{
    char name[32];
    std::snprintf(name, sizeof name, "group-%05zu.pllm", index);
    return m_dir + "/" + name;
}

std::optional<GroupPayload> WorkFolder::finishedGroup(std::size_t index, const std::string& groupId) const
{
    std::error_code ec;
    const std::string file = groupFile(index);
    if (!fs::exists(file, ec))
        return std::nullopt;
    auto saved = readGroupFile(file);
    if (saved && saved->groupId == groupId)
        return std::move(*saved);
    spdlog::warn("{}: {}; compressing the group again", file, saved ? "holds another group" : saved.message());
    fs::remove(file, ec);
    return std::nullopt;
}

Status WorkFolder::saveGroup(std::size_t index, const GroupPayload& payload) const { return writeGroupFile(groupFile(index), payload); }

std::string WorkFolder::hessianFile(int layer, MatrixType type) const
{
    return m_dir + "/hessians/layer" + std::to_string(layer) + "-" + matrixTypeName(type) + ".f32";
}

Status WorkFolder::saveHessian(int layer, MatrixType type, const std::vector<float>& values) const
{
    std::error_code ec;
    fs::create_directories(m_dir + "/hessians", ec);
    const std::string bytes(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    return writeFileAtomically(hessianFile(layer, type), bytes);
}

Result<std::vector<float>> WorkFolder::loadHessian(const MatrixRef& ref) const
{
    const std::string file = hessianFile(ref.layer, ref.type);
    auto bytes = readWholeFile(file);
    if (!bytes)
        return bytes.error();
    if (bytes->size() != static_cast<std::size_t>(ref.cols * ref.cols) * sizeof(float))
        return fileError(file, "wrong size for the Hessian of " + ref.name);
    std::vector<float> h(static_cast<std::size_t>(ref.cols * ref.cols));
    std::memcpy(h.data(), bytes->data(), bytes->size());
    return h;
}

void WorkFolder::removeHessians(int layer) const
{
    std::error_code ec;
    for (MatrixType t : kMatrixTypes)
        fs::remove(hessianFile(layer, t), ec);
}

void WorkFolder::remove()
{
    std::error_code ec;
    fs::remove_all(m_dir, ec);
    m_created = false;
}

} // namespace pocket

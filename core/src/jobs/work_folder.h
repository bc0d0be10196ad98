// Private to core/src/jobs: the work folder of a compression run (docs/user-guide.md, "Resume").
// It holds job.json (the job's identity: a folder may only be resumed by the same job), one
// container file per finished group, and, for calibrated groups that span blocks, the Hessians
// measured up front. Use from the job's thread.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/methods/method.h"
#include "pocket/support/result.h"

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pocket {

class WorkFolder {
public:
    // Continues the folder `dir` when `resume` is set and it belongs to the job `identity`, or
    // creates it (an existing folder without `resume` is refused: setting "resume").
    static Result<std::unique_ptr<WorkFolder>> open(const std::string& dir, const nlohmann::ordered_json& identity, bool resume);
    // A folder this object created is removed again when no group file was written into it, so a
    // run that fails before its first group never demands a resume.
    ~WorkFolder();
    WorkFolder(const WorkFolder&) = delete;
    WorkFolder& operator=(const WorkFolder&) = delete;

    const std::string& path() const { return m_dir; }
    // "<dir>/group-00012.pllm"
    std::string groupFile(std::size_t index) const;
    // The finished group `index` when its file holds the group `groupId`; nothing when there is no
    // file. A file that holds another group or cannot be read is removed (with a warning), so the
    // group is compressed again.
    std::optional<GroupPayload> finishedGroup(std::size_t index, const std::string& groupId) const;
    Status saveGroup(std::size_t index, const GroupPayload& payload) const;

    // The Hessian of matrix type `type` in block `layer`, kept on disk between the calibration
    // pass and the group that needs it.
    Status saveHessian(int layer, MatrixType type, const std::vector<float>& values) const;
    Result<std::vector<float>> loadHessian(const MatrixRef& ref) const;
    // Removes the Hessians of block `layer` (a distributed run, once the block is done).
    void removeHessians(int layer) const;

    // Deletes the folder and everything in it (after the archive is written).
    void remove();

private:
    WorkFolder(std::string dir, bool created) : m_dir(std::move(dir)), m_created(created) {}
    std::string hessianFile(int layer, MatrixType type) const;

    std::string m_dir;
    bool m_created = false;
};


} // namespace pocket

// Private to core/src/jobs: the calibration Hessians of a compression run, in one of two modes
// chosen once from the plan:
//  - block by block (every group within one block): the calibration windows run through the model
//    one block at a time, and each finished group's decoded weights replace the originals, so that
//    later blocks see the compressed earlier ones (GPTQ's sequential mode);
//  - up front (groups spanning blocks, i.e. sharing by type or model): every needed block's
//    Hessians are measured on the uncompressed model and kept in the work folder, so memory holds
//    only the Hessians of the group in progress.
// Use from the job's thread.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/methods/method.h"
#include "pocket/model/llama_model.h"
#include "pocket/support/result.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pocket {

class WorkFolder;

class CalibrationFeed {
public:
    // Loads the model and starts carrying the calibration windows of `params.calibration` through
    // it; nullptr when no group of `plan` needs calibration. Errors: no calibration text (Usage,
    // setting "calibration text"), no tokenizer, unreadable or short text.
    static Result<std::unique_ptr<CalibrationFeed>> start(const CompressJobParams& params, const Checkpoint& checkpoint,
                                                          const CompressionMethod& method, const JobPlan& plan,
                                                          const std::string& tokenizerPath);
    ~CalibrationFeed();

    // Up-front mode: measures and saves the Hessians every group needs (block-by-block mode: nothing).
    Status measureUpFront(const JobPlan& plan, int blockCount, const WorkFolder& work);
    // Before group `group` is compressed or taken from the work folder: moves the windows to its
    // block and measures that block's Hessians (block-by-block mode).
    Status beforeGroup(const std::vector<MatrixRef>& group);
    // The Hessian of one matrix of the group in progress.
    Result<std::vector<float>> hessian(const MatrixRef& ref, const WorkFolder& work);
    // After a group is finished (compressed or resumed): its decoded weights replace the originals
    // in the calibration model (block-by-block mode), so the next blocks see exactly what an
    // uninterrupted run saw.
    Status afterGroup(const GroupPayload& payload, const CompressionMethod& method);

    // Whether the Hessians were measured up front (groups span blocks).
    bool upFront() const { return m_upFront; }
    // A distributed run, block-by-block mode: saves the current block's Hessians into the work
    // folder for the other ranks, and removes them once the block is done (up front: nothing).
    Status shareBlockHessians(const WorkFolder& work) const;
    Status forgetBlockHessians(const WorkFolder& work) const;

private:
    CalibrationFeed() = default;
    std::unique_ptr<LlamaModel> m_model;
    std::unique_ptr<CalibrationRun> m_run;
    bool m_upFront = false; // groups span blocks
    std::map<MatrixType, std::vector<float>> m_blockHessians;
    int m_hessianBlock = -1;
};

} // namespace pocket

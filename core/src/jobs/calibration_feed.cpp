#include "calibration_feed.h"

#include "work_folder.h"

#include "pocket/archive/archive_checkpoint.h"
#include "pocket/io/text.h"
#include "pocket/io/tokenizer.h"
#include "pocket/jobs/calibration.h"
#include "pocket/support/phases.h"

#include <algorithm>
#include <random>
#include <set>

namespace pocket {

Result<std::vector<std::vector<std::int32_t>>> calibrationWindows(const std::vector<std::int32_t>& tokens, std::int32_t bosId,
                                                                  const CalibrationParams& params)
{
    if (params.samples < 1)
        return Error::usage("calibration samples must be at least 1", "calibration samples");
    if (params.length < 2)
        return Error::usage("calibration length must be at least 2", "calibration length");
    const std::size_t text = static_cast<std::size_t>(params.length - 1);
    if (tokens.size() < text)
        return fileError(params.textPath, "too short for calibration: " + std::to_string(tokens.size()) + " tokens, windows need " +
                                              std::to_string(text));
    std::mt19937_64 gen(params.seed);
    std::uniform_int_distribution<std::size_t> start(0, tokens.size() - text);
    std::vector<std::vector<std::int32_t>> windows;
    for (int i = 0; i < params.samples; ++i) {
        const std::size_t s = start(gen);
        std::vector<std::int32_t> w{bosId};
        w.insert(w.end(), tokens.begin() + static_cast<std::ptrdiff_t>(s), tokens.begin() + static_cast<std::ptrdiff_t>(s + text));
        windows.push_back(std::move(w));
    }
    return windows;
}

CalibrationFeed::~CalibrationFeed() = default;

Result<std::unique_ptr<CalibrationFeed>> CalibrationFeed::start(const CompressJobParams& params, const Checkpoint& ckpt,
                                                                const CompressionMethod& method, const JobPlan& plan,
                                                                const std::string& tokenizerPath)
{
    bool needed = false;
    for (std::size_t i = 0; i < plan.groups.size(); ++i)
        needed = needed || plan.groupMethods[i]->needsCalibration(plan.groupParams[i]);
    if (!needed)
        return std::unique_ptr<CalibrationFeed>();
    const CalibrationParams& cp = params.calibration;
    if (cp.textPath.empty())
        return Error::usage("calibration text is needed by method '" + method.info().id + "'", "calibration text");
    const ScopedPhase phase("calibration");
    std::unique_ptr<CalibrationFeed> feed(new CalibrationFeed);
    for (const auto& group : plan.groups)
        for (const MatrixRef& m : group)
            if (m.layer != group.front().layer)
                feed->m_upFront = true;
    if (tokenizerPath.empty())
        return Error{ckpt.path() + ": calibration needs a tokenizer, and none was found beside the model or given", ErrorKind::Input,
                     "tokenizer"};
    auto tokenizer = loadTokenizer(tokenizerPath);
    if (!tokenizer)
        return tokenizer.error();
    auto text = readTextFile(cp.textPath);
    if (!text)
        return text.error();
    CalibrationParams capped = cp;
    capped.length = static_cast<int>(std::min<std::int64_t>(cp.length, ckpt.config().maxPositions));
    auto windows = calibrationWindows((*tokenizer)->encode(*text), (*tokenizer)->bosId(), capped);
    if (!windows)
        return windows.error();
    // Streamed: the linear weights stay in the checkpoint's map, one converted at a time, so the
    // calibration model costs the embeddings and one matrix, not the model in fp32.
    auto loaded = LlamaModel::loadStreamed(ckpt);
    if (!loaded)
        return loaded.error();
    feed->m_model = std::move(*loaded);
    auto run = feed->m_model->startCalibration(*windows);
    if (!run)
        return run.error();
    feed->m_run = std::move(*run);
    feed->m_model->releaseEmbeddings(); // the windows are embedded: the rest of the run never looks up a token
    return feed;
}

Status CalibrationFeed::measureUpFront(const JobPlan& plan, int blockCount, const WorkFolder& work)
{
    if (!m_upFront)
        return {};
    std::set<std::pair<int, MatrixType>> needed;
    for (const auto& group : plan.groups)
        for (const MatrixRef& m : group)
            needed.insert({m.layer, m.type});
    for (int block = 0; block < blockCount; ++block) {
        bool wanted = false;
        for (MatrixType t : kMatrixTypes)
            wanted = wanted || needed.count({block, t}) > 0;
        const bool last = block + 1 >= blockCount;
        if (wanted) {
            // One pass through the block gives its Hessians and the next block's inputs (no
            // weight changes in between: the Hessians are all the uncompressed model's).
            const ScopedPhase phase("hessians");
            auto h = last ? m_run->hessians() : m_run->hessiansThenAdvance();
            if (!h)
                return h.error();
            if (!last)
                m_model->releaseBlock(block);
            for (auto& [type, values] : *h)
                if (needed.count({block, type}))
                    POCKET_TRY(work.saveHessian(block, type, values));
        } else if (!last) {
            const ScopedPhase phase("calibration");
            POCKET_TRY(m_run->advance());
            m_model->releaseBlock(block);
        }
    }
    return {};
}

Status CalibrationFeed::beforeGroup(const std::vector<MatrixRef>& group)
{
    if (m_upFront)
        return {};
    const int block = group.front().layer;
    if (m_hessianBlock != block && m_run->nextBlock() > block)
        return Error::internal("calibration: block " + std::to_string(block) + " comes after block " + std::to_string(m_run->nextBlock()) +
                               " (the plan must visit blocks in order)");
    while (m_run->nextBlock() < block) {
        const ScopedPhase phase("calibration");
        POCKET_TRY(m_run->advance());
        m_model->releaseBlock(m_run->nextBlock() - 1); // never run again: its memory goes
    }
    if (m_hessianBlock != block) {
        const ScopedPhase phase("hessians");
        auto h = m_run->hessians();
        if (!h)
            return h.error();
        m_blockHessians = std::move(*h);
        m_hessianBlock = block;
    }
    return {};
}

Result<std::vector<float>> CalibrationFeed::hessian(const MatrixRef& ref, const WorkFolder& work)
{
    if (m_upFront)
        return work.loadHessian(ref);
    // Handed over, not copied: a block's matrix is compressed once (resumed ones never ask), and
    // the copy would double the largest Hessian in memory (down_proj's: intermediate^2 floats).
    const auto it = m_blockHessians.find(ref.type);
    if (ref.layer != m_hessianBlock || it == m_blockHessians.end())
        return Error::internal("calibration: the Hessian of " + ref.name + " is not held (block " + std::to_string(m_hessianBlock) + "'s are)");
    if (it->second.empty())
        return Error::internal("calibration: the Hessian of " + ref.name + " was handed over already");
    return std::move(it->second);
}

Status CalibrationFeed::afterGroup(const GroupPayload& payload, const CompressionMethod& method)
{
    if (m_upFront)
        return {};
    const ScopedPhase phase("calibration");
    // Kept as the payload and decoded at each use (bit for bit as decode()), so a block's finished
    // weights cost their payloads until the calibration passes the block, not fp32 copies.
    auto matrices = payloadMatrices(method, payload);
    if (!matrices)
        return matrices.error().prefixed("group " + payload.groupId);
    for (const MatrixResult& m : payload.matrices) {
        const auto it = matrices->find(m.ref.name);
        if (it == matrices->end())
            return Error::internal("group " + payload.groupId + ": its decoder has no matrix " + m.ref.name);
        if (auto set = m_model->setWeight(m.ref.name, it->second, m.ref.rows, m.ref.cols); !set)
            return set.error().prefixed("group " + payload.groupId);
    }
    return {};
}

Status CalibrationFeed::shareBlockHessians(const WorkFolder& work) const
{
    if (m_upFront)
        return {};
    for (const auto& [type, values] : m_blockHessians) {
        if (values.empty()) // hessian() hands them over: sharing must come first
            return Error::internal("calibration: block " + std::to_string(m_hessianBlock) + "'s Hessians were shared after a group took one");
        POCKET_TRY(work.saveHessian(m_hessianBlock, type, values));
    }
    return {};
}

Status CalibrationFeed::forgetBlockHessians(const WorkFolder& work) const
{
    if (!m_upFront)
        work.removeHessians(m_hessianBlock);
    return {};
}

} // namespace pocket

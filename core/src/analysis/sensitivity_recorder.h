// Private to core/src/analysis: records a sensitivity run in the experiment store (the model, the
// settings, then each unit's matrices as they finish), through the jobs' RunRecorder interface.
#pragma once

#include "pocket/analysis/sensitivity.h"
#include "pocket/io/checkpoint.h"
#include "pocket/jobs/run_recorder.h"

#include <map>
#include <string>
#include <vector>

namespace pocket {

class SensitivityRecorder : public RunRecorder {
public:
    // `checkpoint` must outlive the recorder.
    SensitivityRecorder(RecorderOptions options, const Checkpoint& checkpoint, const SensitivityParams& params, std::string paramsJson);
    // Adds one finished unit's matrices with its measures (begins the run if needed).
    void addUnit(const UnitSensitivity& unit, const std::vector<MatrixMetric>& matrices);
    // Records the base perplexity and finishes the run; returns its id (0 when not recorded).
    std::int64_t done(const SensitivityResult& result, std::int64_t bitsWeights, double bitsTotal);

protected:
    Result<std::int64_t> insertRun(ExperimentStore& store) override;

private:
    const Checkpoint& m_checkpoint;
    SensitivityParams m_params;
    std::string m_paramsJson;
};

// A unit an earlier analysis recorded, with the matrix rows it was recorded with.
struct RecordedUnit {
    UnitSensitivity unit;
    std::vector<MatrixMetric> matrices;
};

// The units recorded by earlier sensitivity runs of `methodId` whose parameters carry `cacheKey`,
// by unit name (the newest of each; runs cancelled part-way count for the units they finished).
// `basePerplexity` completes each unit's perplexity. A store problem is logged and gives none.
std::map<std::string, RecordedUnit> recordedUnits(const RecorderOptions& options, const std::string& methodId, const std::string& cacheKey,
                                                  double basePerplexity);

} // namespace pocket

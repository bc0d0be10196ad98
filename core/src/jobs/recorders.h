// Private to core/src/jobs: the recorders of the compress and eval jobs (the sensitivity
// analysis has its own in src/analysis). See pocket/jobs/run_recorder.h.
#pragma once

#include "pocket/jobs/compress_job.h"
#include "pocket/jobs/run_recorder.h"
#include "pocket/model/perplexity.h"

#include <optional>
#include <string>

namespace pocket {

// Records an evaluation: the model (for a .pllm archive, the compress run that wrote it when the
// store knows it, else the archive's source model), the text file as dataset, perplexity and NLL.
class EvalRecorder : public RunRecorder {
public:
    // Everything is copied; `checkpoint` is only read here.
    EvalRecorder(RecorderOptions options, const Checkpoint& checkpoint, const std::string& textPath, const std::string& tokenizerPath,
                 const EvalParams& params, ComputePrecision precision = ComputePrecision::F32, const std::string& referencePath = {});
    // A run whose parameters are given as JSON (zero-shot tasks); textPath "" = none.
    EvalRecorder(RecorderOptions options, const Checkpoint& checkpoint, std::string paramsJson);
    // Records the results and finishes the run; returns its id (0 when not recorded).
    std::int64_t done(const EvalResult& result);
    // One result under a dataset of its own (a zero-shot task: its name, the file it was read from;
    // path "" = a dataset without a file, such as an average over tasks).
    struct DatasetResult {
        std::string datasetName;
        std::string datasetPath;
        RunResult result;
    };
    std::int64_t done(const std::vector<DatasetResult>& results);

protected:
    Result<std::int64_t> insertRun(ExperimentStore& store) override;

private:
    std::int64_t finishEval(); // the run done, with the model's bits
    std::string m_modelPath;
    std::string m_modelName;
    std::string m_architecture;
    std::int64_t m_parameters = 0;
    std::uint64_t m_storedBytes = 0;
    std::string m_storedMethod;      // a quantised GGUF: "llamacpp:<file type>", else ""
    std::string m_storedTypes;       // its linear matrices' types ("Q4_K 81%, Q6_K 19%")
    double m_storedBpwLinear = 0;
    double m_storedBpwAllIn = 0;
    std::string m_textPath;
    std::string m_paramsJson;
    std::optional<double> m_bpwCompressed; // from the archive, or the stored dtype's bits
    std::optional<double> m_bpwAllIn;
};

// Records a compression: the source model, the settings, and at the end the archive, bits and
// the per-matrix MSE / SNR / bits per weight.
class CompressRecorder : public RunRecorder {
public:
    CompressRecorder(RecorderOptions options, CompressJobParams params);
    // Records the matrix metrics and finishes the run; returns its id (0 when not recorded).
    std::int64_t done(const CompressJobResult& result);

protected:
    Result<std::int64_t> insertRun(ExperimentStore& store) override;

private:
    CompressJobParams m_params;
    std::string m_sourceJson; // a quantised input's stored types and bits ("" otherwise)
};

} // namespace pocket

// LoRA recovery of a compressed model (the PocketLLM paper's fine-tune after compression): low-rank
// adapters on every compressed matrix of a .pllm archive, trained with the decoded weights frozen on
// calibration windows, written into a new archive as fp16 sections (format version 3) and counted
// in its bits per weight. The one code path behind `pocketllm-cli recover` and the workbench's
// Recover step. Call from one thread.
#pragma once

#include "pocket/archive/archive_checkpoint.h"
#include "pocket/jobs/calibration.h"
#include "pocket/methods/method_registry.h"
#include "pocket/model/llama_model.h"
#include "pocket/support/result.h"

#include <functional>
#include <string>
#include <vector>

namespace pocket {

struct RecoverJobParams {
    std::string archivePath;       // a .pllm archive
    std::string outPath;           // the archive with adapters ("" = "<name>-lora.pllm" beside the input)
    bool overwrite = false;        // replace an existing output file
    CalibrationParams calibration; // training windows (textPath required)
    std::string tokenizerPath;     // "" = the archive's own
    std::string originalPath;      // the uncompressed model: teacher of the KL objective ("" = none)
    AdapterTrainingParams training;
    // Matrices to adapt: "" = every compressed matrix, else a comma list of types ("down_proj,o_proj").
    // The output holds only the new adapters: any the input archive had are replaced, also on the
    // matrices of other types.
    std::string types;
};

struct RecoverJobProgress {
    enum class Phase { Loading, Measuring, Training, Writing };
    Phase phase = Phase::Loading;
    int tensorsLoaded = 0, tensorsTotal = 0;
    AdapterTrainingProgress step; // Training
};

struct RecoverJobResult {
    std::string outPath;
    std::vector<double> losses;   // per training step
    double objectiveBefore = 0;   // on all training windows, before and after training
    double objectiveAfter = 0;
    int adapters = 0;             // matrices adapted
    std::uint64_t adapterBits = 0;
    double bpwBefore = 0;         // bits per compressed weight, without and with the adapters
    double bpwAfter = 0;
    double adapterBpw = 0;        // the adapters' share of bpwAfter
    double trainSeconds = 0;
    double totalSeconds = 0;
};

// Errors name the file or the setting ("calibration text", "rank", "objective", "original model",
// "output"). `onProgress` returning false cancels (nothing is written).
Result<RecoverJobResult> runRecoverJob(const RecoverJobParams& params, const MethodRegistry& registry,
                                       const std::function<bool(const RecoverJobProgress&)>& onProgress = {});

// "<dir>/<stem>-lora.pllm" for "<dir>/<stem>.pllm".
std::string defaultRecoverPath(const std::string& archivePath);

} // namespace pocket

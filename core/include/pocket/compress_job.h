// A compression run over a model: select matrices, group them as the method asks, compress group
// by group, and assemble the .pllm archive. Every finished group is written at once to a work
// folder, so a run killed at any moment resumes (`resume`) and ends with the same archive, byte
// for byte, as an uninterrupted run. Call from one thread (a worker thread in the GUI); progress
// is reported on that thread.
#pragma once

#include "pocket/archive.h"
#include "pocket/checkpoint.h"
#include "pocket/dtype.h"
#include "pocket/hf_writer.h"
#include "pocket/layer_selection.h"
#include "pocket/method.h"
#include "pocket/method_registry.h"
#include "pocket/result.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pocket {

// Calibration data for methods that need layer-input statistics (GPTQ): `samples` windows of
// `length` tokens (BOS + length-1 text tokens) at seeded random places of a text file.
struct CalibrationParams {
    std::string textPath;
    int samples = 128;
    int length = 256;
    std::uint64_t seed = 0;
};

// The calibration windows for `params` from `tokens` (the encoded text). Errors name the file.
Result<std::vector<std::vector<std::int32_t>>> calibrationWindows(const std::vector<std::int32_t>& tokens, std::int32_t bosId,
                                                                  const CalibrationParams& params);

struct CompressJobParams {
    std::string modelPath;
    std::string methodId = "pocketllm";
    std::vector<std::string> settings; // "name=value" for the method's parameters
    // Per-matrix overrides (a bit allocation): tensor name -> "name=value" applied on top of
    // `settings`. Matrices with equal effective settings are planned together (planGroups per set).
    std::map<std::string, std::vector<std::string>> matrixSettings;
    LayerSelection selection;          // default: every linear matrix of every block
    DType keepDtype = DType::F16;      // dtype of the tensors left uncompressed (F16, BF16 or F32)
    std::string tokenizerPath;         // embedded tokenizer; "" = the one beside the model
    std::string outPath;               // the .pllm archive
    std::string workDir;               // "" = <outPath>.work
    bool resume = false;               // continue the work folder of an interrupted run
    bool keepWorkDir = false;          // keep the work folder after success
    CalibrationParams calibration;     // used when the method needs calibration
};

struct JobProgress {
    enum class Phase { Training, Writing };
    Phase phase = Phase::Training;
    int groupIndex = 0;    // 0-based group in progress
    int groupCount = 0;
    int groupsResumed = 0; // groups taken from the work folder
    TrainProgress train;   // the method's latest step (Training phase)
    double elapsedSeconds = 0;
    double etaSeconds = 0; // whole job, estimated from the weights still to do
};

struct CompressJobResult {
    std::string archivePath;
    std::uint64_t archiveBytes = 0;
    ArchiveBits bits;
    std::vector<GroupPayload> groups; // payloads without section bytes, with per-matrix results
    int groupsResumed = 0;
    double seconds = 0;
};

// A plan made without compressing anything: the groups and their estimated bits.
struct JobPlan {
    std::vector<std::vector<MatrixRef>> groups;
    std::vector<std::string> groupIds;
    std::vector<ParamSet> groupParams; // each group's resolved parameters
    ArchiveBits estimatedBits;
};

// `selection` as the JSON object stored in archives, job identities and the experiment store.
std::string layerSelectionJson(const LayerSelection& selection);

// The matrices `selection` picks in `checkpoint`, as MatrixRefs.
Result<std::vector<MatrixRef>> selectedMatrices(const Checkpoint& checkpoint, const LayerSelection& selection);

// Checks everything that can be checked up front (model, method, parameters, selection, groups)
// and estimates the bits. Errors name the file or the option.
Result<JobPlan> planCompressJob(const CompressJobParams& params, const Checkpoint& checkpoint, const CompressionMethod& method);

// Runs the whole job. `onProgress` returning false cancels: finished groups stay in the work
// folder (resume later), no archive is written, the error says "cancelled".
Result<CompressJobResult> runCompressJob(const CompressJobParams& params, MethodRegistry& registry,
                                         const std::function<bool(const JobProgress&)>& onProgress = {});

// A Checkpoint over a .pllm archive: compressed matrices are decoded by their method (one group
// at a time, cached until each of its matrices has been read once), the rest read as stored.
// `registry` must outlive the checkpoint. Loads return F32 for decoded matrices (fp16-exact values).
Result<std::unique_ptr<Checkpoint>> openArchiveCheckpoint(const std::string& path, const MethodRegistry& registry);

// Writes the decoded model of an archive as a Hugging Face folder (config.json, safetensors,
// tokenizer), weights stored as `options.dtype`.
Status decompressArchive(const std::string& archivePath, const MethodRegistry& registry, const std::string& outDir,
                         HfWriteOptions options);

} // namespace pocket

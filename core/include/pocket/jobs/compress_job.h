// A compression run over a model: select matrices, group them as the method asks, compress group
// by group, and assemble the .pllm archive. Every finished group is written at once to a work
// folder, so a run killed at any moment resumes (`resume`) and ends with the same archive, byte
// for byte, as an uninterrupted run. The run records itself in the experiment store when asked.
// Call from one thread (a worker thread in the GUI); progress is reported on that thread.
//
// The steps of runCompressJob, each a function of src/jobs/: planCompressJob (compress_plan.cpp),
// CalibrationFeed (calibration_feed.cpp), WorkFolder (work_folder.cpp), then compressGroups and
// assembleArchive (compress_job.cpp).
#pragma once

#include "pocket/archive/bit_accounting.h"
#include "pocket/archive/lossless.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/dtype.h"
#include "pocket/jobs/calibration.h"
#include "pocket/jobs/run_recorder.h"
#include "pocket/methods/layer_selection.h"
#include "pocket/methods/method.h"
#include "pocket/methods/method_registry.h"
#include "pocket/support/phases.h"
#include "pocket/support/result.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pocket {

class ClusterChannel; // pocket/jobs/cluster.h

struct CompressJobParams {
    std::string modelPath;
    std::string methodId = "pocketllm";
    std::vector<std::string> settings; // "name=value" for the method's parameters
    // Per-matrix overrides (a bit allocation): tensor name -> "name=value" applied on top of
    // `settings`. Matrices with equal effective settings are planned together (planGroups per set).
    std::map<std::string, std::vector<std::string>> matrixSettings;
    // Per-matrix methods (a plan across methods): tensor name -> method id. A matrix listed here
    // is compressed with that method and its matrixSettings alone (`settings` belong to methodId).
    std::map<std::string, std::string> matrixMethods;
    LayerSelection selection;          // default: every linear matrix of every block
    DType keepDtype = DType::F16;      // dtype of the tensors left uncompressed (F16, BF16 or F32; "keep dtype")
    std::string tokenizerPath;         // embedded tokenizer; "" = the one beside the model
    std::string outPath;               // the .pllm archive ("output")
    std::string workDir;               // "" = defaultWorkFolder(outPath)
    bool resume = false;               // continue the work folder of an interrupted run
    bool keepWorkDir = false;          // keep the work folder after success
    CalibrationParams calibration;     // used when the method needs calibration ("calibration text", ...)
    EntropyOptions entropy;            // the archive's lossless stage ("entropy"; default auto)
    // Optional: the selection as the front end phrased it (its own option names, a JSON object),
    // recorded with the run until the run succeeds and records the archive's resolved selection.
    // "" = layerSelectionJson(selection). Not part of the job's identity.
    std::string requestedSelectionJson;
    // Rank 0 of a run spread over several processes (pocket/jobs/cluster.h); nullptr = this
    // process alone. Not part of the job's identity: any number of ranks writes the same archive.
    ClusterChannel* cluster = nullptr;
};

// The work folder of a job writing `archivePath` when none is given: "<archivePath>.work".
std::string defaultWorkFolder(const std::string& archivePath);

struct JobProgress {
    enum class Phase { Training, Writing };
    Phase phase = Phase::Training;
    int groupIndex = 0;    // 0-based group in progress
    int groupCount = 0;
    int groupsResumed = 0; // groups taken from the work folder
    int groupsDone = 0;    // groups finished (resumed, or compressed by any rank)
    int rank = 0;          // the rank whose step `train` is (a distributed run; 0 otherwise)
    int ranks = 1;         // processes compressing
    TrainProgress train;   // the method's latest step (Training phase)
    double elapsedSeconds = 0;
    double etaSeconds = 0; // whole job, estimated from the weights still to do
};

struct CompressJobResult {
    std::string archivePath;
    std::uint64_t archiveBytes = 0;
    ArchiveBits bits;
    std::vector<GroupPayload> groups; // payloads without section bytes, with per-matrix results
    std::vector<MatrixReport> matrices; // one per compressed matrix, in group order
    int groupsResumed = 0;
    std::vector<double> groupSeconds; // per group in plan order: wall seconds compressing it (on whichever rank; 0 = resumed)
    double seconds = 0;
    int ranks = 1;                    // processes that compressed (a distributed run)
    // Wall seconds per phase of this process ("open", "calibration", "hessians", "compress",
    // "writing", and the methods' own: "k-means", "training", "assignment", ...; see
    // pocket/support/phases.h), with the largest resident set seen at a phase's end.
    std::vector<PhaseTime> phases;
    std::int64_t runId = 0;           // the run recorded in the store (0 = not recorded)
};

// A plan made without compressing anything: the groups and their estimated bits.
struct JobPlan {
    std::vector<std::vector<MatrixRef>> groups;
    std::vector<std::string> groupIds;
    std::vector<ParamSet> groupParams; // each group's resolved parameters
    std::vector<CompressionMethod*> groupMethods; // each group's method
    ArchiveBits estimatedBits;
};

// The matrices `selection` picks in `checkpoint`, as MatrixRefs.
Result<std::vector<MatrixRef>> selectedMatrices(const Checkpoint& checkpoint, const LayerSelection& selection);

// Checks everything that can be checked up front (model, method, parameters, selection, groups)
// and estimates the bits. Errors name the file or the setting (Usage errors carry Error::setting).
// Groups that each lie within one block come in block order (calibration visits blocks in order).
// `registry` finds the methods of params.matrixMethods (needed only when that is not empty).
Result<JobPlan> planCompressJob(const CompressJobParams& params, const Checkpoint& checkpoint, CompressionMethod& method,
                                const MethodRegistry* registry = nullptr);

// What a user should hear before running a plan: its overhead and the warnings (the workbench asks
// before it starts a plan with warnings; the CLI prints them).
struct PlanCheck {
    double overhead = 0; // codebook and decoder bits per index bit (0 for methods without them)
    std::vector<std::string> warnings; // above 16 bits per weight; an archive larger than the model
};
PlanCheck checkPlan(const JobPlan& plan, const Checkpoint& checkpoint);

// Settings of `params.methodId` that fit the model: the codebook and decoder bits (the shared
// overhead) at most `maxOverhead` of the index bits. The first value of the method's `sharing`
// choice (matrix, type, model) that fits with the current codebook; failing all, the widest
// sharing with the codebook size (`K`, or `B` bits) lowered until it fits. Methods without shared
// overhead keep their settings (changed = false). Other settings are kept as given.
struct SettingsSuggestion {
    std::vector<std::string> settings; // "name=value": params.settings with the suggestion applied
    std::vector<std::string> changes;  // what changed, e.g. "sharing=model", "K=512"
    bool changed = false;
    double overhead = 0;               // of the suggested settings
    double bpwCompressed = 0;          // their estimate
    std::string reason;                // one line for the status bar and the CLI
};
Result<SettingsSuggestion> suggestSettings(const CompressJobParams& params, const Checkpoint& checkpoint, CompressionMethod& method,
                                           const MethodRegistry* registry = nullptr, double maxOverhead = 0.1);

// Settings of `method` whose estimate brackets `targetBpw` (bits per weight over the compressed
// matrices) on this model: the candidate with the most bits at or below the target and the one with
// the fewest above it (either may be missing at the ends of the method's range), ties broken by the
// smaller codebook overhead. Candidates: bits 2-8 with groups of 32, 64 and 128 columns for methods
// with `bits`; K = 4 ... 65536 with d = 2, 4, 8 and every `sharing` for methods with `K`.
// params.settings are the base every candidate is added to.
struct BracketChoice {
    std::vector<std::string> settings; // the candidate's own assignments ("bits=3", "group=128")
    double bpwCompressed = 0;
    bool above = false;                // above the target (else at or below)
};
Result<std::vector<BracketChoice>> bracketingSettings(const CompressJobParams& params, const Checkpoint& checkpoint, CompressionMethod& method,
                                                      double targetBpw, const MethodRegistry* registry = nullptr);

// The `pocketllm-cli compress` arguments (after "compress") that run `params`: the workbench's
// "Run on cluster" puts them into an mpirun command line. Errors: what the command line cannot say
// (a plan's per-matrix settings or methods; matrices picked one by one with an include pattern).
Result<std::vector<std::string>> compressCommandArgs(const CompressJobParams& params);

// Runs the whole job and, when `recording` is given and enabled, records it in the experiment
// store (begun at the first progress report, so runs refused up front are not recorded).
// `onProgress` returning false cancels: finished groups stay in the work folder (resume later), no
// archive is written, the error is ErrorKind::Cancelled.
Result<CompressJobResult> runCompressJob(const CompressJobParams& params, MethodRegistry& registry, const RecorderOptions* recording = nullptr,
                                         const std::function<bool(const JobProgress&)>& onProgress = {});

} // namespace pocket

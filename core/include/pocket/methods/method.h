// The compression-method interface: what a method plugin (plugins/<name>/) implements, the data it
// receives (groups of weight matrices) and returns (a payload that decodes on its own), and the
// parameter schema from which the CLI builds its --set flags and the GUI its forms.
// No LibTorch here: plugins include torch in their own .cpp files only.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/support/phases.h"
#include "pocket/support/result.h"

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pocket {

// Bumped whenever anything in this header changes shape; plugins built against another version
// are refused with a message naming the plugin file.
constexpr int kMethodApiVersion = 6; // 4: Error carries a kind and a setting; 5: prepareDecoder;
                                     // 6: PayloadSection describes its code stream

// ---------------------------------------------------------------------------------------------
// Parameters
enum class ParamKind { Int, Float, Choice, Bool };

// One tunable parameter of a method.
struct ParamSpec {
    std::string name;                 // "K", "epochs", ... (used in --set name=value)
    ParamKind kind = ParamKind::Int;
    std::string defaultValue;         // in text form, e.g. "32768", "0.016", "normal", "false"
    std::string help;                 // one line for tooltips and --help
    double minValue = 0;              // Int/Float: inclusive range
    double maxValue = 0;
    std::vector<std::string> choices; // Choice: allowed values
    bool logScale = false;            // GUI hint: a log-scale slider or spin box

    static ParamSpec integer(std::string name, std::int64_t defaultValue, double minValue, double maxValue, std::string help,
                             bool logScale = false)
    {
        return {std::move(name), ParamKind::Int, std::to_string(defaultValue), std::move(help), minValue, maxValue, {}, logScale};
    }
    static ParamSpec real(std::string name, std::string defaultValue, double minValue, double maxValue, std::string help,
                          bool logScale = false)
    {
        return {std::move(name), ParamKind::Float, std::move(defaultValue), std::move(help), minValue, maxValue, {}, logScale};
    }
    static ParamSpec choice(std::string name, std::string defaultValue, std::vector<std::string> choices, std::string help)
    {
        return {std::move(name), ParamKind::Choice, std::move(defaultValue), std::move(help), 0, 0, std::move(choices), false};
    }
    static ParamSpec boolean(std::string name, bool defaultValue, std::string help)
    {
        return {std::move(name), ParamKind::Bool, defaultValue ? "true" : "false", std::move(help), 0, 0, {}, false};
    }
};

// Validated parameter values of one method, in text form, every schema entry present.
// The parameter `name` of `schema`, or null.
const ParamSpec* findParamSpec(const std::vector<ParamSpec>& schema, const std::string& name);

class ParamSet {
public:
    ParamSet() = default;
    // Defaults of `schema`, overridden by "name=value" assignments. Errors name the parameter,
    // the bad value and the allowed range or choices; unknown names list the known ones.
    static Result<ParamSet> resolve(const std::vector<ParamSpec>& schema, const std::vector<std::string>& assignments);
    // Same, from a name -> value map (e.g. read back from an archive).
    static Result<ParamSet> resolve(const std::vector<ParamSpec>& schema, const std::map<std::string, std::string>& values);

    std::int64_t getInt(const std::string& name) const;
    double getFloat(const std::string& name) const;
    const std::string& getText(const std::string& name) const;
    bool getBool(const std::string& name) const;
    const std::map<std::string, std::string>& values() const { return m_values; }
    // {"K":32768,"lr":0.016,"init":"normal",...} with numbers and booleans as JSON values.
    std::string toJson(const std::vector<ParamSpec>& schema) const;

private:
    std::map<std::string, std::string> m_values;
};

// ---------------------------------------------------------------------------------------------
// Inputs and outputs of compression

// A linear weight matrix of the model, [rows = out, cols = in], row-major.
struct MatrixRef {
    std::string name;  // "model.layers.3.self_attn.q_proj.weight"
    int layer = 0;
    MatrixType type = MatrixType::Q;
    std::int64_t rows = 0;
    std::int64_t cols = 0;
    std::int64_t weights() const { return rows * cols; }
};

struct WeightMatrix {
    MatrixRef ref;
    std::vector<float> values; // rows * cols
    // For methods with MethodInfo::needsCalibration: the layer's input Hessian H = 2/n * X^T X over
    // n calibration tokens, [cols, cols] row-major (symmetric); empty when not calibrated.
    std::vector<float> hessian;
};

// Matrices compressed together (sharing whatever the method shares between them).
struct MatrixGroup {
    std::string id; // stable name, e.g. "model.layers.3.self_attn.q_proj.weight" or "type:q_proj"
    std::vector<WeightMatrix> matrices;
};

// Bits a matrix (or the shared part of a group) costs, split the way the method doc counts them.
struct BitCounts {
    std::uint64_t indexBits = 0;    // codes / quantised values
    std::uint64_t codebookBits = 0; // codebooks (fp16)
    std::uint64_t decoderBits = 0;  // decoder / meta-network parameters (fp16)
    std::uint64_t scaleBits = 0;    // scales, zero points, other side information
    std::uint64_t total() const { return indexBits + codebookBits + decoderBits + scaleBits; }
    BitCounts& operator+=(const BitCounts& other);
};

// What a method reports for one matrix after compressing it (errors are measured on the weights
// decoded from the payload, exactly as decompression will produce them).
struct MatrixResult {
    MatrixRef ref;
    BitCounts bits;   // the matrix's own bits (its indices, its scales)
    double mse = 0;   // mean squared error of the decoded weights
    double snrDb = 0; // 10 log10(sum w^2 / sum (w - w_hat)^2)
};

// One named block of bytes of a payload (e.g. "decoder", "codebook", "indices/<matrix>").
// A section that is a stream of codes or indices says so (symbolBits > 0): its bytes are
// `symbols` values of `symbolBits` bits packed by packBits (vq_kernels.h). The archive's lossless
// stage may store such a section entropy-coded (docs/archive-format.md, "Coded sections"); a
// method always gets it back packed. A code stream named "<kind>/<matrix name>" belongs to that
// matrix (its coded size is counted in the matrix's index bits); any other to the whole group.
struct PayloadSection {
    std::string name;
    std::vector<std::uint8_t> bytes;
    int symbolBits = 0;        // 0: opaque bytes; 1..32: a packed code stream
    std::uint64_t symbols = 0; // values in the stream
};

// A code-stream section: `count` values of `bits` bits packed (values must be < 2^bits).
PayloadSection codeSection(std::string name, const std::int32_t* values, std::int64_t count, int bits);

// A compressed group: everything needed to decode its matrices, and nothing else.
struct GroupPayload {
    std::string groupId;
    std::string methodId;
    int methodVersion = 0;
    std::string paramsJson;  // the resolved parameters (ParamSet::toJson)
    std::string metaJson;    // method-defined layout facts (sizes, padding, ...), JSON object
    std::vector<MatrixResult> matrices; // in group order
    BitCounts sharedBits;    // bits shared by all matrices of the group (codebook, decoder)
    std::vector<PayloadSection> sections;

    BitCounts totalBits() const;
    const PayloadSection* section(const std::string& name) const;
};

// Live training metrics, reported by compress() through CompressContext::onProgress.
struct TrainProgress {
    std::string groupId;
    int step = 0;            // optimiser steps done in this group
    int totalSteps = 0;
    int epoch = 0;           // 1-based epoch in progress
    int epochs = 0;
    double loss = 0;         // total loss of the last step
    double reconstruction = 0; // reconstruction term (MSE, or RMSE for the paper's loss)
    double codebookTerm = 0;
    double commitmentTerm = 0;
    double snrDb = std::numeric_limits<double>::quiet_NaN(); // of the last reconstruction; NaN = not known
    double codebookUsage = 0;  // fraction of codewords used so far in this epoch
    double indexPerplexity = 0; // exp(entropy) of the index histogram of the last full epoch
    int deadCodewords = 0;   // codewords not used during the last full epoch
    double lr = 0;
    double elapsedSeconds = 0;
    double etaSeconds = 0;   // for this group
};

// How compress() is run. onProgress is called on the calling thread; returning false cancels
// (compress then returns an Error "cancelled").
struct CompressContext {
    int threads = 0; // compute threads already configured by the caller; informational
    std::function<bool(const TrainProgress&)> onProgress;
    PhaseLog* phases = nullptr; // where the method's phases are counted (pocket/support/phases.h); nullptr = this module's own
};

// ---------------------------------------------------------------------------------------------
// The method

struct MethodInfo {
    std::string id;           // "pocketllm"; stable, lower case, used in archives and --method
    std::string displayName;  // "PocketLLM (meta-network VQ)"
    int version = 1;          // payload version written into archives
    std::string description;  // a sentence or two
    bool lossy = true;
    bool needsCalibration = false; // compress() wants WeightMatrix::hessian filled (GPTQ); see also
                                   // CompressionMethod::needsCalibration(params)
    std::string bitsFormula;  // how bits per weight are computed, human-readable
    std::vector<ParamSpec> params;
};

// Decodes the matrices of one payload one at a time into memory the caller owns: what inference
// straight from an archive uses (a matrix stays in payload form and is decoded into a reusable
// buffer just before its layer runs). Made by CompressionMethod::prepareDecoder. decodeMatrix()
// may be called from several threads at once (each with its own output).
class PayloadDecoder {
public:
    virtual ~PayloadDecoder() = default;
    // Matrices of the payload, in payload order.
    virtual std::size_t matrixCount() const = 0;
    virtual const MatrixRef& matrix(std::size_t index) const = 0;
    // Bytes this decoder keeps in memory (the payload in its stored form, plus any tables).
    virtual std::uint64_t bytes() const = 0;
    // Writes matrix `index`, rows*cols floats row-major, bit-identical to decode()'s; `threads`
    // worker threads at most (<= 0: one per core).
    virtual Status decodeMatrix(std::size_t index, float* out, int threads) const = 0;
};

// A compression method. Instances are used from one thread at a time; compress() and decode()
// must not throw (errors come back as values, c10::Error included).
class CompressionMethod {
public:
    virtual ~CompressionMethod() = default;
    virtual const MethodInfo& info() const = 0;

    // Splits the selected matrices into groups compressed together (one per matrix by default;
    // PocketLLM's `sharing` parameter groups by type or the whole model).
    virtual Result<std::vector<std::vector<MatrixRef>>> planGroups(const std::vector<MatrixRef>& matrices, const ParamSet& params) const;

    // Whether compress() needs calibration Hessians under these parameters (default: the
    // MethodInfo flag; VQ needs them only with error feedback).
    virtual bool needsCalibration(const ParamSet&) const { return info().needsCalibration; }

    // Bits a group of these shapes will cost under `params`, without compressing anything:
    // per-matrix bits in `perMatrix` (same order) and the shared bits in the return value.
    virtual Result<BitCounts> estimateBits(const std::vector<MatrixRef>& group, const ParamSet& params,
                                           std::vector<BitCounts>& perMatrix) const = 0;

    // Compresses one group. Deterministic: the same group, params and thread count give the same
    // payload bit for bit.
    virtual Result<GroupPayload> compress(const MatrixGroup& group, const ParamSet& params, const CompressContext& context) = 0;

    // Decodes every matrix of a payload (values rows * cols, row-major, in group order).
    virtual Result<std::vector<std::vector<float>>> decode(const GroupPayload& payload) const = 0;

    // A decoder that keeps `payload` and decodes one matrix at a time (checks the payload once).
    // The default keeps the payload and runs decode() for each matrix asked for (correct, not
    // fast); methods override it with decoders that touch only the matrix asked for.
    virtual Result<std::unique_ptr<PayloadDecoder>> prepareDecoder(GroupPayload payload) const;
};

// Helpers shared by methods ---------------------------------------------------------------------

// Groups by a sharing scope: "matrix" (one group each), "type" (one per matrix type, block order
// kept) or "model" (all in one).
std::vector<std::vector<MatrixRef>> groupsBySharing(const std::vector<MatrixRef>& matrices, const std::string& scope);
// A readable, stable id for a group of planGroups(): the matrix name, "type:<name>", "model" (all
// `selectedCount` matrices) or "group<index>".
std::string matrixGroupId(const std::vector<MatrixRef>& group, std::size_t index, std::size_t selectedCount);
// A seed for one group from the user's seed and the group id, so a group's result does not depend
// on which other groups run.
std::uint64_t groupSeed(std::int64_t seed, const std::string& groupId);
// Fills payload.matrices[i].mse and .snrDb from the original and the decoded weights.
void measureReconstruction(const MatrixGroup& group, const std::vector<std::vector<float>>& decoded, GroupPayload& payload);
// Decodes `payload` with `method` and fills its errors from what decompression will produce.
Status measureByDecoding(const CompressionMethod& method, const MatrixGroup& group, GroupPayload& payload);

// Bytes of a payload's sections (what it takes in memory in stored form, near enough).
std::uint64_t payloadBytes(const GroupPayload& payload);

// Bits per weight of one matrix given its own bits and its share of the group's shared bits
// (shared bits are split in proportion to the matrices' weight counts).
double matrixBitsPerWeight(const MatrixRef& ref, const BitCounts& own, const BitCounts& shared, std::int64_t groupWeights);

// ---------------------------------------------------------------------------------------------
// Plugin ABI: a plugin is a shared library exporting these two C functions. POCKET_METHOD_PLUGIN
// defines both for a CompressionMethod subclass with a default constructor.
using MethodApiVersionFn = int (*)();
using MethodCreateFn = CompressionMethod* (*)();
constexpr const char* kMethodApiVersionSymbol = "pocket_method_api_version";
constexpr const char* kMethodCreateSymbol = "pocket_method_create";

#define POCKET_METHOD_PLUGIN(ClassName)                                                                    \
    extern "C" __attribute__((visibility("default"))) int pocket_method_api_version()                    \
    {                                                                                                      \
        return ::pocket::kMethodApiVersion;                                                                \
    }                                                                                                      \
    extern "C" __attribute__((visibility("default"))) ::pocket::CompressionMethod* pocket_method_create() \
    {                                                                                                      \
        return new ClassName();                                                                            \
    }

} // namespace pocket

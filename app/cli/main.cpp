// pocketllm-cli: the command-line face of the PocketLLM Workbench core. Parses arguments, calls
// core, prints results (text or one JSON object with --json). Exit codes (from core's error kinds,
// cli_common.h): 0 success, 1 bad input (file, model, data), 2 bad usage (options), 3 internal error.
#include "pocket/support/app_paths.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/tensor_stats.h"
#include "pocket/jobs/eval_job.h"
#include "pocket/io/hf_writer.h"
#include "pocket/model/llama_model.h"
#include "pocket/model/perplexity.h"
#include "pocket/io/text.h"
#include "pocket/io/tokenizer.h"
#include "pocket/version.h"

#include "analysis_commands.h"
#include "cli_common.h"
#include "compress_commands.h"
#include "store_commands.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>
#include <sys/resource.h>
#include <unistd.h>

using nlohmann::ordered_json;

namespace {

using namespace cli;

ordered_json configJson(const pocket::ModelConfig& c)
{
    return {{"architecture", c.architecture},
            {"hidden_size", c.hiddenSize},
            {"intermediate_size", c.intermediateSize},
            {"num_hidden_layers", c.numLayers},
            {"num_attention_heads", c.numHeads},
            {"num_key_value_heads", c.numKvHeads},
            {"head_dim", c.headDim},
            {"vocab_size", c.vocabSize},
            {"max_position_embeddings", c.maxPositions},
            {"rms_norm_eps", c.rmsNormEps},
            {"rope_theta", c.ropeTheta},
            {"tie_word_embeddings", c.tieWordEmbeddings},
            {"attention_bias", c.attentionBias}};
}

const char* formatName(pocket::CheckpointFormat f)
{
    return f == pocket::CheckpointFormat::Llama2c ? "llama2.c" : "hf-safetensors";
}

// ---------------------------------------------------------------------------------- info
struct InfoOptions {
    std::string model;
    bool tensors = false;
    bool walk = false;
};

int runInfo(const Globals& g, const InfoOptions& o)
{
    auto ckpt = openModelOrArchive(o.model);
    if (!ckpt)
        return fail(g, ckpt.error());
    const auto& c = (*ckpt)->config();
    std::map<std::string, std::int64_t> dtypeCounts;
    for (const auto& t : (*ckpt)->tensors()) dtypeCounts[pocket::dtypeName(t.dtype)] += pocket::elementCount(t.shape);

    ordered_json out;
    out["model"] = (*ckpt)->path();
    out["format"] = formatName((*ckpt)->format());
    out["config"] = configJson(c);
    out["parameters"] = c.parameterCount();
    out["bytes"] = (*ckpt)->totalBytes();
    out["dtypes"] = dtypeCounts;
    out["tokenizer"] = (*ckpt)->tokenizerPath();
    ordered_json tensorRows = ordered_json::array();
    ProgressLine progress(!g.quiet);
    const auto start = std::chrono::steady_clock::now();
    std::int64_t nonFinite = 0;
    const auto& infos = (*ckpt)->tensors();
    for (std::size_t i = 0; i < infos.size(); ++i) {
        const auto& t = infos[i];
        ordered_json row{{"name", t.name}, {"dtype", pocket::dtypeName(t.dtype)}, {"shape", t.shape}, {"bytes", t.byteSize}};
        if (o.walk) { // materialise one tensor at a time, then drop it
            auto data = (*ckpt)->load(t.name);
            if (!data)
                return fail(g, data.error());
            const pocket::TensorStats stats = pocket::tensorStats(*data);
            row["min"] = stats.min;
            row["max"] = stats.max;
            row["mean"] = stats.mean;
            row["rms"] = stats.rms;
            row["non_finite"] = stats.nonFinite;
            nonFinite += stats.nonFinite;
            progress.show("walk " + std::to_string(i + 1) + "/" + std::to_string(infos.size()) + "  " + t.name);
        }
        tensorRows.push_back(row);
    }
    progress.finish();
    if (o.tensors)
        out["tensors"] = tensorRows;
    if (o.walk) {
        const double seconds = secondsSince(start);
        out["walk"] = {{"seconds", seconds},
                       {"gb_per_s", static_cast<double>((*ckpt)->totalBytes()) / 1e9 / std::max(seconds, 1e-9)},
                       {"non_finite", nonFinite}};
    }
    out["peak_rss_mb"] = peakRssMb();

    std::ostringstream text;
    text << "model        " << (*ckpt)->path() << " (" << formatName((*ckpt)->format()) << ")\n"
         << "architecture " << c.architecture << ": " << c.numLayers << " layers, dim " << c.hiddenSize << ", ffn " << c.intermediateSize
         << ", heads " << c.numHeads << " (kv " << c.numKvHeads << "), head_dim " << c.headDim << ", vocab " << c.vocabSize << "\n"
         << "             max positions " << c.maxPositions << ", rope theta " << c.ropeTheta << ", rms eps " << c.rmsNormEps
         << (c.tieWordEmbeddings ? ", tied embeddings" : ", separate lm_head") << (c.attentionBias ? ", qkv bias" : "") << "\n"
         << "parameters   " << c.parameterCount() << " (" << std::fixed << std::setprecision(1)
         << static_cast<double>((*ckpt)->totalBytes()) / (1024.0 * 1024.0) << " MiB stored)\n"
         << "dtypes      ";
    for (const auto& [name, count] : dtypeCounts) text << " " << name << ":" << count;
    text << "\ntokenizer    " << ((*ckpt)->tokenizerPath().empty() ? "(none found beside the model)" : (*ckpt)->tokenizerPath()) << "\n";
    if (o.tensors)
        for (const auto& row : tensorRows) {
            text << "  " << row["name"].get<std::string>() << "  " << row["dtype"].get<std::string>() << " "
                 << pocket::shapeString(row["shape"].get<std::vector<std::int64_t>>());
            if (o.walk)
                text << "  rms " << std::setprecision(4) << row["rms"].get<double>();
            text << "\n";
        }
    if (o.walk)
        text << "walk         " << std::setprecision(2) << out["walk"]["seconds"].get<double>() << " s, " << out["walk"]["gb_per_s"].get<double>()
             << " GB/s, non-finite values: " << nonFinite << ", peak RSS " << std::setprecision(1) << out["peak_rss_mb"].get<double>() << " MiB\n";
    emit(g, out, text.str());
    return o.walk && nonFinite > 0 ? kExitBadInput : kExitOk;
}

// ---------------------------------------------------------------------------------- eval
struct EvalOptions {
    std::string model;
    std::string text;
    std::string tokenizer;
    int ctx = 0;
    int stride = 0;
    std::int64_t maxTokens = 0;
    int batch = 0;
    int threads = 0;
};

int runEval(const Globals& g, const EvalOptions& o)
{
    pocket::EvalJobParams params;
    params.modelPath = o.model;
    params.textPath = o.text;
    params.tokenizerPath = o.tokenizer;
    params.eval.ctx = o.ctx;
    params.eval.stride = o.stride;
    params.eval.maxTokens = o.maxTokens;
    params.eval.batch = o.batch;
    pocket::setComputeThreads(o.threads);

    ProgressLine progress(!g.quiet);
    const pocket::RecorderOptions recording = recorderOptions(g);
    auto job = pocket::runEvalJob(params, registry(), &recording, [&](const pocket::EvalJobProgress& jp) {
        if (jp.phase == pocket::EvalJobProgress::Phase::Loading) {
            progress.show("loading weights " + std::to_string(jp.tensorsLoaded) + "/" + std::to_string(jp.tensorsTotal));
            return true;
        }
        const pocket::EvalProgress& p = jp.eval;
        const double rate = p.elapsedSeconds > 0 ? p.windowsDone / p.elapsedSeconds : 0;
        const double eta = rate > 0 ? (p.windowsTotal - p.windowsDone) / rate : -1;
        char line[160];
        std::snprintf(line, sizeof line, "eval %d/%d windows  ppl %.4f  %.0f tok/s  ETA %s", p.windowsDone, p.windowsTotal, p.perplexitySoFar,
                      p.elapsedSeconds > 0 ? p.tokensScored / p.elapsedSeconds : 0.0, formatDuration(eta).c_str());
        progress.show(line);
        return true;
    });
    progress.finish();
    if (!job)
        return fail(g, job.error());
    const double loadSeconds = job->loadSeconds;
    const double tokenizeSeconds = job->tokenizeSeconds;
    const std::string& tokenizerPath = job->tokenizerPath;

    const auto& r = job->result;
    ordered_json out{{"model", job->modelPath},
                     {"text", o.text},
                     {"tokenizer", tokenizerPath},
                     {"perplexity", r.perplexity},
                     {"nll", r.meanNll},
                     {"tokens", r.tokensScored},
                     {"tokens_processed", r.tokensProcessed},
                     {"windows", r.windows},
                     {"ctx", r.ctx},
                     {"stride", r.stride},
                     {"batch", r.batch},
                     {"threads", pocket::computeThreads()},
                     {"tokens_per_s", r.tokensPerSecond},
                     {"eval_s", r.elapsedSeconds},
                     {"load_s", loadSeconds},
                     {"tokenize_s", tokenizeSeconds},
                     {"total_s", job->totalSeconds},
                     {"peak_rss_mb", peakRssMb()}};
    if (job->runId > 0)
        out["run_id"] = job->runId;
    std::ostringstream t;
    t << std::fixed << std::setprecision(4) << "perplexity   " << r.perplexity << "\n"
      << "mean NLL     " << r.meanNll << " nats/token\n"
      << "tokens       " << r.tokensScored << " scored in " << r.windows << " windows of ctx " << r.ctx << " (stride " << r.stride << ")\n"
      << std::setprecision(1) << "speed        " << r.tokensPerSecond << " tokens/s over " << r.elapsedSeconds << " s (" << pocket::computeThreads()
      << " threads, batch " << r.batch << "); load " << loadSeconds << " s\n"
      << "peak RSS     " << peakRssMb() << " MiB\n";
    emit(g, out, t.str());
    spdlog::debug("eval {} on {}: ppl {:.4f} over {} tokens", o.model, o.text, r.perplexity, r.tokensScored);
    return kExitOk;
}

// ---------------------------------------------------------------------------------- convert / make-random
struct WriteOptions {
    std::string out;
    std::string dtype = "f32";
    std::string tokenizer;
    double shardMb = 0;
    bool force = false;
};

pocket::Result<pocket::HfWriteOptions> hfWriteOptions(const WriteOptions& o, ProgressLine& progress)
{
    pocket::HfWriteOptions w;
    const auto dtype = pocket::parseFloatDTypeOption(o.dtype);
    if (!dtype)
        return pocket::Error{"--dtype: '" + o.dtype + "' is not one of f32, f16, bf16"};
    w.dtype = *dtype;
    if (o.shardMb > 1e9)
        return pocket::Error{"--shard-size: at most 1e9 MiB"};
    w.maxShardBytes = static_cast<std::uint64_t>(o.shardMb * 1024 * 1024);
    w.tokenizerPath = o.tokenizer;
    w.overwrite = o.force;
    w.onTensor = [&progress](int done, int total) {
        progress.show("writing tensor " + std::to_string(done) + "/" + std::to_string(total));
        return true;
    };
    return w;
}

int reportWritten(const Globals& g, const std::string& dir, const char* verb, double seconds)
{
    auto ckpt = pocket::openCheckpoint(dir); // read back: what we wrote must open
    if (!ckpt)
        return fail(g, "wrote a folder that does not open again: " + ckpt.message());
    ordered_json out{{"out", dir},
                     {"parameters", (*ckpt)->config().parameterCount()},
                     {"bytes", (*ckpt)->totalBytes()},
                     {"tokenizer", (*ckpt)->tokenizerPath()},
                     {"seconds", seconds},
                     {"peak_rss_mb", peakRssMb()}};
    std::ostringstream t;
    t << verb << " " << dir << ": " << (*ckpt)->config().parameterCount() << " parameters, " << std::fixed << std::setprecision(1)
      << static_cast<double>((*ckpt)->totalBytes()) / (1024.0 * 1024.0) << " MiB in " << seconds << " s\n";
    emit(g, out, t.str());
    return kExitOk;
}

int runConvert(const Globals& g, const std::string& model, const WriteOptions& o)
{
    const auto start = std::chrono::steady_clock::now();
    auto ckpt = pocket::openCheckpoint(model);
    if (!ckpt)
        return fail(g, ckpt.error());
    ProgressLine progress(!g.quiet);
    auto w = hfWriteOptions(o, progress);
    if (!w)
        return fail(g, w.message(), kExitUsage);
    if (auto s = pocket::convertToHf(**ckpt, o.out, *w); !s)
        return fail(g, s.error());
    progress.finish();
    return reportWritten(g, o.out, "converted to", secondsSince(start));
}

struct RandomOptions {
    std::string preset = "tiny";
    std::int64_t dim = 0, hidden = 0, layers = 0, heads = 0, kvHeads = 0, vocab = 0, seqLen = 0;
    bool tie = false, bias = false;
    double theta = 10000.0;
    std::uint64_t seed = 1;
};

int runMakeRandom(const Globals& g, const RandomOptions& r, const WriteOptions& o)
{
    const auto start = std::chrono::steady_clock::now();
    pocket::ModelConfig c;
    if (r.preset == "tiny") { // small enough for unit tests
        c.hiddenSize = 64; c.intermediateSize = 172; c.numLayers = 2; c.numHeads = 8; c.numKvHeads = 4; c.vocabSize = 512; c.maxPositions = 512;
    } else if (r.preset == "1gb") { // Llama-shaped, ~1 GB in f16 with the Llama-2 vocabulary
        c.hiddenSize = 2048; c.intermediateSize = 5632; c.numLayers = 8; c.numHeads = 16; c.numKvHeads = 4; c.vocabSize = 32000; c.maxPositions = 4096;
    } else {
        return fail(g, "--preset: '" + r.preset + "' is not one of tiny, 1gb", kExitUsage);
    }
    if (r.dim) c.hiddenSize = r.dim;
    if (r.hidden) c.intermediateSize = r.hidden;
    if (r.layers) c.numLayers = r.layers;
    if (r.heads) c.numHeads = r.heads;
    if (r.kvHeads) c.numKvHeads = r.kvHeads;
    if (r.vocab) c.vocabSize = r.vocab;
    if (r.seqLen) c.maxPositions = r.seqLen;
    if (r.heads && !r.kvHeads) c.numKvHeads = c.numHeads;
    c.headDim = c.numHeads > 0 ? c.hiddenSize / c.numHeads : 0;
    c.ropeTheta = r.theta;
    c.tieWordEmbeddings = r.tie;
    c.attentionBias = r.bias;
    c.rmsNormEps = 1e-5;
    if (auto s = c.validate("make-random options"); !s)
        return fail(g, s.message(), kExitUsage);
    ProgressLine progress(!g.quiet);
    auto w = hfWriteOptions(o, progress);
    if (!w)
        return fail(g, w.message(), kExitUsage);
    if (auto s = pocket::writeRandomCheckpoint(c, r.seed, o.out, *w); !s)
        return fail(g, s.error());
    progress.finish();
    return reportWritten(g, o.out, "wrote random model", secondsSince(start));
}

// ---------------------------------------------------------------------------------- doctor
int runDoctor(const Globals& g, int threads)
{
    pocket::setComputeThreads(threads);
    const double gflops = pocket::measureMatmulGflops(1024, 10);
    const bool slow = gflops < 20.0;
    ordered_json out{{"version", POCKET_VERSION},
                     {"git_revision", POCKET_GIT_REVISION},
                     {"threads", pocket::computeThreads()},
                     {"matmul_1024_gflops", gflops},
                     {"data_dir", pocket::userDataDir()},
                     {"blas_ok", !slow}};
    std::ostringstream t;
    t << "pocketllm-cli " << POCKET_VERSION << " (" << POCKET_GIT_REVISION << ")\n"
      << "threads      " << pocket::computeThreads() << "\n"
      << std::fixed << std::setprecision(1) << "matmul       " << gflops << " GFLOP/s (1024x1024 fp32)\n"
      << "data folder  " << pocket::userDataDir() << "\n";
    if (slow)
        t << "warning: matmul is slow; LibTorch is probably using the reference BLAS. Install libopenblas0-pthread.\n";
    emit(g, out, t.str());
    return kExitOk;
}

} // namespace

int main(int argc, char** argv)
{
    Globals g;
    CLI::App app{"PocketLLM Workbench command-line tool: inspect, convert, evaluate and compress Llama-family checkpoints."};
    app.name("pocketllm-cli");
    app.set_version_flag("--version", std::string("pocketllm-cli ") + POCKET_VERSION + " (git " + POCKET_GIT_REVISION + ")");
    app.require_subcommand(1);
    app.fallthrough();
    app.add_flag("--json", g.json, "Print one JSON object on stdout");
    app.add_flag("-q,--quiet", g.quiet, "No progress line; only warnings and errors on stderr");
    app.add_option("--log-level", g.logLevel, "Console log level")->check(CLI::IsMember({"debug", "info", "warn", "error", "off"}));
    app.add_option("--store", g.store, "Experiment store file (default: $POCKETLLM_STORE, else <data dir>/experiments.sqlite)");
    app.add_flag("--no-store", g.noStore, "Do not record this compress / eval / sensitivity run in the experiment store");
    for (int i = 0; i < argc; ++i)
        g.commandLine += (i ? " " : "") + std::string(i ? argv[i] : "pocketllm-cli");

    InfoOptions info;
    auto* infoCmd = app.add_subcommand("info", "Show a model's architecture, size and tensors");
    infoCmd->add_option("MODEL", info.model, "HF folder, .safetensors file in one, or llama2.c .bin")->required();
    infoCmd->add_flag("--tensors", info.tensors, "List every tensor");
    infoCmd->add_flag("--walk", info.walk, "Read every tensor once, one at a time (checks values, measures read speed)");

    EvalOptions eval;
    auto* evalCmd = app.add_subcommand("eval", "Perplexity of a model on a text file");
    evalCmd->add_option("MODEL", eval.model, "HF folder, .safetensors file in one, llama2.c .bin, or .pllm archive")->required();
    evalCmd->add_option("--text", eval.text, "UTF-8 text file")->required();
    evalCmd->add_option("--tokenizer", eval.tokenizer, "tokenizer.model or tokenizer.bin (default: found beside the model)");
    evalCmd->add_option("--ctx", eval.ctx, "Tokens per window, BOS included (default: min(2048, max_position_embeddings))")->check(CLI::Range(2, 1 << 20));
    evalCmd->add_option("--stride", eval.stride, "Text tokens between window starts (default: ctx-1, non-overlapping)")->check(CLI::Range(1, 1 << 20));
    evalCmd->add_option("--max-tokens", eval.maxTokens, "Score at most this many tokens (default: all)")->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 40));
    evalCmd->add_option("--batch", eval.batch, "Windows per forward pass (default: automatic)")->check(CLI::Range(1, 4096));
    evalCmd->add_option("--threads", eval.threads, "Compute threads (default: one per core)")->check(CLI::Range(1, 1024));

    WriteOptions write;
    std::string convertModel;
    auto* convertCmd = app.add_subcommand("convert", "Convert a checkpoint (e.g. llama2.c) to a Hugging Face folder");
    convertCmd->add_option("MODEL", convertModel, "Model to convert")->required();
    auto addWriteOptions = [&write](CLI::App* cmd) {
        cmd->add_option("--out", write.out, "Output folder")->required();
        cmd->add_option("--dtype", write.dtype, "Stored dtype: f32, f16 or bf16")->capture_default_str();
        cmd->add_option("--tokenizer", write.tokenizer, "Tokenizer file to copy into the folder");
        cmd->add_option("--shard-size", write.shardMb, "Split into shards of at most this many MiB (default: one file)")->check(CLI::Range(0.0, 1e9));
        cmd->add_flag("--force", write.force, "Replace an existing output folder");
    };
    addWriteOptions(convertCmd);

    RandomOptions random;
    auto* randomCmd = app.add_subcommand("make-random", "Write a Llama-shaped checkpoint with random weights (tests, benchmarks)");
    addWriteOptions(randomCmd);
    randomCmd->add_option("--preset", random.preset, "tiny (~0.16M parameters) or 1gb (~0.49B parameters, ~1 GB in f16)")->capture_default_str();
    randomCmd->add_option("--dim", random.dim, "hidden_size")->check(CLI::PositiveNumber);
    randomCmd->add_option("--hidden", random.hidden, "intermediate_size")->check(CLI::PositiveNumber);
    randomCmd->add_option("--layers", random.layers, "num_hidden_layers")->check(CLI::PositiveNumber);
    randomCmd->add_option("--heads", random.heads, "num_attention_heads")->check(CLI::PositiveNumber);
    randomCmd->add_option("--kv-heads", random.kvHeads, "num_key_value_heads")->check(CLI::PositiveNumber);
    randomCmd->add_option("--vocab", random.vocab, "vocab_size")->check(CLI::PositiveNumber);
    randomCmd->add_option("--seq-len", random.seqLen, "max_position_embeddings")->check(CLI::PositiveNumber);
    randomCmd->add_option("--rope-theta", random.theta, "rope_theta")->check(CLI::PositiveNumber);
    randomCmd->add_flag("--tie", random.tie, "Tie the output head to the embedding");
    randomCmd->add_flag("--bias", random.bias, "Biases on the q/k/v projections");
    randomCmd->add_option("--seed", random.seed, "Random seed")->capture_default_str();

    CompressCommands compressCommands;
    addCompressCommands(app, compressCommands);
    StoreCommands storeCommands;
    addStoreCommands(app, storeCommands);
    AnalysisCommands analysisCommands;
    addAnalysisCommands(app, analysisCommands);

    int doctorThreads = 0;
    auto* doctorCmd = app.add_subcommand("doctor", "Check the installation: threads and BLAS speed");
    doctorCmd->add_option("--threads", doctorThreads, "Compute threads (default: one per core)")->check(CLI::Range(1, 1024));

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        if (g.json)
            std::cout << ordered_json{{"error", e.what()}}.dump() << std::endl;
        return kExitUsage;
    }

    const pocket::LogLevel level = g.quiet ? pocket::LogLevel::Warn
                                   : g.logLevel == "debug" ? pocket::LogLevel::Debug
                                   : g.logLevel == "warn"  ? pocket::LogLevel::Warn
                                   : g.logLevel == "error" ? pocket::LogLevel::Error
                                   : g.logLevel == "off"   ? pocket::LogLevel::Off
                                                           : pocket::LogLevel::Info;
    pocket::initLogging("pocketllm-cli", level);
    // On a terminal, a log line first clears the progress line it may land on (ProgressLine).
    if (::isatty(STDERR_FILENO))
        for (const auto& sink : spdlog::default_logger()->sinks())
            if (auto* console = dynamic_cast<spdlog::sinks::stderr_color_sink_mt*>(sink.get()))
                console->set_pattern("\r\x1b[K%^%l%$: %v");
    spdlog::debug("pocketllm-cli {} ({}) started", POCKET_VERSION, POCKET_GIT_REVISION);
    try {
        if (*infoCmd) return runInfo(g, info);
        if (*evalCmd) return runEval(g, eval);
        if (*convertCmd) return runConvert(g, convertModel, write);
        if (*randomCmd) return runMakeRandom(g, random, write);
        if (*doctorCmd) return runDoctor(g, doctorThreads);
        if (const int code = runCompressCommands(g, compressCommands); code >= 0) return code;
        if (const int code = runStoreCommands(g, storeCommands); code >= 0) return code;
        if (const int code = runAnalysisCommands(g, analysisCommands); code >= 0) return code;
    } catch (const std::exception& e) {
        return fail(g, std::string("internal error: ") + e.what(), kExitInternal);
    }
    return kExitUsage;
}

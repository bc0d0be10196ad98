// pocketllm-cli's model commands: info, eval, convert, make-random, tokenize, doctor.
#include "model_commands.h"

#include "compress_commands.h"
#include "store_commands.h"

#include "pocket/support/app_paths.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/gguf_export.h"
#include "pocket/io/tensor_stats.h"
#include "pocket/archive/model_archive.h"
#include "pocket/jobs/eval_job.h"
#include "pocket/io/hf_writer.h"
#include "pocket/model/llama_model.h"
#include "pocket/model/perplexity.h"
#include "pocket/io/text.h"
#include "pocket/io/tokenizer.h"
#include "pocket/version.h"


#include <chrono>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

namespace cli {

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
    return pocket::checkpointFormatName(f);
}

// ---------------------------------------------------------------------------------- info

int runInfo(const Globals& g, const InfoOptions& o)
{
    auto ckpt = openModelOrArchive(o.model);
    if (!ckpt)
        return fail(g, ckpt.error());
    const auto& c = (*ckpt)->config();
    const pocket::StoredTypes stored = pocket::storedTypes(**ckpt);
    const std::map<std::string, std::int64_t>& dtypeCounts = stored.all;

    ordered_json out;
    out["model"] = (*ckpt)->path();
    out["format"] = formatName((*ckpt)->format());
    out["config"] = configJson(c);
    out["parameters"] = c.parameterCount();
    out["bytes"] = (*ckpt)->totalBytes();
    out["dtypes"] = dtypeCounts; // as stored: F16, BF16, Q4_K, ...
    if (!(*ckpt)->fileType().empty())
        out["file_type"] = (*ckpt)->fileType();
    out["bpw_linear"] = stored.linearBitsPerWeight;
    out["bpw_all_in"] = stored.allBitsPerWeight;
    out["tokenizer"] = (*ckpt)->tokenizerPath();
    std::string adapterLine; // an archive with LoRA adapters (format 3)
    if (pocket::isPllmFile(o.model)) {
        auto archive = pocket::Archive::open(o.model, pocket::ContainerReader::Verify::ManifestOnly);
        if (archive && !(*archive)->manifest().adapters.empty()) {
            const auto& adapters = (*archive)->manifest().adapters;
            const pocket::ArchiveBits bits = pocket::accountBits((*archive)->manifest());
            std::set<int> ranks;
            for (const auto& a : adapters) ranks.insert(a.rank);
            out["adapters"] = {{"count", adapters.size()}, {"ranks", ranks}, {"bits", bits.adapterBits}, {"bpw", bits.bpwAdapters()}};
            std::ostringstream line;
            line << std::fixed << std::setprecision(3) << adapters.size() << " LoRA adapters (rank " << *ranks.begin()
                 << (ranks.size() > 1 ? "+" : "") << "): +" << bits.bpwAdapters() << " bits per compressed weight, "
                 << bits.bpwCompressed() << " in all (adapters applied when the model runs, merged when it is exported)";
            adapterLine = line.str();
        }
    }
    std::string tokenizerLine = "(none found beside the model: pass --tokenizer tokenizer.model, tokenizer.json, tokenizer.bin or a .gguf)";
    if (!(*ckpt)->tokenizerPath().empty()) {
        auto tokenizer = pocket::loadTokenizer((*ckpt)->tokenizerPath());
        if (tokenizer) {
            out["tokenizer_kind"] = (*tokenizer)->kind();
            out["tokenizer_vocab"] = (*tokenizer)->vocabSize();
            tokenizerLine = (*ckpt)->tokenizerPath() + " (" + (*tokenizer)->kind() + ", " + std::to_string((*tokenizer)->vocabSize()) + " tokens)";
        } else {
            out["tokenizer_error"] = tokenizer.message();
            tokenizerLine = (*ckpt)->tokenizerPath() + " (unreadable: " + tokenizer.message() + ")";
        }
    }
    ordered_json tensorRows = ordered_json::array();
    ProgressLine progress(!g.quiet);
    const auto start = std::chrono::steady_clock::now();
    std::int64_t nonFinite = 0;
    const auto& infos = (*ckpt)->tensors();
    for (std::size_t i = 0; i < infos.size(); ++i) {
        const auto& t = infos[i];
        ordered_json row{{"name", t.name}, {"dtype", pocket::storedTypeName(t)}, {"shape", t.shape}, {"bytes", t.byteSize}};
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
    text << "\nstored bits  " << std::setprecision(2) << stored.linearBitsPerWeight << " per weight in the linear matrices ("
         << stored.linearMix() << "), " << stored.allBitsPerWeight << " all-in";
    if (!(*ckpt)->fileType().empty())
        text << "; file type " << (*ckpt)->fileType();
    if (!adapterLine.empty())
        text << "\nadapters     " << adapterLine;
    text << "\ntokenizer    " << tokenizerLine << "\n";
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

int runEval(const Globals& g, const EvalOptions& o)
{
    pocket::EvalJobParams params;
    params.modelPath = o.model;
    params.textPath = o.text;
    params.tokenizerPath = o.tokenizer;
    params.eval.ctx = o.ctx;
    params.eval.stride = o.stride;
    const auto scoring = pocket::parseEvalScoring(o.score);
    if (!scoring)
        return fail(g, "--score: '" + o.score + "' is not all or second-half", kExitUsage);
    params.eval.scoring = *scoring;
    params.eval.maxTokens = o.maxTokens;
    params.eval.batch = o.batch;
    params.referencePath = o.reference;
    auto run = runOptions(o.precision, o.memoryBudget);
    if (!run)
        return fail(g, run.error());
    params.run = *run;
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
                     {"peak_rss_mb", peakRssMb()},
                     {"precision", pocket::computePrecisionName(params.run.precision)},
                     {"memory", memoryJson(job->memory)}};
    if (job->runId > 0)
        out["run_id"] = job->runId;
    std::ostringstream t;
    if (r.divergence) {
        const pocket::DivergenceResult& d = *r.divergence;
        out["reference"] = {{"model", job->referencePath},
                            {"perplexity", d.referencePerplexity},
                            {"delta_perplexity", r.perplexity - d.referencePerplexity},
                            {"kl_mean", d.meanKl},
                            {"kl_p90", d.klP90},
                            {"kl_p99", d.klP99},
                            {"kl_p99_9", d.klP999},
                            {"kl_max", d.klMax},
                            {"top1_agreement", d.top1Agreement}};
        t << std::fixed << std::setprecision(4) << "reference    " << job->referencePath << ": perplexity " << d.referencePerplexity << " (change "
          << std::showpos << r.perplexity - d.referencePerplexity << std::noshowpos << ")\n"
          << std::setprecision(5) << "KL           mean " << d.meanKl << " nats/token; p90 " << d.klP90 << ", p99 " << d.klP99 << ", p99.9 "
          << d.klP999 << ", max " << d.klMax << "\n"
          << std::setprecision(2) << "same top-1   " << 100 * d.top1Agreement << "% of " << d.tokens << " tokens\n";
    }
    t << std::fixed << std::setprecision(4) << "perplexity   " << r.perplexity << "\n"
      << "mean NLL     " << r.meanNll << " nats/token\n"
      << "tokens       " << r.tokensScored << " scored in " << r.windows << " windows of ctx " << r.ctx << " (stride " << r.stride << ")\n"
      << std::setprecision(1) << "speed        " << r.tokensPerSecond << " tokens/s over " << r.elapsedSeconds << " s (" << pocket::computeThreads()
      << " threads, batch " << r.batch << "); load " << loadSeconds << " s\n"
      << "peak RSS     " << peakRssMb() << " MiB\n"
      << "weights      " << pocket::describeMemory(job->memory) << " (" << pocket::computePrecisionName(params.run.precision) << ")\n";
    emit(g, out, t.str());
    spdlog::debug("eval {} on {}: ppl {:.4f} over {} tokens", o.model, o.text, r.perplexity, r.tokensScored);
    return kExitOk;
}

// ---------------------------------------------------------------------------------- convert / make-random

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
    if (o.to == "gguf") {
        pocket::GgufExportOptions options;
        options.dtype = w->dtype;
        options.tokenizerPath = o.tokenizer;
        options.overwrite = o.force;
        options.onTensor = w->onTensor;
        if (auto s = pocket::writeGgufModel(**ckpt, o.out, options); !s)
            return fail(g, s.error());
        progress.finish();
        return reportWritten(g, o.out, "converted to", secondsSince(start));
    }
    if (auto s = pocket::convertToHf(**ckpt, o.out, *w); !s)
        return fail(g, s.error());
    progress.finish();
    return reportWritten(g, o.out, "converted to", secondsSince(start));
}


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

// ---------------------------------------------------------------------------------- tokenize

int runTokenize(const Globals& g, const TokenizeOptions& o)
{
    std::string path = o.source;
    if (!pocket::isTokenizerFile(path)) {
        auto ckpt = openModelOrArchive(o.source);
        if (!ckpt)
            return fail(g, ckpt.error());
        path = (*ckpt)->tokenizerPath();
        if (path.empty())
            return fail(g, o.source + ": no tokenizer found with this model", kExitBadInput);
    }
    auto tokenizer = pocket::loadTokenizer(path);
    if (!tokenizer)
        return fail(g, tokenizer.error());
    std::string text = o.string;
    if (!o.text.empty()) {
        auto read = pocket::readTextFile(o.text);
        if (!read)
            return fail(g, read.error());
        text = std::move(*read);
    }
    const auto start = std::chrono::steady_clock::now();
    const std::vector<std::int32_t> ids = (*tokenizer)->encode(text);
    const double seconds = secondsSince(start);
    const bool roundTrip = (*tokenizer)->decode(ids) == text;
    ordered_json out{{"tokenizer", path},    {"kind", (*tokenizer)->kind()}, {"vocab", (*tokenizer)->vocabSize()},
                     {"bos", (*tokenizer)->bosId()}, {"eos", (*tokenizer)->eosId()}, {"count", ids.size()},
                     {"round_trip", roundTrip},     {"seconds", seconds},           {"ids", ids}};
    std::ostringstream t;
    t << path << " (" << (*tokenizer)->kind() << ", " << (*tokenizer)->vocabSize() << " tokens): " << ids.size() << " ids"
      << (roundTrip ? "" : " (decoding does not give the text back)") << "\n";
    for (std::size_t i = 0; i < ids.size() && i < 64; ++i)
        t << (i ? " " : "") << ids[i];
    t << (ids.size() > 64 ? " ...\n" : "\n");
    emit(g, out, t.str());
    return kExitOk;
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

void addModelCommands(CLI::App& app, ModelCommands& c)
{
    c.info = app.add_subcommand("info", "Show a model's architecture, size and tensors");
    c.info->add_option("MODEL", c.infoOptions.model, "HF folder, .safetensors file in one, .gguf file, or llama2.c .bin")->required();
    c.info->add_flag("--tensors", c.infoOptions.tensors, "List every tensor");
    c.info->add_flag("--walk", c.infoOptions.walk, "Read every tensor once, one at a time (checks values, measures read speed)");

    c.eval = app.add_subcommand("eval", "Perplexity of a model on a text file");
    c.eval->add_option("MODEL", c.evalOptions.model, "HF folder, .safetensors file in one, .gguf file, llama2.c .bin, or .pllm archive")->required();
    c.eval->add_option("--text", c.evalOptions.text, "UTF-8 text file")->required();
    c.eval->add_option("--tokenizer", c.evalOptions.tokenizer, "tokenizer.model, tokenizer.json, tokenizer.bin or a .gguf (default: found beside the model or in the GGUF)");
    c.eval->add_option("--ctx", c.evalOptions.ctx, "Tokens per window, BOS included (default: min(2048, max_position_embeddings))")->check(CLI::Range(2, 1 << 20));
    c.eval->add_option("--stride", c.evalOptions.stride, "Text tokens between window starts (default: ctx-1, non-overlapping)")->check(CLI::Range(1, 1 << 20));
    c.eval->add_option("--score", c.evalOptions.score,
                        "all: every text token once; second-half: llama.cpp's llama-perplexity convention (chunks of ctx, BOS first, "
                        "the second half scored)")
        ->capture_default_str()
        ->check(CLI::IsMember({"all", "second-half"}));
    c.eval->add_option("--max-tokens", c.evalOptions.maxTokens, "Score at most this many tokens (default: all)")->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 40));
    c.eval->add_option("--batch", c.evalOptions.batch, "Windows per forward pass (default: automatic)")->check(CLI::Range(1, 4096));
    c.eval->add_option("--threads", c.evalOptions.threads, "Compute threads (default: one per core)")->check(CLI::Range(1, 1024));
    addRunOptions(c.eval, c.evalOptions.precision, c.evalOptions.memoryBudget);
    c.eval->add_option("--reference", c.evalOptions.reference,
                       "The original model (any format) run on the same windows: adds KL(original || model) per token (mean, "
                       "90/99/99.9th percentiles), the share of unchanged top-1 tokens and the perplexity change");

    c.convert = app.add_subcommand("convert", "Convert a checkpoint (llama2.c, GGUF, ...) to a Hugging Face folder or a GGUF file");
    c.convert->add_option("MODEL", c.convertModel, "Model to convert: HF folder, llama2.c .bin, or .gguf")->required();
    c.convert->add_option("--to", c.writeOptions.to, "hf: a Hugging Face folder; gguf: a GGUF file that llama.cpp loads (f32, f16 or bf16)")
        ->capture_default_str()
        ->check(CLI::IsMember({"hf", "gguf"}));
    auto addWriteOptions = [&c](CLI::App* cmd) {
        cmd->add_option("--out", c.writeOptions.out, "Output folder (a .gguf file with convert --to gguf)")->required();
        cmd->add_option("--dtype", c.writeOptions.dtype, "Stored dtype: f32, f16 or bf16")->capture_default_str();
        cmd->add_option("--tokenizer", c.writeOptions.tokenizer, "Tokenizer file to copy into the folder");
        cmd->add_option("--shard-size", c.writeOptions.shardMb, "Split into shards of at most this many MiB (default: one file)")->check(CLI::Range(0.0, 1e9));
        cmd->add_flag("--force", c.writeOptions.force, "Replace an existing output folder");
    };
    addWriteOptions(c.convert);

    c.makeRandom = app.add_subcommand("make-random", "Write a Llama-shaped checkpoint with random weights (tests, benchmarks)");
    addWriteOptions(c.makeRandom);
    c.makeRandom->add_option("--preset", c.randomOptions.preset, "tiny (~0.16M parameters) or 1gb (~0.49B parameters, ~1 GB in f16)")->capture_default_str();
    c.makeRandom->add_option("--dim", c.randomOptions.dim, "hidden_size")->check(CLI::PositiveNumber);
    c.makeRandom->add_option("--hidden", c.randomOptions.hidden, "intermediate_size")->check(CLI::PositiveNumber);
    c.makeRandom->add_option("--layers", c.randomOptions.layers, "num_hidden_layers")->check(CLI::PositiveNumber);
    c.makeRandom->add_option("--heads", c.randomOptions.heads, "num_attention_heads")->check(CLI::PositiveNumber);
    c.makeRandom->add_option("--kv-heads", c.randomOptions.kvHeads, "num_key_value_heads")->check(CLI::PositiveNumber);
    c.makeRandom->add_option("--vocab", c.randomOptions.vocab, "vocab_size")->check(CLI::PositiveNumber);
    c.makeRandom->add_option("--seq-len", c.randomOptions.seqLen, "max_position_embeddings")->check(CLI::PositiveNumber);
    c.makeRandom->add_option("--rope-theta", c.randomOptions.theta, "rope_theta")->check(CLI::PositiveNumber);
    c.makeRandom->add_flag("--tie", c.randomOptions.tie, "Tie the output head to the embedding");
    c.makeRandom->add_flag("--bias", c.randomOptions.bias, "Biases on the q/k/v projections");
    c.makeRandom->add_option("--seed", c.randomOptions.seed, "Random seed")->capture_default_str();

    c.tokenize = app.add_subcommand("tokenize", "Token ids of a text with a tokenizer file or a model's tokenizer");
    c.tokenize->add_option("TOKENIZER", c.tokenizeOptions.source, "tokenizer.model, tokenizer.bin, tokenizer.json, a .gguf, or a model")->required();
    auto* tokenizeText = c.tokenize->add_option("--text", c.tokenizeOptions.text, "UTF-8 text file");
    c.tokenize->add_option("--string", c.tokenizeOptions.string, "A string")->excludes(tokenizeText);

    c.doctor = app.add_subcommand("doctor", "Check the installation: threads and BLAS speed");
    c.doctor->add_option("--threads", c.doctorThreads, "Compute threads (default: one per core)")->check(CLI::Range(1, 1024));

}

int runModelCommands(const Globals& g, const ModelCommands& c)
{
    if (*c.info) return runInfo(g, c.infoOptions);
    if (*c.eval) return runEval(g, c.evalOptions);
    if (*c.convert) return runConvert(g, c.convertModel, c.writeOptions);
    if (*c.makeRandom) return runMakeRandom(g, c.randomOptions, c.writeOptions);
    if (*c.doctor) return runDoctor(g, c.doctorThreads);
    if (*c.tokenize) return runTokenize(g, c.tokenizeOptions);
    return -1;
}

} // namespace cli

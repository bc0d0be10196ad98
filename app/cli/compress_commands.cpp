#include "compress_commands.h"
#include "cluster_launch.h"
#include "store_commands.h"

#include "pocket/jobs/eval_job.h"
#include "pocket/analysis/inspect.h"

#include "pocket/archive/archive_gguf.h"
#include "pocket/archive/archive_gptq.h"
#include "pocket/archive/lossless.h"
#include "pocket/archive/model_archive.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/io/hf_writer.h"
#include "pocket/model/llama_model.h"
#include "pocket/methods/method_registry.h"
#include "pocket/io/model_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <iomanip>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

namespace cli {

// The lossless stage's options from --entropy, --coder and --min-saving (percent).
pocket::Result<pocket::EntropyOptions> entropyOptions(const std::string& mode, const std::string& coder, double minSavingPercent)
{
    pocket::EntropyOptions options;
    auto m = pocket::parseEntropyMode(mode);
    if (!m)
        return m.error();
    auto c = pocket::parseEntropyCoder(coder);
    if (!c)
        return c.error();
    options.mode = *m;
    options.coder = *c;
    options.minSaving = minSavingPercent / 100;
    return options;
}

// --entropy, --coder and --min-saving, the same on compress and repack.
void addEntropyOptions(CLI::App* command, std::string& mode, std::string& coder, double& minSaving)
{
    command->add_option("--entropy", mode, "Lossless stage: none (codes packed at fixed width), auto (entropy-code a code stream where it saves at least --min-saving), on (every code stream)")
        ->capture_default_str()
        ->check(CLI::IsMember({"none", "auto", "on"}));
    command->add_option("--min-saving", minSaving, "Percent of a stream's packed size that --entropy auto must save")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 100.0));
    command->add_option("--coder", coder, "Coder of coded streams: fastest (zstd where within 1% of rANS's size, else rANS), rans (smallest), zstd (fastest to decode)")
        ->capture_default_str()
        ->check(CLI::IsMember({"fastest", "rans", "zstd"}));
}


pocket::MethodRegistry& registry()
{
    static pocket::MethodRegistry instance;
    static const bool loaded = [] {
        instance.loadDefaultFolders();
        return true;
    }();
    (void)loaded;
    return instance;
}

namespace {

ordered_json bitsJson(const pocket::BitCounts& b)
{
    return {{"index", b.indexBits}, {"codebook", b.codebookBits}, {"decoder", b.decoderBits}, {"scale", b.scaleBits}};
}

ordered_json archiveBitsJson(const pocket::ArchiveBits& bits)
{
    return {{"bpw_all_in", bits.bpwAllIn()},
            {"bpw_compressed", bits.bpwCompressed()},
            {"ratio_fp16", bits.ratioFp16()},
            {"ratio_fp32", bits.ratioFp32()},
            {"weights_total", bits.totalWeights},
            {"weights_compressed", bits.compressedWeights},
            {"bits", {{"index", bits.compressed.indexBits},
                      {"codebook", bits.compressed.codebookBits},
                      {"decoder", bits.compressed.decoderBits},
                      {"scale", bits.compressed.scaleBits},
                      {"uncompressed", bits.uncompressedBits},
                      {"total", bits.totalBits()}}}};
}

// Per-matrix results, each with its bits per weight (own bits plus its share of the group's).
ordered_json matricesJson(const std::vector<pocket::MatrixReport>& matrices)
{
    ordered_json out = ordered_json::array();
    for (const pocket::MatrixReport& m : matrices)
        out.push_back({{"name", m.name},
                       {"group", m.groupId},
                       {"rows", m.rows},
                       {"cols", m.cols},
                       {"mse", m.mse},
                       {"snr_db", m.snrDb},
                       {"bpw", m.bpw},
                       {"bits", bitsJson(m.bits)}});
    return out;
}

std::string bitsSummaryText(const pocket::ArchiveBits& bits)
{
    std::ostringstream t;
    t << std::fixed << std::setprecision(3) << "bits/weight  " << bits.bpwCompressed() << " over compressed matrices (bpw_c), "
      << bits.bpwAllIn() << " all-in\n"
      << std::setprecision(2) << "ratio        " << bits.ratioFp16() << "x vs FP16 (" << bits.ratioFp32() << "x vs FP32, the paper's convention)\n"
      << "bits         index " << bits.compressed.indexBits << ", codebook " << bits.compressed.codebookBits << ", decoder "
      << bits.compressed.decoderBits << ", scale " << bits.compressed.scaleBits << ", uncompressed " << bits.uncompressedBits << "\n"
      << "weights      " << bits.compressedWeights << " compressed of " << bits.totalWeights << "\n";
    return t.str();
}

pocket::Result<pocket::LayerSelection> selectionFrom(const CompressOptions& o)
{
    auto selection = pocket::LayerSelection::preset(o.preset);
    if (!selection)
        return selection.error();
    if (!o.blocks.empty()) {
        auto blocks = pocket::LayerSelection::parseBlocks(o.blocks);
        if (!blocks)
            return blocks.error();
        selection->blocks = *blocks;
    }
    if (!o.types.empty()) {
        auto types = pocket::LayerSelection::parseTypes(o.types);
        if (!types)
            return types.error();
        selection->types = *types;
    }
    selection->include = o.include;
    selection->exclude = o.exclude;
    if (o.skipFirst >= 0)
        selection->skipFirst = o.skipFirst;
    if (o.skipLast >= 0)
        selection->skipLast = o.skipLast;
    return selection;
}


// The plan's warnings (above 16 bits per weight, an archive larger than the model) on stderr, with
// settings that fit the model when there are any; returns the warnings for the JSON output.
std::vector<std::string> warnAboutPlan(const pocket::CompressJobParams& params, const pocket::Checkpoint& checkpoint,
                                       pocket::CompressionMethod& method, const pocket::JobPlan& plan)
{
    const pocket::PlanCheck check = pocket::checkPlan(plan, checkpoint);
    for (const std::string& w : check.warnings)
        std::cerr << "warning: " << w << "\n";
    if (!check.warnings.empty()) {
        auto suggestion = pocket::suggestSettings(params, checkpoint, method, &registry());
        if (suggestion && suggestion->changed) {
            std::cerr << "suggested:";
            for (const std::string& c : suggestion->changes)
                std::cerr << " --set " << c;
            std::cerr << "   (" << suggestion->reason << ")\n";
        }
    }
    return check.warnings;
}

// The finished run: JSON (--json) or a few lines of text.
void printCompressResult(const Globals& g, const CompressOptions& o, const pocket::CompressJobResult& r, const std::vector<std::string>& warnings)
{
    ordered_json out{{"archive", r.archivePath}, {"model", o.model}, {"method", o.method}};
    if (!r.groups.empty())
        out["params"] = ordered_json::parse(r.groups.front().paramsJson);
    const ordered_json bitsObject = archiveBitsJson(r.bits);
    for (const auto& [key, value] : bitsObject.items())
        out[key] = value;
    out["archive_bytes"] = r.archiveBytes;
    out["groups"] = r.groups.size();
    out["groups_resumed"] = r.groupsResumed;
    out["matrices"] = matricesJson(r.matrices);
    out["group_seconds"] = r.groupSeconds; // plan order, like "groups"' ids in the matrices
    out["seconds"] = r.seconds;
    out["threads"] = pocket::computeThreads();
    out["ranks"] = r.ranks;
    out["peak_rss_mb"] = peakRssMb();
    ordered_json phases = ordered_json::array();
    for (const pocket::PhaseTime& ph : r.phases)
        phases.push_back({{"phase", ph.name}, {"seconds", ph.seconds}, {"count", ph.count}, {"peak_rss_mb", ph.peakRssMb}});
    out["phases"] = phases; // rank 0's; phases nest ("compress" holds the methods' own)
    out["warnings"] = warnings;
    if (r.runId > 0)
        out["run_id"] = r.runId;

    double worstSnr = 1e9, meanSnr = 0;
    std::size_t count = 0;
    for (const pocket::MatrixReport& m : r.matrices) {
        worstSnr = std::min(worstSnr, m.snrDb);
        meanSnr += m.snrDb;
        ++count;
    }
    std::ostringstream t;
    t << "archive      " << r.archivePath << " (" << r.archiveBytes << " bytes)\n"
      << "matrices     " << count << " in " << r.groups.size() << " group(s)";
    if (r.groupsResumed > 0)
        t << ", " << r.groupsResumed << " group(s) resumed from the work folder";
    t << "\n" << std::fixed << std::setprecision(2) << "SNR          mean " << (count ? meanSnr / count : 0) << " dB, worst " << worstSnr << " dB\n"
      << bitsSummaryText(r.bits) << std::setprecision(1) << "time         " << r.seconds << " s (" << pocket::computeThreads()
      << " threads" << (r.ranks > 1 ? " per rank, " + std::to_string(r.ranks) + " ranks" : std::string()) << "), peak RSS " << peakRssMb()
      << " MiB\n";
    t << "phases      ";
    for (const pocket::PhaseTime& ph : r.phases)
        t << " " << ph.name << " " << ph.seconds << " s";
    t << "\n";
    emit(g, out, t.str());
}

int runCompress(const Globals& g, const CompressOptions& o)
{
    auto selection = selectionFrom(o);
    if (!selection)
        return fail(g, selection.error());
    const auto keep = pocket::parseFloatDTypeOption(o.keepDtype);
    if (!keep)
        return fail(g, "--keep-dtype: '" + o.keepDtype + "' is not f16, bf16 or f32", kExitUsage);
    pocket::CompressJobParams params;
    params.modelPath = o.model;
    params.methodId = o.method;
    params.settings = o.settings;
    params.selection = *selection;
    params.keepDtype = *keep;
    params.tokenizerPath = o.tokenizer;
    params.outPath = o.out;
    params.workDir = o.workDir;
    params.resume = o.resume;
    params.keepWorkDir = o.keepWork;
    params.calibration = o.calibration;
    const auto entropy = entropyOptions(o.entropy, o.coder, o.minSaving);
    if (!entropy)
        return fail(g, entropy.error());
    params.entropy = *entropy;

    // A distributed run: every rank runs this command; rank 0 goes on below, the others work for it.
    ClusterRole role = joinCluster(g, o.mpi, o.threads, [&](pocket::ClusterChannel& c) { return pocket::runCompressWorker(params, registry(), c); });
    if (role.exitCode)
        return *role.exitCode;
    const ClusterStop stopWorkers{role.channel.get()};
    params.cluster = role.channel.get();

    std::vector<std::string> warnings;
    { // the plan up front: a dry run prints it; a run hears its warnings before it starts
        auto ckpt = pocket::openCheckpoint(o.model);
        if (!ckpt)
            return fail(g, ckpt.error());
        auto method = registry().find(o.method);
        if (!method)
            return fail(g, method.error());
        auto plan = pocket::planCompressJob(params, **ckpt, **method, &registry());
        if (!plan)
            return fail(g, plan.error());
        warnings = warnAboutPlan(params, **ckpt, **method, *plan);
        if (o.dryRun) {
            ordered_json out = archiveBitsJson(plan->estimatedBits);
            out["groups"] = plan->groupIds;
            out["warnings"] = warnings;
            emit(g, out, "plan: " + std::to_string(plan->groups.size()) + " group(s)\n" + bitsSummaryText(plan->estimatedBits));
            return kExitOk;
        }
    }

    // The selection as given; the store replaces it with the archive's resolved one on success.
    params.requestedSelectionJson = ordered_json{{"preset", o.preset}, {"blocks", o.blocks}, {"types", o.types}, {"include", o.include},
                                                 {"exclude", o.exclude}, {"skip_first", o.skipFirst}, {"skip_last", o.skipLast},
                                                 {"keep_dtype", o.keepDtype}}
                                        .dump();
    ProgressLine progress(!g.quiet);
    const pocket::RecorderOptions recording = recorderOptions(g);
    auto result = pocket::runCompressJob(params, registry(), &recording, [&](const pocket::JobProgress& p) {
        char line[200];
        if (p.phase == pocket::JobProgress::Phase::Writing) {
            progress.show("writing the archive");
            return true;
        }
        const auto& t = p.train;
        char snr[32] = ""; // unknown until the method reports it
        if (std::isfinite(t.snrDb))
            std::snprintf(snr, sizeof snr, "  SNR %.1f dB", t.snrDb);
        char ranks[64] = ""; // a distributed run: whose step this is, and the groups done by all
        if (p.ranks > 1)
            std::snprintf(ranks, sizeof ranks, " [rank %d of %d, %d done]", p.rank, p.ranks, p.groupsDone);
        std::snprintf(line, sizeof line, "group %d/%d%s  epoch %d/%d  loss %.3g%s  used %.0f%%  ETA %s", p.groupIndex + 1, p.groupCount,
                      ranks, t.epoch, t.epochs, t.loss, snr, 100 * t.codebookUsage, formatDuration(p.etaSeconds).c_str());
        progress.show(line);
        return true;
    });
    progress.finish();
    if (!result)
        return fail(g, result.error());
    printCompressResult(g, o, *result, warnings);
    return kExitOk;
}

// inspect --matrix: core's inspectMatrix as JSON (the figures' data) or a few lines of text.
int runInspectMatrix(const Globals& g, const ArchiveOptions& o)
{
    std::unique_ptr<pocket::Checkpoint> original;
    if (!o.original.empty()) {
        auto opened = pocket::openCheckpoint(o.original);
        if (!opened)
            return fail(g, opened.error());
        original = std::move(*opened);
    }
    auto r = pocket::inspectMatrix(o.archive, o.matrix, original.get(), registry());
    if (!r)
        return fail(g, r.error());
    ordered_json out{{"archive", o.archive}, {"matrix", r->name}, {"method", r->methodId}, {"group", r->groupId}, {"rows", r->rows}, {"cols", r->cols}};
    std::ostringstream t;
    t << std::fixed;
    t << r->name << " [" << r->rows << " x " << r->cols << "], " << r->methodId << ", group " << r->groupId << "\n";
    out["histogram"] = {{"lo", r->histogram.lo}, {"hi", r->histogram.hi}, {"original", r->histogram.original}, {"decoded", r->histogram.decoded}};
    if (r->hasOriginal) {
        out["mse"] = r->mse;
        out["snr_db"] = r->snrDb;
        out["error_map"] = {{"rows", r->error.rows}, {"cols", r->error.cols}, {"rows_per_cell", r->error.rowsPerCell},
                            {"cols_per_cell", r->error.colsPerCell}, {"mean", r->error.mean}, {"rms", r->error.rms}};
        const float worst = r->error.rms.empty() ? 0 : *std::max_element(r->error.rms.begin(), r->error.rms.end());
        t << "error        MSE " << std::defaultfloat << std::setprecision(4) << r->mse << ", SNR " << std::fixed << std::setprecision(2)
          << r->snrDb << " dB; worst cell RMS " << std::defaultfloat << std::setprecision(4) << worst << std::fixed << " (cells of " << r->error.rowsPerCell << " x " << r->error.colsPerCell << ")\n";
    }
    if (r->codebook) {
        const pocket::CodebookView& v = *r->codebook;
        out["codebook"] = {{"d", v.d}, {"dim", v.dim}, {"codewords", v.codewords}, {"dead", v.dead}, {"index_perplexity", v.indexPerplexity},
                           {"pca", v.pca}, {"explained", {v.explained[0], v.explained[1]}}, {"axes", v.axes}, {"center", v.center},
                           {"usage", v.usage}, {"codewords_xy", v.codebook}, {"points_xy", v.points}};
        t << "codebook     K " << v.codewords << " of d " << v.d << ": " << v.dead << " dead for this matrix, index perplexity " << std::setprecision(1)
          << v.indexPerplexity << "; " << (v.pca ? "principal axes carry " : "axes are the coordinates: ") << std::setprecision(0)
          << 100 * v.explained[0] << "% and " << 100 * v.explained[1] << "% of the variance\n";
        if (!v.decodedCodewords.empty())
            out["codebook"]["decoded_xy"] = v.decodedCodewords; // NaN for unused codewords
        if (!v.tileMean.empty()) {
            out["rln_tiles"] = {{"group", v.rlnGroup}, {"mean", v.tileMean}, {"std", v.tileStd}};
            const auto [lo, hi] = std::minmax_element(v.tileStd.begin(), v.tileStd.end());
            t << "RLN tiles    " << v.tileStd.size() << " tiles of " << v.rlnGroup << " sub-vectors; RLN3 input std " << std::setprecision(3) << *lo
              << " .. " << *hi << "\n";
        }
    }
    if (!r->note.empty()) {
        out["note"] = r->note;
        t << "note         " << r->note << "\n";
    }
    emit(g, out, t.str());
    return kExitOk;
}

int runInspect(const Globals& g, const ArchiveOptions& o)
{
    if (!o.matrix.empty())
        return runInspectMatrix(g, o);
    if (!o.original.empty())
        return fail(g, "--original goes with --matrix", kExitUsage);
    auto archive = pocket::Archive::open(o.archive);
    if (!archive)
        return fail(g, archive.error());
    const pocket::ArchiveManifest& m = (*archive)->manifest();
    const pocket::ContainerReader& c = (*archive)->container();
    const pocket::ArchiveBits bits = pocket::accountBits(m);
    std::vector<pocket::GroupPayload> groups;
    for (const auto& group : m.groups)
        groups.push_back(group.payload);

    ordered_json sections = ordered_json::array();
    for (const auto& s : c.sections())
        sections.push_back({{"name", s.name}, {"offset", s.offset}, {"size", s.size}});
    ordered_json groupsJson = ordered_json::array();
    for (const auto& gp : groups)
        groupsJson.push_back({{"id", gp.groupId},
                              {"method", gp.methodId},
                              {"method_version", gp.methodVersion},
                              {"matrices", gp.matrices.size()},
                              {"params", ordered_json::parse(gp.paramsJson, nullptr, false)},
                              {"shared_bits", bitsJson(gp.sharedBits)}});
    ordered_json out{{"archive", o.archive},
                     {"format_version", c.formatVersion()},
                     {"file_bytes", c.fileSize()},
                     {"manifest_bytes", c.manifestBytes()},
                     {"checksums", "ok"},
                     {"source", m.sourceName},
                     {"creator", m.creator},
                     {"model", ordered_json::parse(pocket::hfConfigJson(m.config))},
                     {"tokenizer", m.tokenizerKind.empty() ? ordered_json() : ordered_json(m.tokenizerKind)},
                     {"uncompressed_tensors", m.tensors.size()}};
    const ordered_json bitsObject = archiveBitsJson(bits);
    for (const auto& [key, value] : bitsObject.items())
        out[key] = value;
    out["groups"] = groupsJson;
    out["matrices"] = matricesJson(pocket::matrixReports(groups));
    out["sections"] = sections;
    ordered_json streams = ordered_json::array();
    std::uint64_t fixedBits = 0, storedBits = 0, codedStreams = 0;
    double entropyBits = 0;
    bool entropyKnown = true;
    for (const auto& group : m.groups)
        for (const pocket::SectionCodeReport& r : pocket::sectionCodeReports(group)) {
            fixedBits += r.fixedBits;
            storedBits += r.storedBits;
            codedStreams += r.codec != "none";
            entropyKnown = entropyKnown && r.entropyBits >= 0;
            entropyBits += std::max(0.0, r.entropyBits);
            streams.push_back({{"group", group.payload.groupId}, {"section", r.section}, {"codec", r.codec}, {"symbol_bits", r.symbolBits},
                               {"symbols", r.symbols}, {"fixed_bits", r.fixedBits}, {"stored_bits", r.storedBits},
                               {"entropy_bits", r.entropyBits >= 0 ? ordered_json(r.entropyBits) : ordered_json()}});
        }
    out["code_streams"] = {{"streams", streams.size()}, {"coded", codedStreams}, {"fixed_bits", fixedBits}, {"stored_bits", storedBits},
                           {"entropy_bits", entropyKnown ? ordered_json(entropyBits) : ordered_json()}};
    if (o.streams)
        out["streams"] = streams;

    std::ostringstream t;
    t << "archive      " << o.archive << " (format " << c.formatVersion() << ", " << c.fileSize() << " bytes, checksums ok)\n"
      << "model        " << m.config.architecture << ", " << m.config.numLayers << " blocks, hidden " << m.config.hiddenSize << ", from "
      << m.sourceName << "\n"
      << "tokenizer    " << (m.tokenizerKind.empty() ? "none embedded" : m.tokenizerKind) << "\n"
      << "groups       " << groups.size();
    std::map<std::string, int> perSetting; // "method params" -> groups
    for (const auto& gr : groups)
        ++perSetting[gr.methodId + " " + gr.paramsJson];
    if (perSetting.size() == 1)
        t << " (" << perSetting.begin()->first << ")";
    else if (perSetting.size() > 1) { // a plan: groups per method and setting
        t << ":";
        for (const auto& [setting, count] : perSetting)
            t << "\n  " << count << " x " << setting;
    }
    t << "\nuncompressed " << m.tensors.size() << " tensor(s)\n" << bitsSummaryText(bits);
    if (!streams.empty()) {
        t << "code streams " << streams.size() << ", " << codedStreams << " entropy-coded: " << std::fixed << std::setprecision(1)
          << fixedBits / 8192.0 << " KiB at fixed width, " << storedBits / 8192.0 << " KiB stored";
        if (entropyKnown)
            t << ", entropy " << entropyBits / 8192.0 << " KiB";
        t << " (" << std::setprecision(3) << (storedBits ? static_cast<double>(fixedBits) / static_cast<double>(storedBits) : 0.0) << "x)\n";
        t.unsetf(std::ios::floatfield);
    }
    if (o.streams) {
        t << std::fixed;
        for (const auto& row : streams)
            t << "  " << std::left << std::setw(56) << row["section"].get<std::string>()
              << std::right << " " << std::setw(4) << row["codec"].get<std::string>() << std::setw(3) << row["symbol_bits"].get<int>() << "-bit"
              << std::setprecision(3) << std::setw(8) << row["stored_bits"].get<double>() / std::max<double>(1, row["symbols"].get<double>())
              << " stored" << std::setw(8)
              << (row["entropy_bits"].is_null() ? 0.0 : row["entropy_bits"].get<double>() / std::max<double>(1, row["symbols"].get<double>()))
              << " entropy (bits per code)\n";
    }
    if (o.matrices) {
        t << std::fixed;
        for (const auto& row : out["matrices"])
            t << "  " << std::left << std::setw(48) << row["name"].get<std::string>() << std::right << std::setprecision(3) << std::setw(8)
              << row["bpw"].get<double>() << " bpw  " << std::setprecision(2) << std::setw(7) << row["snr_db"].get<double>() << " dB\n";
    }
    emit(g, out, t.str());
    return kExitOk;
}

int runRepack(const Globals& g, const ArchiveOptions& o)
{
    const auto options = entropyOptions(o.entropy, o.coder, o.minSaving);
    if (!options)
        return fail(g, options.error());
    std::error_code ec;
    if (o.out != o.archive && std::filesystem::exists(o.out, ec) && !o.force)
        return fail(g, o.out + ": exists (use --force to replace it)", kExitUsage);
    const auto start = std::chrono::steady_clock::now();
    if (auto s = pocket::repackArchive(o.archive, o.out, *options); !s)
        return fail(g, s.error());
    auto archive = pocket::Archive::open(o.out);
    if (!archive)
        return fail(g, archive.error());
    const pocket::ArchiveBits bits = pocket::accountBits((*archive)->manifest());
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ordered_json out{{"archive", o.out}, {"entropy", o.entropy}, {"file_bytes", (*archive)->container().fileSize()}, {"seconds", seconds}};
    const ordered_json bitsObject = archiveBitsJson(bits);
    for (const auto& [key, value] : bitsObject.items())
        out[key] = value;
    std::ostringstream t;
    t << "archive      " << o.out << " (format " << (*archive)->container().formatVersion() << ", " << (*archive)->container().fileSize()
      << " bytes, entropy " << o.entropy << " (" << o.coder << "), " << std::fixed << std::setprecision(1) << seconds << " s)\n"
      << bitsSummaryText(bits);
    emit(g, out, t.str());
    return kExitOk;
}

int runDecompress(const Globals& g, const ArchiveOptions& o)
{
    const auto start = std::chrono::steady_clock::now();
    const auto dtype = pocket::parseFloatDTypeOption(o.dtype);
    if (!dtype)
        return fail(g, "--dtype: '" + o.dtype + "' is not f32, f16 or bf16", kExitUsage);
    pocket::HfWriteOptions options;
    options.dtype = *dtype;
    options.overwrite = o.force;
    options.maxShardBytes = static_cast<std::uint64_t>(o.shardMb * 1024 * 1024);
    ProgressLine progress(!g.quiet);
    options.onTensor = [&](int done, int total) {
        progress.show("decompressing " + std::to_string(done) + "/" + std::to_string(total));
        return true;
    };
    auto status = pocket::decompressArchive(o.archive, registry(), o.out, options);
    progress.finish();
    if (!status)
        return fail(g, status.error());
    ordered_json out{{"archive", o.archive}, {"out", o.out}, {"dtype", o.dtype}, {"seconds", secondsSince(start)}, {"peak_rss_mb", peakRssMb()}};
    emit(g, out, "wrote " + o.out + "\n");
    return kExitOk;
}

int runExportGptq(const Globals& g, const ExportOptions& o, std::chrono::steady_clock::time_point start)
{
    if (!pocket::isPllmFile(o.source))
        return fail(g, o.source + ": --format gptq writes a .pllm archive's rtn/gptq codes; compress the model first (--set zero=int)", kExitUsage);
    pocket::GptqExportOptions options;
    options.overwrite = o.force;
    ProgressLine progress(!g.quiet);
    options.onTensor = [&](int done, int total) {
        progress.show("exporting " + std::to_string(done) + "/" + std::to_string(total));
        return true;
    };
    auto report = pocket::exportGptq(o.source, o.out, registry(), options);
    progress.finish();
    if (!report)
        return fail(g, report.error());
    const double seconds = secondsSince(start);
    ordered_json out{{"source", o.source}, {"out", o.out}, {"format", "gptq"}, {"bits", report->bits}, {"group_size", report->groupSize},
                     {"quantized", report->quantized}, {"bytes", report->bytes}, {"bpw_linear", report->bpwLinear},
                     {"seconds", seconds}, {"peak_rss_mb", peakRssMb()}};
    std::ostringstream t;
    t << "wrote " << o.out << " (GPTQ format, " << report->bits << "-bit, group " << report->groupSize << ") in " << std::fixed
      << std::setprecision(1) << seconds << " s\n"
      << "quantised  " << report->quantized << " matrices as qweight/qzeros/scales/g_idx (codes copied), "
      << std::setprecision(3) << report->bpwLinear << " bits per weight with their scales, zeros and g_idx\n";
    emit(g, out, t.str());
    return kExitOk;
}

int runExportAqlm(const Globals& g, const ExportOptions& o, std::chrono::steady_clock::time_point start)
{
    if (!pocket::isPllmFile(o.source))
        return fail(g, o.source + ": --format aqlm writes a .pllm archive's vq codes; compress the model with --method vq first", kExitUsage);
    pocket::GptqExportOptions options;
    options.overwrite = o.force;
    auto report = pocket::exportAqlm(o.source, o.out, registry(), options);
    if (!report)
        return fail(g, report.error());
    const double seconds = secondsSince(start);
    ordered_json out{{"source", o.source}, {"out", o.out}, {"format", "aqlm"}, {"num_codebooks", report->numCodebooks}, {"nbits_per_codebook", report->nbits},
                     {"in_group_size", report->inGroupSize}, {"quantized", report->quantized},
                     {"shared_codebooks_copied", report->sharedCodebooksCopied}, {"bytes", report->bytes},
                     {"bpw_linear", report->bpwLinear}, {"seconds", seconds}, {"peak_rss_mb", peakRssMb()}};
    std::ostringstream t;
    t << "wrote " << o.out << " (AQLM format, " << report->numCodebooks << "x" << report->nbits << " bits, in_group_size " << report->inGroupSize << ") in " << std::fixed
      << std::setprecision(1) << seconds << " s\n"
      << "quantised  " << report->quantized << " matrices as codes/codebooks/scales (codes copied), " << std::setprecision(3)
      << report->bpwLinear << " bits per weight with each matrix's own codebook\n";
    if (report->sharedCodebooksCopied)
        t << "note       the archive shares codebooks between matrices; AQLM has one a matrix, so each got a copy\n";
    emit(g, out, t.str());
    return kExitOk;
}

std::string fixedSci(double v)
{
    std::ostringstream o;
    o << std::scientific << std::setprecision(2) << v;
    return o.str();
}

// export SOURCE --format gguf|gptq|aqlm|hf: a GGUF that keeps rtn/gptq codes where a ggml block type fits,
// or (hf) the decoded Hugging Face folder.
int runExport(const Globals& g, const ExportOptions& o)
{
    const auto start = std::chrono::steady_clock::now();
    if (o.format == "hf") {
        if (!pocket::isPllmFile(o.source))
            return fail(g, o.source + ": --format hf decodes a .pllm archive; convert a model with `convert`", kExitUsage);
        ArchiveOptions a;
        a.archive = o.source;
        a.out = o.out;
        a.force = o.force;
        return runDecompress(g, a);
    }
    if (o.format == "gptq")
        return runExportGptq(g, o, start);
    if (o.format == "aqlm")
        return runExportAqlm(g, o, start);
    const auto type = [](const std::string& s) -> std::optional<pocket::GgmlType> {
        if (s == "f16") return pocket::GgmlType::F16;
        if (s == "bf16") return pocket::GgmlType::BF16;
        if (s == "f32") return pocket::GgmlType::F32;
        if (s == "q8_0") return pocket::GgmlType::Q8_0;
        return std::nullopt;
    };
    pocket::ArchiveGgufOptions options;
    const auto fallback = type(o.fallback), embedding = type(o.embedding);
    if (!fallback)
        return fail(g, "--fallback: '" + o.fallback + "' is not f16, bf16, q8_0 or f32", kExitUsage);
    if (!embedding)
        return fail(g, "--embedding: '" + o.embedding + "' is not f16, bf16, q8_0 or f32", kExitUsage);
    options.fallback = *fallback;
    options.embedding = *embedding;
    options.exact = !o.noExact;
    options.overwrite = o.force;
    ProgressLine progress(!g.quiet);
    options.onTensor = [&](int done, int total) {
        progress.show("exporting " + std::to_string(done) + "/" + std::to_string(total));
        return true;
    };
    auto report = pocket::exportGguf(o.source, o.out, registry(), options);
    progress.finish();
    if (!report)
        return fail(g, report.error());
    ordered_json tensors = ordered_json::array();
    std::map<std::string, int> byType, decodedWhy;
    double worst = 0;
    int stored = 0;
    for (const auto& t : report->tensors) {
        tensors.push_back({{"name", t.name}, {"type", t.type}, {"how", t.how}, {"method", t.method}, {"reason", t.reason},
                           {"max_deviation", t.maxDeviation}, {"weights", t.weights}, {"bytes", t.bytes}});
        if (t.how == "exact") {
            ++byType[t.type];
            worst = std::max(worst, t.maxDeviation);
        } else if (t.how == "decoded") {
            ++decodedWhy[t.reason];
        } else {
            ++stored;
        }
    }
    const double seconds = secondsSince(start);
    ordered_json out{{"source", o.source}, {"out", o.out}, {"format", "gguf"}, {"bytes", report->fileBytes}, {"exact", report->exact},
                     {"decoded", report->decoded}, {"max_deviation", worst}, {"bpw_linear", report->bpwLinear},
                     {"bpw_all_in", report->bpwAllIn}, {"archive_bpw_c", report->archiveBpwLinear}, {"seconds", seconds},
                     {"peak_rss_mb", peakRssMb()}, {"tensors", tensors}};
    std::ostringstream t;
    t << "wrote " << o.out << " (GGUF, " << std::fixed << std::setprecision(2) << static_cast<double>(report->fileBytes) / (1024.0 * 1024.0)
      << " MiB) in " << std::setprecision(1) << seconds << " s\n";
    t << "exact      " << report->exact << " matri" << (report->exact == 1 ? "x" : "ces") << " re-encoded";
    for (const auto& [name, n] : byType)
        t << ", " << n << " as " << name;
    if (report->exact > 0)
        t << " (codes copied; largest deviation from the archive's fp16-rounded weights " << std::scientific << std::setprecision(2) << worst
          << std::fixed << ")";
    t << "\n";
    if (report->decoded > 0) {
        t << "decoded    " << report->decoded << " compressed matri" << (report->decoded == 1 ? "x" : "ces") << " written as " << o.fallback << ":";
        for (const auto& [why, n] : decodedWhy)
            t << "\n             " << n << ": " << why;
        t << "\n";
    }
    t << "stored     " << stored << " other tensor(s): embedding/head " << o.embedding << ", norms and biases F32, unselected matrices "
      << o.fallback << "\n";
    t << "bits       " << std::setprecision(3) << report->bpwLinear << " per weight over the linear matrices in the file";
    if (report->archiveBpwLinear > 0)
        t << " (the archive: " << report->archiveBpwLinear << " over its compressed matrices)";
    t << ", " << report->bpwAllIn << " all-in\n";
    if (o.tensors)
        for (const auto& x : report->tensors)
            t << "  " << std::left << std::setw(48) << x.name << std::setw(7) << x.type << std::setw(8) << x.how
              << (x.how == "exact" ? "codes copied, largest deviation " + fixedSci(x.maxDeviation) : x.reason) << "\n";
    emit(g, out, t.str());
    return kExitOk;
}

const char* kindName(pocket::ParamKind kind)
{
    switch (kind) {
    case pocket::ParamKind::Int: return "int";
    case pocket::ParamKind::Float: return "float";
    case pocket::ParamKind::Choice: return "choice";
    case pocket::ParamKind::Bool: return "bool";
    }
    return "?";
}

int runMethods(const Globals& g)
{
    ordered_json list = ordered_json::array();
    std::ostringstream t;
    for (const pocket::PluginRecord& record : registry().records()) {
        ordered_json entry{{"id", record.id}, {"name", record.displayName}, {"version", record.version}, {"path", record.path},
                           {"loaded", record.loaded}, {"enabled", record.enabled}};
        if (!record.loaded) {
            entry["problem"] = record.problem;
            t << "refused  " << record.path << ": " << record.problem << "\n";
            list.push_back(entry);
            continue;
        }
        auto method = registry().find(record.id);
        ordered_json params = ordered_json::array();
        t << record.id << "  " << record.displayName << " (v" << record.version << ", " << record.path << ")\n";
        if (method) {
            t << "  " << (*method)->info().description << "\n  bits: " << (*method)->info().bitsFormula << "\n";
            for (const pocket::ParamSpec& p : (*method)->info().params) {
                ordered_json pj{{"name", p.name}, {"type", kindName(p.kind)}, {"default", p.defaultValue}, {"help", p.help}};
                if (p.kind == pocket::ParamKind::Int || p.kind == pocket::ParamKind::Float) {
                    pj["min"] = p.minValue;
                    pj["max"] = p.maxValue;
                }
                if (p.kind == pocket::ParamKind::Choice)
                    pj["choices"] = p.choices;
                params.push_back(pj);
                t << "    " << std::left << std::setw(15) << p.name << " " << std::setw(9) << p.defaultValue << " " << p.help << "\n";
            }
            entry["params"] = params;
        }
        list.push_back(entry);
    }
    if (list.empty())
        t << "no method plugins found (searched: POCKETLLM_PLUGIN_PATH and the folders beside the program)\n";
    emit(g, ordered_json{{"methods", list}}, t.str());
    return kExitOk;
}

} // namespace

void addCalibrationOptions(CLI::App* command, pocket::CalibrationParams& params, const std::string& textHelp)
{
    command->add_option("--calib-text", params.textPath, textHelp);
    command->add_option("--calib-samples", params.samples, "Calibration windows")->capture_default_str()->check(CLI::Range(1, 1 << 20));
    command->add_option("--calib-len", params.length, "Tokens per calibration window, BOS included (capped at the model's context)")
        ->capture_default_str()
        ->check(CLI::Range(2, 1 << 20));
    command->add_option("--calib-seed", params.seed, "Seed for the calibration windows' places")->capture_default_str();
}

pocket::Result<std::unique_ptr<pocket::Checkpoint>> openModelOrArchive(const std::string& path)
{
    return pocket::openModelOrArchive(path, registry());
}

void addCompressCommands(CLI::App& app, CompressCommands& c)
{
    CompressOptions& o = c.compressOptions;
    c.compress = app.add_subcommand("compress", "Compress a model's linear layers into a .pllm archive");
    c.compress->add_option("MODEL", o.model, "HF folder, .safetensors file in one, .gguf file, or llama2.c .bin")->required();
    c.compress->add_option("-o,--out", o.out, "Output archive (.pllm)")->required();
    c.compress->add_option("--method", o.method, "Compression method id (see `methods`)")->capture_default_str();
    c.compress->add_option("--set", o.settings, "Method parameter name=value (repeatable; see `methods`)");
    c.compress->add_option("--preset", o.preset, "Layer preset: all, or reference (skip the first 3 and last 2 blocks)")->capture_default_str();
    c.compress->add_option("--blocks,--layers", o.blocks, "Blocks to compress, e.g. 0-2,5,10- (default: all)");
    c.compress->add_option("--types", o.types, "Matrix types: q,k,v,o,gate,up,down, attn, mlp, or llama2.c names wq..w3");
    c.compress->add_option("--include", o.include, "Only tensors whose name matches this regex");
    c.compress->add_option("--exclude", o.exclude, "Leave out tensors whose name matches this regex");
    c.compress->add_option("--skip-first", o.skipFirst, "Leave this many first blocks uncompressed")->check(CLI::Range(0, 100000));
    c.compress->add_option("--skip-last", o.skipLast, "Leave this many last blocks uncompressed")->check(CLI::Range(0, 100000));
    c.compress->add_option("--keep-dtype", o.keepDtype, "Dtype of uncompressed tensors: f16, bf16 or f32")->capture_default_str();
    c.compress->add_option("--tokenizer", o.tokenizer, "Tokenizer to embed: tokenizer.model, tokenizer.json, tokenizer.bin or a .gguf (default: the model's own)");
    c.compress->add_option("--work-dir", o.workDir, "Work folder for finished groups (default: OUT.work)");
    c.compress->add_flag("--resume", o.resume, "Continue an interrupted run from its work folder");
    c.compress->add_flag("--keep-work", o.keepWork, "Keep the work folder after success");
    c.compress->add_flag("--dry-run", o.dryRun, "Only plan: check the options and print the estimated bits");
    c.compress->add_flag("--mpi", o.mpi,
                         "Spread the groups over the processes mpirun started (on by itself when it started more than one); "
                         "the output and work folder must be on a filesystem every rank shares");
    c.compress->add_option("--threads", o.threads, "Compute threads (default: one per core)")->check(CLI::Range(1, 1024));
    addCalibrationOptions(c.compress, o.calibration, "Calibration text (methods that need it, e.g. gptq)");
    addEntropyOptions(c.compress, o.entropy, o.coder, o.minSaving);

    ArchiveOptions& a = c.archiveOptions;
    c.inspect = app.add_subcommand("inspect", "Show an archive's model, method, bit accounting and sections (verifies checksums)");
    c.inspect->add_option("ARCHIVE", a.archive, ".pllm archive")->required();
    c.inspect->add_flag("--matrices", a.matrices, "List every compressed matrix");
    c.inspect->add_flag("--streams", a.streams, "List every code stream: fixed-width bits, stored bits, empirical entropy");
    c.inspect->add_option("--matrix", a.matrix, "What compression did to one matrix (the workbench's Inspect tab): error, histogram, codebook usage, PCA, RLN tiles; --json gives the figures' data");
    c.inspect->add_option("--original", a.original, "With --matrix: the model the archive was compressed from (for the error)");

    c.repack = app.add_subcommand("repack", "Re-code an archive's code streams (the lossless stage) without compressing again");
    c.repack->add_option("ARCHIVE", a.archive, ".pllm archive")->required();
    c.repack->add_option("-o,--out", a.out, "Output archive (may be ARCHIVE itself)")->required();
    addEntropyOptions(c.repack, a.entropy, a.coder, a.minSaving);
    c.repack->add_flag("--force", a.force, "Replace an existing output archive");

    c.decompress = app.add_subcommand("decompress", "Decode an archive into a Hugging Face folder");
    c.decompress->add_option("ARCHIVE", a.archive, ".pllm archive")->required();
    c.decompress->add_option("-o,--out", a.out, "Output folder")->required();
    c.decompress->add_option("--dtype", a.dtype, "Stored dtype: f16 (exact), bf16 or f32")->capture_default_str();
    c.decompress->add_option("--shard-size", a.shardMb, "Split into shards of at most this many MiB")->check(CLI::Range(0.0, 1e9));
    c.decompress->add_flag("--force", a.force, "Replace an existing output folder");

    ExportOptions& e = c.exportOptions;
    c.exportCommand = app.add_subcommand("export", "Write a model or archive for another runtime: a GGUF that llama.cpp loads still compressed, or the decoded Hugging Face folder");
    c.exportCommand->add_option("SOURCE", e.source, ".pllm archive, or a model (HF folder, .gguf, llama2.c .bin)")->required();
    c.exportCommand->add_option("--format", e.format, "gguf: llama.cpp's format, rtn/gptq 4- and 5-bit codes re-encoded exactly as Q4_1/Q5_1; gptq: AutoGPTQ's checkpoint format (rtn/gptq archives made with zero=int); aqlm: AQLM's format (vq and aqlm archives); hf: the decoded Hugging Face folder (archives)")
        ->capture_default_str()
        ->check(CLI::IsMember({"gguf", "gptq", "aqlm", "hf"}));
    c.exportCommand->add_option("-o,--out", e.out, "Output file (gguf) or folder (hf)")->required();
    c.exportCommand->add_option("--fallback", e.fallback, "Type of the matrices with no exact block type (decoded): f16, bf16, q8_0 or f32")->capture_default_str();
    c.exportCommand->add_option("--embedding", e.embedding, "Type of the embedding and output head: f16, bf16, q8_0 or f32")->capture_default_str();
    c.exportCommand->add_flag("--no-exact", e.noExact, "Decode every compressed matrix into the fallback type");
    c.exportCommand->add_flag("--tensors", e.tensors, "List what each tensor became");
    c.exportCommand->add_flag("--force", e.force, "Replace an existing output");

    c.methods = app.add_subcommand("methods", "List the compression methods found and their parameters");
}

int runCompressCommands(const Globals& g, const CompressCommands& c)
{
    if (*c.compress)
        return runCompress(g, c.compressOptions);
    if (*c.inspect)
        return runInspect(g, c.archiveOptions);
    if (*c.decompress)
        return runDecompress(g, c.archiveOptions);
    if (*c.repack)
        return runRepack(g, c.archiveOptions);
    if (*c.exportCommand)
        return runExport(g, c.exportOptions);
    if (*c.methods)
        return runMethods(g);
    return -1;
}

} // namespace cli

// compressCommandArgs: a job as `pocketllm-cli compress` arguments (the workbench's "Run on
// cluster" dialog writes them into an mpirun command line).
#include "pocket/jobs/compress_job.h"

#include "pocket/archive/lossless.h"

#include <cstdio>

namespace pocket {

namespace {

std::string blocksSpec(const std::vector<std::pair<int, int>>& blocks)
{
    std::string spec;
    for (const auto& [first, last] : blocks) {
        if (!spec.empty())
            spec += ",";
        spec += std::to_string(first);
        if (last < 0)
            spec += "-";
        else if (last != first)
            spec += "-" + std::to_string(last);
    }
    return spec;
}

// An ECMAScript pattern matching exactly the names given.
std::string exactNamesPattern(const std::vector<std::string>& names)
{
    std::string pattern = "^(";
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (i > 0)
            pattern += "|";
        for (char c : names[i]) {
            if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos)
                pattern += '\\';
            pattern += c;
        }
    }
    return pattern + ")$";
}

std::string number(double v)
{
    char text[32];
    std::snprintf(text, sizeof text, "%.10g", v);
    return text;
}

} // namespace

Result<std::vector<std::string>> compressCommandArgs(const CompressJobParams& p)
{
    if (!p.matrixSettings.empty() || !p.matrixMethods.empty())
        return Error::unsupported("a plan with per-matrix settings or methods has no compress command line (run it from the workbench, "
                                  "or with allocate --out)");
    const LayerSelection& s = p.selection;
    if (!s.names.empty() && !s.include.empty())
        return Error::unsupported("matrices picked one by one together with an include pattern have no compress command line");
    std::vector<std::string> a{p.modelPath, "-o", p.outPath, "--method", p.methodId};
    for (const std::string& setting : p.settings)
        a.insert(a.end(), {"--set", setting});
    if (!s.blocks.empty())
        a.insert(a.end(), {"--blocks", blocksSpec(s.blocks)});
    if (!s.types.empty()) {
        std::string types;
        for (MatrixType t : s.types)
            types += (types.empty() ? "" : ",") + std::string(matrixTypeName(t));
        a.insert(a.end(), {"--types", types});
    }
    if (!s.names.empty())
        a.insert(a.end(), {"--include", exactNamesPattern(s.names)});
    else if (!s.include.empty())
        a.insert(a.end(), {"--include", s.include});
    if (!s.exclude.empty())
        a.insert(a.end(), {"--exclude", s.exclude});
    a.insert(a.end(), {"--skip-first", std::to_string(s.skipFirst), "--skip-last", std::to_string(s.skipLast)});
    a.insert(a.end(), {"--keep-dtype", p.keepDtype == DType::BF16 ? "bf16" : p.keepDtype == DType::F32 ? "f32" : "f16"});
    if (!p.tokenizerPath.empty())
        a.insert(a.end(), {"--tokenizer", p.tokenizerPath});
    if (!p.workDir.empty())
        a.insert(a.end(), {"--work-dir", p.workDir});
    if (p.resume)
        a.push_back("--resume");
    if (p.keepWorkDir)
        a.push_back("--keep-work");
    if (!p.calibration.textPath.empty())
        a.insert(a.end(), {"--calib-text", p.calibration.textPath, "--calib-samples", std::to_string(p.calibration.samples), "--calib-len",
                           std::to_string(p.calibration.length), "--calib-seed", std::to_string(p.calibration.seed)});
    a.insert(a.end(), {"--entropy", entropyModeName(p.entropy.mode), "--coder", entropyCoderName(p.entropy.coder), "--min-saving",
                       number(p.entropy.minSaving * 100)});
    return a;
}

} // namespace pocket

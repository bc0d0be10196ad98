#include "cli_common.h"

#include <map>

namespace cli {

namespace {

// Core's setting names (Error::setting) and the options that set them.
const std::map<std::string, std::string>& flagOfSetting()
{
    static const std::map<std::string, std::string> flags{
        {"budget", "--budget"},
        {"blocks", "--blocks"},
        {"calibration length", "--calib-len"},
        {"calibration samples", "--calib-samples"},
        {"calibration text", "--calib-text"},
        {"ctx", "--ctx"},
        {"dtype", "--dtype"},
        {"keep dtype", "--keep-dtype"},
        {"max tokens", "--max-tokens"},
        {"memory budget", "--memory-budget"},
        {"context", "--context"},
        {"prompt", "--prompt"},
        {"temperature", "--temperature"},
        {"top-k", "--top-k"},
        {"top-p", "--top-p"},
        {"repetition penalty", "--repeat-penalty"},
        {"menu", "--menu"},
        {"method", "--method"},
        {"output", "--out"},
        {"overwrite", "--force"},
        {"pattern", "--include/--exclude"},
        {"preset", "--preset"},
        {"resume", "--resume"},
        {"settings", "--set"},
        {"skip", "--skip-first/--skip-last"},
        {"stride", "--stride"},
        {"tokenizer", "--tokenizer"},
        {"types", "--types"},
        {"windows", "--windows"},
    };
    return flags;
}

} // namespace

int exitCodeOf(const pocket::Error& error)
{
    switch (error.kind) {
    case pocket::ErrorKind::Usage: return kExitUsage;
    case pocket::ErrorKind::Internal: return kExitInternal;
    case pocket::ErrorKind::Input:
    case pocket::ErrorKind::Unsupported:
    case pocket::ErrorKind::Io:
    case pocket::ErrorKind::Cancelled: return kExitBadInput;
    }
    return kExitBadInput;
}

std::string cliMessage(const pocket::Error& error)
{
    const auto it = flagOfSetting().find(error.setting);
    if (it == flagOfSetting().end())
        return error.message;
    const std::string& name = it->first;
    if (error.message.compare(0, name.size(), name) == 0)
        return it->second + error.message.substr(name.size());
    return error.message + " (" + it->second + ")";
}

int fail(const Globals& g, const pocket::Error& error)
{
    std::string message = cliMessage(error);
    if (error.kind == pocket::ErrorKind::Internal)
        message = "internal error: " + message;
    return fail(g, message, exitCodeOf(error));
}

} // namespace cli

namespace cli {

void addRunOptions(CLI::App* command, std::string& precision, std::string& memoryBudget)
{
    command->add_option("--precision", precision,
                        "fp32: the reference; bf16: bf16 weights and matrix products (faster where the CPU has AVX-512 BF16)")
        ->capture_default_str()
        ->check(CLI::IsMember({"fp32", "bf16"}));
    command->add_option("--memory-budget", memoryBudget,
                        "For a .pllm archive: MiB the weights may take; matrices that do not fit stay compressed and are decoded "
                        "just before use (auto: as many decoded as free memory allows; default: all decoded at load)");
}

pocket::Result<pocket::RunOptions> runOptions(const std::string& precision, const std::string& memoryBudget)
{
    pocket::RunOptions run;
    run.precision = precision == "bf16" ? pocket::ComputePrecision::BF16 : pocket::ComputePrecision::F32;
    if (!memoryBudget.empty()) {
        const auto budget = pocket::parseMemoryBudget(memoryBudget);
        if (!budget)
            return pocket::Error::usage("'" + memoryBudget + "' is not a number of MiB, auto or unlimited", "memory budget");
        run.memoryBudget = *budget;
    }
    return run;
}

ordered_json memoryJson(const pocket::WeightMemory& m)
{
    const auto mb = [](std::uint64_t bytes) { return static_cast<double>(bytes) / (1 << 20); };
    return ordered_json{{"weights_mb", mb(m.total())},
                        {"fixed_mb", mb(m.fixedBytes)},
                        {"decoded_mb", mb(m.decodedBytes)},
                        {"compressed_mb", mb(m.compressedBytes)},
                        {"buffer_mb", mb(m.bufferBytes)},
                        {"minimum_mb", mb(m.minimumBytes)},
                        {"all_decoded_mb", mb(m.allDecodedBytes)},
                        {"matrices_decoded", m.matricesDecoded},
                        {"matrices_compressed", m.matricesCompressed},
                        {"decode_s_per_pass", m.decodeSecondsPerPass}};
}


} // namespace cli

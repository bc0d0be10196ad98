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

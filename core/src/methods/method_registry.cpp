#include "pocket/methods/method_registry.h"

#include "pocket/support/app_paths.h"

#include <spdlog/spdlog.h>

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>

namespace pocket {

namespace {

// Wraps a method so that nothing it throws (c10::Error, std::bad_alloc, anything) crosses into
// core: an exception becomes an Internal error naming the method and where it came from. Every
// method the registry hands out is wrapped, plugins and built-ins alike.
class GuardedMethod final : public CompressionMethod {
public:
    GuardedMethod(std::unique_ptr<CompressionMethod> inner, std::string origin) : m_inner(std::move(inner)), m_origin(std::move(origin)) {}

    const MethodInfo& info() const override { return m_inner->info(); }

    Result<std::vector<std::vector<MatrixRef>>> planGroups(const std::vector<MatrixRef>& matrices, const ParamSet& params) const override
    {
        return guard("planning groups", [&] { return m_inner->planGroups(matrices, params); });
    }
    bool needsCalibration(const ParamSet& params) const override
    {
        try {
            return m_inner->needsCalibration(params);
        } catch (...) {
            return info().needsCalibration;
        }
    }
    Result<BitCounts> estimateBits(const std::vector<MatrixRef>& group, const ParamSet& params, std::vector<BitCounts>& perMatrix) const override
    {
        return guard("estimating bits", [&] { return m_inner->estimateBits(group, params, perMatrix); });
    }
    Result<GroupPayload> compress(const MatrixGroup& group, const ParamSet& params, const CompressContext& context) override
    {
        return guard("compressing " + group.id, [&] { return m_inner->compress(group, params, context); });
    }
    Result<std::vector<std::vector<float>>> decode(const GroupPayload& payload) const override
    {
        return guard("decoding " + payload.groupId, [&] { return m_inner->decode(payload); });
    }
    Result<std::unique_ptr<PayloadDecoder>> prepareDecoder(GroupPayload payload) const override;

private:
    template <class F>
    auto guard(const std::string& what, F&& f) const -> decltype(f())
    {
        try {
            return f();
        } catch (const std::bad_alloc&) {
            return Error::io("method '" + info().id + "' ran out of memory " + what);
        } catch (const std::exception& e) {
            // LibTorch reports an exhausted allocator as a c10::Error, not std::bad_alloc.
            const std::string text = e.what();
            if (text.find("can't allocate memory") != std::string::npos || text.find("not enough memory") != std::string::npos)
                return Error::io("method '" + info().id + "' ran out of memory " + what + ": " + text);
            return Error::internal("method '" + info().id + "' (" + m_origin + ") failed " + what + ": " + text);
        } catch (...) {
            return Error::internal("method '" + info().id + "' (" + m_origin + ") failed " + what + " with an unknown exception");
        }
    }

    std::unique_ptr<CompressionMethod> m_inner;
    std::string m_origin;
};

// The guard around a method's payload decoder: exceptions become errors, as for the method.
class GuardedDecoder final : public PayloadDecoder {
public:
    GuardedDecoder(std::unique_ptr<PayloadDecoder> inner, std::string methodId) : m_inner(std::move(inner)), m_methodId(std::move(methodId)) {}
    std::size_t matrixCount() const override { return m_inner->matrixCount(); }
    const MatrixRef& matrix(std::size_t index) const override { return m_inner->matrix(index); }
    std::uint64_t bytes() const override { return m_inner->bytes(); }
    Status decodeMatrix(std::size_t index, float* out, int threads) const override
    {
        try {
            return m_inner->decodeMatrix(index, out, threads);
        } catch (const std::bad_alloc&) {
            return Error::io("method '" + m_methodId + "' ran out of memory decoding " + matrix(index).name);
        } catch (const std::exception& e) {
            return Error::internal("method '" + m_methodId + "' failed decoding " + matrix(index).name + ": " + e.what());
        }
    }

private:
    std::unique_ptr<PayloadDecoder> m_inner;
    std::string m_methodId;
};

Result<std::unique_ptr<PayloadDecoder>> GuardedMethod::prepareDecoder(GroupPayload payload) const
{
    const std::string groupId = payload.groupId;
    auto inner = guard("preparing to decode " + groupId, [&] { return m_inner->prepareDecoder(std::move(payload)); });
    if (!inner)
        return inner.error();
    if (!*inner)
        return Error::internal("method '" + info().id + "' returned no decoder for " + groupId);
    return std::unique_ptr<PayloadDecoder>(new GuardedDecoder(std::move(*inner), info().id));
}

} // namespace

struct MethodRegistry::Entry {
    std::unique_ptr<CompressionMethod> method;
    void* handle = nullptr; // dlopen handle; closed after the method is destroyed
    std::size_t record = 0;
    ~Entry()
    {
        method.reset();
        if (handle)
            dlclose(handle);
    }
};

MethodRegistry::MethodRegistry() = default;
MethodRegistry::~MethodRegistry() = default;

Status MethodRegistry::add(std::unique_ptr<CompressionMethod> method, const std::string& path, void* handle)
{
    PluginRecord record;
    record.path = path;
    record.id = method->info().id;
    record.displayName = method->info().displayName;
    record.version = method->info().version;
    for (const auto& entry : m_entries) {
        if (entry->method->info().id == record.id) {
            record.problem = "method id '" + record.id + "' is already provided by " + m_records[entry->record].path;
            m_records.push_back(record);
            method.reset();
            if (handle)
                dlclose(handle);
            return Error::usage(path + ": " + record.problem, "method");
        }
    }
    record.loaded = true;
    auto entry = std::make_unique<Entry>();
    entry->method = std::make_unique<GuardedMethod>(std::move(method), path);
    entry->handle = handle;
    entry->record = m_records.size();
    m_records.push_back(record);
    m_entries.push_back(std::move(entry));
    return {};
}

Status MethodRegistry::addBuiltin(std::unique_ptr<CompressionMethod> method)
{
    if (!method)
        return Error::internal("addBuiltin: no method");
    return add(std::move(method), "(built-in)", nullptr);
}

Status MethodRegistry::loadPlugin(const std::string& path)
{
    const auto refuse = [&](const std::string& problem) -> Status {
        PluginRecord record;
        record.path = path;
        record.problem = problem;
        m_records.push_back(record);
        spdlog::warn("plugin {}: {}", path, problem);
        return fileError(path, problem);
    };
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char* why = dlerror();
        return refuse(std::string("cannot load plugin: ") + (why ? why : "unknown error"));
    }
    auto version = reinterpret_cast<MethodApiVersionFn>(dlsym(handle, kMethodApiVersionSymbol));
    auto create = reinterpret_cast<MethodCreateFn>(dlsym(handle, kMethodCreateSymbol));
    if (!version || !create) {
        dlclose(handle);
        return refuse("not a PocketLLM method plugin (missing " + std::string(kMethodApiVersionSymbol) + " or " +
                      kMethodCreateSymbol + ")");
    }
    const int api = version();
    if (api != kMethodApiVersion) {
        dlclose(handle);
        return refuse("built for method API version " + std::to_string(api) + ", this program needs version " +
                      std::to_string(kMethodApiVersion));
    }
    std::unique_ptr<CompressionMethod> method;
    try {
        method.reset(create());
    } catch (...) {
        method.reset();
    }
    if (!method) {
        dlclose(handle);
        return refuse("the plugin failed to create its method");
    }
    spdlog::debug("loaded method '{}' from {}", method->info().id, path);
    return add(std::move(method), path, handle);
}

void MethodRegistry::loadFolder(const std::string& folder)
{
    std::error_code ec;
    if (!std::filesystem::is_directory(folder, ec))
        return;
    std::vector<std::string> files;
    for (const auto& item : std::filesystem::directory_iterator(folder, ec)) {
        const std::string name = item.path().filename().string();
        if (name.rfind("libpocket_method_", 0) == 0 && item.path().extension() == ".so")
            files.push_back(item.path().string());
    }
    std::sort(files.begin(), files.end()); // load order must not depend on the file system
    for (const std::string& file : files)
        (void)loadPlugin(file);
}

void MethodRegistry::loadDefaultFolders()
{
    for (const std::string& folder : defaultPluginFolders())
        loadFolder(folder);
}

std::vector<CompressionMethod*> MethodRegistry::methods() const
{
    std::vector<CompressionMethod*> out;
    for (const auto& entry : m_entries)
        if (m_records[entry->record].enabled)
            out.push_back(entry->method.get());
    return out;
}

Result<CompressionMethod*> MethodRegistry::find(const std::string& id) const
{
    for (const auto& entry : m_entries) {
        if (entry->method->info().id == id) {
            if (!m_records[entry->record].enabled)
                return Error::usage("method '" + id + "' is disabled", "method");
            return entry->method.get();
        }
    }
    std::string known;
    for (const auto* method : methods())
        known += (known.empty() ? "" : ", ") + method->info().id;
    std::string message = "unknown method '" + id + "' (available: " + (known.empty() ? "none" : known) + ")";
    for (const PluginRecord& record : m_records)
        if (!record.loaded && record.path.find(id) != std::string::npos)
            message += "; " + record.path + " was refused: " + record.problem;
    if (known.empty())
        message += "; no plugins found: set POCKETLLM_PLUGIN_PATH to the folder holding libpocket_method_*.so";
    return Error::usage(message, "method");
}

void MethodRegistry::setEnabled(const std::string& id, bool enabled)
{
    for (PluginRecord& record : m_records)
        if (record.loaded && record.id == id)
            record.enabled = enabled;
}

std::vector<std::string> defaultPluginFolders()
{
    std::vector<std::string> folders;
    if (const char* env = std::getenv("POCKETLLM_PLUGIN_PATH"); env && *env) {
        std::stringstream in(env);
        std::string part;
        while (std::getline(in, part, ':'))
            if (!part.empty())
                folders.push_back(part);
    }
    const std::string exeDir = executableDir();
    if (!exeDir.empty()) {
        folders.push_back(exeDir + "/../lib/pocketllm-workbench/plugins");
        folders.push_back(exeDir + "/plugins");
    }
    // The same folder reached twice (e.g. through the build path) is searched once.
    std::vector<std::string> unique;
    for (const std::string& folder : folders) {
        std::error_code ec;
        const std::string canon = std::filesystem::weakly_canonical(folder, ec).string();
        const std::string key = ec ? folder : canon;
        if (std::find(unique.begin(), unique.end(), key) == unique.end())
            unique.push_back(key);
    }
    return unique;
}

} // namespace pocket

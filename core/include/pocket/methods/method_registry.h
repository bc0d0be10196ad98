// Finds and loads compression-method plugins, and hands out the methods by id.
// Built-in (statically registered) methods come first, then every plugin folder in search order;
// a plugin whose API version differs from kMethodApiVersion, that lacks the entry points, or whose
// id is already taken is refused and listed with the reason. Use from one thread (the registry
// itself is not synchronised; a method instance is used by one job at a time).
#pragma once

#include "pocket/methods/method.h"
#include "pocket/support/result.h"

#include <memory>
#include <string>
#include <vector>

namespace pocket {

// What the registry knows about one method or one plugin file it looked at.
struct PluginRecord {
    std::string id;          // method id ("" if the file could not be loaded)
    std::string displayName;
    int version = 0;         // the method's payload version
    std::string path;        // plugin file, or "(built-in)"
    bool loaded = false;     // usable
    bool enabled = true;     // the user may disable a loaded method
    std::string problem;     // why it was refused
};

class MethodRegistry {
public:
    MethodRegistry();
    ~MethodRegistry();
    MethodRegistry(const MethodRegistry&) = delete;
    MethodRegistry& operator=(const MethodRegistry&) = delete;

    // Adds a method compiled into the program (tests, applications). Fails if the id is taken.
    Status addBuiltin(std::unique_ptr<CompressionMethod> method);
    // Loads every "libpocket_method_*.so" in `folder` (a missing folder is not an error).
    void loadFolder(const std::string& folder);
    // Loads one plugin file; the error names the file and the reason.
    Status loadPlugin(const std::string& path);
    // loadFolder() over defaultPluginFolders().
    void loadDefaultFolders();

    // Enabled, loaded methods, in load order.
    std::vector<CompressionMethod*> methods() const;
    // The method with this id, or an error listing the available ids (and why a plugin of that
    // name was refused, if one was).
    Result<CompressionMethod*> find(const std::string& id) const;
    const std::vector<PluginRecord>& records() const { return m_records; }
    void setEnabled(const std::string& id, bool enabled);

private:
    struct Entry;
    std::vector<std::unique_ptr<Entry>> m_entries;
    std::vector<PluginRecord> m_records;
    Status add(std::unique_ptr<CompressionMethod> method, const std::string& path, void* handle);
};

// Plugin folders in search order: each entry of $POCKETLLM_PLUGIN_PATH (colon-separated), then
// <exe>/../lib/pocketllm-workbench/plugins (where the build tree and the installed package put
// them), then <exe>/plugins.
std::vector<std::string> defaultPluginFolders();

} // namespace pocket

// Helpers for tests of method plugins: the plugins as the programs load them (from the build's
// plugin folder), parameter sets, and random weight matrices.
#pragma once

#include "pocket/methods/method.h"
#include "pocket/methods/method_registry.h"

#include <QtTest/QtTest>

#include <random>
#include <string>
#include <vector>

namespace testsupport {

// The method `id` loaded from the build's plugin folder (aborts the test if it is missing).
inline pocket::CompressionMethod& pluginMethod(const std::string& id)
{
    static pocket::MethodRegistry registry;
    static bool loaded = false;
    if (!loaded) {
        registry.loadFolder(POCKET_PLUGIN_DIR);
        loaded = true;
    }
    auto m = registry.find(id);
    if (!m)
        qFatal("%s", m.message().c_str());
    return **m;
}

// The method's defaults overridden by "name=value" settings (aborts on a bad setting).
inline pocket::ParamSet pluginParams(const std::string& id, const std::vector<std::string>& settings)
{
    auto p = pocket::ParamSet::resolve(pluginMethod(id).info().params, settings);
    if (!p)
        qFatal("%s", p.message().c_str());
    return *p;
}

// A [rows, cols] matrix of normal values (std `stddev`) from `seed`.
inline pocket::WeightMatrix randomWeights(const std::string& name, pocket::MatrixType type, int layer, std::int64_t rows,
                                          std::int64_t cols, unsigned seed, float stddev = 0.05f)
{
    std::mt19937 gen(seed);
    std::normal_distribution<float> dist(0, stddev);
    pocket::WeightMatrix m;
    m.ref = {name, layer, type, rows, cols};
    m.values.resize(static_cast<std::size_t>(rows * cols));
    for (float& v : m.values)
        v = dist(gen);
    return m;
}

} // namespace testsupport

#include "pocket/methods/layer_selection.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <regex>
#include <sstream>

namespace pocket {

namespace {
std::vector<std::string> splitList(const std::string& spec)
{
    std::vector<std::string> parts;
    std::stringstream in(spec);
    std::string part;
    while (std::getline(in, part, ',')) {
        part.erase(std::remove_if(part.begin(), part.end(), [](unsigned char c) { return std::isspace(c); }), part.end());
        parts.push_back(part);
    }
    return parts;
}

bool parseIndex(const std::string& s, int& out)
{
    if (s.empty() || s.size() > 6 || !std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); }))
        return false;
    out = std::stoi(s);
    return true;
}
} // namespace

Result<std::vector<std::pair<int, int>>> LayerSelection::parseBlocks(const std::string& spec)
{
    std::vector<std::pair<int, int>> ranges;
    for (const std::string& part : splitList(spec)) {
        const auto dash = part.find('-');
        int first = 0, last = 0;
        bool ok;
        if (dash == std::string::npos) {
            ok = parseIndex(part, first);
            last = first;
        } else {
            ok = parseIndex(part.substr(0, dash), first);
            const std::string tail = part.substr(dash + 1);
            if (tail.empty())
                last = -1;
            else
                ok = ok && parseIndex(tail, last);
        }
        if (!ok || (last != -1 && last < first))
            return Error::usage("blocks: '" + part + "' is not a block or range (use e.g. 0-2,5,10-)", "blocks");
        ranges.emplace_back(first, last);
    }
    if (ranges.empty())
        return Error::usage("blocks: no blocks given", "blocks");
    return ranges;
}

Result<std::vector<MatrixType>> LayerSelection::parseTypes(const std::string& spec)
{
    struct Alias {
        const char* name;
        std::vector<MatrixType> types;
    };
    const std::vector<MatrixType> attn{MatrixType::Q, MatrixType::K, MatrixType::V, MatrixType::O};
    const std::vector<MatrixType> mlp{MatrixType::Gate, MatrixType::Up, MatrixType::Down};
    const std::vector<MatrixType> all(std::begin(kMatrixTypes), std::end(kMatrixTypes));
    const Alias aliases[] = {
        {"q", {MatrixType::Q}},       {"k", {MatrixType::K}},      {"v", {MatrixType::V}},       {"o", {MatrixType::O}},
        {"gate", {MatrixType::Gate}}, {"up", {MatrixType::Up}},    {"down", {MatrixType::Down}}, {"wq", {MatrixType::Q}},
        {"wk", {MatrixType::K}},      {"wv", {MatrixType::V}},     {"wo", {MatrixType::O}},      {"w1", {MatrixType::Gate}},
        {"w3", {MatrixType::Up}},     {"w2", {MatrixType::Down}},  {"attn", attn},               {"mlp", mlp},
        {"ffn", mlp},                 {"all", all},
    };
    std::vector<MatrixType> out;
    for (std::string part : splitList(spec)) {
        std::transform(part.begin(), part.end(), part.begin(), [](unsigned char c) { return std::tolower(c); });
        if (part.size() > 5 && part.compare(part.size() - 5, 5, "_proj") == 0)
            part.erase(part.size() - 5);
        const auto it = std::find_if(std::begin(aliases), std::end(aliases), [&](const Alias& a) { return part == a.name; });
        if (it == std::end(aliases))
            return Error::usage("types: unknown matrix type '" + part + "' (use q,k,v,o,gate,up,down, attn, mlp or all)", "types");
        for (const MatrixType t : it->types)
            if (std::find(out.begin(), out.end(), t) == out.end())
                out.push_back(t);
    }
    if (out.empty())
        return Error::usage("types: no matrix types given", "types");
    return out;
}

Result<LayerSelection> LayerSelection::preset(const std::string& name)
{
    LayerSelection s;
    if (name == "all")
        return s;
    if (name == "reference") {
        s.skipFirst = 3;
        s.skipLast = 2;
        return s;
    }
    return Error::usage("preset: unknown selection preset '" + name + "' (use all or reference)", "preset");
}

Result<std::vector<std::string>> LayerSelection::select(const ModelConfig& config) const
{
    const int layers = static_cast<int>(config.numLayers);
    for (const auto& [first, last] : blocks)
        if (first >= layers || last >= layers)
            return Error::usage("blocks: block " + std::to_string(std::max(first, last)) + " is past the model's last block " + std::to_string(layers - 1),
                                "blocks");
    if (skipFirst < 0 || skipLast < 0)
        return Error::usage("skipped block counts must not be negative", "skip");
    std::regex includeRe, excludeRe;
    try {
        if (!include.empty()) includeRe = std::regex(include, std::regex::ECMAScript);
        if (!exclude.empty()) excludeRe = std::regex(exclude, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
        return Error::usage(std::string("invalid name pattern: ") + e.what(), "pattern");
    }
    for (const std::string& wanted : this->names) {
        bool known = false;
        for (int layer = 0; layer < layers && !known; ++layer)
            for (const MatrixType t : kMatrixTypes)
                known = known || matrixTensorName(layer, t) == wanted;
        if (!known)
            return Error::usage("layer selection: '" + wanted + "' is not a linear matrix of this model", "selection");
    }
    std::vector<std::string> names;
    for (int l = skipFirst; l < layers - skipLast; ++l) {
        if (!blocks.empty() && std::none_of(blocks.begin(), blocks.end(), [l](const auto& r) { return l >= r.first && (r.second == -1 || l <= r.second); }))
            continue;
        for (const MatrixType t : kMatrixTypes) {
            if (!types.empty() && std::find(types.begin(), types.end(), t) == types.end())
                continue;
            const std::string name = matrixTensorName(l, t);
            if (!include.empty() && !std::regex_search(name, includeRe))
                continue;
            if (!exclude.empty() && std::regex_search(name, excludeRe))
                continue;
            if (!this->names.empty() && std::find(this->names.begin(), this->names.end(), name) == this->names.end())
                continue;
            names.push_back(name);
        }
    }
    return names;
}

std::string layerSelectionJson(const LayerSelection& s)
{
    using json = nlohmann::ordered_json;
    json blocks = json::array();
    for (const auto& [first, last] : s.blocks)
        blocks.push_back({first, last});
    json types = json::array();
    for (MatrixType t : s.types)
        types.push_back(matrixTypeName(t));
    json j{{"blocks", blocks}, {"types", types},  {"include", s.include},
           {"exclude", s.exclude}, {"skip_first", s.skipFirst}, {"skip_last", s.skipLast}};
    if (!s.names.empty()) // only when used, so the identity of older work folders is unchanged
        j["names"] = s.names;
    return j.dump();
}

} // namespace pocket

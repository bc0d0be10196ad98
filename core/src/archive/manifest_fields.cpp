#include "manifest_fields.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <set>

namespace pocket::archive_detail {

namespace {

// nlohmann's parser is iterative but dump() recurses; hostile nesting must not reach it.
bool nestingWithin(const char* p, std::size_t n, int maxDepth)
{
    int depth = 0;
    bool inString = false, escape = false;
    for (std::size_t i = 0; i < n; ++i) {
        const char c = p[i];
        if (inString) {
            if (escape) escape = false;
            else if (c == '\\') escape = true;
            else if (c == '"') inString = false;
        } else if (c == '"') {
            inString = true;
        } else if (c == '[' || c == '{') {
            if (++depth > maxDepth)
                return false;
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return true;
}

} // namespace

Result<Json> parseJson(const char* p, std::size_t n, const std::string& file, const std::string& what)
{
    if (!nestingWithin(p, n, kMaxJsonDepth))
        return fileError(file, what + " nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    Json j = Json::parse(p, p + n, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded())
        return fileError(file, what + " is not valid JSON");
    if (!j.is_object())
        return fileError(file, what + " is not a JSON object");
    return j;
}


Result<std::string> dumpStrict(const Json& j, const std::string& file)
{
    try {
        return j.dump();
    } catch (const Json::exception& e) {
        return fileError(file, std::string("cannot write the manifest (names must be UTF-8): ") + e.what());
    }
}

Json realJson(double v)
{
    if (std::isfinite(v)) return v;
    if (std::isnan(v)) return "nan";
    return v > 0 ? "inf" : "-inf";
}

Json bitsJson(const BitCounts& b)
{
    Json j = Json::object();
    j["index"] = b.indexBits;
    j["codebook"] = b.codebookBits;
    j["decoder"] = b.decoderBits;
    j["scale"] = b.scaleBits;
    return j;
}

// "" counts as {} so a method without parameters or meta facts need not spell it out.
Result<Json> objectFromText(const std::string& text, const std::string& file, const std::string& what)
{
    if (text.empty())
        return Json::object();
    return parseJson(text.data(), text.size(), file, what);
}

std::string groupWhere(std::size_t index, const std::string& id)
{
    return "group " + std::to_string(index) + " ('" + id + "')";
}

Result<Json> payloadToJson(const GroupPayload& p, const std::string& file)
{
    const std::string where = "group '" + p.groupId + "'";
    auto params = objectFromText(p.paramsJson, file, where + ": params");
    if (!params) return params.error();
    auto meta = objectFromText(p.metaJson, file, where + ": meta");
    if (!meta) return meta.error();
    Json j = Json::object();
    j["id"] = p.groupId;
    j["method"] = p.methodId;
    j["method_version"] = p.methodVersion;
    j["params"] = std::move(*params);
    j["meta"] = std::move(*meta);
    j["shared_bits"] = bitsJson(p.sharedBits);
    Json matrices = Json::array();
    for (const MatrixResult& m : p.matrices) {
        Json e = Json::object();
        e["name"] = m.ref.name;
        e["layer"] = m.ref.layer;
        e["type"] = matrixTypeName(m.ref.type);
        e["rows"] = m.ref.rows;
        e["cols"] = m.ref.cols;
        e["bits"] = bitsJson(m.bits);
        e["mse"] = realJson(m.mse);
        e["snr_db"] = realJson(m.snrDb);
        matrices.push_back(std::move(e));
    }
    j["matrices"] = std::move(matrices);
    Json names = Json::array();
    std::set<std::string> seen;
    for (const PayloadSection& s : p.sections) {
        if (s.name.empty())
            return fileError(file, where + ": a payload section has no name");
        if (!seen.insert(s.name).second)
            return fileError(file, where + ": payload section '" + s.name + "' appears twice");
        names.push_back(s.name);
    }
    j["section_names"] = std::move(names);
    // Which sections are code streams (written only when one is, so older readers' files stay as they were).
    if (std::any_of(p.sections.begin(), p.sections.end(), [](const PayloadSection& s) { return s.symbolBits > 0; })) {
        Json codes = Json::array();
        for (const PayloadSection& s : p.sections) {
            if (s.symbolBits <= 0) {
                codes.push_back(nullptr);
                continue;
            }
            if (s.symbolBits > 32)
                return fileError(file, where + ": payload section '" + s.name + "' has " + std::to_string(s.symbolBits) + "-bit symbols (at most 32)");
            codes.push_back(Json{{"symbol_bits", s.symbolBits}, {"symbols", s.symbols}});
        }
        j["section_codes"] = std::move(codes);
    }
    return j;
}

// The payload fields of `j` (other keys are ignored); sections get their names, no bytes.
Result<GroupPayload> payloadFromJson(const Json& j, const std::string& file, const std::string& where)
{
    const Fields f{file, where, j};
    GroupPayload p;
    std::int64_t version = 0;
    POCKET_TRY(f.string("id", p.groupId));
    POCKET_TRY(f.string("method", p.methodId));
    POCKET_TRY(f.integer("method_version", 0, INT_MAX, version));
    p.methodVersion = static_cast<int>(version);
    auto params = f.object("params");
    if (!params) return params.error();
    p.paramsJson = (*params)->dump();
    auto meta = f.object("meta");
    if (!meta) return meta.error();
    p.metaJson = (*meta)->dump();
    POCKET_TRY(f.bits("shared_bits", p.sharedBits));
    auto matrices = f.array("matrices");
    if (!matrices) return matrices.error();
    for (std::size_t i = 0; i < (*matrices)->size(); ++i) {
        const Json& e = (**matrices)[i];
        const std::string mwhere = (where.empty() ? "" : where + ", ") + "matrix " + std::to_string(i);
        if (!e.is_object())
            return fileError(file, mwhere + ": must be an object");
        const Fields m{file, mwhere, e};
        MatrixResult r;
        std::int64_t layer = 0;
        std::string type;
        POCKET_TRY(m.string("name", r.ref.name));
        POCKET_TRY(m.integer("layer", 0, INT_MAX, layer));
        r.ref.layer = static_cast<int>(layer);
        POCKET_TRY(m.string("type", type));
        if (!parseMatrixTypeName(type, r.ref.type))
            return m.bad("unknown matrix type '" + type + "' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj)");
        POCKET_TRY(m.integer("rows", 1, kMaxMatrixDim, r.ref.rows));
        POCKET_TRY(m.integer("cols", 1, kMaxMatrixDim, r.ref.cols));
        POCKET_TRY(m.bits("bits", r.bits));
        POCKET_TRY(m.real("mse", r.mse));
        POCKET_TRY(m.real("snr_db", r.snrDb));
        p.matrices.push_back(std::move(r));
    }
    std::vector<std::string> names;
    POCKET_TRY(f.strings("section_names", names));
    std::set<std::string> seen;
    for (const std::string& name : names) {
        if (name.empty())
            return f.bad("a section name is empty");
        if (!seen.insert(name).second)
            return f.bad("section name '" + name + "' appears twice");
        p.sections.push_back({name, {}});
    }
    if (const Json* codes = f.get("section_codes")) {
        if (!codes->is_array() || codes->size() != p.sections.size())
            return f.bad("key 'section_codes' must be an array as long as 'section_names'");
        for (std::size_t k = 0; k < codes->size(); ++k) {
            const Json& e = (*codes)[k];
            if (e.is_null())
                continue;
            if (!e.is_object())
                return f.bad("section_codes[" + std::to_string(k) + "] must be an object or null");
            const Fields c{file, (where.empty() ? "" : where + ", ") + "section '" + p.sections[k].name + "'", e};
            std::int64_t bits = 0, symbols = 0;
            POCKET_TRY(c.integer("symbol_bits", 1, 32, bits));
            POCKET_TRY(c.integer("symbols", 0, std::int64_t(1) << 46, symbols));
            p.sections[k].symbolBits = static_cast<int>(bits);
            p.sections[k].symbols = static_cast<std::uint64_t>(symbols);
        }
    }
    return p;
}

} // namespace pocket::archive_detail

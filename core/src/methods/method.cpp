#include "pocket/methods/method.h"
#include "pocket/support/phases.h"
#include "pocket/methods/method_base.h"
#include "pocket/methods/vq_kernels.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace pocket {

namespace {

std::string kindName(ParamKind kind)
{
    switch (kind) {
    case ParamKind::Int: return "an integer";
    case ParamKind::Float: return "a number";
    case ParamKind::Choice: return "one of the choices";
    case ParamKind::Bool: return "true or false";
    }
    return "?";
}

std::string formatNumber(double v)
{
    std::ostringstream out;
    out.precision(10);
    out << v;
    return out.str();
}

bool parseIntText(const std::string& text, std::int64_t& out)
{
    if (text.empty())
        return false;
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (errno != 0 || end != text.c_str() + text.size())
        return false;
    out = v;
    return true;
}

bool parseFloatText(const std::string& text, double& out)
{
    if (text.empty())
        return false;
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (errno != 0 || end != text.c_str() + text.size() || !std::isfinite(v))
        return false;
    out = v;
    return true;
}

bool parseBoolText(const std::string& text, bool& out)
{
    std::string t = text;
    std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
    if (t == "true" || t == "1" || t == "yes" || t == "on")
        out = true;
    else if (t == "false" || t == "0" || t == "no" || t == "off")
        out = false;
    else
        return false;
    return true;
}

// Validates one value and returns its canonical text (so equal settings compare and serialise equal).
Result<std::string> canonical(const ParamSpec& spec, const std::string& text)
{
    const std::string prefix = "parameter '" + spec.name + "': ";
    switch (spec.kind) {
    case ParamKind::Int: {
        std::int64_t v = 0;
        if (!parseIntText(text, v))
            return Error::usage(prefix + "'" + text + "' is not " + kindName(spec.kind), "settings");
        if (v < spec.minValue || v > spec.maxValue)
            return Error::usage(prefix + std::to_string(v) + " is out of range [" + formatNumber(spec.minValue) + ", " +
                         formatNumber(spec.maxValue) + "]", "settings");
        return std::to_string(v);
    }
    case ParamKind::Float: {
        double v = 0;
        if (!parseFloatText(text, v))
            return Error::usage(prefix + "'" + text + "' is not " + kindName(spec.kind), "settings");
        if (v < spec.minValue || v > spec.maxValue)
            return Error::usage(prefix + formatNumber(v) + " is out of range [" + formatNumber(spec.minValue) + ", " +
                         formatNumber(spec.maxValue) + "]", "settings");
        // Shortest text that reads back to the same double.
        for (int precision = 1; precision <= 17; ++precision) {
            std::ostringstream out;
            out.precision(precision);
            out << v;
            double back = 0;
            if (parseFloatText(out.str(), back) && back == v)
                return out.str();
        }
        return formatNumber(v);
    }
    case ParamKind::Choice: {
        if (std::find(spec.choices.begin(), spec.choices.end(), text) == spec.choices.end()) {
            std::string list;
            for (const std::string& c : spec.choices)
                list += (list.empty() ? "" : ", ") + c;
            return Error::usage(prefix + "'" + text + "' is not one of: " + list, "settings");
        }
        return text;
    }
    case ParamKind::Bool: {
        bool v = false;
        if (!parseBoolText(text, v))
            return Error::usage(prefix + "'" + text + "' is not " + kindName(spec.kind), "settings");
        return std::string(v ? "true" : "false");
    }
    }
    return Error::usage(prefix + "unknown kind", "settings");
}

std::string knownNames(const std::vector<ParamSpec>& schema)
{
    std::string list;
    for (const ParamSpec& spec : schema)
        list += (list.empty() ? "" : ", ") + spec.name;
    return list;
}

} // namespace

const ParamSpec* findParamSpec(const std::vector<ParamSpec>& schema, const std::string& name)
{
    for (const ParamSpec& spec : schema)
        if (spec.name == name)
            return &spec;
    return nullptr;
}

Result<ParamSet> ParamSet::resolve(const std::vector<ParamSpec>& schema, const std::map<std::string, std::string>& values)
{
    ParamSet set;
    for (const ParamSpec& spec : schema) {
        auto value = canonical(spec, spec.defaultValue);
        if (!value)
            return Error::internal("default of " + value.message());
        set.m_values[spec.name] = *value;
    }
    for (const auto& [name, text] : values) {
        const ParamSpec* spec = findParamSpec(schema, name);
        if (!spec)
            return Error::usage("unknown parameter '" + name + "' (known: " + knownNames(schema) + ")", "settings");
        auto value = canonical(*spec, text);
        if (!value)
            return value.error();
        set.m_values[name] = *value;
    }
    return set;
}

Result<ParamSet> ParamSet::resolve(const std::vector<ParamSpec>& schema, const std::vector<std::string>& assignments)
{
    std::map<std::string, std::string> values;
    for (const std::string& assignment : assignments) {
        const auto eq = assignment.find('=');
        if (eq == std::string::npos || eq == 0)
            return Error::usage("setting '" + assignment + "': expected name=value", "settings");
        values[assignment.substr(0, eq)] = assignment.substr(eq + 1);
    }
    return resolve(schema, values);
}

std::int64_t ParamSet::getInt(const std::string& name) const
{
    std::int64_t v = 0;
    parseIntText(getText(name), v);
    return v;
}

double ParamSet::getFloat(const std::string& name) const
{
    double v = 0;
    parseFloatText(getText(name), v);
    return v;
}

const std::string& ParamSet::getText(const std::string& name) const
{
    static const std::string empty;
    const auto it = m_values.find(name);
    return it == m_values.end() ? empty : it->second;
}

bool ParamSet::getBool(const std::string& name) const
{
    bool v = false;
    parseBoolText(getText(name), v);
    return v;
}

std::string ParamSet::toJson(const std::vector<ParamSpec>& schema) const
{
    nlohmann::ordered_json out = nlohmann::ordered_json::object();
    for (const auto& [name, text] : m_values) {
        const ParamSpec* spec = findParamSpec(schema, name);
        const ParamKind kind = spec ? spec->kind : ParamKind::Choice;
        if (kind == ParamKind::Int)
            out[name] = getInt(name);
        else if (kind == ParamKind::Float)
            out[name] = getFloat(name);
        else if (kind == ParamKind::Bool)
            out[name] = getBool(name);
        else
            out[name] = text;
    }
    return out.dump();
}

BitCounts& BitCounts::operator+=(const BitCounts& other)
{
    indexBits += other.indexBits;
    codebookBits += other.codebookBits;
    decoderBits += other.decoderBits;
    scaleBits += other.scaleBits;
    return *this;
}

BitCounts GroupPayload::totalBits() const
{
    BitCounts total = sharedBits;
    for (const MatrixResult& m : matrices)
        total += m.bits;
    return total;
}

const PayloadSection* GroupPayload::section(const std::string& name) const
{
    for (const PayloadSection& s : sections)
        if (s.name == name)
            return &s;
    return nullptr;
}

Result<std::vector<std::vector<MatrixRef>>> CompressionMethod::planGroups(const std::vector<MatrixRef>& matrices, const ParamSet&) const
{
    std::vector<std::vector<MatrixRef>> groups;
    for (const MatrixRef& m : matrices)
        groups.push_back({m});
    return groups;
}

PayloadSection codeSection(std::string name, const std::int32_t* values, std::int64_t count, int bits)
{
    PayloadSection s{std::move(name), packBits(values, count, bits), bits, static_cast<std::uint64_t>(count)};
    return s;
}

std::uint64_t payloadBytes(const GroupPayload& payload)
{
    std::uint64_t n = payload.metaJson.size() + payload.paramsJson.size();
    for (const PayloadSection& s : payload.sections)
        n += s.bytes.size() + s.name.size();
    return n;
}

namespace {
// CompressionMethod::prepareDecoder's default: decode() the whole payload for each matrix.
class WholePayloadDecoder final : public PayloadDecoder {
public:
    WholePayloadDecoder(const CompressionMethod& method, GroupPayload payload) : m_method(method), m_payload(std::move(payload)) {}
    std::size_t matrixCount() const override { return m_payload.matrices.size(); }
    const MatrixRef& matrix(std::size_t index) const override { return m_payload.matrices.at(index).ref; }
    std::uint64_t bytes() const override { return payloadBytes(m_payload); }
    Status decodeMatrix(std::size_t index, float* out, int) const override
    {
        if (index >= m_payload.matrices.size())
            return Error::internal("decodeMatrix: no matrix " + std::to_string(index) + " in group " + m_payload.groupId);
        auto decoded = m_method.decode(m_payload);
        if (!decoded)
            return decoded.error();
        const std::vector<float>& values = (*decoded)[index];
        if (static_cast<std::int64_t>(values.size()) != m_payload.matrices[index].ref.weights())
            return Error::internal(m_payload.matrices[index].ref.name + ": decoded to the wrong number of weights");
        std::copy(values.begin(), values.end(), out);
        return {};
    }

private:
    const CompressionMethod& m_method;
    GroupPayload m_payload;
};
} // namespace

Result<std::unique_ptr<PayloadDecoder>> CompressionMethod::prepareDecoder(GroupPayload payload) const
{
    return std::unique_ptr<PayloadDecoder>(new WholePayloadDecoder(*this, std::move(payload)));
}

double matrixBitsPerWeight(const MatrixRef& ref, const BitCounts& own, const BitCounts& shared, std::int64_t groupWeights)
{
    if (ref.weights() <= 0 || groupWeights <= 0)
        return 0;
    const double share = static_cast<double>(shared.total()) * static_cast<double>(ref.weights()) / static_cast<double>(groupWeights);
    return (static_cast<double>(own.total()) + share) / static_cast<double>(ref.weights());
}

std::vector<std::vector<MatrixRef>> groupsBySharing(const std::vector<MatrixRef>& matrices, const std::string& scope)
{
    std::vector<std::vector<MatrixRef>> groups;
    if (scope == "model") {
        if (!matrices.empty())
            groups.push_back(matrices);
    } else if (scope == "type") {
        for (MatrixType type : kMatrixTypes) {
            std::vector<MatrixRef> group;
            for (const MatrixRef& m : matrices)
                if (m.type == type)
                    group.push_back(m);
            if (!group.empty())
                groups.push_back(group);
        }
    } else {
        for (const MatrixRef& m : matrices)
            groups.push_back({m});
    }
    return groups;
}

std::string matrixGroupId(const std::vector<MatrixRef>& group, std::size_t index, std::size_t selectedCount)
{
    if (group.size() == 1)
        return group.front().name;
    bool sameType = true;
    for (const MatrixRef& m : group)
        sameType = sameType && m.type == group.front().type;
    if (sameType)
        return std::string("type:") + matrixTypeName(group.front().type);
    if (group.size() == selectedCount)
        return "model";
    return "group" + std::to_string(index);
}

std::uint64_t groupSeed(std::int64_t seed, const std::string& groupId)
{
    std::uint64_t h = 1469598103934665603ull; // FNV-1a
    for (unsigned char c : groupId) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return static_cast<std::uint64_t>(seed) ^ h;
}

void measureReconstruction(const MatrixGroup& group, const std::vector<std::vector<float>>& decoded, GroupPayload& payload)
{
    for (std::size_t i = 0; i < group.matrices.size() && i < decoded.size() && i < payload.matrices.size(); ++i) {
        const std::vector<float>& w = group.matrices[i].values;
        double err = 0, sig = 0;
        for (std::size_t j = 0; j < w.size() && j < decoded[i].size(); ++j) {
            const double e = static_cast<double>(w[j]) - decoded[i][j];
            err += e * e;
            sig += static_cast<double>(w[j]) * w[j];
        }
        payload.matrices[i].mse = w.empty() ? 0 : err / static_cast<double>(w.size());
        payload.matrices[i].snrDb = err > 0 ? 10 * std::log10(sig / err) : 99;
    }
}

Status measureByDecoding(const CompressionMethod& method, const MatrixGroup& group, GroupPayload& payload)
{
    auto decoded = method.decode(payload);
    if (!decoded)
        return decoded.error();
    measureReconstruction(group, *decoded, payload);
    return {};
}

Result<GroupPayload> MethodBase::compress(const MatrixGroup& group, const ParamSet& params, const CompressContext& context)
{
    for (const WeightMatrix& m : group.matrices)
        if (static_cast<std::int64_t>(m.values.size()) != m.ref.weights())
            return methodError(m.ref.name + ": expected " + std::to_string(m.ref.weights()) + " values", ErrorKind::Internal);
    GroupPayload payload;
    payload.groupId = group.id;
    payload.methodId = m_info.id;
    payload.methodVersion = m_info.version;
    payload.paramsJson = params.toJson(m_info.params);
    const PhaseLogBinding bind(context.phases); // the host's phase log, in a plugin's copy of core
    POCKET_TRY(compressInto(group, params, context, payload));
    const ScopedPhase phase("measuring");
    POCKET_TRY(measureByDecoding(*this, group, payload));
    return payload;
}

} // namespace pocket

// The model archive on top of the container: the manifest (model config, embedded tokenizer,
// stored tensors, compressed groups, layer selection), its validation, writing and reading.
#include "pocket/archive/model_archive.h"

#include "manifest_fields.h"

#include "pocket/archive/lossless.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/dtype.h"

#include <algorithm>
#include <functional>
#include <cmath>
#include <limits>
#include <map>
#include <set>

namespace pocket {

using namespace archive_detail;

namespace {

std::string tensorSectionName(const std::string& tensor) { return "tensor/" + tensor; }
std::string groupSectionName(std::size_t group, const std::string& name) { return "group/" + std::to_string(group) + "/" + name; }
constexpr const char* kTokenizerSection = "tokenizer";

// Byte size of `count` elements of `type`, or false on overflow.
bool byteSize(const std::vector<std::int64_t>& shape, DType type, std::uint64_t& out)
{
    std::uint64_t count = 1;
    for (const std::int64_t d : shape) {
        if (d < 0)
            return false;
        const auto dim = static_cast<std::uint64_t>(d);
        if (dim != 0 && count > std::numeric_limits<std::uint64_t>::max() / 16 / dim)
            return false;
        count *= dim;
    }
    out = count * dtypeSize(type);
    return true;
}

// Every tensor of the architecture is either stored or compressed, exactly once, with its shape.
Status checkModelLayout(const ArchiveManifest& m, const std::string& file)
{
    POCKET_TRY(m.config.validate(file));
    std::map<std::string, std::vector<std::int64_t>> expected;
    for (const TensorInfo& t : expectedTensors(m.config)) expected[t.name] = t.shape;
    std::set<std::string> seen;
    auto place = [&](const std::string& name, const std::vector<std::int64_t>& shape, const std::string& where) -> Status {
        const auto it = expected.find(name);
        if (it == expected.end())
            return fileError(file, where + ": '" + name + "' is not a tensor of this " + m.config.architecture + " model");
        if (it->second != shape)
            return fileError(file, where + ": '" + name + "' has shape " + shapeString(shape) + " but the model needs " + shapeString(it->second));
        if (!seen.insert(name).second)
            return fileError(file, where + ": '" + name + "' is stored more than once");
        return {};
    };
    for (const ArchiveTensor& t : m.tensors) {
        if (!isFloatType(t.dtype))
            return fileError(file, "tensor '" + t.name + "': dtype " + dtypeName(t.dtype) + " is not a float type");
        POCKET_TRY(place(t.name, t.shape, "tensor '" + t.name + "'"));
    }
    std::set<std::string> ids;
    for (std::size_t g = 0; g < m.groups.size(); ++g) {
        const GroupPayload& p = m.groups[g].payload;
        const std::string where = groupWhere(g, p.groupId);
        if (!ids.insert(p.groupId).second)
            return fileError(file, where + ": the group id appears twice");
        if (m.groups[g].sectionNames.size() != p.sections.size())
            return fileError(file, where + ": " + std::to_string(p.sections.size()) + " payload sections but " +
                                       std::to_string(m.groups[g].sectionNames.size()) + " container sections");
        for (const MatrixResult& r : p.matrices) {
            if (r.ref.layer < 0 || r.ref.layer >= m.config.numLayers || r.ref.name != matrixTensorName(r.ref.layer, r.ref.type))
                return fileError(file, where + ": matrix '" + r.ref.name + "' does not match its layer " + std::to_string(r.ref.layer) + " and type " + matrixTypeName(r.ref.type));
            POCKET_TRY(place(r.ref.name, {r.ref.rows, r.ref.cols}, where));
        }
    }
    for (const TensorInfo& t : expectedTensors(m.config))
        if (!seen.count(t.name))
            return fileError(file, "tensor '" + t.name + "' is neither stored nor compressed");
    return {};
}

// The compressed matrices of the groups, by tensor name.
std::map<std::string, const MatrixRef*> compressedMatrices(const ArchiveManifest& m)
{
    std::map<std::string, const MatrixRef*> out;
    for (const ArchiveGroup& g : m.groups)
        for (const MatrixResult& r : g.payload.matrices) out[r.ref.name] = &r.ref;
    return out;
}

std::string adapterSectionName(const std::string& tensor, const char* which) { return "adapter/" + tensor + "/" + which; }

// Each adapter on a distinct compressed matrix, with its shape; when writing, its bytes sized.
Status checkAdapters(const ArchiveManifest& m, const std::string& path, bool needBytes = true)
{
    const std::map<std::string, const MatrixRef*> compressed = compressedMatrices(m);
    std::set<std::string> seen;
    for (const ArchiveAdapter& a : m.adapters) {
        const std::string where = "adapter '" + a.tensor + "'";
        const auto it = compressed.find(a.tensor);
        if (it == compressed.end())
            return fileError(path, where + ": not a compressed matrix of the archive");
        if (!seen.insert(a.tensor).second)
            return fileError(path, where + ": given twice");
        if (a.rank < 1 || a.rank > std::min(it->second->rows, it->second->cols))
            return fileError(path, where + ": rank " + std::to_string(a.rank) + " must be 1 .. min(rows, cols)");
        if (a.rows != it->second->rows || a.cols != it->second->cols)
            return fileError(path, where + ": shape " + std::to_string(a.rows) + "x" + std::to_string(a.cols) + " differs from the matrix's");
        if (!std::isfinite(a.alpha))
            return fileError(path, where + ": alpha is not finite");
        const std::uint64_t needA = 2 * static_cast<std::uint64_t>(a.rank * a.cols), needB = 2 * static_cast<std::uint64_t>(a.rows * a.rank);
        if (needBytes && (a.bytesA.size() != needA || a.bytesB.size() != needB))
            return fileError(path, where + ": its values are missing or of the wrong size");
    }
    return {};
}

Status writeArchiveUnguarded(const std::string& path, ArchiveInput& input)
{
    ArchiveManifest& m = input.manifest;
    for (ArchiveTensor& t : m.tensors) t.section = tensorSectionName(t.name);
    for (std::size_t g = 0; g < m.groups.size(); ++g) {
        auto& group = m.groups[g];
        group.sectionNames.clear();
        for (const PayloadSection& s : group.payload.sections) group.sectionNames.push_back(groupSectionName(g, s.name));
    }
    for (ArchiveAdapter& a : m.adapters) {
        a.sectionA = adapterSectionName(a.tensor, "a");
        a.sectionB = adapterSectionName(a.tensor, "b");
    }
    POCKET_TRY(checkModelLayout(m, path));
    POCKET_TRY(checkAdapters(m, path));
    const bool hasTokenizer = !m.tokenizerKind.empty();
    if (hasTokenizer && input.tokenizerBytes.empty())
        return fileError(path, "tokenizer '" + m.tokenizerKind + "' has no bytes to embed");
    if (!hasTokenizer && !input.tokenizerBytes.empty())
        return fileError(path, "tokenizer bytes given without a tokenizer kind");
    if (!m.tensors.empty() && !input.tensorBytes)
        return fileError(path, "no source for the uncompressed tensors");

    Json j = Json::object();
    const std::string configText = hfConfigJson(m.config);
    auto model = parseJson(configText.data(), configText.size(), path, "the model config");
    if (!model)
        return model.error();
    j["model"] = std::move(*model);
    j["source"] = m.sourceName;
    j["creator"] = m.creator;
    if (hasTokenizer)
        j["tokenizer"] = Json{{"kind", m.tokenizerKind}, {"file_name", m.tokenizerFileName}, {"section", kTokenizerSection}};
    else
        j["tokenizer"] = nullptr;
    Json tensors = Json::array();
    for (const ArchiveTensor& t : m.tensors)
        tensors.push_back(Json{{"name", t.name}, {"dtype", dtypeName(t.dtype)}, {"shape", t.shape}, {"section", t.section}});
    j["tensors"] = std::move(tensors);
    Json groups = Json::array();
    for (const ArchiveGroup& g : m.groups) {
        auto pj = payloadToJson(g.payload, path);
        if (!pj)
            return pj.error();
        (*pj)["sections"] = g.sectionNames;
        if (pj->contains("section_codes"))
            for (std::size_t k = 0; k < g.payload.sections.size(); ++k) {
                Json& e = (*pj)["section_codes"][k];
                if (e.is_null())
                    continue;
                e["codec"] = codecName(k < g.coding.size() ? g.coding[k].codec : SectionCoding::Codec::None);
                if (k < g.coding.size() && g.coding[k].entropyBits >= 0)
                    e["entropy_bits"] = realJson(g.coding[k].entropyBits);
            }
        groups.push_back(std::move(*pj));
    }
    j["groups"] = std::move(groups);
    auto selection = objectFromText(m.selectionJson, path, "the layer selection");
    if (!selection)
        return selection.error();
    j["selection"] = std::move(*selection);
    if (!m.adapters.empty()) {
        Json adapters = Json::array();
        for (const ArchiveAdapter& a : m.adapters)
            adapters.push_back(Json{{"tensor", a.tensor}, {"rank", a.rank}, {"alpha", realJson(a.alpha)}, {"a", a.sectionA}, {"b", a.sectionB}});
        j["adapters"] = std::move(adapters);
    }
    auto text = dumpStrict(j, path);
    if (!text)
        return text.error();

    const bool coded = std::any_of(m.groups.begin(), m.groups.end(), [](const ArchiveGroup& g) { return g.anyCoded(); });
    ContainerWriter writer(path, "model", !m.adapters.empty() ? 3 : coded ? 2 : 1);
    POCKET_TRY(writer.open());
    if (hasTokenizer)
        POCKET_TRY(writer.addSection(kTokenizerSection, input.tokenizerBytes.data(), input.tokenizerBytes.size()));
    for (const ArchiveTensor& t : m.tensors) {
        std::uint64_t size = 0;
        if (!byteSize(t.shape, t.dtype, size))
            return fileError(path, "tensor '" + t.name + "': shape " + shapeString(t.shape) + " is too large");
        POCKET_TRY(writer.addSection(t.section, size, [&](const ContainerWriter::Sink& sink) { return input.tensorBytes(t, sink); }));
    }
    for (const ArchiveGroup& g : m.groups)
        for (std::size_t k = 0; k < g.payload.sections.size(); ++k)
            POCKET_TRY(writer.addSection(g.sectionNames[k], g.payload.sections[k].bytes.data(), g.payload.sections[k].bytes.size()));
    for (const ArchiveAdapter& a : m.adapters) {
        POCKET_TRY(writer.addSection(a.sectionA, a.bytesA.data(), a.bytesA.size()));
        POCKET_TRY(writer.addSection(a.sectionB, a.bytesB.data(), a.bytesB.size()));
    }
    return writer.finish(*text);
}

// A group's "codec" and "entropy_bits" of its section_codes entries (format 2; a version 1 file
// has none coded).
Status readSectionCoding(const Json& e, const std::string& path, const std::string& where, std::uint32_t version, ArchiveGroup& group)
{
    const auto it = e.find("section_codes");
    if (it == e.end())
        return {};
    group.coding.assign(group.payload.sections.size(), SectionCoding{});
    for (std::size_t k = 0; k < it->size(); ++k) {
        const Json& c = (*it)[k];
        if (c.is_null())
            continue;
        const Fields f{path, where + ", section '" + group.payload.sections[k].name + "'", c};
        std::string codec;
        POCKET_TRY(f.string("codec", codec));
        if (codec == "rans" || codec == "zstd") {
            if (version < 2)
                return f.bad("codec '" + codec + "' needs archive format version 2 (the file says " + std::to_string(version) + ")");
            if (group.payload.sections[k].symbolBits > 16)
                return f.bad("codec '" + codec + "' takes symbols of at most 16 bits");
            if (const std::uint64_t limit = codeLimit(group.payload); group.payload.sections[k].symbols > limit)
                return f.bad("a coded stream of " + std::to_string(group.payload.sections[k].symbols) +
                             " codes is longer than its group's " + std::to_string(limit) + " weights");
            group.coding[k].codec = codec == "rans" ? SectionCoding::Codec::Rans : SectionCoding::Codec::Zstd;
        } else if (codec != "none") {
            return f.bad("unknown codec '" + codec + "' (this build knows 'none', 'rans' and 'zstd')");
        }
        if (f.get("entropy_bits"))
            POCKET_TRY(f.real("entropy_bits", group.coding[k].entropyBits));
    }
    return {};
}

// A packed code stream must be exactly its codes' size; a coded one is checked when decoded.
Status checkStoredStream(ArchiveGroup& group, std::size_t k, const ContainerSection& stored, const std::string& path, const std::string& where)
{
    const PayloadSection& ps = group.payload.sections[k];
    if (k < group.coding.size())
        group.coding[k].storedBytes = stored.size;
    const std::uint64_t packed = packedCodeBytes(ps);
    if (ps.symbolBits > 0 && !group.coded(k) && stored.size != packed)
        return fileError(path, where + ": section '" + ps.name + "' holds " + std::to_string(stored.size) + " bytes, not the " +
                                   std::to_string(packed) + " of its " + std::to_string(ps.symbols) + " packed " +
                                   std::to_string(ps.symbolBits) + "-bit codes");
    return {};
}

using SectionUse = std::function<Result<const ContainerSection*>(const std::string& name, const std::string& where)>;

// The manifest's "adapters" (format 3): each on a compressed matrix, its sections sized to its fp16 values.
Status readAdapters(const Fields& f, const ContainerReader& c, ArchiveManifest& m, const SectionUse& useSection)
{
    const std::string& path = c.path();
    if (c.formatVersion() < 3)
        return f.bad("key 'adapters' needs format version 3 (this file says " + std::to_string(c.formatVersion()) + ")");
    auto adapters = f.array("adapters");
    if (!adapters)
        return adapters.error();
    const std::map<std::string, const MatrixRef*> compressed = compressedMatrices(m);
    for (std::size_t i = 0; i < (*adapters)->size(); ++i) {
        const Json& e = (**adapters)[i];
        if (!e.is_object())
            return f.bad("adapters[" + std::to_string(i) + "] is not an object");
        const Fields a{path, "manifest adapters[" + std::to_string(i) + "]", e};
        ArchiveAdapter adapter;
        std::int64_t rank = 0;
        POCKET_TRY(a.string("tensor", adapter.tensor));
        POCKET_TRY(a.integer("rank", 1, kMaxMatrixDim, rank));
        adapter.rank = static_cast<int>(rank);
        POCKET_TRY(a.real("alpha", adapter.alpha));
        POCKET_TRY(a.string("a", adapter.sectionA));
        POCKET_TRY(a.string("b", adapter.sectionB));
        if (const auto it = compressed.find(adapter.tensor); it != compressed.end()) {
            adapter.rows = it->second->rows;
            adapter.cols = it->second->cols;
        }
        m.adapters.push_back(std::move(adapter));
    }
    POCKET_TRY(checkAdapters(m, path, false));
    for (const ArchiveAdapter& a : m.adapters) {
        for (const auto& [section, size] : {std::pair{a.sectionA, 2 * a.rank * a.cols}, std::pair{a.sectionB, 2 * a.rows * a.rank}}) {
            auto s = useSection(section, "adapter '" + a.tensor + "'");
            if (!s)
                return s.error();
            if ((*s)->size != static_cast<std::uint64_t>(size))
                return fileError(path, "adapter '" + a.tensor + "': section '" + section + "' holds " + std::to_string((*s)->size) +
                                           " bytes, not the " + std::to_string(size) + " of its fp16 values");
        }
    }
    return {};
}

// Long: one block per manifest key, in the file's order, then the sections they reference.
Status openArchiveManifest(const ContainerReader& c, ArchiveManifest& m)
{
    const std::string& path = c.path();
    if (c.kind() != "model")
        return fileError(path, "is a '" + c.kind() + "' container, not a model archive");
    auto parsed = parseJson(c.manifestJson().data(), c.manifestJson().size(), path, "the manifest");
    if (!parsed)
        return parsed.error();
    const Json& j = *parsed;
    const Fields f{path, "manifest", j};
    std::set<std::string> used; // container sections referenced so far
    auto useSection = [&](const std::string& name, const std::string& where) -> Result<const ContainerSection*> {
        const ContainerSection* s = c.find(name);
        if (!s)
            return fileError(path, where + ": section '" + name + "' does not exist");
        if (!used.insert(name).second)
            return fileError(path, where + ": section '" + name + "' is used twice");
        return s;
    };

    auto model = f.object("model");
    if (!model)
        return model.error();
    auto config = parseHfConfig((*model)->dump(), path + ": manifest 'model'");
    if (!config)
        return config.error();
    m.config = std::move(*config);
    POCKET_TRY(f.string("source", m.sourceName));
    POCKET_TRY(f.string("creator", m.creator));

    auto tokenizer = f.need("tokenizer");
    if (!tokenizer)
        return tokenizer.error();
    if (!(*tokenizer)->is_null()) {
        if (!(*tokenizer)->is_object())
            return f.bad("key 'tokenizer' must be an object or null");
        const Fields t{path, "manifest tokenizer", **tokenizer};
        std::string section;
        POCKET_TRY(t.string("kind", m.tokenizerKind));
        POCKET_TRY(t.string("file_name", m.tokenizerFileName));
        POCKET_TRY(t.string("section", section));
        if (m.tokenizerKind.empty())
            return t.bad("kind is empty");
        POCKET_TRY(useSection(section, "tokenizer"));
        if (section != kTokenizerSection)
            return t.bad(std::string("section must be '") + kTokenizerSection + "'");
    }

    auto tensors = f.array("tensors");
    if (!tensors)
        return tensors.error();
    for (std::size_t i = 0; i < (*tensors)->size(); ++i) {
        const Json& e = (**tensors)[i];
        if (!e.is_object())
            return f.bad("tensors[" + std::to_string(i) + "] is not an object");
        const Fields t{path, "manifest tensors[" + std::to_string(i) + "]", e};
        ArchiveTensor tensor;
        std::string dtype;
        POCKET_TRY(t.string("name", tensor.name));
        POCKET_TRY(t.string("dtype", dtype));
        const auto parsedType = parseDType(dtype);
        if (!parsedType)
            return t.bad("unknown dtype '" + dtype + "'");
        tensor.dtype = *parsedType;
        auto shape = t.array("shape");
        if (!shape)
            return shape.error();
        for (const Json& d : **shape) {
            if (!d.is_number_unsigned() || d.get<std::uint64_t>() > static_cast<std::uint64_t>(kMaxMatrixDim))
                return t.bad("shape entries must be integers in [0, " + std::to_string(kMaxMatrixDim) + "]");
            tensor.shape.push_back(static_cast<std::int64_t>(d.get<std::uint64_t>()));
        }
        POCKET_TRY(t.string("section", tensor.section));
        m.tensors.push_back(std::move(tensor));
    }

    auto groups = f.array("groups");
    if (!groups)
        return groups.error();
    for (std::size_t g = 0; g < (*groups)->size(); ++g) {
        const Json& e = (**groups)[g];
        const std::string where = "group " + std::to_string(g);
        if (!e.is_object())
            return fileError(path, where + ": must be an object");
        auto payload = payloadFromJson(e, path, where);
        if (!payload)
            return payload.error();
        ArchiveGroup group;
        group.payload = std::move(*payload);
        POCKET_TRY((Fields{path, groupWhere(g, group.payload.groupId), e}.strings("sections", group.sectionNames)));
        POCKET_TRY(readSectionCoding(e, path, groupWhere(g, group.payload.groupId), c.formatVersion(), group));
        m.groups.push_back(std::move(group));
    }

    auto selection = f.object("selection");
    if (!selection)
        return selection.error();
    m.selectionJson = (*selection)->dump();

    if (j.contains("adapters"))
        POCKET_TRY(readAdapters(f, c, m, useSection));

    POCKET_TRY(checkModelLayout(m, path));
    for (const ArchiveTensor& t : m.tensors) {
        auto s = useSection(t.section, "tensor '" + t.name + "'");
        if (!s)
            return s.error();
        std::uint64_t size = 0;
        if (!byteSize(t.shape, t.dtype, size) || size != (*s)->size)
            return fileError(path, "tensor '" + t.name + "': shape " + shapeString(t.shape) + " of " + dtypeName(t.dtype) + " needs " +
                                       std::to_string(size) + " bytes but section '" + t.section + "' holds " + std::to_string((*s)->size));
    }
    for (std::size_t g = 0; g < m.groups.size(); ++g) {
        ArchiveGroup& group = m.groups[g];
        for (std::size_t k = 0; k < group.sectionNames.size(); ++k) {
            auto s = useSection(group.sectionNames[k], groupWhere(g, group.payload.groupId));
            if (!s)
                return s.error();
            POCKET_TRY(checkStoredStream(group, k, **s, path, groupWhere(g, group.payload.groupId)));
        }
    }
    for (const ContainerSection& s : c.sections())
        if (!used.count(s.name))
            return fileError(path, "section '" + s.name + "' is not referenced by the manifest");
    return {};
}
} // namespace

Status writeArchive(const std::string& path, ArchiveInput input)
{
    return guarded(path, [&]() { return writeArchiveUnguarded(path, input); });
}

Result<std::shared_ptr<Archive>> Archive::open(const std::string& path, ContainerReader::Verify verify)
{
    return guarded(path, [&]() -> Result<std::shared_ptr<Archive>> {
        auto container = ContainerReader::open(path, verify);
        if (!container)
            return container.error();
        auto archive = std::make_shared<Archive>();
        archive->m_container = std::move(*container);
        POCKET_TRY(openArchiveManifest(*archive->m_container, archive->m_manifest));
        return archive;
    });
}

Result<const GroupPayload*> PayloadCache::get(std::size_t group)
{
    if (!m_payload || m_group != group) {
        auto p = m_archive->groupPayload(group);
        if (!p)
            return p.error();
        m_payload = std::make_unique<GroupPayload>(std::move(*p));
        m_group = group;
    }
    return m_payload.get();
}

bool ArchiveGroup::anyCoded() const
{
    return std::any_of(coding.begin(), coding.end(), [](const SectionCoding& c) { return c.codec != SectionCoding::Codec::None; });
}

Result<GroupPayload> Archive::groupPayload(std::size_t groupIndex) const
{
    auto p = storedPayload(groupIndex);
    if (!p || !m_manifest.groups[groupIndex].anyCoded())
        return p;
    POCKET_TRY(decodeLosslessStage(m_manifest.groups[groupIndex], *p, m_container->path()));
    return p;
}

Result<GroupPayload> Archive::storedPayload(std::size_t groupIndex) const
{
    const std::string& path = m_container->path();
    return guarded(path, [&]() -> Result<GroupPayload> {
        if (groupIndex >= m_manifest.groups.size())
            return fileError(path, "no group " + std::to_string(groupIndex) + " (the archive has " + std::to_string(m_manifest.groups.size()) + ")");
        const ArchiveGroup& g = m_manifest.groups[groupIndex];
        GroupPayload p = g.payload;
        for (std::size_t k = 0; k < p.sections.size(); ++k) {
            auto bytes = m_container->section(g.sectionNames[k]);
            if (!bytes)
                return bytes.error();
            p.sections[k].bytes.assign(bytes->data, bytes->data + bytes->info.byteSize);
        }
        return p;
    });
}

Result<TensorData> Archive::tensor(const std::string& name) const
{
    const auto it = std::find_if(m_manifest.tensors.begin(), m_manifest.tensors.end(), [&](const ArchiveTensor& t) { return t.name == name; });
    if (it == m_manifest.tensors.end())
        return fileError(m_container->path(), "no stored tensor named '" + name + "'");
    auto bytes = m_container->section(it->section);
    if (!bytes)
        return bytes.error();
    TensorData out = std::move(*bytes);
    out.info.name = it->name;
    out.info.dtype = it->dtype;
    out.info.shape = it->shape;
    return out;
}

Result<std::vector<std::uint8_t>> Archive::tokenizerBytes() const
{
    if (m_manifest.tokenizerKind.empty())
        return std::vector<std::uint8_t>();
    return guarded(m_container->path(), [&]() -> Result<std::vector<std::uint8_t>> {
        auto bytes = m_container->section(kTokenizerSection);
        if (!bytes)
            return bytes.error();
        return std::vector<std::uint8_t>(bytes->data, bytes->data + bytes->info.byteSize);
    });
}


bool hasAdapter(const ArchiveManifest& manifest, const std::string& tensor)
{
    return std::any_of(manifest.adapters.begin(), manifest.adapters.end(), [&](const ArchiveAdapter& a) { return a.tensor == tensor; });
}

ArchiveAdapter archiveAdapter(const LoraAdapter& adapter)
{
    ArchiveAdapter out;
    out.tensor = adapter.name;
    out.rank = adapter.rank;
    out.alpha = adapter.alpha;
    out.rows = adapter.rows;
    out.cols = adapter.cols;
    auto pack = [](const std::vector<float>& values, std::vector<std::uint8_t>& bytes) {
        bytes.resize(2 * values.size());
        for (std::size_t i = 0; i < values.size(); ++i) {
            const std::uint16_t h = floatToHalf(values[i]);
            bytes[2 * i] = static_cast<std::uint8_t>(h & 0xFF);
            bytes[2 * i + 1] = static_cast<std::uint8_t>(h >> 8);
        }
    };
    pack(adapter.a, out.bytesA);
    pack(adapter.b, out.bytesB);
    return out;
}

Result<std::vector<LoraAdapter>> Archive::adapters() const
{
    std::vector<LoraAdapter> out;
    for (const ArchiveAdapter& a : m_manifest.adapters) {
        LoraAdapter adapter;
        adapter.name = a.tensor;
        adapter.rank = a.rank;
        adapter.alpha = static_cast<float>(a.alpha);
        adapter.rows = a.rows;
        adapter.cols = a.cols;
        for (const auto& [section, values] : {std::pair{a.sectionA, &adapter.a}, std::pair{a.sectionB, &adapter.b}}) {
            auto data = m_container->section(section);
            if (!data)
                return data.error();
            const auto* bytes = static_cast<const std::uint8_t*>(data->data);
            values->resize(data->info.byteSize / 2);
            for (std::size_t i = 0; i < values->size(); ++i)
                (*values)[i] = halfToFloat(static_cast<std::uint16_t>(bytes[2 * i] | (bytes[2 * i + 1] << 8)));
        }
        out.push_back(std::move(adapter));
    }
    return out;
}

Status loadAdapterBytes(const Archive& archive, ArchiveManifest& manifest)
{
    auto values = archive.adapters();
    if (!values)
        return values.error();
    manifest.adapters.clear();
    for (const LoraAdapter& a : *values) manifest.adapters.push_back(archiveAdapter(a));
    return {};
}

Status writeArchiveWithAdapters(const std::string& inPath, const std::string& outPath, const std::vector<LoraAdapter>& adapters)
{
    auto archive = Archive::open(inPath);
    if (!archive)
        return archive.error();
    const Archive& a = **archive;
    ArchiveInput input;
    input.manifest = a.manifest();
    for (std::size_t g = 0; g < input.manifest.groups.size(); ++g) {
        auto stored = a.storedPayload(g); // coded sections stay coded, with their coding
        if (!stored)
            return stored.error();
        input.manifest.groups[g].payload = std::move(*stored);
    }
    input.manifest.adapters.clear();
    for (const LoraAdapter& adapter : adapters) input.manifest.adapters.push_back(archiveAdapter(adapter));
    POCKET_TRY(copyStoredParts(a, input));
    return writeArchive(outPath, std::move(input));
}

Status copyStoredParts(const Archive& archive, ArchiveInput& input)
{
    auto tokenizer = archive.tokenizerBytes();
    if (!tokenizer)
        return tokenizer.error();
    input.tokenizerBytes = std::move(*tokenizer);
    input.tensorBytes = [&archive](const ArchiveTensor& t, const ContainerWriter::Sink& sink) -> Status {
        auto data = archive.tensor(t.name);
        if (!data)
            return data.error();
        return sink(data->data, data->info.byteSize);
    };
    return {};
}

} // namespace pocket

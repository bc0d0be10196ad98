// Step 1 of a compression run: what will be compressed, in which groups, with which parameters,
// and what it will cost. Nothing is compressed here; the CLI's dry run and the workbench's
// estimate call this alone.
#include "pocket/jobs/compress_job.h"

#include "pocket/io/checkpoint.h"

#include <algorithm>
#include <map>
#include <set>

namespace pocket {

namespace {

// Matrices with the same method and equal effective settings (the job's settings, then a matrix's
// own overrides; a matrix with its own method takes its overrides alone) form one partition, which
// the method plans as a whole.
struct Partition {
    CompressionMethod* method = nullptr;
    ParamSet params;
    std::vector<MatrixRef> refs;
};
Result<std::vector<Partition>> partitionBySettings(const CompressJobParams& params, CompressionMethod& method,
                                                   const ParamSet& resolved, const std::vector<MatrixRef>& refs,
                                                   const MethodRegistry* registry)
{
    std::vector<Partition> partitions;
    std::map<std::string, std::size_t> partitionOf; // method + canonical parameters -> partition
    for (const MatrixRef& ref : refs) {
        CompressionMethod* m = &method;
        if (auto own = params.matrixMethods.find(ref.name); own != params.matrixMethods.end() && own->second != method.info().id) {
            if (!registry)
                return Error::internal("planCompressJob: per-matrix methods need the method registry");
            auto found = registry->find(own->second);
            if (!found)
                return found.error().prefixed(ref.name);
            m = *found;
        }
        ParamSet effective = resolved;
        auto extra = params.matrixSettings.find(ref.name);
        if (m != &method || extra != params.matrixSettings.end()) {
            std::vector<std::string> merged = m == &method ? params.settings : std::vector<std::string>{};
            if (extra != params.matrixSettings.end())
                merged.insert(merged.end(), extra->second.begin(), extra->second.end());
            auto r = ParamSet::resolve(m->info().params, merged);
            if (!r)
                return r.error().prefixed(m->info().id + ": " + ref.name);
            effective = *r;
        }
        const std::string key = m->info().id + " " + effective.toJson(m->info().params);
        auto [it, inserted] = partitionOf.emplace(key, partitions.size());
        if (inserted)
            partitions.push_back({m, effective, {}});
        partitions[it->second].refs.push_back(ref);
    }
    return partitions;
}

// The method's groups of every partition, with unique ids and estimated bits.
Status planGroups(const std::vector<Partition>& partitions, std::size_t selectedCount, JobPlan& plan, std::set<std::string>& compressed)
{
    std::set<std::string> ids;
    for (std::size_t p = 0; p < partitions.size(); ++p) {
        const ParamSet& ps = partitions[p].params;
        CompressionMethod& method = *partitions[p].method;
        auto groups = method.planGroups(partitions[p].refs, ps);
        if (!groups)
            return groups.error();
        for (auto& g : *groups) {
            const std::size_t i = plan.groups.size();
            std::string id = matrixGroupId(g, i, selectedCount);
            if (partitions.size() > 1 && g.size() > 1) // "type:q_proj" may recur in another partition
                id += "#" + std::to_string(p);
            while (!ids.insert(id).second)
                id += "'";
            std::vector<BitCounts> perMatrix;
            auto shared = method.estimateBits(g, ps, perMatrix);
            if (!shared)
                return shared.error().prefixed(method.info().id);
            plan.estimatedBits.compressed += *shared;
            for (std::size_t j = 0; j < g.size(); ++j) {
                plan.estimatedBits.compressed += perMatrix[j];
                plan.estimatedBits.compressedWeights += static_cast<std::uint64_t>(g[j].weights());
                compressed.insert(g[j].name);
            }
            plan.groupIds.push_back(id);
            plan.groupParams.push_back(ps);
            plan.groupMethods.push_back(&method);
            plan.groups.push_back(std::move(g));
        }
    }
    return {};
}

// Groups that each lie within one block, in block order (stable): calibration carries its windows
// through the blocks once, so partitions must not send it back to an earlier block.
void orderByBlock(JobPlan& plan)
{
    for (const auto& g : plan.groups)
        for (const MatrixRef& m : g)
            if (m.layer != g.front().layer)
                return; // groups span blocks: their Hessians are measured up front, any order works
    std::vector<std::size_t> order(plan.groups.size());
    for (std::size_t i = 0; i < order.size(); ++i)
        order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return plan.groups[a].front().layer < plan.groups[b].front().layer; });
    JobPlan sorted;
    for (std::size_t i : order) {
        sorted.groups.push_back(std::move(plan.groups[i]));
        sorted.groupIds.push_back(std::move(plan.groupIds[i]));
        sorted.groupParams.push_back(std::move(plan.groupParams[i]));
        sorted.groupMethods.push_back(plan.groupMethods[i]);
    }
    sorted.estimatedBits = plan.estimatedBits;
    plan = std::move(sorted);
}

} // namespace

Result<std::vector<MatrixRef>> selectedMatrices(const Checkpoint& checkpoint, const LayerSelection& selection)
{
    auto names = selection.select(checkpoint.config());
    if (!names)
        return names.error();
    const std::set<std::string> wanted(names->begin(), names->end());
    std::vector<MatrixRef> refs;
    for (int layer = 0; layer < checkpoint.config().numLayers; ++layer) {
        for (MatrixType type : kMatrixTypes) {
            const std::string name = matrixTensorName(layer, type);
            if (!wanted.count(name))
                continue;
            const TensorInfo* info = checkpoint.find(name);
            if (!info || info->shape.size() != 2)
                return fileError(checkpoint.path(), "no 2-D tensor " + name);
            refs.push_back({name, layer, type, info->shape[0], info->shape[1]});
        }
    }
    return refs;
}

Result<JobPlan> planCompressJob(const CompressJobParams& params, const Checkpoint& checkpoint, CompressionMethod& method,
                                const MethodRegistry* registry)
{
    if (params.keepDtype != DType::F16 && params.keepDtype != DType::BF16 && params.keepDtype != DType::F32)
        return Error::usage("keep dtype: uncompressed tensors can be kept as f16, bf16 or f32", "keep dtype");
    auto resolved = ParamSet::resolve(method.info().params, params.settings);
    if (!resolved)
        return resolved.error().prefixed(method.info().id);
    auto refs = selectedMatrices(checkpoint, params.selection);
    if (!refs)
        return refs.error();
    if (refs->empty())
        return Error::usage("the layer selection matches no matrix of " + checkpoint.path(), "selection");
    const auto selected = [&](const std::string& name) {
        return std::any_of(refs->begin(), refs->end(), [&](const MatrixRef& r) { return r.name == name; });
    };
    for (const auto& [name, extra] : params.matrixSettings)
        if (!selected(name))
            return Error::usage("per-matrix settings name " + name + ", which is not a selected matrix of " + checkpoint.path(),
                                "matrix settings");
    for (const auto& [name, id] : params.matrixMethods)
        if (!selected(name))
            return Error::usage("per-matrix methods name " + name + ", which is not a selected matrix of " + checkpoint.path(),
                                "matrix methods");
    auto partitions = partitionBySettings(params, method, *resolved, *refs, registry);
    if (!partitions)
        return partitions.error();

    JobPlan plan;
    std::set<std::string> compressed;
    POCKET_TRY(planGroups(*partitions, refs->size(), plan, compressed));
    orderByBlock(plan);
    for (const TensorInfo& t : expectedTensors(checkpoint.config())) {
        const auto n = static_cast<std::uint64_t>(elementCount(t.shape));
        plan.estimatedBits.totalWeights += n;
        if (!compressed.count(t.name))
            plan.estimatedBits.uncompressedBits += n * 8 * dtypeSize(params.keepDtype);
    }
    return plan;
}

} // namespace pocket

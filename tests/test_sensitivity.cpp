// Sensitivity analysis: a unit's perplexity equals a separate perplexity evaluation of the model
// with only that unit replaced by its decoded compression; units group as asked; KL and top-1
// agreement behave (near zero / one at 8 bits, worse at 2 bits); runs stream into the store
// (and stay out of comparisons); cancel keeps finished units; bad input is refused by name.
#include "pocket/archive/archive_checkpoint.h"
#include "pocket/archive/model_archive.h"
#include "pocket/analysis/bit_allocation.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/store/experiment_store.h"
#include "pocket/model/llama_model.h"
#include "pocket/methods/method_registry.h"
#include "pocket/model/perplexity.h"
#include "pocket/analysis/allocation.h"
#include "pocket/analysis/sensitivity.h"
#include "pocket/io/text.h"
#include "pocket/io/tokenizer.h"
#include "test_support.h"

#include <QTemporaryDir>
#include <QtTest>

#include <cmath>
#include <random>

using namespace pocket;

class TestSensitivity : public QObject {
    Q_OBJECT
    QTemporaryDir m_tmp;
    MethodRegistry m_registry;

    SensitivityParams params(const std::string& blocks, const std::string& types, SensitivityUnit unit = SensitivityUnit::Matrix)
    {
        SensitivityParams p;
        p.modelPath = testsupport::demoModel();
        p.textPath = POCKET_RESOURCES_DIR "/text/tinystories_valid_30k.txt";
        p.unit = unit;
        p.ctx = 64;
        p.windows = 3;
        if (!blocks.empty())
            p.selection.blocks = *LayerSelection::parseBlocks(blocks);
        if (!types.empty())
            p.selection.types = *LayerSelection::parseTypes(types);
        return p;
    }

    // The compress job of a plan across methods (base method rtn), codes at their fixed width.
    CompressJobParams planJob(const AllocationRequest& request, const AllocationResult& r, const QString& archive)
    {
        CompressJobParams job;
        job.modelPath = request.base.modelPath;
        job.methodId = "rtn";
        job.matrixSettings = r.matrixSettings;
        job.matrixMethods = r.matrixMethods;
        job.selection = request.base.selection;
        job.calibration = calibrationOf(request.base);
        job.outPath = m_tmp.filePath(archive).toStdString();
        job.entropy.mode = EntropyMode::None;
        return job;
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_tmp.isValid());
        m_registry.loadFolder(POCKET_PLUGIN_DIR);
        QVERIFY(m_registry.find("rtn"));
        setComputeThreads(2);
    }

    void matchesASeparatePerplexityEvaluation()
    {
        SensitivityParams p = params("1", "up");
        auto r = runSensitivity(p, m_registry);
        QVERIFY2(r, r ? "" : r.message().c_str());
        QCOMPARE(r->units.size(), std::size_t(1));
        const UnitSensitivity& u = r->units[0];
        QCOMPARE(u.unit, std::string("model.layers.1.mlp.up_proj.weight"));
        QCOMPARE(r->tokensScored, std::int64_t(3 * 63));

        // The reference: RTN on that one matrix, decoded, put into a freshly loaded model, and the
        // ordinary perplexity evaluation over the same windows.
        auto ckpt = openCheckpoint(p.modelPath);
        QVERIFY(ckpt);
        auto model = LlamaModel::load(**ckpt);
        QVERIFY(model);
        auto tokenizer = loadTokenizer((*ckpt)->tokenizerPath());
        QVERIFY(tokenizer);
        const auto tokens = (*tokenizer)->encode(*readTextFile(p.textPath));
        EvalParams ep;
        ep.ctx = 64;
        ep.maxTokens = 3 * 63;
        auto base = evaluatePerplexity(**model, tokens, (*tokenizer)->bosId(), ep);
        QVERIFY(base);
        QVERIFY(std::abs(base->perplexity - r->basePerplexity) < 1e-6 * base->perplexity);

        CompressionMethod* rtn = *m_registry.find("rtn");
        auto resolved = ParamSet::resolve(rtn->info().params, p.settings);
        QVERIFY(resolved);
        const std::string name = u.unit;
        auto data = (*ckpt)->load(name);
        QVERIFY(data);
        const TensorInfo* info = (*ckpt)->find(name);
        MatrixGroup group{name, {{{name, 1, MatrixType::Up, info->shape[0], info->shape[1]}, data->toFloat(), {}}}};
        auto payload = rtn->compress(group, *resolved, {});
        QVERIFY(payload);
        auto decoded = rtn->decode(*payload);
        QVERIFY(decoded);
        QVERIFY((*model)->setWeight(name, (*decoded)[0]));
        auto after = evaluatePerplexity(**model, tokens, (*tokenizer)->bosId(), ep);
        QVERIFY(after);
        QVERIFY2(std::abs(after->perplexity - u.perplexity) < 1e-5 * after->perplexity,
                 qPrintable(QString("%1 vs %2").arg(after->perplexity, 0, 'g', 10).arg(u.perplexity, 0, 'g', 10)));
        QVERIFY(std::abs(u.deltaPerplexity - (u.perplexity - r->basePerplexity)) < 1e-12);
        QVERIFY(std::abs(u.mse - payload->matrices[0].mse) < 1e-12);
        QVERIFY(u.klMean > 0);
        QVERIFY(u.top1Agreement > 0.5 && u.top1Agreement <= 1);
    }

    // A method that needs calibration gets the uncompressed model's Hessians: its unit equals a
    // compress job of that one matrix with the same calibration windows, decoded from the archive
    // and evaluated on the same windows. GPTQ's units also lose less than RTN's at the same bits.
    void calibratedMethodsMatchACompressJob()
    {
        SensitivityParams p = params("1", "up,down");
        p.methodId = "gptq";
        p.settings = {"bits=3", "group=32"};
        p.calibration.samples = 16;
        p.calibration.length = 64;
        p.calibration.seed = 7;
        auto r = runSensitivity(p, m_registry);
        QVERIFY2(r, r ? "" : r.message().c_str());
        QCOMPARE(r->units.size(), std::size_t(2));

        CompressJobParams job;
        job.modelPath = p.modelPath;
        job.methodId = "gptq";
        job.settings = p.settings;
        job.selection.blocks = *LayerSelection::parseBlocks("1");
        job.selection.types = *LayerSelection::parseTypes("up");
        job.calibration = p.calibration;
        job.calibration.textPath = p.textPath;
        job.outPath = m_tmp.filePath("gptq-up.pllm").toStdString();
        auto compressed = runCompressJob(job, m_registry);
        QVERIFY2(compressed, compressed ? "" : compressed.message().c_str());
        auto archive = openArchiveCheckpoint(job.outPath, m_registry);
        QVERIFY2(archive, archive ? "" : archive.message().c_str());
        const std::string name = "model.layers.1.mlp.up_proj.weight";
        auto decoded = (*archive)->load(name);
        QVERIFY(decoded);
        auto ckpt = openCheckpoint(p.modelPath);
        QVERIFY(ckpt);
        auto model = LlamaModel::load(**ckpt);
        QVERIFY(model);
        QVERIFY((*model)->setWeight(name, decoded->toFloat()));
        auto tokenizer = loadTokenizer((*ckpt)->tokenizerPath());
        QVERIFY(tokenizer);
        EvalParams ep;
        ep.ctx = 64;
        ep.maxTokens = 3 * 63;
        auto after = evaluatePerplexity(**model, (*tokenizer)->encode(*readTextFile(p.textPath)), (*tokenizer)->bosId(), ep);
        QVERIFY(after);
        QCOMPARE(r->units[0].unit, name);
        QVERIFY2(std::abs(after->perplexity - r->units[0].perplexity) < 1e-5 * after->perplexity,
                 qPrintable(QString("%1 vs %2").arg(after->perplexity, 0, 'g', 10).arg(r->units[0].perplexity, 0, 'g', 10)));

        p.methodId = "rtn";
        auto rtn = runSensitivity(p, m_registry);
        QVERIFY(rtn);
        const double gptqKl = r->units[0].klMean + r->units[1].klMean, rtnKl = rtn->units[0].klMean + rtn->units[1].klMean;
        QVERIFY2(gptqKl < rtnKl, qPrintable(QString("gptq %1, rtn %2").arg(gptqKl).arg(rtnKl)));
    }

    void damageGrowsAsBitsShrink()
    {
        SensitivityParams p = params("2", "gate");
        double previousKl = -1, previousTop1 = 2;
        for (const char* bits : {"8", "4", "2"}) {
            p.settings = {std::string("bits=") + bits, "group=32"};
            auto r = runSensitivity(p, m_registry);
            QVERIFY(r);
            const UnitSensitivity& u = r->units[0];
            if (std::string(bits) == "8") {
                QVERIFY2(u.klMean < 1e-4, qPrintable(QString::number(u.klMean)));
                QVERIFY(u.top1Agreement > 0.98);
            }
            QVERIFY2(u.klMean > previousKl, bits);
            QVERIFY(u.top1Agreement <= previousTop1);
            previousKl = u.klMean;
            previousTop1 = u.top1Agreement;
        }
    }

    void unitsGroupAsAsked()
    {
        auto blocks = runSensitivity(params("0-1", "", SensitivityUnit::Block), m_registry);
        QVERIFY(blocks);
        QCOMPARE(blocks->units.size(), std::size_t(2));
        QCOMPARE(blocks->units[1].unit, std::string("block 1"));
        QCOMPARE(blocks->units[1].matrices.size(), std::size_t(7));
        auto types = runSensitivity(params("", "down,q", SensitivityUnit::Type), m_registry);
        QVERIFY(types);
        QCOMPARE(types->units.size(), std::size_t(2));
        QCOMPARE(types->units[0].unit, std::string("q_proj")); // model order, not the order asked
        QCOMPARE(types->units[1].unit, std::string("down_proj"));
        QCOMPARE(types->units[0].matrices.size(), std::size_t(5));
        QCOMPARE(types->units[1].weights, std::int64_t(5 * 64 * 172)); // five blocks of 64 x 172
    }

    void streamsIntoTheStoreAndCancels()
    {
        const std::string storePath = m_tmp.filePath("store.sqlite").toStdString();
        RecorderOptions rec{storePath, true, "test"};
        int reports = 0;
        auto r = runSensitivity(params("0", "q,k,v"), m_registry, &rec, [&](const SensitivityProgress& s) {
            ++reports;
            if (s.latest) { // streamed: this unit is already in the store
                auto store = ExperimentStore::open(storePath);
                auto runs = (*store)->listRuns({RunKind::Sensitivity, std::nullopt, "", "", 0});
                auto run = (*store)->run(runs->front().id);
                if (int(run->matrices.size()) != s.unitsDone)
                    return false;
            }
            return true;
        });
        QVERIFY2(r, r ? "" : r.message().c_str());
        QCOMPARE(reports, 4); // the base pass, then three units
        auto store = ExperimentStore::open(storePath);
        QVERIFY(store);
        auto run = (*store)->run(r->runId);
        QVERIFY(run);
        QCOMPARE(run->kind, RunKind::Sensitivity);
        QCOMPARE(run->status, RunStatus::Done);
        QCOMPARE(run->matrices.size(), std::size_t(3));
        for (std::size_t i = 0; i < 3; ++i) {
            QCOMPARE(*run->matrices[i].sensitivity, r->units[i].klMean);
            QCOMPARE(*run->matrices[i].deltaPerplexity, r->units[i].deltaPerplexity);
            QCOMPARE(*run->matrices[i].top1Agreement, r->units[i].top1Agreement);
        }
        CompareFilter f;
        f.includePublished = false;
        QVERIFY((*store)->compare(f)->empty()); // an analysis is not a compressed model to compare

        // Cancel after the first unit: it stays recorded, the run is marked cancelled.
        auto cancelled = runSensitivity(params("1", "q,k,v"), m_registry, &rec, [](const SensitivityProgress& s) { return s.unitsDone < 1; });
        QVERIFY(!cancelled);
        QCOMPARE(cancelled.message(), std::string("cancelled"));
        QCOMPARE(cancelled.kind(), ErrorKind::Cancelled);
        auto runs = (*store)->listRuns({RunKind::Sensitivity, RunStatus::Cancelled, "", "", 0});
        QVERIFY(runs);
        QCOMPARE(runs->size(), std::size_t(1));
        QCOMPARE((*store)->run(runs->front().id)->matrices.size(), std::size_t(1));
    }

    // The greedy allocator against exhaustive search on random small problems: never over the
    // budget, and within a small margin of the optimum (the greedy is exact on convex menus).
    void allocationIsNearOptimalAndWithinBudget()
    {
        std::mt19937 rng(7);
        std::uniform_real_distribution<double> u(0, 1);
        int exact = 0;
        for (int trial = 0; trial < 200; ++trial) {
            std::vector<MatrixOptions> ms(6);
            for (std::size_t i = 0; i < ms.size(); ++i) {
                ms[i].name = "m" + std::to_string(i);
                ms[i].weights = 100 + static_cast<std::int64_t>(400 * u(rng));
                const double scale = 0.1 + u(rng);
                for (int k = 0; k < 4; ++k) {
                    const double bits = 2 + k + 0.2 * u(rng);
                    ms[i].bits.push_back(bits * ms[i].weights);
                    ms[i].damage.push_back(scale * std::pow(2.0, -2 * bits) * (trial % 2 ? 1 + 0.5 * u(rng) : 1)); // odd trials: not convex
                }
            }
            const double budget = 2.3 + 3 * u(rng);
            auto greedy = allocateBits(ms, budget);
            auto best = allocateBitsExhaustive(ms, budget);
            QCOMPARE(greedy.ok(), best.ok());
            if (!best)
                continue;
            QVERIFY(greedy->bpw <= budget * (1 + 1e-12));
            QVERIFY2(greedy->predictedDamage <= best->predictedDamage * 1.25 + 1e-15,
                     qPrintable(QString("trial %1: %2 vs %3").arg(trial).arg(greedy->predictedDamage).arg(best->predictedDamage)));
            exact += std::abs(greedy->predictedDamage - best->predictedDamage) <= 1e-12 * best->predictedDamage;
        }
        QVERIFY2(exact >= 120, qPrintable(QString::number(exact))); // optimal in most cases
        std::vector<MatrixOptions> one{{"m", 10, {20, 30}, {1, 0.5}}};
        QVERIFY(!allocateBits(one, 1.0)); // below the cheapest plan
        QVERIFY(!allocateBits({{"m", 10, {20}, {1, 2}}}, 3.0)); // inconsistent
    }

    void allocationRunsAsOneJob()
    {
        AllocationRequest request;
        request.base = params("0-1", "attn");
        request.base.settings = {"group=32"};
        request.menu = {{"bits=2"}, {"bits=3"}, {"bits=5"}};
        request.budgetBpw = 4.0;
        auto r = planBitAllocation(request, m_registry);
        QVERIFY2(r, r ? "" : r.message().c_str());
        QCOMPARE(r->perOption.size(), std::size_t(3));
        QCOMPARE(r->matrixSettings.size(), std::size_t(8));
        QVERIFY(r->plan.bpw <= 4.0 + 1e-9);
        QVERIFY(r->plan.bpw > r->uniformBpw[0]); // the budget is used
        // Damage per matrix falls with bits (RTN), so the summed KL beats uniform 2 bits.
        double uniform2 = 0;
        for (const auto& u : r->perOption[0])
            uniform2 += u.klMean;
        QVERIFY(r->plan.predictedDamage < uniform2);

        CompressJobParams job;
        job.modelPath = request.base.modelPath;
        job.methodId = "rtn";
        job.settings = request.base.settings;
        job.matrixSettings = r->matrixSettings;
        job.selection = request.base.selection;
        job.outPath = m_tmp.filePath("allocated.pllm").toStdString();
        job.keepDtype = DType::F32; // the rest of the model exactly as the analysis had it
        // The plan counts bits after the same lossless stage (auto, as compress), so they match exactly.
        auto compressed = runCompressJob(job, m_registry);
        QVERIFY2(compressed, compressed ? "" : compressed.message().c_str());
        QVERIFY2(std::abs(compressed->bits.bpwCompressed() - r->plan.bpw) < 1e-9,
                 qPrintable(QString("%1 vs %2").arg(compressed->bits.bpwCompressed()).arg(r->plan.bpw)));

        // The plan measured as a whole is the archive's model: same perplexity on the same windows.
        QVERIFY(r->measured);
        QVERIFY(r->measured->klMean > 0);
        auto archive = openArchiveCheckpoint(job.outPath, m_registry);
        QVERIFY(archive);
        auto model = LlamaModel::load(**archive);
        QVERIFY(model);
        auto tokenizer = loadTokenizer(testsupport::demoTokenizer());
        QVERIFY(tokenizer);
        EvalParams ep;
        ep.ctx = 64;
        ep.maxTokens = 3 * 63;
        auto eval = evaluatePerplexity(**model, (*tokenizer)->encode(*readTextFile(request.base.textPath)), (*tokenizer)->bosId(), ep);
        QVERIFY(eval);
        QVERIFY2(std::abs(eval->perplexity - r->measured->perplexity) < 1e-5 * eval->perplexity,
                 qPrintable(QString("%1 vs %2").arg(eval->perplexity, 0, 'g', 10).arg(r->measured->perplexity, 0, 'g', 10)));
    }

    // A menu across methods (rtn, and gptq with its calibration Hessians): the plan mixes them,
    // and one compress job writes each matrix with its entry's method and settings, in block order
    // (calibration visits blocks once), at exactly the plan's bits.
    void allocationAcrossMethodsRunsAsOneJob()
    {
        AllocationRequest request;
        request.base = params("0-1", "attn");
        request.base.settings = {};
        request.base.calibration.samples = 16;
        request.base.calibration.length = 64;
        request.base.entropy.mode = EntropyMode::None; // fixed-width bits: exact whatever the codes
        request.menu = {{"bits=2", "group=32"}, {"bits=3", "group=32"}};
        request.menuMethods = {"", "gptq"};
        request.budgetBpw = 3.5;
        auto r = planBitAllocation(request, m_registry);
        QVERIFY2(r, r ? "" : r.message().c_str());
        QVERIFY(!r->matrixMethods.empty());
        QVERIFY(r->matrixMethods.size() < r->matrixSettings.size()); // both methods chosen
        for (const auto& [name, method] : r->matrixMethods)
            QCOMPARE(method, std::string("gptq"));

        CompressJobParams job = planJob(request, *r, "across.pllm");
        auto compressed = runCompressJob(job, m_registry);
        QVERIFY2(compressed, compressed ? "" : compressed.message().c_str());
        QVERIFY2(std::abs(compressed->bits.bpwCompressed() - r->plan.bpw) < 1e-9,
                 qPrintable(QString("%1 vs %2").arg(compressed->bits.bpwCompressed()).arg(r->plan.bpw)));
        QVERIFY(r->measured && r->measured->perplexity > r->basePerplexity);
        QCOMPARE(r->measured->matrices.size(), r->matrixSettings.size());

        // Refinement: alternative plans measured as a whole; the kept plan measures best of all.
        AllocationRequest refined = request;
        refined.refine = 3;
        auto rr = planBitAllocation(refined, m_registry);
        QVERIFY2(rr, rr ? "" : rr.message().c_str());
        QVERIFY(!rr->refinements.empty() && rr->refinements.size() <= 3);
        QVERIFY(rr->measured->klMean <= r->measured->klMean + 1e-12);
        for (const PlanRefinement& alt : rr->refinements) {
            QVERIFY(alt.bpw <= request.budgetBpw + 1e-9);
            QVERIFY(alt.measured.klMean > 0);
            QVERIFY(rr->measured->klMean <= alt.measured.klMean + 1e-12);
        }
        QVERIFY(std::abs(rr->measured->bpw - rr->plan.bpw) < 1e-9); // the measurement is of the kept plan
        auto archive = Archive::open(job.outPath);
        QVERIFY(archive);
        int lastLayer = -1;
        for (const ArchiveGroup& g : (*archive)->manifest().groups) {
            const MatrixRef& ref = g.payload.matrices.front().ref;
            const bool gptq = r->matrixMethods.count(ref.name) > 0;
            QCOMPARE(g.payload.methodId, std::string(gptq ? "gptq" : "rtn"));
            QVERIFY(ref.layer >= lastLayer);
            lastLayer = ref.layer;
        }
    }

    // Groups (shared codebooks) against a slow reference: every assignment of menu entries to
    // matrices in which each group's members take its entry all or none, the best within budget.
    void groupedAllocationRespectsGroupsAndIsNearOptimal()
    {
        std::mt19937 rng(11);
        std::uniform_real_distribution<double> u(0, 1);
        int exact = 0, solved = 0;
        for (int trial = 0; trial < 150; ++trial) {
            const std::size_t n = 5;
            std::vector<MatrixOptions> ms(n);
            for (std::size_t i = 0; i < n; ++i) {
                ms[i].name = "m" + std::to_string(i);
                ms[i].weights = 100 + static_cast<std::int64_t>(300 * u(rng));
                for (int k = 0; k < 2; ++k) { // entries 0 and 1: alone
                    const double bits = 2 + 2 * k + 0.3 * u(rng);
                    ms[i].bits.push_back(bits * ms[i].weights);
                    ms[i].damage.push_back((0.2 + u(rng)) * std::pow(2.0, -2 * bits));
                    ms[i].entries.push_back(k);
                }
            }
            if (trial % 3 == 0) { // m4 only moves with its group
                ms[4].bits.clear();
                ms[4].damage.clear();
                ms[4].entries.clear();
            }
            std::vector<GroupOptions> groups{{"g0", {0, 1, 2}, 0, {2}, {}, {}}, {"g1", {3, 4}, 0, {2}, {}, {}}};
            for (GroupOptions& g : groups) { // entry 2: one shared codebook per group
                for (std::size_t m : g.members)
                    g.weights += ms[m].weights;
                g.bits.push_back((2.6 + 0.5 * u(rng)) * g.weights);
                g.damage.push_back((0.3 + u(rng)) * 0.02 * g.members.size());
            }
            const double budget = 2.2 + 2 * u(rng);
            auto plan = allocateWithGroups(ms, groups, budget);
            // The reference: 3^5 assignments.
            double bestDamage = INFINITY;
            std::int64_t totalWeights = 0;
            for (const auto& m : ms)
                totalWeights += m.weights;
            for (int code = 0; code < 243; ++code) {
                int e[5], c = code;
                for (int i = 0; i < 5; ++i, c /= 3)
                    e[i] = c % 3;
                double bits = 0, damage = 0;
                bool valid = true;
                for (const GroupOptions& g : groups) {
                    int in = 0;
                    for (std::size_t m : g.members)
                        in += e[m] == 2;
                    valid = valid && (in == 0 || in == int(g.members.size()));
                    if (in > 0) {
                        bits += g.bits[0];
                        damage += g.damage[0];
                    }
                }
                for (std::size_t i = 0; i < n && valid; ++i) {
                    if (e[i] == 2)
                        continue;
                    if (ms[i].bits.empty()) {
                        valid = false;
                        break;
                    }
                    bits += ms[i].bits[e[i]];
                    damage += ms[i].damage[e[i]];
                }
                if (valid && bits <= budget * totalWeights * (1 + 1e-12))
                    bestDamage = std::min(bestDamage, damage);
            }
            QCOMPARE(plan.ok(), std::isfinite(bestDamage));
            if (!plan)
                continue;
            ++solved;
            QVERIFY(plan->bpw <= budget * (1 + 1e-12));
            for (std::size_t g = 0; g < groups.size(); ++g) // members move together
                for (std::size_t m : groups[g].members)
                    QCOMPARE(plan->entry[m] == 2, plan->groupOption[g] == 0);
            for (std::size_t i = 0; i < n; ++i)
                QVERIFY(plan->entry[i] >= 0 && plan->entry[i] <= 2);
            QVERIFY2(plan->predictedDamage <= bestDamage * 1.25 + 1e-15, qPrintable(QString("trial %1: %2 vs %3").arg(trial).arg(plan->predictedDamage).arg(bestDamage)));
            exact += std::abs(plan->predictedDamage - bestDamage) <= 1e-12 * bestDamage;
        }
        QVERIFY2(solved >= 100 && exact >= solved * 3 / 4, qPrintable(QString("%1 of %2").arg(exact).arg(solved)));
        // A matrix that no option covers is refused by name.
        std::vector<MatrixOptions> lonely{{"m0", 10, {20}, {1}, {0}}, {"m1", 10, {}, {}, {}}};
        auto refused = allocateWithGroups(lonely, {}, 4.0);
        QVERIFY(!refused);
        QVERIFY2(refused.message().find("m1") != std::string::npos, refused.message().c_str());
    }

    // A method that shares a codebook (vq sharing=type) is measured per group and charged to it;
    // a plan keeps the group together, and the compress job's bits equal the plan's exactly.
    void sharedCodebooksAreMeasuredAndPlannedPerGroup()
    {
        SensitivityParams p = params("0-1", "q,k");
        p.methodId = "vq";
        p.settings = {"K=16", "d=4", "sharing=type", "iters=4"};
        auto shared = runSensitivity(p, m_registry);
        QVERIFY2(shared, shared ? "" : shared.message().c_str());
        QCOMPARE(shared->units.size(), std::size_t(2));
        QCOMPARE(shared->units[0].unit, std::string("type:q_proj"));
        QCOMPARE(shared->units[0].matrices.size(), std::size_t(2));
        p.settings = {"K=16", "d=4", "sharing=matrix", "iters=4"};
        auto alone = runSensitivity(p, m_registry);
        QVERIFY(alone);
        QCOMPARE(alone->units.size(), std::size_t(4));
        QVERIFY(shared->units[0].bpw < alone->units[0].bpw); // one codebook for two matrices

        AllocationRequest request;
        request.base = params("0-1", "attn");
        request.base.methodId = "rtn";
        request.base.settings = {};
        request.menu = {{"bits=2", "group=64"}, {"bits=4", "group=64"}, {"K=16", "d=2", "sharing=type", "iters=4"}};
        request.menuMethods = {"", "", "vq"};
        request.base.entropy.mode = EntropyMode::None; // fixed-width bits (vq's seeds follow group ids, which a mixed job suffixes)
        request.budgetBpw = 2.9;
        auto r = planBitAllocation(request, m_registry);
        QVERIFY2(r, r ? "" : r.message().c_str());
        QCOMPARE(r->perOption[2].size(), std::size_t(4)); // one unit per type
        int groupsChosen = 0;
        for (const PlannedUnit& item : r->planned)
            if (item.entry == 2) {
                ++groupsChosen;
                QCOMPARE(item.measured.matrices.size(), std::size_t(2));
                for (const std::string& m : item.measured.matrices)
                    QCOMPARE(r->matrixMethods.at(m), std::string("vq"));
            }
        QVERIFY2(groupsChosen > 0, "the shared codebook is never chosen: the test says nothing");
        CompressJobParams job = planJob(request, *r, "shared.pllm");
        auto compressed = runCompressJob(job, m_registry);
        QVERIFY2(compressed, compressed ? "" : compressed.message().c_str());
        QVERIFY2(std::abs(compressed->bits.bpwCompressed() - r->plan.bpw) < 1e-9,
                 qPrintable(QString("%1 vs %2").arg(compressed->bits.bpwCompressed()).arg(r->plan.bpw)));
    }

    // Recorded units are read back instead of measured again when every input is the same, and
    // only then.
    void measuredUnitsAreReusedFromTheStore()
    {
        const std::string storePath = m_tmp.filePath("cache.sqlite").toStdString();
        RecorderOptions rec{storePath, true, "test"};
        SensitivityParams p = params("0", "q,k,v");
        auto first = runSensitivity(p, m_registry, &rec);
        QVERIFY2(first, first ? "" : first.message().c_str());
        QCOMPARE(first->cachedUnits, 0);
        auto again = runSensitivity(p, m_registry, &rec);
        QVERIFY(again);
        QCOMPARE(again->cachedUnits, 3);
        for (std::size_t i = 0; i < 3; ++i) {
            QVERIFY(again->units[i].cached);
            QCOMPARE(again->units[i].unit, first->units[i].unit);
            QCOMPARE(again->units[i].klMean, first->units[i].klMean);
            QVERIFY(std::abs(again->units[i].bpw - first->units[i].bpw) < 1e-12);
            QVERIFY(std::abs(again->units[i].perplexity - first->units[i].perplexity) < 1e-9);
        }
        auto store = ExperimentStore::open(storePath);
        QCOMPARE((*store)->run(again->runId)->matrices.size(), std::size_t(3)); // the reusing run is complete too
        SensitivityParams wider = params("0-1", "q,k,v"); // block 0's units reused, block 1's measured
        QCOMPARE(runSensitivity(wider, m_registry, &rec)->cachedUnits, 3);
        SensitivityParams other = p;
        other.settings = {"bits=4", "group=32"};
        QCOMPARE(runSensitivity(other, m_registry, &rec)->cachedUnits, 0);
        other = p;
        other.windows = 2;
        QCOMPARE(runSensitivity(other, m_registry, &rec)->cachedUnits, 0);
        other = p;
        other.textPath = m_tmp.filePath("other.txt").toStdString();
        testsupport::writeText(other.textPath, *readTextFile(p.textPath) + "\nThe end.");
        QCOMPARE(runSensitivity(other, m_registry, &rec)->cachedUnits, 0);
        other = p;
        other.reuse = false;
        QCOMPARE(runSensitivity(other, m_registry, &rec)->cachedUnits, 0);
        QCOMPARE(runSensitivity(p, m_registry)->cachedUnits, 0); // not recording: no store to read
    }

    void menuEntriesNameTheirMethod()
    {
        QCOMPARE(parseMenuEntry("bits=3,group=32"), (std::pair<std::string, std::vector<std::string>>{"", {"bits=3", "group=32"}}));
        QCOMPARE(parseMenuEntry("gptq:bits=3,group=32"), (std::pair<std::string, std::vector<std::string>>{"gptq", {"bits=3", "group=32"}}));
        QCOMPARE(parseMenuEntry("vq:K=16"), (std::pair<std::string, std::vector<std::string>>{"vq", {"K=16"}}));
        QCOMPARE(parseMenuEntry("init=a:b"), (std::pair<std::string, std::vector<std::string>>{"", {"init=a:b"}})); // ':' inside a value
    }

    void refusesBadInput()
    {
        SensitivityParams p = params("0", "q");
        const std::string shortText = m_tmp.filePath("short.txt").toStdString();
        testsupport::writeText(shortText, "Once upon a time.");
        p.methodId = "gptq";
        p.settings = {};
        p.calibration.textPath = shortText; // too short for the calibration windows
        auto gptq = runSensitivity(p, m_registry);
        QVERIFY(!gptq);
        QVERIFY2(gptq.message().find("short.txt") != std::string::npos, gptq.message().c_str());

        p = params("0", "q");
        p.textPath = shortText;
        auto tooShort = runSensitivity(p, m_registry);
        QVERIFY(!tooShort);
        QVERIFY2(tooShort.message().find("short.txt") != std::string::npos, tooShort.message().c_str());

        p = params("0", "q");
        p.modelPath = m_tmp.filePath("x.pllm").toStdString();
        testsupport::writeText(p.modelPath, std::string("\x89PLLM\r\n\x1a", 8) + "truncated"); // an archive's magic
        auto archive = runSensitivity(p, m_registry);
        QVERIFY(!archive);
        QVERIFY2(archive.message().find("x.pllm") != std::string::npos, archive.message().c_str());

        p = params("9", "q");
        auto badBlock = runSensitivity(p, m_registry);
        QVERIFY(!badBlock);
        QVERIFY2(badBlock.message().find("block") != std::string::npos, badBlock.message().c_str());
    }
};

QTEST_GUILESS_MAIN(TestSensitivity)
#include "test_sensitivity.moc"

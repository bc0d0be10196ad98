// Judging a compressed model beyond perplexity: zero-shot multiple choice (prompts byte-identical
// to lm-evaluation-harness's templates, the harness's encoding, scores against single forward
// passes, acc/acc_norm/stderr against their definitions, the job and its store rows) and the
// divergence from a reference model (KL, percentiles and top-1 against a slow per-window reference).
#include "pocket/io/checkpoint.h"
#include "pocket/io/hf_writer.h"
#include "pocket/io/tokenizer.h"
#include "pocket/jobs/eval_job.h"
#include "pocket/methods/method_registry.h"
#include "pocket/model/perplexity.h"
#include "pocket/model/zeroshot.h"
#include "pocket/store/experiment_store.h"
#include "test_support.h"

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>
#include <random>

using namespace pocket;

namespace {

ZeroShotItem item(ZeroShotTask task, const std::string& line)
{
    auto r = buildZeroShotItem(task, line);
    if (!r)
        qWarning("%s", r.message().c_str());
    return r ? *r : ZeroShotItem{};
}

// log-softmax in double of one row of logits.
std::vector<double> logSoftmax(const float* row, int vocab)
{
    double maxv = -1e300, z = 0;
    for (int v = 0; v < vocab; ++v) maxv = std::max(maxv, static_cast<double>(row[v]));
    for (int v = 0; v < vocab; ++v) z += std::exp(row[v] - maxv);
    std::vector<double> out(static_cast<std::size_t>(vocab));
    for (int v = 0; v < vocab; ++v) out[static_cast<std::size_t>(v)] = row[v] - maxv - std::log(z);
    return out;
}

std::unique_ptr<LlamaModel> loadModel(const std::string& path)
{
    auto ckpt = openCheckpoint(path);
    if (!ckpt)
        return nullptr;
    auto model = LlamaModel::load(**ckpt);
    return model ? std::move(*model) : nullptr;
}

} // namespace

class TestEval : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void initTestCase() { setComputeThreads(2); }

    // Each task's prompt and continuations, written out from the harness's yaml templates.
    void promptsMatchHarnessTemplates()
    {
        ZeroShotItem piqa = item(ZeroShotTask::Piqa, R"({"goal": "How do I ready a guinea pig cage?", "sol1": "Add bedding.", "sol2": "Add jeans.", "label": 0})");
        QCOMPARE(piqa.contexts, (std::vector<std::string>{"Question: How do I ready a guinea pig cage?\nAnswer:", "Question: How do I ready a guinea pig cage?\nAnswer:"}));
        QCOMPARE(piqa.continuations, (std::vector<std::string>{" Add bedding.", " Add jeans."}));
        QCOMPARE(piqa.label, 0);
        // The flat form of the shared files gives the same item.
        ZeroShotItem flat = item(ZeroShotTask::Piqa, R"({"goal": "How do I ready a guinea pig cage?", "choices": ["Add bedding.", "Add jeans."], "label": 0})");
        QCOMPARE(flat.contexts, piqa.contexts);
        QCOMPARE(flat.continuations, piqa.continuations);

        ZeroShotItem arc = item(ZeroShotTask::ArcChallenge,
                                R"({"id": "Mercury_7175875", "question": "An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?", "choices": {"text": ["Planetary density will decrease.", "Planetary years will become longer.", "Planetary days will become shorter.", "Planetary gravity will become stronger."], "label": ["A", "B", "C", "D"]}, "answerKey": "C"})");
        QCOMPARE(arc.contexts.at(0), std::string("Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?\nAnswer:"));
        QCOMPARE(arc.continuations.at(2), std::string(" Planetary days will become shorter."));
        QCOMPARE(arc.choices.at(2), std::string("Planetary days will become shorter."));
        QCOMPARE(arc.label, 2);
        // Numeric answer keys, as some ARC items have.
        QCOMPARE(item(ZeroShotTask::ArcEasy, R"({"question": "Q?", "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]}, "answerKey": "3"})").label, 2);

        ZeroShotItem obqa = item(ZeroShotTask::OpenBookQa,
                                 R"({"id": "7-980", "question_stem": "The sun is responsible for", "choices": {"text": ["puppies learning new tricks", "children growing up and getting old", "flowers wilting in a vase", "plants sprouting, blooming and wilting"], "label": ["A", "B", "C", "D"]}, "answerKey": "D"})");
        QCOMPARE(obqa.contexts.at(0), std::string("The sun is responsible for"));
        QCOMPARE(obqa.continuations.at(3), std::string(" plants sprouting, blooming and wilting"));
        QCOMPARE(obqa.label, 3);

        ZeroShotItem boolq = item(ZeroShotTask::BoolQ,
                                  R"({"question": "do iran and afghanistan speak the same language", "passage": "Persian language -- Persian is spoken in Iran.", "answer": true})");
        QCOMPARE(boolq.contexts.at(0), std::string("Persian language -- Persian is spoken in Iran.\nQuestion: do iran and afghanistan speak the same language?\nAnswer:"));
        QCOMPARE(boolq.continuations, (std::vector<std::string>{" no", " yes"}));
        QCOMPARE(boolq.label, 1);
        // Without a passage (the bundled file), the template with an empty one.
        QCOMPARE(item(ZeroShotTask::BoolQ, R"({"question": "is it", "label": 0})").contexts.at(0), std::string("\nQuestion: is it?\nAnswer:"));

        ZeroShotItem hs = item(ZeroShotTask::HellaSwag,
                               R"({"activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles.", "ctx_b": "then", "endings": [", the man adds wax to the windshield and cuts it.", ", a person board a ski lift.", ", the man puts on a christmas coat.", ", the man continues removing the snow on his car."], "label": "3"})");
        QCOMPARE(hs.contexts.at(0), std::string("Removing ice from car: Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles. Then"));
        QCOMPARE(hs.continuations.at(3), std::string(" , the man continues removing the snow on his car."));
        QCOMPARE(hs.label, 3);
        // WikiHow items: " [title]" becomes ". ", other bracketed tags go, double spaces close up.
        QCOMPARE(hellaswagPreprocess(" Personal Care and Style [header] How to increase breast size with a bra [title] Check your bra size. [step] Wearing "),
                 std::string("Personal Care and Style How to increase breast size with a bra. Check your bra size. Wearing"));
        ZeroShotItem wiki = item(ZeroShotTask::HellaSwag,
                                 R"({"activity_label": "Home and Garden", "ctx_a": "[header] How to clean a grill [title] Heat the grill.", "ctx_b": "", "endings": ["Scrub it [step] well.", "b", "c", "d"], "label": 0})");
        QCOMPARE(wiki.contexts.at(0), std::string("Home and Garden: How to clean a grill. Heat the grill."));
        QCOMPARE(wiki.choices.at(0), std::string("Scrub it well."));

        ZeroShotItem wino = item(ZeroShotTask::WinoGrande,
                                 R"({"sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.", "option1": "Sarah", "option2": "Maria", "answer": "2"})");
        QCOMPARE(wino.contexts, (std::vector<std::string>{"Sarah was a much better surgeon than Maria so Sarah", "Sarah was a much better surgeon than Maria so Maria"}));
        QCOMPARE(wino.continuations, (std::vector<std::string>{" always got the easier cases.", " always got the easier cases."}));
        QCOMPARE(wino.label, 1);
        QCOMPARE(item(ZeroShotTask::WinoGrande, R"({"sentence": "A _ b", "option1": "x", "option2": "y", "label": 0})").label, 0);
    }

    void badItemsAreRefusedByLine()
    {
        QVERIFY(!buildZeroShotItem(ZeroShotTask::Piqa, R"({"goal": "x", "label": 0})"));
        QVERIFY(!buildZeroShotItem(ZeroShotTask::ArcEasy, R"({"question": "q", "choices": ["a", "b"], "label": 5})"));
        QVERIFY(!buildZeroShotItem(ZeroShotTask::WinoGrande, R"({"sentence": "no blank", "option1": "x", "option2": "y", "label": 0})"));
        QVERIFY(!buildZeroShotItem(ZeroShotTask::BoolQ, "{not json"));
        QTemporaryDir dir;
        const std::string path = dir.filePath("piqa_x.jsonl").toStdString();
        testsupport::writeText(path, "{\"goal\": \"g\", \"choices\": [\"a\", \"b\"], \"label\": 1}\n\n{\"goal\": \"g\"}\n");
        auto r = loadZeroShotTask(ZeroShotTask::Piqa, path);
        QVERIFY(!r);
        QVERIFY2(r.message().find(path) != std::string::npos && r.message().find("line 3") != std::string::npos, r.message().c_str());
        QCOMPARE(loadZeroShotTask(ZeroShotTask::Piqa, path, 1).value().size(), std::size_t{1});
        QVERIFY(parseZeroShotTask("ARC-Challenge-Test.jsonl") == ZeroShotTask::ArcChallenge);
        QVERIFY(parseZeroShotTask("/x/winogrande_dev.jsonl") == ZeroShotTask::WinoGrande);
        QVERIFY(!parseZeroShotTask("stories.txt"));
    }

    // _encode_pair: the context's trailing space joins the continuation, the pair is tokenised
    // together and the context's tokens sliced off; the input is truncated on the left.
    void encodingFollowsTheHarness()
    {
        auto tok = loadTokenizer(testsupport::demoTokenizer());
        QVERIFY(tok);
        const Tokenizer& t = **tok;
        const EncodedRequest a = encodeZeroShotRequest(t, "Once upon a time ", "there was", 512, false);
        const EncodedRequest b = encodeZeroShotRequest(t, "Once upon a time", " there was", 512, false);
        QCOMPARE(a.input, b.input);
        QCOMPARE(a.target, b.target);
        const auto whole = t.encode("Once upon a time there was");
        const auto context = t.encode("Once upon a time");
        QCOMPARE(a.target, std::vector<std::int32_t>(whole.begin() + static_cast<std::ptrdiff_t>(context.size()), whole.end()));
        QCOMPARE(a.input, std::vector<std::int32_t>(whole.begin(), whole.end() - 1));
        QCOMPARE(a.continuationTokens, static_cast<int>(a.target.size()));
        const EncodedRequest bos = encodeZeroShotRequest(t, "Once upon a time", " there was", 512, true);
        QCOMPARE(bos.input.front(), t.bosId());
        QCOMPARE(bos.target, a.target);
        const EncodedRequest empty = encodeZeroShotRequest(t, "", "there was", 512, false);
        QCOMPARE(empty.input.front(), t.bosId());
        // Nothing to predict: no input, nothing scored (the harness's requests always have a token to score).
        QVERIFY(encodeZeroShotRequest(t, "", "", 512, false).input.empty());
        const EncodedRequest cut = encodeZeroShotRequest(t, "Once upon a time", " there was", 4, false);
        QCOMPARE(cut.input.size(), std::size_t{4});
        QCOMPARE(cut.input.back(), whole[whole.size() - 2]);
    }

    // Batched, padded scores against one forward pass per request with a hand-written log-softmax.
    void scoresEqualSingleForwardPasses()
    {
        auto model = loadModel(testsupport::demoModel());
        QVERIFY(model);
        auto tok = loadTokenizer(testsupport::demoTokenizer());
        QVERIFY(tok);
        const std::string dir = POCKET_RESOURCES_DIR "/eval/zeroshot/";
        for (const auto& [task, file] : std::vector<std::pair<ZeroShotTask, std::string>>{
                 {ZeroShotTask::ArcEasy, "arc_easy_test.jsonl"}, {ZeroShotTask::WinoGrande, "winogrande_dev.jsonl"}, {ZeroShotTask::BoolQ, "boolq_validation.jsonl"}}) {
            auto items = loadZeroShotTask(task, dir + file, 12);
            QVERIFY2(items, items ? "" : items.message().c_str());
            for (bool addBos : {false, true}) {
                ZeroShotParams params;
                params.batch = 5;
                params.addBos = addBos;
                auto result = evaluateZeroShot(*model, **tok, task, *items, params);
                QVERIFY2(result, result ? "" : result.message().c_str());
                const int vocab = static_cast<int>(model->config().vocabSize);
                int correct = 0;
                for (std::size_t i = 0; i < items->size(); ++i) {
                    const ZeroShotItem& it = (*items)[i];
                    std::vector<double> ll;
                    for (std::size_t c = 0; c < it.contexts.size(); ++c) {
                        const EncodedRequest r = encodeZeroShotRequest(**tok, it.contexts[c], it.continuations[c], 512, addBos);
                        std::vector<std::int32_t> full = r.input;
                        full.push_back(r.target.back());
                        const auto logits = model->logits(r.input).value();
                        double sum = 0;
                        for (std::size_t t = r.input.size() - r.target.size(); t < r.input.size(); ++t)
                            sum += logSoftmax(logits.data() + t * static_cast<std::size_t>(vocab), vocab)[static_cast<std::size_t>(full[t + 1])];
                        ll.push_back(sum);
                        QVERIFY2(std::fabs(sum - result->scores[i].logLikelihoods[c]) < 1e-3,
                                 qPrintable(QString("%1 item %2 choice %3: %4 vs %5").arg(zeroShotTaskName(task)).arg(i).arg(c).arg(sum).arg(result->scores[i].logLikelihoods[c])));
                    }
                    correct += std::max_element(ll.begin(), ll.end()) - ll.begin() == it.label;
                }
                QCOMPARE(result->items, static_cast<int>(items->size()));
                QVERIFY(std::fabs(result->acc - static_cast<double>(correct) / items->size()) < 1e-12);
            }
        }
    }

    // acc_norm divides by the choice's length in characters (code points, not bytes); the
    // standard error is the harness's sample standard deviation / sqrt(n).
    void accuracyFiguresFollowTheirDefinitions()
    {
        std::vector<ZeroShotItem> items(4);
        for (auto& it : items) {
            it.choices = {"ab", "\xC3\xA9\xC3\xA9"}; // "ab" and "éé": 2 characters each, 2 and 4 bytes
            it.contexts = {"c", "c"};
            it.continuations = {" ab", " \xC3\xA9\xC3\xA9"};
        }
        items[0].label = 0;
        items[1].label = 1;
        items[2].label = 0;
        items[3].label = 0;
        ZeroShotTaskResult r;
        r.task = ZeroShotTask::Piqa;
        r.scores.resize(4);
        r.scores[0].logLikelihoods = {-2.0, -2.4}; // acc 0; norm -1 vs -1.2: 0 (by bytes: -1 vs -0.6, 1)
        r.scores[1].logLikelihoods = {-2.0, -2.4};
        r.scores[2].logLikelihoods = {-3.0, -1.0};
        r.scores[3].logLikelihoods = {-1.0, -5.0};
        summariseZeroShot(r, items);
        QCOMPARE(r.items, 4);
        QCOMPARE(r.acc, 0.5);                // items 0 and 3
        QCOMPARE(r.accNorm, 0.5);            // items 0 and 3 again (not 1, as by bytes)
        QVERIFY(std::fabs(r.accStderr - std::sqrt(4 * 0.25 / 3) / 2) < 1e-12);
        QVERIFY(r.scores[0].correctNorm && !r.scores[1].correctNorm);
    }

    // The job: tasks read first, every per-task row and the mean recorded in the store.
    void zeroShotJobRecordsRows()
    {
        QTemporaryDir dir;
        MethodRegistry registry;
        ZeroShotJobParams params;
        params.modelPath = testsupport::demoModel();
        params.limit = 20;
        const std::string tasks = POCKET_RESOURCES_DIR "/eval/zeroshot/";
        params.tasks = {{ZeroShotTask::Piqa, tasks + "piqa_validation.jsonl"}, {ZeroShotTask::WinoGrande, tasks + "winogrande_dev.jsonl"}};
        RecorderOptions rec;
        rec.storePath = dir.filePath("store.sqlite").toStdString();
        auto job = runZeroShotJob(params, registry, &rec);
        QVERIFY2(job, job ? "" : job.message().c_str());
        QCOMPARE(job->tasks.size(), std::size_t{2});
        QCOMPARE(job->averageName, std::string("zero-shot:piqa,winogrande"));
        QVERIFY(job->runId > 0);
        auto store = ExperimentStore::open(rec.storePath);
        QVERIFY(store);
        auto run = (*store)->run(job->runId);
        QVERIFY(run);
        std::map<std::string, double> rows;
        for (const auto& r : run->results) rows[r.datasetName + "/" + r.metric] = r.value;
        QCOMPARE(rows.size(), std::size_t{4 + 2 + 1}); // piqa: acc, norm and their errors; winogrande: acc, error; the mean
        QVERIFY(std::fabs(rows["piqa/accuracy"] - 100 * job->tasks[0].acc) < 1e-9);
        QVERIFY(std::fabs(rows["winogrande/accuracy"] - 100 * job->tasks[1].acc) < 1e-9);
        QVERIFY(std::fabs(rows["zero-shot:piqa,winogrande/accuracy_avg"] - 50 * (job->tasks[0].acc + job->tasks[1].acc)) < 1e-9);
        QVERIFY(!rows.count("winogrande/accuracy_norm"));
        // The comparison puts the run's task accuracy next to the papers' rows.
        CompareFilter filter;
        filter.metric = "accuracy";
        filter.dataset = "piqa";
        auto compared = (*store)->compare(filter);
        QVERIFY(compared);
        bool published = false, ours = false;
        for (const auto& row : *compared) (row.published ? published : ours) = true;
        QVERIFY(published && ours);
        // A bad task file fails before the model loads, naming the file.
        params.tasks.push_back({ZeroShotTask::BoolQ, dir.filePath("missing.jsonl").toStdString()});
        auto bad = runZeroShotJob(params, registry);
        QVERIFY(!bad);
        QVERIFY(bad.message().find("missing.jsonl") != std::string::npos);
    }

    void quantileInterpolatesLikeNumpy()
    {
        std::vector<float> v{4, 1, 3, 2};
        QVERIFY(std::fabs(quantile(v, 0.9) - 3.7) < 1e-6);
        QVERIFY(std::fabs(quantile(v, 0.5) - 2.5) < 1e-6);
        QCOMPARE(quantile(v, 1.0), 4.0);
        QCOMPARE(quantile(v, 0.0), 1.0);
    }

    // KL(reference || model), top-1 agreement and the reference's perplexity against a slow
    // computation from each window's full logits; a model against itself diverges by nothing.
    void divergenceMatchesSlowReference()
    {
        QTemporaryDir dir;
        ModelConfig c;
        c.hiddenSize = 32; c.intermediateSize = 40; c.numLayers = 2; c.numHeads = 4; c.numKvHeads = 2; c.headDim = 8; c.vocabSize = 37;
        const std::string pathA = dir.filePath("a").toStdString(), pathB = dir.filePath("b").toStdString();
        QVERIFY(writeRandomCheckpoint(c, 11, pathA, {}));
        QVERIFY(writeRandomCheckpoint(c, 12, pathB, {}));
        auto a = loadModel(pathA), b = loadModel(pathB);
        QVERIFY(a && b);
        std::mt19937 rng(5);
        std::vector<std::int32_t> text(300);
        for (auto& x : text) x = static_cast<std::int32_t>(3 + rng() % 34);
        EvalParams params;
        params.ctx = 64;
        params.batch = 3;
        auto self = evaluatePerplexity(*a, text, 1, params, {}, a.get());
        QVERIFY(self && self->divergence);
        QVERIFY(self->divergence->meanKl < 1e-6);
        QCOMPARE(self->divergence->top1Agreement, 1.0);
        QVERIFY(std::fabs(self->divergence->referencePerplexity - self->perplexity) < 1e-9);

        auto r = evaluatePerplexity(*a, text, 1, params, {}, b.get());
        QVERIFY(r && r->divergence);
        auto plain = evaluatePerplexity(*a, text, 1, params);
        QVERIFY(plain);
        QVERIFY(std::fabs(plain->perplexity - r->perplexity) < 1e-4 * plain->perplexity);
        // Slow: every window on its own, non-overlapping (ctx - 1 text tokens after BOS).
        std::vector<float> kls;
        double klSum = 0, refNll = 0;
        int same = 0;
        for (std::size_t start = 0; start < text.size(); start += 63) {
            const std::size_t len = std::min<std::size_t>(63, text.size() - start);
            std::vector<std::int32_t> input{1};
            input.insert(input.end(), text.begin() + static_cast<std::ptrdiff_t>(start), text.begin() + static_cast<std::ptrdiff_t>(start + len));
            const auto la = a->logits(input).value(), lb = b->logits(input).value();
            for (std::size_t t = 0; t < len; ++t) {
                const auto q = logSoftmax(la.data() + t * 37, 37), p = logSoftmax(lb.data() + t * 37, 37);
                double kl = 0;
                for (int v = 0; v < 37; ++v) kl += std::exp(p[v]) * (p[v] - q[v]);
                kls.push_back(static_cast<float>(kl));
                klSum += kl;
                refNll -= p[static_cast<std::size_t>(input[t + 1])];
                same += std::max_element(q.begin(), q.end()) - q.begin() == std::max_element(p.begin(), p.end()) - p.begin();
            }
        }
        const double n = static_cast<double>(kls.size());
        QCOMPARE(r->divergence->tokens, static_cast<std::int64_t>(kls.size()));
        QVERIFY2(std::fabs(r->divergence->meanKl - klSum / n) < 1e-4 * (klSum / n), qPrintable(QString("%1 vs %2").arg(r->divergence->meanKl).arg(klSum / n)));
        QVERIFY(std::fabs(r->divergence->top1Agreement - same / n) < 1.5 / n); // a near tie may flip by rounding
        QVERIFY(std::fabs(r->divergence->referencePerplexity - std::exp(refNll / n)) < 1e-4 * r->divergence->referencePerplexity);
        std::sort(kls.begin(), kls.end());
        std::vector<float> copy = kls;
        QVERIFY(std::fabs(r->divergence->klP99 - quantile(copy, 0.99)) < 1e-3 * r->divergence->klP99);
        QVERIFY(std::fabs(r->divergence->klMax - kls.back()) < 1e-3 * kls.back());
        QVERIFY(r->divergence->klP90 <= r->divergence->klP99 && r->divergence->klP99 <= r->divergence->klP999);
        QVERIFY(r->divergence->top1Agreement < 1.0);
    }
};

QTEST_GUILESS_MAIN(TestEval)
#include "test_eval.moc"

// Running models: the KV cache against the full forward pass, greedy generation against a slow
// argmax reference, sampling (seeded, top-k/top-p/temperature/repetition penalty against their
// definitions), the sliding context, cancelling, archives run with their matrices compressed under
// any memory budget (the same logits bit for bit), bf16 compute against fp32, the playground's
// token comparison, and streaming detokenisation.
#include "pocket/archive/archive_checkpoint.h"
#include "pocket/io/hf_writer.h"
#include "pocket/io/tokenizer.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/jobs/playground.h"
#include "pocket/methods/method_registry.h"
#include "pocket/model/generation.h"
#include "pocket/model/llama_model.h"
#include "test_support.h"

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

using namespace pocket;

namespace {

ModelConfig tinyConfig()
{
    ModelConfig c;
    c.architecture = "LlamaForCausalLM";
    c.modelType = "llama";
    c.hiddenSize = 64;
    c.intermediateSize = 96;
    c.numLayers = 2;
    c.numHeads = 4;
    c.numKvHeads = 2;
    c.headDim = 16;
    c.vocabSize = 512;
    c.maxPositions = 64;
    return c;
}

float maxAbsDiff(const float* a, const float* b, std::size_t n)
{
    float m = 0;
    for (std::size_t i = 0; i < n; ++i)
        m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

std::vector<std::int32_t> randomTokens(std::size_t n, unsigned seed, std::int32_t vocab)
{
    std::mt19937 gen(seed);
    std::uniform_int_distribution<std::int32_t> pick(3, vocab - 1);
    std::vector<std::int32_t> t{1};
    while (t.size() < n)
        t.push_back(pick(gen));
    return t;
}

} // namespace

class TestGeneration : public QObject {
    Q_OBJECT
    QTemporaryDir m_tmp;
    MethodRegistry m_registry;
    std::string m_model;
    std::map<std::string, std::string> m_archives;
    std::unique_ptr<Checkpoint> m_ckpt;
    std::unique_ptr<LlamaModel> m_fp32;

    std::string archive(const std::string& key, const std::vector<std::string>& settings, std::string method = {})
    {
        if (method.empty())
            method = key;
        if (m_archives.count(key))
            return m_archives[key];
        CompressJobParams p;
        p.modelPath = m_model;
        p.methodId = method;
        p.settings = settings;
        p.outPath = m_tmp.filePath(QString::fromStdString(key + ".pllm")).toStdString();
        auto r = runCompressJob(p, m_registry);
        if (!r.ok())
            qWarning("%s", r.message().c_str());
        return m_archives[key] = r.ok() ? p.outPath : std::string();
    }

    std::vector<float> lastLogits(const LlamaModel& model, const std::vector<std::int32_t>& tokens)
    {
        auto all = model.logits(tokens);
        if (!all)
            qFatal("%s", all.message().c_str());
        const auto vocab = static_cast<std::size_t>(model.config().vocabSize);
        return std::vector<float>(all->end() - static_cast<std::ptrdiff_t>(vocab), all->end());
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_tmp.isValid());
        m_registry.loadDefaultFolders();
        m_registry.loadFolder(POCKET_PLUGIN_DIR);
        m_model = m_tmp.filePath("model").toStdString();
        HfWriteOptions o;
        o.tokenizerPath = testsupport::demoTokenizer();
        QVERIFY(writeRandomCheckpoint(tinyConfig(), 5, m_model, o).ok());
        auto ckpt = openCheckpoint(m_model);
        QVERIFY(ckpt.ok());
        m_ckpt = std::move(*ckpt);
        auto model = LlamaModel::load(*m_ckpt);
        QVERIFY(model.ok());
        m_fp32 = std::move(*model);
    }

    // Feeding a prompt, then one token at a time, gives the logits the full forward pass gives
    // for the same prefix.
    void cachedFeedMatchesFullForward()
    {
        const std::vector<std::int32_t> tokens = randomTokens(24, 1, 512);
        auto session = m_fp32->startSession(32);
        QVERIFY(session.ok());
        QCOMPARE((*session)->capacity(), 32);
        auto first = (*session)->feed(std::vector<std::int32_t>(tokens.begin(), tokens.begin() + 9));
        QVERIFY(first.ok());
        std::vector<float> want = lastLogits(*m_fp32, std::vector<std::int32_t>(tokens.begin(), tokens.begin() + 9));
        QVERIFY(maxAbsDiff(first->data(), want.data(), want.size()) < 1e-4f);
        for (std::size_t n = 10; n <= tokens.size(); ++n) {
            auto got = (*session)->feed({tokens[n - 1]});
            QVERIFY(got.ok());
            want = lastLogits(*m_fp32, std::vector<std::int32_t>(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(n)));
            QVERIFY2(maxAbsDiff(got->data(), want.data(), want.size()) < 1e-4f, qPrintable(QString("position %1").arg(n)));
        }
        QCOMPARE((*session)->position(), 24);
        // Past the capacity: refused, nothing fed.
        auto over = (*session)->feed(std::vector<std::int32_t>(9, 5));
        QVERIFY(!over.ok());
        QVERIFY(over.message().find("do not fit the context of 32") != std::string::npos);
        QCOMPARE((*session)->position(), 24);
        QVERIFY(!(*session)->feed({600}).ok()); // outside the vocabulary
        (*session)->reset();
        QCOMPARE((*session)->position(), 0);
    }

    // Greedy generation is the argmax of the full forward pass, step after step.
    void greedyGenerationMatchesArgmaxOfFullForward()
    {
        std::vector<std::int32_t> seq = randomTokens(5, 2, 512);
        GenerateParams params;
        params.maxTokens = 20;
        params.sampling.greedy = true;
        params.stopAtEos = false;
        std::vector<std::int32_t> streamed;
        auto result = generate(*m_fp32, seq, params, 2, [&](const GeneratedToken& t) {
            streamed.push_back(t.id);
            return true;
        });
        QVERIFY(result.ok());
        QCOMPARE(result->stopReason, std::string("max tokens"));
        QCOMPARE(result->tokens, streamed);
        for (std::size_t i = 0; i < result->tokens.size(); ++i) {
            const std::vector<float> l = lastLogits(*m_fp32, seq);
            const auto argmax = static_cast<std::int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
            QCOMPARE(result->tokens[i], argmax);
            seq.push_back(argmax);
        }
        QVERIFY(result->tokensPerSecond > 0);
    }

    void samplingIsSeededAndFollowsItsDefinition()
    {
        const std::vector<std::int32_t> prompt = randomTokens(4, 3, 512);
        GenerateParams params;
        params.maxTokens = 16;
        params.stopAtEos = false;
        params.sampling.temperature = 1.5f;
        params.sampling.topK = 0;
        params.sampling.topP = 1.0f;
        params.sampling.seed = 7;
        auto a = generate(*m_fp32, prompt, params, 2);
        auto b = generate(*m_fp32, prompt, params, 2);
        params.sampling.seed = 8;
        auto c = generate(*m_fp32, prompt, params, 2);
        QVERIFY(a.ok() && b.ok() && c.ok());
        QCOMPARE(a->tokens, b->tokens);
        QVERIFY(a->tokens != c->tokens);
        // top-k = 1 is greedy.
        params.sampling.topK = 1;
        auto k1 = generate(*m_fp32, prompt, params, 2);
        params.sampling = SamplingParams{};
        params.sampling.greedy = true;
        auto greedy = generate(*m_fp32, prompt, params, 2);
        QVERIFY(k1.ok() && greedy.ok());
        QCOMPARE(k1->tokens, greedy->tokens);

        // Frequencies follow softmax(logits / T) (20000 draws, 3 tokens).
        SamplingParams s;
        s.temperature = 2.0f;
        s.topK = 0;
        s.topP = 1.0f;
        s.seed = 1;
        TokenSampler sampler(s);
        const std::vector<float> logits{1.0f, 0.0f, -1.0f};
        std::vector<int> counts(3, 0);
        for (int i = 0; i < 20000; ++i)
            ++counts[static_cast<std::size_t>(sampler.pick(logits, {}))];
        const double z = std::exp(0.5) + 1 + std::exp(-0.5);
        QVERIFY(std::fabs(counts[0] / 20000.0 - std::exp(0.5) / z) < 0.02);
        QVERIFY(std::fabs(counts[2] / 20000.0 - std::exp(-0.5) / z) < 0.02);
        // top-p keeps the smallest set reaching p: with p = 0.5 only the first token here (p0 = 0.50...).
        s.temperature = 1.0f;
        s.topP = 0.3f;
        TokenSampler nucleus(s);
        for (int i = 0; i < 200; ++i)
            QCOMPARE(nucleus.pick(logits, {}), 0);
        // The repetition penalty lowers tokens already seen (CTRL's rule: positive logits divided).
        SamplingParams r;
        r.greedy = true;
        r.repetitionPenalty = 2.0f;
        TokenSampler penalised(r);
        QCOMPARE(penalised.pick({2.0f, 1.5f, -1.0f}, {0}), 1);
        QCOMPARE(penalised.pick({2.0f, 1.5f, -1.0f}, {2}), 0);
        // Bad settings are usage errors naming them.
        SamplingParams bad;
        bad.temperature = 0;
        QCOMPARE(checkSamplingParams(bad).error().setting, std::string("temperature"));
        bad = SamplingParams{};
        bad.topP = 1.5f;
        QCOMPARE(checkSamplingParams(bad).error().setting, std::string("top-p"));
    }

    void longPromptsSlideOrAreRefused()
    {
        const std::vector<std::int32_t> prompt = randomTokens(40, 4, 512);
        GenerateParams params;
        params.context = 16;
        params.maxTokens = 30;
        params.stopAtEos = false;
        params.sampling.greedy = true;
        params.overflow = ContextOverflow::Refuse;
        auto refused = generate(*m_fp32, prompt, params, 2);
        QVERIFY(!refused.ok());
        QVERIFY2(refused.message().find("the context holds 16") != std::string::npos, refused.message().c_str());
        QCOMPARE(refused.error().setting, std::string("prompt"));
        // A short prompt under Refuse stops when the context is full.
        auto full = generate(*m_fp32, std::vector<std::int32_t>(prompt.begin(), prompt.begin() + 4), params, 2);
        QVERIFY(full.ok());
        QCOMPARE(full->stopReason, std::string("context full"));
        QCOMPARE(static_cast<int>(full->tokens.size()), 16 - 4 + 1);
        // Sliding: the prompt is cut to BOS + its last 8 tokens, and generation goes on past the context.
        params.overflow = ContextOverflow::Slide;
        auto slid = generate(*m_fp32, prompt, params, 2);
        QVERIFY(slid.ok());
        QVERIFY(slid->slid);
        QCOMPARE(slid->promptTokens, 9);
        QCOMPARE(static_cast<int>(slid->tokens.size()), 30);
        // The first token after the cut is the argmax for BOS + the last 8 prompt tokens.
        std::vector<std::int32_t> cut{prompt.front()};
        cut.insert(cut.end(), prompt.end() - 8, prompt.end());
        const std::vector<float> l = lastLogits(*m_fp32, cut);
        QCOMPARE(slid->tokens[0], static_cast<std::int32_t>(std::max_element(l.begin(), l.end()) - l.begin()));
        // An empty prompt is refused; BOS alone generates.
        QVERIFY(!generate(*m_fp32, {}, params, 2).ok());
        QVERIFY(generate(*m_fp32, {1}, params, 2).ok());
    }

    void cancellingStopsBetweenBlocks()
    {
        std::atomic<bool> cancel{true};
        auto session = m_fp32->startSession(16);
        QVERIFY(session.ok());
        auto r = (*session)->feed({1, 5, 6}, &cancel);
        QVERIFY(!r.ok());
        QVERIFY(r.cancelled());
        QCOMPARE((*session)->position(), 0);
        // Raised while generating: the next token's forward pass stops with "cancelled".
        cancel = false;
        GenerateParams params;
        params.maxTokens = 10;
        params.stopAtEos = false;
        int seen = 0;
        auto g = generate(
            *m_fp32, {1, 7}, params, 2,
            [&](const GeneratedToken&) {
                cancel = ++seen == 3;
                return true;
            },
            &cancel);
        QVERIFY(!g.ok());
        QVERIFY(g.cancelled());
        QCOMPARE(seen, 3);
    }

    // An archive run with its matrices compressed gives the logits of the fully decoded archive,
    // bit for bit, whatever the budget; memory stays within the budget; too small a budget is
    // refused with the minimum.
    void compressedWeightsUnderAnyBudgetGiveTheSameLogits_data()
    {
        QTest::addColumn<QString>("method");
        QTest::addColumn<QString>("settings");
        QTest::newRow("rtn") << "rtn" << "bits=4 group=32";
        QTest::newRow("vq") << "vq" << "d=4 K=64";
        QTest::newRow("pocketllm") << "pocketllm" << "d=4 K=64 epochs=1";
        // One codebook for the whole model: its matrices are kept decoded all together or not at all.
        QTest::newRow("vq shared") << "vq" << "d=4 K=64 sharing=model";
    }
    void compressedWeightsUnderAnyBudgetGiveTheSameLogits()
    {
        QFETCH(QString, method);
        QFETCH(QString, settings);
        std::vector<std::string> s;
        for (const QString& part : settings.split(' '))
            s.push_back(part.toStdString());
        const std::string path = archive(QString(method + "-" + settings).replace(' ', '_').replace('=', '-').toStdString(), s, method.toStdString());
        QVERIFY(!path.empty());
        const std::vector<std::int32_t> tokens = randomTokens(12, 6, 512);
        auto whole = loadRunnableModel(path, m_registry, RunOptions{});
        QVERIFY(whole.ok());
        QCOMPARE(whole->model->memory().matricesCompressed, 0);
        const std::vector<float> want = lastLogits(*whole->model, tokens);

        RunOptions minimal;
        minimal.memoryBudget = 1; // below anything: refused, naming the minimum
        auto refused = loadRunnableModel(path, m_registry, minimal);
        QVERIFY(!refused.ok());
        QCOMPARE(refused.error().setting, std::string("memory budget"));
        QVERIFY2(refused.message().find("below this model's minimum of") != std::string::npos, refused.message().c_str());

        // The minimum itself, half way, and everything: same logits, memory within the budget.
        RunOptions probe;
        probe.memoryBudget = LoadOptions::kAuto;
        auto autoModel = loadRunnableModel(path, m_registry, probe);
        QVERIFY(autoModel.ok());
        const WeightMemory& m = autoModel->model->memory();
        QVERIFY(m.minimumBytes < m.allDecodedBytes);
        int previousDecoded = -1;
        for (const double f : {0.0, 0.5, 1.0}) {
            RunOptions run;
            run.memoryBudget = static_cast<std::int64_t>(m.minimumBytes + f * static_cast<double>(m.allDecodedBytes - m.minimumBytes));
            auto loaded = loadRunnableModel(path, m_registry, run);
            QVERIFY(loaded.ok());
            const WeightMemory& got = loaded->model->memory();
            QVERIFY(got.total() <= static_cast<std::uint64_t>(run.memoryBudget));
            QVERIFY(got.matricesDecoded >= previousDecoded);
            previousDecoded = got.matricesDecoded;
            if (f == 0.0)
                QCOMPARE(got.matricesDecoded, 0);
            if (f == 1.0)
                QCOMPARE(got.matricesCompressed, 0);
            if (settings.contains("sharing=model"))
                QVERIFY(got.matricesDecoded == 0 || got.matricesCompressed == 0);
            const std::vector<float> l = lastLogits(*loaded->model, tokens);
            QVERIFY2(std::memcmp(l.data(), want.data(), want.size() * sizeof(float)) == 0, qPrintable(QString("budget fraction %1").arg(f)));
            // Generation runs the same way from the compressed form.
            auto session = loaded->model->startSession(16);
            QVERIFY(session.ok());
            auto fed = (*session)->feed(tokens);
            QVERIFY(fed.ok());
            QVERIFY(maxAbsDiff(fed->data(), want.data(), want.size()) < 1e-4f);
        }
        // A budget is for archives only.
        RunOptions onModel;
        onModel.memoryBudget = 1 << 30;
        auto notArchive = loadRunnableModel(m_model, m_registry, onModel);
        QVERIFY(!notArchive.ok());
        QCOMPARE(notArchive.error().setting, std::string("memory budget"));
    }

    void bf16IsCloseToFp32()
    {
        RunOptions run;
        run.precision = ComputePrecision::BF16;
        auto bf16 = loadRunnableModel(m_model, m_registry, run);
        QVERIFY(bf16.ok());
        QVERIFY(bf16->model->precision() == ComputePrecision::BF16);
        QVERIFY(bf16->model->weightBytes() < m_fp32->weightBytes() * 6 / 10);
        std::vector<std::vector<std::int32_t>> batch{randomTokens(20, 8, 512), randomTokens(20, 9, 512)};
        auto a = m_fp32->nextTokenNll(batch);
        auto b = bf16->model->nextTokenNll(batch);
        QVERIFY(a.ok() && b.ok());
        double sa = 0, sb = 0;
        for (std::size_t i = 0; i < batch.size(); ++i)
            for (std::size_t t = 0; t < (*a)[i].size(); ++t) {
                sa += (*a)[i][t];
                sb += (*b)[i][t];
                QVERIFY(std::fabs((*a)[i][t] - (*b)[i][t]) < 0.05);
            }
        QVERIFY2(std::fabs(sa - sb) / sa < 0.002, qPrintable(QString("mean NLL %1 vs %2").arg(sa).arg(sb)));
        QVERIFY(sa != sb); // it did run in another precision
    }

    void tokenComparisonIsTheKlOfTheTwoDistributions()
    {
        const std::vector<float> ref{2.0f, 1.0f, 0.0f, -1.0f}, same = ref, other{0.0f, 2.0f, 0.0f, -1.0f};
        const TokenAgreement a = compareNextToken(ref, same, 1, 2);
        QVERIFY(std::fabs(a.klDivergence) < 1e-7);
        QVERIFY(a.sameTop);
        QCOMPARE(a.referenceTop.size(), std::size_t{2});
        QCOMPARE(a.referenceTop[0].id, 0);
        QCOMPARE(a.referenceProbability, a.probability);
        const TokenAgreement b = compareNextToken(ref, other, 1, 2);
        const std::vector<float> p = softmaxOf(ref), q = softmaxOf(other);
        double kl = 0;
        for (std::size_t i = 0; i < p.size(); ++i)
            kl += p[i] * std::log(p[i] / q[i]);
        QVERIFY(std::fabs(b.klDivergence - kl) < 1e-6);
        QVERIFY(!b.sameTop);
        QCOMPARE(b.referenceProbability, p[1]);
        QCOMPARE(b.probability, q[1]);
    }

    // The playground with the same model on both sides: the judge agrees exactly (KL 0, the same
    // probabilities, no divergence); against an archive of it, greedy texts agree up to the marked
    // divergence and the KL is positive.
    void playgroundJudgesTheCompressedText()
    {
        PlaygroundRequest request;
        request.originalPath = m_model;
        request.compressedPath = m_model;
        request.tokenizerPath = testsupport::demoTokenizer();
        request.prompt = "Once upon a time";
        request.generate.maxTokens = 12;
        request.generate.stopAtEos = false;
        request.generate.sampling.greedy = true;
        std::vector<PlaygroundToken> seen;
        auto same = runPlayground(request, m_registry, [&](const PlaygroundToken& t) { seen.push_back(t); });
        QVERIFY(same.ok());
        QCOMPARE(same->original, same->compressed);
        QCOMPARE(same->divergenceAt, -1);
        QVERIFY(same->meanKl < 1e-6);
        QCOMPARE(seen.size(), std::size_t{24});
        for (const PlaygroundToken& t : seen)
            if (t.side == PlaygroundToken::Side::Compressed) {
                QVERIFY(std::fabs(t.agreement.referenceProbability - t.probability) < 1e-5f);
                QVERIFY(t.agreement.sameTop);
                QCOMPARE(t.agreement.referenceTop.front().id, t.id); // greedy: the top choice
                QVERIFY(!t.originalTop.empty());
            }
        // Against a 2-bit archive: the texts part somewhere, and there the first divergence is marked.
        request.compressedPath = archive("rtn2", {"bits=2", "group=32"}, "rtn");
        QVERIFY(!request.compressedPath.empty());
        seen.clear();
        auto other = runPlayground(request, m_registry, [&](const PlaygroundToken& t) { seen.push_back(t); });
        QVERIFY(other.ok());
        QVERIFY(other->meanKl > 0);
        if (other->divergenceAt >= 0) {
            for (int i = 0; i < other->divergenceAt; ++i)
                QCOMPARE(other->compressed[static_cast<std::size_t>(i)], other->original[static_cast<std::size_t>(i)]);
            QVERIFY(other->compressed[static_cast<std::size_t>(other->divergenceAt)] != other->original[static_cast<std::size_t>(other->divergenceAt)]);
            int marked = 0;
            for (const PlaygroundToken& t : seen)
                marked += t.firstDivergence ? 1 : 0;
            QCOMPARE(marked, 1);
        }
        // A missing file is named; cancelling before the start is reported as such.
        request.compressedPath = m_tmp.filePath("missing.pllm").toStdString();
        auto missing = runPlayground(request, m_registry, {});
        QVERIFY(!missing.ok());
        QVERIFY(missing.message().find("missing.pllm") != std::string::npos);
        std::atomic<bool> cancel{true};
        request.compressedPath = m_model;
        auto cancelled = runPlayground(request, m_registry, {}, {}, &cancel);
        QVERIFY(!cancelled.ok());
        QVERIFY(cancelled.cancelled());
    }

    void streamingTextAddsUpToTheWholeText()
    {
        auto tok = loadTokenizer(testsupport::demoTokenizer());
        QVERIFY(tok.ok());
        const std::vector<std::int32_t> ids = (*tok)->encode("Once upon a time, a tiny cat said: \"hello!\"");
        IncrementalDecoder stream(**tok);
        std::string pieces;
        for (std::int32_t id : ids)
            pieces += stream.push(id);
        QCOMPARE(pieces, (*tok)->decode(ids));
        QCOMPARE(pieces, stream.text());
        // An incomplete UTF-8 sequence is held back.
        QCOMPARE(completeUtf8Length("ab\xC3"), std::size_t{2});
        QCOMPARE(completeUtf8Length("ab\xC3\xA9"), std::size_t{4});
        QCOMPARE(completeUtf8Length("\xE2\x82"), std::size_t{0});
        QCOMPARE(completeUtf8Length("x\xF0\x9F\x98\x80"), std::size_t{5});
        // After a prompt, the first word keeps its space (the prompt's text is not returned).
        std::vector<std::int32_t> prompt{(*tok)->bosId()};
        const std::vector<std::int32_t> once = (*tok)->encode("Once upon a time");
        prompt.insert(prompt.end(), once.begin(), once.end());
        const std::vector<std::int32_t> more = (*tok)->encode("Once upon a time there was");
        IncrementalDecoder after(**tok, prompt);
        std::string continuation;
        for (std::size_t i = once.size(); i < more.size(); ++i)
            continuation += after.push(more[i]);
        QCOMPARE(continuation, std::string(" there was"));
        QCOMPARE(after.text(), continuation);
    }
};

QTEST_GUILESS_MAIN(TestGeneration)
#include "test_generation.moc"

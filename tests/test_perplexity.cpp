// Perplexity evaluation: the window plan, agreement with a per-window computation from raw
// logits, batching invariance, errors and cancellation, and the real stories260K figure.
#include "pocket/io/checkpoint.h"
#include "pocket/io/hf_writer.h"
#include "pocket/model/perplexity.h"
#include "pocket/io/text.h"
#include "pocket/io/tokenizer.h"
#include "test_support.h"

#include <random>

using namespace pocket;

namespace {
struct Fixture {
    QTemporaryDir dir;
    std::unique_ptr<Checkpoint> checkpoint;
    std::unique_ptr<LlamaModel> model;
};

std::unique_ptr<Fixture> tinyModel()
{
    auto f = std::make_unique<Fixture>();
    ModelConfig c;
    c.hiddenSize = 32; c.intermediateSize = 40; c.numLayers = 2; c.numHeads = 4; c.numKvHeads = 2; c.headDim = 8; c.vocabSize = 37;
    const std::string path = f->dir.filePath("m").toStdString();
    if (!writeRandomCheckpoint(c, 11, path, {}).ok())
        return nullptr;
    auto ckpt = openCheckpoint(path);
    if (!ckpt.ok())
        return nullptr;
    f->checkpoint = std::move(ckpt).value();
    auto model = LlamaModel::load(*f->checkpoint);
    if (!model.ok())
        return nullptr;
    f->model = std::move(model).value();
    return f;
}

std::vector<std::int32_t> randomTokens(std::size_t n, int vocab)
{
    std::mt19937 rng(3);
    std::vector<std::int32_t> t(n);
    for (auto& x : t) x = static_cast<std::int32_t>(3 + rng() % static_cast<unsigned>(vocab - 3));
    return t;
}

// The mean NLL computed the slow way: for each window, the full logits, a hand-written log-softmax,
// and only the tokens not yet scored.
double referenceMeanNll(const LlamaModel& model, const std::vector<std::int32_t>& text, int ctx, int stride)
{
    const int vocab = static_cast<int>(model.config().vocabSize);
    std::vector<bool> scored(text.size(), false);
    double sum = 0;
    std::size_t count = 0;
    for (std::size_t start = 0;; start += static_cast<std::size_t>(stride)) {
        const std::size_t len = std::min<std::size_t>(static_cast<std::size_t>(ctx - 1), text.size() - start);
        std::vector<std::int32_t> input{1};
        input.insert(input.end(), text.begin() + static_cast<std::ptrdiff_t>(start), text.begin() + static_cast<std::ptrdiff_t>(start + len));
        const auto logits = model.logits(input).value();
        for (std::size_t p = 0; p < len; ++p) {
            if (scored[start + p])
                continue;
            scored[start + p] = true;
            const float* row = logits.data() + p * static_cast<std::size_t>(vocab);
            double maxv = -1e300, z = 0;
            for (int v = 0; v < vocab; ++v) maxv = std::max(maxv, static_cast<double>(row[v]));
            for (int v = 0; v < vocab; ++v) z += std::exp(row[v] - maxv);
            sum += -(row[text[start + p]] - maxv - std::log(z));
            ++count;
        }
        if (start + len >= text.size())
            break;
    }
    return sum / static_cast<double>(count);
}
} // namespace

class TestPerplexity : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void windowPlan_data()
    {
        QTest::addColumn<int>("tokens");
        QTest::addColumn<int>("ctx");
        QTest::addColumn<int>("stride");
        QTest::newRow("one token") << 1 << 8 << 7;
        QTest::newRow("exact fit") << 14 << 8 << 7;
        QTest::newRow("remainder") << 15 << 8 << 7;
        QTest::newRow("ctx 2") << 5 << 2 << 1;
        QTest::newRow("sliding") << 100 << 16 << 5;
        QTest::newRow("stride 1") << 30 << 8 << 1;
        QTest::newRow("long") << 1000 << 256 << 255;
    }
    void windowPlan()
    {
        QFETCH(int, tokens);
        QFETCH(int, ctx);
        QFETCH(int, stride);
        const auto windows = planWindows(tokens, ctx, stride);
        std::vector<int> timesScored(static_cast<std::size_t>(tokens), 0);
        std::int64_t expectedStart = 0;
        for (const auto& w : windows) {
            QCOMPARE(w.start, expectedStart);
            expectedStart += stride;
            QVERIFY(w.length >= 1 && w.length <= ctx - 1); // BOS plus length fits in ctx
            QVERIFY(w.scoreFrom >= w.start && w.scoreFrom <= w.start + w.length);
            for (std::int64_t t = w.scoreFrom; t < w.start + w.length; ++t) ++timesScored[static_cast<std::size_t>(t)];
        }
        for (int t = 0; t < tokens; ++t) QCOMPARE(timesScored[static_cast<std::size_t>(t)], 1);
        QCOMPARE(windows.back().start + windows.back().length, static_cast<std::int64_t>(tokens));
        if (stride == ctx - 1) // non-overlapping: the minimum number of windows
            QCOMPARE(static_cast<int>(windows.size()), (tokens + ctx - 2) / (ctx - 1));
    }

    void matchesReference_data()
    {
        QTest::addColumn<int>("ctx");
        QTest::addColumn<int>("stride");
        QTest::addColumn<int>("batch");
        QTest::newRow("non-overlapping batch 1") << 16 << 0 << 1;
        QTest::newRow("non-overlapping batch 3") << 16 << 0 << 3;
        QTest::newRow("sliding") << 16 << 6 << 2;
        QTest::newRow("auto batch") << 9 << 0 << 0;
    }
    void matchesReference()
    {
        QFETCH(int, ctx);
        QFETCH(int, stride);
        QFETCH(int, batch);
        auto f = tinyModel();
        QVERIFY(f);
        const auto text = randomTokens(100, 37);
        EvalParams params;
        params.ctx = ctx;
        params.stride = stride;
        params.batch = batch;
        int calls = 0;
        auto result = evaluatePerplexity(*f->model, text, 1, params, [&](const EvalProgress& p) {
            ++calls;
            return p.windowsDone <= p.windowsTotal;
        });
        QVERIFY2(result.ok(), result.ok() ? "" : result.message().c_str());
        QCOMPARE(result->tokensScored, 100);
        QVERIFY(calls >= 1);
        const double want = referenceMeanNll(*f->model, text, ctx, stride > 0 ? stride : ctx - 1);
        QVERIFY2(std::abs(result->meanNll - want) < 1e-5 * want, qPrintable(QString("%1 vs %2").arg(result->meanNll, 0, 'g', 10).arg(want, 0, 'g', 10)));
        QVERIFY(std::abs(result->perplexity - std::exp(result->meanNll)) < 1e-9 * result->perplexity);
        QVERIFY(result->tokensPerSecond > 0);
    }

    void maxTokensLimitsScoring()
    {
        auto f = tinyModel();
        QVERIFY(f);
        const auto text = randomTokens(100, 37);
        EvalParams params;
        params.ctx = 16;
        params.maxTokens = 40;
        auto limited = evaluatePerplexity(*f->model, text, 1, params);
        QVERIFY(limited.ok());
        QCOMPARE(limited->tokensScored, 40);
        const std::vector<std::int32_t> prefix(text.begin(), text.begin() + 40);
        params.maxTokens = 0;
        auto direct = evaluatePerplexity(*f->model, prefix, 1, params);
        QVERIFY(direct.ok());
        QCOMPARE(limited->meanNll, direct->meanNll);
    }

    void errors()
    {
        auto f = tinyModel();
        QVERIFY(f);
        const auto text = randomTokens(50, 37);
        EvalParams p;
        p.ctx = 1;
        const auto badCtx = evaluatePerplexity(*f->model, text, 1, p);
        QCOMPARE(badCtx.kind(), ErrorKind::Usage);
        QCOMPARE(badCtx.error().setting, std::string("ctx"));
        QVERIFY(badCtx.message().find("ctx must be at least 2") != std::string::npos);
        p.ctx = 8;
        p.stride = 8;
        const auto badStride = evaluatePerplexity(*f->model, text, 1, p);
        QCOMPARE(badStride.kind(), ErrorKind::Usage);
        QCOMPARE(badStride.error().setting, std::string("stride"));
        p.stride = 0;
        QVERIFY(!evaluatePerplexity(*f->model, {}, 1, p).ok());
        QVERIFY(!evaluatePerplexity(*f->model, text, 99, p).ok()); // BOS outside the vocabulary
        QVERIFY(!evaluatePerplexity(*f->model, {1, 2, 500}, 1, p).ok()); // token outside the vocabulary
        int calls = 0;
        auto cancelled = evaluatePerplexity(*f->model, text, 1, p, [&](const EvalProgress&) { return ++calls < 2; });
        QVERIFY(!cancelled.ok());
        QCOMPARE(cancelled.message(), std::string("cancelled"));
        QCOMPARE(cancelled.kind(), ErrorKind::Cancelled);
        QCOMPARE(calls, 2);
    }

    void stories260kOnTinyStories()
    {
        // ../shared/assets/SOURCE.md: about 4.5 on the first 30,000 characters, 256-token windows
        // each starting with BOS, from an independent plain-C forward pass.
        const std::string path = testsupport::sharedAsset("eval/tinystories/tinystories_valid_part_a.txt");
        if (path.empty())
            QSKIP("../shared/assets is not present");
        auto ckpt = openCheckpoint(testsupport::demoModel());
        QVERIFY(ckpt.ok());
        auto tok = loadTokenizer((*ckpt)->tokenizerPath());
        QVERIFY(tok.ok());
        auto model = LlamaModel::load(**ckpt);
        QVERIFY(model.ok());
        const std::string text = readTextFile(path).value().substr(0, 30000);
        EvalParams params;
        params.ctx = 256;
        auto result = evaluatePerplexity(**model, (*tok)->encode(text), (*tok)->bosId(), params);
        QVERIFY(result.ok());
        qInfo("stories260K, first 30,000 characters, ctx 256: perplexity %.4f over %lld tokens", result->perplexity,
              static_cast<long long>(result->tokensScored));
        QVERIFY2(result->perplexity > 4.0 && result->perplexity < 5.0, qPrintable(QString::number(result->perplexity)));
    }
};

QTEST_APPLESS_MAIN(TestPerplexity)
#include "test_perplexity.moc"

// The LibTorch forward pass against a slow reference (tests/reference_llama.h) on small random
// models the test writes itself (every supported dtype and architecture option), and on the real
// stories260K checkpoint read raw, in llama2.c's own layout.
#include "pocket/io/checkpoint.h"
#include "pocket/io/hf_writer.h"
#include "pocket/model/llama_model.h"
#include "reference_llama.h"
#include "test_support.h"

#include <cstring>
#include <random>

using namespace pocket;

namespace {

reference::Config refConfig(const ModelConfig& c)
{
    return {static_cast<int>(c.hiddenSize), static_cast<int>(c.intermediateSize), static_cast<int>(c.numLayers), static_cast<int>(c.numHeads),
            static_cast<int>(c.numKvHeads), static_cast<int>(c.headDim), static_cast<int>(c.vocabSize), c.rmsNormEps, c.ropeTheta,
            c.tieWordEmbeddings, c.attentionBias, static_cast<int>(c.slidingWindow)};
}

// max |a - b| / max |b|
double relativeError(const std::vector<float>& got, const std::vector<double>& want)
{
    double maxDiff = 0, maxRef = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
        maxDiff = std::max(maxDiff, std::abs(static_cast<double>(got[i]) - want[i]));
        maxRef = std::max(maxRef, std::abs(want[i]));
    }
    return maxDiff / maxRef;
}

// Writes a model whose weights are large enough that attention is far from uniform, so that a
// RoPE or masking mistake changes the logits clearly.
Status writeTestModel(const ModelConfig& c, DType dtype, const std::string& dir, std::uint64_t shardBytes)
{
    HfWriteOptions options;
    options.dtype = dtype;
    options.maxShardBytes = shardBytes;
    return writeHfFolder(
        c,
        [](const TensorInfo& info, std::vector<float>& out) -> Status {
            std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>{}(info.name)));
            const bool norm = info.name.find("norm") != std::string::npos;
            const bool attention = info.name.find("q_proj") != std::string::npos || info.name.find("k_proj") != std::string::npos;
            std::normal_distribution<float> dist(norm ? 1.0f : 0.0f, norm ? 0.2f : (attention ? 0.35f : 0.1f));
            out.resize(static_cast<std::size_t>(elementCount(info.shape)));
            for (float& v : out) v = dist(rng);
            return {};
        },
        dir, options);
}

std::vector<int> someTokens(int count, int vocab, unsigned seed)
{
    std::mt19937 rng(seed);
    std::vector<int> t(static_cast<std::size_t>(count));
    for (int& x : t) x = static_cast<int>(rng() % static_cast<unsigned>(vocab));
    return t;
}

} // namespace

class TestForward : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void randomModels_data()
    {
        QTest::addColumn<int>("dtype");
        QTest::addColumn<int>("heads");
        QTest::addColumn<int>("kvHeads");
        QTest::addColumn<bool>("tied");
        QTest::addColumn<bool>("bias");
        QTest::addColumn<double>("theta");
        QTest::addColumn<int>("slidingWindow");
        QTest::addColumn<int>("shardBytes");
        QTest::newRow("f32 gqa untied") << static_cast<int>(DType::F32) << 4 << 2 << false << false << 10000.0 << 0 << 0;
        QTest::newRow("f16 mha tied bias theta5e5") << static_cast<int>(DType::F16) << 4 << 4 << true << true << 500000.0 << 0 << 0;
        QTest::newRow("bf16 mqa sharded") << static_cast<int>(DType::BF16) << 4 << 1 << false << false << 10000.0 << 0 << 20000;
        QTest::newRow("f32 sliding window") << static_cast<int>(DType::F32) << 4 << 2 << false << false << 10000.0 << 5 << 0;
    }
    void randomModels()
    {
        QFETCH(int, dtype);
        QFETCH(int, heads);
        QFETCH(int, kvHeads);
        QFETCH(bool, tied);
        QFETCH(bool, bias);
        QFETCH(double, theta);
        QFETCH(int, slidingWindow);
        QFETCH(int, shardBytes);
        ModelConfig c;
        c.hiddenSize = 32;
        c.intermediateSize = 48;
        c.numLayers = 2;
        c.numHeads = heads;
        c.numKvHeads = kvHeads;
        c.headDim = 8;
        c.vocabSize = 50;
        c.maxPositions = 64;
        c.rmsNormEps = 1e-5;
        c.ropeTheta = theta;
        c.tieWordEmbeddings = tied;
        c.attentionBias = bias;
        c.slidingWindow = slidingWindow;
        if (slidingWindow > 0) {
            c.architecture = "MistralForCausalLM";
            c.modelType = "mistral";
        }
        QTemporaryDir dir;
        const std::string path = dir.filePath("model").toStdString();
        auto written = writeTestModel(c, static_cast<DType>(dtype), path, static_cast<std::uint64_t>(shardBytes));
        QVERIFY2(written.ok(), written.ok() ? "" : written.message().c_str());
        if (shardBytes > 0)
            QVERIFY(QFileInfo::exists(QString::fromStdString(path + "/model.safetensors.index.json")));

        auto ckpt = openCheckpoint(path);
        QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.message().c_str());
        QCOMPARE((*ckpt)->config().slidingWindow, static_cast<std::int64_t>(slidingWindow));
        auto model = LlamaModel::load(**ckpt);
        QVERIFY2(model.ok(), model.ok() ? "" : model.message().c_str());

        const auto tokens = someTokens(12, 50, 7);
        auto got = (*model)->logits(std::vector<std::int32_t>(tokens.begin(), tokens.end()));
        QVERIFY(got.ok());
        const auto want = reference::logits(refConfig((*ckpt)->config()), [&](const std::string& name) {
            auto t = (*ckpt)->load(name);
            return t.ok() ? t->toFloat() : std::vector<float>();
        }, tokens, reference::Rope::Halves);
        QCOMPARE(got->size(), want.size());
        const double err = relativeError(*got, want);
        QVERIFY2(err < 1e-4, qPrintable(QString("relative error %1").arg(err)));

        // The reference must be able to tell a wrong model apart: the wrong RoPE layout must fail.
        const auto wrong = reference::logits(refConfig((*ckpt)->config()), [&](const std::string& name) {
            auto t = (*ckpt)->load(name);
            return t.ok() ? t->toFloat() : std::vector<float>();
        }, tokens, reference::Rope::Interleaved);
        QVERIFY(relativeError(*got, wrong) > 1e-3);
    }

    void batchedNllMatchesLogits()
    {
        ModelConfig c;
        c.hiddenSize = 32; c.intermediateSize = 48; c.numLayers = 1; c.numHeads = 4; c.numKvHeads = 2; c.headDim = 8; c.vocabSize = 40;
        QTemporaryDir dir;
        const std::string path = dir.filePath("m").toStdString();
        QVERIFY(writeTestModel(c, DType::F32, path, 0).ok());
        auto ckpt = openCheckpoint(path);
        QVERIFY(ckpt.ok());
        auto model = LlamaModel::load(**ckpt);
        QVERIFY(model.ok());
        std::vector<std::vector<std::int32_t>> batch;
        for (unsigned s = 0; s < 3; ++s) {
            const auto t = someTokens(9, 40, s + 1);
            batch.emplace_back(t.begin(), t.end());
        }
        auto nll = (*model)->nextTokenNll(batch);
        QVERIFY(nll.ok());
        for (std::size_t b = 0; b < batch.size(); ++b) {
            auto logits = (*model)->logits(batch[b]);
            QVERIFY(logits.ok());
            for (std::size_t t = 0; t + 1 < batch[b].size(); ++t) {
                const float* row = logits->data() + t * 40;
                double maxv = -1e300, sum = 0;
                for (int v = 0; v < 40; ++v) maxv = std::max(maxv, static_cast<double>(row[v]));
                for (int v = 0; v < 40; ++v) sum += std::exp(row[v] - maxv);
                const double want = -(row[batch[b][t + 1]] - maxv - std::log(sum));
                QVERIFY2(std::abs((*nll)[b][t] - want) < 1e-4, qPrintable(QString("b %1 t %2: %3 vs %4").arg(b).arg(t).arg((*nll)[b][t]).arg(want)));
            }
        }
        // Unequal lengths and out-of-vocabulary ids are errors, not crashes.
        QVERIFY(!(*model)->nextTokenNll({{1, 2, 3}, {1, 2}}).ok());
        QVERIFY(!(*model)->logits({1, 40}).ok());
        QVERIFY(!(*model)->logits({-1}).ok());
    }

    void stories260kMatchesLlama2cLayout()
    {
        // Read stories260K's raw llama2.c file independently of core (run.c's layout and its
        // interleaved RoPE) and compare with our loader, which permutes q/k to the HF layout.
        const std::string path = testsupport::demoModel();
        const auto bytes = testsupport::readBytes(path);
        QVERIFY(bytes.size() > 28);
        std::int32_t h[7];
        std::memcpy(h, bytes.data(), 28);
        const int dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kvHeads = h[4], vocab = std::abs(h[5]), seq = h[6];
        const int hd = dim / heads, kvDim = kvHeads * hd;
        const float* base = reinterpret_cast<const float*>(bytes.data() + 28);
        std::map<std::string, std::vector<float>> raw;
        const float* p = base;
        auto take = [&](const std::string& name, std::size_t n) { raw[name].assign(p, p + n); p += n; };
        auto takeLayers = [&](const std::string& suffix, std::size_t n) {
            for (int l = 0; l < layers; ++l) take("model.layers." + std::to_string(l) + suffix, n);
        };
        take("model.embed_tokens.weight", static_cast<std::size_t>(vocab) * dim);
        takeLayers(".input_layernorm.weight", static_cast<std::size_t>(dim));
        takeLayers(".self_attn.q_proj.weight", static_cast<std::size_t>(dim) * dim);
        takeLayers(".self_attn.k_proj.weight", static_cast<std::size_t>(kvDim) * dim);
        takeLayers(".self_attn.v_proj.weight", static_cast<std::size_t>(kvDim) * dim);
        takeLayers(".self_attn.o_proj.weight", static_cast<std::size_t>(dim) * dim);
        takeLayers(".post_attention_layernorm.weight", static_cast<std::size_t>(dim));
        takeLayers(".mlp.gate_proj.weight", static_cast<std::size_t>(hidden) * dim);
        takeLayers(".mlp.down_proj.weight", static_cast<std::size_t>(dim) * hidden);
        takeLayers(".mlp.up_proj.weight", static_cast<std::size_t>(hidden) * dim);
        take("model.norm.weight", static_cast<std::size_t>(dim));
        p += static_cast<std::size_t>(seq) * hd; // freq_cis tables
        QVERIFY(reinterpret_cast<const std::uint8_t*>(p) <= bytes.data() + bytes.size());

        auto ckpt = openCheckpoint(path);
        QVERIFY(ckpt.ok());
        auto model = LlamaModel::load(**ckpt);
        QVERIFY(model.ok());
        const std::vector<int> tokens = {1, 403, 407, 261, 378, 324, 272, 430, 289, 365, 395, 266, 439, 499, 285, 40, 120, 300, 2, 5};
        auto got = (*model)->logits(std::vector<std::int32_t>(tokens.begin(), tokens.end()));
        QVERIFY(got.ok());
        reference::Config rc{dim, hidden, layers, heads, kvHeads, hd, vocab, 1e-5, 10000.0, true, false};
        const auto want = reference::logits(rc, [&](const std::string& name) { return raw.at(name); }, tokens, reference::Rope::Interleaved);
        const double err = relativeError(*got, want);
        QVERIFY2(err < 1e-4, qPrintable(QString("relative error %1").arg(err)));
    }
};

QTEST_APPLESS_MAIN(TestForward)
#include "test_forward.moc"

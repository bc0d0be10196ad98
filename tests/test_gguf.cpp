// GGUF: every supported block type dequantised to the bit against slow reference dequantisers
// written here element by element from ggml's block layouts (ggml-common.h); models written as GGUF
// read back exactly, with llama.cpp's interleaved q/k rows turned back into Hugging Face's order;
// and hostile files (truncated, offsets past the end, overlaps, absurd counts and lengths, unknown
// types, keys of the wrong type) refused with an error naming the file, never a crash.
#include "pocket/io/checkpoint.h"
#include "pocket/io/dtype.h"
#include "pocket/io/ggml_types.h"
#include "pocket/io/gguf.h"
#include "pocket/io/gguf_export.h"
#include "pocket/io/gguf_writer.h"
#include "pocket/io/hf_writer.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/jobs/eval_job.h"
#include "pocket/model/llama_model.h"
#include "pocket/store/experiment_store.h"
#include "fake_method.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>

#include <cmath>
#include <cstring>
#include <random>

using namespace pocket;

namespace {

float h(const std::vector<std::uint8_t>& b, std::size_t at)
{
    std::uint16_t v;
    std::memcpy(&v, b.data() + at, 2);
    return halfToFloat(v);
}

// ---- reference dequantisers: weight i of one block, straight from the layout ----------------

float refQ4_0(const std::vector<std::uint8_t>& b, int i)
{
    const int q = i < 16 ? b[2 + i] & 15 : b[2 + i - 16] >> 4;
    return (q - 8) * h(b, 0);
}
float refQ4_1(const std::vector<std::uint8_t>& b, int i)
{
    const int q = i < 16 ? b[4 + i] & 15 : b[4 + i - 16] >> 4;
    return q * h(b, 0) + h(b, 2);
}
int fifthBit(const std::vector<std::uint8_t>& b, std::size_t at, int i) { return (b[at + i / 8] >> (i % 8)) & 1; }
float refQ5_0(const std::vector<std::uint8_t>& b, int i)
{
    const int lo = i < 16 ? b[6 + i] & 15 : b[6 + i - 16] >> 4;
    return ((lo | fifthBit(b, 2, i) << 4) - 16) * h(b, 0);
}
float refQ5_1(const std::vector<std::uint8_t>& b, int i)
{
    const int lo = i < 16 ? b[8 + i] & 15 : b[8 + i - 16] >> 4;
    return (lo | fifthBit(b, 4, i) << 4) * h(b, 0) + h(b, 2);
}
float refQ8_0(const std::vector<std::uint8_t>& b, int i) { return static_cast<std::int8_t>(b[2 + i]) * h(b, 0); }
float refIq4nl(const std::vector<std::uint8_t>& b, int i)
{
    const int q = i < 16 ? b[2 + i] & 15 : b[2 + i - 16] >> 4;
    return h(b, 0) * kIq4nlValues[q];
}
// Q2_K: scales[16] | qs[64] | d | dmin. Weights in two halves of 128; in each, four 2-bit planes of
// 32 bytes; 16 weights share a 4-bit scale (low nibble) and a 4-bit minimum (high nibble).
float refQ2_K(const std::vector<std::uint8_t>& b, int i)
{
    const int half = i / 128, plane = (i % 128) / 32, l = i % 32;
    const int q = (b[16 + half * 32 + l] >> (2 * plane)) & 3;
    const int sc = b[half * 8 + plane * 2 + l / 16];
    const float d = h(b, 80) * (sc & 15), m = h(b, 82) * (sc >> 4);
    return d * q - m;
}
// Q3_K: hmask[32] | qs[64] | scales[12] | d. 2 low bits as Q2_K, the third bit in hmask (set = no
// offset, clear = minus 4); sixteen 6-bit scales: low nibbles of bytes 0-7, high pairs in 8-11.
float refQ3_K(const std::vector<std::uint8_t>& b, int i)
{
    const int half = i / 128, plane = (i % 128) / 32, l = i % 32;
    const int low = (b[32 + half * 32 + l] >> (2 * plane)) & 3;
    const bool high = b[l] & (1 << (half * 4 + plane));
    const int s = half * 8 + plane * 2 + l / 16, k = s % 4, group = s / 4;
    const int nibble = group == 0 ? b[96 + k] & 15 : group == 1 ? b[100 + k] & 15 : group == 2 ? b[96 + k] >> 4 : b[100 + k] >> 4;
    const int scale = (nibble | ((b[104 + k] >> (2 * group)) & 3) << 4) - 32;
    return h(b, 108) * scale * (low - (high ? 0 : 4));
}
// The 6-bit scale and minimum of sub-block j (0-7) of Q4_K and Q5_K's 12 packed bytes at `at`.
void k4(const std::vector<std::uint8_t>& b, std::size_t at, int j, int& sc, int& m)
{
    const auto q = [&](int k) { return static_cast<int>(b[at + static_cast<std::size_t>(k)]); };
    sc = j < 4 ? q(j) & 63 : (q(j + 4) & 15) | ((q(j - 4) >> 6) << 4);
    m = j < 4 ? q(j + 4) & 63 : (q(j + 4) >> 4) | ((q(j) >> 6) << 4);
}
float refQ4_K(const std::vector<std::uint8_t>& b, int i)
{
    const int chunk = i / 64, hi = (i % 64) / 32, l = i % 32, byte = b[16 + chunk * 32 + l];
    int sc, m;
    k4(b, 4, 2 * chunk + hi, sc, m);
    return h(b, 0) * sc * (hi ? byte >> 4 : byte & 15) - h(b, 2) * m;
}
float refQ5_K(const std::vector<std::uint8_t>& b, int i)
{
    const int chunk = i / 64, hi = (i % 64) / 32, l = i % 32, byte = b[48 + chunk * 32 + l];
    const int q = (hi ? byte >> 4 : byte & 15) + ((b[16 + l] >> (2 * chunk + hi)) & 1) * 16;
    int sc, m;
    k4(b, 4, 2 * chunk + hi, sc, m);
    return h(b, 0) * sc * q - h(b, 2) * m;
}
// Q6_K: ql[128] | qh[64] | int8 scales[16] | d. In each half of 128, quarter k takes low nibbles
// (k < 2) or high nibbles of ql[64], and bits 2k..2k+1 of qh[32]; 16 weights share a scale.
float refQ6_K(const std::vector<std::uint8_t>& b, int i)
{
    const int half = i / 128, quarter = (i % 128) / 32, l = i % 32;
    const int lowByte = b[half * 64 + (quarter % 2) * 32 + l];
    const int low = quarter < 2 ? lowByte & 15 : lowByte >> 4;
    const int high = (b[128 + half * 32 + l] >> (2 * quarter)) & 3;
    const int scale = static_cast<std::int8_t>(b[192 + half * 8 + l / 16 + 2 * quarter]);
    return h(b, 208) * scale * ((low | high << 4) - 32);
}

struct TypeCase {
    GgmlType type;
    std::vector<std::size_t> halfOffsets; // where the block's fp16 scales are
    float (*reference)(const std::vector<std::uint8_t>&, int);
};

const std::vector<TypeCase>& typeCases()
{
    static const std::vector<TypeCase> cases{
        {GgmlType::Q4_0, {0}, refQ4_0},       {GgmlType::Q4_1, {0, 2}, refQ4_1},  {GgmlType::Q5_0, {0}, refQ5_0},
        {GgmlType::Q5_1, {0, 2}, refQ5_1},    {GgmlType::Q8_0, {0}, refQ8_0},     {GgmlType::IQ4_NL, {0}, refIq4nl},
        {GgmlType::Q2_K, {80, 82}, refQ2_K},  {GgmlType::Q3_K, {108}, refQ3_K},   {GgmlType::Q4_K, {0, 2}, refQ4_K},
        {GgmlType::Q5_K, {0, 2}, refQ5_K},    {GgmlType::Q6_K, {208}, refQ6_K},
    };
    return cases;
}

// `blocks` random blocks of `type`: random codes, fp16 scales in a sane range.
std::vector<std::uint8_t> randomBlocks(const TypeCase& c, int blocks, std::mt19937& gen)
{
    const GgmlTypeTraits t = ggmlTypeTraits(static_cast<std::uint32_t>(c.type));
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(t.blockBytes * blocks));
    for (auto& b : bytes)
        b = static_cast<std::uint8_t>(gen());
    std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
    for (int k = 0; k < blocks; ++k)
        for (std::size_t at : c.halfOffsets) {
            const std::uint16_t v = floatToHalf(scale(gen));
            std::memcpy(bytes.data() + k * t.blockBytes + at, &v, 2);
        }
    return bytes;
}

std::uint32_t bits(float f)
{
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

ModelConfig tinyConfig(const std::string& type)
{
    ModelConfig c;
    c.architecture = type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    c.modelType = type;
    c.hiddenSize = 64;
    c.intermediateSize = 96;
    c.numLayers = 2;
    c.numHeads = 4;
    c.numKvHeads = 2;
    c.headDim = 16;
    c.vocabSize = 64;
    c.maxPositions = 128;
    c.rmsNormEps = 1e-5;
    c.attentionBias = type == "qwen2";
    return c;
}

// A small valid GGUF: llama metadata and one F32 tensor.
std::vector<std::uint8_t> smallGguf(const std::string& dir)
{
    GgufWriter w;
    w.setString("general.architecture", "llama");
    w.setU32("llama.block_count", 1);
    w.setStrings("tokenizer.ggml.tokens", {"a", "b", "c"});
    std::vector<std::uint8_t> data(32 * 4, 0);
    w.addBytes("t0", GgmlType::F32, {2, 16}, data);
    w.addBytes("t1", GgmlType::Q8_0, {1, 32}, std::vector<std::uint8_t>(34, 1));
    const std::string path = dir + "/small.gguf";
    if (!w.write(path))
        return {};
    return testsupport::readBytes(path);
}

// A tiny llama model (stories260K's 512-token tokenizer embedded) whose 2-D tensors are random
// Q8_0 blocks, written by hand; general.file_type 7 (llama.cpp's MOSTLY_Q8_0) when `fileType`.
// Returns the path; `quantised` gets each tensor's blocks.
std::string writeQ8Model(const QTemporaryDir& dir, bool fileType, std::map<std::string, std::vector<std::uint8_t>>& quantised)
{
    ModelConfig c = tinyConfig("llama");
    c.vocabSize = 512;
    const std::string tag = fileType ? "typed" : "untyped";
    const std::string hf = dir.filePath(QString::fromStdString("hf-" + tag)).toStdString();
    const std::string f32 = dir.filePath(QString::fromStdString("f32-" + tag + ".gguf")).toStdString();
    HfWriteOptions hfOptions;
    hfOptions.tokenizerPath = testsupport::demoTokenizer();
    if (!writeRandomCheckpoint(c, 3, hf, hfOptions).ok())
        return {};
    auto source = openCheckpoint(hf);
    if (!source.ok() || !writeGgufModel(**source, f32, {DType::F32, "", false, {}}).ok())
        return {};
    auto plain = GgufFile::open(f32);
    if (!plain.ok())
        return {};
    GgufWriter w;
    for (const auto& [key, value] : (*plain)->metadata())
        if (key != "general.file_type")
            w.set(key, value);
    if (fileType)
        w.setU32("general.file_type", 7);
    std::mt19937 gen(5);
    for (const GgufTensor& t : (*plain)->tensors()) {
        if (t.shape.size() != 2) {
            const std::uint8_t* p = (*plain)->data(t);
            w.addBytes(t.name, t.type, t.shape, std::vector<std::uint8_t>(p, p + t.bytes));
            continue;
        }
        auto blocks = randomBlocks(typeCases()[4], static_cast<int>(t.elements() / 32), gen);
        quantised[t.name] = blocks;
        w.addBytes(t.name, GgmlType::Q8_0, t.shape, blocks);
    }
    const std::string q8 = dir.filePath(fileType ? "q8.gguf" : "q8-untyped.gguf").toStdString();
    return w.write(q8).ok() ? q8 : std::string();
}

} // namespace

class TestGguf : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void dequantisationMatchesTheReferenceToTheBit_data()
    {
        QTest::addColumn<int>("index");
        for (std::size_t i = 0; i < typeCases().size(); ++i)
            QTest::newRow(ggmlTypeTraits(static_cast<std::uint32_t>(typeCases()[i].type)).name) << static_cast<int>(i);
    }
    void dequantisationMatchesTheReferenceToTheBit()
    {
        QFETCH(int, index);
        const TypeCase& c = typeCases()[static_cast<std::size_t>(index)];
        const GgmlTypeTraits t = ggmlTypeTraits(static_cast<std::uint32_t>(c.type));
        std::mt19937 gen(1234 + index);
        const int blocks = 24;
        const auto bytes = randomBlocks(c, blocks, gen);
        // Through a GGUF file, as a model would be read.
        QTemporaryDir dir;
        const std::string path = dir.filePath("one.gguf").toStdString();
        GgufWriter w;
        w.setString("general.architecture", "test");
        w.addBytes("w", c.type, {blocks / 2, 2 * t.blockSize}, bytes);
        QVERIFY(w.write(path).ok());
        auto file = GgufFile::open(path);
        QVERIFY2(file.ok(), file.ok() ? "" : file.message().c_str());
        const GgufTensor* tensor = (*file)->tensor("w");
        QVERIFY(tensor);
        QCOMPARE(tensor->type, c.type);
        QCOMPARE(tensor->bytes, static_cast<std::uint64_t>(bytes.size()));
        std::vector<float> ours(static_cast<std::size_t>(blocks * t.blockSize));
        QVERIFY(dequantizeRow(c.type, (*file)->data(*tensor), ours.data(), static_cast<std::int64_t>(ours.size())));
        int compared = 0;
        for (int k = 0; k < blocks; ++k) {
            const std::vector<std::uint8_t> block(bytes.begin() + k * t.blockBytes, bytes.begin() + (k + 1) * t.blockBytes);
            for (int i = 0; i < t.blockSize; ++i) {
                const float want = c.reference(block, i), got = ours[static_cast<std::size_t>(k * t.blockSize + i)];
                if (bits(want) != bits(got))
                    QFAIL(qPrintable(QString("%1 block %2 weight %3: %4 vs reference %5").arg(t.name).arg(k).arg(i).arg(got).arg(want)));
                ++compared;
            }
        }
        QCOMPARE(compared, blocks * static_cast<int>(t.blockSize));
        // Not all zero: the scales and codes were really exercised.
        QVERIFY(std::any_of(ours.begin(), ours.end(), [](float v) { return v != 0; }));
        QCOMPARE(ggmlBitsPerWeight(c.type), 8.0 * t.blockBytes / t.blockSize);
    }

    void modelsRoundTripAndRopeRowsComeBack_data()
    {
        QTest::addColumn<QString>("type");
        QTest::addColumn<int>("dtype");
        QTest::newRow("llama f32") << "llama" << int(DType::F32);
        QTest::newRow("llama f16") << "llama" << int(DType::F16);
        QTest::newRow("qwen2 bf16") << "qwen2" << int(DType::BF16);
    }
    void modelsRoundTripAndRopeRowsComeBack()
    {
        QFETCH(QString, type);
        QFETCH(int, dtype);
        QTemporaryDir dir;
        const std::string hf = dir.filePath("hf").toStdString(), gguf = dir.filePath("m.gguf").toStdString();
        QVERIFY(writeRandomCheckpoint(tinyConfig(type.toStdString()), 5, hf, {}).ok());
        auto source = openCheckpoint(hf);
        QVERIFY(source.ok());
        GgufExportOptions options;
        options.dtype = static_cast<DType>(dtype);
        auto written = writeGgufModel(**source, gguf, options);
        QVERIFY2(written.ok(), written.ok() ? "" : written.message().c_str());
        auto back = openCheckpoint(gguf);
        QVERIFY2(back.ok(), back.ok() ? "" : back.message().c_str());
        QCOMPARE((*back)->format(), CheckpointFormat::Gguf);
        QCOMPARE((*back)->config().numLayers, std::int64_t{2});
        QCOMPARE((*back)->config().attentionBias, type == "qwen2");
        for (const TensorInfo& t : (*source)->tensors()) {
            auto a = (*source)->load(t.name);
            auto b = (*back)->load(t.name);
            QVERIFY2(a.ok() && b.ok(), t.name.c_str());
            const auto x = a->toFloat(), y = b->toFloat();
            QCOMPARE(x.size(), y.size());
            const DType stored = t.shape.size() == 2 ? static_cast<DType>(dtype) : DType::F32;
            for (std::size_t i = 0; i < x.size(); ++i) {
                float expected = x[i]; // the value as the file stores it
                if (stored != DType::F32) {
                    std::uint16_t half;
                    convertFromFloat(&x[i], 1, stored, &half);
                    convertToFloat(stored, &half, 1, &expected);
                }
                if (bits(expected) != bits(y[i]))
                    QFAIL(qPrintable(QString("%1[%2]: %3 vs %4").arg(QString::fromStdString(t.name)).arg(i).arg(y[i]).arg(expected)));
            }
        }
    }

    // The q rows as llama.cpp's converter writes them (numpy: w.reshape(heads, 2, hd/2, cols)
    // .swapaxes(1, 2)), written by hand here, must come back in Hugging Face's order.
    void interleavedRowsFromLlamaCppAreUndone()
    {
        const ModelConfig c = tinyConfig("llama");
        QTemporaryDir dir;
        const std::string hf = dir.filePath("hf").toStdString(), gguf = dir.filePath("m.gguf").toStdString();
        QVERIFY(writeRandomCheckpoint(c, 7, hf, {}).ok());
        auto source = openCheckpoint(hf);
        QVERIFY(source.ok());
        QVERIFY(writeGgufModel(**source, gguf, {DType::F32, "", false, {}}).ok());
        auto file = GgufFile::open(gguf);
        QVERIFY(file.ok());
        const GgufTensor* q = (*file)->tensor("blk.1.attn_q.weight");
        QVERIFY(q);
        auto original = (*source)->load("model.layers.1.self_attn.q_proj.weight");
        QVERIFY(original.ok());
        const auto w = original->toFloat();
        const float* stored = reinterpret_cast<const float*>((*file)->data(*q));
        const std::int64_t heads = c.numHeads, hd = c.headDim, cols = c.hiddenSize;
        for (std::int64_t head = 0; head < heads; ++head)
            for (std::int64_t pair = 0; pair < 2; ++pair)
                for (std::int64_t i = 0; i < hd / 2; ++i)
                    for (std::int64_t col = 0; col < cols; ++col) {
                        // numpy index [head, i, pair] after the swap, flattened, holds HF row [head, pair, i].
                        const float want = w[static_cast<std::size_t>((head * hd + pair * (hd / 2) + i) * cols + col)];
                        const float got = stored[(head * hd + i * 2 + pair) * cols + col];
                        QCOMPARE(got, want);
                    }
    }

    void quantisedModelsLoadDequantised()
    {
        // A model whose matrices are Q8_0 (written by hand) loads with every matrix dequantised,
        // reports the stored type, and runs a forward pass.
        QTemporaryDir dir;
        std::map<std::string, std::vector<std::uint8_t>> quantised;
        const std::string q8 = writeQ8Model(dir, true, quantised);
        QVERIFY(!q8.empty());
        auto ckpt = openCheckpoint(q8);
        QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.message().c_str());
        const TensorInfo* v = (*ckpt)->find("model.layers.0.self_attn.v_proj.weight");
        QVERIFY(v);
        QCOMPARE(v->storedType, std::string("Q8_0"));
        QCOMPARE(v->storedBitsPerWeight, 8.5);
        QCOMPARE(v->byteSize, static_cast<std::uint64_t>(quantised["blk.0.attn_v.weight"].size()));
        auto loaded = (*ckpt)->load("model.layers.0.self_attn.v_proj.weight");
        QVERIFY(loaded.ok());
        const auto values = loaded->toFloat();
        const auto& blocks = quantised["blk.0.attn_v.weight"];
        for (std::size_t i = 0; i < values.size(); ++i) {
            const std::vector<std::uint8_t> block(blocks.begin() + (i / 32) * 34, blocks.begin() + (i / 32 + 1) * 34);
            QCOMPARE(values[i], refQ8_0(block, static_cast<int>(i % 32)));
        }
        auto model = LlamaModel::load(**ckpt);
        QVERIFY2(model.ok(), model.ok() ? "" : model.message().c_str());
        auto logits = (*model)->logits({1, 5, 9, 3});
        QVERIFY(logits.ok());
        QVERIFY(std::all_of(logits->begin(), logits->end(), [](float x) { return std::isfinite(x); }));
    }

    // A quantised GGUF is llama.cpp's result: its bits are counted as ours are (bits of the stored
    // bytes over the weights), an eval of it is recorded as the method "llamacpp:<file type>", and a
    // compression of it keeps the starting point in its parameters.
    void quantisedGgufsAreRecordedAsLlamaCppRuns()
    {
        QTemporaryDir dir;
        std::map<std::string, std::vector<std::uint8_t>> quantised;
        const std::string q8 = writeQ8Model(dir, true, quantised), untyped = writeQ8Model(dir, false, quantised);
        QVERIFY(!q8.empty() && !untyped.empty());
        // The expected all-in figure straight from the file's tensor table.
        auto file = GgufFile::open(q8);
        QVERIFY(file.ok());
        double bits = 0, weights = 0;
        for (const GgufTensor& t : (*file)->tensors()) {
            bits += 8.0 * static_cast<double>(t.bytes);
            weights += static_cast<double>(t.elements());
        }
        auto ckpt = openCheckpoint(q8);
        QVERIFY(ckpt.ok());
        QCOMPARE((*ckpt)->fileType(), std::string("Q8_0"));
        const StoredTypes stored = storedTypes(**ckpt);
        QVERIFY(stored.quantized());
        QCOMPARE(stored.linearBitsPerWeight, 8.5);
        QCOMPARE(stored.linearMix(), std::string("Q8_0 100%"));
        QVERIFY(std::abs(stored.allBitsPerWeight - bits / weights) < 1e-9);
        QVERIFY(stored.allBitsPerWeight > 8.5); // the F32 norms cost more than 8.5 bits

        const std::string text = dir.filePath("text.txt").toStdString(), storePath = dir.filePath("store.sqlite").toStdString();
        testsupport::writeText(text, "Once upon a time there was a little dog. The dog liked to play in the sun with a ball.\n");
        MethodRegistry registry;
        (void)registry.addBuiltin(std::make_unique<testsupport::FakeQuantMethod>());
        RecorderOptions recording;
        recording.storePath = storePath;
        for (const std::string& model : {q8, untyped}) {
            EvalJobParams p;
            p.modelPath = model;
            p.textPath = text;
            p.eval.ctx = 16;
            auto evaluated = runEvalJob(p, registry, &recording);
            QVERIFY2(evaluated.ok(), evaluated.ok() ? "" : evaluated.message().c_str());
            QVERIFY(evaluated->runId > 0);
        }
        CompressJobParams cp;
        cp.modelPath = q8;
        cp.methodId = "fakequant";
        cp.outPath = dir.filePath("out.pllm").toStdString();
        auto compressed = runCompressJob(cp, registry, &recording);
        QVERIFY2(compressed.ok(), compressed.ok() ? "" : compressed.message().c_str());

        auto store = ExperimentStore::open(storePath);
        QVERIFY(store.ok());
        auto runs = (*store)->listRuns();
        QVERIFY(runs.ok());
        QCOMPARE(runs->size(), std::size_t{3});
        int evals = 0;
        for (const RunRecord& r : *runs) {
            const auto params = nlohmann::json::parse(r.paramsJson);
            if (r.kind == RunKind::Eval) {
                ++evals;
                QCOMPARE(r.method, std::string("llamacpp:Q8_0")); // the file type, or the commonest type without one
                QVERIFY(r.bpwCompressed && *r.bpwCompressed == 8.5);
                QVERIFY(r.bpwAllIn && std::abs(*r.bpwAllIn - bits / weights) < 1e-9);
                QCOMPARE(params.value("stored_types", ""), std::string("Q8_0 100%"));
            } else {
                QCOMPARE(r.method, std::string("fakequant"));
                QVERIFY2(params.contains("source"), r.paramsJson.c_str());
                QCOMPARE(params["source"].value("bpw_linear", 0.0), 8.5);
                QCOMPARE(params["source"].value("file_type", ""), std::string("Q8_0"));
            }
        }
        QCOMPARE(evals, 2);
    }

    void unsupportedModelsAreRefusedByName()
    {
        QTemporaryDir dir;
        const std::string path = dir.filePath("bert.gguf").toStdString();
        GgufWriter w;
        w.setString("general.architecture", "bert");
        QVERIFY(w.write(path).ok());
        auto r = openCheckpoint(path);
        QVERIFY(!r.ok());
        QCOMPARE(r.kind(), ErrorKind::Unsupported);
        QVERIFY2(r.message().find("'bert'") != std::string::npos && r.message().find(path) != std::string::npos, r.message().c_str());

        // A model with IQ2_XXS matrices: the type is named.
        const ModelConfig c = tinyConfig("llama");
        const std::string hf = dir.filePath("hf").toStdString(), f32 = dir.filePath("f32.gguf").toStdString();
        QVERIFY(writeRandomCheckpoint(c, 3, hf, {}).ok());
        auto source = openCheckpoint(hf);
        QVERIFY(source.ok());
        QVERIFY(writeGgufModel(**source, f32, {DType::F32, "", false, {}}).ok());
        auto plain = GgufFile::open(f32);
        QVERIFY(plain.ok());
        GgufWriter iq;
        for (const auto& [key, value] : (*plain)->metadata())
            iq.set(key, value);
        for (const GgufTensor& t : (*plain)->tensors()) {
            const std::uint8_t* p = (*plain)->data(t);
            if (t.name == "blk.0.ffn_up.weight") // 96 x 64 does not fill 256-blocks: a 1 x 256 stand-in
                iq.addBytes(t.name, GgmlType::IQ2_XXS, {24, 256}, std::vector<std::uint8_t>(24 * 66, 0));
            else
                iq.addBytes(t.name, t.type, t.shape, std::vector<std::uint8_t>(p, p + t.bytes));
        }
        const std::string bad = dir.filePath("iq.gguf").toStdString();
        QVERIFY(iq.write(bad).ok());
        auto refused = openCheckpoint(bad);
        QVERIFY(!refused.ok());
        QVERIFY2(refused.message().find("blk.0.ffn_up.weight") != std::string::npos, refused.message().c_str());
    }

    void hostileFilesAreRefusedNamingTheFile_data()
    {
        QTest::addColumn<QString>("damage");
        for (const char* d : {"truncated", "version 1", "big-endian", "kv count", "tensor count", "string length", "unknown value type",
                              "unknown tensor type", "zero dimension", "five dimensions", "offset past the end", "misaligned offset",
                              "overlap", "duplicate key", "bad alignment", "array count", "wrong key type"})
            QTest::newRow(d) << d;
    }
    void hostileFilesAreRefusedNamingTheFile()
    {
        QFETCH(QString, damage);
        QTemporaryDir dir;
        std::vector<std::uint8_t> bytes = smallGguf(dir.path().toStdString());
        QVERIFY(!bytes.empty());
        const auto put64 = [&](std::size_t at, std::uint64_t v) { std::memcpy(bytes.data() + at, &v, 8); };
        const auto put32 = [&](std::size_t at, std::uint32_t v) { std::memcpy(bytes.data() + at, &v, 4); };
        const auto find = [&](const std::string& s) {
            const auto it = std::search(bytes.begin(), bytes.end(), s.begin(), s.end());
            return static_cast<std::size_t>(it - bytes.begin());
        };
        // Layout: magic, version, tensor count, kv count, then "general.architecture" (key length at
        // its start - 8), ... "t0" and "t1" tensor infos.
        const std::size_t arch = find("general.architecture");
        const std::size_t t0 = find(std::string("t0\x02", 3)), t1 = find(std::string("t1\x02", 3));
        const std::size_t t0Type = t0 + 2 + 4 + 16, t0Offset = t0Type + 4, t1Offset = t1 + 2 + 4 + 16 + 4;
        const std::string d = damage.toStdString();
        if (d == "truncated") bytes.resize(bytes.size() - 40);
        else if (d == "version 1") put32(4, 1);
        else if (d == "big-endian") put32(4, 0x03000000);
        else if (d == "kv count") put64(16, std::uint64_t(1) << 50);
        else if (d == "tensor count") put64(8, std::uint64_t(1) << 40);
        else if (d == "string length") put64(arch - 8, std::uint64_t(1) << 62);
        else if (d == "unknown value type") put32(arch + 20, 77);
        else if (d == "unknown tensor type") put32(t0Type, 99);
        else if (d == "zero dimension") put64(t0 + 2 + 4, 0);
        else if (d == "five dimensions") put32(t0 + 2, 5);
        else if (d == "offset past the end") put64(t0Offset, std::uint64_t(1) << 40);
        else if (d == "misaligned offset") put64(t1Offset, 3);
        else if (d == "overlap") put64(t1Offset, 0);
        else if (d == "array count") put64(find("tokenizer.ggml.tokens") + 21 + 4 + 4, std::uint64_t(1) << 60);
        else { // well-formed files with wrong contents
            GgufWriter w;
            w.setString("general.architecture", "llama");
            if (d == "duplicate key")
                w.setString("general.architecture", "qwen2");
            if (d == "bad alignment")
                w.setU32("general.alignment", 3);
            if (d == "wrong key type")
                w.setString("llama.embedding_length", "sixty-four");
            w.addBytes("t0", GgmlType::F32, {2, 16}, std::vector<std::uint8_t>(128, 0));
            const std::string made = dir.filePath("made.gguf").toStdString();
            QVERIFY(w.write(made).ok());
            bytes = testsupport::readBytes(made);
        }
        const std::string path = dir.filePath("bad.gguf").toStdString();
        testsupport::writeBytes(path, bytes);
        auto file = GgufFile::open(path);
        auto model = openCheckpoint(path);
        QVERIFY2(!model.ok(), d.c_str());
        QVERIFY2(model.message().find(path) != std::string::npos, model.message().c_str());
        if (d == "wrong key type")
            QVERIFY2(model.message().find("'llama.embedding_length' is a string, not an integer") != std::string::npos, model.message().c_str());
        if (d != "wrong key type") {
            QVERIFY2(!file.ok(), d.c_str());
            QVERIFY2(file.message().find(path) != std::string::npos, file.message().c_str());
        }
    }

    void everyTruncationIsRefused()
    {
        QTemporaryDir dir;
        const std::vector<std::uint8_t> bytes = smallGguf(dir.path().toStdString());
        const std::string path = dir.filePath("cut.gguf").toStdString();
        int refused = 0;
        for (std::size_t n = 0; n + 1 < bytes.size(); n += 3) {
            testsupport::writeBytes(path, bytes.data(), n);
            auto file = GgufFile::open(path);
            if (file.ok()) // only a cut inside the last tensor's padding can still be whole
                QVERIFY2(n >= bytes.size() - 32, qPrintable(QString("cut at %1 of %2 opened").arg(n).arg(bytes.size())));
            else
                ++refused;
        }
        QVERIFY(refused > 50);
    }
};

QTEST_APPLESS_MAIN(TestGguf)
#include "test_gguf.moc"

// Export to GGUF (issue 15): rtn archives whose codes fit ggml's asymmetric 32-blocks come out as
// Q4_1 / Q5_1 with the codes copied; dequantised by a reference written here from ggml's block
// layouts (ggml-common.h), every weight rounds to the archive's decoded (fp16) weight. Matrices with
// no exact block type are decoded into the fallback type: F16 bit-equal to the archive, Q8_0 equal to
// a reference of ggml's quantize_row_q8_0_ref. Refusals leave nothing behind.
#include "pocket/archive/archive_checkpoint.h"
#include "pocket/archive/archive_gguf.h"
#include "pocket/archive/archive_gptq.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/dtype.h"
#include "pocket/io/gguf.h"
#include "pocket/io/hf_writer.h"
#include "pocket/io/safetensors.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/methods/method_registry.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>

#include <algorithm>
#include <cmath>
#include <cstring>

using namespace pocket;

namespace {

float h(const std::uint8_t* p)
{
    std::uint16_t v;
    std::memcpy(&v, p, 2);
    return halfToFloat(v);
}

// ggml's block_q4_1 {d, m, qs[16]} and block_q5_1 {d, m, qh[4], qs[16]}: weight j of a block.
float refQ4_1(const std::uint8_t* b, int j) { return (j < 16 ? (b[4 + j] & 0xF) : (b[4 + j - 16] >> 4)) * h(b) + h(b + 2); }
float refQ5_1(const std::uint8_t* b, int j)
{
    std::uint32_t qh;
    std::memcpy(&qh, b + 4, 4);
    const int low = j < 16 ? (b[8 + j] & 0xF) : (b[8 + j - 16] >> 4);
    return (low | (((qh >> j) & 1) << 4)) * h(b) + h(b + 2);
}

// ggml's quantize_row_q8_0_ref then dequantisation, for one block of 32.
void refQ8_0(const float* x, float* y)
{
    float amax = 0;
    for (int j = 0; j < 32; ++j)
        amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127, id = d != 0 ? 1 / d : 0;
    const float dh = halfToFloat(floatToHalf(d));
    for (int j = 0; j < 32; ++j)
        y[j] = static_cast<float>(static_cast<std::int8_t>(std::roundf(x[j] * id))) * dh;
}

// The weights of a GGUF matrix in its file order, dequantised by the references above.
std::vector<float> referenceValues(const GgufFile& f, const GgufTensor& t)
{
    const std::uint8_t* p = f.data(t);
    std::vector<float> out(static_cast<std::size_t>(t.elements()));
    for (std::size_t i = 0; i < out.size(); ++i) {
        const std::size_t block = i / 32;
        const int j = static_cast<int>(i % 32);
        switch (t.type) {
        case GgmlType::Q4_1: out[i] = refQ4_1(p + block * 20, j); break;
        case GgmlType::Q5_1: out[i] = refQ5_1(p + block * 24, j); break;
        case GgmlType::Q8_0: out[i] = static_cast<std::int8_t>(p[block * 34 + 2 + static_cast<std::size_t>(j)]) * h(p + block * 34); break;
        case GgmlType::F16: out[i] = h(p + 2 * i); break;
        case GgmlType::F32: std::memcpy(&out[i], p + 4 * i, 4); break;
        default: QTest::qFail("unexpected type", __FILE__, __LINE__); return {};
        }
    }
    return out;
}

// Hugging Face row order of a q/k matrix from llama.cpp's interleaved order (heads of hd rows).
std::vector<float> uninterleave(const std::vector<float>& w, std::int64_t rows, std::int64_t cols, std::int64_t heads)
{
    std::vector<float> out(w.size());
    const std::int64_t hd = rows / heads;
    for (std::int64_t head = 0; head < heads; ++head)
        for (std::int64_t i = 0; i < hd / 2; ++i)
            for (std::int64_t pair = 0; pair < 2; ++pair)
                std::memcpy(&out[static_cast<std::size_t>((head * hd + pair * (hd / 2) + i) * cols)],
                            &w[static_cast<std::size_t>((head * hd + 2 * i + pair) * cols)], static_cast<std::size_t>(cols) * 4);
    return out;
}

ModelConfig config(std::int64_t intermediate)
{
    ModelConfig c;
    c.architecture = "LlamaForCausalLM";
    c.modelType = "llama";
    c.hiddenSize = 64;
    c.intermediateSize = intermediate;
    c.numLayers = 2;
    c.numHeads = 4;
    c.numKvHeads = 2;
    c.headDim = 16;
    c.vocabSize = 512;
    c.maxPositions = 128;
    return c;
}

} // namespace

class TestExport : public QObject {
    Q_OBJECT
    QTemporaryDir m_tmp;
    MethodRegistry m_registry;

    std::string model(std::int64_t intermediate)
    {
        const std::string dir = m_tmp.filePath(QString("model-%1").arg(intermediate)).toStdString();
        if (!QFileInfo::exists(QString::fromStdString(dir))) {
            HfWriteOptions o;
            o.tokenizerPath = testsupport::demoTokenizer();
            if (!writeRandomCheckpoint(config(intermediate), 11, dir, o).ok())
                return {};
        }
        return dir;
    }
    std::string compress(const std::string& source, const std::string& name, std::vector<std::string> settings)
    {
        CompressJobParams p;
        p.modelPath = source;
        p.methodId = "rtn";
        p.settings = std::move(settings);
        p.outPath = m_tmp.filePath(QString::fromStdString(name)).toStdString();
        auto r = runCompressJob(p, m_registry);
        if (!r.ok())
            qWarning("%s", r.message().c_str());
        return r.ok() ? p.outPath : std::string();
    }

    // Every tensor of `gguf` against the archive's decoded weights: exact types round to them in
    // fp16, F16 equals them, Q8_0 equals the reference quantiser applied to them.
    void checkAgainstArchive(const std::string& archive, const std::string& gguf, int& exact, int& f16, int& q8)
    {
        auto decoded = openArchiveCheckpoint(archive, m_registry);
        QVERIFY(decoded.ok());
        auto file = GgufFile::open(gguf);
        QVERIFY2(file.ok(), file.ok() ? "" : file.message().c_str());
        const ModelConfig& c = (*decoded)->config();
        for (const TensorInfo& t : (*decoded)->tensors()) {
            const GgufTensor* g = (*file)->tensor(ggufTensorName(t.name));
            QVERIFY2(g, t.name.c_str());
            auto a = (*decoded)->load(t.name);
            QVERIFY(a.ok());
            const std::vector<float> want = a->toFloat();
            std::vector<float> got = referenceValues(**file, *g);
            QCOMPARE(got.size(), want.size());
            if (t.shape.size() == 2 && g->name.find(".attn_q.") != std::string::npos)
                got = uninterleave(got, t.shape[0], t.shape[1], c.numHeads);
            if (t.shape.size() == 2 && g->name.find(".attn_k.") != std::string::npos)
                got = uninterleave(got, t.shape[0], t.shape[1], c.numKvHeads);
            std::vector<float> expected = want;
            if (g->type == GgmlType::Q8_0)
                for (std::size_t b = 0; b < want.size(); b += 32)
                    refQ8_0(&want[b], &expected[b]);
            for (std::size_t i = 0; i < want.size(); ++i) {
                const bool block = g->type == GgmlType::Q4_1 || g->type == GgmlType::Q5_1;
                // Q4_1/Q5_1: d*q + m in float, which the archive rounds to fp16.
                const float compared = block ? halfToFloat(floatToHalf(got[i])) : got[i];
                if (compared != expected[i])
                    QFAIL(qPrintable(QString("%1[%2] (%3): %4 vs the archive's %5")
                                         .arg(QString::fromStdString(t.name))
                                         .arg(i)
                                         .arg(ggmlTypeTraits(static_cast<std::uint32_t>(g->type)).name)
                                         .arg(got[i])
                                         .arg(expected[i])));
            }
            exact += g->type == GgmlType::Q4_1 || g->type == GgmlType::Q5_1;
            f16 += g->type == GgmlType::F16;
            q8 += g->type == GgmlType::Q8_0;
        }
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_tmp.isValid());
        m_registry.loadFolder(POCKET_PLUGIN_DIR);
        QVERIFY(m_registry.find("rtn"));
    }

    void exactBlocksCarryTheArchivesCodes_data()
    {
        QTest::addColumn<int>("bits");
        QTest::addColumn<int>("group");
        QTest::addColumn<QString>("type");
        QTest::newRow("4-bit g64 -> Q4_1") << 4 << 64 << "Q4_1";
        QTest::newRow("5-bit g32 -> Q5_1") << 5 << 32 << "Q5_1";
    }
    void exactBlocksCarryTheArchivesCodes()
    {
        QFETCH(int, bits);
        QFETCH(int, group);
        QFETCH(QString, type);
        const std::string archive = compress(model(96), QString("exact-%1.pllm").arg(bits).toStdString(),
                                             {"bits=" + std::to_string(bits), "group=" + std::to_string(group)});
        QVERIFY(!archive.empty());
        const std::string gguf = m_tmp.filePath(QString("exact-%1.gguf").arg(bits)).toStdString();
        auto report = exportGguf(archive, gguf, m_registry, {});
        QVERIFY2(report.ok(), report.ok() ? "" : report.message().c_str());
        QCOMPARE(report->exact, 14); // 7 matrices x 2 blocks
        QCOMPARE(report->decoded, 0);
        for (const ArchiveGgufTensor& t : report->tensors)
            if (t.how == "exact") {
                QCOMPARE(QString::fromStdString(t.type), type);
                QVERIFY(t.maxDeviation <= 1.0 / 1024); // fp16 rounding of weights below 1
            }
        // The preview says the same of every tensor as the export did.
        auto plan = planGgufExport(archive, m_registry, {});
        QVERIFY(plan.ok());
        QCOMPARE(plan->size(), report->tensors.size());
        for (const ArchiveGgufTensor& p : *plan) {
            const auto it = std::find_if(report->tensors.begin(), report->tensors.end(), [&](const ArchiveGgufTensor& r) { return r.name == p.name; });
            QVERIFY(it != report->tensors.end());
            QCOMPARE(p.type, it->type);
            QCOMPARE(p.how, it->how);
        }
        // Q4_1: 20 bytes a 32-block = 5 bits a weight; Q5_1: 24 bytes = 6.
        QCOMPARE(report->bpwLinear, bits == 4 ? 5.0 : 6.0);
        int exact = 0, f16 = 0, q8 = 0;
        checkAgainstArchive(archive, gguf, exact, f16, q8);
        QCOMPARE(exact, 14);
        auto file = GgufFile::open(gguf);
        QVERIFY(file.ok());
        QCOMPARE((*file)->integer("general.file_type").value(), std::int64_t{bits == 4 ? 3 : 9});
        QVERIFY((*file)->find("tokenizer.ggml.tokens")); // the archive's tokenizer, in llama.cpp's form
    }

    void otherCodesAreDecodedIntoTheFallback_data()
    {
        QTest::addColumn<QString>("fallback");
        QTest::newRow("f16") << "f16";
        QTest::newRow("q8_0") << "q8_0";
    }
    void otherCodesAreDecodedIntoTheFallback()
    {
        QFETCH(QString, fallback);
        // 3-bit codes have no asymmetric 32-block type; 4-bit groups of 16 do not fill one.
        const std::string three = compress(model(96), "three-" + fallback.toStdString() + ".pllm", {"bits=3", "group=32"});
        QVERIFY(!three.empty());
        ArchiveGgufOptions o;
        o.fallback = fallback == "f16" ? GgmlType::F16 : GgmlType::Q8_0;
        const std::string gguf = m_tmp.filePath("three-" + fallback + ".gguf").toStdString();
        auto report = exportGguf(three, gguf, m_registry, o);
        QVERIFY2(report.ok(), report.ok() ? "" : report.message().c_str());
        QCOMPARE(report->exact, 0);
        QCOMPARE(report->decoded, 14);
        for (const ArchiveGgufTensor& t : report->tensors)
            if (t.how == "decoded") {
                QVERIFY2(t.reason.find("3-bit") != std::string::npos, t.reason.c_str());
                QCOMPARE(QString::fromStdString(t.type), fallback.toUpper());
            }
        int exact = 0, f16 = 0, q8 = 0;
        checkAgainstArchive(three, gguf, exact, f16, q8);
        QCOMPARE(exact, 0);
        QVERIFY((fallback == "f16" ? f16 : q8) >= 14);

        const std::string small = compress(model(96), "g16-" + fallback.toStdString() + ".pllm", {"bits=4", "group=16"});
        auto r16 = exportGguf(small, m_tmp.filePath("g16-" + fallback + ".gguf").toStdString(), m_registry, o);
        QVERIFY(r16.ok());
        QCOMPARE(r16->exact, 0);
        bool namedWhy = false;
        for (const ArchiveGgufTensor& t : r16->tensors)
            namedWhy = namedWhy || t.reason.find("do not fill 32-weight blocks") != std::string::npos;
        QVERIFY(namedWhy);
    }

    void refusalsLeaveNothingBehind()
    {
        // Rows of 80 weights: Q8_0 cannot hold them; refused naming the tensor, no file written.
        const std::string archive = compress(model(80), "rows80.pllm", {"bits=3", "group=16"});
        QVERIFY(!archive.empty());
        ArchiveGgufOptions o;
        o.fallback = GgmlType::Q8_0;
        const std::string out = m_tmp.filePath("rows80.gguf").toStdString();
        auto preview = planGgufExport(archive, m_registry, o);
        QVERIFY(preview.ok());
        QVERIFY(std::any_of(preview->begin(), preview->end(), [](const ArchiveGgufTensor& t) {
            return t.how == "refused" && t.name.find("down_proj") != std::string::npos;
        }));
        auto refused = exportGguf(archive, out, m_registry, o);
        QVERIFY(!refused.ok());
        QCOMPARE(refused.kind(), ErrorKind::Unsupported);
        QVERIFY2(refused.message().find("down_proj") != std::string::npos, refused.message().c_str());
        QVERIFY(!QFileInfo::exists(QString::fromStdString(out)));
        QVERIFY(QDir(m_tmp.path()).entryList({"rows80.gguf*"}).isEmpty());
        // An existing file is not replaced unless asked.
        testsupport::writeText(out, "keep me");
        auto kept = exportGguf(archive, out, m_registry, {});
        QVERIFY(!kept.ok());
        QCOMPARE(testsupport::readText(out), std::string("keep me"));
        ArchiveGgufOptions replace;
        replace.overwrite = true;
        QVERIFY(exportGguf(archive, out, m_registry, replace).ok());
        QVERIFY(GgufFile::open(out).ok());
    }

    // GPTQ format: an independent dequantiser from AutoGPTQ's published rule,
    // w[o, i] = scales[g_idx[i], o] * (q[i, o] - (qzeros[g_idx[i], o] + 1)), with q and qzeros
    // unpacked LSB-first from int32, reproduces the archive's decoded weights exactly (in fp16).
    void gptqFormatReproducesTheArchive_data()
    {
        QTest::addColumn<int>("bits");
        QTest::addColumn<int>("group");
        QTest::newRow("4-bit g32") << 4 << 32;
        QTest::newRow("2-bit g16") << 2 << 16;
        QTest::newRow("8-bit g32") << 8 << 32;
    }
    void gptqFormatReproducesTheArchive()
    {
        QFETCH(int, bits);
        QFETCH(int, group);
        const std::string archive = compress(model(96), QString("gptq-%1.pllm").arg(bits).toStdString(),
                                             {"bits=" + std::to_string(bits), "group=" + std::to_string(group), "zero=int"});
        QVERIFY(!archive.empty());
        const std::string out = m_tmp.filePath(QString("gptq-%1").arg(bits)).toStdString();
        auto report = exportGptq(archive, out, m_registry, {});
        QVERIFY2(report.ok(), report.ok() ? "" : report.message().c_str());
        QCOMPARE(report->quantized, 14);
        const auto config = nlohmann::json::parse(testsupport::readText(out + "/config.json"));
        const auto& q = config.at("quantization_config");
        QCOMPARE(q.at("quant_method").get<std::string>(), std::string("gptq"));
        QCOMPARE(q.at("bits").get<int>(), bits);
        QCOMPARE(q.at("group_size").get<int>(), group);
        QCOMPARE(q.at("desc_act").get<bool>(), false);
        QCOMPARE(q.at("sym").get<bool>(), false);
        QCOMPARE(q.at("checkpoint_format").get<std::string>(), std::string("gptq"));
        QCOMPARE(nlohmann::json::parse(testsupport::readText(out + "/quantize_config.json")), q);
        auto st = SafetensorsFile::open(out + "/model.safetensors");
        QVERIFY(st.ok());
        auto decoded = openArchiveCheckpoint(archive, m_registry);
        QVERIFY(decoded.ok());
        const int per = 32 / bits;
        const std::uint32_t mask = (1u << bits) - 1;
        int checked = 0;
        for (const TensorInfo& t : (*decoded)->tensors()) {
            const std::string base = t.name.substr(0, t.name.size() - 7); // without ".weight"
            const TensorInfo* qw = (*st)->find(base + ".qweight");
            if (!qw) {
                const TensorInfo* plain = (*st)->find(t.name);
                QVERIFY2(plain && plain->dtype == DType::F16, t.name.c_str());
                continue;
            }
            const std::int64_t out_ = t.shape[0], in = t.shape[1], groups = in / group;
            const TensorInfo* qz = (*st)->find(base + ".qzeros");
            const TensorInfo* sc = (*st)->find(base + ".scales");
            const TensorInfo* gi = (*st)->find(base + ".g_idx");
            QVERIFY(qz && sc && gi);
            QCOMPARE(qw->dtype, DType::I32);
            QCOMPARE(qw->shape, (std::vector<std::int64_t>{in / per, out_}));
            QCOMPARE(qz->dtype, DType::I32);
            QCOMPARE(qz->shape, (std::vector<std::int64_t>{groups, out_ / per}));
            QCOMPARE(sc->dtype, DType::F16);
            QCOMPARE(sc->shape, (std::vector<std::int64_t>{groups, out_}));
            QCOMPARE(gi->dtype, DType::I32);
            QCOMPARE(gi->shape, (std::vector<std::int64_t>{in}));
            const auto raw = [&](const TensorInfo* x) {
                auto d = (*st)->load(x->name);
                return std::vector<std::uint8_t>(d->data, d->data + d->info.byteSize);
            };
            const auto qwb = raw(qw), qzb = raw(qz), scb = raw(sc), gib = raw(gi);
            const auto i32 = [](const std::vector<std::uint8_t>& b, std::int64_t k) {
                std::uint32_t v;
                std::memcpy(&v, b.data() + 4 * k, 4);
                return v;
            };
            auto want = (*decoded)->load(t.name);
            QVERIFY(want.ok());
            const std::vector<float> w = want->toFloat();
            for (std::int64_t o = 0; o < out_; ++o)
                for (std::int64_t i = 0; i < in; ++i) {
                    const std::int64_t g = static_cast<std::int32_t>(i32(gib, i));
                    const std::uint32_t code = (i32(qwb, (i / per) * out_ + o) >> (bits * (i % per))) & mask;
                    const std::uint32_t zero = ((i32(qzb, g * (out_ / per) + o / per) >> (bits * (o % per))) & mask) + 1;
                    const float scale = h(scb.data() + 2 * (g * out_ + o));
                    const float value = halfToFloat(floatToHalf(scale * (static_cast<float>(code) - static_cast<float>(zero))));
                    if (value != w[static_cast<std::size_t>(o * in + i)])
                        QFAIL(qPrintable(QString("%1[%2, %3]: %4 vs the archive's %5").arg(QString::fromStdString(t.name)).arg(o).arg(i).arg(value).arg(w[static_cast<std::size_t>(o * in + i)])));
                }
            ++checked;
        }
        QCOMPARE(checked, 14);
    }

    void gptqRefusesWhatItCannotHold()
    {
        // fp16 minima (the default): no integer zero point to store.
        const std::string fp16 = compress(model(96), "gptq-fp16.pllm", {"bits=4", "group=32"});
        auto refused = exportGptq(fp16, m_tmp.filePath("gptq-fp16").toStdString(), m_registry, {});
        QVERIFY(!refused.ok());
        QCOMPARE(refused.kind(), ErrorKind::Unsupported);
        QVERIFY2(refused.message().find("zero=int") != std::string::npos, refused.message().c_str());
        QVERIFY(!QFileInfo::exists(m_tmp.filePath("gptq-fp16")));
        // 3-bit codes are not packed; and an integer-zero archive has no exact GGUF block type.
        const std::string three = compress(model(96), "gptq-3.pllm", {"bits=3", "group=32", "zero=int"});
        QVERIFY(!exportGptq(three, m_tmp.filePath("gptq-3").toStdString(), m_registry, {}).ok());
        const std::string intZero = compress(model(96), "gguf-int.pllm", {"bits=4", "group=32", "zero=int"});
        auto gguf = exportGguf(intZero, m_tmp.filePath("gguf-int.gguf").toStdString(), m_registry, {});
        QVERIFY(gguf.ok());
        QCOMPARE(gguf->exact, 0);
        int exact = 0, f16 = 0, q8 = 0;
        checkAgainstArchive(intZero, m_tmp.filePath("gguf-int.gguf").toStdString(), exact, f16, q8);
    }

    // AQLM format: the published rule W[o, g*d:(g+1)*d] = scales[o] * codebooks[0, codes[o, g, 0]
    // mod 2^b, 0, :] reproduces the archive's weights; names, dtypes, shapes and config keys as the
    // format documents them; a shared codebook is copied into each matrix.
    void aqlmFormatReproducesTheArchive_data()
    {
        QTest::addColumn<QString>("method");
        QTest::addColumn<QString>("settings");
        QTest::addColumn<int>("nbits");
        QTest::addColumn<int>("numBooks");
        QTest::newRow("vq d4 K256 (int8 codes, signed)") << "vq" << "d=4,K=256" << 8 << 1;
        QTest::newRow("vq d8 K16 type-shared") << "vq" << "d=8,K=16,sharing=type" << 4 << 1;
        QTest::newRow("aqlm 2x8 g4 model-shared") << "aqlm" << "M=2,B=8,g=4,sharing=model,objective=weights,rounds=1,steps=3" << 8 << 2;
    }
    void aqlmFormatReproducesTheArchive()
    {
        QFETCH(QString, method);
        QFETCH(QString, settings);
        QFETCH(int, nbits);
        QFETCH(int, numBooks);
        std::vector<std::string> set;
        for (const QString& x : settings.split(','))
            set.push_back(x.toStdString());
        CompressJobParams cp;
        cp.modelPath = model(96);
        cp.methodId = method.toStdString();
        cp.settings = set;
        cp.outPath = m_tmp.filePath("aqlm-" + method + QString::number(nbits) + ".pllm").toStdString();
        auto compressed = runCompressJob(cp, m_registry);
        QVERIFY2(compressed.ok(), compressed.ok() ? "" : compressed.message().c_str());
        const std::string out = m_tmp.filePath("aqlm-" + method + QString::number(nbits)).toStdString();
        auto report = exportAqlm(cp.outPath, out, m_registry, {});
        QVERIFY2(report.ok(), report.ok() ? "" : report.message().c_str());
        QCOMPARE(report->nbits, nbits);
        QCOMPARE(report->quantized, 14);
        QCOMPARE(report->sharedCodebooksCopied, settings.contains("sharing"));
        const auto q = nlohmann::json::parse(testsupport::readText(out + "/config.json")).at("quantization_config");
        QCOMPARE(q.at("quant_method").get<std::string>(), std::string("aqlm"));
        QCOMPARE(q.at("nbits_per_codebook").get<int>(), nbits);
        QCOMPARE(q.at("num_codebooks").get<int>(), numBooks);
        QCOMPARE(report->numCodebooks, numBooks);
        QCOMPARE(q.at("out_group_size").get<int>(), 1);
        const int d = q.at("in_group_size").get<int>();
        QCOMPARE(q.at("linear_weights_not_to_quantize").size(), std::size_t{2});
        auto st = SafetensorsFile::open(out + "/model.safetensors");
        QVERIFY(st.ok());
        auto decoded = openArchiveCheckpoint(cp.outPath, m_registry);
        QVERIFY(decoded.ok());
        int checked = 0;
        for (const TensorInfo& t : (*decoded)->tensors()) {
            const std::string base = t.name.substr(0, t.name.size() - 7);
            const TensorInfo* codes = (*st)->find(base + ".codes");
            if (!codes)
                continue;
            const std::int64_t rows = t.shape[0], blocks = t.shape[1] / d;
            const TensorInfo* books = (*st)->find(base + ".codebooks");
            const TensorInfo* scales = (*st)->find(base + ".scales");
            QVERIFY(books && scales);
            QCOMPARE(codes->dtype, nbits > 8 ? DType::I16 : DType::I8);
            QCOMPARE(codes->shape, (std::vector<std::int64_t>{rows, blocks, numBooks}));
            QCOMPARE(books->dtype, DType::F16);
            QCOMPARE(books->shape, (std::vector<std::int64_t>{numBooks, std::int64_t{1} << nbits, 1, d}));
            QCOMPARE(scales->dtype, DType::F16);
            QCOMPARE(scales->shape, (std::vector<std::int64_t>{rows, 1, 1, 1}));
            auto c = (*st)->load(codes->name);
            auto b = (*st)->load(books->name);
            auto s = (*st)->load(scales->name);
            auto want = (*decoded)->load(t.name);
            QVERIFY(c.ok() && b.ok() && s.ok() && want.ok());
            const std::vector<float> w = want->toFloat();
            const std::int64_t entries = std::int64_t{1} << nbits;
            for (std::int64_t o = 0; o < rows; ++o)
                for (std::int64_t g = 0; g < blocks; ++g) {
                    std::vector<float> sum(static_cast<std::size_t>(d), 0.0f);
                    for (int m = 0; m < numBooks; ++m) {
                        const std::int64_t at = (o * blocks + g) * numBooks + m;
                        const std::int64_t raw = nbits > 8 ? reinterpret_cast<const std::int16_t*>(c->data)[at]
                                                           : reinterpret_cast<const std::int8_t*>(c->data)[at];
                        const std::int64_t code = ((raw % entries) + entries) % entries;
                        for (int j = 0; j < d; ++j)
                            sum[static_cast<std::size_t>(j)] += h(b->data + 2 * ((m * entries + code) * d + j));
                    }
                    for (int j = 0; j < d; ++j) {
                        const float value = sum[static_cast<std::size_t>(j)] * h(s->data + 2 * o);
                        const float archive = w[static_cast<std::size_t>(o * t.shape[1] + g * d + j)];
                        if (halfToFloat(floatToHalf(value)) != halfToFloat(floatToHalf(archive)))
                            QFAIL(qPrintable(QString("%1[%2, %3]: %4 vs the archive's %5").arg(QString::fromStdString(t.name)).arg(o).arg(g * d + j).arg(value).arg(archive)));
                    }
                }
            ++checked;
        }
        QCOMPARE(checked, 14);
        // Not vq: refused with the reason.
        const std::string rtn = compress(model(96), "aqlm-rtn.pllm", {"bits=4", "group=32"});
        auto refused = exportAqlm(rtn, m_tmp.filePath("aqlm-rtn").toStdString(), m_registry, {});
        QVERIFY(!refused.ok());
        QVERIFY2(refused.message().find("vq and aqlm only") != std::string::npos, refused.message().c_str());
    }

    void plainModelsExportToo()
    {
        // A model that is not an archive: every matrix in the fallback type ("stored").
        ArchiveGgufOptions o;
        o.fallback = GgmlType::Q8_0;
        o.embedding = GgmlType::Q8_0;
        const std::string out = m_tmp.filePath("plain-q8.gguf").toStdString();
        auto report = exportGguf(model(96), out, m_registry, o);
        QVERIFY2(report.ok(), report.ok() ? "" : report.message().c_str());
        QCOMPARE(report->exact + report->decoded, 0);
        QCOMPARE(report->bpwLinear, 8.5); // Q8_0: 34 bytes a 32-block
        QCOMPARE(report->archiveBpwLinear, 0.0);
    }
};

QTEST_APPLESS_MAIN(TestExport)
#include "test_export.moc"

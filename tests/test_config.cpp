// Hugging Face config.json parsing and writing, on real published configs and broken ones.
#include "pocket/io/checkpoint.h"
#include "pocket/io/model_config.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <functional>

using namespace pocket;
using nlohmann::json;

namespace {

// meta-llama/Llama-2-7b-hf config.json as published, without num_key_value_heads (older copies
// of the file lack it; it then defaults to num_attention_heads).
const char* kLlama2_7b = R"({
  "_name_or_path": "meta-llama/Llama-2-7b-hf",
  "architectures": [
    "LlamaForCausalLM"
  ],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 11008,
  "max_position_embeddings": 4096,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.31.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
}
)";

// mistralai/Mistral-7B-v0.1 config.json as published.
const char* kMistral_7b = R"({
  "architectures": [
    "MistralForCausalLM"
  ],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
}
)";

// Qwen/Qwen2-0.5B config.json as published.
const char* kQwen2_05b = R"({
  "architectures": [
    "Qwen2ForCausalLM"
  ],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 131072,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 131072,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
}
)";

const std::string kSource = "/models/some model/config.json";

ModelConfig parseOk(const std::string& text)
{
    auto r = parseHfConfig(text, kSource);
    if (!r.ok())
        qWarning("unexpected error: %s", r.message().c_str());
    return r.ok() ? *r : ModelConfig{};
}

// The error message, or "" (and a test failure) when parsing succeeded.
QString parseError(const std::string& text)
{
    auto r = parseHfConfig(text, kSource);
    return r.ok() ? QString() : QString::fromStdString(r.message());
}

std::string withChange(const char* base, const std::function<void(json&)>& change)
{
    json j = json::parse(base);
    change(j);
    return j.dump(2);
}

// Every field of ModelConfig, compared one by one (QCOMPARE names the field that differs).
void compareConfigs(const ModelConfig& got, const ModelConfig& want)
{
    const ModelConfig& a = got;
    const ModelConfig& b = want;
    QCOMPARE(a.architecture, b.architecture);
    QCOMPARE(a.modelType, b.modelType);
    QCOMPARE(a.hiddenSize, b.hiddenSize);
    QCOMPARE(a.intermediateSize, b.intermediateSize);
    QCOMPARE(a.numLayers, b.numLayers);
    QCOMPARE(a.numHeads, b.numHeads);
    QCOMPARE(a.numKvHeads, b.numKvHeads);
    QCOMPARE(a.headDim, b.headDim);
    QCOMPARE(a.vocabSize, b.vocabSize);
    QCOMPARE(a.maxPositions, b.maxPositions);
    QCOMPARE(a.rmsNormEps, b.rmsNormEps);
    QCOMPARE(a.ropeTheta, b.ropeTheta);
    QCOMPARE(a.tieWordEmbeddings, b.tieWordEmbeddings);
    QCOMPARE(a.attentionBias, b.attentionBias);
    QCOMPARE(a.slidingWindow, b.slidingWindow);
    QCOMPARE(a.bosTokenId, b.bosTokenId);
    QCOMPARE(a.eosTokenId, b.eosTokenId);
    QCOMPARE(a.torchDtype, b.torchDtype);
}

} // namespace

class TestConfig : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void llama2_7b()
    {
        auto r = parseHfConfig(kLlama2_7b, kSource);
        QVERIFY2(r.ok(), r.ok() ? "" : r.message().c_str());
        const ModelConfig& c = *r;
        QCOMPARE(c.architecture, std::string("LlamaForCausalLM"));
        QCOMPARE(c.modelType, std::string("llama"));
        QCOMPARE(c.hiddenSize, 4096);
        QCOMPARE(c.intermediateSize, 11008);
        QCOMPARE(c.numLayers, 32);
        QCOMPARE(c.numHeads, 32);
        QCOMPARE(c.numKvHeads, 32); // absent: as many as the query heads
        QCOMPARE(c.headDim, 128);
        QCOMPARE(c.vocabSize, 32000);
        QCOMPARE(c.maxPositions, 4096);
        QCOMPARE(c.rmsNormEps, 1e-5);
        QCOMPARE(c.ropeTheta, 10000.0); // transformers' default
        QCOMPARE(c.tieWordEmbeddings, false);
        QCOMPARE(c.attentionBias, false);
        QCOMPARE(c.slidingWindow, 0);
        QCOMPARE(c.bosTokenId, 1);
        QCOMPARE(c.eosTokenId, 2);
        QCOMPARE(c.torchDtype, std::string("float16"));
    }

    void mistral_7b()
    {
        const ModelConfig c = parseOk(kMistral_7b);
        QCOMPARE(c.architecture, std::string("MistralForCausalLM"));
        QCOMPARE(c.modelType, std::string("mistral"));
        QCOMPARE(c.hiddenSize, 4096);
        QCOMPARE(c.intermediateSize, 14336);
        QCOMPARE(c.numHeads, 32);
        QCOMPARE(c.numKvHeads, 8);
        QCOMPARE(c.headDim, 128);
        QCOMPARE(c.maxPositions, 32768);
        QCOMPARE(c.ropeTheta, 10000.0);
        QCOMPARE(c.slidingWindow, 4096);
        QCOMPARE(c.attentionBias, false);

        // v0.2 and later: rope_theta 1e6 and "sliding_window": null (no window).
        const ModelConfig v2 = parseOk(withChange(kMistral_7b, [](json& j) {
            j["rope_theta"] = 1000000.0;
            j["sliding_window"] = nullptr;
        }));
        QCOMPARE(v2.ropeTheta, 1e6);
        QCOMPARE(v2.slidingWindow, 0);
        QCOMPARE(v2.numKvHeads, 8);
    }

    void qwen2()
    {
        const ModelConfig c = parseOk(kQwen2_05b);
        QCOMPARE(c.architecture, std::string("Qwen2ForCausalLM"));
        QCOMPARE(c.modelType, std::string("qwen2"));
        QCOMPARE(c.hiddenSize, 896);
        QCOMPARE(c.numHeads, 14);
        QCOMPARE(c.numKvHeads, 2);
        QCOMPARE(c.headDim, 64);
        QCOMPARE(c.vocabSize, 151936);
        QCOMPARE(c.rmsNormEps, 1e-6);
        QCOMPARE(c.ropeTheta, 1e6);
        QCOMPARE(c.attentionBias, true);       // Qwen2 always has q/k/v biases, whatever the config says
        QCOMPARE(c.tieWordEmbeddings, true);
        QCOMPARE(c.slidingWindow, 0);          // sliding_window is set but use_sliding_window is false
        QCOMPARE(c.bosTokenId, 151643);
        QCOMPARE(c.eosTokenId, 151643);

        const ModelConfig biasFalse = parseOk(withChange(kQwen2_05b, [](json& j) { j["attention_bias"] = false; }));
        QCOMPARE(biasFalse.attentionBias, true);
        // torch_dtype is informational: null or absent is fine.
        QVERIFY(parseHfConfig(withChange(kQwen2_05b, [](json& j) { j["torch_dtype"] = nullptr; }), kSource).ok());
        // use_sliding_window = true is refused (see badConfigs), never silently ignored.
        QVERIFY(!parseHfConfig(withChange(kQwen2_05b, [](json& j) { j["use_sliding_window"] = true; }), kSource).ok());
    }

    void modelTypeWithoutArchitectures()
    {
        const ModelConfig c = parseOk(withChange(kMistral_7b, [](json& j) { j.erase("architectures"); }));
        QCOMPARE(c.architecture, std::string("MistralForCausalLM"));
        QCOMPARE(c.numKvHeads, 8);
    }

    void optionalKeys()
    {
        // eos as a list (Llama 3 style), an explicit head_dim, tied embeddings and biases on Llama.
        const ModelConfig c = parseOk(withChange(kLlama2_7b, [](json& j) {
            j["eos_token_id"] = {128001, 128009};
            j["bos_token_id"] = 128000;
            j["head_dim"] = 64;
            j["tie_word_embeddings"] = true;
            j["attention_bias"] = true;
            j["rope_scaling"] = {{"rope_type", "default"}};
        }));
        QCOMPARE(c.eosTokenId, 128001);
        QCOMPARE(c.bosTokenId, 128000);
        QCOMPARE(c.headDim, 64);
        QCOMPARE(c.tieWordEmbeddings, true);
        QCOMPARE(c.attentionBias, true);
    }

    void parameterCounts_data()
    {
        QTest::addColumn<QString>("which");
        QTest::addColumn<qint64>("published");
        // The parameter counts the model cards and safetensors metadata report.
        QTest::newRow("Llama-2-7B") << "llama2" << qint64(6738415616);
        QTest::newRow("Mistral-7B-v0.1") << "mistral" << qint64(7241732096);
        QTest::newRow("Qwen2-0.5B") << "qwen2" << qint64(494032768);
    }
    void parameterCounts()
    {
        QFETCH(QString, which);
        QFETCH(qint64, published);
        const char* text = which == "llama2" ? kLlama2_7b : which == "mistral" ? kMistral_7b : kQwen2_05b;
        const ModelConfig c = parseOk(text);
        QCOMPARE(static_cast<qint64>(c.parameterCount()), published);
    }

    void parameterCountMatchesTensorShapes_data()
    {
        QTest::addColumn<QString>("which");
        QTest::addColumn<bool>("tie");
        QTest::addColumn<bool>("bias");
        QTest::addColumn<int>("headDim"); // 0: default
        for (const char* w : {"llama2", "mistral", "qwen2"})
            for (int v = 0; v < 4; ++v)
                QTest::newRow(qPrintable(QString("%1 tie=%2 bias=%3").arg(w).arg(v & 1).arg((v >> 1) & 1))) << w << bool(v & 1) << bool(v & 2) << 0;
        QTest::newRow("llama explicit head_dim") << "llama2" << false << false << 96;
    }
    void parameterCountMatchesTensorShapes()
    {
        // Independently: the sum of the element counts of every tensor the architecture holds.
        QFETCH(QString, which);
        QFETCH(bool, tie);
        QFETCH(bool, bias);
        QFETCH(int, headDim);
        const char* text = which == "llama2" ? kLlama2_7b : which == "mistral" ? kMistral_7b : kQwen2_05b;
        ModelConfig c = parseOk(text);
        c.tieWordEmbeddings = tie;
        c.attentionBias = c.attentionBias || bias;
        if (headDim) c.headDim = headDim;
        std::int64_t sum = 0;
        for (const auto& t : expectedTensors(c)) sum += elementCount(t.shape);
        QCOMPARE(c.parameterCount(), sum);
    }

    void missingRequiredKey_data()
    {
        QTest::addColumn<QString>("key");
        for (const char* k : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"})
            QTest::newRow(k) << k;
    }
    void missingRequiredKey()
    {
        QFETCH(QString, key);
        const QString message = parseError(withChange(kLlama2_7b, [&](json& j) { j.erase(key.toStdString()); }));
        QVERIFY2(!message.isEmpty(), "parsed without a required key");
        QVERIFY2(message.contains(key), qPrintable(message));
        QVERIFY2(message.contains(QString::fromStdString(kSource)), qPrintable(message));
    }

    void badConfigs_data()
    {
        QTest::addColumn<QString>("text");
        QTest::addColumn<QStringList>("mustContain");
        auto change = [](const std::function<void(json&)>& f) { return QString::fromStdString(withChange(kLlama2_7b, f)); };
        QTest::newRow("GPT-2") << change([](json& j) { j["architectures"] = {"GPT2LMHeadModel"}; j["model_type"] = "gpt2"; })
                               << QStringList{"GPT2LMHeadModel"};
        QTest::newRow("unknown model_type only") << change([](json& j) { j.erase("architectures"); j["model_type"] = "falcon"; })
                                                 << QStringList{"falcon"};
        QTest::newRow("hidden_size as string") << change([](json& j) { j["hidden_size"] = "4096"; }) << QStringList{"hidden_size"};
        QTest::newRow("hidden_size as float") << change([](json& j) { j["hidden_size"] = 4096.5; }) << QStringList{"hidden_size"};
        QTest::newRow("vocab_size null") << change([](json& j) { j["vocab_size"] = nullptr; }) << QStringList{"vocab_size"};
        QTest::newRow("num_key_value_heads as string") << change([](json& j) { j["num_key_value_heads"] = "8"; }) << QStringList{"num_key_value_heads"};
        QTest::newRow("rms_norm_eps as string") << change([](json& j) { j["rms_norm_eps"] = "1e-5"; }) << QStringList{"rms_norm_eps"};
        QTest::newRow("tie_word_embeddings as string") << change([](json& j) { j["tie_word_embeddings"] = "false"; }) << QStringList{"tie_word_embeddings"};
        QTest::newRow("rope_scaling llama3") << change([](json& j) {
            j["rope_scaling"] = {{"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                                 {"original_max_position_embeddings", 8192}, {"rope_type", "llama3"}};
        }) << QStringList{"rope_scaling", "llama3"};
        QTest::newRow("rope_scaling linear (old key)") << change([](json& j) { j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}}; })
                                                       << QStringList{"rope_scaling", "linear"};
        QTest::newRow("kv heads do not divide heads") << change([](json& j) { j["num_key_value_heads"] = 5; }) << QStringList{"num_key_value_heads"};
        QTest::newRow("zero kv heads") << change([](json& j) { j["num_key_value_heads"] = 0; }) << QStringList{"num_key_value_heads"};
        QTest::newRow("zero hidden_size") << change([](json& j) { j["hidden_size"] = 0; }) << QStringList{"hidden_size"};
        QTest::newRow("negative layers") << change([](json& j) { j["num_hidden_layers"] = -2; }) << QStringList{"num_hidden_layers"};
        QTest::newRow("odd head_dim") << change([](json& j) { j["head_dim"] = 127; }) << QStringList{"head_dim"};
        QTest::newRow("zero rope_theta") << change([](json& j) { j["rope_theta"] = 0; }) << QStringList{"rope_theta"};
        QTest::newRow("gelu activation") << change([](json& j) { j["hidden_act"] = "gelu"; }) << QStringList{"gelu"};
        // Qwen2 slides the window only in layers >= max_window_layers, which the forward pass does not model.
        QTest::newRow("Qwen2 with a sliding window") << QString::fromStdString(withChange(kQwen2_05b, [](json& j) {
            j["use_sliding_window"] = true;
            j["sliding_window"] = 4096;
        })) << QStringList{"use_sliding_window"};
        QTest::newRow("model_type a number") << change([](json& j) { j.erase("architectures"); j["model_type"] = 5; }) << QStringList{"model_type"};
        QTest::newRow("rope_type a number") << change([](json& j) { j["rope_scaling"] = {{"rope_type", 3}}; }) << QStringList{"rope_scaling"};
        QTest::newRow("absurd layer count") << change([](json& j) { j["num_hidden_layers"] = 200000000; }) << QStringList{"num_hidden_layers"};
        QTest::newRow("absurd vocabulary") << change([](json& j) { j["vocab_size"] = 1000000000; }) << QStringList{"vocab_size"};
        QTest::newRow("invalid JSON") << QString("{\"hidden_size\": 4096,") << QStringList{"JSON"};
        QTest::newRow("empty text") << QString("") << QStringList{};
        QTest::newRow("array, not object") << QString("[1, 2, 3]") << QStringList{};
        QTest::newRow("no architecture at all") << QString("{\"hidden_size\": 64}") << QStringList{};
    }
    void badConfigs()
    {
        QFETCH(QString, text);
        QFETCH(QStringList, mustContain);
        const QString message = parseError(text.toStdString());
        QVERIFY2(!message.isEmpty(), "accepted a bad config");
        QVERIFY2(message.contains(QString::fromStdString(kSource)), qPrintable("does not name the file: " + message));
        for (const QString& s : mustContain) QVERIFY2(message.contains(s), qPrintable("'" + s + "' not in: " + message));
    }

    void loadFromFile()
    {
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        const std::string path = dir.filePath("config.json").toStdString();
        testsupport::writeText(path, kMistral_7b);
        auto r = loadHfConfig(path);
        QVERIFY2(r.ok(), r.ok() ? "" : r.message().c_str());
        compareConfigs(*r, parseOk(kMistral_7b));
        if (QTest::currentTestFailed()) return;

        // Errors from a file name that file.
        testsupport::writeText(path, withChange(kMistral_7b, [](json& j) { j.erase("vocab_size"); }));
        r = loadHfConfig(path);
        QVERIFY(!r.ok());
        QVERIFY2(QString::fromStdString(r.message()).contains(QString::fromStdString(path)), r.message().c_str());
        QVERIFY2(QString::fromStdString(r.message()).contains("vocab_size"), r.message().c_str());

        const std::string missing = dir.filePath("nowhere/config.json").toStdString();
        r = loadHfConfig(missing);
        QVERIFY(!r.ok());
        QVERIFY2(QString::fromStdString(r.message()).contains(QString::fromStdString(missing)), r.message().c_str());
    }

    void roundTrip_data()
    {
        QTest::addColumn<QString>("text");
        QTest::newRow("Llama-2-7B") << QString(kLlama2_7b);
        QTest::newRow("Mistral-7B") << QString(kMistral_7b);
        QTest::newRow("Qwen2-0.5B") << QString(kQwen2_05b);
        QTest::newRow("Llama variant") << QString::fromStdString(withChange(kLlama2_7b, [](json& j) {
            j["head_dim"] = 64;
            j["num_key_value_heads"] = 4;
            j["tie_word_embeddings"] = true;
            j["attention_bias"] = true;
            j["rope_theta"] = 500000.0;
            j["rms_norm_eps"] = 3.3e-7;
            j["eos_token_id"] = {7, 9};
            j.erase("torch_dtype");
        }));
    }
    void roundTrip()
    {
        QFETCH(QString, text);
        const ModelConfig a = parseOk(text.toStdString());
        QVERIFY(a.hiddenSize > 0);
        const std::string written = hfConfigJson(a);
        QVERIFY(json::accept(written));
        auto b = parseHfConfig(written, "written/config.json");
        QVERIFY2(b.ok(), b.ok() ? "" : b.message().c_str());
        compareConfigs(*b, a);
        if (QTest::currentTestFailed()) return;
        // Writing again gives the same text.
        QCOMPARE(QString::fromStdString(hfConfigJson(*b)), QString::fromStdString(written));
    }

    void writtenJsonHasTheKeysTransformersReads()
    {
        const ModelConfig c = parseOk(kMistral_7b);
        const json j = json::parse(hfConfigJson(c));
        QCOMPARE(j.at("architectures").at(0).get<std::string>(), std::string("MistralForCausalLM"));
        QCOMPARE(j.at("model_type").get<std::string>(), std::string("mistral"));
        QCOMPARE(j.at("hidden_size").get<std::int64_t>(), 4096);
        QCOMPARE(j.at("intermediate_size").get<std::int64_t>(), 14336);
        QCOMPARE(j.at("num_hidden_layers").get<std::int64_t>(), 32);
        QCOMPARE(j.at("num_attention_heads").get<std::int64_t>(), 32);
        QCOMPARE(j.at("num_key_value_heads").get<std::int64_t>(), 8);
        QCOMPARE(j.at("vocab_size").get<std::int64_t>(), 32000);
        QCOMPARE(j.at("rms_norm_eps").get<double>(), 1e-5);
        QCOMPARE(j.at("sliding_window").get<std::int64_t>(), 4096);
        QCOMPARE(j.at("tie_word_embeddings").get<bool>(), false);
    }
};

QTEST_APPLESS_MAIN(TestConfig)
#include "test_config.moc"

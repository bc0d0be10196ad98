// Opening checkpoints: llama2.c legacy files (shared and separate classifier), Hugging Face
// folders (single and sharded), conversion between them, and every malformed input we can name.
#include "pocket/io/checkpoint.h"
#include "pocket/io/hf_writer.h"
#include "pocket/io/safetensors.h"
#include "test_support.h"

#include <cstring>
#include <sys/stat.h>
#include <filesystem>

using namespace pocket;
namespace fs = std::filesystem;

namespace {
ModelConfig tinyConfig()
{
    ModelConfig c;
    c.hiddenSize = 16; c.intermediateSize = 24; c.numLayers = 2; c.numHeads = 4; c.numKvHeads = 2; c.headDim = 4; c.vocabSize = 30;
    return c;
}

void expectError(const Result<std::unique_ptr<Checkpoint>>& r, const std::string& path, const std::string& needle)
{
    QVERIFY2(!r.ok(), "expected an error");
    QVERIFY2(r.message().find(path) != std::string::npos, r.message().c_str());
    QVERIFY2(r.message().find(needle) != std::string::npos, r.message().c_str());
}
} // namespace

class TestCheckpoint : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void stories260k()
    {
        auto ckpt = openCheckpoint(testsupport::demoModel());
        QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.message().c_str());
        const ModelConfig& c = (*ckpt)->config();
        // The header facts of stories260K (../shared/assets/SOURCE.md).
        QCOMPARE(c.hiddenSize, 64);
        QCOMPARE(c.intermediateSize, 172);
        QCOMPARE(c.numLayers, 5);
        QCOMPARE(c.numHeads, 8);
        QCOMPARE(c.numKvHeads, 4);
        QCOMPARE(c.vocabSize, 512);
        QCOMPARE(c.maxPositions, 512);
        QVERIFY(c.tieWordEmbeddings);
        QCOMPARE((*ckpt)->format(), CheckpointFormat::Llama2c);
        QCOMPARE((*ckpt)->tensors().size(), static_cast<std::size_t>(1 + 5 * 9 + 1));
        QCOMPARE(static_cast<std::int64_t>((*ckpt)->totalBytes() / 4), c.parameterCount());
        QVERIFY((*ckpt)->tokenizerPath().find("tok512.bin") != std::string::npos);
        auto norm = (*ckpt)->load("model.norm.weight");
        QVERIFY(norm.ok());
        QCOMPARE(norm->info.shape, (std::vector<std::int64_t>{64}));
        // The final norm sits right before the RoPE tables at the end of the file: check by offset.
        const auto bytes = testsupport::readBytes(testsupport::demoModel());
        const std::size_t offset = bytes.size() - (512 * 8 / 2 * 2 + 64) * 4;
        QCOMPARE(std::memcmp(norm->data, bytes.data() + offset, 64 * 4), 0);
        QVERIFY(!(*ckpt)->load("model.layers.9.mlp.up_proj.weight").ok());
    }

    void llama2cSeparateClassifier()
    {
        // A negative vocabulary size means a separate classifier follows the RoPE tables.
        auto bytes = testsupport::readBytes(testsupport::demoModel());
        std::int32_t vocab;
        std::memcpy(&vocab, bytes.data() + 20, 4);
        const std::int32_t negative = -vocab;
        std::memcpy(bytes.data() + 20, &negative, 4);
        std::vector<float> head(static_cast<std::size_t>(vocab) * 64);
        for (std::size_t i = 0; i < head.size(); ++i) head[i] = static_cast<float>(i % 97) * 0.01f;
        const auto* hb = reinterpret_cast<const std::uint8_t*>(head.data());
        bytes.insert(bytes.end(), hb, hb + head.size() * 4);
        QTemporaryDir dir;
        const std::string path = dir.filePath("untied.bin").toStdString();
        testsupport::writeBytes(path, bytes);
        auto ckpt = openCheckpoint(path);
        QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.message().c_str());
        QVERIFY(!(*ckpt)->config().tieWordEmbeddings);
        auto t = (*ckpt)->load("lm_head.weight");
        QVERIFY(t.ok());
        QCOMPARE(t->toFloat(), head);
        QVERIFY((*ckpt)->tokenizerPath().empty()); // no tokenizer beside this copy

        // Without the classifier's bytes the file is truncated.
        bytes.resize(bytes.size() - 4);
        testsupport::writeBytes(path, bytes);
        expectError(openCheckpoint(path), path, "truncated");
    }

    void llama2cBadFiles()
    {
        QTemporaryDir dir;
        const auto good = testsupport::readBytes(testsupport::demoModel());
        const std::string path = dir.filePath("bad.bin").toStdString();

        testsupport::writeBytes(path, std::vector<std::uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(good.size() / 2)));
        expectError(openCheckpoint(path), path, "truncated");

        testsupport::writeBytes(path, std::vector<std::uint8_t>(good.begin(), good.begin() + 10));
        expectError(openCheckpoint(path), path, "28-byte");

        testsupport::writeText(path, std::string(64, 'x'));
        expectError(openCheckpoint(path), path, "not a llama2.c checkpoint");

        std::vector<std::uint8_t> v1(256, 0);
        const std::uint32_t magic = 0x616b3432u;
        std::memcpy(v1.data(), &magic, 4);
        testsupport::writeBytes(path, v1);
        expectError(openCheckpoint(path), path, "version 1+");

        expectError(openCheckpoint(dir.filePath("missing.bin").toStdString()), "missing.bin", "no such file");
    }

    void convertLlama2cToHf()
    {
        auto source = openCheckpoint(testsupport::demoModel());
        QVERIFY(source.ok());
        QTemporaryDir dir;
        const std::string out = dir.filePath("hf").toStdString();
        auto status = convertToHf(**source, out, {});
        QVERIFY2(status.ok(), status.ok() ? "" : status.message().c_str());
        QVERIFY(fs::exists(out + "/config.json"));
        QVERIFY(fs::exists(out + "/model.safetensors"));
        QVERIFY(fs::exists(out + "/tokenizer.bin"));
        for (const auto& entry : fs::directory_iterator(dir.path().toStdString()))
            QVERIFY2(entry.path().filename() == "hf", entry.path().c_str()); // no temporary folders left


        for (const std::string& name : {out, out + "/model.safetensors", out + "/config.json"}) { // all three spellings open it
            auto hf = openCheckpoint(name);
            QVERIFY2(hf.ok(), hf.ok() ? "" : hf.message().c_str());
            QCOMPARE((*hf)->format(), CheckpointFormat::HfSafetensors);
            QCOMPARE((*hf)->config().parameterCount(), (*source)->config().parameterCount());
            QVERIFY((*hf)->tokenizerPath().find("tokenizer.bin") != std::string::npos);
        }
        auto hf = openCheckpoint(out);
        for (const auto& info : (*source)->tensors()) {
            auto a = (*source)->load(info.name);
            auto b = (*hf)->load(info.name);
            QVERIFY(a.ok() && b.ok());
            QCOMPARE(b->info.shape, a->info.shape);
            QVERIFY2(a->toFloat() == b->toFloat(), info.name.c_str());
        }
        // A trailing slash names the same folder.
        const std::string slashed = dir.filePath("hf2").toStdString() + "/";
        QVERIFY(convertToHf(**source, slashed, {}).ok());
        QVERIFY(openCheckpoint(slashed).ok());

        // Converting again into the same folder needs overwrite; the original stays intact.
        QVERIFY(!convertToHf(**source, out, {}).ok());
        HfWriteOptions overwrite;
        overwrite.overwrite = true;
        overwrite.dtype = DType::BF16;
        QVERIFY(convertToHf(**source, out, overwrite).ok());
        auto bf = openCheckpoint(out);
        QVERIFY(bf.ok());
        QCOMPARE((*bf)->tensors()[0].dtype, DType::BF16);
    }

    void qkPermutationIsItsOwnInverseOfLlama2cLayout()
    {
        // Row r of an HF q_proj head is row 2*(r % (hd/2)) + r / (hd/2) of llama2.c's layout.
        auto ckpt = openCheckpoint(testsupport::demoModel());
        QVERIFY(ckpt.ok());
        const auto bytes = testsupport::readBytes(testsupport::demoModel());
        const std::size_t qOffset = 28 + (512 * 64 + 5 * 64) * 4; // embedding, then the attention norms
        const float* raw = reinterpret_cast<const float*>(bytes.data() + qOffset);
        auto q = (*ckpt)->load("model.layers.0.self_attn.q_proj.weight");
        QVERIFY(q.ok());
        const auto v = q->toFloat();
        const int hd = 8;
        for (int r = 0; r < 64; ++r) {
            const int head = r / hd, within = r % hd;
            const int from = head * hd + 2 * (within % (hd / 2)) + within / (hd / 2);
            QVERIFY(std::memcmp(v.data() + r * 64, raw + from * 64, 64 * 4) == 0);
        }
    }

    void shardedFolder()
    {
        QTemporaryDir dir;
        const std::string out = dir.filePath("sharded").toStdString();
        HfWriteOptions options;
        options.maxShardBytes = 4000;
        QVERIFY(writeRandomCheckpoint(tinyConfig(), 9, out, options).ok());
        QVERIFY(fs::exists(out + "/model.safetensors.index.json"));
        QVERIFY(!fs::exists(out + "/model.safetensors"));
        auto ckpt = openCheckpoint(out);
        QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.message().c_str());
        QVERIFY((*ckpt)->fileOf("model.norm.weight") != (*ckpt)->fileOf("model.embed_tokens.weight"));

        // The same seed written unsharded gives the same values.
        const std::string single = dir.filePath("single").toStdString();
        QVERIFY(writeRandomCheckpoint(tinyConfig(), 9, single, {}).ok());
        auto other = openCheckpoint(single);
        QVERIFY(other.ok());
        for (const auto& info : (*ckpt)->tensors())
            QVERIFY((*ckpt)->load(info.name)->toFloat() == (*other)->load(info.name)->toFloat());

        // A shard file missing, and an index that lies about a shard's contents.
        const auto index = testsupport::readText(out + "/model.safetensors.index.json");
        const std::string firstShard = out + "/model-00001-of-" + index.substr(index.find("-of-") + 4, 5) + ".safetensors";
        fs::rename(firstShard, firstShard + ".away");
        expectError(openCheckpoint(out), firstShard, "no such file");
        fs::rename(firstShard + ".away", firstShard);
        std::string lying = index;
        const auto pos = lying.find("\"model.norm.weight\": \"");
        QVERIFY(pos != std::string::npos);
        lying.replace(lying.find("model-", pos), 6 + 5, "model-00001");
        testsupport::writeText(out + "/model.safetensors.index.json", lying);
        expectError(openCheckpoint(out), "model-00001", "does not");
    }

    void hfBadFolders()
    {
        QTemporaryDir dir;
        const std::string out = dir.filePath("m").toStdString();
        QVERIFY(writeRandomCheckpoint(tinyConfig(), 1, out, {}).ok());
        const std::string config = out + "/config.json";
        const std::string original = testsupport::readText(config);

        // Each edit of config.json replaces `from` with `to`, and the folder must then fail with `needle`.
        auto expectConfigError = [&](const std::string& from, const std::string& to, const std::string& where, const std::string& needle) {
            std::string edited = original;
            const auto at = edited.find(from);
            QVERIFY2(at != std::string::npos, from.c_str());
            edited.replace(at, from.size(), to);
            testsupport::writeText(config, edited);
            expectError(openCheckpoint(out), where, needle);
            testsupport::writeText(config, original);
        };
        // config.json says more layers than the file holds: a tensor is missing.
        expectConfigError("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3", "model.safetensors",
                          "missing tensor 'model.layers.2.input_layernorm.weight'");
        // A shape that does not match the config.
        expectConfigError("\"intermediate_size\": 24", "\"intermediate_size\": 32", "model.safetensors", "but config.json implies");
        // Unsupported architecture and missing keys name config.json.
        expectConfigError("LlamaForCausalLM", "GPT2LMHeadModel", config, "unsupported architecture 'GPT2LMHeadModel'");
        expectConfigError("\"vocab_size\"", "\"vocab_sizeX\"", config, "missing key 'vocab_size'");
        // A config.json with absurd sizes is refused before anything is enumerated.
        expectConfigError("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 200000000", config, "num_hidden_layers must be at most");

        // An integer tensor where a weight should be.
        {
            SafetensorsWriter writer;
            for (const auto& info : expectedTensors(tinyConfig())) {
                if (info.name == "model.norm.weight")
                    writer.addBytes(info.name, DType::I32, info.shape, std::vector<std::uint8_t>(static_cast<std::size_t>(elementCount(info.shape)) * 4));
                else
                    writer.addFloats(info.name, DType::F32, info.shape, std::vector<float>(static_cast<std::size_t>(elementCount(info.shape))));
            }
            QVERIFY(writer.write(out + "/model.safetensors").ok());
            expectError(openCheckpoint(out), "model.safetensors", "has dtype I32");
        }

        // A config.json that is a symlink loop, and a named pipe: errors, never an exception or a hang.
        fs::remove(config);
        fs::create_symlink("config.json", config);
        expectError(openCheckpoint(out), config, "no such file");
        fs::remove(config);
        testsupport::writeText(config, original);
        const std::string fifo = dir.filePath("pipe.bin").toStdString();
        QCOMPARE(::mkfifo(fifo.c_str(), 0600), 0);
        expectError(openCheckpoint(fifo), fifo, "not a regular file");

        fs::remove(out + "/model.safetensors");
        expectError(openCheckpoint(out), out, "no model.safetensors");
        fs::remove(config);
        expectError(openCheckpoint(out), config, "no such file");
        expectError(openCheckpoint(""), "", "no model path");
    }
};

QTEST_APPLESS_MAIN(TestCheckpoint)
#include "test_checkpoint.moc"

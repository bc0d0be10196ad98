// The pocketllm-cli binary end to end, run as a separate process: exit codes, JSON output, error
// messages, and conversions checked by evaluating what they wrote.
#include "pocket/io/checkpoint.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/methods/method_registry.h"
#include "pocket/version.h"
#include "test_support.h"

#include <QProcess>
#include <QRegularExpression>

#include <nlohmann/json.hpp>

#include <cmath>
#include <map>

using nlohmann::json;

namespace {

struct Run {
    int code = -1;
    QByteArray out;
    QByteArray err;
    bool crashed = false;
    QString describe() const
    {
        return QString("exit %1%2\nstdout: %3\nstderr: %4").arg(code).arg(crashed ? " (crashed)" : "").arg(QString::fromUtf8(out.left(2000)), QString::fromUtf8(err.left(2000)));
    }
};

// Stories260K: dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads (head_dim 8), vocab 512, tied
// embeddings. Per layer: q 64*64 + k,v 2*64*32 + o 64*64 + MLP 3*64*172 + 2 norms 2*64 = 45440.
constexpr qint64 kDemoParameters = 5 * 45440 + 512 * 64 + 64; // 260032

// Parameters of a Llama-shaped model from its config (independent of the code under test).
qint64 llamaParameters(const json& c)
{
    const qint64 d = c.at("hidden_size"), f = c.at("intermediate_size"), L = c.at("num_hidden_layers");
    const qint64 h = c.at("num_attention_heads"), kv = c.at("num_key_value_heads"), hd = c.at("head_dim"), v = c.at("vocab_size");
    const qint64 perLayer = d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * f + 2 * d + (c.at("attention_bias").get<bool>() ? h * hd + 2 * kv * hd : 0);
    return L * perLayer + v * d * (c.at("tie_word_embeddings").get<bool>() ? 1 : 2) + d;
}

const char* kOwnStory =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "
    "One day, she saw a big tree in the park. She wanted to climb it, but it was too high. "
    "Lily's mom said, \"Be careful, Lily!\" Lily smiled and said, \"I will, Mom.\" She found a small "
    "ladder and climbed up. At the top, she saw a bird's nest with three little eggs. She was very happy.\n\n"
    "Tom had a red ball. He liked to throw it to his dog, Max. Max would run and bring the ball back. "
    "One day, the ball went into the pond. Max jumped into the water and got the ball. Tom laughed and "
    "gave Max a big hug. They were best friends.\n\n"
    "There was a small cat who liked to sleep in the sun. Every day, the cat would find a warm spot and "
    "take a nap. One day, it was cloudy and the cat could not find the sun. The cat was sad. Then the sun "
    "came out again, and the cat was happy. It found a warm spot and went to sleep.\n";

// A small byte-level BPE tokenizer.json in Qwen2's form (GPT-2 byte map, Qwen2's split regex, a
// few merges, <|endoftext|> as an added special token), written here so that the test needs no
// download. Returns its vocabulary size.
int writeQwenStyleTokenizerJson(const std::string& dir)
{
    const auto utf8 = [](std::uint32_t cp) {
        std::string s;
        if (cp < 0x80) s += static_cast<char>(cp);
        else { s += static_cast<char>(0xC0 | (cp >> 6)); s += static_cast<char>(0x80 | (cp & 0x3F)); }
        return s;
    };
    std::vector<std::string> byteChar(256);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
        const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        byteChar[static_cast<std::size_t>(b)] = utf8(printable ? static_cast<std::uint32_t>(b) : static_cast<std::uint32_t>(256 + next++));
    }
    json vocab = json::object();
    int id = 0;
    for (int b = 0; b < 256; ++b)
        vocab[byteChar[static_cast<std::size_t>(b)]] = id++;
    const std::string sp = byteChar[' '];
    const std::vector<std::pair<std::string, std::string>> merges = {
        {"h", "e"}, {sp, "t"}, {sp + "t", "he"}, {"a", "n"}, {sp, "a"}, {"i", "n"}, {sp, "s"}, {"e", "r"}, {"o", "n"}, {sp + "a", "n"},
        {"an", "d"}, {sp, "w"}, {"a", "s"}, {sp + "an", "d"}};
    json mergeList = json::array();
    for (const auto& [a, b] : merges) {
        if (!vocab.contains(a + b))
            vocab[a + b] = id++;
        mergeList.push_back(a + " " + b);
    }
    const int eot = id++;
    const json tokenizer = {
        {"version", "1.0"},
        {"added_tokens", json::array({{{"id", eot}, {"content", "<|endoftext|>"}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                                       {"normalized", false}, {"special", true}}})},
        {"normalizer", {{"type", "NFC"}}},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers",
           json::array({{{"type", "Split"},
                         {"pattern", {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
                         {"behavior", "Isolated"},
                         {"invert", false}},
                        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}})}}},
        {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}},
        {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                   {"ignore_merges", false}, {"vocab", vocab}, {"merges", mergeList}}}};
    testsupport::writeText(dir + "/tokenizer.json", tokenizer.dump());
    testsupport::writeText(dir + "/tokenizer_config.json",
                           json{{"bos_token", nullptr}, {"eos_token", "<|endoftext|>"}, {"add_bos_token", false}}.dump());
    return id;
}

} // namespace

class TestCli : public QObject {
    Q_OBJECT
private:
    QTemporaryDir m_tmp;
    QString m_dataDir;
    QString m_text;       // a few thousand characters of TinyStories-style text
    QString m_convertedF32;
    double m_demoPerplexity = 0;

    QString path(const QString& name) const { return m_tmp.filePath(name); }
    static QString demo() { return QString::fromStdString(testsupport::demoModel()); }
    static QString demoTokenizer() { return QString::fromStdString(testsupport::demoTokenizer()); }

    Run run(const QStringList& args, int timeoutMs = 240000)
    {
        QProcess p;
        QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
        env.insert("POCKETLLM_DATA_DIR", m_dataDir);
        env.remove("POCKETLLM_STORE"); // recorded runs land in <data dir>/experiments.sqlite
        p.setProcessEnvironment(env);
        p.setWorkingDirectory(m_tmp.path());
        p.start(QStringLiteral(POCKET_CLI_PATH), args);
        Run r;
        if (!p.waitForStarted(30000)) {
            r.err = "could not start " POCKET_CLI_PATH;
            return r;
        }
        p.closeWriteChannel();
        if (!p.waitForFinished(timeoutMs)) {
            p.kill();
            p.waitForFinished();
            r.crashed = true;
        }
        r.crashed = r.crashed || p.exitStatus() != QProcess::NormalExit;
        r.code = p.exitCode();
        r.out = p.readAllStandardOutput();
        r.err = p.readAllStandardError();
        return r;
    }

    // Runs with --json and parses stdout as one JSON object; `ok` says whether it parsed.
    json runJson(const QStringList& args, Run* runOut = nullptr)
    {
        const Run r = run(QStringList{"--json"} + args);
        if (runOut) *runOut = r;
        return json::parse(r.out.constData(), nullptr, false);
    }

    // Perplexity of `model` on the test text at ctx 64 (NaN and a test failure when it fails).
    double evalPerplexity(const QString& model, const QString& tokenizer = QString())
    {
        QStringList args{"eval", model, "--text", m_text, "--ctx", "64"};
        if (!tokenizer.isEmpty()) args << "--tokenizer" << tokenizer;
        Run r;
        const json j = runJson(args, &r);
        if (r.code != 0 || !j.is_object() || !j.contains("perplexity")) {
            qWarning("%s", qPrintable(r.describe()));
            return std::nan("");
        }
        return j["perplexity"].get<double>();
    }

    static bool relClose(double a, double b, double rel) { return std::fabs(a - b) <= rel * std::max(std::fabs(a), std::fabs(b)); }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_tmp.isValid());
        QVERIFY2(QFileInfo::exists(QStringLiteral(POCKET_CLI_PATH)), POCKET_CLI_PATH);
        QVERIFY(QFileInfo::exists(demo()));
        m_dataDir = path("data");

        // The first ~3000 characters of TinyStories validation, cut at a character boundary; our own
        // story in the same style when the shared assets are not here.
        QByteArray text;
        const std::string asset = testsupport::sharedAsset("eval/tinystories/tinystories_valid_part_a.txt");
        if (!asset.empty()) {
            QFile f(QString::fromStdString(asset));
            QVERIFY(f.open(QIODevice::ReadOnly));
            text = QString::fromUtf8(f.read(12000)).left(3000).toUtf8();
        } else {
            text = kOwnStory;
        }
        QVERIFY(text.size() > 500);
        m_text = path("story.txt");
        testsupport::writeBytes(m_text.toStdString(), text.constData(), static_cast<std::size_t>(text.size()));
    }

    void version()
    {
        const Run r = run({"--version"});
        QVERIFY2(r.code == 0 && !r.crashed, qPrintable(r.describe()));
        const QString out = QString::fromUtf8(r.out + r.err);
        QVERIFY2(out.contains(QString("pocketllm-cli ") + POCKET_VERSION), qPrintable(out));
        QVERIFY(QRegularExpression("\\d+\\.\\d+\\.\\d+").match(out).hasMatch());
    }

    void usageErrors_data()
    {
        QTest::addColumn<QStringList>("args");
        QTest::newRow("no subcommand") << QStringList{};
        QTest::newRow("unknown subcommand") << QStringList{"frobnicate"};
        QTest::newRow("unknown option") << QStringList{"info", demo(), "--bogus"};
        QTest::newRow("unknown global option") << QStringList{"--bogus", "info", demo()};
        QTest::newRow("info without model") << QStringList{"info"};
        QTest::newRow("eval without --text") << QStringList{"eval", demo()};
        QTest::newRow("eval --ctx 1") << QStringList{"eval", demo(), "--text", "x.txt", "--ctx", "1"};
        QTest::newRow("eval --ctx not a number") << QStringList{"eval", demo(), "--text", "x.txt", "--ctx", "many"};
        QTest::newRow("convert without --out") << QStringList{"convert", demo()};
        QTest::newRow("convert --dtype f8") << QStringList{"convert", demo(), "--out", "f8-out", "--dtype", "f8"};
        QTest::newRow("make-random --dtype f8") << QStringList{"make-random", "--out", "f8-random", "--dtype", "f8"};
        QTest::newRow("make-random --preset huge") << QStringList{"make-random", "--out", "huge", "--preset", "huge"};
        QTest::newRow("make-random heads not dividing") << QStringList{"make-random", "--out", "bad-heads", "--heads", "8", "--kv-heads", "3"};
        QTest::newRow("--log-level loud") << QStringList{"--log-level", "loud", "info", demo()};
        QTest::newRow("generate --temperature 0") << QStringList{"generate", demo(), "--temperature", "0"};
        QTest::newRow("generate --greedy with --top-k") << QStringList{"generate", demo(), "--greedy", "--top-k", "5"};
        QTest::newRow("generate --precision f16") << QStringList{"generate", demo(), "--precision", "f16"};
        QTest::newRow("generate --memory-budget lots") << QStringList{"generate", demo(), "--memory-budget", "lots"};
        QTest::newRow("generate budget on a model") << QStringList{"generate", demo(), "--memory-budget", "100"};
        QTest::newRow("zeroshot unknown task") << QStringList{"zeroshot", demo(), "hellaswag"};
        QTest::newRow("zeroshot bad task name") << QStringList{"zeroshot", demo(), "trivia=x.jsonl"};
        QTest::newRow("recover without --calib-text") << QStringList{"recover", "x.pllm"};
        QTest::newRow("recover --objective mse") << QStringList{"recover", "x.pllm", "--calib-text", "x.txt", "--objective", "mse"};
        QTest::newRow("recover a model, not an archive") << QStringList{"recover", demo(), "--calib-text", "x.txt"};
    }
    void usageErrors()
    {
        QFETCH(QStringList, args);
        const Run r = run(args);
        QVERIFY2(r.code == 2 && !r.crashed, qPrintable(r.describe()));
        QVERIFY2(!r.err.trimmed().isEmpty(), "no message on stderr");
        // Nothing was written by a refused command.
        for (const char* dir : {"f8-out", "f8-random", "huge", "bad-heads"}) QVERIFY2(!QFileInfo::exists(path(dir)), dir);
    }

    void usageErrorAsJson()
    {
        Run r;
        const json j = runJson({"convert", demo(), "--out", "f8-json", "--dtype", "f8"}, &r);
        QCOMPARE(r.code, 2);
        QVERIFY2(j.is_object() && j.contains("error"), qPrintable(r.describe()));
        QVERIFY(QString::fromStdString(j["error"].get<std::string>()).contains("f8"));
    }

    void infoDemo()
    {
        Run r;
        const json j = runJson({"info", demo(), "--tensors"}, &r);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        QVERIFY2(j.is_object(), qPrintable(r.describe()));
        const json& c = j.at("config");
        QCOMPARE(c.at("vocab_size").get<qint64>(), 512);
        QCOMPARE(c.at("hidden_size").get<qint64>(), 64);
        QCOMPARE(c.at("intermediate_size").get<qint64>(), 172);
        QCOMPARE(c.at("num_hidden_layers").get<qint64>(), 5);
        QCOMPARE(c.at("num_attention_heads").get<qint64>(), 8);
        QCOMPARE(c.at("num_key_value_heads").get<qint64>(), 4);
        QCOMPARE(c.at("tie_word_embeddings").get<bool>(), true);
        QCOMPARE(j.at("parameters").get<qint64>(), kDemoParameters);
        QCOMPARE(llamaParameters(c), kDemoParameters);
        QCOMPARE(j.at("format").get<std::string>(), std::string("llama2.c"));
        QCOMPARE(j.at("bytes").get<qint64>(), 4 * kDemoParameters); // fp32
        QCOMPARE(j.at("dtypes").at("F32").get<qint64>(), kDemoParameters);
        QVERIFY(QString::fromStdString(j.at("tokenizer").get<std::string>()).endsWith("tok512.bin"));
        // The tensor list adds up to the parameter count.
        qint64 sum = 0;
        for (const auto& t : j.at("tensors")) {
            qint64 n = 1;
            for (const auto& d : t.at("shape")) n *= d.get<qint64>();
            sum += n;
        }
        QCOMPARE(sum, kDemoParameters);
        QCOMPARE(static_cast<int>(j.at("tensors").size()), 2 + 5 * 9); // embed + final norm, 9 per block, head tied
    }

    void infoTextMode()
    {
        const Run r = run({"info", demo()});
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        QVERIFY2(r.out.contains("260032"), r.out.constData());
        QVERIFY(json::parse(r.out.constData(), nullptr, false).is_discarded()); // text, not JSON
    }

    void evalMissingModel()
    {
        const QString missing = path("no-such-model.bin");
        const Run r = run({"eval", missing, "--text", m_text});
        QVERIFY2(r.code == 1 && !r.crashed, qPrintable(r.describe()));
        QVERIFY2(QString::fromUtf8(r.err).contains(missing), qPrintable(r.describe()));

        Run rj;
        const json j = runJson({"eval", missing, "--text", m_text}, &rj);
        QCOMPARE(rj.code, 1);
        QVERIFY2(j.is_object() && QString::fromStdString(j.value("error", std::string())).contains(missing), qPrintable(rj.describe()));
    }

    void evalBadText_data()
    {
        QTest::addColumn<QByteArray>("bytes");
        QTest::addColumn<QString>("mustContain");
        QTest::newRow("empty") << QByteArray() << "empty";
        QTest::newRow("whitespace") << QByteArray("\n \n\t\n") << "empty";
        QTest::newRow("latin-1") << QByteArray("Once upon a time\nthere was a caf\xE9.\n") << "not UTF-8";
    }
    void evalBadText()
    {
        QFETCH(QByteArray, bytes);
        QFETCH(QString, mustContain);
        const QString file = path(QString("bad-%1.txt").arg(QTest::currentDataTag()).replace(' ', '_'));
        testsupport::writeBytes(file.toStdString(), bytes.constData(), static_cast<std::size_t>(bytes.size()));
        const Run r = run({"eval", demo(), "--text", file});
        QVERIFY2(r.code == 1 && !r.crashed, qPrintable(r.describe()));
        const QString err = QString::fromUtf8(r.err);
        QVERIFY2(err.contains(file), qPrintable(r.describe()));
        QVERIFY2(err.contains(mustContain), qPrintable(r.describe()));
        if (mustContain == "not UTF-8")
            QVERIFY2(err.contains("line 2"), qPrintable(r.describe()));
    }

    void evalDemo()
    {
        Run r;
        const json j = runJson({"eval", demo(), "--text", m_text, "--ctx", "64"}, &r);
        QVERIFY2(r.code == 0 && j.is_object(), qPrintable(r.describe()));
        const double ppl = j.at("perplexity").get<double>();
        const double nll = j.at("nll").get<double>();
        const qint64 tokens = j.at("tokens").get<qint64>();
        const qint64 windows = j.at("windows").get<qint64>();
        QVERIFY(std::isfinite(ppl));
        QVERIFY2(ppl > 1.0, qPrintable(QString::number(ppl)));
        // A trained TinyStories model is far better than chance (a uniform guess gives 512).
        QVERIFY2(ppl < 50.0, qPrintable(QString::number(ppl)));
        QVERIFY2(relClose(std::exp(nll), ppl, 1e-9), qPrintable(QString("exp(%1) vs %2").arg(nll, 0, 'g', 17).arg(ppl, 0, 'g', 17)));
        QVERIFY(tokens > 100);
        QCOMPARE(j.at("ctx").get<int>(), 64);
        QCOMPARE(j.at("stride").get<int>(), 63);
        // Non-overlapping windows of BOS + up to 63 text tokens, each text token scored once.
        QCOMPARE(windows, (tokens + 62) / 63);
        QCOMPARE(j.at("tokens_processed").get<qint64>(), tokens + windows);
        m_demoPerplexity = ppl;
    }

    // Divergence, zero-shot and recovery through the CLI: the JSON keys, the model against itself
    // (no divergence), a recovered archive that eval, info and generate run with its adapters.
    void judgeAndRecoverDemo()
    {
        Run r;
        const json self = runJson({"eval", demo(), "--text", m_text, "--ctx", "64", "--reference", demo()}, &r);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        QVERIFY(self.at("reference").at("kl_mean").get<double>() < 1e-6);
        QCOMPARE(self.at("reference").at("top1_agreement").get<double>(), 1.0);
        const json zero = runJson({"zeroshot", demo(), "piqa", "winogrande", "--limit", "8"}, &r);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        QCOMPARE(zero.at("tasks").size(), std::size_t{2});
        QCOMPARE(zero.at("tasks")[0].at("items").get<int>(), 8);
        QVERIFY(zero.at("tasks")[0].contains("acc_norm") && !zero.at("tasks")[1].contains("acc_norm"));
        QCOMPARE(zero.at("average_dataset").get<std::string>(), std::string("zero-shot:piqa,winogrande"));

        const QString archive = path("judge-rtn2.pllm"), recovered = path("judge-rtn2-lora.pllm");
        QVERIFY2(runJson({"compress", demo(), "--method", "rtn", "--set", "bits=2", "--out", archive}, &r).is_object() && r.code == 0, qPrintable(r.describe()));
        const json rec = runJson({"recover", archive, "--calib-text", m_text, "--calib-samples", "16", "--calib-len", "32", "--rank", "1", "--batch", "4", "--epochs", "2", "--lr", "1e-3"}, &r);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        QCOMPARE(QString::fromStdString(rec.at("out").get<std::string>()), recovered);
        QCOMPARE(rec.at("adapters").get<int>(), 35);
        QVERIFY(rec.at("objective_after").get<double>() < rec.at("objective_before").get<double>());
        QVERIFY(relClose(rec.at("bpw_after").get<double>() - rec.at("bpw_before").get<double>(), rec.at("adapter_bpw").get<double>(), 1e-9));
        const json info = runJson({"info", recovered}, &r);
        QVERIFY2(r.code == 0 && info.contains("adapters"), qPrintable(r.describe()));
        QCOMPARE(info.at("adapters").at("count").get<int>(), 35);
        // Again without --force: refused, the first output kept.
        Run again = run({"recover", archive, "--calib-text", m_text, "--calib-samples", "8", "--calib-len", "32"});
        QCOMPARE(again.code, 2);
        const json before = runJson({"eval", archive, "--text", m_text, "--ctx", "64"}, &r);
        const json after = runJson({"eval", recovered, "--text", m_text, "--ctx", "64"}, &r);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        QVERIFY(after.at("perplexity").get<double>() != before.at("perplexity").get<double>());
    }

    // Issue 20: compressCommandArgs (the workbench's Run on cluster) gives a command line that
    // plans the same groups as the job itself, for selections of every kind; what it cannot say is
    // refused. --progress-lines prints the progress as lines when stderr is not a terminal.
    void commandLineOfAJob()
    {
        auto ckpt = pocket::openCheckpoint(testsupport::demoModel());
        QVERIFY(ckpt.ok());
        pocket::MethodRegistry registry;
        registry.loadFolder(POCKET_PLUGIN_DIR);
        std::vector<pocket::CompressJobParams> jobs(4);
        for (auto& j : jobs) {
            j.modelPath = testsupport::demoModel();
            j.outPath = path("cmd.pllm").toStdString();
            j.methodId = "vq";
            j.settings = {"d=2", "K=16", "sharing=type"};
        }
        jobs[1].selection.blocks = {{0, 1}, {3, -1}};
        jobs[1].selection.types = {pocket::MatrixType::Q, pocket::MatrixType::Down};
        jobs[2].selection.names = {"model.layers.2.mlp.up_proj.weight", "model.layers.0.self_attn.o_proj.weight"};
        jobs[2].keepDtype = pocket::DType::BF16;
        jobs[3].selection.exclude = "layers\\.[12]\\.";
        jobs[3].selection.skipLast = 1;
        jobs[3].methodId = "rtn";
        jobs[3].settings = {"bits=3"};
        jobs[3].entropy.mode = pocket::EntropyMode::None;
        for (const auto& job : jobs) {
            auto method = registry.find(job.methodId);
            QVERIFY(method.ok());
            auto plan = pocket::planCompressJob(job, **ckpt, **method, &registry);
            QVERIFY2(plan.ok(), plan.ok() ? "" : plan.message().c_str());
            auto args = pocket::compressCommandArgs(job);
            QVERIFY2(args.ok(), args.ok() ? "" : args.message().c_str());
            QStringList cli{"compress"};
            for (const std::string& a : *args)
                cli << QString::fromStdString(a);
            Run r;
            const json dry = runJson(cli << "--dry-run", &r);
            QVERIFY2(r.code == 0, qPrintable(r.describe()));
            QCOMPARE(dry.at("groups").get<std::vector<std::string>>(), plan->groupIds);
            QCOMPARE(dry.at("bpw_compressed").get<double>(), plan->estimatedBits.bpwCompressed());
        }
        pocket::CompressJobParams planned = jobs[0];
        planned.matrixSettings["model.layers.0.mlp.up_proj.weight"] = {"K=4"};
        QVERIFY(!pocket::compressCommandArgs(planned).ok());

        Run r = run({"--progress-lines", "--no-store", "compress", demo(), "-o", path("lines.pllm"), "--method", "vq", "--set", "K=64",
                     "--set", "d=2", "--set", "iters=30"});
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        QVERIFY2(r.err.contains("progress: group 1/"), r.err.constData());
        QVERIFY(!r.err.contains('\r'));
    }

    // Issue 21: the paper's per-matrix PocketLLM on the demo model warns (stderr and --json) and
    // suggests settings that fit; inspect --matrix gives the Inspect tab's data.
    void warnsAndInspects()
    {
        Run r;
        const json plan = runJson({"compress", demo(), "--dry-run", "--out", path("never.pllm")}, &r);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        QCOMPARE(plan.at("warnings").size(), std::size_t{2});
        QVERIFY(r.err.contains("warning: ") && r.err.contains("larger than the model"));
        QVERIFY2(r.err.contains("suggested: --set sharing=model --set K=512"), r.err.constData());
        const json fits = runJson({"compress", demo(), "--dry-run", "--out", path("never.pllm"), "--set", "sharing=model", "--set", "K=512"}, &r);
        QVERIFY(r.code == 0 && fits.at("warnings").empty() && !r.err.contains("warning"));

        const QString archive = path("inspect-vq.pllm");
        runJson({"compress", demo(), "--method", "vq", "--set", "d=2", "--set", "K=16", "--set", "sharing=model", "--out", archive}, &r);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        const json m = runJson({"inspect", archive, "--matrix", "model.layers.1.mlp.down_proj.weight", "--original", demo()}, &r);
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        QCOMPARE(m.at("rows").get<int>(), 64);
        QCOMPARE(m.at("cols").get<int>(), 172);
        double total = 0;
        for (const auto& c : m.at("histogram").at("original")) total += c.get<double>();
        QCOMPARE(total, 64.0 * 172);
        std::int64_t uses = 0;
        for (const auto& u : m.at("codebook").at("usage")) uses += u.get<std::int64_t>();
        QCOMPARE(uses, std::int64_t(64 * 172 / 2));
        QVERIFY(m.at("snr_db").get<double>() > 0 && m.contains("error_map"));
        // The inspect report's matrix SNR is the compress run's (same decoded weights).
        const json whole = runJson({"inspect", archive}, &r);
        for (const auto& row : whole.at("matrices"))
            if (row.at("name") == "model.layers.1.mlp.down_proj.weight")
                QVERIFY(relClose(row.at("snr_db").get<double>(), m.at("snr_db").get<double>(), 1e-3));
        Run bad = run({"inspect", archive, "--matrix", "model.layers.9.mlp.up_proj.weight"});
        QCOMPARE(bad.code, 1);
        QVERIFY(bad.err.contains("inspect-vq.pllm") && bad.err.contains("no compressed matrix"));
        Run stray = run({"inspect", archive, "--original", demo()});
        QCOMPARE(stray.code, 2);
    }

    // The lossless stage end to end: the same rtn 3-bit compression with --entropy none and on
    // evaluates to the same perplexity bit for bit (lossless), the coded archive is smaller and says
    // so in inspect, repack turns one into the other, and a damaged coded section is refused.
    void entropyStageIsLossless()
    {
        const QString plain = path("e-none.pllm"), coded = path("e-on.pllm"), back = path("e-back.pllm");
        for (const auto& [out, mode] : {std::pair{plain, "none"}, std::pair{coded, "on"}}) {
            Run c = run({"--no-store", "compress", demo(), "--method", "rtn", "--set", "bits=3", "--out", out, "--entropy", mode});
            QVERIFY2(c.code == 0, qPrintable(c.describe()));
        }
        const json a = runJson({"inspect", plain}), b = runJson({"inspect", coded, "--streams"});
        QVERIFY(a.is_object() && b.is_object());
        QCOMPARE(a.at("format_version").get<int>(), 1);
        QCOMPARE(b.at("format_version").get<int>(), 2);
        QCOMPARE(a.at("code_streams").at("coded").get<int>(), 0);
        QCOMPARE(b.at("code_streams").at("coded").get<int>(), 35);
        QVERIFY(b.at("file_bytes").get<qint64>() < a.at("file_bytes").get<qint64>());
        QVERIFY(b.at("bpw_compressed").get<double>() < a.at("bpw_compressed").get<double>());
        // Stored bits within 2% of the entropy plus the tables (each stream holds 4096 to 11008 codes).
        const double stored = b.at("code_streams").at("stored_bits").get<double>(), entropy = b.at("code_streams").at("entropy_bits").get<double>();
        QVERIFY2(stored >= entropy && stored < 1.15 * entropy, qPrintable(QString("%1 vs %2").arg(stored).arg(entropy)));
        QCOMPARE(b.at("streams").size(), std::size_t{35});
        const double p0 = evalPerplexity(plain), p1 = evalPerplexity(coded);
        QVERIFY(std::isfinite(p0));
        QCOMPARE(p1, p0);
        // Run under its minimum budget the coded matrices stay rANS-coded in memory (smaller than the
        // packed archive's minimum) and decode to the same tokens.
        const json probePlain = runJson({"generate", plain, "--max-tokens", "0", "--memory-budget", "auto"});
        const json probeCoded = runJson({"generate", coded, "--max-tokens", "0", "--memory-budget", "auto"});
        const double minimum = probeCoded.at("memory").at("minimum_mb").get<double>();
        QVERIFY(minimum < probePlain.at("memory").at("minimum_mb").get<double>());
        const json whole = runJson({"generate", plain, "--prompt", "Once upon a time", "--max-tokens", "20", "--greedy"});
        const json tight = runJson({"generate", coded, "--prompt", "Once upon a time", "--max-tokens", "20", "--greedy", "--memory-budget",
                                    QString::number(minimum + 0.001, 'f', 3)});
        QCOMPARE(tight.at("tokens"), whole.at("tokens"));
        QCOMPARE(tight.at("memory").at("matrices_compressed").get<int>(), 35);
        Run r = run({"--no-store", "repack", coded, "--out", back, "--entropy", "none"});
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        const json c = runJson({"inspect", back});
        QCOMPARE(c.at("bits"), a.at("bits")); // every bit count back to the method's own
        QCOMPARE(c.at("file_bytes"), a.at("file_bytes"));
        // A damaged coded section: refused by its checksum, naming the file.
        QByteArray bytes;
        {
            QFile f(coded);
            QVERIFY(f.open(QIODevice::ReadOnly));
            bytes = f.readAll();
        }
        const json sections = b.at("sections");
        qint64 at = -1;
        for (const auto& sec : sections)
            if (sec.at("name").get<std::string>().find("/codes/") != std::string::npos) {
                at = sec.at("offset").get<qint64>() + sec.at("size").get<qint64>() / 2;
                break;
            }
        QVERIFY(at > 0);
        bytes[at] = static_cast<char>(bytes[at] ^ 0x10);
        const QString damaged = path("e-damaged.pllm");
        {
            QFile f(damaged);
            QVERIFY(f.open(QIODevice::WriteOnly));
            f.write(bytes);
        }
        Run e = run({"eval", damaged, "--text", m_text, "--ctx", "64"});
        QVERIFY(e.code != 0 && !e.crashed);
        QVERIFY2(e.err.contains("checksum mismatch") && e.err.contains("e-damaged.pllm"), qPrintable(e.describe()));
    }

    // generate: streams text, --json gives the tokens; greedy is reproducible, a seed too; an
    // archive runs under a budget with the same tokens; a prompt longer than the context slides or,
    // with --no-slide, is refused.
    void generateDemo()
    {
        Run r;
        const json g = runJson({"generate", demo(), "--prompt", "Once upon a time", "--max-tokens", "30", "--greedy"}, &r);
        QVERIFY2(r.code == 0 && g.is_object(), qPrintable(r.describe()));
        QCOMPARE(g.at("generated").get<int>() + 0, static_cast<int>(g.at("tokens").size()));
        QVERIFY(g.at("generated").get<int>() > 5);
        QVERIFY(g.at("tokens_per_s").get<double>() > 0);
        const std::string text = g.at("text").get<std::string>();
        QVERIFY2(text.find("there was") != std::string::npos || text.size() > 40, text.c_str()); // a story goes on
        const json again = runJson({"generate", demo(), "--prompt", "Once upon a time", "--max-tokens", "30", "--greedy"});
        QCOMPARE(again.at("tokens"), g.at("tokens"));
        // Text mode prints the prompt and the continuation on stdout.
        const Run plain = run({"generate", demo(), "--prompt", "Once upon a time", "--max-tokens", "30", "--greedy"});
        QVERIFY2(plain.code == 0, qPrintable(plain.describe()));
        QCOMPARE(QString::fromUtf8(plain.out).trimmed(), QString::fromStdString("Once upon a time" + text).trimmed());
        // Sampling: the seed decides.
        const json s1 = runJson({"generate", demo(), "--max-tokens", "20", "--seed", "4", "--temperature", "1.2"});
        const json s2 = runJson({"generate", demo(), "--max-tokens", "20", "--seed", "4", "--temperature", "1.2"});
        QCOMPARE(s1.at("tokens"), s2.at("tokens"));
        QCOMPARE(s1.at("prompt_tokens").get<int>(), 1); // an empty prompt is BOS alone
        // An archive under its minimum budget gives the same greedy tokens; below it, refused.
        const QString archive = path("gen-rtn.pllm");
        Run c = run({"--no-store", "compress", demo(), "--method", "rtn", "--set", "bits=4", "--set", "group=32", "--out", archive});
        QVERIFY2(c.code == 0, qPrintable(c.describe()));
        const json whole = runJson({"generate", archive, "--prompt", "Once upon a time", "--max-tokens", "30", "--greedy"});
        const json probe = runJson({"generate", archive, "--max-tokens", "0", "--memory-budget", "auto"});
        const double minimum = probe.at("memory").at("minimum_mb").get<double>();
        const json tight = runJson({"generate", archive, "--prompt", "Once upon a time", "--max-tokens", "30", "--greedy", "--memory-budget",
                                    QString::number(minimum + 0.01, 'f', 3)});
        QCOMPARE(tight.at("tokens"), whole.at("tokens"));
        QVERIFY(tight.at("memory").at("matrices_compressed").get<int>() > 0);
        Run refused;
        const json low = runJson({"generate", archive, "--memory-budget", QString::number(minimum / 2, 'f', 3)}, &refused);
        QCOMPARE(refused.code, 2);
        QVERIFY2(QString::fromStdString(low.at("error").get<std::string>()).contains("minimum"), qPrintable(refused.describe()));
        QVERIFY(QString::fromStdString(low.at("error").get<std::string>()).contains("--memory-budget"));
        // A prompt longer than the context: slides by default, refused with --no-slide.
        QString longPrompt;
        for (int i = 0; i < 40; ++i)
            longPrompt += "The cat sat on the mat. ";
        const json slid = runJson({"generate", demo(), "--prompt", longPrompt, "--context", "64", "--max-tokens", "10", "--greedy"});
        QVERIFY(slid.at("context_slid").get<bool>());
        Run noSlide;
        const json refusedLong = runJson({"generate", demo(), "--prompt", longPrompt, "--context", "64", "--no-slide"}, &noSlide);
        QCOMPARE(noSlide.code, 2);
        QVERIFY(QString::fromStdString(refusedLong.at("error").get<std::string>()).contains("the context holds 64"));
        // A model (or archive) without a tokenizer: said so, with the option that gives one.
        QVERIFY(run({"make-random", "--out", path("no-tokenizer")}).code == 0);
        Run noTok = run({"generate", path("no-tokenizer")});
        QCOMPARE(noTok.code, 1);
        QVERIFY2(QString::fromUtf8(noTok.err).contains("--tokenizer"), qPrintable(noTok.describe()));
        const json withTok = runJson({"generate", path("no-tokenizer"), "--tokenizer", demoTokenizer(), "--max-tokens", "3", "--ignore-eos"});
        QCOMPARE(withTok.at("generated").get<int>(), 3);
    }

    void convertMatchesOriginal()
    {
        QVERIFY2(m_demoPerplexity > 0, "evalDemo must run first");
        m_convertedF32 = path("converted-f32");
        Run r;
        const json j = runJson({"convert", demo(), "--out", m_convertedF32}, &r);
        QVERIFY2(r.code == 0 && j.is_object(), qPrintable(r.describe()));
        QCOMPARE(j.at("parameters").get<qint64>(), kDemoParameters);
        QVERIFY(QFileInfo::exists(m_convertedF32 + "/config.json"));
        QVERIFY(QFileInfo::exists(m_convertedF32 + "/model.safetensors"));
        // No temporary folders left beside the output.
        const QStringList leftovers = QDir(m_tmp.path()).entryList(QStringList{"converted-f32?*"}, QDir::AllEntries | QDir::NoDotAndDotDot | QDir::Hidden);
        QVERIFY2(leftovers.isEmpty(), qPrintable(leftovers.join(", ")));

        Run ri;
        const json info = runJson({"info", m_convertedF32}, &ri);
        QVERIFY2(ri.code == 0 && info.is_object(), qPrintable(ri.describe()));
        QCOMPARE(info.at("format").get<std::string>(), std::string("hf-safetensors"));
        QCOMPARE(info.at("parameters").get<qint64>(), kDemoParameters);
        QCOMPARE(info.at("dtypes").at("F32").get<qint64>(), kDemoParameters);
        // The tokenizer was copied into the folder, byte for byte.
        const QString tokenizer = QString::fromStdString(info.at("tokenizer").get<std::string>());
        QVERIFY2(!tokenizer.isEmpty() && QFileInfo(tokenizer).absolutePath() == QFileInfo(m_convertedF32).absoluteFilePath(), qPrintable(ri.describe()));
        QVERIFY(testsupport::readBytes(tokenizer.toStdString()) == testsupport::readBytes(testsupport::demoTokenizer()));

        // The same weights in a different layout (Q/K rows permuted for HF RoPE): the same perplexity.
        const double ppl = evalPerplexity(m_convertedF32, demoTokenizer());
        QVERIFY2(relClose(ppl, m_demoPerplexity, 1e-5), qPrintable(QString("%1 vs %2").arg(ppl, 0, 'g', 17).arg(m_demoPerplexity, 0, 'g', 17)));
    }

    void convertedFolderFindsItsTokenizer()
    {
        // convert copies the tokenizer into the folder; opening the folder must find it again so that
        // `eval DIR` works without --tokenizer.
        QVERIFY(!m_convertedF32.isEmpty());
        Run ri;
        const json info = runJson({"info", m_convertedF32}, &ri);
        QVERIFY2(ri.code == 0 && info.is_object(), qPrintable(ri.describe()));
        QVERIFY2(!info.at("tokenizer").get<std::string>().empty(), qPrintable(ri.describe()));
        const double ppl = evalPerplexity(m_convertedF32);
        QVERIFY2(relClose(ppl, m_demoPerplexity, 1e-5), qPrintable(QString::number(ppl)));
    }

    // A Qwen2 folder whose only tokenizer is tokenizer.json works at every entry point: info names
    // it, eval finds it (the same figure as passing it explicitly), sensitivity and allocate run,
    // and convert --to gguf carries it into the GGUF in llama.cpp's gpt2 form (same perplexity).
    void tokenizerJsonOnlyQwen2FolderWorksEverywhere()
    {
        const QString dir = path("qwen-tj");
        QDir().mkpath(dir + "-tok");
        const int vocab = writeQwenStyleTokenizerJson((dir + "-tok").toStdString());
        Run r = run({"make-random", "--out", dir, "--vocab", QString::number(vocab), "--bias", "--seed", "9"});
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        json config = json::parse(testsupport::readText((dir + "/config.json").toStdString()));
        config["model_type"] = "qwen2";
        config["architectures"] = json::array({"Qwen2ForCausalLM"});
        testsupport::writeText((dir + "/config.json").toStdString(), config.dump(2));
        QVERIFY(QFile::copy(dir + "-tok/tokenizer.json", dir + "/tokenizer.json"));
        QVERIFY(QFile::copy(dir + "-tok/tokenizer_config.json", dir + "/tokenizer_config.json"));

        Run ri;
        const json info = runJson({"info", dir}, &ri);
        QVERIFY2(ri.code == 0 && info.is_object(), qPrintable(ri.describe()));
        QCOMPARE(info.at("tokenizer_kind").get<std::string>(), std::string("tokenizer.json"));
        QCOMPARE(info.at("tokenizer_vocab").get<int>(), vocab);
        QCOMPARE(info.at("config").at("architecture").get<std::string>(), std::string("Qwen2ForCausalLM"));

        const double found = evalPerplexity(dir), given = evalPerplexity(dir, dir + "-tok/tokenizer.json");
        QVERIFY(std::isfinite(found) && found > 1);
        QCOMPARE(found, given);

        Run rs = run({"--json", "sensitivity", dir, "--text", m_text, "--ctx", "32", "--windows", "2", "--unit", "block"});
        QVERIFY2(rs.code == 0, qPrintable(rs.describe()));
        Run ra = run({"--json", "allocate", dir, "--text", m_text, "--ctx", "32", "--windows", "2", "--menu", "bits=2", "--menu", "bits=4",
                      "--budget", "3.5", "--types", "mlp"});
        QVERIFY2(ra.code == 0, qPrintable(ra.describe()));

        const QString gguf = path("qwen-tj.gguf");
        Run rc = run({"convert", dir, "--to", "gguf", "--dtype", "f32", "--out", gguf});
        QVERIFY2(rc.code == 0, qPrintable(rc.describe()));
        Run rg;
        const json ginfo = runJson({"info", gguf}, &rg);
        QVERIFY2(rg.code == 0 && ginfo.is_object(), qPrintable(rg.describe()));
        QCOMPARE(ginfo.at("tokenizer_kind").get<std::string>(), std::string("gguf-gpt2"));
        QVERIFY(relClose(evalPerplexity(gguf), found, 1e-5));
        // Converted to a Hugging Face folder, the tokenizer.json keeps its name and its kind.
        const QString hf = path("qwen-tj-hf");
        Run rh = run({"convert", dir, "--out", hf});
        QVERIFY2(rh.code == 0, qPrintable(rh.describe()));
        QVERIFY(QFileInfo::exists(hf + "/tokenizer.json"));
        Run rhi;
        const json hinfo = runJson({"info", hf}, &rhi);
        QVERIFY2(rhi.code == 0 && hinfo.is_object(), qPrintable(rhi.describe()));
        QCOMPARE(hinfo.at("tokenizer_kind").get<std::string>(), std::string("tokenizer.json"));
    }

    void convertRefusesToOverwrite()
    {
        QVERIFY(!m_convertedF32.isEmpty());
        const auto before = testsupport::readBytes((m_convertedF32 + "/model.safetensors").toStdString());
        Run r = run({"convert", demo(), "--out", m_convertedF32, "--dtype", "f16"});
        QVERIFY2(r.code == 1 && !r.crashed, qPrintable(r.describe()));
        QVERIFY2(QString::fromUtf8(r.err).contains(m_convertedF32), qPrintable(r.describe()));
        QVERIFY(testsupport::readBytes((m_convertedF32 + "/model.safetensors").toStdString()) == before); // untouched

        r = run({"convert", demo(), "--out", m_convertedF32, "--force"});
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        QVERIFY(testsupport::readBytes((m_convertedF32 + "/model.safetensors").toStdString()) == before); // deterministic
        const double ppl = evalPerplexity(m_convertedF32, demoTokenizer());
        QVERIFY(relClose(ppl, m_demoPerplexity, 1e-5));
    }

    void convertHalfPrecision_data()
    {
        QTest::addColumn<QString>("dtype");
        QTest::addColumn<QString>("stored");
        QTest::addColumn<double>("tolerance");
        QTest::newRow("f16") << "f16" << "F16" << 0.01;
        QTest::newRow("bf16") << "bf16" << "BF16" << 0.03;
    }
    void convertHalfPrecision()
    {
        QFETCH(QString, dtype);
        QFETCH(QString, stored);
        QFETCH(double, tolerance);
        QVERIFY(m_demoPerplexity > 0);
        const QString out = path("converted-" + dtype);
        const Run r = run({"convert", demo(), "--out", out, "--dtype", dtype});
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        Run ri;
        const json info = runJson({"info", out}, &ri);
        QVERIFY2(ri.code == 0 && info.is_object(), qPrintable(ri.describe()));
        QCOMPARE(info.at("dtypes").at(stored.toStdString()).get<qint64>(), kDemoParameters);
        QCOMPARE(info.at("bytes").get<qint64>(), 2 * kDemoParameters);
        const double ppl = evalPerplexity(out, demoTokenizer());
        QVERIFY2(relClose(ppl, m_demoPerplexity, tolerance), qPrintable(QString("%1 vs f32 %2").arg(ppl).arg(m_demoPerplexity)));
    }

    void makeRandomIsReproducible()
    {
        const QString a = path("random-a"), b = path("random-b"), c = path("random-c");
        for (const auto& [dir, seed] : {std::pair{a, "3"}, std::pair{b, "3"}, std::pair{c, "4"}}) {
            const Run r = run({"make-random", "--out", dir, "--preset", "tiny", "--seed", seed});
            QVERIFY2(r.code == 0, qPrintable(r.describe()));
        }
        Run ri;
        const json info = runJson({"info", a}, &ri);
        QVERIFY2(ri.code == 0 && info.is_object(), qPrintable(ri.describe()));
        QCOMPARE(info.at("format").get<std::string>(), std::string("hf-safetensors"));
        QCOMPARE(info.at("parameters").get<qint64>(), llamaParameters(info.at("config")));
        QCOMPARE(info.at("bytes").get<qint64>(), 4 * info.at("parameters").get<qint64>());

        const auto bytesA = testsupport::readBytes((a + "/model.safetensors").toStdString());
        QVERIFY(bytesA.size() > 100000);
        QVERIFY2(bytesA == testsupport::readBytes((b + "/model.safetensors").toStdString()), "same seed, different bytes");
        QVERIFY2(bytesA != testsupport::readBytes((c + "/model.safetensors").toStdString()), "different seeds, same bytes");
        QCOMPARE(testsupport::readText((a + "/config.json").toStdString()), testsupport::readText((b + "/config.json").toStdString()));
    }

    void makeRandomSharded()
    {
        const QString single = path("random-single"), sharded = path("random-sharded");
        Run r = run({"make-random", "--out", single, "--preset", "tiny", "--seed", "5"});
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        r = run({"make-random", "--out", sharded, "--preset", "tiny", "--seed", "5", "--shard-size", "0.1"});
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        QVERIFY(QFileInfo::exists(sharded + "/model.safetensors.index.json"));
        QVERIFY(!QFileInfo::exists(sharded + "/model.safetensors"));
        const QStringList shards = QDir(sharded).entryList(QStringList{"model-*-of-*.safetensors"}, QDir::Files);
        QVERIFY2(shards.size() >= 2, qPrintable(shards.join(", ")));

        // The index maps every tensor to one of the shards.
        const json index = json::parse(testsupport::readText((sharded + "/model.safetensors.index.json").toStdString()), nullptr, false);
        QVERIFY(index.is_object() && index.contains("weight_map"));
        for (const auto& [name, file] : index["weight_map"].items())
            QVERIFY2(shards.contains(QString::fromStdString(file.get<std::string>())), name.c_str());

        Run ri1, ri2;
        const json info1 = runJson({"info", single}, &ri1);
        const json info2 = runJson({"info", sharded}, &ri2);
        QVERIFY2(ri2.code == 0 && info2.is_object(), qPrintable(ri2.describe()));
        QCOMPARE(info2.at("parameters").get<qint64>(), info1.at("parameters").get<qint64>());
        QCOMPARE(static_cast<int>(index["weight_map"].size()), 3 + 9 * info2.at("config").at("num_hidden_layers").get<int>()); // untied: + lm_head

        // Each shard holds at most 0.1 MiB of tensor data, unless it holds a single bigger tensor.
        Run rt;
        const json tensors = runJson({"info", sharded, "--tensors"}, &rt);
        QVERIFY2(rt.code == 0 && tensors.is_object(), qPrintable(rt.describe()));
        std::map<std::string, std::pair<int, qint64>> perShard; // file -> (tensors, bytes)
        for (const auto& t : tensors.at("tensors")) {
            auto& slot = perShard[index["weight_map"].at(t.at("name").get<std::string>()).get<std::string>()];
            slot.first += 1;
            slot.second += t.at("bytes").get<qint64>();
        }
        QCOMPARE(static_cast<int>(perShard.size()), static_cast<int>(shards.size()));
        for (const auto& [file, use] : perShard)
            QVERIFY2(use.first == 1 || use.second <= qint64(0.1 * 1024 * 1024), qPrintable(QString("%1: %2 tensors, %3 bytes").arg(QString::fromStdString(file)).arg(use.first).arg(use.second)));

        // Same seed, same weights, whatever the layout: the same perplexity. Random weights with
        // std 0.02 give near-uniform predictions: perplexity close to the vocabulary size (512).
        const double p1 = evalPerplexity(single, demoTokenizer());
        const double p2 = evalPerplexity(sharded, demoTokenizer());
        QVERIFY2(p1 == p2, qPrintable(QString("%1 vs %2").arg(p1, 0, 'g', 17).arg(p2, 0, 'g', 17)));
        QVERIFY2(p1 > 450 && p1 < 600, qPrintable(QString::number(p1)));
    }

    void hfFolderWithBrokenConfig()
    {
        const QString good = path("random-for-broken");
        Run r = run({"make-random", "--out", good, "--preset", "tiny", "--seed", "1"});
        QVERIFY2(r.code == 0, qPrintable(r.describe()));
        const QString broken = path("broken-config");
        QVERIFY(QDir().mkpath(broken));
        QVERIFY(QFile::copy(good + "/model.safetensors", broken + "/model.safetensors"));
        json config = json::parse(testsupport::readText((good + "/config.json").toStdString()));
        QVERIFY(config.erase("hidden_size") == 1);
        testsupport::writeText((broken + "/config.json").toStdString(), config.dump(2));

        for (const QStringList& args : {QStringList{"info", broken}, QStringList{"eval", broken, "--text", m_text, "--tokenizer", demoTokenizer()}}) {
            r = run(args);
            QVERIFY2(r.code == 1 && !r.crashed, qPrintable(r.describe()));
            const QString err = QString::fromUtf8(r.err);
            QVERIFY2(err.contains("config.json") && err.contains("hidden_size"), qPrintable(r.describe()));
        }
    }

    void logsGoToTheDataDir()
    {
        // Every run above logged into $POCKETLLM_DATA_DIR, not the user's home.
        QVERIFY2(QFileInfo::exists(m_dataDir + "/logs/pocketllm.log"), qPrintable(m_dataDir));
        // ... and recorded its evaluations in the store there, not in the user's own.
        QVERIFY2(QFileInfo::exists(m_dataDir + "/experiments.sqlite"), qPrintable(m_dataDir));
    }
};

QTEST_GUILESS_MAIN(TestCli)
#include "test_cli.moc"

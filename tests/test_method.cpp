// The method interface around the methods: parameter schemas and their validation, bit counts,
// and the plugin registry (built-ins, plugin folders, API version check, refusals).
#include "pocket/methods/method.h"
#include "pocket/methods/method_registry.h"
#include "fake_method.h"
#include "test_support.h"

#include <QTemporaryDir>

#include <new>
#include <stdexcept>

using namespace pocket;

namespace {
std::vector<ParamSpec> schema()
{
    return testsupport::FakeQuantMethod().info().params;
}

// A method whose every call throws, as a buggy plugin would (c10::Error, std::bad_alloc, ...).
class ThrowingMethod final : public CompressionMethod {
public:
    ThrowingMethod() { m_info.id = "thrower"; }
    const MethodInfo& info() const override { return m_info; }
    Result<std::vector<std::vector<MatrixRef>>> planGroups(const std::vector<MatrixRef>&, const ParamSet&) const override
    {
        throw std::runtime_error("planGroups exploded");
    }
    Result<BitCounts> estimateBits(const std::vector<MatrixRef>&, const ParamSet&, std::vector<BitCounts>&) const override
    {
        throw std::out_of_range("estimateBits exploded");
    }
    Result<GroupPayload> compress(const MatrixGroup&, const ParamSet&, const CompressContext&) override { throw std::bad_alloc(); }
    Result<std::vector<std::vector<float>>> decode(const GroupPayload&) const override { throw 42; }

private:
    MethodInfo m_info;
};
} // namespace

class TestMethod : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void defaultsAreFilledIn()
    {
        auto set = ParamSet::resolve(schema(), std::vector<std::string>{});
        QVERIFY2(set.ok(), set.ok() ? "" : set.message().c_str());
        QCOMPARE(set->getInt("bits"), std::int64_t{4});
        QCOMPARE(set->getText("sharing"), std::string("matrix"));
        QCOMPARE(set->getFloat("lr"), 0.016);
        QCOMPARE(set->getBool("flag"), false);
        QCOMPARE(set->values().size(), schema().size());
    }

    void assignmentsOverrideAndAreCanonical()
    {
        auto set = ParamSet::resolve(schema(), std::vector<std::string>{"bits=03", "lr=1.50e-2", "flag=yes", "sharing=model"});
        QVERIFY(set.ok());
        QCOMPARE(set->getText("bits"), std::string("3"));
        QCOMPARE(set->getText("lr"), std::string("0.015"));
        QCOMPARE(set->getText("flag"), std::string("true"));
        QCOMPARE(set->getText("sharing"), std::string("model"));
        // Equal settings written differently serialise identically (archives are reproducible).
        auto other = ParamSet::resolve(schema(), std::vector<std::string>{"sharing=model", "flag=1", "lr=0.015", "bits=3"});
        QVERIFY(other.ok());
        QCOMPARE(other->toJson(schema()), set->toJson(schema()));
        QCOMPARE(set->toJson(schema()), std::string(R"({"bits":3,"flag":true,"lr":0.015,"sharing":"model"})"));
    }

    void badValuesAreRefusedWithTheReason_data()
    {
        QTest::addColumn<QString>("assignment");
        QTest::addColumn<QString>("expected");
        QTest::newRow("out of range") << "bits=9" << "parameter 'bits': 9 is out of range [2, 8]";
        QTest::newRow("below range") << "bits=1" << "out of range";
        QTest::newRow("not an integer") << "bits=4.5" << "'4.5' is not an integer";
        QTest::newRow("empty") << "bits=" << "is not an integer";
        QTest::newRow("overflow") << "bits=99999999999999999999" << "is not an integer";
        QTest::newRow("not a number") << "lr=fast" << "'fast' is not a number";
        QTest::newRow("nan") << "lr=nan" << "is not a number";
        QTest::newRow("float range") << "lr=2" << "out of range";
        QTest::newRow("bad choice") << "sharing=layer" << "'layer' is not one of: matrix, model";
        QTest::newRow("bad bool") << "flag=maybe" << "'maybe' is not true or false";
        QTest::newRow("unknown") << "bitz=4" << "unknown parameter 'bitz' (known: bits, sharing, lr, flag)";
        QTest::newRow("no equals") << "bits" << "setting 'bits': expected name=value";
        QTest::newRow("no name") << "=4" << "expected name=value";
    }
    void badValuesAreRefusedWithTheReason()
    {
        QFETCH(QString, assignment);
        QFETCH(QString, expected);
        auto set = ParamSet::resolve(schema(), std::vector<std::string>{assignment.toStdString()});
        QVERIFY(!set.ok());
        QVERIFY2(set.message().find(expected.toStdString()) != std::string::npos, set.message().c_str());
        QCOMPARE(set.kind(), ErrorKind::Usage);
        QCOMPARE(set.error().setting, std::string("settings"));
    }

    void bitCountsAddUpAndShareInProportion()
    {
        BitCounts a{10, 20, 30, 40};
        a += BitCounts{1, 2, 3, 4};
        QCOMPARE(a.total(), std::uint64_t{110});
        GroupPayload p;
        p.sharedBits = {0, 1000, 200, 0};
        MatrixResult m1, m2;
        m1.ref = {"a", 0, MatrixType::Q, 10, 10};
        m1.bits.indexBits = 400;
        m2.ref = {"b", 0, MatrixType::K, 10, 30};
        m2.bits.indexBits = 1200;
        p.matrices = {m1, m2};
        QCOMPARE(p.totalBits().total(), std::uint64_t{2800});
        // 100 of 400 weights: a quarter of the 1200 shared bits.
        QCOMPARE(matrixBitsPerWeight(m1.ref, m1.bits, p.sharedBits, 400), (400.0 + 300.0) / 100.0);
        QCOMPARE(matrixBitsPerWeight(m2.ref, m2.bits, p.sharedBits, 400), (1200.0 + 900.0) / 300.0);
    }

    void defaultGroupingIsOneGroupPerMatrix()
    {
        testsupport::FakeQuantMethod method;
        auto params = ParamSet::resolve(method.info().params, std::vector<std::string>{});
        std::vector<MatrixRef> refs{{"a", 0, MatrixType::Q, 4, 4}, {"b", 0, MatrixType::K, 4, 4}, {"c", 1, MatrixType::Q, 4, 4}};
        auto groups = method.planGroups(refs, *params);
        QVERIFY(groups.ok());
        QCOMPARE(groups->size(), std::size_t{3});
        QCOMPARE((*groups)[2].front().name, std::string("c"));
    }

    void registryServesBuiltinsAndRefusesDuplicates()
    {
        MethodRegistry registry;
        QVERIFY(registry.addBuiltin(std::make_unique<testsupport::FakeQuantMethod>()).ok());
        auto again = registry.addBuiltin(std::make_unique<testsupport::FakeQuantMethod>());
        QVERIFY(!again.ok());
        QVERIFY2(again.message().find("already provided by (built-in)") != std::string::npos, again.message().c_str());
        auto found = registry.find("fakequant");
        QVERIFY(found.ok());
        QCOMPARE((*found)->info().id, std::string("fakequant"));
        QCOMPARE(registry.methods().size(), std::size_t{1});
        QCOMPARE(registry.records().size(), std::size_t{2});
        QVERIFY(registry.records()[0].loaded);
        QVERIFY(!registry.records()[1].loaded);

        auto missing = registry.find("gptq");
        QVERIFY(!missing.ok());
        QVERIFY2(missing.message().find("unknown method 'gptq' (available: fakequant)") != std::string::npos, missing.message().c_str());

        registry.setEnabled("fakequant", false);
        QVERIFY(registry.methods().empty());
        auto disabled = registry.find("fakequant");
        QVERIFY(!disabled.ok());
        QVERIFY(disabled.message().find("disabled") != std::string::npos);
    }

    void throwingMethodsBecomeErrorsNamingTheMethod()
    {
        MethodRegistry registry;
        QVERIFY(registry.addBuiltin(std::make_unique<ThrowingMethod>()).ok());
        auto found = registry.find("thrower");
        QVERIFY(found.ok());
        CompressionMethod& m = **found;
        const ParamSet params;
        const std::vector<MatrixRef> refs{{"w", 0, MatrixType::Q, 2, 2}};
        const auto expectError = [](const Error& e, ErrorKind kind, const char* what) {
            QCOMPARE(e.kind, kind);
            QVERIFY2(e.message.find("method 'thrower'") != std::string::npos, e.message.c_str());
            QVERIFY2(e.message.find(what) != std::string::npos, e.message.c_str());
        };
        auto groups = m.planGroups(refs, params);
        QVERIFY(!groups.ok());
        expectError(groups.error(), ErrorKind::Internal, "planGroups exploded");
        std::vector<BitCounts> perMatrix;
        auto bits = m.estimateBits(refs, params, perMatrix);
        QVERIFY(!bits.ok());
        expectError(bits.error(), ErrorKind::Internal, "estimateBits exploded");
        MatrixGroup group;
        group.id = "g1";
        auto payload = m.compress(group, params, {});
        QVERIFY(!payload.ok());
        expectError(payload.error(), ErrorKind::Io, "ran out of memory compressing g1"); // a limit, not a bug
        GroupPayload p;
        p.groupId = "g2";
        auto decoded = m.decode(p);
        QVERIFY(!decoded.ok());
        expectError(decoded.error(), ErrorKind::Internal, "decoding g2 with an unknown exception");
    }

    void pluginFolderIsSearchedAndPocketLlmLoads()
    {
        MethodRegistry registry;
        registry.loadFolder(POCKET_PLUGIN_DIR);
        auto method = registry.find("pocketllm");
        QVERIFY2(method.ok(), method.ok() ? "" : method.message().c_str());
        const MethodInfo& info = (*method)->info();
        QCOMPARE(info.displayName.empty(), false);
        QVERIFY(!info.bitsFormula.empty());
        // Every parameter the issue asks for is in the schema, and its default validates.
        for (const char* name : {"d", "K", "hidden", "latent", "rln_group", "epochs", "lr", "schedule", "batch", "lambda", "loss",
                                 "init", "update", "seed", "sharing", "beta"}) {
            const bool present = std::any_of(info.params.begin(), info.params.end(), [&](const ParamSpec& p) { return p.name == name; });
            QVERIFY2(present, name);
        }
        QVERIFY(ParamSet::resolve(info.params, std::vector<std::string>{}).ok());
        const auto record = std::find_if(registry.records().begin(), registry.records().end(),
                                         [](const PluginRecord& r) { return r.id == "pocketllm"; });
        QVERIFY(record != registry.records().end());
        QVERIFY(record->path.find("libpocket_method_pocketllm.so") != std::string::npos);
        // Every plugin the build makes loads, in file-name order.
        std::vector<std::string> ids;
        for (const PluginRecord& r : registry.records())
            ids.push_back(r.id);
        QCOMPARE(ids, (std::vector<std::string>{"aqlm", "gptq", "pocketllm", "rtn", "vq"}));
    }

    void environmentVariableAddsFolders()
    {
        qputenv("POCKETLLM_PLUGIN_PATH", "/nonexistent/one:" POCKET_PLUGIN_DIR);
        const auto folders = defaultPluginFolders();
        qunsetenv("POCKETLLM_PLUGIN_PATH");
        QVERIFY(folders.size() >= 2);
        QCOMPARE(folders[0], std::string("/nonexistent/one"));
        MethodRegistry registry;
        for (const auto& f : folders)
            registry.loadFolder(f); // a missing folder is not an error
        QVERIFY(registry.find("pocketllm").ok());
    }

    void wrongApiVersionIsRefused()
    {
        MethodRegistry registry;
        auto status = registry.loadPlugin(POCKET_BAD_API_PLUGIN);
        QVERIFY(!status.ok());
        QVERIFY2(status.message().find(POCKET_BAD_API_PLUGIN) == 0, status.message().c_str());
        QVERIFY2(status.message().find("method API version 999, this program needs version " + std::to_string(kMethodApiVersion)) !=
                     std::string::npos,
                 status.message().c_str());
        QVERIFY(registry.methods().empty());
        QCOMPARE(registry.records().size(), std::size_t{1});
        QVERIFY(!registry.records()[0].problem.empty());
    }

    void nonPluginsAreRefused()
    {
        QTemporaryDir dir;
        const std::string text = dir.filePath("libpocket_method_text.so").toStdString();
        testsupport::writeText(text, "not a shared library");
        MethodRegistry registry;
        auto status = registry.loadPlugin(text);
        QVERIFY(!status.ok());
        QVERIFY2(status.message().find(text + ": cannot load plugin") == 0, status.message().c_str());
        // A real shared library without the entry points.
        auto other = registry.loadPlugin(POCKET_SPM_SHIM);
        QVERIFY(!other.ok());
        QVERIFY2(other.message().find("not a PocketLLM method plugin") != std::string::npos, other.message().c_str());
        // loadFolder skips files that do not look like method plugins, and records refusals.
        registry.loadFolder(dir.path().toStdString());
        QCOMPARE(registry.records().size(), std::size_t{3});
        QVERIFY(registry.methods().empty());
    }
};

QTEST_APPLESS_MAIN(TestMethod)
#include "test_method.moc"

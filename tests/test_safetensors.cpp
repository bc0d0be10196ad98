// Safetensors reading and writing: round trips, every kind of malformed file, atomic writes.
#include "pocket/io/safetensors.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <csignal>
#include <sys/resource.h>

using namespace pocket;
using testsupport::writeBytes;

namespace {
// Builds a safetensors file by hand from a header object and a data blob.
std::vector<std::uint8_t> makeFile(const nlohmann::json& header, const std::vector<std::uint8_t>& data, std::int64_t lengthOverride = -1)
{
    const std::string text = header.dump();
    const std::uint64_t len = lengthOverride >= 0 ? static_cast<std::uint64_t>(lengthOverride) : text.size();
    std::vector<std::uint8_t> out(8);
    for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>((len >> (8 * i)) & 0xff);
    out.insert(out.end(), text.begin(), text.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
}
} // namespace

class TestSafetensors : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void roundTrip_data()
    {
        QTest::addColumn<int>("dtype");
        QTest::newRow("F32") << static_cast<int>(DType::F32);
        QTest::newRow("F16") << static_cast<int>(DType::F16);
        QTest::newRow("BF16") << static_cast<int>(DType::BF16);
    }
    void roundTrip()
    {
        QFETCH(int, dtype);
        const auto type = static_cast<DType>(dtype);
        QTemporaryDir dir;
        const std::string path = dir.filePath("t.safetensors").toStdString();
        std::vector<float> a(3 * 5), b(7);
        for (std::size_t i = 0; i < a.size(); ++i) a[i] = 0.25f * static_cast<float>(i) - 1.0f; // exact in all three dtypes
        for (std::size_t i = 0; i < b.size(); ++i) b[i] = -static_cast<float>(i) * 0.5f;
        SafetensorsWriter writer;
        writer.setMetadata("format", "pt");
        writer.addFloats("a.weight", type, {3, 5}, a);
        writer.addFloats("b", type, {7}, b);
        writer.addBytes("empty", type, {0, 4}, {});
        QVERIFY(writer.write(path).ok());

        // The header is padded so that the data section starts 8-byte aligned.
        const auto bytes = testsupport::readBytes(path);
        std::uint64_t headerLen = 0;
        for (int i = 7; i >= 0; --i) headerLen = (headerLen << 8) | bytes[i];
        QCOMPARE((8 + headerLen) % 8, 0u);

        auto file = SafetensorsFile::open(path);
        QVERIFY2(file.ok(), file.ok() ? "" : file.message().c_str());
        QCOMPARE((*file)->tensors().size(), 3u);
        QCOMPARE((*file)->metadata().at("format"), std::string("pt"));
        auto ta = (*file)->load("a.weight");
        QVERIFY(ta.ok());
        QCOMPARE(ta->info.shape, (std::vector<std::int64_t>{3, 5}));
        QCOMPARE(ta->info.dtype, type);
        QCOMPARE(ta->toFloat(), a);
        auto tb = (*file)->load("b");
        QVERIFY(tb.ok());
        QCOMPARE(tb->toFloat(), b);
        QVERIFY(!(*file)->load("missing").ok());
        QVERIFY((*file)->load("missing").message().find("missing") != std::string::npos);
    }

    void streamingProducerMayWriteInPieces()
    {
        QTemporaryDir dir;
        const std::string path = dir.filePath("s.safetensors").toStdString();
        SafetensorsWriter writer;
        writer.add("x", DType::I32, {4}, [](const SafetensorsWriter::Sink& sink) -> Status {
            for (std::int32_t v = 10; v < 14; ++v)
                if (auto s = sink(&v, 4); !s) return s;
            return {};
        });
        QVERIFY(writer.write(path).ok());
        auto file = SafetensorsFile::open(path);
        QVERIFY(file.ok());
        auto t = (*file)->load("x");
        QVERIFY(t.ok());
        const auto* v = reinterpret_cast<const std::int32_t*>(t->data);
        QCOMPARE(v[0], 10);
        QCOMPARE(v[3], 13);
    }

    void producerErrorLeavesNoFileAndKeepsOldOne()
    {
        QTemporaryDir dir;
        const std::string path = dir.filePath("keep.safetensors").toStdString();
        testsupport::writeText(path, "old content");
        SafetensorsWriter writer;
        writer.add("x", DType::F32, {4}, [](const SafetensorsWriter::Sink& sink) -> Status {
            const float v = 1.0f;
            if (auto s = sink(&v, 4); !s) return s;
            return Error{"simulated failure"};
        });
        const auto status = writer.write(path);
        QVERIFY(!status.ok());
        QVERIFY(status.message().find("simulated failure") != std::string::npos);
        QCOMPARE(testsupport::readText(path), std::string("old content"));
        QCOMPARE(QDir(dir.path()).entryList(QDir::Files).size(), 1); // no temporary left behind
    }

    void shortProducerIsAnError()
    {
        QTemporaryDir dir;
        const std::string path = dir.filePath("short.safetensors").toStdString();
        SafetensorsWriter writer;
        writer.add("x", DType::F32, {4}, [](const SafetensorsWriter::Sink& sink) -> Status {
            const float v = 1.0f;
            return sink(&v, 4);
        });
        const auto status = writer.write(path);
        QVERIFY(!status.ok());
        QVERIFY(status.message().find("'x'") != std::string::npos);
        QVERIFY(!QFileInfo::exists(QString::fromStdString(path)));
    }

    void fullDiskIsReportedWithThePath()
    {
        // RLIMIT_FSIZE makes writes past the limit fail with EFBIG, as a full disk fails with ENOSPC.
        QTemporaryDir dir;
        const std::string path = dir.filePath("big.safetensors").toStdString();
        rlimit old{};
        QVERIFY(getrlimit(RLIMIT_FSIZE, &old) == 0);
        const auto previousHandler = std::signal(SIGXFSZ, SIG_IGN);
        rlimit limited = old;
        limited.rlim_cur = 64 * 1024;
        QVERIFY(setrlimit(RLIMIT_FSIZE, &limited) == 0);
        SafetensorsWriter writer;
        writer.addFloats("big", DType::F32, {256, 1024}, std::vector<float>(256 * 1024, 1.0f));
        const auto status = writer.write(path);
        setrlimit(RLIMIT_FSIZE, &old);
        std::signal(SIGXFSZ, previousHandler);
        QVERIFY(!status.ok());
        QVERIFY2(status.message().find(path) != std::string::npos, status.message().c_str());
        QVERIFY(!QFileInfo::exists(QString::fromStdString(path)));
        QCOMPARE(QDir(dir.path()).entryList(QDir::Files).size(), 0);
    }

    void badFiles_data()
    {
        QTest::addColumn<QByteArray>("bytes");
        QTest::addColumn<QString>("expected");
        auto row = [](const char* name, const std::vector<std::uint8_t>& bytes, const char* expected) {
            QTest::newRow(name) << QByteArray(reinterpret_cast<const char*>(bytes.data()), static_cast<int>(bytes.size())) << QString(expected);
        };
        const std::vector<std::uint8_t> data16(16, 0);
        const nlohmann::json good = {{"t", {{"dtype", "F32"}, {"shape", {2, 2}}, {"data_offsets", {0, 16}}}}};
        row("tooShort", {1, 2, 3}, "truncated");
        row("headerPastEnd", makeFile(good, data16, 1000), "past the end");
        row("hugeHeader", makeFile(good, data16, 1ll << 40), "100 MB");
        std::vector<std::uint8_t> notJson = makeFile(good, data16);
        notJson[8] = '[';
        notJson[9] = '}';
        row("notJson", notJson, "not valid JSON");
        row("offsetsPastEnd", makeFile({{"t", {{"dtype", "F32"}, {"shape", {2, 2}}, {"data_offsets", {0, 16}}}}}, std::vector<std::uint8_t>(8)), "past the end of the data");
        row("offsetsReversed", makeFile({{"t", {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {8, 0}}}}}, data16), "end before they begin");
        row("overlap", makeFile({{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
                                 {"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}}}}, data16), "overlap");
        row("unknownDtype", makeFile({{"t", {{"dtype", "Q4"}, {"shape", {4}}, {"data_offsets", {0, 16}}}}}, data16), "unknown or unsupported dtype 'Q4'");
        row("shapeMismatch", makeFile({{"t", {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {0, 16}}}}}, data16), "needs 12 bytes");
        row("missingField", makeFile({{"t", {{"dtype", "F32"}, {"data_offsets", {0, 16}}}}}, data16), "needs dtype, shape and data_offsets");
        row("negativeShape", makeFile({{"t", {{"dtype", "F32"}, {"shape", {-4}}, {"data_offsets", {0, 16}}}}}, data16), "non-negative");
        row("metadataNotString", makeFile({{"__metadata__", {{"a", {{1, 2}}}}}, {"t", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}}}}, data16),
            "__metadata__ entry 'a' is not a string");
        // A zero-sized tensor between two overlapping ones must not hide the overlap.
        row("overlapBehindEmpty", makeFile({{"a", {{"dtype", "U8"}, {"shape", {12}}, {"data_offsets", {0, 12}}}},
                                            {"z", {{"dtype", "U8"}, {"shape", {0}}, {"data_offsets", {4, 4}}}},
                                            {"c", {{"dtype", "U8"}, {"shape", {4}}, {"data_offsets", {6, 10}}}}}, data16), "overlap");
        row("hugeShape", makeFile({{"t", {{"dtype", "F32"}, {"shape", {1ull << 62, 1ull << 62}}, {"data_offsets", {0, 16}}}}}, data16), "too large");
    }
    void badFiles()
    {
        QFETCH(QByteArray, bytes);
        QFETCH(QString, expected);
        QTemporaryDir dir;
        const std::string path = dir.filePath("bad.safetensors").toStdString();
        writeBytes(path, bytes.constData(), static_cast<std::size_t>(bytes.size()));
        auto file = SafetensorsFile::open(path);
        QVERIFY(!file.ok());
        QVERIFY2(file.message().find(path) == 0, file.message().c_str());
        QVERIFY2(file.message().find(expected.toStdString()) != std::string::npos, file.message().c_str());
    }

    void unalignedDataSection()
    {
        // A header whose length is not a multiple of 8 leaves the data unaligned; values must still be right.
        const std::uint16_t halves[3] = {0x3C00, 0xC000, 0x3800}; // 1, -2, 0.5
        std::vector<std::uint8_t> data(reinterpret_cast<const std::uint8_t*>(halves), reinterpret_cast<const std::uint8_t*>(halves) + 6);
        const auto bytes = makeFile({{"h", {{"dtype", "F16"}, {"shape", {3}}, {"data_offsets", {0, 6}}}}, {"__metadata__", {{"pad", "x"}}}}, data);
        QTemporaryDir dir;
        const std::string path = dir.filePath("u.safetensors").toStdString();
        writeBytes(path, bytes);
        auto file = SafetensorsFile::open(path);
        QVERIFY2(file.ok(), file.ok() ? "" : file.message().c_str());
        QCOMPARE((*file)->load("h")->toFloat(), (std::vector<float>{1.0f, -2.0f, 0.5f}));
    }

    void missingFile()
    {
        auto file = SafetensorsFile::open("/nonexistent/model.safetensors");
        QVERIFY(!file.ok());
        QCOMPARE(file.message(), std::string("/nonexistent/model.safetensors: no such file"));
    }

    void truncatedWrittenFile()
    {
        QTemporaryDir dir;
        const std::string path = dir.filePath("t.safetensors").toStdString();
        SafetensorsWriter writer;
        writer.addFloats("w", DType::F32, {64, 64}, std::vector<float>(64 * 64, 0.5f));
        QVERIFY(writer.write(path).ok());
        auto bytes = testsupport::readBytes(path);
        bytes.resize(bytes.size() - 100);
        writeBytes(path, bytes);
        auto file = SafetensorsFile::open(path);
        QVERIFY(!file.ok());
        QVERIFY2(file.message().find("truncated") != std::string::npos, file.message().c_str());
    }
};

QTEST_APPLESS_MAIN(TestSafetensors)
#include "test_safetensors.moc"

// The .pllm container and model archive: round trips, the on-disk layout against
// docs/archive-format.md, bit accounting, determinism, and every kind of damaged file.
#include "pocket/archive/group_file.h"
#include "pocket/archive/lossless.h"
#include "pocket/support/rans.h"
#include "pocket/archive/model_archive.h"
#include "pocket/io/checkpoint.h"
#include "test_support.h"

#include <nlohmann/json.hpp>
#include <xxhash.h>
#include <zstd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <set>

using namespace pocket;
using testsupport::readBytes;
using testsupport::writeBytes;
using Json = nlohmann::ordered_json;
using Bytes = std::vector<std::uint8_t>;

namespace {

constexpr std::uint8_t kMagic[8] = {0x89, 'P', 'L', 'L', 'M', '\r', '\n', 0x1a};
constexpr char kEndMagic[] = "PLLM_END";

std::uint64_t le64(const Bytes& b, std::size_t at)
{
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | b[at + static_cast<std::size_t>(i)];
    return v;
}
std::uint32_t le32(const Bytes& b, std::size_t at)
{
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | b[at + static_cast<std::size_t>(i)];
    return v;
}
void putLe64(Bytes& b, std::size_t at, std::uint64_t v)
{
    for (int i = 0; i < 8; ++i) b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
}

std::string hex64(std::uint64_t v)
{
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(v));
    return text;
}

Bytes pattern(std::size_t n, std::uint32_t seed)
{
    Bytes b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>((i * 131u + seed * 7u + (i >> 8)) & 0xffu);
    return b;
}

// The manifest text of a container file, found through its trailer (docs/archive-format.md).
std::string manifestText(const Bytes& file)
{
    const std::size_t t = file.size() - 32;
    const auto offset = static_cast<std::size_t>(le64(file, t));
    const auto size = static_cast<std::size_t>(le64(file, t + 8));
    return std::string(file.begin() + static_cast<std::ptrdiff_t>(offset), file.begin() + static_cast<std::ptrdiff_t>(offset + size));
}

// Replaces the manifest with `text` and writes a matching trailer (hash included), so that the
// reader's checks after the checksum are reached.
Bytes withManifestText(const Bytes& file, const std::string& text)
{
    const auto offset = static_cast<std::size_t>(le64(file, file.size() - 32));
    Bytes out(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(offset));
    out.insert(out.end(), text.begin(), text.end());
    const std::size_t t = out.size();
    out.resize(t + 32);
    putLe64(out, t, offset);
    putLe64(out, t + 8, text.size());
    putLe64(out, t + 16, XXH64(text.data(), text.size(), 0));
    std::memcpy(out.data() + t + 24, kEndMagic, 8);
    return out;
}

Bytes withManifest(const Bytes& file, const std::function<void(Json&)>& edit)
{
    Json j = Json::parse(manifestText(file));
    edit(j);
    return withManifestText(file, j.dump());
}

ModelConfig smallConfig(bool tied)
{
    ModelConfig c;
    c.hiddenSize = 8;
    c.intermediateSize = 16;
    c.numLayers = 2;
    c.numHeads = 2;
    c.numKvHeads = 1;
    c.headDim = 4;
    c.vocabSize = 32;
    c.maxPositions = 64;
    c.rmsNormEps = 1e-5;
    c.ropeTheta = 500000.0;
    c.tieWordEmbeddings = tied;
    c.torchDtype = "float16";
    return c;
}

MatrixResult matrix(int layer, MatrixType type, std::int64_t rows, std::int64_t cols, BitCounts bits, double mse, double snr)
{
    MatrixResult r;
    r.ref.name = matrixTensorName(layer, type);
    r.ref.layer = layer;
    r.ref.type = type;
    r.ref.rows = rows;
    r.ref.cols = cols;
    r.bits = bits;
    r.mse = mse;
    r.snrDb = snr;
    return r;
}

BitCounts bitsOf(std::uint64_t index, std::uint64_t codebook, std::uint64_t decoder, std::uint64_t scale)
{
    BitCounts b;
    b.indexBits = index;
    b.codebookBits = codebook;
    b.decoderBits = decoder;
    b.scaleBits = scale;
    return b;
}

// A model of smallConfig() with q_proj of block 0 compressed alone and gate/up of block 1
// compressed together (sharing a codebook and a decoder). Every payload section holds exactly the
// bytes its BitCounts entry pays for, rounded up to whole bytes.
struct Fixture {
    ArchiveInput input;
    std::shared_ptr<std::map<std::string, Bytes>> tensorBytes = std::make_shared<std::map<std::string, Bytes>>();
};

Fixture makeFixture(bool tied)
{
    Fixture f;
    ArchiveManifest& m = f.input.manifest;
    m.config = smallConfig(tied);
    m.sourceName = "tiny-llama";
    m.creator = "pocketllm-workbench test";
    m.tokenizerKind = "llama2c";
    m.tokenizerFileName = "tokenizer.bin";
    f.input.tokenizerBytes = pattern(100, 9);
    m.selectionJson = R"({"blocks":"0-1","types":["q_proj","gate_proj","up_proj"]})";
    const std::set<std::string> compressed = {matrixTensorName(0, MatrixType::Q), matrixTensorName(1, MatrixType::Gate),
                                              matrixTensorName(1, MatrixType::Up)};
    int k = 0;
    for (const TensorInfo& t : expectedTensors(m.config)) {
        if (compressed.count(t.name))
            continue;
        ArchiveTensor a;
        a.name = t.name;
        a.shape = t.shape;
        a.dtype = t.shape.size() == 1 ? DType::F32 : DType::F16;
        std::vector<float> values(static_cast<std::size_t>(elementCount(t.shape)));
        for (std::size_t i = 0; i < values.size(); ++i) values[i] = 0.125f * static_cast<float>((i * 7 + static_cast<std::size_t>(k) * 3) % 23) - 1.0f;
        Bytes bytes(values.size() * dtypeSize(a.dtype));
        convertFromFloat(values.data(), values.size(), a.dtype, bytes.data());
        (*f.tensorBytes)[a.name] = std::move(bytes);
        m.tensors.push_back(std::move(a));
        ++k;
    }
    auto source = f.tensorBytes;
    f.input.tensorBytes = [source](const ArchiveTensor& t, const ContainerWriter::Sink& sink) -> Status {
        const Bytes& b = source->at(t.name);
        const std::size_t half = b.size() / 2; // in two pieces, as a streaming reader would
        if (auto s = sink(b.data(), half); !s)
            return s;
        return sink(b.data() + half, b.size() - half);
    };

    ArchiveGroup g0;
    g0.payload.groupId = matrixTensorName(0, MatrixType::Q);
    g0.payload.methodId = "testvq";
    g0.payload.methodVersion = 2;
    g0.payload.paramsJson = R"({"K":16,"lr":0.016,"init":"normal","fast":false})";
    g0.payload.metaJson = R"({"pad":3,"dims":[4,4]})";
    g0.payload.matrices = {matrix(0, MatrixType::Q, 8, 8, bitsOf(192, 0, 0, 128), 0.1 + 0.2, 12.345678901234567)};
    g0.payload.sections = {{"indices", pattern(24, 1)}, {"scales", pattern(16, 2)}};
    m.groups.push_back(std::move(g0));

    ArchiveGroup g1;
    g1.payload.groupId = "type:mlp";
    g1.payload.methodId = "testvq";
    g1.payload.methodVersion = 2;
    g1.payload.paramsJson = R"({"K":16,"lr":0.016,"init":"normal","fast":true})";
    g1.payload.metaJson = "{}";
    g1.payload.sharedBits = bitsOf(0, 1024, 1600, 0);
    g1.payload.matrices = {matrix(1, MatrixType::Gate, 16, 8, bitsOf(160, 0, 0, 0), 1.0 / 3.0, -7.25),
                           matrix(1, MatrixType::Up, 16, 8, bitsOf(105, 0, 0, 0), 0.0, std::numeric_limits<double>::infinity())};
    g1.payload.sections = {{"codebook", pattern(128, 3)},
                           {"decoder", pattern(200, 4)},
                           {"indices/" + matrixTensorName(1, MatrixType::Gate), pattern(20, 5)},
                           {"indices/" + matrixTensorName(1, MatrixType::Up), pattern(14, 6)}, // 105 bits in 14 bytes
                           {"empty", {}}};
    m.groups.push_back(std::move(g1));
    return f;
}

// The fixture with group 1's two index sections made 4-bit code streams (250 and 249 codes, within
// the group's 256 weights, counted at their fixed width): one code in `oneIn` random, the others
// `common`.
Fixture codeStreamFixture(std::uint32_t seed, std::uint32_t oneIn, std::int32_t common)
{
    Fixture f = makeFixture(false);
    GroupPayload& p = f.input.manifest.groups[1].payload;
    std::mt19937 rng(seed);
    std::vector<std::int32_t> codes(250);
    for (auto& v : codes)
        v = rng() % oneIn == 0 ? static_cast<std::int32_t>(rng() % 16) : common;
    p.sections[2] = codeSection("indices/" + matrixTensorName(1, MatrixType::Gate), codes.data(), 250, 4);
    p.sections[3] = codeSection("indices/" + matrixTensorName(1, MatrixType::Up), codes.data(), 249, 4);
    p.matrices[0].bits.indexBits = 1000;
    p.matrices[1].bits.indexBits = 996;
    return f;
}

bool sameDouble(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void comparePayloads(const GroupPayload& a, const GroupPayload& b, bool withBytes)
{
    QCOMPARE(a.groupId, b.groupId);
    QCOMPARE(a.methodId, b.methodId);
    QCOMPARE(a.methodVersion, b.methodVersion);
    QCOMPARE(Json::parse(a.paramsJson), Json::parse(b.paramsJson));
    QCOMPARE(Json::parse(a.metaJson), Json::parse(b.metaJson));
    QCOMPARE(a.sharedBits.indexBits, b.sharedBits.indexBits);
    QCOMPARE(a.sharedBits.codebookBits, b.sharedBits.codebookBits);
    QCOMPARE(a.sharedBits.decoderBits, b.sharedBits.decoderBits);
    QCOMPARE(a.sharedBits.scaleBits, b.sharedBits.scaleBits);
    QCOMPARE(a.matrices.size(), b.matrices.size());
    for (std::size_t i = 0; i < a.matrices.size(); ++i) {
        const MatrixResult& x = a.matrices[i];
        const MatrixResult& y = b.matrices[i];
        QCOMPARE(x.ref.name, y.ref.name);
        QCOMPARE(x.ref.layer, y.ref.layer);
        QCOMPARE(x.ref.type, y.ref.type);
        QCOMPARE(x.ref.rows, y.ref.rows);
        QCOMPARE(x.ref.cols, y.ref.cols);
        QCOMPARE(x.bits.indexBits, y.bits.indexBits);
        QCOMPARE(x.bits.codebookBits, y.bits.codebookBits);
        QCOMPARE(x.bits.decoderBits, y.bits.decoderBits);
        QCOMPARE(x.bits.scaleBits, y.bits.scaleBits);
        QVERIFY(sameDouble(x.mse, y.mse)); // bit for bit, not approximately
        QVERIFY(sameDouble(x.snrDb, y.snrDb));
    }
    QCOMPARE(a.sections.size(), b.sections.size());
    for (std::size_t i = 0; i < a.sections.size(); ++i) {
        QCOMPARE(a.sections[i].name, b.sections[i].name);
        if (withBytes)
            QCOMPARE(a.sections[i].bytes, b.sections[i].bytes);
    }
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

} // namespace

class TestArchive : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    std::string m_modelPath; // a valid archive of makeFixture(false), written once
    Bytes m_model;

    std::string tempPath(const std::string& name) const { return m_dir.filePath(QString::fromStdString(name)).toStdString(); }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        m_modelPath = tempPath("reference.pllm");
        const Status s = writeArchive(m_modelPath, makeFixture(false).input);
        QVERIFY2(s.ok(), s.ok() ? "" : s.message().c_str());
        m_model = readBytes(m_modelPath);
        QVERIFY(m_model.size() > 1000);
    }

    // ----- container layer

    void containerRoundTrip()
    {
        QTemporaryDir dir;
        const std::string path = dir.filePath("c.pllm").toStdString();
        const Bytes small = pattern(10, 1);
        const Bytes big = pattern(3 * 1024 * 1024 + 17, 2);
        {
            ContainerWriter writer(path, "test");
            QVERIFY(writer.open().ok());
            QVERIFY(writer.addSection("small", small.data(), small.size()).ok());
            QVERIFY(writer.addSection("empty", nullptr, 0).ok());
            const Status s = writer.addSection("big", big.size(), [&](const ContainerWriter::Sink& sink) -> Status {
                for (std::size_t at = 0; at < big.size(); at += 1000003) // uneven pieces
                    if (auto r = sink(big.data() + at, std::min<std::size_t>(1000003, big.size() - at)); !r)
                        return r;
                return {};
            });
            QVERIFY2(s.ok(), s.ok() ? "" : s.message().c_str());
            QVERIFY(writer.addSection("tail", "x", 1).ok());
            const Status f = writer.finish(R"({"hello":"world","n":3})");
            QVERIFY2(f.ok(), f.ok() ? "" : f.message().c_str());
        }
        QVERIFY(isPllmFile(path));
        auto reader = ContainerReader::open(path);
        QVERIFY2(reader.ok(), reader.ok() ? "" : reader.message().c_str());
        const ContainerReader& c = **reader;
        QCOMPARE(c.path(), path);
        QCOMPARE(c.kind(), std::string("test"));
        QCOMPARE(c.formatVersion(), kMinArchiveFormatVersion); // nothing entropy-coded
        QCOMPARE(c.fileSize(), static_cast<std::uint64_t>(readBytes(path).size()));
        QCOMPARE(c.sections().size(), 4u);
        const std::vector<std::string> names{"small", "empty", "big", "tail"};
        for (std::size_t i = 0; i < names.size(); ++i) {
            QCOMPARE(c.sections()[i].name, names[i]);
            QCOMPARE(c.sections()[i].offset % 64, 0u);
            QVERIFY(c.find(names[i]) == &c.sections()[i]);
        }
        const Json manifest = Json::parse(c.manifestJson());
        QCOMPARE(manifest["hello"].get<std::string>(), std::string("world"));
        QCOMPARE(manifest["n"].get<int>(), 3);
        QCOMPARE(manifest["kind"].get<std::string>(), std::string("test"));
        QCOMPARE(c.manifestBytes(), static_cast<std::uint64_t>(c.manifestJson().size()));

        auto check = [&](const std::string& name, const Bytes& expected) {
            auto s = c.section(name);
            QVERIFY2(s.ok(), s.ok() ? "" : s.message().c_str());
            QCOMPARE(s->info.byteSize, static_cast<std::uint64_t>(expected.size()));
            QCOMPARE(Bytes(s->data, s->data + s->info.byteSize), expected);
            QVERIFY(c.verify(name).ok());
        };
        check("small", small);
        check("empty", {});
        check("big", big);
        check("tail", Bytes{'x'});
        QVERIFY(!c.find("missing"));
        auto missing = c.section("missing");
        QVERIFY(!missing.ok());
        QVERIFY2(contains(missing.message(), path) && contains(missing.message(), "missing"), missing.message().c_str());
        QVERIFY(!c.verify("missing").ok());

        // isPllmFile: cheap magic check only.
        const std::string text = dir.filePath("t.txt").toStdString();
        testsupport::writeText(text, "hello, not an archive");
        QVERIFY(!isPllmFile(text));
        QVERIFY(!isPllmFile(dir.filePath("none").toStdString()));
        QVERIFY(!isPllmFile(dir.path().toStdString()));
    }

    // An independent reader of the documented layout: magic, version, alignment, trailer, hashes,
    // zero padding, manifest keys.
    void layoutMatchesSpec()
    {
        const Bytes& b = m_model;
        QVERIFY(std::memcmp(b.data(), kMagic, 8) == 0);
        QCOMPARE(le32(b, 8), 1u);
        QCOMPARE(le32(b, 12), 0u);
        const std::size_t t = b.size() - 32;
        QVERIFY(std::memcmp(b.data() + t + 24, kEndMagic, 8) == 0);
        const std::uint64_t mOffset = le64(b, t), mSize = le64(b, t + 8);
        QCOMPARE(mOffset % 64, 0u);
        QCOMPARE(mOffset + mSize, static_cast<std::uint64_t>(t));
        const std::string text = manifestText(b);
        QCOMPARE(le64(b, t + 16), XXH64(text.data(), text.size(), 0));
        const Json j = Json::parse(text);
        auto it = j.begin();
        QCOMPARE(it.key(), std::string("format_version"));
        QCOMPARE(it.value().get<int>(), 1);
        QCOMPARE((++it).key(), std::string("kind"));
        QCOMPARE(j["kind"].get<std::string>(), std::string("model"));
        for (const char* key : {"model", "source", "creator", "tokenizer", "tensors", "groups", "selection", "sections"})
            QVERIFY2(j.contains(key), key);

        std::vector<bool> covered(b.size(), false);
        for (std::size_t i = 0; i < 16; ++i) covered[i] = true;
        for (std::size_t i = mOffset; i < b.size(); ++i) covered[i] = true;
        std::set<std::string> names;
        for (const Json& s : j["sections"]) {
            const std::string name = s["name"].get<std::string>();
            QVERIFY(names.insert(name).second);
            const auto offset = s["offset"].get<std::uint64_t>();
            const auto size = s["size"].get<std::uint64_t>();
            QCOMPARE(offset % 64, 0u);
            QVERIFY(offset >= 64 && offset + size <= mOffset);
            const std::string hash = s["xxh64"].get<std::string>();
            QCOMPARE(hash.size(), 16u);
            QCOMPARE(hash, hex64(XXH64(b.data() + offset, size, 0)));
            for (std::uint64_t k = offset; k < offset + size; ++k) {
                QVERIFY(!covered[k]); // no overlaps
                covered[k] = true;
            }
        }
        for (std::size_t k = 0; k < b.size(); ++k)
            if (!covered[k])
                QCOMPARE(b[k], std::uint8_t{0}); // padding is zero
        QVERIFY(names.count("tokenizer"));
        QVERIFY(names.count("tensor/model.embed_tokens.weight"));
        QVERIFY(names.count("group/1/codebook"));
        QVERIFY(names.count("group/1/empty"));
    }

    void writerRefusesMisuse()
    {
        QTemporaryDir dir;
        const std::string path = dir.filePath("w.pllm").toStdString();
        auto expectFailure = [&](const Status& s, const char* part) {
            QVERIFY2(!s.ok(), part);
            QVERIFY2(contains(s.message(), path) && contains(s.message(), part), s.message().c_str());
        };
        {
            ContainerWriter writer(path, "test");
            expectFailure(writer.addSection("a", "x", 1), "not opened");
            QVERIFY(writer.open().ok());
            QVERIFY(writer.addSection("a", "x", 1).ok());
            expectFailure(writer.addSection("a", "y", 1), "added twice");
            expectFailure(writer.finish("{}"), "failed earlier");
        }
        QVERIFY(!QFileInfo::exists(QString::fromStdString(path)));
        auto producing = [&](std::uint64_t declared, std::size_t produced, const char* part) {
            ContainerWriter writer(path, "test");
            QVERIFY(writer.open().ok());
            const Bytes bytes(produced, 7);
            expectFailure(writer.addSection("s", declared, [&](const ContainerWriter::Sink& sink) { return sink(bytes.data(), bytes.size()); }), part);
            expectFailure(writer.finish("{}"), "failed earlier");
        };
        producing(10, 9, "produced 9 bytes, expected 10");
        producing(10, 11, "more than its 10 bytes");
        QVERIFY(!QFileInfo::exists(QString::fromStdString(path)));
        for (const auto& [manifest, part] : std::vector<std::pair<std::string, std::string>>{
                 {"[1,2]", "not a JSON object"}, {"{oops", "not valid JSON"}, {R"({"sections":[]})", "must not set 'sections'"},
                 {R"({"kind":"x"})", "must not set 'kind'"}, {"{\"bad\":\"\xff\"}", "not valid JSON"}}) {
            ContainerWriter writer(path, "test");
            QVERIFY(writer.open().ok());
            expectFailure(writer.finish(manifest), part.c_str());
            QVERIFY(!QFileInfo::exists(QString::fromStdString(path)));
        }
        ContainerWriter done(path, "test");
        QVERIFY(done.open().ok());
        QVERIFY(done.finish("{}").ok());
        expectFailure(done.finish("{}"), "already finished");
        expectFailure(done.open(), "already opened");
        QVERIFY(ContainerReader::open(path).ok());
    }

    void writerDestroyedBeforeFinishLeavesNothing()
    {
        QTemporaryDir dir;
        const std::string path = dir.filePath("gone.pllm").toStdString();
        {
            ContainerWriter writer(path, "test");
            QVERIFY(writer.open().ok());
            const Bytes bytes = pattern(100000, 3);
            QVERIFY(writer.addSection("a", bytes.data(), bytes.size()).ok());
        }
        QVERIFY(!QFileInfo::exists(QString::fromStdString(path)));
        QCOMPARE(QDir(dir.path()).entryList(QDir::AllEntries | QDir::NoDotAndDotDot | QDir::Hidden).size(), 0); // no temporary left

        // A failing tensor source aborts writeArchive the same way.
        Fixture f = makeFixture(false);
        f.input.tensorBytes = [](const ArchiveTensor& t, const ContainerWriter::Sink&) -> Status { return Error{"cancelled at " + t.name}; };
        const Status s = writeArchive(path, f.input);
        QVERIFY(!s.ok());
        QVERIFY2(contains(s.message(), "cancelled at model.embed_tokens.weight"), s.message().c_str());
        QCOMPARE(QDir(dir.path()).entryList(QDir::AllEntries | QDir::NoDotAndDotDot | QDir::Hidden).size(), 0);
    }

    void missingDirectoryIsNamed()
    {
        const std::string path = tempPath("no/such/dir/x.pllm");
        ContainerWriter writer(path, "test");
        const Status s = writer.open();
        QVERIFY(!s.ok());
        QVERIFY2(contains(s.message(), path), s.message().c_str());
        const Status a = writeArchive(path, makeFixture(false).input);
        QVERIFY(!a.ok());
        QVERIFY2(contains(a.message(), path), a.message().c_str());
        const Status g = writeGroupFile(path, makeFixture(false).input.manifest.groups[0].payload);
        QVERIFY(!g.ok());
        QVERIFY2(contains(g.message(), path), g.message().c_str());
        auto r = ContainerReader::open(path);
        QVERIFY(!r.ok());
        QVERIFY2(contains(r.message(), path), r.message().c_str());
    }

    // ----- model archives

    void modelRoundTrip_data()
    {
        QTest::addColumn<bool>("tied");
        QTest::addColumn<bool>("verifyAll");
        QTest::newRow("untied") << false << true;
        QTest::newRow("tied") << true << true;
        QTest::newRow("manifest-only") << false << false;
    }
    void modelRoundTrip()
    {
        QFETCH(bool, tied);
        QFETCH(bool, verifyAll);
        QTemporaryDir dir;
        const std::string path = dir.filePath("m.pllm").toStdString();
        const Fixture f = makeFixture(tied);
        const Status s = writeArchive(path, f.input);
        QVERIFY2(s.ok(), s.ok() ? "" : s.message().c_str());
        auto archive = Archive::open(path, verifyAll ? ContainerReader::Verify::All : ContainerReader::Verify::ManifestOnly);
        QVERIFY2(archive.ok(), archive.ok() ? "" : archive.message().c_str());
        const Archive& a = **archive;
        const ArchiveManifest& got = a.manifest();
        const ArchiveManifest& want = f.input.manifest;

        QCOMPARE(hfConfigJson(got.config), hfConfigJson(want.config));
        QCOMPARE(got.config.tieWordEmbeddings, tied);
        QVERIFY(sameDouble(got.config.rmsNormEps, want.config.rmsNormEps));
        QCOMPARE(got.sourceName, want.sourceName);
        QCOMPARE(got.creator, want.creator);
        QCOMPARE(got.tokenizerKind, want.tokenizerKind);
        QCOMPARE(got.tokenizerFileName, want.tokenizerFileName);
        QCOMPARE(Json::parse(got.selectionJson), Json::parse(want.selectionJson));
        auto tokenizer = a.tokenizerBytes();
        QVERIFY(tokenizer.ok());
        QCOMPARE(*tokenizer, f.input.tokenizerBytes);

        QCOMPARE(got.tensors.size(), want.tensors.size());
        QVERIFY(!tied || std::none_of(got.tensors.begin(), got.tensors.end(), [](const ArchiveTensor& t) { return t.name == "lm_head.weight"; }));
        for (std::size_t i = 0; i < got.tensors.size(); ++i) {
            const ArchiveTensor& t = got.tensors[i];
            QCOMPARE(t.name, want.tensors[i].name);
            QCOMPARE(t.dtype, want.tensors[i].dtype);
            QCOMPARE(t.shape, want.tensors[i].shape);
            QCOMPARE(t.section, "tensor/" + t.name);
            auto data = a.tensor(t.name);
            QVERIFY2(data.ok(), data.ok() ? "" : data.message().c_str());
            QCOMPARE(data->info.name, t.name);
            QCOMPARE(data->info.dtype, t.dtype);
            QCOMPARE(data->info.shape, t.shape);
            QCOMPARE(Bytes(data->data, data->data + data->info.byteSize), f.tensorBytes->at(t.name));
        }
        auto absent = a.tensor(matrixTensorName(0, MatrixType::Q)); // compressed, not stored
        QVERIFY(!absent.ok());
        QVERIFY2(contains(absent.message(), path), absent.message().c_str());

        QCOMPARE(got.groups.size(), want.groups.size());
        for (std::size_t g = 0; g < got.groups.size(); ++g) {
            comparePayloads(got.groups[g].payload, want.groups[g].payload, false);
            for (const PayloadSection& s : got.groups[g].payload.sections) QVERIFY(s.bytes.empty());
            QCOMPARE(got.groups[g].sectionNames.size(), want.groups[g].payload.sections.size());
            for (std::size_t k = 0; k < got.groups[g].sectionNames.size(); ++k)
                QCOMPARE(got.groups[g].sectionNames[k], "group/" + std::to_string(g) + "/" + want.groups[g].payload.sections[k].name);
            auto payload = a.groupPayload(g);
            QVERIFY2(payload.ok(), payload.ok() ? "" : payload.message().c_str());
            comparePayloads(*payload, want.groups[g].payload, true);
        }
        QVERIFY(std::isinf(got.groups[1].payload.matrices[1].snrDb));
        auto noGroup = a.groupPayload(2);
        QVERIFY(!noGroup.ok());
        QVERIFY2(contains(noGroup.message(), path), noGroup.message().c_str());
    }

    void archiveWithoutTokenizerOrGroups()
    {
        QTemporaryDir dir;
        const std::string path = dir.filePath("plain.pllm").toStdString();
        Fixture f = makeFixture(true);
        f.input.manifest.tokenizerKind.clear();
        f.input.tokenizerBytes.clear();
        f.input.manifest.selectionJson.clear();
        f.input.manifest.groups.clear();
        for (const std::string& name : {matrixTensorName(0, MatrixType::Q), matrixTensorName(1, MatrixType::Gate), matrixTensorName(1, MatrixType::Up)}) {
            ArchiveTensor t;
            t.name = name;
            t.dtype = DType::BF16;
            t.shape = name == matrixTensorName(0, MatrixType::Q) ? std::vector<std::int64_t>{8, 8} : std::vector<std::int64_t>{16, 8};
            (*f.tensorBytes)[name] = pattern(static_cast<std::size_t>(elementCount(t.shape)) * 2, 11);
            f.input.manifest.tensors.push_back(t);
        }
        const Status s = writeArchive(path, f.input);
        QVERIFY2(s.ok(), s.ok() ? "" : s.message().c_str());
        auto archive = Archive::open(path);
        QVERIFY2(archive.ok(), archive.ok() ? "" : archive.message().c_str());
        QVERIFY((*archive)->manifest().tokenizerKind.empty());
        QCOMPARE((*archive)->manifest().selectionJson, std::string("{}"));
        auto tok = (*archive)->tokenizerBytes();
        QVERIFY(tok.ok() && tok->empty());
        const ArchiveBits bits = accountBits((*archive)->manifest());
        QCOMPARE(bits.compressedWeights, 0u);
        QCOMPARE(bits.bpwCompressed(), 0.0);
        QCOMPARE(bits.totalWeights, 1448u);
    }

    void writeArchiveRefusesInconsistentModels_data()
    {
        QTest::addColumn<int>("which");
        QTest::addColumn<QString>("expected");
        QTest::newRow("missing tensor") << 0 << "is neither stored nor compressed";
        QTest::newRow("duplicate tensor") << 1 << "stored more than once";
        QTest::newRow("wrong shape") << 2 << "but the model needs [8, 8]";
        QTest::newRow("unknown tensor") << 3 << "is not a tensor of this";
        QTest::newRow("tokenizer without bytes") << 4 << "has no bytes";
        QTest::newRow("bad params") << 5 << "params is not valid JSON";
        QTest::newRow("duplicate payload section") << 6 << "appears twice";
        QTest::newRow("matrix name vs layer") << 7 << "does not match its layer";
        QTest::newRow("short tensor") << 8 << "produced 1 bytes";
        QTest::newRow("invalid config") << 9 << "num_key_value_heads";
        QTest::newRow("name not UTF-8") << 10 << "must be UTF-8";
    }
    void writeArchiveRefusesInconsistentModels()
    {
        QFETCH(int, which);
        QFETCH(QString, expected);
        QTemporaryDir dir;
        const std::string path = dir.filePath("bad.pllm").toStdString();
        Fixture f = makeFixture(false);
        ArchiveManifest& m = f.input.manifest;
        switch (which) {
        case 0: m.tensors.pop_back(); break;
        case 1: m.tensors.push_back(m.tensors.front()); break;
        case 2: m.groups[0].payload.matrices[0].ref.cols = 9; break;
        case 3: m.tensors.push_back({"model.extra.weight", DType::F32, {8}, ""}); break;
        case 4: f.input.tokenizerBytes.clear(); break;
        case 5: m.groups[1].payload.paramsJson = "{K:1}"; break;
        case 6: m.groups[1].payload.sections[1].name = "codebook"; break;
        case 7: m.groups[0].payload.matrices[0].ref.layer = 1; break;
        case 8:
            f.input.tensorBytes = [](const ArchiveTensor&, const ContainerWriter::Sink& sink) { return sink("x", 1); };
            break;
        case 9: m.config.numKvHeads = 3; break;
        case 10: m.sourceName = "model\xff"; break;
        }
        const Status s = writeArchive(path, f.input);
        QVERIFY(!s.ok());
        QVERIFY2(contains(s.message(), path) && contains(s.message(), expected.toStdString()), s.message().c_str());
        QVERIFY(!QFileInfo::exists(QString::fromStdString(path)));
    }

    void deterministicBytes()
    {
        QTemporaryDir dir;
        const std::string a = dir.filePath("a.pllm").toStdString(), b = dir.filePath("b.pllm").toStdString();
        QVERIFY(writeArchive(a, makeFixture(false).input).ok());
        QVERIFY(writeArchive(b, makeFixture(false).input).ok());
        QCOMPARE(readBytes(a), readBytes(b));
        QCOMPARE(readBytes(a), m_model);
        const GroupPayload payload = makeFixture(false).input.manifest.groups[1].payload;
        QVERIFY(writeGroupFile(a, payload).ok()); // replaces the file
        QVERIFY(writeGroupFile(b, payload).ok());
        QCOMPARE(readBytes(a), readBytes(b));
        QCOMPARE(groupPayloadToJson(payload), groupPayloadToJson(payload));
    }

    void accountBitsByHand_data()
    {
        QTest::addColumn<bool>("tied");
        QTest::addColumn<qulonglong>("totalWeights");
        QTest::addColumn<qulonglong>("uncompressedBits");
        // embed 256, per block 2*8 norms + q 64 + k 32 + v 32 + o 64 + gate/up/down 3*128, final norm 8, head 256.
        QTest::newRow("untied") << false << 1704ull << 22784ull;
        QTest::newRow("tied") << true << 1448ull << 18688ull;
    }
    void accountBitsByHand()
    {
        QFETCH(bool, tied);
        QFETCH(qulonglong, totalWeights);
        QFETCH(qulonglong, uncompressedBits);
        QTemporaryDir dir;
        const std::string path = dir.filePath("m.pllm").toStdString();
        QVERIFY(writeArchive(path, makeFixture(tied).input).ok());
        auto archive = Archive::open(path);
        QVERIFY2(archive.ok(), archive.ok() ? "" : archive.message().c_str());
        const ArchiveBits bits = accountBits((*archive)->manifest());
        QCOMPARE(bits.totalWeights, static_cast<std::uint64_t>(totalWeights));
        QCOMPARE(bits.compressedWeights, 64u + 128u + 128u);
        QCOMPARE(bits.compressed.indexBits, 192u + 160u + 105u);
        QCOMPARE(bits.compressed.codebookBits, 1024u);
        QCOMPARE(bits.compressed.decoderBits, 1600u);
        QCOMPARE(bits.compressed.scaleBits, 128u);
        QCOMPARE(bits.compressed.total(), 3209u);
        QCOMPARE(bits.uncompressedBits, static_cast<std::uint64_t>(uncompressedBits));
        const double total = 3209.0 + static_cast<double>(uncompressedBits);
        QCOMPARE(static_cast<double>(bits.totalBits()), total);
        QCOMPARE(bits.bpwAllIn(), total / static_cast<double>(totalWeights));
        QCOMPARE(bits.bpwCompressed(), 3209.0 / 320.0);
        QCOMPARE(bits.ratioFp16(), 16.0 * static_cast<double>(totalWeights) / total);
        QCOMPARE(bits.ratioFp32(), 32.0 * static_cast<double>(totalWeights) / total);

        // Against the real sizes in the file: stored tensors exactly, each group's packed sections
        // within the rounding of each section to whole bytes.
        const ContainerReader& c = (*archive)->container();
        std::uint64_t tensorBits = 0;
        for (const ContainerSection& s : c.sections())
            if (s.name.rfind("tensor/", 0) == 0)
                tensorBits += s.size * 8;
        QCOMPARE(tensorBits, bits.uncompressedBits);
        for (const ArchiveGroup& g : (*archive)->manifest().groups) {
            std::uint64_t fileBits = 0;
            for (const std::string& name : g.sectionNames) fileBits += c.find(name)->size * 8;
            const std::uint64_t accounted = g.payload.totalBits().total();
            QVERIFY(fileBits >= accounted);
            QVERIFY2(fileBits - accounted < 8 * g.sectionNames.size(), qPrintable(QString::number(fileBits - accounted)));
        }
        QCOMPARE(c.find("group/1/indices/" + matrixTensorName(1, MatrixType::Up))->size * 8 - 105, 7u);
    }

    // ----- group files and payload JSON

    void groupFileRoundTrip()
    {
        QTemporaryDir dir;
        const std::string path = dir.filePath("g.pllm").toStdString();
        const GroupPayload payload = makeFixture(false).input.manifest.groups[1].payload;
        QVERIFY(writeGroupFile(path, payload).ok());
        auto back = readGroupFile(path);
        QVERIFY2(back.ok(), back.ok() ? "" : back.message().c_str());
        comparePayloads(*back, payload, true);
        auto c = ContainerReader::open(path);
        QVERIFY(c.ok());
        QCOMPARE((*c)->kind(), std::string("group"));
        QVERIFY((*c)->find("codebook"));

        // A group file is not a model archive, and the other way round.
        auto asModel = Archive::open(path);
        QVERIFY(!asModel.ok());
        QVERIFY2(contains(asModel.message(), path) && contains(asModel.message(), "not a model archive"), asModel.message().c_str());
        auto asGroup = readGroupFile(m_modelPath);
        QVERIFY(!asGroup.ok());
        QVERIFY2(contains(asGroup.message(), m_modelPath) && contains(asGroup.message(), "not a group file"), asGroup.message().c_str());

        // A flipped byte in a payload section is found (readGroupFile verifies everything).
        Bytes bytes = readBytes(path);
        const ContainerSection* decoder = (*c)->find("decoder");
        bytes[decoder->offset + 5] ^= 0x10;
        writeBytes(path, bytes);
        auto damaged = readGroupFile(path);
        QVERIFY(!damaged.ok());
        QVERIFY2(contains(damaged.message(), path) && contains(damaged.message(), "section 'decoder' checksum mismatch"), damaged.message().c_str());

        // Extra container sections that the payload does not name are refused.
        {
            ContainerWriter writer(path, "group");
            QVERIFY(writer.open().ok());
            QVERIFY(writer.addSection("stray", "x", 1).ok());
            QVERIFY(writer.finish(groupPayloadToJson(GroupPayload{})).ok());
        }
        auto stray = readGroupFile(path);
        QVERIFY(!stray.ok());
        QVERIFY2(contains(stray.message(), path), stray.message().c_str());
    }

    // The lossless stage on the fixture's two index streams made code streams: coded in place,
    // bits follow the stored bytes, the archive (format 2) gives back the packed bytes exactly, the
    // group files keep the stream description, repack undoes it, and a damaged coded section is
    // refused by its checksum before decoding.
    void losslessStage()
    {
        Fixture f = codeStreamFixture(5, 10, 7); // entropy ~0.8 bits of 4
        ArchiveGroup& g1 = f.input.manifest.groups[1];
        const std::string gate = g1.payload.sections[2].name;
        std::vector<std::uint16_t> symbols(250);
        rans::unpack(g1.payload.sections[2].bytes.data(), g1.payload.sections[2].bytes.size(), 250, 4, symbols.data());
        const GroupPayload packed = g1.payload;
        QVERIFY(writeGroupFile(tempPath("plain-group.pllm"), packed).ok());
        auto groupBack = readGroupFile(tempPath("plain-group.pllm"));
        QVERIFY(groupBack.ok());
        QCOMPARE(groupBack->sections[2].symbolBits, 4);
        QCOMPARE(groupBack->sections[3].symbols, std::uint64_t{249});

        const Status applied = applyLosslessStage(f.input.manifest.groups, EntropyOptions{.mode = EntropyMode::Auto, .coder = EntropyCoder::Rans, .minSaving = 0.02, .threads = 2});
        if (!applied)
            QFAIL(applied.message().c_str());
        QVERIFY(!f.input.manifest.groups[0].anyCoded()); // no code streams there
        QVERIFY(g1.coded(2) && g1.coded(3) && !g1.coded(0));
        const std::uint64_t gateStored = g1.payload.sections[2].bytes.size();
        QVERIFY(gateStored < 80); // from 125 packed bytes
        QCOMPARE(g1.payload.matrices[0].bits.indexBits, 8 * gateStored);
        QCOMPARE(g1.payload.matrices[1].bits.indexBits, 8 * g1.payload.sections[3].bytes.size());
        QVERIFY(std::fabs(g1.coding[2].entropyBits - rans::entropyBits(rans::histogram(symbols.data(), 250, 4))) < 1e-6);

        const std::string path = tempPath("coded.pllm");
        const Status w = writeArchive(path, f.input);
        if (!w)
            QFAIL(w.message().c_str());
        auto archive = Archive::open(path);
        if (!archive)
            QFAIL(archive.message().c_str());
        QCOMPARE((*archive)->container().formatVersion(), std::uint32_t{2});
        auto decoded = (*archive)->groupPayload(1);
        QVERIFY(decoded.ok());
        for (std::size_t k = 0; k < packed.sections.size(); ++k)
            QCOMPARE(decoded->sections[k].bytes, packed.sections[k].bytes);
        auto stored = (*archive)->storedPayload(1);
        QVERIFY(stored.ok());
        QCOMPARE(stored->sections[2].bytes.size(), gateStored);
        const auto reports = sectionCodeReports((*archive)->manifest().groups[1]);
        QCOMPARE(reports.size(), std::size_t{2});
        QCOMPARE(reports[0].codec, std::string("rans"));
        QCOMPARE(reports[0].fixedBits, std::uint64_t{1000});
        QCOMPARE(reports[0].storedBits, 8 * gateStored);
        QCOMPARE(accountBits((*archive)->manifest()).compressed.indexBits,
                 192 + 8 * gateStored + 8 * g1.payload.sections[3].bytes.size());

        // Repack without the stage: the method's own bits and the packed bytes, format 1.
        const std::string plain = tempPath("repacked.pllm");
        const Status r = repackArchive(path, plain, EntropyOptions{.mode = EntropyMode::None, .threads = 1});
        if (!r)
            QFAIL(r.message().c_str());
        auto p = Archive::open(plain);
        QVERIFY(p.ok());
        QCOMPARE((*p)->container().formatVersion(), std::uint32_t{1});
        QCOMPARE((*p)->manifest().groups[1].payload.matrices[0].bits.indexBits, std::uint64_t{1000});
        QCOMPARE((*p)->manifest().groups[1].payload.matrices[1].bits.indexBits, std::uint64_t{996});
        auto plainPayload = (*p)->storedPayload(1);
        QVERIFY(plainPayload.ok());
        QCOMPARE(plainPayload->sections[2].bytes, packed.sections[2].bytes);

        // A coded stream longer than its group's weights is refused when the manifest is read (a
        // stream of one repeated code would let any count through in a few bytes).
        const Bytes tooLong = withManifest(readBytes(path), [](Json& j) { j["groups"][1]["section_codes"][2]["symbols"] = 1ull << 35; });
        writeBytes(tempPath("too-long.pllm"), tooLong);
        auto refusedLong = Archive::open(tempPath("too-long.pllm"));
        QVERIFY(!refusedLong.ok());
        QVERIFY2(contains(refusedLong.message(), "longer than its group's 256 weights"), refusedLong.message().c_str());
        // With codec "rans" in a version 1 file: refused too.
        const Bytes v1 = withManifest(readBytes(path), [](Json& j) { j["format_version"] = 1; });
        Bytes v1File = v1;
        v1File[8] = 1;
        writeBytes(tempPath("coded-v1.pllm"), v1File);
        auto refusedV1 = Archive::open(tempPath("coded-v1.pllm"));
        QVERIFY(!refusedV1.ok());
        QVERIFY2(contains(refusedV1.message(), "needs archive format version 2"), refusedV1.message().c_str());

        // Damage inside the coded stream: the checksum refuses it before any decoding.
        const ContainerSection* s = (*archive)->container().find("group/1/" + gate);
        QVERIFY(s);
        Bytes b = readBytes(path);
        b[s->offset + s->size - 3] ^= 0x40;
        const std::string bad = tempPath("coded-bad.pllm");
        writeBytes(bad, b);
        QVERIFY(!Archive::open(bad).ok());
        auto lazy = Archive::open(bad, ContainerReader::Verify::ManifestOnly);
        QVERIFY(lazy.ok());
        auto refused = (*lazy)->groupPayload(1);
        QVERIFY(!refused.ok());
        QVERIFY2(contains(refused.message(), "checksum mismatch"), refused.message().c_str());
    }

    // The zstd codec: coded where asked, read back to the same packed bytes; the fastest coder
    // picks it where it comes within its slack of rANS; crafted frames (wrong size, codes too wide,
    // garbage) are refused by the decoder itself.
    void zstdCodec()
    {
        Fixture f = codeStreamFixture(9, 3, 5);
        ArchiveGroup& g1 = f.input.manifest.groups[1];
        const GroupPayload packed = g1.payload;
        const Status applied = applyLosslessStage(f.input.manifest.groups, EntropyOptions{.mode = EntropyMode::On, .coder = EntropyCoder::Zstd});
        if (!applied)
            QFAIL(applied.message().c_str());
        QVERIFY(g1.coding[2].codec == SectionCoding::Codec::Zstd && g1.coding[3].codec == SectionCoding::Codec::Zstd);
        const std::string path = tempPath("zstd.pllm");
        if (const Status w = writeArchive(path, f.input); !w)
            QFAIL(w.message().c_str());
        auto archive = Archive::open(path);
        QVERIFY(archive.ok());
        QCOMPARE(sectionCodeReports((*archive)->manifest().groups[1])[0].codec, std::string("zstd"));
        auto decoded = (*archive)->groupPayload(1);
        QVERIFY(decoded.ok());
        QCOMPARE(decoded->sections[2].bytes, packed.sections[2].bytes);
        QCOMPARE(decoded->sections[3].bytes, packed.sections[3].bytes);

        // Crafted frames, decoded through the archive's own path.
        ArchiveGroup meta = (*archive)->manifest().groups[1];
        auto stored = (*archive)->storedPayload(1);
        QVERIFY(stored.ok());
        const auto refuse = [&](std::vector<std::uint8_t> bytes, const char* what, const char* expect) {
            GroupPayload p = *stored;
            p.sections[2].bytes = std::move(bytes);
            const Status st = decodeLosslessStage(meta, p, "crafted.pllm");
            QVERIFY2(!st.ok(), what);
            QVERIFY2(contains(st.message(), "crafted.pllm") && contains(st.message(), expect), st.message().c_str());
        };
        std::vector<std::uint8_t> wide(250, 0x1f); // codes of 5 bits in a 4-bit stream
        std::vector<std::uint8_t> frame(ZSTD_compressBound(wide.size()));
        frame.resize(ZSTD_compress(frame.data(), frame.size(), wide.data(), wide.size(), 1));
        refuse(frame, "code too wide", "does not fit");
        std::vector<std::uint8_t> shortRaw(249, 1);
        std::vector<std::uint8_t> shortFrame(ZSTD_compressBound(shortRaw.size()));
        shortFrame.resize(ZSTD_compress(shortFrame.data(), shortFrame.size(), shortRaw.data(), shortRaw.size(), 1));
        refuse(shortFrame, "one code short", "does not declare 250 codes");
        refuse(std::vector<std::uint8_t>(40, 0x55), "garbage", "zstd frame damaged");
        auto truncated = stored->sections[2].bytes;
        truncated.resize(truncated.size() - 3);
        refuse(truncated, "truncated", "zstd frame damaged");
    }

    void payloadJsonRoundTrip()
    {
        const GroupPayload payload = makeFixture(false).input.manifest.groups[0].payload;
        const std::string json = groupPayloadToJson(payload);
        const Json j = Json::parse(json);
        QCOMPARE(j["params"]["lr"].get<double>(), 0.016);
        QCOMPARE(j["matrices"][0]["type"].get<std::string>(), std::string("q_proj"));
        QCOMPARE(j["matrices"][0]["bits"]["index"].get<std::uint64_t>(), 192u);
        QVERIFY(j["matrices"][0]["bits"]["index"].is_number_unsigned());
        QCOMPARE(j["section_names"], Json::parse(R"(["indices","scales"])"));
        auto back = groupPayloadFromJson(json, "where.json");
        QVERIFY2(back.ok(), back.ok() ? "" : back.message().c_str());
        comparePayloads(*back, payload, false);
        QCOMPARE(back->paramsJson, Json::parse(payload.paramsJson).dump());

        GroupPayload bad = payload;
        bad.metaJson = "[1]";
        QCOMPARE(groupPayloadToJson(bad), std::string());
    }

    void payloadJsonRefusesMalformed_data()
    {
        QTest::addColumn<QString>("json");
        QTest::addColumn<QString>("expected");
        const Json good = Json::parse(groupPayloadToJson(makeFixture(false).input.manifest.groups[1].payload));
        auto edited = [&](const std::function<void(Json&)>& edit) {
            Json j = good;
            edit(j);
            return QString::fromStdString(j.dump());
        };
        QTest::newRow("not json") << "{\"id\": " << "not valid JSON";
        QTest::newRow("array") << "[]" << "not a JSON object";
        QTest::newRow("empty") << "" << "not valid JSON";
        QTest::newRow("deep") << QString(5000, '[') << "nests deeper";
        QTest::newRow("no id") << edited([](Json& j) { j.erase("id"); }) << "missing key 'id'";
        QTest::newRow("method number") << edited([](Json& j) { j["method"] = 3; }) << "key 'method' must be a string";
        QTest::newRow("negative version") << edited([](Json& j) { j["method_version"] = -1; }) << "out of range";
        QTest::newRow("params array") << edited([](Json& j) { j["params"] = Json::array(); }) << "key 'params' must be an object";
        QTest::newRow("meta missing") << edited([](Json& j) { j.erase("meta"); }) << "missing key 'meta'";
        QTest::newRow("shared bits negative") << edited([](Json& j) { j["shared_bits"]["decoder"] = -5; }) << "key 'decoder' must be a non-negative integer";
        QTest::newRow("bits float") << edited([](Json& j) { j["matrices"][0]["bits"]["index"] = 1.5; }) << "key 'index' must be a non-negative integer";
        QTest::newRow("matrices object") << edited([](Json& j) { j["matrices"] = Json::object(); }) << "key 'matrices' must be an array";
        QTest::newRow("matrix not object") << edited([](Json& j) { j["matrices"][1] = 7; }) << "matrix 1: must be an object";
        QTest::newRow("rows string") << edited([](Json& j) { j["matrices"][0]["rows"] = "16"; }) << "key 'rows' must be an integer";
        QTest::newRow("rows zero") << edited([](Json& j) { j["matrices"][0]["rows"] = 0; }) << "out of range";
        QTest::newRow("cols huge") << edited([](Json& j) { j["matrices"][0]["cols"] = 1ull << 40; }) << "out of range";
        QTest::newRow("layer huge") << edited([](Json& j) { j["matrices"][0]["layer"] = 18446744073709551615ull; }) << "out of range";
        QTest::newRow("unknown type") << edited([](Json& j) { j["matrices"][0]["type"] = "qkv_proj"; }) << "unknown matrix type 'qkv_proj'";
        QTest::newRow("mse bool") << edited([](Json& j) { j["matrices"][0]["mse"] = true; }) << "key 'mse' must be a number";
        QTest::newRow("snr text") << edited([](Json& j) { j["matrices"][0]["snr_db"] = "infinite"; }) << "key 'snr_db' must be a number";
        QTest::newRow("section names dup") << edited([](Json& j) { j["section_names"][1] = "codebook"; }) << "appears twice";
        QTest::newRow("section name number") << edited([](Json& j) { j["section_names"][0] = 1; }) << "array of strings";
        QTest::newRow("section name empty") << edited([](Json& j) { j["section_names"][0] = ""; }) << "empty";
    }
    void payloadJsonRefusesMalformed()
    {
        QFETCH(QString, json);
        QFETCH(QString, expected);
        auto r = groupPayloadFromJson(json.toStdString(), "work/group-7.pllm");
        QVERIFY(!r.ok());
        QVERIFY2(r.message().rfind("work/group-7.pllm", 0) == 0, r.message().c_str());
        QVERIFY2(contains(r.message(), expected.toStdString()), r.message().c_str());
    }

    // ----- damaged files

    void corruptFileIsRefused_data()
    {
        QTest::addColumn<QByteArray>("file");
        QTest::addColumn<QString>("expected");
        const Bytes& good = m_model;
        auto row = [](const std::string& name, const Bytes& bytes, const std::string& expected) {
            QTest::newRow(name.c_str()) << QByteArray(reinterpret_cast<const char*>(bytes.data()), static_cast<int>(bytes.size()))
                                        << QString::fromStdString(expected);
        };
        auto flipped = [&](std::size_t at) {
            Bytes b = good;
            b[at] ^= 0xff;
            return b;
        };
        auto truncated = [&](std::size_t n) { return Bytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)); };
        auto edited = [&](const std::function<void(Json&)>& edit) { return withManifest(good, edit); };

        const Json manifest = Json::parse(manifestText(good));
        for (const Json& s : manifest["sections"]) {
            if (s["size"].get<std::uint64_t>() == 0)
                continue;
            const std::string name = s["name"].get<std::string>();
            const auto at = s["offset"].get<std::uint64_t>() + s["size"].get<std::uint64_t>() / 2;
            row("flip in " + name, flipped(static_cast<std::size_t>(at)), "section '" + name + "' checksum mismatch");
        }
        const std::size_t t = good.size() - 32, mOffset = static_cast<std::size_t>(le64(good, t));
        row("flip in manifest", flipped(mOffset + (t - mOffset) / 2), "manifest checksum mismatch");
        row("flip in trailer offset", flipped(t + 1), "trailer places the manifest");
        row("flip in trailer size", flipped(t + 8), "trailer places the manifest");
        row("flip in trailer hash", flipped(t + 20), "manifest checksum mismatch");
        row("flip in end magic", flipped(good.size() - 3), "end marker is missing");
        row("flip in magic", flipped(1), "not a .pllm archive");
        row("flip in reserved", flipped(13), "reserved");
        row("flip in padding", flipped(20), "padding byte at offset 20");
        for (const std::size_t n : {std::size_t{0}, std::size_t{7}, std::size_t{8}, std::size_t{30}, good.size() / 2, good.size() - 1})
            row("truncated to " + std::to_string(n), truncated(n), n == 0 ? "not a .pllm archive" : "truncated");
        Bytes gguf = good;
        std::memcpy(gguf.data(), "GGUF\3\0\0\0", 8);
        row("wrong magic", gguf, "not a .pllm archive");
        Bytes future = good;
        future[8] = 4;
        row("future version", future, "version 4 is not supported (this build reads versions 1 to 3)");
        row("bad manifest json", withManifestText(good, "{\"kind\": \"model\", oops}"), "not valid JSON");
        row("manifest not object", withManifestText(good, "[1,2,3]"), "not a JSON object");
        row("deep manifest", withManifestText(good, std::string(100000, '[') + std::string(100000, ']')), "nests deeper");

        auto sectionIndex = [&](const std::string& name) {
            for (std::size_t i = 0; i < manifest["sections"].size(); ++i)
                if (manifest["sections"][i]["name"] == name)
                    return i;
            return std::size_t(0);
        };
        const std::size_t embed = sectionIndex("tensor/model.embed_tokens.weight");
        const std::size_t norm = sectionIndex("tensor/model.layers.0.input_layernorm.weight");
        row("overlapping sections", edited([&](Json& j) { j["sections"][norm]["offset"] = j["sections"][embed]["offset"]; }), "overlap");
        row("section past the manifest", edited([&](Json& j) { j["sections"][embed]["size"] = 1ull << 40; }), "run into the manifest");
        row("section over the header", edited([&](Json& j) { j["sections"][0]["offset"] = 0; }), "multiple of 64");
        row("unaligned section", edited([&](Json& j) { j["sections"][embed]["offset"] = j["sections"][embed]["offset"].get<std::uint64_t>() + 8; }), "multiple of 64");
        row("duplicate section name", edited([&](Json& j) { j["sections"][norm]["name"] = j["sections"][embed]["name"]; }), "appears twice");
        row("bad section hash text", edited([&](Json& j) { j["sections"][0]["xxh64"] = "xyz"; }), "16 hex digits");
        row("wrong section hash", edited([&](Json& j) { j["sections"][0]["xxh64"] = "0123456789abcdef"; }), "checksum mismatch");
        row("sections missing", edited([](Json& j) { j.erase("sections"); }), "missing key 'sections'");
        row("section offset text", edited([](Json& j) { j["sections"][0]["offset"] = "64"; }), "key 'offset' must be a non-negative integer");
        row("format_version mismatch", edited([](Json& j) { j["format_version"] = 7; }), "differs from the header");
        row("kind group", edited([](Json& j) { j["kind"] = "group"; }), "not a model archive");
        row("model missing", edited([](Json& j) { j.erase("model"); }), "missing key 'model'");
        row("model incomplete", edited([](Json& j) { j["model"].erase("hidden_size"); }), "missing key 'hidden_size'");
        row("creator number", edited([](Json& j) { j["creator"] = 1; }), "key 'creator' must be a string");
        row("tokenizer array", edited([](Json& j) { j["tokenizer"] = Json::array(); }), "must be an object or null");
        row("tokenizer dropped", edited([](Json& j) { j["tokenizer"] = nullptr; }), "section 'tokenizer' is not referenced");
        row("tensors missing", edited([](Json& j) { j.erase("tensors"); }), "missing key 'tensors'");
        row("tensor dtype number", edited([](Json& j) { j["tensors"][0]["dtype"] = 16; }), "key 'dtype' must be a string");
        row("tensor dtype unknown", edited([](Json& j) { j["tensors"][0]["dtype"] = "F8"; }), "unknown dtype 'F8'");
        row("tensor size mismatch", edited([](Json& j) { j["tensors"][0]["dtype"] = "F32"; }), "needs 1024 bytes but section");
        row("tensor shape negative", edited([](Json& j) { j["tensors"][0]["shape"][0] = -32; }), "shape entries");
        row("tensor dropped", edited([](Json& j) { j["tensors"].erase(0); }), "neither stored nor compressed");
        row("tensor twice", edited([](Json& j) { j["tensors"].push_back(j["tensors"][0]); }), "stored more than once");
        row("tensor section missing", edited([](Json& j) { j["tensors"][0]["section"] = "nope"; }), "section 'nope' does not exist");
        row("group section missing", edited([](Json& j) { j["groups"][1]["sections"][0] = "group/9/codebook"; }), "does not exist");
        row("group section shared", edited([](Json& j) { j["groups"][1]["sections"][0] = j["groups"][0]["sections"][0]; }), "is used twice");
        row("group sections short", edited([](Json& j) { j["groups"][1]["sections"].erase(0); }), "payload sections but");
        row("group rows text", edited([](Json& j) { j["groups"][0]["matrices"][0]["rows"] = "8"; }), "key 'rows' must be an integer");
        row("group params text", edited([](Json& j) { j["groups"][0]["params"] = "K=16"; }), "key 'params' must be an object");
        row("group matrix wrong shape", edited([](Json& j) { j["groups"][0]["matrices"][0]["rows"] = 4; }), "but the model needs");
        row("group matrix past layers", edited([](Json& j) { j["groups"][0]["matrices"][0]["layer"] = 5; }), "does not match its layer");
        row("group ids repeat", edited([](Json& j) { j["groups"][1]["id"] = j["groups"][0]["id"]; }), "group id appears twice");
        row("groups object", edited([](Json& j) { j["groups"] = Json::object(); }), "key 'groups' must be an array");
        row("selection text", edited([](Json& j) { j["selection"] = "all"; }), "key 'selection' must be an object");
    }
    void corruptFileIsRefused()
    {
        QFETCH(QByteArray, file);
        QFETCH(QString, expected);
        const std::string path = tempPath("corrupt.pllm");
        writeBytes(path, file.constData(), static_cast<std::size_t>(file.size()));
        auto archive = Archive::open(path);
        QVERIFY(!archive.ok());
        QVERIFY2(archive.message().rfind(path, 0) == 0, archive.message().c_str());
        QVERIFY2(contains(archive.message(), expected.toStdString()), archive.message().c_str());
    }

    // Any single damaged byte and any truncation of a whole archive is noticed.
    void everyFlipAndTruncationIsRefused()
    {
        // A fresh name per try: rewriting one file in place makes ext4 flush on every close.
        QTemporaryDir dir;
        int tries = 0;
        auto refused = [&](const Bytes& b, std::size_t size) {
            const std::string path = dir.filePath(QString("sweep-%1.pllm").arg(tries++)).toStdString();
            writeBytes(path, b.data(), size);
            auto archive = Archive::open(path);
            std::remove(path.c_str());
            return !archive.ok() && archive.message().rfind(path, 0) == 0;
        };
        for (std::size_t at = 0; at < m_model.size(); ++at) {
            Bytes b = m_model;
            b[at] ^= 0x5a;
            if (!refused(b, b.size()))
                QFAIL(qPrintable(QString("a flipped byte at offset %1 was not refused with the file's name").arg(at)));
        }
        for (std::size_t n = 0; n < m_model.size(); ++n)
            if (!refused(m_model, n))
                QFAIL(qPrintable(QString("a file cut to %1 bytes was not refused with the file's name").arg(n)));
        QCOMPARE(tries, static_cast<int>(2 * m_model.size()));
    }

    // With Verify::ManifestOnly a damaged section opens, but its bytes are refused on access.
    void manifestOnlyChecksOnAccess()
    {
        auto good = ContainerReader::open(m_modelPath);
        QVERIFY(good.ok());
        const ContainerSection* s = (*good)->find("tensor/model.norm.weight");
        QVERIFY(s);
        Bytes b = m_model;
        b[s->offset] ^= 1;
        const std::string path = tempPath("lazy.pllm");
        writeBytes(path, b);
        QVERIFY(!Archive::open(path, ContainerReader::Verify::All).ok());
        auto archive = Archive::open(path, ContainerReader::Verify::ManifestOnly);
        QVERIFY2(archive.ok(), archive.ok() ? "" : archive.message().c_str());
        QVERIFY((*archive)->tensor("model.embed_tokens.weight").ok());
        auto bad = (*archive)->tensor("model.norm.weight");
        QVERIFY(!bad.ok());
        QVERIFY2(contains(bad.message(), path) && contains(bad.message(), "checksum mismatch"), bad.message().c_str());
        QVERIFY(!(*archive)->container().verify("tensor/model.norm.weight").ok());
    }

    // Random edits of the manifest text (with a matching checksum) never crash the reader, and
    // every refusal names the file.
    void manifestFuzzNeverCrashes()
    {
        const std::string path = tempPath("fuzz.pllm");
        const std::string text = manifestText(m_model);
        std::mt19937 rng(12345);
        const std::string alphabet = "{}[]\",:0123456789-.eE truefalsn\\u";
        int refused = 0, accepted = 0;
        for (int iteration = 0; iteration < 400; ++iteration) {
            std::string t = text;
            const int edits = 1 + static_cast<int>(rng() % 4);
            for (int e = 0; e < edits; ++e) {
                const std::size_t at = rng() % t.size();
                switch (rng() % 3) {
                case 0: t[at] = alphabet[rng() % alphabet.size()]; break;
                case 1: t.erase(at, 1 + rng() % 8); break;
                default: t.insert(at, t.substr(rng() % t.size(), 1 + rng() % 16)); break;
                }
            }
            writeBytes(path, withManifestText(m_model, t));
            auto archive = Archive::open(path);
            if (archive.ok()) {
                ++accepted;
                continue;
            }
            ++refused;
            QVERIFY2(archive.message().rfind(path, 0) == 0, archive.message().c_str());
        }
        QVERIFY2(refused > 200, qPrintable(QString::number(refused)));
        QCOMPARE(refused + accepted, 400);
    }
};

QTEST_APPLESS_MAIN(TestArchive)
#include "test_archive.moc"

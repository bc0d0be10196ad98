// Tokenizers: llama2.c's BPE against a line-for-line port of run.c's O(n^2) encoder; SentencePiece
// through libsentencepiece on the real Llama-2 tokenizer; corrupt and missing files.
#include "pocket/io/text.h"
#include "pocket/io/tokenizer.h"
#include "test_support.h"

#include <cstring>
#include <random>

using namespace pocket;

namespace {

// run.c's encode(), ported plainly: quadratic, but obviously what llama2.c does.
std::vector<std::int32_t> runCEncode(const Llama2cTokenizer& tok, const std::string& text)
{
    std::vector<std::int32_t> tokens;
    if (text.empty())
        return tokens;
    tokens.push_back(tok.lookup(" "));
    std::string buffer;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        if ((c & 0xC0) != 0x80)
            buffer.clear();
        buffer.push_back(static_cast<char>(c));
        if (i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80 && buffer.size() < 4)
            continue;
        const std::int32_t id = tok.lookup(buffer);
        if (id != -1) {
            tokens.push_back(id);
        } else {
            for (const char b : buffer) tokens.push_back(static_cast<unsigned char>(b) + 3);
        }
        buffer.clear();
    }
    while (true) {
        float bestScore = -1e10f;
        std::int32_t bestId = -1;
        std::size_t bestIdx = 0;
        for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
            const std::int32_t id = tok.lookup(tok.piece(tokens[i]) + tok.piece(tokens[i + 1]));
            if (id != -1 && tok.score(id) > bestScore) {
                bestScore = tok.score(id);
                bestId = id;
                bestIdx = i;
            }
        }
        if (bestId == -1)
            break;
        tokens[bestIdx] = bestId;
        tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(bestIdx) + 1);
    }
    return tokens;
}

} // namespace

class TestTokenizer : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void llama2cMatchesRunC_data()
    {
        QTest::addColumn<QString>("text");
        QTest::newRow("plain") << "Once upon a time, there was a little girl named Lily.";
        QTest::newRow("newlines") << "One day.\n\nThe end.\n";
        QTest::newRow("unicode") << QString::fromUtf8("Café – naïve 日本語 😀 tabs\tand  spaces");
        QTest::newRow("single") << "a";
        QTest::newRow("repeats") << "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa the the the the";
    }
    void llama2cMatchesRunC()
    {
        QFETCH(QString, text);
        auto tok = Llama2cTokenizer::load(testsupport::demoTokenizer());
        QVERIFY2(tok.ok(), tok.ok() ? "" : tok.message().c_str());
        const std::string s = text.toStdString();
        const auto fast = (*tok)->encode(s);
        QCOMPARE(fast, runCEncode(**tok, s));
        QCOMPARE((*tok)->decode(fast), s);
    }

    void llama2cMatchesRunCOnRealText()
    {
        const std::string path = testsupport::sharedAsset("eval/tinystories/tinystories_valid_part_a.txt");
        std::string text = path.empty() ? std::string() : testsupport::readText(path).substr(0, 12000);
        if (text.empty()) { // still test a long input without the shared assets
            for (int i = 0; i < 200; ++i) text += "Tom and Sue went to the park. They saw a big red ball! ";
        }
        auto tok = Llama2cTokenizer::load(testsupport::demoTokenizer());
        QVERIFY(tok.ok());
        const auto fast = (*tok)->encode(text);
        QVERIFY(fast.size() > 1000);
        QCOMPARE(fast, runCEncode(**tok, text));
        QCOMPARE((*tok)->decode(fast), text);
    }

    void llama2cRandomBytesRoundTrip()
    {
        // Byte fallback: any valid UTF-8, including characters absent from the vocabulary, survives.
        auto tok = Llama2cTokenizer::load(testsupport::demoTokenizer());
        QVERIFY(tok.ok());
        std::mt19937 rng(5);
        for (int trial = 0; trial < 20; ++trial) {
            QString q;
            for (int i = 0; i < 60; ++i) q.append(QChar(static_cast<char16_t>(32 + rng() % 400)));
            const std::string s = q.toStdString();
            const auto ids = (*tok)->encode(s);
            QCOMPARE(ids, runCEncode(**tok, s));
            QCOMPARE((*tok)->decode(ids), s);
        }
    }

    void llama2cSpecials()
    {
        auto tok = loadTokenizer(testsupport::demoTokenizer());
        QVERIFY(tok.ok());
        QCOMPARE((*tok)->vocabSize(), 512);
        QCOMPARE((*tok)->bosId(), 1);
        QCOMPARE((*tok)->eosId(), 2);
        QCOMPARE(std::string((*tok)->kind()), std::string("llama2c"));
        QVERIFY((*tok)->encode("").empty());
    }

    void sentencePieceLlama2()
    {
        const std::string path = testsupport::sharedAsset("tokenizers/llama2/tokenizer.model");
        if (path.empty())
            QSKIP("../shared/assets/tokenizers/llama2/tokenizer.model is not present");
        auto tok = loadTokenizer(path);
        QVERIFY2(tok.ok(), tok.ok() ? "" : tok.message().c_str());
        QCOMPARE(std::string((*tok)->kind()), std::string("sentencepiece"));
        QCOMPARE((*tok)->vocabSize(), 32000);
        QCOMPARE((*tok)->bosId(), 1);
        QCOMPARE((*tok)->eosId(), 2);
        // Published Llama-2 ids: "Hello world" -> [15043, 3186].
        QCOMPARE((*tok)->encode("Hello world"), (std::vector<std::int32_t>{15043, 3186}));
        const std::string text = "The tower is 324 metres (1,063 ft) tall — about the same height as an 81-storey building.";
        QCOMPARE((*tok)->decode((*tok)->encode(text)), text);
    }

    void badFiles_data()
    {
        QTest::addColumn<QString>("fileName");
        QTest::addColumn<QByteArray>("bytes");
        QTest::addColumn<QString>("expected");
        std::vector<std::uint8_t> good = testsupport::readBytes(testsupport::demoTokenizer());
        QByteArray truncated(reinterpret_cast<const char*>(good.data()), static_cast<int>(good.size() / 2));
        QByteArray hugeMax(reinterpret_cast<const char*>(good.data()), static_cast<int>(good.size()));
        const std::int32_t bad = 1 << 30;
        std::memcpy(hugeMax.data(), &bad, 4);
        QTest::newRow("empty bin") << "tokenizer.bin" << QByteArray() << "empty tokenizer file";
        QTest::newRow("truncated bin") << "tokenizer.bin" << truncated << "truncated inside token";
        QTest::newRow("garbage bin") << "tokenizer.bin" << hugeMax << "max_token_length";
        QTest::newRow("too few tokens") << "tokenizer.bin" << QByteArray(reinterpret_cast<const char*>(good.data()), 4 + 8 + 5) << "only 1 tokens";
        QTest::newRow("empty model") << "tokenizer.model" << QByteArray() << "empty tokenizer file";
        QTest::newRow("garbage model") << "tokenizer.model" << QByteArray("this is not a protobuf at all") << "not a valid SentencePiece model";
    }
    void badFiles()
    {
        QFETCH(QString, fileName);
        QFETCH(QByteArray, bytes);
        QFETCH(QString, expected);
        QTemporaryDir dir;
        const std::string path = dir.filePath(fileName).toStdString();
        testsupport::writeBytes(path, bytes.constData(), static_cast<std::size_t>(bytes.size()));
        auto tok = loadTokenizer(path);
        QVERIFY(!tok.ok());
        QVERIFY2(tok.message().find(path) == 0, tok.message().c_str());
        QVERIFY2(tok.message().find(expected.toStdString()) != std::string::npos, tok.message().c_str());
    }

    void missingFiles()
    {
        for (const char* name : {"/nonexistent/tokenizer.bin", "/nonexistent/tokenizer.model"}) {
            auto tok = loadTokenizer(name);
            QVERIFY(!tok.ok());
            QVERIFY2(tok.message().find(name) == 0 && tok.message().find("no such file") != std::string::npos, tok.message().c_str());
        }
        QVERIFY(!loadTokenizer("").ok());
    }
};

QTEST_APPLESS_MAIN(TestTokenizer)
#include "test_tokenizer.moc"

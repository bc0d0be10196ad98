// UTF-8 validation and reading evaluation text files.
#include "pocket/io/text.h"
#include "test_support.h"

#include <random>

using namespace pocket;

namespace {

// A slow, table-driven reference straight from Unicode's table of well-formed UTF-8 byte
// sequences (Unicode 15, table 3-7): the offset of the first byte that does not start a
// well-formed sequence, or -1.
qint64 referenceFirstInvalid(const QByteArray& s)
{
    struct Row { unsigned lo0, hi0, lo1, hi1; int len; };
    static const Row rows[] = {
        {0x00, 0x7F, 0, 0, 1},
        {0xC2, 0xDF, 0x80, 0xBF, 2},
        {0xE0, 0xE0, 0xA0, 0xBF, 3},
        {0xE1, 0xEC, 0x80, 0xBF, 3},
        {0xED, 0xED, 0x80, 0x9F, 3},
        {0xEE, 0xEF, 0x80, 0xBF, 3},
        {0xF0, 0xF0, 0x90, 0xBF, 4},
        {0xF1, 0xF3, 0x80, 0xBF, 4},
        {0xF4, 0xF4, 0x80, 0x8F, 4},
    };
    const auto byte = [&](qsizetype i) { return static_cast<unsigned>(static_cast<unsigned char>(s[i])); };
    qsizetype i = 0;
    while (i < s.size()) {
        const unsigned b0 = byte(i);
        const Row* row = nullptr;
        for (const auto& r : rows)
            if (b0 >= r.lo0 && b0 <= r.hi0) row = &r;
        if (!row) return i;
        if (row->len == 1) { ++i; continue; }
        if (i + row->len > s.size()) return i;
        if (byte(i + 1) < row->lo1 || byte(i + 1) > row->hi1) return i;
        for (int k = 2; k < row->len; ++k)
            if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return i;
        i += row->len;
    }
    return -1;
}

qint64 actualFirstInvalid(const QByteArray& s)
{
    const std::size_t r = findInvalidUtf8(std::string_view(s.constData(), static_cast<std::size_t>(s.size())));
    return r == std::string_view::npos ? -1 : static_cast<qint64>(r);
}

QByteArray encode(char32_t cp)
{
    QByteArray out;
    if (cp < 0x80) {
        out.append(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.append(static_cast<char>(0xC0 | (cp >> 6)));
        out.append(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.append(static_cast<char>(0xE0 | (cp >> 12)));
        out.append(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.append(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.append(static_cast<char>(0xF0 | (cp >> 18)));
        out.append(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.append(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.append(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    return out;
}

std::string filePath(const QTemporaryDir& dir, const char* name) { return dir.filePath(name).toStdString(); }

} // namespace

class TestText : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void findInvalidUtf8_data()
    {
        QTest::addColumn<QByteArray>("bytes");
        QTest::addColumn<qint64>("offset"); // -1: valid
        QTest::newRow("empty") << QByteArray() << qint64(-1);
        QTest::newRow("ascii") << QByteArray("Once upon a time.\n") << qint64(-1);
        QTest::newRow("NUL is valid") << QByteArray("a\0b", 3) << qint64(-1);
        QTest::newRow("2-byte e-acute") << QByteArray("caf\xC3\xA9") << qint64(-1);
        QTest::newRow("3-byte euro") << QByteArray("\xE2\x82\xAC 5") << qint64(-1);
        QTest::newRow("4-byte emoji") << QByteArray("hi \xF0\x9F\x98\x80!") << qint64(-1);
        QTest::newRow("U+0080 smallest 2-byte") << QByteArray("\xC2\x80") << qint64(-1);
        QTest::newRow("U+0800 smallest 3-byte") << QByteArray("\xE0\xA0\x80") << qint64(-1);
        QTest::newRow("U+10000 smallest 4-byte") << QByteArray("\xF0\x90\x80\x80") << qint64(-1);
        QTest::newRow("U+D7FF before surrogates") << QByteArray("\xED\x9F\xBF") << qint64(-1);
        QTest::newRow("U+E000 after surrogates") << QByteArray("\xEE\x80\x80") << qint64(-1);
        QTest::newRow("U+FFFF") << QByteArray("\xEF\xBF\xBF") << qint64(-1);
        QTest::newRow("U+10FFFF largest") << QByteArray("\xF4\x8F\xBF\xBF") << qint64(-1);
        QTest::newRow("BOM in the middle") << QByteArray("a\xEF\xBB\xBF" "b") << qint64(-1);

        QTest::newRow("overlong C0 80") << QByteArray("ab\xC0\x80") << qint64(2);
        QTest::newRow("overlong C1 BF") << QByteArray("x\xC1\xBF") << qint64(1);
        QTest::newRow("overlong E0 80 80") << QByteArray("abc\xE0\x80\x80") << qint64(3);
        QTest::newRow("overlong E0 9F BF") << QByteArray("\xE0\x9F\xBF") << qint64(0);
        QTest::newRow("overlong F0 80 80 80") << QByteArray("\xF0\x80\x80\x80") << qint64(0);
        QTest::newRow("overlong F0 8F BF BF") << QByteArray("z\xF0\x8F\xBF\xBF") << qint64(1);
        QTest::newRow("high surrogate ED A0 80") << QByteArray("ok\xED\xA0\x80") << qint64(2);
        QTest::newRow("low surrogate ED BF BF") << QByteArray("\xED\xBF\xBF") << qint64(0);
        QTest::newRow("past U+10FFFF F4 90 80 80") << QByteArray("a\xF4\x90\x80\x80") << qint64(1);
        QTest::newRow("F5 lead") << QByteArray("\xF5\x80\x80\x80") << qint64(0);
        QTest::newRow("5-byte F8") << QByteArray("\xF8\x88\x80\x80\x80") << qint64(0);
        QTest::newRow("FE") << QByteArray("ab\xFE") << qint64(2);
        QTest::newRow("FF") << QByteArray("\xFF") << qint64(0);
        QTest::newRow("truncated 2-byte at end") << QByteArray("ab\xC3") << qint64(2);
        QTest::newRow("truncated 3-byte at end") << QByteArray("abc\xE2\x82") << qint64(3);
        QTest::newRow("truncated emoji at end") << QByteArray("\xF0\x9F\x98") << qint64(0);
        QTest::newRow("lone continuation") << QByteArray("abc\x80" "def") << qint64(3);
        QTest::newRow("lone continuation BF first") << QByteArray("\xBF") << qint64(0);
        QTest::newRow("lead then ASCII") << QByteArray("a\xC3(") << qint64(1);
        QTest::newRow("3-byte lead then ASCII") << QByteArray("\xE2\x82" "A") << qint64(0);
        QTest::newRow("valid multibyte before bad") << QByteArray("h\xC3\xA9llo\xFF") << qint64(6);
        QTest::newRow("extra continuation after emoji") << QByteArray("\xF0\x9F\x98\x80\x80") << qint64(4);
        QTest::newRow("first of two bad") << QByteArray("ok \xC0\x80 \xFF") << qint64(3);
    }
    void findInvalidUtf8()
    {
        QFETCH(QByteArray, bytes);
        QFETCH(qint64, offset);
        QCOMPARE(referenceFirstInvalid(bytes), offset); // the expectations agree with the Unicode table
        QCOMPARE(actualFirstInvalid(bytes), offset);
    }

    void findInvalidUtf8EveryCodePoint()
    {
        // Every scalar value encodes to valid UTF-8; every surrogate encoded the same way is invalid.
        QByteArray all;
        for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                const QByteArray s = "x" + encode(cp);
                QCOMPARE(actualFirstInvalid(s), qint64(1));
                continue;
            }
            all += encode(cp);
        }
        QCOMPARE(actualFirstInvalid(all), qint64(-1));
    }

    void findInvalidUtf8MatchesReferenceOnRandomBytes()
    {
        // Mostly-valid text with random damage: compare with the table-driven reference.
        std::mt19937 rng(2024u);
        std::uniform_int_distribution<int> kind(0, 9);
        const char32_t samples[] = {U'a', U'Z', U'\n', U'\u00e9', U'\u07ff', U'\u0800', U'\u20ac', U'\ud7ff', U'\ue000', U'\uffff', U'\U00010000', U'\U0001F600', U'\U0010FFFF'};
        int invalidSeen = 0;
        for (int trial = 0; trial < 20000; ++trial) {
            QByteArray s;
            const int n = 1 + static_cast<int>(rng() % 12);
            for (int k = 0; k < n; ++k) s += encode(samples[rng() % std::size(samples)]);
            const int damage = kind(rng);
            if (damage < 7 && !s.isEmpty()) { // replace one byte with a random one
                s[static_cast<qsizetype>(rng() % s.size())] = static_cast<char>(rng() & 0xFF);
            } else if (damage == 7 && s.size() > 1) { // drop the last byte
                s.chop(1);
            } else if (damage == 8) { // insert a random high byte
                s.insert(static_cast<qsizetype>(rng() % (s.size() + 1)), static_cast<char>(0x80 | (rng() & 0x7F)));
            }
            const qint64 want = referenceFirstInvalid(s);
            if (want >= 0) ++invalidSeen;
            if (actualFirstInvalid(s) != want)
                QFAIL(qPrintable(QString("bytes %1: got %2, want %3").arg(QString::fromLatin1(s.toHex(' '))).arg(actualFirstInvalid(s)).arg(want)));
        }
        QVERIFY(invalidSeen > 5000); // the damage produced plenty of invalid inputs
    }

    // ------------------------------------------------------------------ readTextFile
    void readsFileExactly()
    {
        QTemporaryDir dir;
        QVERIFY(dir.isValid());
        const std::string path = filePath(dir, "story.txt");
        // CRLF, tabs, multibyte and emoji must come back byte for byte (no newline translation).
        const std::string text = "Line one\r\n\tcaf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\nlast line without newline";
        testsupport::writeText(path, text);
        auto r = readTextFile(path);
        QVERIFY2(r.ok(), r.ok() ? "" : r.message().c_str());
        QCOMPARE(QByteArray::fromStdString(*r), QByteArray::fromStdString(text));
    }

    void readsLargeFile()
    {
        QTemporaryDir dir;
        const std::string path = filePath(dir, "big.txt");
        std::string text;
        std::mt19937 rng(5u);
        while (text.size() < 3 * 1024 * 1024) text += (rng() % 10 == 0) ? "\xC3\xA9" : std::string(1, static_cast<char>('a' + rng() % 26));
        testsupport::writeText(path, text);
        auto r = readTextFile(path);
        QVERIFY(r.ok());
        QCOMPARE(r->size(), text.size());
        QVERIFY(*r == text);
    }

    void bomIsStripped()
    {
        QTemporaryDir dir;
        const std::string path = filePath(dir, "bom.txt");
        testsupport::writeText(path, "\xEF\xBB\xBFHello \xC3\xA9\n");
        auto r = readTextFile(path);
        QVERIFY2(r.ok(), r.ok() ? "" : r.message().c_str());
        QCOMPARE(QByteArray::fromStdString(*r), QByteArray("Hello \xC3\xA9\n"));

        // Only one leading BOM is a byte-order mark; a second one is text.
        testsupport::writeText(path, "\xEF\xBB\xBF\xEF\xBB\xBFx");
        r = readTextFile(path);
        QVERIFY(r.ok());
        QCOMPARE(QByteArray::fromStdString(*r), QByteArray("\xEF\xBB\xBFx"));
    }

    void readErrors_data()
    {
        QTest::addColumn<QString>("kind");
        QTest::addColumn<QString>("mustContain");
        QTest::newRow("missing") << "missing" << "no such file";
        QTest::newRow("folder") << "folder" << "";
        QTest::newRow("empty") << "empty" << "empty";
        QTest::newRow("whitespace only") << "whitespace" << "empty";
        QTest::newRow("BOM only") << "bom" << "empty";
    }
    void readErrors()
    {
        QFETCH(QString, kind);
        QFETCH(QString, mustContain);
        QTemporaryDir dir;
        std::string path = filePath(dir, "input.txt");
        if (kind == "folder") {
            path = filePath(dir, "sub");
            QVERIFY(QDir().mkdir(QString::fromStdString(path)));
        } else if (kind == "empty") {
            testsupport::writeText(path, "");
        } else if (kind == "whitespace") {
            testsupport::writeText(path, "  \n\t\r\n   \n");
        } else if (kind == "bom") {
            testsupport::writeText(path, "\xEF\xBB\xBF\n");
        }
        auto r = readTextFile(path);
        QVERIFY(!r.ok());
        const QString message = QString::fromStdString(r.message());
        QVERIFY2(message.contains(QString::fromStdString(path)), qPrintable("message does not name the file: " + message));
        if (!mustContain.isEmpty())
            QVERIFY2(message.contains(mustContain, Qt::CaseInsensitive), qPrintable("message: " + message));
    }

    void notUtf8_data()
    {
        QTest::addColumn<QByteArray>("bytes");
        QTest::addColumn<int>("line");
        QTest::addColumn<int>("offset"); // of the first bad byte in the file
        QTest::newRow("line 1") << QByteArray("ab\xFF" "cd\n") << 1 << 2;
        QTest::newRow("line 3") << QByteArray("line one\nline two\nbad \xC0\x80 here\n") << 3 << 22;
        QTest::newRow("CRLF line 3") << QByteArray("a\r\nb\r\n\xFF") << 3 << 6;
        QTest::newRow("latin-1 after valid utf-8") << QByteArray("caf\xC3\xA9\n\ncaf\xE9\n") << 3 << 10;
        QTest::newRow("truncated at end") << QByteArray("one\ntwo\xE2\x82") << 2 << 7;
    }
    void notUtf8()
    {
        QFETCH(QByteArray, bytes);
        QFETCH(int, line);
        QFETCH(int, offset);
        QCOMPARE(referenceFirstInvalid(bytes), qint64(offset)); // the row itself is right
        QCOMPARE(bytes.left(offset).count('\n') + 1, line);
        QTemporaryDir dir;
        const std::string path = filePath(dir, "latin1.txt");
        testsupport::writeBytes(path, bytes.constData(), static_cast<std::size_t>(bytes.size()));
        auto r = readTextFile(path);
        QVERIFY(!r.ok());
        const QString message = QString::fromStdString(r.message());
        QVERIFY2(message.contains(QString::fromStdString(path)), qPrintable(message));
        QVERIFY2(message.contains("not UTF-8"), qPrintable(message));
        QVERIFY2(message.contains(QString("line %1").arg(line)), qPrintable(message));
        QVERIFY2(message.contains(QString("offset %1").arg(offset)), qPrintable(message));
    }

    void notUtf8OffsetCountsTheBom()
    {
        // The header promises the byte offset of the first bad byte: an offset into the file, so the
        // dropped byte-order mark still counts.
        const QByteArray bytes("\xEF\xBB\xBFok\n\xFF");
        QTemporaryDir dir;
        const std::string path = filePath(dir, "bom-bad.txt");
        testsupport::writeBytes(path, bytes.constData(), static_cast<std::size_t>(bytes.size()));
        auto r = readTextFile(path);
        QVERIFY(!r.ok());
        const QString message = QString::fromStdString(r.message());
        QVERIFY2(message.contains("line 2"), qPrintable(message));
        QVERIFY2(message.contains("offset 6"), qPrintable(message));
    }
};

QTEST_APPLESS_MAIN(TestText)
#include "test_text.moc"

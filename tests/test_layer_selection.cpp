// Layer selection: parsing of block ranges and matrix types, presets, patterns, and the result
// checked against a plain enumeration of every (block, type) pair.
#include "pocket/methods/layer_selection.h"
#include "test_support.h"

#include <set>

using namespace pocket;

namespace {
ModelConfig llama(int layers)
{
    ModelConfig c;
    c.hiddenSize = 64; c.intermediateSize = 128; c.numLayers = layers; c.numHeads = 4; c.numKvHeads = 4; c.headDim = 16; c.vocabSize = 100;
    return c;
}

// The names a selection should give, by brute force over every (block, type) pair.
std::vector<std::string> bruteForce(int layers, const std::function<bool(int, MatrixType)>& keep)
{
    std::vector<std::string> out;
    for (int l = 0; l < layers; ++l)
        for (const MatrixType t : kMatrixTypes)
            if (keep(l, t))
                out.push_back(matrixTensorName(l, t));
    return out;
}
} // namespace

class TestLayerSelection : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void referencePresetSkipsFirstThreeAndLastTwo()
    {
        auto preset = LayerSelection::preset("reference");
        QVERIFY(preset.ok());
        auto names = preset->select(llama(32));
        QVERIFY(names.ok());
        // The reference code's ignore_layers = [0, 1, 2, 30, 31] for 32 blocks.
        QCOMPARE(*names, bruteForce(32, [](int l, MatrixType) { return l >= 3 && l <= 29; }));
        QCOMPARE(names->size(), static_cast<std::size_t>(27 * 7));
        auto all = LayerSelection::preset("all")->select(llama(5));
        QCOMPARE(all->size(), static_cast<std::size_t>(35));
        QVERIFY(!LayerSelection::preset("most").ok());
    }

    void blocksAndTypes()
    {
        LayerSelection s;
        s.blocks = LayerSelection::parseBlocks("0-1, 4,6-").value();
        s.types = LayerSelection::parseTypes("attn,w2").value();
        auto names = s.select(llama(8));
        QVERIFY(names.ok());
        const std::set<int> blocks{0, 1, 4, 6, 7};
        QCOMPARE(*names, bruteForce(8, [&](int l, MatrixType t) {
            return blocks.count(l) && (t == MatrixType::Q || t == MatrixType::K || t == MatrixType::V || t == MatrixType::O || t == MatrixType::Down);
        }));
    }

    void patterns()
    {
        LayerSelection s;
        s.include = "mlp\\.";
        s.exclude = "layers\\.(0|2)\\.";
        auto names = s.select(llama(4));
        QVERIFY(names.ok());
        QCOMPARE(*names, bruteForce(4, [](int l, MatrixType t) {
            return (t == MatrixType::Gate || t == MatrixType::Up || t == MatrixType::Down) && l != 0 && l != 2;
        }));
        s.include = "(unclosed";
        QVERIFY(!s.select(llama(4)).ok());
    }

    void typeAliases_data()
    {
        QTest::addColumn<QString>("spec");
        QTest::addColumn<int>("count");
        QTest::newRow("hf names") << "q_proj,k_proj,down_proj" << 3;
        QTest::newRow("llama2.c names") << "wq,wk,wv,wo,w1,w2,w3" << 7;
        QTest::newRow("groups overlap") << "mlp,up,ffn" << 3;
        QTest::newRow("case") << "Q,GATE" << 2;
    }
    void typeAliases()
    {
        QFETCH(QString, spec);
        QFETCH(int, count);
        auto types = LayerSelection::parseTypes(spec.toStdString());
        QVERIFY2(types.ok(), types.ok() ? "" : types.message().c_str());
        QCOMPARE(static_cast<int>(types->size()), count);
    }

    void badSpecs()
    {
        for (const char* bad : {"", "a", "3-1", "1--2", "-2", "1,,x"})
            QVERIFY2(!LayerSelection::parseBlocks(bad).ok(), bad);
        QVERIFY(LayerSelection::parseBlocks("x").message().find("'x'") != std::string::npos);
        QVERIFY(LayerSelection::parseTypes("q,lm_head").message().find("lm_head") != std::string::npos);
        LayerSelection s;
        s.blocks = {{2, 9}};
        auto past = s.select(llama(5));
        QVERIFY(!past.ok());
        QVERIFY2(past.message().find("block 9") != std::string::npos, past.message().c_str());
        LayerSelection skipAll;
        skipAll.skipFirst = 3;
        skipAll.skipLast = 2;
        QVERIFY(skipAll.select(llama(4))->empty()); // fewer blocks than skipped: nothing selected, no crash
    }
};

QTEST_APPLESS_MAIN(TestLayerSelection)
#include "test_layer_selection.moc"

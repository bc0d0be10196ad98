// The workbench's first-run and teaching parts under the offscreen platform (issue 21): settings
// proposed to fit the open model, the warning and the confirmation before an oversized run, the
// Suggest button, the SNR shown during training, the Inspect tab's figures against core's
// inspectMatrix, figure export (PNG, SVG, PDF), the baseline queue (settings from core's
// bracketingSettings, cancel) and the guided demo's steps.
#include "compare_panel.h"
#include "guided_demo.h"
#include "inspect_panel.h"
#include "job_queue.h"
#include "main_window.h"
#include "method_form.h"
#include "playground_panel.h"
#include "sensitivity_panel.h"
#include "workbench.h"

#include "pocket/analysis/inspect.h"
#include "pocket/io/checkpoint.h"
#include "pocket/jobs/compress_job.h"
#include "gui_test_support.h"
#include "test_support.h"

#include <qcustomplot.h>

#include <QElapsedTimer>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QPushButton>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QtTest>

#include <cmath>

using namespace pocket;
using namespace pocket::ui;

namespace {

using testsupport::settle;
using testsupport::waitFor;

QString setting(const MethodForm* form, const QString& name)
{
    for (const std::string& s : form->settings())
        if (QString::fromStdString(s).startsWith(name + "="))
            return QString::fromStdString(s).mid(name.size() + 1);
    return {};
}

int sentences(const QString& text)
{
    int n = 0;
    for (int i = 0; i < text.size(); ++i)
        if ((text[i] == '.' || text[i] == '?' || text[i] == '!') && (i + 1 == text.size() || text[i + 1] == ' '))
            ++n;
    return n;
}

} // namespace

class TestTeaching : public QObject {
    Q_OBJECT
    QTemporaryDir m_tmp;
    std::unique_ptr<Workbench> m_wb;
    std::unique_ptr<MainWindow> m_window;
    QString m_text;
    double m_pocketBpw = 0;

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_tmp.isValid());
        QStandardPaths::setTestModeEnabled(true);
        QSettings().clear();
        qputenv("POCKETLLM_NO_DIALOGS", "1");
        m_wb = std::make_unique<Workbench>(nullptr, QStringLiteral(POCKET_PLUGIN_DIR));
        m_wb->setStorePath(m_tmp.filePath("store.sqlite"));
        m_window = std::make_unique<MainWindow>(m_wb.get());
        m_window->resize(1400, 900);
        m_window->show();
        const std::string text = testsupport::readText(POCKET_RESOURCES_DIR "/text/tinystories_valid_30k.txt");
        m_text = m_tmp.filePath("short.txt");
        testsupport::writeText(m_text.toStdString(), text.substr(0, 3000));
        m_window->textPathEdit()->setText(m_text);
        m_window->ctxSpin()->setValue(128);
    }

    // Opening the demo model proposes one network for the model and a codebook that fits.
    void proposesSettingsThatFitTheModel()
    {
        m_window->methodForm()->setMethodId("pocketllm");
        QVERIFY(m_window->openPath(QString::fromStdString(testsupport::demoModel()), true));
        settle(400);
        QCOMPARE(setting(m_window->methodForm(), "sharing"), QString("model"));
        QCOMPARE(setting(m_window->methodForm(), "K"), QString("512"));
        QVERIFY(!m_window->estimateLabel()->text().contains("&#9888;") && !m_window->estimateLabel()->text().contains(QChar(0x26A0)));
    }

    // The paper's per-matrix defaults on this model: a warning in the estimate; Start asks and a
    // "no" starts nothing; Suggest restores settings that fit, which start without a question.
    void warnsAndAsksBeforeAnOversizedRun()
    {
        MethodForm* form = m_window->methodForm();
        form->applySettings({"sharing=matrix", "K=32768"});
        settle(500);
        const QString estimate = m_window->estimateLabel()->text();
        QVERIFY2(estimate.contains("more than fp16") && estimate.contains("larger than the model"), qPrintable(estimate));
        QStringList asked;
        m_window->setConfirmHandler([&asked](const QString& text) {
            asked << text;
            return false;
        });
        m_window->outputPathEdit()->setText(m_tmp.filePath("oversized.pllm"));
        QVERIFY(!m_window->startCompress(false));
        QCOMPARE(asked.size(), 1);
        QVERIFY(asked.front().contains("bits per weight") && asked.front().contains("Start it anyway?"));
        QVERIFY(!m_wb->busy());
        QVERIFY(m_window->lastError().startsWith("Not started"));

        m_window->suggestButton()->click();
        QCOMPARE(setting(form, "sharing"), QString("model"));
        QCOMPARE(setting(form, "K"), QString("512"));
        settle(500);
        QVERIFY(!m_window->estimateLabel()->text().contains("more than fp16"));
        m_window->setConfirmHandler({});
    }

    // A short run on the assign path: the status shows a real SNR or none, never "0.0 dB" while the
    // loss is small; the curve's SNR points are NaN (unknown) or positive.
    void snrDuringTrainingIsKnownOrAbsent()
    {
        m_window->methodForm()->applySettings({"K=64", "epochs=30"});
        m_window->outputPathEdit()->setText(m_tmp.filePath("pocket.pllm"));
        QStringList texts;
        QVector<TrainPoint> points;
        auto c1 = connect(m_wb.get(), &Workbench::jobProgress, this, [&](const JobStatus& s) { texts << s.text; });
        auto c2 = connect(m_wb.get(), &Workbench::trainMetrics, this, [&](const QVector<TrainPoint>& p) { points << p; });
        QSignalSpy finished(m_wb.get(), &Workbench::compressFinished);
        QVERIFY2(m_window->startCompress(false), qPrintable(m_window->lastError()));
        QVERIFY(m_wb->waitForIdle(300000));
        disconnect(c1);
        disconnect(c2);
        QCOMPARE(finished.size(), 1);
        const auto outcome = finished.at(0).at(0).value<CompressOutcome>();
        QVERIFY2(outcome.ok, qPrintable(outcome.message));
        m_pocketBpw = outcome.bpwCompressed;
        int withSnr = 0;
        for (const QString& t : texts) {
            QVERIFY2(!t.contains("SNR 0.0 dB"), qPrintable(t));
            withSnr += t.contains("SNR");
        }
        QVERIFY(withSnr > 0);
        QVERIFY(!points.isEmpty());
        for (const TrainPoint& p : points)
            QVERIFY2(std::isnan(p.snrDb) || p.snrDb > 1, qPrintable(QString::number(p.snrDb)));
        QCOMPARE(m_window->lastArchive(), m_tmp.filePath("pocket.pllm"));
    }

    // The Inspect tab draws core's numbers for the last archive, follows the matrix chooser, and
    // exports every figure in the three formats.
    void inspectTabDrawsCoreFigures()
    {
        InspectPanel* inspect = m_window->inspectPanel();
        QSignalSpy done(inspect, &InspectPanel::inspected);
        m_window->showTab(inspect);
        QVERIFY(waitFor([&] { return done.size() >= 1; }, 60000));
        QVERIFY2(done.last().at(0).toBool(), qPrintable(inspect->lastError()));
        QVERIFY(inspect->current().has_value());
        const std::string name = inspect->current()->name;
        QCOMPARE(QString::fromStdString(name), QString("model.layers.0.self_attn.q_proj.weight"));
        auto original = openCheckpoint(testsupport::demoModel());
        auto core = inspectMatrix(m_window->lastArchive().toStdString(), name, original->get(), m_wb->registry());
        QVERIFY(bool(core));
        // Histogram: the two graphs hold core's counts.
        QCustomPlot* hist = inspect->plot(InspectPanel::Histogram);
        QCOMPARE(hist->graphCount(), 2);
        for (int g = 0; g < 2; ++g) {
            const auto& counts = g == 0 ? core->histogram.original : core->histogram.decoded;
            QCOMPARE(hist->graph(g)->dataCount(), int(counts.size()));
            for (int i = 0; i < int(counts.size()); ++i)
                QCOMPARE((hist->graph(g)->data()->begin() + i)->value, counts[i]);
        }
        // Error map: core's signed means, then its RMS.
        QCustomPlot* map = inspect->plot(InspectPanel::ErrorMap);
        auto* colorMap = qobject_cast<QCPColorMap*>(map->plottable(0));
        QVERIFY(colorMap);
        QCOMPARE(colorMap->data()->keySize(), core->error.cols);
        QCOMPARE(colorMap->data()->valueSize(), core->error.rows);
        for (int r = 0; r < core->error.rows; r += 7)
            for (int c = 0; c < core->error.cols; c += 5)
                QCOMPARE(float(colorMap->data()->cell(c, r)), core->error.mean[r * core->error.cols + c]);
        inspect->errorModeCombo()->setCurrentIndex(1);
        colorMap = qobject_cast<QCPColorMap*>(map->plottable(0));
        QCOMPARE(float(colorMap->data()->cell(3, 2)), core->error.rms[2 * core->error.cols + 3]);
        inspect->errorModeCombo()->setCurrentIndex(0);
        // Codebook and usage: every codeword drawn; the usage graph sums to the sub-vectors.
        QVERIFY(core->codebook.has_value());
        QCustomPlot* book = inspect->plot(InspectPanel::Codebook);
        bool sawCodewords = false;
        for (int i = 0; i < book->plottableCount(); ++i)
            if (book->plottable(i)->name() == "codewords") {
                sawCodewords = true;
                QCOMPARE(static_cast<QCPCurve*>(book->plottable(i))->dataCount(), int(core->codebook->codewords));
            }
        QVERIFY(sawCodewords);
        // The decoder's map: each line runs from a codeword to where that same codeword decodes.
        const CodebookView& v = *core->codebook;
        QCPCurve* lines = nullptr;
        for (int i = 0; i < book->plottableCount(); ++i)
            if (book->plottable(i)->name() == "decoder map")
                lines = static_cast<QCPCurve*>(book->plottable(i));
        QVERIFY(lines && lines->dataCount() >= 30);
        int checked = 0;
        for (int i = 0; i + 2 < lines->dataCount(); i += 3) {
            const auto it = lines->data()->at(i);
            std::int64_t k = -1;
            for (std::int64_t c = 0; c < v.codewords && k < 0; ++c)
                if (v.codebook[2 * c] == float(it->key) && v.codebook[2 * c + 1] == float(it->value))
                    k = c;
            QVERIFY2(k >= 0, qPrintable(QString("a line starts off the codewords: (%1, %2), codeword 0 at (%3, %4)").arg(it->key).arg(it->value).arg(v.codebook[0]).arg(v.codebook[1])));
            QCOMPARE(float((it + 1)->key), v.decodedCodewords[2 * k]);
            QCOMPARE(float((it + 1)->value), v.decodedCodewords[2 * k + 1]);
            QVERIFY(std::isnan((it + 2)->key));
            ++checked;
        }
        QCOMPARE(checked * 3, lines->dataCount());
        QCustomPlot* usage = inspect->plot(InspectPanel::Usage);
        double total = 0;
        for (auto it = usage->graph(0)->data()->begin(); it != usage->graph(0)->data()->end(); ++it)
            total += it->value;
        QCOMPARE(total, double(core->rows * core->cols / 4));
        QCOMPARE(usage->graph(1)->dataCount(), core->codebook->dead);
        QVERIFY(inspect->plot(InspectPanel::Tiles)->graphCount() == 2); // pocketllm: RLN statistics
        QVERIFY(inspect->summaryLabel()->text().contains("SNR"));

        // Another matrix from the chooser.
        inspect->matrixCombo()->setCurrentText("model.layers.3.mlp.down_proj.weight");
        QVERIFY(waitFor([&] { return done.size() >= 2; }, 60000));
        QCOMPARE(QString::fromStdString(inspect->current()->name), QString("model.layers.3.mlp.down_proj.weight"));
        QCOMPARE(inspect->current()->cols, std::int64_t(172));

        // Export: each figure as PNG, SVG and PDF.
        for (int f = 0; f < InspectPanel::FigureCount; ++f)
            for (const char* suffix : {"png", "svg", "pdf"}) {
                const QString path = m_tmp.filePath(QString("%1.%2").arg(InspectPanel::figureName(InspectPanel::Figure(f)), suffix));
                QVERIFY2(inspect->exportFigure(InspectPanel::Figure(f), path), qPrintable(inspect->lastError()));
                const std::vector<std::uint8_t> bytes = testsupport::readBytes(path.toStdString());
                const QByteArray head(reinterpret_cast<const char*>(bytes.data()), int(std::min<std::size_t>(bytes.size(), 400)));
                if (QString(suffix) == "png") {
                    QImage image(path);
                    QVERIFY(!image.isNull() && image.width() >= 640);
                } else if (QString(suffix) == "svg") {
                    QVERIFY2(head.contains("<svg"), head.constData());
                } else {
                    QVERIFY(head.startsWith("%PDF"));
                }
            }
        QVERIFY(!inspect->exportFigure(InspectPanel::Histogram, m_tmp.filePath("figure.bmp")));
        QVERIFY(inspect->lastError().contains(".png, .svg or .pdf"));
    }

    // Run baselines: RTN, GPTQ and VQ at core's bracketing settings around the last run's bits,
    // each compressed and evaluated; the comparison gains their points; the last archive stays.
    void runBaselinesFillsTheComparison()
    {
        const QString last = m_window->lastArchive();
        ComparePanel* compare = m_window->comparePanel();
        compare->setModelFilter(QString());
        compare->refresh();
        const int pointsBefore = compare->pointCount();
        JobQueue* queue = m_window->jobQueue();
        const int queued = m_window->runBaselines();
        QVERIFY2(queued >= 3, qPrintable(m_window->lastError())); // at low bits RTN and GPTQ have nothing below
        QCOMPARE(m_window->tabs()->currentWidget(), static_cast<QWidget*>(compare));
        // The settings are core's bracket around the last run's bits, method by method.
        QVector<std::vector<std::string>> expected;
        for (const char* id : {"rtn", "gptq", "vq"}) {
            CompressJobParams base;
            base.modelPath = testsupport::demoModel();
            base.methodId = id;
            auto choices = bracketingSettings(base, *m_wb->checkpoint(), **m_wb->registry().find(id), m_pocketBpw, &m_wb->registry());
            QVERIFY(bool(choices));
            for (const BracketChoice& c : *choices)
                expected << c.settings;
        }
        QCOMPARE(queued, expected.size());
        for (int i = 0; i < queued; ++i)
            QCOMPARE(queue->items()[i].compress.settings, expected[i]);
        QSignalSpy drained(queue, &JobQueue::drained);
        QVERIFY(waitFor([&] { return !queue->running() && queue->waiting() == 0; }, 600000));
        QCOMPARE(queue->items().size(), queued);
        QMap<QString, QVector<double>> bits;
        for (const JobQueue::Item& item : queue->items()) {
            QVERIFY2(item.state == JobQueue::Item::State::Done, qPrintable(item.label + ": " + item.message));
            QVERIFY(item.perplexity > 1);
            bits[QString::fromStdString(item.compress.methodId)] << item.bpw;
        }
        QCOMPARE(bits.keys(), (QStringList{"gptq", "rtn", "vq"}));
        QVERIFY(waitFor([&] { return drained.size() == 1; }, 5000)); // emitted once the last finished signal is through
        QCOMPARE(drained.size(), 1);
        for (int i = 0; i < queue->list()->count(); ++i)
            QVERIFY(queue->list()->item(i)->text().contains("perplexity"));
        compare->refresh();
        QVERIFY2(compare->pointCount() >= pointsBefore + queued, qPrintable(QString("%1 -> %2").arg(pointsBefore).arg(compare->pointCount())));
        QCOMPARE(m_window->lastArchive(), last);

        // Cancel: the running item is cancelled, the waiting ones dropped, the workbench idle.
        const int again = m_window->runBaselines(3.0);
        QVERIFY(again >= 5);
        QVERIFY(queue->running());
        queue->cancelButton()->click();
        QVERIFY(waitFor([&] { return !queue->running() && !m_wb->busy(); }, 60000));
        int cancelled = 0;
        for (int i = queued; i < queue->items().size(); ++i)
            cancelled += queue->items()[i].state == JobQueue::Item::State::Cancelled;
        QVERIFY2(cancelled >= again - 1, qPrintable(QString::number(cancelled)));
    }

    // The bracket itself: for each method one setting at or below the target and one above it.
    void bracketsTheTarget()
    {
        for (const char* id : {"rtn", "gptq", "vq"}) {
            auto m = m_wb->registry().find(id);
            CompressJobParams base;
            base.modelPath = testsupport::demoModel();
            base.methodId = id;
            for (double target : {2.6, 3.4}) {
                auto choices = bracketingSettings(base, *m_wb->checkpoint(), **m, target, &m_wb->registry());
                QVERIFY(choices && choices->size() == 2);
                QVERIFY(!(*choices)[0].above && (*choices)[0].bpwCompressed <= target);
                QVERIFY((*choices)[1].above && (*choices)[1].bpwCompressed > target);
                // No planned candidate lies strictly between the two.
                QVERIFY2((*choices)[1].bpwCompressed - (*choices)[0].bpwCompressed < 1.5,
                         qPrintable(QString("%1: %2 .. %3").arg(id).arg((*choices)[0].bpwCompressed).arg((*choices)[1].bpwCompressed)));
            }
        }
    }

    // Help ▸ Guided demo: six steps, two sentences each, each showing its tab; leave at any step.
    void guidedDemoWalksTheSteps()
    {
        GuidedDemo* demo = m_window->startGuidedDemo();
        QVERIFY(demo && demo->isVisible());
        QCOMPARE(demo->stepCount(), 6);
        QCOMPARE(demo->step(), 0);
        QCOMPARE(m_window->tabs()->currentIndex(), 0);
        QCOMPARE(m_wb->summary().path, QString::fromStdString(testsupport::demoModel()));
        const int before = m_window->jobQueue()->items().size();
        QWidget* expected[] = {m_window->tabs()->widget(0), m_window->tabs()->widget(0), m_window->comparePanel(),
                               m_window->sensitivityPanel(), m_window->inspectPanel(), m_window->playgroundPanel()};
        for (int s = 0; s < 6; ++s) {
            if (s > 0)
                demo->nextButton()->click();
            QCOMPARE(demo->step(), s);
            QCOMPARE(m_window->tabs()->currentWidget(), expected[s]);
            QCOMPARE(sentences(demo->textLabel()->text()), 2);
            if (s == 1) { // three sizes queued; cancelled, then queued again by a second visit
                JobQueue* queue = m_window->jobQueue();
                QCOMPARE(queue->items().size(), before + 3);
                QVERIFY(waitFor([&] { return m_wb->busy(); }, 10000));
                queue->cancel();
                QVERIFY(waitFor([&] { return !m_wb->busy() && !queue->running(); }, 60000));
                demo->backButton()->click();
                demo->nextButton()->click();
                QCOMPARE(queue->items().size(), before + 6);
                // The interrupted run's work folder does not stop the rerun.
                QVERIFY(waitFor([&] { return queue->items()[before + 3].state != JobQueue::Item::State::Waiting; }, 10000));
                QVERIFY2(queue->items()[before + 3].state == JobQueue::Item::State::Compressing, qPrintable(queue->items()[before + 3].message));
                queue->cancel();
                QVERIFY(waitFor([&] { return !m_wb->busy() && !queue->running(); }, 60000));
                for (int i = before; i < queue->items().size(); ++i)
                    QCOMPARE(int(queue->items()[i].state), int(JobQueue::Item::State::Cancelled));
            }
        }
        QCOMPARE(demo->nextButton()->text(), QString("Finish"));
        demo->backButton()->click();
        QCOMPARE(demo->step(), 4);
        demo->leaveButton()->click();
        QVERIFY(!demo->isVisible());
    }

    void cleanupTestCase()
    {
        m_window.reset();
        m_wb.reset();
    }
};

QTEST_MAIN(TestTeaching)
#include "test_teaching.moc"

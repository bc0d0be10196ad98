// The workbench GUI under the offscreen platform: open the demo model, pick layers, generated
// settings form, a short run with live metrics (buffered, not one signal per step), cancel,
// resume, evaluation before/after, the comparison table and chart, export (archive and Hugging
// Face folder), reopening the exports, and bad input that leaves the open model alone.
#include "compare_panel.h"
#include "export_dialog.h"
#include "layer_picker.h"
#include "cluster_dialog.h"
#include "main_window.h"
#include "judge_panel.h"
#include "playground_panel.h"
#include "method_form.h"
#include "sensitivity_panel.h"
#include "training_chart.h"
#include "workbench.h"

#include "pocket/archive/model_archive.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/gguf.h"
#include "pocket/io/gguf_export.h"
#include "pocket/jobs/compress_job.h"
#include "pocket/support/app_paths.h"
#include "pocket/store/experiment_store.h"
#include "gui_test_support.h"
#include "test_support.h"

#include <qcustomplot.h>

#include <QElapsedTimer>
#include <QFileInfo>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QLabel>
#include <QLineEdit>
#include <QSignalSpy>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QtTest>

#include <set>

using namespace pocket;
using namespace pocket::ui;

namespace {

using testsupport::settle;

// The matrix names a rule selects, straight from core (the picker must agree).
QStringList coreSelect(const Checkpoint& c, const LayerSelection& rule)
{
    QStringList out;
    const auto names = rule.select(c.config()); // kept: ranging over *temporary would dangle
    if (!names)
        qFatal("%s", names.message().c_str());
    for (const std::string& n : *names)
        out << QString::fromStdString(n);
    return out;
}

} // namespace

class TestGui : public QObject {
    Q_OBJECT
    QTemporaryDir m_tmp;
    std::unique_ptr<Workbench> m_wb;
    std::unique_ptr<MainWindow> m_window;
    QString m_text;
    QString m_archive;

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_tmp.isValid());
        QStandardPaths::setTestModeEnabled(true); // QSettings away from the user's
        QSettings().clear();
        qputenv("POCKETLLM_NO_DIALOGS", "1");
        m_wb = std::make_unique<Workbench>(nullptr, QStringLiteral(POCKET_PLUGIN_DIR)); // also a default folder: loaded once
        m_wb->setStorePath(m_tmp.filePath("store.sqlite"));
        m_window = std::make_unique<MainWindow>(m_wb.get());
        m_window->resize(1300, 850);
        m_window->show();
        // A short evaluation text (the first stories of the bundled slice).
        const std::string text = testsupport::readText(POCKET_RESOURCES_DIR "/text/tinystories_valid_30k.txt");
        m_text = m_tmp.filePath("short.txt");
        testsupport::writeText(m_text.toStdString(), text.substr(0, 4000));
    }

    void opensTheDemoModel()
    {
        QVERIFY(m_window->openPath(QString::fromStdString(testsupport::demoModel()), true));
        auto direct = openCheckpoint(testsupport::demoModel());
        QVERIFY2(bool(direct), qPrintable(QString::fromStdString(direct ? std::string() : direct.message())));
        qint64 params = 0;
        for (const auto& t : (*direct)->tensors())
            params += elementCount(t.shape);
        QCOMPARE(m_wb->summary().parameters, params);
        QCOMPARE(m_wb->summary().layers, int((*direct)->config().numLayers));
        QCOMPARE(m_window->layerPicker()->matrixCount(), int(7 * (*direct)->config().numLayers));
        QCOMPARE(m_window->layerPicker()->checkedNames().size(), m_window->layerPicker()->matrixCount());
        QVERIFY(m_window->layerPicker()->selection().names.empty()); // all = no name filter
    }

    void pickerRulesMatchCore()
    {
        LayerPicker* picker = m_window->layerPicker();
        LayerSelection rule;
        rule.blocks = *LayerSelection::parseBlocks("1-2");
        rule.types = *LayerSelection::parseTypes("attn");
        QVERIFY(picker->applySelection(rule, nullptr));
        const QStringList expected = coreSelect(*m_wb->checkpoint(), rule);
        QCOMPARE(expected.size(), 8);
        QCOMPARE(picker->checkedNames(), expected);
        // The job's selection picks exactly these in core as well.
        QCOMPARE(coreSelect(*m_wb->checkpoint(), picker->selection()), expected);
        QString error;
        LayerSelection bad;
        bad.blocks = {{7, 9}};
        QVERIFY(!picker->applySelection(bad, &error));
        QVERIFY2(error.contains("block"), qPrintable(error));
        QCOMPARE(picker->checkedNames(), expected); // a bad rule changes nothing
    }

    void settingsFormValidatesAndRemembers()
    {
        MethodForm* form = m_window->methodForm();
        QVERIFY(form->setMethodId("pocketllm"));
        QVERIFY(form->validationError().isEmpty());
        QVERIFY(form->setValue("lr", "not-a-number"));
        QVERIFY(!form->validationError().isEmpty());
        QVERIFY(form->validationError().contains("lr"));
        QVERIFY(!m_window->startCompress(false)); // refused before any work
        QVERIFY(!m_wb->busy());
        QVERIFY(form->setValue("lr", "0.01"));
        QVERIFY(form->validationError().isEmpty());
        QVERIFY(form->setValue("K", "64"));
        QVERIFY(form->setMethodId("rtn"));
        QVERIFY(form->setMethodId("pocketllm"));
        const std::vector<std::string> settings = form->settings();
        QCOMPARE(std::count(settings.begin(), settings.end(), std::string("K=64")), 1L);
        // The estimate shown is core's plan for these settings.
        settle(400);
        CompressJobParams p;
        p.modelPath = m_wb->summary().path.toStdString();
        p.methodId = "pocketllm";
        p.settings = form->settings();
        p.selection = m_window->layerPicker()->selection();
        auto plan = m_wb->plan(p);
        QVERIFY2(bool(plan), qPrintable(QString::fromStdString(plan ? std::string() : plan.message())));
        const QString bpw = QString::number(plan->estimatedBits.bpwCompressed(), 'f', 3);
        QVERIFY2(m_window->estimateLabel()->text().contains(bpw), qPrintable(m_window->estimateLabel()->text() + " / " + bpw));
    }

    void runCancelResume()
    {
        MethodForm* form = m_window->methodForm();
        form->applySettings({"sharing=matrix", "d=4", "K=16", "epochs=40", "batch=64", "hidden=8"});
        m_archive = m_tmp.filePath("run.pllm");
        m_window->outputPathEdit()->setText(m_archive);
        QSignalSpy metrics(m_wb.get(), &Workbench::trainMetrics);
        QSignalSpy finished(m_wb.get(), &Workbench::compressFinished);
        QElapsedTimer clock;
        clock.start();
        QVERIFY(m_window->startCompress(false));
        QVERIFY(m_wb->busy());
        // Wait until the second group trains, then cancel.
        int points = 0, maxGroup = 0;
        QElapsedTimer t;
        t.start();
        while (maxGroup < 2 && t.elapsed() < 120000 && m_wb->busy()) {
            QCoreApplication::processEvents(QEventLoop::AllEvents, 10);
            for (; points < metrics.size(); ++points)
                for (const TrainPoint& p : metrics.at(points).at(0).value<QVector<TrainPoint>>())
                    maxGroup = std::max(maxGroup, p.groupIndex);
        }
        QVERIFY2(maxGroup >= 2, "the run never reached its third group");
        m_wb->cancel();
        QVERIFY(m_wb->waitForIdle(60000));
        QCOMPARE(finished.size(), 1);
        const auto cancelled = finished.at(0).at(0).value<CompressOutcome>();
        QVERIFY(!cancelled.ok);
        QVERIFY(cancelled.cancelled);
        QVERIFY(Workbench::hasWorkFolder(m_archive));
        QVERIFY(!QFileInfo::exists(m_archive));
        // Metrics arrived in batches at about 30 Hz, never one signal per optimiser step.
        int received = 0;
        for (const auto& call : metrics)
            received += call.at(0).value<QVector<TrainPoint>>().size();
        QVERIFY(received > 0);
        QVERIFY2(metrics.size() <= clock.elapsed() / 25 + 5,
                 qPrintable(QString("%1 signals in %2 ms").arg(metrics.size()).arg(clock.elapsed())));
        QVERIFY(m_window->trainingChart()->pointCount() >= received);
        QVERIFY(m_window->trainingChart()->plottedPointCount() > 0);

        // Resume: finished groups come from the work folder.
        QVERIFY(m_window->startCompress(true));
        QVERIFY(m_wb->waitForIdle(300000));
        QCOMPARE(finished.size(), 2);
        const auto done = finished.at(1).at(0).value<CompressOutcome>();
        QVERIFY2(done.ok, qPrintable(done.message));
        QVERIFY(done.groupsResumed >= 2);
        std::set<std::string> groups;
        for (const MatrixReport& m : done.matrices)
            groups.insert(m.groupId);
        QCOMPARE(int(groups.size()), 8);
        QVERIFY(QFileInfo::exists(m_archive));
        QVERIFY(!Workbench::hasWorkFolder(m_archive));
        QCOMPARE(m_window->lastArchive(), m_archive);
        QCOMPARE(m_window->matricesTable()->rowCount(), 8);
        auto archive = Archive::open(m_archive.toStdString());
        QVERIFY2(bool(archive), qPrintable(QString::fromStdString(archive ? std::string() : archive.message())));
        QCOMPARE(accountBits((*archive)->manifest()).bpwCompressed(), done.bpwCompressed);
        // The run is in the store with its matrices.
        auto store = ExperimentStore::open(m_wb->storePath().toStdString());
        QVERIFY2(bool(store), qPrintable(QString::fromStdString(store ? std::string() : store.message())));
        auto run = (*store)->run(done.runId);
        QVERIFY2(bool(run), qPrintable(QString::fromStdString(run ? std::string() : run.message())));
        QCOMPARE(run->status, RunStatus::Done);
        QCOMPARE(int(run->matrices.size()), 8);
    }

    void evaluateAndCompare()
    {
        m_window->textPathEdit()->setText(m_text);
        m_window->ctxSpin()->setValue(64);
        QSignalSpy evals(m_wb.get(), &Workbench::evalFinished);
        QVERIFY(m_window->startEval(false));
        QVERIFY(m_wb->waitForIdle(120000));
        QVERIFY(m_window->startEval(true));
        QVERIFY(m_wb->waitForIdle(120000));
        QCOMPARE(evals.size(), 2);
        const auto original = evals.at(0).at(0).value<EvalOutcome>();
        const auto compressed = evals.at(1).at(0).value<EvalOutcome>();
        QVERIFY2(original.ok && compressed.ok, qPrintable(original.message + " / " + compressed.message));
        QVERIFY(compressed.perplexity > original.perplexity); // 2-bit-ish compression costs something
        QCOMPARE(m_window->resultsTable()->rowCount(), 2);
        // The archive was measured against the open original (the default): KL and top-1 shown.
        QVERIFY(!original.divergence);
        QVERIFY(compressed.divergence);
        QVERIFY(compressed.divergence->meanKl > 0 && compressed.divergence->top1Agreement < 1);
        QVERIFY(std::fabs(compressed.divergence->referencePerplexity - original.perplexity) < 1e-6 * original.perplexity);
        QCOMPARE(m_window->resultsTable()->item(0, 5)->text(), QStringLiteral("-"));
        QVERIFY(m_window->resultsTable()->item(1, 5)->text().startsWith(QString::number(compressed.divergence->meanKl, 'f', 4)));

        ComparePanel* compare = m_window->comparePanel();
        compare->setModelFilter(QString());
        compare->setDatasetFilter("short.txt");
        QVERIFY(compare->refresh());
        QCOMPARE(compare->rowCount(), 2); // the original and the archive, on this text
        QCOMPARE(compare->pointCount(), 1); // the uncompressed model is a reference line, not a point
        QSignalSpy selected(compare, &ComparePanel::runSelected);
        QCPAbstractPlottable* point = compare->chart()->plottable(0);
        QVERIFY(point);
        compare->selectPoint(point, 0);
        QCOMPARE(selected.size(), 1);
        QCOMPARE(selected.at(0).at(0).toLongLong(), compressed.runId);
    }

    void sensitivityHeatmapAndPlan()
    {
        SensitivityPanel* panel = m_window->sensitivityPanel();
        panel->windowsSpin()->setValue(2);
        panel->ctxSpin()->setValue(64);
        panel->unitCombo()->setCurrentText("matrix");
        QSignalSpy units(m_wb.get(), &Workbench::sensitivityUnits);
        QSignalSpy finished(m_wb.get(), &Workbench::sensitivityFinished);
        QString error;
        QVERIFY2(panel->startAnalysis(&error), qPrintable(error));
        QVERIFY(m_wb->waitForIdle(300000));
        QCOMPARE(finished.size(), 1);
        const auto outcome = finished.at(0).at(0).value<SensitivityOutcome>();
        QVERIFY2(outcome.ok, qPrintable(outcome.message));
        QCOMPARE(int(outcome.units.size()), 35);
        int streamed = 0;
        for (const auto& call : units)
            streamed += call.at(0).value<QVector<UnitSensitivity>>().size();
        QCOMPARE(streamed, 35); // every unit arrived while the analysis ran
        QCOMPARE(panel->filledCells(), 35);
        QCOMPARE(panel->table()->rowCount(), 35);
        QSignalSpy activated(panel, &SensitivityPanel::matrixActivated);
        panel->activateCell(2, 4);
        QCOMPARE(activated.size(), 1);
        QCOMPARE(activated.at(0).at(0).toString(), QString("model.layers.2.mlp.gate_proj.weight"));

        panel->menuEdit()->setText("bits=2;bits=4");
        panel->budgetSpin()->setValue(3.5);
        QVERIFY2(panel->startPlan(&error), qPrintable(error));
        QVERIFY(m_wb->waitForIdle(300000));
        QCOMPARE(finished.size(), 2);
        const auto plan = finished.at(1).at(0).value<SensitivityOutcome>();
        QVERIFY2(plan.ok, qPrintable(plan.message));
        QVERIFY(plan.allocation.plan.bpw <= 3.5 + 1e-9);
        QCOMPARE(int(panel->planMatrixSettings().size()), 35);
        QCOMPARE(panel->planTable()->rowCount(), 35);
        // Unit names and plan settings are shown whole (the issue: the unit column showed "...").
        settle(50);
        for (QTableWidget* table : {panel->table(), panel->planTable()})
            for (int column : table == panel->table() ? std::vector<int>{0} : std::vector<int>{0, 1})
                for (int r = 0; r < table->rowCount(); ++r) {
                    const QString text = table->item(r, column)->text();
                    QVERIFY(column == 1 || text.startsWith("model.layers."));
                    const int needed = table->fontMetrics().horizontalAdvance(text);
                    QVERIFY2(table->columnWidth(column) >= needed,
                             qPrintable(QString("%1: column %2 is %3 px, needs %4").arg(text).arg(column).arg(table->columnWidth(column)).arg(needed)));
                }
        // The heatmap's plan view: every matrix labelled with its menu entry and method.
        panel->metricCombo()->setCurrentIndex(SensitivityPanel::kPlanMetric);
        QCOMPARE(panel->filledCells(), 35);
        for (int b = 0; b < 5; ++b)
            for (int t = 0; t < 7; ++t) {
                const auto& setting = panel->planMatrixSettings().at(pocket::matrixTensorName(b, pocket::kMatrixTypes[t]));
                QCOMPARE(panel->cellText(b, t), QString(setting == std::vector<std::string>{"bits=2"} ? "1 rtn" : "2 rtn"));
            }
        panel->metricCombo()->setCurrentIndex(0);
        QCOMPARE(panel->cellText(0, 0), QString()); // labels only in the plan view

        QSignalSpy compressed(m_wb.get(), &Workbench::compressFinished);
        m_window->outputPathEdit()->setText(m_tmp.filePath("planned.pllm"));
        QVERIFY(m_window->startPlannedCompress());
        QVERIFY(m_wb->waitForIdle(300000));
        QCOMPARE(compressed.size(), 1);
        const auto done = compressed.at(0).at(0).value<CompressOutcome>();
        QVERIFY2(done.ok, qPrintable(done.message));
        // The plan counts bits after the lossless stage (auto) as the job stores them, unless the Compress pane asks for another.
        QVERIFY2(done.bpwCompressed <= plan.allocation.plan.bpw + 1e-9 && done.bpwCompressed > 0.5 * plan.allocation.plan.bpw, qPrintable(done.message));
        m_window->outputPathEdit()->setText(m_archive);
    }

    void exportAndReopen()
    {
        QSignalSpy exports(m_wb.get(), &Workbench::exportFinished);
        const QString copy = m_tmp.filePath("exported/copy.pllm");
        QDir().mkpath(m_tmp.filePath("exported"));
        QVERIFY(m_window->exportArchiveTo(copy));
        QVERIFY(m_wb->waitForIdle(60000));
        const QString hf = m_tmp.filePath("exported/hf");
        QVERIFY(m_window->exportHfTo(hf));
        QVERIFY(m_wb->waitForIdle(120000));
        QCOMPARE(exports.size(), 2);
        for (const auto& call : exports) {
            const auto o = call.at(0).value<ExportOutcome>();
            QVERIFY2(o.ok, qPrintable(o.message));
            QVERIFY(!o.files.isEmpty());
        }
        const QString source = m_window->lastArchive(); // the allocated plan's archive, written last
        QCOMPARE(testsupport::readBytes(copy.toStdString()), testsupport::readBytes(source.toStdString()));
        QVERIFY(QFileInfo::exists(hf + "/config.json"));
        QVERIFY(QFileInfo::exists(hf + "/model.safetensors"));

        // GGUF for llama.cpp: the dialog's preview lists every tensor; the export writes a GGUF.
        {
            ExportGgufDialog dialog(m_window->ggufExportSource(), m_tmp.filePath("exported/model.gguf"), m_wb->registry());
            auto plan = pocket::planGgufExport(source.toStdString(), m_wb->registry(), dialog.options());
            QVERIFY(plan.ok());
            QCOMPARE(dialog.preview()->rowCount(), int(plan->size()));
            QVERIFY(dialog.writable());
            QSignalSpy ggufExports(m_wb.get(), &Workbench::exportFinished);
            QVERIFY(m_window->exportGgufTo(dialog.outputPath(), dialog.options()));
            QVERIFY(m_wb->waitForIdle(120000));
            QCOMPARE(ggufExports.size(), 1);
            const auto o = ggufExports.at(0).at(0).value<ExportOutcome>();
            QVERIFY2(o.ok, qPrintable(o.message));
            QVERIFY(pocket::GgufFile::open(dialog.outputPath().toStdString()).ok());
        }
        // GPTQ / AQLM folder: the archive here (rtn with fp16 minima, or another method) cannot be
        // represented; the export fails with the reason and leaves nothing behind.
        {
            QSignalSpy folderExports(m_wb.get(), &Workbench::exportFinished);
            const QString dir = m_tmp.filePath("exported/gptq");
            QVERIFY(m_window->exportQuantisedFolderTo(dir, QStringLiteral("gptq")));
            QVERIFY(m_wb->waitForIdle(120000));
            QCOMPARE(folderExports.size(), 1);
            const auto o = folderExports.at(0).at(0).value<ExportOutcome>();
            QVERIFY(!o.ok);
            QVERIFY2(o.message.contains("GPTQ format"), qPrintable(o.message));
            QVERIFY(!QFileInfo::exists(dir));
        }

        QVERIFY(m_window->openPath(copy, true));
        QVERIFY(m_wb->summary().isArchive);
        auto manifest = Archive::open(source.toStdString(), ContainerReader::Verify::ManifestOnly);
        QVERIFY(bool(manifest));
        QCOMPARE(m_wb->summary().archiveMethod, QString::fromStdString((*manifest)->manifest().groups.front().payload.methodId));
        const qint64 params = m_wb->summary().parameters;
        QVERIFY(m_window->openPath(hf, true));
        QVERIFY(!m_wb->summary().isArchive);
        QCOMPARE(m_wb->summary().parameters, params);
    }

    // A GGUF opens like any model (its tokenizer is inside it) and evaluates to the original's
    // perplexity up to F16 rounding.
    void opensAndEvaluatesAGguf()
    {
        auto demo = openCheckpoint(testsupport::demoModel());
        QVERIFY(bool(demo));
        const QString gguf = m_tmp.filePath("demo-f16.gguf");
        QVERIFY(writeGgufModel(**demo, gguf.toStdString(), {DType::F16, "", false, {}}).ok());
        m_window->textPathEdit()->setText(m_text);
        m_window->ctxSpin()->setValue(64);
        QSignalSpy evals(m_wb.get(), &Workbench::evalFinished);
        QVERIFY(m_window->openPath(QString::fromStdString(testsupport::demoModel()), true));
        QVERIFY(m_window->startEval(false));
        QVERIFY(m_wb->waitForIdle(120000));
        QVERIFY(m_window->openPath(gguf, true));
        QVERIFY2(m_wb->summary().format.startsWith("GGUF"), qPrintable(m_wb->summary().format));
        QCOMPARE(m_wb->summary().tokenizerPath, QFileInfo(gguf).absoluteFilePath());
        QCOMPARE(m_wb->summary().dtype, QStringLiteral("F16"));
        QVERIFY(m_window->startEval(false));
        QVERIFY(m_wb->waitForIdle(120000));
        QCOMPARE(evals.size(), 2);
        const auto original = evals.at(0).at(0).value<EvalOutcome>(), fromGguf = evals.at(1).at(0).value<EvalOutcome>();
        QVERIFY2(original.ok && fromGguf.ok, qPrintable(original.message + " / " + fromGguf.message));
        QVERIFY2(std::abs(fromGguf.perplexity / original.perplexity - 1) < 0.01,
                 qPrintable(QString("%1 vs %2").arg(fromGguf.perplexity).arg(original.perplexity)));
    }

    // The playground streams both models, tints and explains the compressed one's tokens, runs one
    // thing at a time, and stops when asked.
    // Zero-shot on the original (table rows against core's figures and the store), then LoRA
    // recovery of the last archive with its loss curve; the recovered archive becomes the last one.
    void judgeAndRecover()
    {
        QVERIFY(m_window->openPath(QString::fromStdString(testsupport::demoModel()), true));
        JudgePanel* panel = m_window->judgePanel();
        m_window->showTab(panel);
        const QString archive = m_window->lastArchive();
        QVERIFY(!archive.isEmpty());
        panel->limitSpin()->setValue(6);
        QSignalSpy zero(m_wb.get(), &Workbench::zeroShotFinished);
        QString error;
        QVERIFY2(panel->startZeroShot(false, &error), qPrintable(error));
        QVERIFY(m_wb->waitForIdle(120000));
        QCOMPARE(zero.size(), 1);
        const auto z = zero.at(0).at(0).value<ZeroShotOutcome>();
        QVERIFY2(z.ok, qPrintable(z.message));
        QCOMPARE(int(z.tasks.size()), int(bundledZeroShotTasks().size()));
        QCOMPARE(panel->zeroShotTable()->rowCount(), int(z.tasks.size()));
        for (int r = 0; r < panel->zeroShotTable()->rowCount(); ++r) {
            QCOMPARE(panel->zeroShotTable()->item(r, 2)->text(), QStringLiteral("6"));
            QVERIFY(panel->zeroShotTable()->item(r, 3)->text().startsWith(QString::number(100 * z.tasks[std::size_t(r)].acc, 'f', 2)));
        }
        auto store = ExperimentStore::open(m_wb->storePath().toStdString());
        QVERIFY(store);
        auto run = (*store)->run(z.runId);
        QVERIFY(run);
        int accuracyRows = 0;
        for (const auto& r : run->results) accuracyRows += r.metric == "accuracy";
        QCOMPARE(accuracyRows, int(z.tasks.size()));

        panel->rankSpin()->setValue(1);
        panel->epochsSpin()->setValue(2);
        panel->samplesSpin()->setValue(16);
        panel->lengthSpin()->setValue(32);
        panel->typesCombo()->setCurrentIndex(1); // the MLP matrices
        panel->outputEdit()->setText(m_tmp.filePath("recovered.pllm"));
        QSignalSpy rec(m_wb.get(), &Workbench::recoverFinished);
        QSignalSpy steps(m_wb.get(), &Workbench::recoverSteps);
        QVERIFY2(panel->startRecover(&error), qPrintable(error));
        QVERIFY(m_wb->waitForIdle(120000));
        QCOMPARE(rec.size(), 1);
        const auto o = rec.at(0).at(0).value<RecoverOutcome>();
        QVERIFY2(o.ok, qPrintable(o.message));
        QCOMPARE(int(o.result.losses.size()), 4);
        QCOMPARE(panel->lossPlot()->graph(0)->dataCount(), 4);
        QVERIFY(steps.size() >= 1);
        QCOMPARE(o.result.adapters, 3 * int(m_wb->summary().layers));
        QCOMPARE(m_window->lastArchive(), m_tmp.filePath("recovered.pllm"));
        QVERIFY(panel->recoverLabel()->text().contains("recovered.pllm"));
        auto recovered = Archive::open(m_window->lastArchive().toStdString());
        QVERIFY(recovered);
        QCOMPARE(int((*recovered)->manifest().adapters.size()), o.result.adapters);
    }

    void playgroundRunsSideBySide()
    {
        QVERIFY(m_window->openPath(QString::fromStdString(testsupport::demoModel()), true));
        PlaygroundPanel* panel = m_window->playgroundPanel();
        m_window->showTab(panel);
        panel->setCompressedPath(m_window->lastArchive());
        panel->maxTokensSpin()->setValue(24);
        QSignalSpy finished(m_wb.get(), &Workbench::playgroundFinished);
        QString error;
        QVERIFY2(panel->start(&error), qPrintable(error));
        QString again;
        QVERIFY(!panel->start(&again));
        QVERIFY(again.contains("one thing at a time"));
        QVERIFY(m_wb->waitForIdle(120000));
        QCOMPARE(finished.size(), 1);
        const auto o = finished.at(0).at(0).value<PlaygroundOutcome>();
        QVERIFY2(o.ok, qPrintable(o.message));
        const auto& tokens = panel->compressedTokens();
        QVERIFY(!tokens.empty() && tokens.size() <= 24);
        QCOMPARE(tokens.size(), o.result.compressed.size());
        QVERIFY(panel->originalView()->toPlainText().startsWith(panel->promptEdit()->text()));
        QVERIFY(panel->originalView()->toPlainText().size() > panel->promptEdit()->text().size() + 10);
        QCOMPARE(panel->compressedView()->toPlainText(), panel->promptEdit()->text() + QString::fromStdString(o.result.compressedText));
        QVERIFY(panel->tooltipFor(0).contains("original's probability"));
        if (o.result.divergenceAt >= 0)
            QVERIFY(tokens[static_cast<std::size_t>(o.result.divergenceAt)].firstDivergence);
        panel->tintCombo()->setCurrentIndex(1); // re-tinted by KL: same text
        QCOMPARE(panel->compressedView()->toPlainText(), panel->promptEdit()->text() + QString::fromStdString(o.result.compressedText));
        // Stop in the middle: the outcome says so, and the tab is ready again.
        panel->maxTokensSpin()->setValue(400);
        QVERIFY(panel->start(&error));
        m_wb->cancel();
        QVERIFY(m_wb->waitForIdle(120000));
        QCOMPARE(finished.size(), 2);
        QVERIFY(finished.at(1).at(0).value<PlaygroundOutcome>().cancelled);
        // A compressed model that is not there: a clear error naming it.
        panel->setCompressedPath(m_tmp.filePath("missing.pllm"));
        QVERIFY(panel->start(&error));
        QVERIFY(m_wb->waitForIdle(60000));
        const auto missing = finished.at(2).at(0).value<PlaygroundOutcome>();
        QVERIFY(!missing.ok);
        QVERIFY2(missing.message.contains("missing.pllm"), qPrintable(missing.message));
    }

    // Run ▸ Run on cluster: the dialog's command line is the job's (compressCommandArgs) under
    // mpirun with --mpi; a script of it is written; with Open MPI installed (CI) it runs with -np 2
    // here and the archive it writes becomes the last archive, its progress shown on the way; a
    // missing mpirun is reported.
    void runsOnACluster()
    {
        QVERIFY(m_window->openPath(QString::fromStdString(testsupport::demoModel()), true));
        QVERIFY(m_window->methodForm()->setMethodId("vq"));
        m_window->methodForm()->applySettings({"d=2", "K=64", "iters=40", "sharing=type"});
        const QString out = m_tmp.filePath("cluster.pllm");
        m_window->outputPathEdit()->setText(out);
        ClusterDialog* dialog = m_window->openClusterDialog();
        QVERIFY(dialog);
        dialog->setRanks(2);
        const QStringList args = dialog->arguments();
        QCOMPARE(args.mid(0, 2), (QStringList{"-np", "2"}));
        QVERIFY(args.contains("--mpi") && args.contains("--progress-lines"));
        QVERIFY2(args.join(' ').contains(QStringLiteral("compress %1 -o %2 --method vq").arg(QString::fromStdString(testsupport::demoModel()), out)),
                 qPrintable(args.join(' ')));
        QVERIFY(dialog->commandLine().startsWith("mpirun -np 2 "));
        QString error;
        const QString script = m_tmp.filePath("run-cluster.sh");
        QVERIFY2(dialog->writeScript(script, &error), qPrintable(error));
        QVERIFY(QFileInfo(script).isExecutable());
        QVERIFY(QString::fromStdString(testsupport::readText(script.toStdString())).contains(dialog->commandLine()));

        QSignalSpy finished(dialog, &ClusterDialog::finished);
        dialog->setMpirun(m_tmp.filePath("no-such-mpirun"));
        QVERIFY(dialog->start());
        QVERIFY(finished.wait(20000));
        QCOMPARE(finished.last().at(0).toBool(), false);
        QVERIFY2(finished.last().at(2).toString().contains("could not be started"), qPrintable(finished.last().at(2).toString()));

        const QString mpirun = QStandardPaths::findExecutable("mpirun");
        if (mpirun.isEmpty() || !QFile::exists(QString::fromStdString(pocket::executableDir()) + "/../lib/libpocket_mpi.so"))
            QSKIP("no mpirun or no MPI module in this build: the run itself is checked where Open MPI is installed (CI)");
        dialog->setMpirun(mpirun);
        qputenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none"); // as tests/mpi_check.sh
        QVERIFY(dialog->start());
        QVERIFY(finished.wait(180000));
        QVERIFY2(finished.last().at(0).toBool(), qPrintable(finished.last().at(2).toString() + "\n" + dialog->output()->toPlainText()));
        QCOMPARE(m_window->lastArchive(), out);
        QVERIFY(QFile::exists(out));
        QVERIFY2(dialog->lastProgress().startsWith("group "), qPrintable(dialog->lastProgress()));
        QCOMPARE(dialog->progressBar()->value(), dialog->progressBar()->maximum());
        dialog->close();
    }

    void badInputKeepsTheOpenModel()
    {
        const QString before = m_wb->summary().path;
        const std::vector<std::uint8_t> bytes = testsupport::readBytes(testsupport::demoModel());
        const QString truncated = m_tmp.filePath("truncated.bin");
        testsupport::writeBytes(truncated.toStdString(), bytes.data(), bytes.size() / 3);
        QVERIFY(!m_window->openPath(truncated, true));
        QVERIFY2(m_window->lastError().contains("truncated.bin"), qPrintable(m_window->lastError()));
        QCOMPARE(m_wb->summary().path, before);
        // An archive cannot be compressed again: refused with a message, nothing starts.
        QVERIFY(m_window->openPath(m_archive, true));
        QVERIFY(!m_window->startCompress(false));
        QVERIFY(!m_wb->busy());
    }

    void cleanupTestCase()
    {
        m_window->close();
        m_window.reset();
        m_wb.reset();
    }
};

QTEST_MAIN(TestGui)
#include "test_gui.moc"

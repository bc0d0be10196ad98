#include "job_queue.h"

#include <QFile>
#include <QHBoxLayout>
#include <QLabel>
#include <QListWidget>
#include <QPushButton>
#include <QVBoxLayout>

namespace pocket::ui {

QString JobQueue::stateName(Item::State state)
{
    switch (state) {
    case Item::State::Waiting: return tr("waiting");
    case Item::State::Compressing: return tr("compressing…");
    case Item::State::Evaluating: return tr("evaluating…");
    case Item::State::Done: return tr("done");
    case Item::State::Failed: return tr("failed");
    case Item::State::Cancelled: return tr("cancelled");
    }
    return {};
}

JobQueue::JobQueue(Workbench* workbench, QWidget* parent) : QWidget(parent), m_workbench(workbench)
{
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    auto* top = new QHBoxLayout;
    m_title = new QLabel(tr("Queue: empty"));
    m_cancelButton = new QPushButton(tr("Cancel queue"));
    m_cancelButton->setToolTip(tr("Stop the running job of the queue and drop the waiting ones"));
    m_cancelButton->setEnabled(false);
    top->addWidget(m_title, 1);
    top->addWidget(m_cancelButton);
    layout->addLayout(top);
    m_list = new QListWidget;
    m_list->setMaximumHeight(110);
    layout->addWidget(m_list);
    m_retry.setInterval(500);
    connect(&m_retry, &QTimer::timeout, this, &JobQueue::startNext);
    connect(m_cancelButton, &QPushButton::clicked, this, &JobQueue::cancel);
    connect(m_workbench, &Workbench::compressFinished, this, &JobQueue::onCompressFinished);
    connect(m_workbench, &Workbench::evalFinished, this, &JobQueue::onEvalFinished);
}

int JobQueue::waiting() const
{
    int n = 0;
    for (const Item& i : m_items)
        n += i.state == Item::State::Waiting;
    return n;
}

bool JobQueue::owns(const QString& archivePath) const
{
    for (const Item& i : m_items)
        if (!i.becomesLastArchive && QString::fromStdString(i.compress.outPath) == archivePath)
            return true;
    return false;
}

bool JobQueue::isPending(const std::string& outPath) const
{
    for (int i = 0; i < m_items.size(); ++i)
        if (m_items[i].compress.outPath == outPath && (m_items[i].state == Item::State::Waiting || i == m_current))
            return true;
    return false;
}

void JobQueue::enqueue(const QVector<Item>& items)
{
    for (const Item& item : items) {
        m_items.push_back(item);
        m_items.back().state = Item::State::Waiting;
        m_list->addItem(QString());
        refreshRow(m_items.size() - 1);
    }
    if (m_current < 0)
        startNext();
}

void JobQueue::refreshRow(int index)
{
    const Item& i = m_items[index];
    QString text = QStringLiteral("%1 — %2").arg(i.label, stateName(i.state));
    if (i.state == Item::State::Done && i.evaluate)
        text += tr(": %1 bpw, perplexity %2").arg(i.bpw, 0, 'f', 3).arg(i.perplexity, 0, 'f', 3);
    else if (i.state == Item::State::Done)
        text += tr(": %1 bpw").arg(i.bpw, 0, 'f', 3);
    else if (i.state == Item::State::Failed)
        text += QStringLiteral(": ") + i.message;
    m_list->item(index)->setText(text);
    m_list->item(index)->setToolTip(i.message);
    const int left = waiting() + (m_current >= 0 ? 1 : 0);
    m_title->setText(left > 0 ? tr("Queue: %1 of %2 left").arg(left).arg(m_items.size()) : tr("Queue: %1 finished").arg(m_items.size()));
    m_cancelButton->setEnabled(left > 0);
}

void JobQueue::startNext()
{
    if (m_current >= 0)
        return;
    int next = -1;
    for (int i = 0; i < m_items.size() && next < 0; ++i)
        if (m_items[i].state == Item::State::Waiting)
            next = i;
    if (next < 0) {
        m_retry.stop();
        Q_EMIT drained();
        return;
    }
    if (m_workbench->busy()) { // the user's own job: wait for it
        m_retry.start();
        return;
    }
    m_retry.stop();
    Item& item = m_items[next];
    // A queued job is rerun, not resumed: the archive and any interrupted run of it go.
    QFile::remove(QString::fromStdString(item.compress.outPath));
    QString error;
    if (Workbench::hasWorkFolder(QString::fromStdString(item.compress.outPath)))
        Workbench::discardWorkFolder(QString::fromStdString(item.compress.outPath), &error);
    m_current = next;
    item.state = Item::State::Compressing;
    refreshRow(next);
    if (!m_workbench->startCompress(item.compress, &error))
        finishCurrent(Item::State::Failed, error);
}

void JobQueue::finishCurrent(Item::State state, const QString& message)
{
    const int index = m_current;
    m_items[index].state = state;
    m_items[index].message = message;
    m_current = -1;
    refreshRow(index);
    Q_EMIT itemFinished(index);
    // The finished signal is still being delivered: start the next job once it has been.
    QTimer::singleShot(0, this, &JobQueue::startNext);
}

void JobQueue::onCompressFinished(const CompressOutcome& o)
{
    // While an item compresses, the workbench runs nothing else (one job at a time; the queue starts
    // only when it is idle): this outcome is the item's, whether or not it got to name its archive.
    if (m_current < 0 || m_items[m_current].state != Item::State::Compressing)
        return;
    Item& item = m_items[m_current];
    if (!o.ok) {
        finishCurrent(o.cancelled ? Item::State::Cancelled : Item::State::Failed, o.message);
        return;
    }
    item.bpw = o.bpwCompressed;
    if (!item.evaluate) {
        finishCurrent(Item::State::Done, o.message);
        return;
    }
    item.state = Item::State::Evaluating;
    refreshRow(m_current);
    item.eval.modelPath = item.compress.outPath;
    // Start after the finished signal has reached everyone (the workbench is idle by then).
    QTimer::singleShot(0, this, [this] {
        if (m_current < 0)
            return;
        QString error;
        if (!m_workbench->startEval(m_items[m_current].eval, &error))
            finishCurrent(Item::State::Failed, error);
    });
}

void JobQueue::onEvalFinished(const EvalOutcome& o)
{
    if (m_current < 0 || m_items[m_current].state != Item::State::Evaluating)
        return;
    if (!o.ok) {
        finishCurrent(o.cancelled ? Item::State::Cancelled : Item::State::Failed, o.message);
        return;
    }
    m_items[m_current].perplexity = o.perplexity;
    finishCurrent(Item::State::Done, o.message);
}

void JobQueue::cancel()
{
    for (int i = 0; i < m_items.size(); ++i)
        if (m_items[i].state == Item::State::Waiting) {
            m_items[i].state = Item::State::Cancelled;
            refreshRow(i);
        }
    m_retry.stop();
    if (m_current >= 0 && !m_workbench->busy()) // between its compression and its evaluation
        finishCurrent(Item::State::Cancelled, tr("cancelled"));
    else if (m_current >= 0)
        m_workbench->cancel(); // its finished signal marks it cancelled
}

} // namespace pocket::ui

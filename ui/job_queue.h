// A queue of compress-then-evaluate jobs run one after another on the Workbench: the Compare tab's
// "Run baselines" and the guided demo's three sizes. It shows each item with its state; Cancel
// stops the running job and drops the waiting ones. When another job is running (the user's own),
// the queue waits for it. GUI thread only.
#pragma once

#include "workbench.h"

#include <QTimer>
#include <QVector>
#include <QWidget>

class QLabel;
class QListWidget;
class QPushButton;

namespace pocket::ui {

class JobQueue : public QWidget {
    Q_OBJECT
public:
    struct Item {
        enum class State { Waiting, Compressing, Evaluating, Done, Failed, Cancelled };
        QString label;                      // "RTN bits=3 group=128 (3.25 bpw)"
        pocket::CompressJobParams compress; // outPath set
        bool evaluate = true;               // then score the archive (eval.modelPath = compress.outPath)
        bool becomesLastArchive = false;    // false: a baseline, which leaves the user's last archive alone
        pocket::EvalJobParams eval;
        State state = State::Waiting;
        QString message;                    // the outcome's message
        double bpw = 0;                     // the archive's bits per weight (compressed matrices), when done
        double perplexity = 0;              // when evaluated
    };

    explicit JobQueue(Workbench* workbench, QWidget* parent = nullptr);

    // Appends items; the queue starts (or continues) at once.
    void enqueue(const QVector<Item>& items);
    // Stops the running item (it is marked cancelled) and drops the waiting ones.
    void cancel();
    bool running() const { return m_current >= 0; }
    int waiting() const;
    const QVector<Item>& items() const { return m_items; }
    // Whether `archivePath` is a baseline written by the queue (the main window leaves its last archive alone).
    bool owns(const QString& archivePath) const;
    // Whether an item writing `outPath` is waiting or running.
    bool isPending(const std::string& outPath) const;
    QListWidget* list() const { return m_list; }
    QPushButton* cancelButton() const { return m_cancelButton; }
    static QString stateName(Item::State state);

Q_SIGNALS:
    void itemFinished(int index);
    // Nothing is left to run.
    void drained();

private:
    void startNext();
    void onCompressFinished(const CompressOutcome& outcome);
    void onEvalFinished(const EvalOutcome& outcome);
    void finishCurrent(Item::State state, const QString& message);
    void refreshRow(int index);

    Workbench* m_workbench;
    QVector<Item> m_items;
    int m_current = -1; // the running item, -1 when none
    QLabel* m_title = nullptr;
    QListWidget* m_list = nullptr;
    QPushButton* m_cancelButton = nullptr;
    QTimer m_retry; // polls while another job holds the workbench
};

} // namespace pocket::ui

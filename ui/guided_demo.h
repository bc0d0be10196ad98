// Help ▸ Guided demo: a step-by-step walk through the workbench on the bundled model, for a
// classroom. Each step does what it names (opens the model, queues three compressions, shows a
// tab) and explains in two sentences what is on screen. Back, Next and Leave at every step; the
// window is not modal, so the workbench stays usable. GUI thread only.
#pragma once

#include <QDialog>
#include <QString>
#include <QVector>

#include <functional>

class QLabel;
class QPushButton;

namespace pocket::ui {

class GuidedDemo : public QDialog {
    Q_OBJECT
public:
    struct Step {
        QString title;
        QString text;                 // two sentences
        std::function<void()> enter;  // what the step does on screen
    };

    explicit GuidedDemo(QVector<Step> steps, QWidget* parent = nullptr);

    int step() const { return m_step; }
    int stepCount() const { return m_steps.size(); }
    const Step& current() const { return m_steps[m_step]; }
    // Goes to step `index` (runs its action). False when out of range.
    bool goTo(int index);
    bool next() { return goTo(m_step + 1); }
    bool back() { return goTo(m_step - 1); }
    QPushButton* nextButton() const { return m_next; }
    QPushButton* backButton() const { return m_back; }
    QPushButton* leaveButton() const { return m_leave; }
    QLabel* textLabel() const { return m_text; }

Q_SIGNALS:
    void stepChanged(int step);

private:
    QVector<Step> m_steps;
    int m_step = -1;
    QLabel* m_counter = nullptr;
    QLabel* m_title = nullptr;
    QLabel* m_text = nullptr;
    QPushButton* m_back = nullptr;
    QPushButton* m_next = nullptr;
    QPushButton* m_leave = nullptr;
};

} // namespace pocket::ui

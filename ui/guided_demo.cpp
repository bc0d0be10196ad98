#include "guided_demo.h"

#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QVBoxLayout>

namespace pocket::ui {

GuidedDemo::GuidedDemo(QVector<Step> steps, QWidget* parent) : QDialog(parent), m_steps(std::move(steps))
{
    setWindowTitle(tr("Guided demo"));
    setModal(false);
    setAttribute(Qt::WA_DeleteOnClose, false);
    auto* layout = new QVBoxLayout(this);
    m_counter = new QLabel;
    m_title = new QLabel;
    QFont big = m_title->font();
    big.setPointSizeF(big.pointSizeF() * 1.3);
    big.setBold(true);
    m_title->setFont(big);
    m_text = new QLabel;
    m_text->setWordWrap(true);
    m_text->setMinimumWidth(420);
    m_text->setMinimumHeight(90);
    m_text->setAlignment(Qt::AlignTop | Qt::AlignLeft);
    layout->addWidget(m_counter);
    layout->addWidget(m_title);
    layout->addWidget(m_text, 1);
    auto* buttons = new QHBoxLayout;
    m_back = new QPushButton(tr("Back"));
    m_next = new QPushButton(tr("Next"));
    m_leave = new QPushButton(tr("Leave the demo"));
    buttons->addWidget(m_leave);
    buttons->addStretch(1);
    buttons->addWidget(m_back);
    buttons->addWidget(m_next);
    layout->addLayout(buttons);
    connect(m_back, &QPushButton::clicked, this, [this] { back(); });
    connect(m_next, &QPushButton::clicked, this, [this] {
        if (!next())
            close(); // "Finish" on the last step
    });
    connect(m_leave, &QPushButton::clicked, this, &QDialog::close);
    goTo(0);
}

bool GuidedDemo::goTo(int index)
{
    if (index < 0 || index >= m_steps.size())
        return false;
    m_step = index;
    const Step& s = m_steps[index];
    m_counter->setText(tr("Step %1 of %2").arg(index + 1).arg(m_steps.size()));
    m_title->setText(s.title);
    m_text->setText(s.text);
    m_back->setEnabled(index > 0);
    m_next->setText(index + 1 < m_steps.size() ? tr("Next") : tr("Finish"));
    if (s.enter)
        s.enter();
    Q_EMIT stepChanged(index);
    return true;
}

} // namespace pocket::ui

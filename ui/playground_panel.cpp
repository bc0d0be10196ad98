#include "playground_panel.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHelpEvent>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QTextBrowser>
#include <QToolTip>
#include <QVBoxLayout>

#include <algorithm>

namespace pocket::ui {

namespace {
constexpr int kTokenProperty = QTextFormat::UserProperty + 1; // compressed token index + 1
}

PlaygroundPanel::PlaygroundPanel(Workbench* workbench, QWidget* parent) : QWidget(parent), m_workbench(workbench)
{
    auto* form = new QGridLayout;
    m_compressed = new QLineEdit;
    m_compressed->setPlaceholderText(tr("a .pllm archive, a GGUF or a model folder"));
    auto* browse = new QPushButton(tr("Browse…"));
    m_prompt = new QLineEdit(QStringLiteral("Once upon a time"));
    m_maxTokens = new QSpinBox;
    m_maxTokens->setRange(1, 4096);
    m_maxTokens->setValue(64);
    m_greedy = new QCheckBox(tr("Greedy"));
    m_greedy->setChecked(true);
    m_greedy->setToolTip(tr("Always the most likely token: the first divergence from the original is marked"));
    m_temperature = new QDoubleSpinBox;
    m_temperature->setRange(0.05, 5.0);
    m_temperature->setSingleStep(0.1);
    m_temperature->setValue(0.8);
    m_seed = new QSpinBox;
    m_seed->setRange(0, 1 << 30);
    m_tint = new QComboBox;
    m_tint->addItems({tr("Tint: the original's probability"), tr("Tint: KL divergence")});
    m_budget = new QLineEdit;
    m_budget->setPlaceholderText(tr("all decoded"));
    m_budget->setToolTip(tr("Memory budget of the compressed model's weights in MiB, or auto (archives only)"));
    m_run = new QPushButton(tr("Run"));
    m_stop = new QPushButton(tr("Stop"));
    m_stop->setEnabled(false);
    form->addWidget(new QLabel(tr("Compressed")), 0, 0);
    form->addWidget(m_compressed, 0, 1, 1, 6);
    form->addWidget(browse, 0, 7);
    form->addWidget(new QLabel(tr("Prompt")), 1, 0);
    form->addWidget(m_prompt, 1, 1, 1, 7);
    auto* options = new QHBoxLayout;
    options->addWidget(new QLabel(tr("Tokens")));
    options->addWidget(m_maxTokens);
    options->addWidget(m_greedy);
    options->addWidget(new QLabel(tr("Temperature")));
    options->addWidget(m_temperature);
    options->addWidget(new QLabel(tr("Seed")));
    options->addWidget(m_seed);
    options->addWidget(new QLabel(tr("Budget MiB")));
    options->addWidget(m_budget);
    options->addWidget(m_tint);
    options->addStretch(1);
    options->addWidget(m_run);
    options->addWidget(m_stop);
    form->addLayout(options, 2, 0, 1, 8);

    auto* splitter = new QSplitter(Qt::Horizontal);
    const auto column = [&](const QString& title, QTextBrowser*& view) {
        auto* box = new QWidget;
        auto* v = new QVBoxLayout(box);
        v->setContentsMargins(0, 0, 0, 0);
        v->addWidget(new QLabel(QStringLiteral("<b>%1</b>").arg(title)));
        view = new QTextBrowser;
        view->setOpenLinks(false);
        QFont f = view->font();
        f.setPointSizeF(f.pointSizeF() * 1.15);
        view->setFont(f);
        v->addWidget(view);
        splitter->addWidget(box);
    };
    column(tr("Original"), m_originalView);
    column(tr("Compressed (tinted by how the original sees each token; hover for its top choices)"), m_compressedView);
    m_compressedView->viewport()->installEventFilter(this);
    m_status = new QLabel;
    m_status->setWordWrap(true);

    auto* layout = new QVBoxLayout(this);
    layout->addLayout(form);
    layout->addWidget(splitter, 1);
    layout->addWidget(m_status);

    connect(browse, &QPushButton::clicked, this, [this] {
        const QString path = QFileDialog::getOpenFileName(this, tr("Compressed model"), QString(),
                                                          tr("Archives and models (*.pllm *.gguf *.bin *.safetensors);;All files (*)"));
        if (!path.isEmpty())
            m_compressed->setText(path);
    });
    connect(m_greedy, &QCheckBox::toggled, m_temperature, [this](bool greedy) { m_temperature->setEnabled(!greedy); });
    m_temperature->setEnabled(false);
    connect(m_run, &QPushButton::clicked, this, [this] {
        QString error;
        if (!start(&error))
            m_status->setText(QStringLiteral("<span style='color:#b00020'>%1</span>").arg(error.toHtmlEscaped()));
    });
    connect(m_stop, &QPushButton::clicked, m_workbench, &Workbench::cancel);
    connect(m_tint, qOverload<int>(&QComboBox::currentIndexChanged), this, [this] { retint(); });
    connect(m_workbench, &Workbench::playgroundTokens, this, &PlaygroundPanel::addTokens);
    connect(m_workbench, &Workbench::playgroundFinished, this, &PlaygroundPanel::onFinished);
    connect(m_workbench, &Workbench::jobProgress, this, [this](const JobStatus& st) {
        if (st.kind == JobStatus::Kind::Playground)
            m_status->setText(st.text);
    });
}

void PlaygroundPanel::setCompressedPath(const QString& path) { m_compressed->setText(path); }

bool PlaygroundPanel::start(QString* error)
{
    if (!m_workbench->hasModel()) {
        *error = tr("Open the original model first (File ▸ Open).");
        return false;
    }
    PlaygroundRequest request;
    request.originalPath = m_workbench->summary().path.toStdString();
    request.compressedPath = m_compressed->text().trimmed().toStdString();
    request.prompt = m_prompt->text().toStdString();
    request.generate.maxTokens = m_maxTokens->value();
    request.generate.sampling.greedy = m_greedy->isChecked();
    request.generate.sampling.temperature = static_cast<float>(m_temperature->value());
    request.generate.sampling.seed = static_cast<std::uint64_t>(m_seed->value());
    request.generate.overflow = ContextOverflow::Refuse; // the original judges the same positions
    if (!m_budget->text().trimmed().isEmpty()) {
        const auto budget = parseMemoryBudget(m_budget->text().trimmed().toStdString());
        if (!budget) {
            *error = tr("The budget is a number of MiB or auto (%1 is neither).").arg(m_budget->text());
            return false;
        }
        request.compressedRun.memoryBudget = *budget;
    }
    if (!m_workbench->startPlayground(request, error))
        return false;
    m_tokens.clear();
    for (QTextBrowser* view : {m_originalView, m_compressedView}) {
        view->clear();
        QTextCursor(view->document()).insertText(m_prompt->text(), QTextCharFormat()); // the prompt, untinted
    }
    m_run->setEnabled(false);
    m_stop->setEnabled(true);
    return true;
}

QColor PlaygroundPanel::tintOf(const PlaygroundToken& t) const
{
    // Green where the original agrees, red where it would not have said this.
    const double good = m_tint->currentIndex() == 0 ? std::clamp(static_cast<double>(t.agreement.referenceProbability) * 2.0, 0.0, 1.0)
                                                    : 1.0 - std::clamp(t.agreement.klDivergence / 2.0, 0.0, 1.0);
    return QColor::fromHsvF(good / 3.0, 0.45, 1.0);
}

void PlaygroundPanel::appendCompressed(int index)
{
    const PlaygroundToken& t = m_tokens[static_cast<std::size_t>(index)];
    QTextCharFormat format;
    format.setBackground(tintOf(t));
    format.setProperty(kTokenProperty, index + 1);
    if (t.firstDivergence) {
        format.setFontUnderline(true);
        format.setUnderlineColor(QColor(0xb0, 0x00, 0x20));
        format.setFontWeight(QFont::Bold);
    }
    QTextCursor cursor(m_compressedView->document());
    cursor.movePosition(QTextCursor::End);
    cursor.insertText(QString::fromStdString(t.text), format);
}

void PlaygroundPanel::addTokens(const QVector<PlaygroundToken>& tokens)
{
    for (const PlaygroundToken& t : tokens) {
        if (t.side == PlaygroundToken::Side::Original) {
            QTextCursor cursor(m_originalView->document());
            cursor.movePosition(QTextCursor::End);
            cursor.insertText(QString::fromStdString(t.text), QTextCharFormat());
            continue;
        }
        m_tokens.push_back(t);
        appendCompressed(static_cast<int>(m_tokens.size()) - 1);
    }
}

void PlaygroundPanel::retint()
{
    m_compressedView->clear();
    QTextCursor(m_compressedView->document()).insertText(m_prompt->text(), QTextCharFormat());
    for (int i = 0; i < static_cast<int>(m_tokens.size()); ++i)
        appendCompressed(i);
}

void PlaygroundPanel::onFinished(const PlaygroundOutcome& outcome)
{
    m_run->setEnabled(true);
    m_stop->setEnabled(false);
    if (outcome.ok || outcome.cancelled)
        m_status->setText(outcome.message.toHtmlEscaped());
    else
        m_status->setText(QStringLiteral("<span style='color:#b00020'>%1</span>").arg(outcome.message.toHtmlEscaped()));
}

QString PlaygroundPanel::tooltipFor(int index) const
{
    if (index < 0 || index >= static_cast<int>(m_tokens.size()))
        return {};
    const PlaygroundToken& t = m_tokens[static_cast<std::size_t>(index)];
    QString tip = tr("<b>%1</b> (token %2)<br>original's probability %3%, compressed %4%<br>KL divergence %5 nats")
                      .arg(QString::fromStdString(t.piece).toHtmlEscaped())
                      .arg(t.index + 1)
                      .arg(100.0 * t.agreement.referenceProbability, 0, 'f', 1)
                      .arg(100.0 * t.probability, 0, 'f', 1)
                      .arg(t.agreement.klDivergence, 0, 'f', 3);
    if (t.firstDivergence)
        tip += tr("<br><b>first token where the compressed text differs</b>");
    tip += tr("<br>The original's top choices:");
    for (const auto& [piece, p] : t.originalTop)
        tip += QStringLiteral("<br>&nbsp;&nbsp;%1 %2%").arg(QString::fromStdString(piece).toHtmlEscaped()).arg(100.0 * p, 0, 'f', 1);
    return tip;
}

bool PlaygroundPanel::eventFilter(QObject* watched, QEvent* event)
{
    if (watched == m_compressedView->viewport() && event->type() == QEvent::ToolTip) {
        auto* help = static_cast<QHelpEvent*>(event);
        QTextCursor cursor = m_compressedView->cursorForPosition(help->pos());
        cursor.movePosition(QTextCursor::NextCharacter);
        const int index = cursor.charFormat().property(kTokenProperty).toInt() - 1;
        if (index >= 0)
            QToolTip::showText(help->globalPos(), tooltipFor(index), m_compressedView);
        else
            QToolTip::hideText();
        return true;
    }
    return QWidget::eventFilter(watched, event);
}

} // namespace pocket::ui

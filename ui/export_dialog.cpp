#include "export_dialog.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDialogButtonBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QTableWidget>
#include <QVBoxLayout>

#include <map>

namespace pocket::ui {

namespace {

void addTypes(QComboBox* box)
{
    box->addItem(QStringLiteral("F16"), static_cast<int>(GgmlType::F16));
    box->addItem(QStringLiteral("BF16"), static_cast<int>(GgmlType::BF16));
    box->addItem(QStringLiteral("Q8_0"), static_cast<int>(GgmlType::Q8_0));
    box->addItem(QStringLiteral("F32"), static_cast<int>(GgmlType::F32));
}

} // namespace

ExportGgufDialog::ExportGgufDialog(const QString& source, const QString& suggestedOut, const MethodRegistry& registry, QWidget* parent)
    : QDialog(parent), m_source(source), m_registry(registry)
{
    setWindowTitle(tr("Export GGUF for llama.cpp"));
    auto* form = new QFormLayout;
    m_fallback = new QComboBox(this);
    addTypes(m_fallback);
    m_fallback->setToolTip(tr("The type of matrices that have no exact ggml block type: they are decoded and re-stored"));
    m_embedding = new QComboBox(this);
    addTypes(m_embedding);
    m_exact = new QCheckBox(tr("Copy rtn/gptq 4- and 5-bit codes into Q4_1/Q5_1 blocks where they fit"), this);
    m_exact->setChecked(true);
    m_out = new QLineEdit(suggestedOut, this);
    auto* browse = new QPushButton(tr("Browse…"), this);
    auto* outRow = new QHBoxLayout;
    outRow->addWidget(m_out);
    outRow->addWidget(browse);
    form->addRow(tr("Source"), new QLabel(source, this));
    form->addRow(tr("Decoded matrices"), m_fallback);
    form->addRow(tr("Embedding and head"), m_embedding);
    form->addRow(QString(), m_exact);
    form->addRow(tr("Write to"), outRow);
    m_preview = new QTableWidget(0, 4, this);
    m_preview->setHorizontalHeaderLabels({tr("Tensor"), tr("Becomes"), tr("How"), tr("Why")});
    m_preview->horizontalHeader()->setStretchLastSection(true);
    m_preview->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_summary = new QLabel(this);
    m_summary->setWordWrap(true);
    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, this);
    buttons->button(QDialogButtonBox::Ok)->setText(tr("Export"));
    auto* layout = new QVBoxLayout(this);
    layout->addLayout(form);
    layout->addWidget(m_preview, 1);
    layout->addWidget(m_summary);
    layout->addWidget(buttons);
    resize(820, 560);
    connect(browse, &QPushButton::clicked, this, [this] {
        const QString f = QFileDialog::getSaveFileName(this, tr("GGUF file to write"), m_out->text(), tr("GGUF files (*.gguf)"));
        if (!f.isEmpty())
            m_out->setText(f);
    });
    connect(buttons, &QDialogButtonBox::accepted, this, &QDialog::accept);
    connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
    for (QComboBox* box : {m_fallback, m_embedding})
        connect(box, &QComboBox::currentIndexChanged, this, &ExportGgufDialog::refresh);
    connect(m_exact, &QCheckBox::toggled, this, &ExportGgufDialog::refresh);
    m_ok = buttons->button(QDialogButtonBox::Ok);
    connect(m_out, &QLineEdit::textChanged, this, [this] { m_ok->setEnabled(m_writable && !m_out->text().isEmpty()); });
    refresh();
}

ArchiveGgufOptions ExportGgufDialog::options() const
{
    ArchiveGgufOptions o;
    o.fallback = static_cast<GgmlType>(m_fallback->currentData().toInt());
    o.embedding = static_cast<GgmlType>(m_embedding->currentData().toInt());
    o.exact = m_exact->isChecked();
    return o;
}

QString ExportGgufDialog::outputPath() const { return m_out->text(); }

void ExportGgufDialog::refresh()
{
    auto plan = planGgufExport(m_source.toStdString(), m_registry, options());
    m_preview->setRowCount(0);
    if (!plan) {
        m_writable = false;
        m_ok->setEnabled(false);
        m_summary->setText(QString::fromStdString(plan.message()));
        return;
    }
    std::map<QString, std::int64_t> weightsByType;
    int exact = 0, decoded = 0, refused = 0;
    for (const ArchiveGgufTensor& t : *plan) {
        const int row = m_preview->rowCount();
        m_preview->insertRow(row);
        m_preview->setItem(row, 0, new QTableWidgetItem(QString::fromStdString(t.name)));
        m_preview->setItem(row, 1, new QTableWidgetItem(QString::fromStdString(t.type)));
        m_preview->setItem(row, 2, new QTableWidgetItem(QString::fromStdString(t.how)));
        m_preview->setItem(row, 3, new QTableWidgetItem(QString::fromStdString(t.reason)));
        weightsByType[QString::fromStdString(t.type)] += t.weights;
        exact += t.how == "exact";
        decoded += t.how == "decoded";
        refused += t.how == "refused";
    }
    m_preview->resizeColumnsToContents();
    m_writable = refused == 0;
    m_ok->setEnabled(m_writable && !m_out->text().isEmpty());
    QStringList types;
    for (const auto& [type, n] : weightsByType)
        types << tr("%1 %2 weights").arg(type).arg(n);
    m_summary->setText(refused ? tr("%1 tensor(s) cannot be written with these types (see Why); choose F16, BF16 or F32 for them.").arg(refused)
                               : tr("%1 matrices copied exactly, %2 decoded. %3.").arg(exact).arg(decoded).arg(types.join(QStringLiteral(", "))));
}

} // namespace pocket::ui

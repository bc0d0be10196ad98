#include "layer_picker.h"

#include "pocket/io/dtype.h"

#include <QComboBox>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QTreeWidget>
#include <QVBoxLayout>

namespace pocket::ui {

namespace {
constexpr int kNameRole = Qt::UserRole;
constexpr int kWeightsRole = Qt::UserRole + 1;
} // namespace

LayerPicker::LayerPicker(QWidget* parent) : QWidget(parent)
{
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);

    auto* presetRow = new QHBoxLayout;
    presetRow->addWidget(new QLabel(tr("Preset:")));
    m_preset = new QComboBox;
    m_preset->addItem(tr("Custom"), QString());
    m_preset->addItem(tr("All matrices"), QStringLiteral("all"));
    m_preset->addItem(tr("Reference (skip first 3, last 2 blocks)"), QStringLiteral("reference"));
    m_preset->addItem(tr("None"), QStringLiteral("none"));
    m_preset->setToolTip(tr("The reference code of PocketLLM leaves the first three and the last two blocks uncompressed."));
    presetRow->addWidget(m_preset, 1);
    layout->addLayout(presetRow);

    auto* rules = new QFormLayout;
    m_blocks = new QLineEdit;
    m_blocks->setPlaceholderText(tr("all blocks, or e.g. 0-2,5,10-"));
    m_types = new QLineEdit;
    m_types->setPlaceholderText(tr("all types, or e.g. q,k,v / attn / mlp / down_proj"));
    m_include = new QLineEdit;
    m_include->setPlaceholderText(tr("regular expression the name must contain"));
    m_exclude = new QLineEdit;
    m_exclude->setPlaceholderText(tr("regular expression that excludes"));
    rules->addRow(tr("Blocks:"), m_blocks);
    rules->addRow(tr("Types:"), m_types);
    rules->addRow(tr("Include:"), m_include);
    rules->addRow(tr("Exclude:"), m_exclude);
    layout->addLayout(rules);
    auto* ruleButtons = new QHBoxLayout;
    auto* apply = new QPushButton(tr("Select by rule"));
    apply->setToolTip(tr("Check exactly the matrices that match blocks, types and patterns (same meaning as the CLI's --blocks, --types, --include, --exclude)"));
    auto* all = new QPushButton(tr("All"));
    auto* none = new QPushButton(tr("None"));
    ruleButtons->addWidget(apply, 1);
    ruleButtons->addWidget(all);
    ruleButtons->addWidget(none);
    layout->addLayout(ruleButtons);
    m_ruleError = new QLabel;
    m_ruleError->setStyleSheet(QStringLiteral("color: #b00020"));
    m_ruleError->setWordWrap(true);
    m_ruleError->hide();
    layout->addWidget(m_ruleError);

    m_tree = new QTreeWidget;
    m_tree->setColumnCount(3);
    m_tree->setHeaderLabels({tr("Matrix"), tr("Shape"), tr("Parameters")});
    m_tree->header()->setSectionResizeMode(0, QHeaderView::Stretch);
    m_tree->setUniformRowHeights(true);
    m_tree->setAlternatingRowColors(true);
    layout->addWidget(m_tree, 1);
    m_summary = new QLabel;
    layout->addWidget(m_summary);

    connect(apply, &QPushButton::clicked, this, [this] {
        m_preset->setCurrentIndex(0);
        applyRuleFromFields();
    });
    for (QLineEdit* edit : {m_blocks, m_types, m_include, m_exclude})
        connect(edit, &QLineEdit::returnPressed, apply, &QPushButton::click);
    connect(all, &QPushButton::clicked, this, [this] { applySelection({}, nullptr); });
    connect(none, &QPushButton::clicked, this, [this] { setCheckedNames({}); });
    connect(m_preset, &QComboBox::activated, this, [this](int index) {
        const QString name = m_preset->itemData(index).toString();
        if (name.isEmpty())
            return;
        if (name == QLatin1String("none")) {
            setCheckedNames({});
            return;
        }
        auto preset = pocket::LayerSelection::preset(name.toStdString());
        if (preset)
            applySelection(*preset, nullptr);
    });
    connect(m_tree, &QTreeWidget::itemChanged, this, [this](QTreeWidgetItem*, int column) {
        if (m_updating || column != 0)
            return;
        updateSummary();
        Q_EMIT selectionChanged();
    });
}

void LayerPicker::setModel(const pocket::Checkpoint* checkpoint)
{
    m_checkpoint = checkpoint;
    m_updating = true;
    m_tree->clear();
    if (checkpoint) {
        const ModelConfig& config = checkpoint->config();
        for (int layer = 0; layer < config.numLayers; ++layer) {
            auto* block = new QTreeWidgetItem(m_tree);
            block->setText(0, tr("Block %1").arg(layer));
            block->setFlags(block->flags() | Qt::ItemIsUserCheckable | Qt::ItemIsAutoTristate);
            qint64 blockWeights = 0;
            for (const MatrixType type : kMatrixTypes) {
                const std::string name = matrixTensorName(layer, type);
                const TensorInfo* info = checkpoint->find(name);
                if (!info || info->shape.size() != 2)
                    continue;
                auto* item = new QTreeWidgetItem(block);
                item->setText(0, QString::fromLatin1(matrixTypeName(type)));
                item->setToolTip(0, QString::fromStdString(name));
                item->setText(1, QStringLiteral("%1 × %2").arg(info->shape[0]).arg(info->shape[1]));
                const qint64 weights = elementCount(info->shape);
                item->setText(2, QLocale().toString(weights));
                item->setData(0, kNameRole, QString::fromStdString(name));
                item->setData(0, kWeightsRole, weights);
                item->setFlags(item->flags() | Qt::ItemIsUserCheckable);
                item->setCheckState(0, Qt::Checked);
                blockWeights += weights;
            }
            block->setText(2, QLocale().toString(blockWeights));
        }
        m_tree->expandToDepth(0);
        if (config.numLayers > 4)
            for (int i = 2; i < m_tree->topLevelItemCount(); ++i)
                m_tree->topLevelItem(i)->setExpanded(false);
    }
    m_updating = false;
    m_preset->setCurrentIndex(1);
    updateSummary();
    Q_EMIT selectionChanged();
}

QStringList LayerPicker::checkedNames() const
{
    QStringList names;
    for (int b = 0; b < m_tree->topLevelItemCount(); ++b) {
        const QTreeWidgetItem* block = m_tree->topLevelItem(b);
        for (int i = 0; i < block->childCount(); ++i)
            if (block->child(i)->checkState(0) == Qt::Checked)
                names << block->child(i)->data(0, kNameRole).toString();
    }
    return names;
}

int LayerPicker::matrixCount() const
{
    int count = 0;
    for (int b = 0; b < m_tree->topLevelItemCount(); ++b)
        count += m_tree->topLevelItem(b)->childCount();
    return count;
}

pocket::LayerSelection LayerPicker::selection() const
{
    pocket::LayerSelection s;
    const QStringList names = checkedNames();
    if (names.size() == matrixCount())
        return s;
    for (const QString& n : names)
        s.names.push_back(n.toStdString());
    if (s.names.empty())
        s.include = "^$"; // nothing: an explicit selection that matches no matrix
    return s;
}

bool LayerPicker::applySelection(const pocket::LayerSelection& rule, QString* error)
{
    if (!m_checkpoint)
        return false;
    auto names = rule.select(m_checkpoint->config());
    if (!names) {
        if (error)
            *error = QString::fromStdString(names.message());
        return false;
    }
    QStringList list;
    for (const std::string& n : *names)
        list << QString::fromStdString(n);
    setCheckedNames(list);
    return true;
}

void LayerPicker::applyRuleFromFields()
{
    pocket::LayerSelection rule;
    QString problem;
    if (!m_blocks->text().trimmed().isEmpty()) {
        auto blocks = pocket::LayerSelection::parseBlocks(m_blocks->text().trimmed().toStdString());
        if (!blocks)
            problem = QString::fromStdString(blocks.message());
        else
            rule.blocks = *blocks;
    }
    if (problem.isEmpty() && !m_types->text().trimmed().isEmpty()) {
        auto types = pocket::LayerSelection::parseTypes(m_types->text().trimmed().toStdString());
        if (!types)
            problem = QString::fromStdString(types.message());
        else
            rule.types = *types;
    }
    rule.include = m_include->text().toStdString();
    rule.exclude = m_exclude->text().toStdString();
    if (problem.isEmpty())
        applySelection(rule, &problem);
    m_ruleError->setText(problem);
    m_ruleError->setVisible(!problem.isEmpty());
}

void LayerPicker::setCheckedNames(const QStringList& names)
{
    m_updating = true;
    for (int b = 0; b < m_tree->topLevelItemCount(); ++b) {
        QTreeWidgetItem* block = m_tree->topLevelItem(b);
        for (int i = 0; i < block->childCount(); ++i) {
            QTreeWidgetItem* item = block->child(i);
            item->setCheckState(0, names.contains(item->data(0, kNameRole).toString()) ? Qt::Checked : Qt::Unchecked);
        }
    }
    m_updating = false;
    m_ruleError->hide();
    updateSummary();
    Q_EMIT selectionChanged();
}

void LayerPicker::focusMatrix(const QString& name)
{
    for (int b = 0; b < m_tree->topLevelItemCount(); ++b) {
        QTreeWidgetItem* block = m_tree->topLevelItem(b);
        for (int i = 0; i < block->childCount(); ++i)
            if (block->child(i)->data(0, kNameRole).toString() == name) {
                block->setExpanded(true);
                m_tree->setCurrentItem(block->child(i));
                m_tree->scrollToItem(block->child(i));
                return;
            }
    }
}

void LayerPicker::updateSummary()
{
    qint64 total = 0, picked = 0;
    int count = 0, pickedCount = 0;
    for (int b = 0; b < m_tree->topLevelItemCount(); ++b) {
        const QTreeWidgetItem* block = m_tree->topLevelItem(b);
        for (int i = 0; i < block->childCount(); ++i) {
            const qint64 w = block->child(i)->data(0, kWeightsRole).toLongLong();
            total += w;
            ++count;
            if (block->child(i)->checkState(0) == Qt::Checked) {
                picked += w;
                ++pickedCount;
            }
        }
    }
    m_summary->setText(tr("%1 of %2 matrices selected: %3 of %4 linear weights")
                           .arg(pickedCount)
                           .arg(count)
                           .arg(QLocale().toString(picked))
                           .arg(QLocale().toString(total)));
}

} // namespace pocket::ui

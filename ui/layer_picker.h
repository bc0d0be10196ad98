// The layer picker: a tree of blocks and their linear matrices (shape, parameters, checkbox),
// with selection by rule (preset, block ranges, matrix types, name pattern). The checked
// matrices are the selection; the rules use core's LayerSelection parsing, so they mean exactly
// what the CLI's --preset/--blocks/--types/--include mean. GUI thread only.
#pragma once

#include "pocket/io/checkpoint.h"
#include "pocket/methods/layer_selection.h"

#include <QStringList>
#include <QWidget>

class QComboBox;
class QLabel;
class QLineEdit;
class QTreeWidget;
class QTreeWidgetItem;

namespace pocket::ui {

class LayerPicker : public QWidget {
    Q_OBJECT
public:
    explicit LayerPicker(QWidget* parent = nullptr);

    // Shows the linear matrices of `checkpoint` (nullptr clears), all checked.
    void setModel(const pocket::Checkpoint* checkpoint);
    // The checked matrices' tensor names, in model order.
    QStringList checkedNames() const;
    // The job's selection: every matrix (when all are checked) or the exact checked names.
    pocket::LayerSelection selection() const;
    // Checks exactly the matrices `rule` selects. Returns false with `error` for a bad rule.
    bool applySelection(const pocket::LayerSelection& rule, QString* error);
    // Checks exactly `names` (unknown names are ignored).
    void setCheckedNames(const QStringList& names);
    // Scrolls to and highlights one matrix (e.g. chosen in a heatmap).
    void focusMatrix(const QString& name);
    int matrixCount() const;

Q_SIGNALS:
    void selectionChanged();

private:
    void applyRuleFromFields();
    void updateSummary();

    const pocket::Checkpoint* m_checkpoint = nullptr;
    QTreeWidget* m_tree;
    QComboBox* m_preset;
    QLineEdit* m_blocks;
    QLineEdit* m_types;
    QLineEdit* m_include;
    QLineEdit* m_exclude;
    QLabel* m_summary;
    QLabel* m_ruleError;
    bool m_updating = false;
};

} // namespace pocket::ui

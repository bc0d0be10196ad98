// File ▸ Export GGUF: the choices of `pocketllm-cli export --format gguf` (fallback and embedding
// types, exact re-encoding), a preview of what each tensor becomes (planGgufExport), and the file.
#pragma once

#include "pocket/archive/archive_gguf.h"
#include "pocket/methods/method_registry.h"

#include <QDialog>

class QCheckBox;
class QComboBox;
class QLabel;
class QLineEdit;
class QPushButton;
class QTableWidget;

namespace pocket::ui {

class ExportGgufDialog : public QDialog {
    Q_OBJECT
public:
    ExportGgufDialog(const QString& source, const QString& suggestedOut, const pocket::MethodRegistry& registry, QWidget* parent = nullptr);
    pocket::ArchiveGgufOptions options() const;
    QString outputPath() const;
    // Rows of the preview (for tests) and whether the current choices can be written.
    QTableWidget* preview() const { return m_preview; }
    bool writable() const { return m_writable; }

private:
    void refresh();

    QString m_source;
    const pocket::MethodRegistry& m_registry;
    QComboBox* m_fallback = nullptr;
    QComboBox* m_embedding = nullptr;
    QCheckBox* m_exact = nullptr;
    QLineEdit* m_out = nullptr;
    QTableWidget* m_preview = nullptr;
    QLabel* m_summary = nullptr;
    QPushButton* m_ok = nullptr;
    bool m_writable = false;
};

} // namespace pocket::ui

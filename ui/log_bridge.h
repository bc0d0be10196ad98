// Carries spdlog messages (from any thread) to the workbench's log panel as a Qt signal.
#pragma once

#include <QObject>
#include <QString>

namespace pocket::ui {

class LogBridge : public QObject {
    Q_OBJECT
public:
    // The process-wide bridge; install() adds its sink to spdlog's default logger once.
    static LogBridge* instance();
    void install();

Q_SIGNALS:
    // level: spdlog's level number (0 trace ... 5 critical). Emitted on the logging thread;
    // connect with the default (auto) connection so widgets receive it on the GUI thread.
    void message(int level, const QString& text);

private:
    LogBridge() = default;
    bool m_installed = false;
};

} // namespace pocket::ui

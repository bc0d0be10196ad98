// Run ▸ Run on cluster: the current compression as an mpirun command line (`mpirun -np N
// pocketllm-cli --progress-lines compress ... --mpi`, docs/scaling.md), written to a script for a
// scheduler or started from here. A started run's output is shown as it comes; the progress line
// of rank 0 (which gathers every rank's reports) drives the progress bar; when it ends well,
// finished() gives the archive.
#pragma once

#include "pocket/jobs/compress_job.h"

#include <QDialog>
#include <QProcess>

class QLabel;
class QLineEdit;
class QPlainTextEdit;
class QProgressBar;
class QPushButton;
class QSpinBox;

namespace pocket::ui {

class ClusterDialog : public QDialog {
    Q_OBJECT
public:
    // `cli`: the pocketllm-cli program the ranks run (default: the one beside this program).
    ClusterDialog(const pocket::CompressJobParams& job, QWidget* parent = nullptr, const QString& cli = QString());
    ~ClusterDialog() override;

    // The mpirun program and its arguments, as they will be started (empty with error() set when
    // the job has no command line).
    QString program() const;
    QStringList arguments() const;
    QString error() const { return m_error; }
    // The whole command line, shell-quoted (what the preview shows and the script holds).
    QString commandLine() const;

    void setRanks(int ranks);
    void setMpirun(const QString& program);
    void setHostFile(const QString& path);
    // Writes an executable shell script running the command line; false with `error` set.
    bool writeScript(const QString& path, QString* error) const;
    // Starts the command line (false with error() set when it cannot start); stop() ends it.
    bool start();
    void stop();
    bool running() const;

    QPlainTextEdit* output() const { return m_output; }
    QProgressBar* progressBar() const { return m_progress; }
    QString lastProgress() const { return m_lastProgress; }

Q_SIGNALS:
    // The run ended: archive written (ok) or not (its exit code and last error line in `message`).
    void finished(bool ok, const QString& archivePath, const QString& message);

private:
    void refresh();
    void takeOutput();
    void onFinished(int exitCode, QProcess::ExitStatus status);

    pocket::CompressJobParams m_job;
    QString m_cli;
    QStringList m_compressArgs;
    QString m_error;
    QSpinBox* m_ranks = nullptr;
    QLineEdit* m_mpirun = nullptr;
    QLineEdit* m_hostFile = nullptr;
    QLineEdit* m_extra = nullptr;
    QPlainTextEdit* m_preview = nullptr;
    QPlainTextEdit* m_output = nullptr;
    QProgressBar* m_progress = nullptr;
    QLabel* m_status = nullptr;
    QPushButton* m_start = nullptr;
    QPushButton* m_stop = nullptr;
    QPushButton* m_script = nullptr;
    QProcess* m_process = nullptr;
    QByteArray m_pending;
    QString m_lastProgress;
    QString m_lastError;
};

} // namespace pocket::ui

#include "cluster_dialog.h"

#include "pocket/support/app_paths.h"

#include <QDialogButtonBox>
#include <QDir>
#include <QFile>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QRegularExpression>
#include <QSpinBox>
#include <QVBoxLayout>

#include <unistd.h>

namespace pocket::ui {

namespace {

QString shellQuote(const QString& s)
{
    static const QRegularExpression plain(QStringLiteral("^[A-Za-z0-9_./=:,+-]+$"));
    if (plain.match(s).hasMatch())
        return s;
    QString quoted = s;
    quoted.replace(QLatin1Char('\''), QStringLiteral("'\\''"));
    return QLatin1Char('\'') + quoted + QLatin1Char('\'');
}

} // namespace

ClusterDialog::ClusterDialog(const CompressJobParams& job, QWidget* parent, const QString& cli)
    : QDialog(parent), m_job(job), m_cli(cli.isEmpty() ? QString::fromStdString(executableDir()) + QStringLiteral("/pocketllm-cli") : cli)
{
    setWindowTitle(tr("Run on cluster"));
    auto args = compressCommandArgs(m_job);
    if (args)
        for (const std::string& a : *args)
            m_compressArgs << QString::fromStdString(a);
    else
        m_error = QString::fromStdString(args.message());

    auto* layout = new QVBoxLayout(this);
    auto* intro = new QLabel(tr("Runs this compression with MPI: every process compresses groups, rank 0 writes the archive (the same "
                                "bytes as a run here). The model and the output folder must be on a filesystem every host shares. "
                                "See docs/scaling.md for Slurm."),
                             this);
    intro->setWordWrap(true);
    layout->addWidget(intro);
    auto* form = new QFormLayout;
    m_ranks = new QSpinBox(this);
    m_ranks->setRange(1, 100000);
    m_ranks->setValue(2);
    form->addRow(tr("Processes (-np)"), m_ranks);
    m_mpirun = new QLineEdit(QStringLiteral("mpirun"), this);
    form->addRow(tr("mpirun"), m_mpirun);
    auto* hostRow = new QHBoxLayout;
    m_hostFile = new QLineEdit(this);
    m_hostFile->setPlaceholderText(tr("none: this machine only"));
    auto* browse = new QPushButton(tr("Browse…"), this);
    hostRow->addWidget(m_hostFile);
    hostRow->addWidget(browse);
    form->addRow(tr("Host file"), hostRow);
    m_extra = new QLineEdit(this);
    // On one machine more processes than cores must be allowed; each rank uses several threads, so
    // no binding to one core; Open MPI refuses root unless told.
    m_extra->setText(QStringLiteral("--oversubscribe --bind-to none") + (::geteuid() == 0 ? QStringLiteral(" --allow-run-as-root") : QString()));
    form->addRow(tr("mpirun options"), m_extra);
    layout->addLayout(form);
    m_preview = new QPlainTextEdit(this);
    m_preview->setReadOnly(true);
    m_preview->setMaximumHeight(90);
    layout->addWidget(m_preview);
    m_progress = new QProgressBar(this);
    m_progress->setRange(0, 1);
    m_progress->setValue(0);
    layout->addWidget(m_progress);
    m_status = new QLabel(this);
    m_status->setWordWrap(true);
    layout->addWidget(m_status);
    m_output = new QPlainTextEdit(this);
    m_output->setReadOnly(true);
    m_output->setMaximumBlockCount(5000);
    layout->addWidget(m_output, 1);
    auto* buttons = new QDialogButtonBox(this);
    m_script = buttons->addButton(tr("Write script…"), QDialogButtonBox::ActionRole);
    m_start = buttons->addButton(tr("Start"), QDialogButtonBox::AcceptRole);
    m_stop = buttons->addButton(tr("Stop"), QDialogButtonBox::RejectRole);
    buttons->addButton(QDialogButtonBox::Close);
    layout->addWidget(buttons);
    resize(760, 560);

    connect(m_ranks, qOverload<int>(&QSpinBox::valueChanged), this, &ClusterDialog::refresh);
    for (QLineEdit* e : {m_mpirun, m_hostFile, m_extra})
        connect(e, &QLineEdit::textChanged, this, &ClusterDialog::refresh);
    connect(browse, &QPushButton::clicked, this, [this] {
        const QString f = QFileDialog::getOpenFileName(this, tr("MPI host file"));
        if (!f.isEmpty())
            m_hostFile->setText(f);
    });
    connect(m_script, &QPushButton::clicked, this, [this] {
        const QString f = QFileDialog::getSaveFileName(this, tr("Write the command as a script"), QStringLiteral("run-cluster.sh"));
        QString error;
        if (!f.isEmpty() && !writeScript(f, &error))
            m_status->setText(error);
        else if (!f.isEmpty())
            m_status->setText(tr("Wrote %1").arg(f));
    });
    connect(m_start, &QPushButton::clicked, this, [this] { start(); });
    connect(m_stop, &QPushButton::clicked, this, &ClusterDialog::stop);
    connect(buttons->button(QDialogButtonBox::Close), &QPushButton::clicked, this, &QDialog::reject);
    refresh();
}

ClusterDialog::~ClusterDialog() { stop(); }

QString ClusterDialog::program() const { return m_error.isEmpty() ? m_mpirun->text().trimmed() : QString(); }

QStringList ClusterDialog::arguments() const
{
    if (!m_error.isEmpty())
        return {};
    QStringList a{QStringLiteral("-np"), QString::number(m_ranks->value())};
    if (!m_hostFile->text().trimmed().isEmpty())
        a << QStringLiteral("--hostfile") << m_hostFile->text().trimmed();
    a << m_extra->text().split(QRegularExpression(QStringLiteral("\\s+")), Qt::SkipEmptyParts);
    a << m_cli << QStringLiteral("--progress-lines") << QStringLiteral("compress") << m_compressArgs << QStringLiteral("--mpi");
    return a;
}

QString ClusterDialog::commandLine() const
{
    if (!m_error.isEmpty())
        return {};
    QStringList parts{shellQuote(program())};
    for (const QString& a : arguments())
        parts << shellQuote(a);
    return parts.join(QLatin1Char(' '));
}

void ClusterDialog::setRanks(int ranks) { m_ranks->setValue(ranks); }
void ClusterDialog::setMpirun(const QString& program) { m_mpirun->setText(program); }
void ClusterDialog::setHostFile(const QString& path) { m_hostFile->setText(path); }

void ClusterDialog::refresh()
{
    const bool busy = running();
    m_preview->setPlainText(m_error.isEmpty() ? commandLine() : tr("This job cannot run on a cluster: %1").arg(m_error));
    m_start->setEnabled(m_error.isEmpty() && !busy);
    m_script->setEnabled(m_error.isEmpty());
    m_stop->setEnabled(busy);
    for (QWidget* w : std::initializer_list<QWidget*>{m_ranks, m_mpirun, m_hostFile, m_extra})
        w->setEnabled(!busy);
}

bool ClusterDialog::writeScript(const QString& path, QString* error) const
{
    if (!m_error.isEmpty()) {
        *error = m_error;
        return false;
    }
    QFile f(path);
    if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate)) {
        *error = tr("%1: cannot write: %2").arg(path, f.errorString());
        return false;
    }
    const QByteArray text = "#!/bin/sh\n# Written by PocketLLM Workbench (Run on cluster); see docs/scaling.md.\nexec " + commandLine().toUtf8() + "\n";
    if (f.write(text) != text.size() || !f.flush()) {
        *error = tr("%1: cannot write: %2").arg(path, f.errorString());
        return false;
    }
    f.close();
    f.setPermissions(f.permissions() | QFileDevice::ExeOwner | QFileDevice::ExeUser);
    return true;
}

bool ClusterDialog::running() const { return m_process && m_process->state() != QProcess::NotRunning; }

bool ClusterDialog::start()
{
    if (!m_error.isEmpty() || running())
        return false;
    delete m_process;
    m_process = new QProcess(this);
    m_process->setProcessChannelMode(QProcess::MergedChannels);
    connect(m_process, &QProcess::readyRead, this, &ClusterDialog::takeOutput);
    connect(m_process, &QProcess::finished, this, &ClusterDialog::onFinished);
    connect(m_process, &QProcess::errorOccurred, this, [this](QProcess::ProcessError e) {
        if (e == QProcess::FailedToStart) {
            m_status->setText(tr("%1 could not be started: %2 (is Open MPI installed?)").arg(program(), m_process->errorString()));
            refresh();
            Q_EMIT finished(false, QString(), m_status->text());
        }
    });
    m_output->clear();
    m_pending.clear();
    m_lastProgress.clear();
    m_lastError.clear();
    m_progress->setRange(0, 0); // busy until the first progress line
    m_output->appendPlainText(QStringLiteral("$ ") + commandLine());
    m_status->setText(tr("Running on %n process(es)…", nullptr, m_ranks->value()));
    m_process->start(program(), arguments());
    refresh();
    return true;
}

void ClusterDialog::stop()
{
    if (!running())
        return;
    m_process->terminate(); // mpirun forwards SIGTERM to every rank; finished groups stay for --resume
    if (!m_process->waitForFinished(5000))
        m_process->kill();
}

void ClusterDialog::takeOutput()
{
    m_pending += m_process->readAll();
    static const QRegularExpression groups(QStringLiteral("group (\\d+)/(\\d+)(?: \\[rank \\d+ of \\d+, (\\d+) done\\])?"));
    int end;
    while ((end = m_pending.indexOf('\n')) >= 0) {
        const QString line = QString::fromUtf8(m_pending.left(end)).trimmed();
        m_pending.remove(0, end + 1);
        if (line.startsWith(QStringLiteral("progress: "))) {
            m_lastProgress = line.mid(10);
            m_status->setText(m_lastProgress);
            const auto match = groups.match(m_lastProgress);
            if (match.hasMatch()) {
                const int total = match.captured(2).toInt();
                const int done = match.captured(3).isEmpty() ? match.captured(1).toInt() - 1 : match.captured(3).toInt();
                m_progress->setRange(0, total);
                m_progress->setValue(done);
            }
            continue;
        }
        if (line.contains(QStringLiteral("error")))
            m_lastError = line;
        m_output->appendPlainText(line);
    }
}

void ClusterDialog::onFinished(int exitCode, QProcess::ExitStatus status)
{
    takeOutput();
    if (!m_pending.isEmpty())
        m_output->appendPlainText(QString::fromUtf8(m_pending));
    m_pending.clear();
    const bool ok = status == QProcess::NormalExit && exitCode == 0 && QFile::exists(QString::fromStdString(m_job.outPath));
    m_progress->setRange(0, 1);
    m_progress->setValue(ok ? 1 : 0);
    const QString message = ok ? tr("Done: %1").arg(QString::fromStdString(m_job.outPath))
                               : tr("The run failed (exit code %1)%2; finished groups stay in the work folder for Resume.")
                                     .arg(exitCode)
                                     .arg(m_lastError.isEmpty() ? QString() : QStringLiteral(": ") + m_lastError);
    m_status->setText(message);
    refresh();
    Q_EMIT finished(ok, ok ? QString::fromStdString(m_job.outPath) : QString(), message);
}

} // namespace pocket::ui

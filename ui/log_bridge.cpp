#include "log_bridge.h"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <mutex>

namespace pocket::ui {

namespace {

class QtSink : public spdlog::sinks::base_sink<std::mutex> {
protected:
    void sink_it_(const spdlog::details::log_msg& msg) override
    {
        spdlog::memory_buf_t formatted;
        formatter_->format(msg, formatted);
        QString text = QString::fromUtf8(formatted.data(), static_cast<int>(formatted.size())).trimmed();
        Q_EMIT LogBridge::instance()->message(static_cast<int>(msg.level), text);
    }
    void flush_() override {}
};

} // namespace

LogBridge* LogBridge::instance()
{
    static LogBridge* bridge = new LogBridge; // lives as long as the process (spdlog may log at exit)
    return bridge;
}

void LogBridge::install()
{
    if (m_installed)
        return;
    m_installed = true;
    auto sink = std::make_shared<QtSink>();
    sink->set_pattern("%H:%M:%S  %l  %v");
    sink->set_level(spdlog::level::info);
    spdlog::default_logger()->sinks().push_back(sink);
}

} // namespace pocket::ui

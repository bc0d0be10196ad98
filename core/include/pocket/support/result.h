// Error values for everything a user can get wrong. Core functions that can fail on user input
// return Result<T>; exceptions never leave core. Thread-safe as values (no shared state).
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace pocket {

// What kind of problem an Error is. Callers switch on the kind, never on the message text: the
// CLI picks its exit code from it, the workbench its dialog, and every front end recognises a
// cancelled job by Cancelled.
enum class ErrorKind {
    Usage,       // a setting or option is wrong (out of range, unknown, inconsistent with another)
    Input,       // a file or its contents are wrong (missing, truncated, corrupt, too short)
    Unsupported, // valid input this program cannot handle (an architecture, a format version)
    Io,          // the system refused (cannot write, disk full, cannot create a folder)
    Cancelled,   // the caller asked the work to stop
    Internal,    // a bug: an exception escaped a plugin or a library
};

// "usage", "input", "unsupported", "io", "cancelled", "internal".
inline const char* errorKindName(ErrorKind kind);

// A user-facing error: one line that names the file (or setting) and the problem, its kind, and
// which setting of the request it is about. Core messages name settings in words, never by a
// front end's spelling (no CLI flags); a front end that wants its own name for `setting` adds it.
struct Error {
    std::string message;
    ErrorKind kind = ErrorKind::Input;
    // The request field the error is about, in core's words ("ctx", "calibration text",
    // "keep dtype", ...; see each job's Params struct), "" when none.
    std::string setting;

    Error() = default;
    explicit Error(std::string message, ErrorKind kind = ErrorKind::Input, std::string setting = {})
        : message(std::move(message)), kind(kind), setting(std::move(setting))
    {
    }

    static Error usage(std::string message, std::string setting = {})
    {
        return Error{std::move(message), ErrorKind::Usage, std::move(setting)};
    }
    static Error unsupported(std::string message) { return Error{std::move(message), ErrorKind::Unsupported, {}}; }
    static Error io(std::string message) { return Error{std::move(message), ErrorKind::Io, {}}; }
    static Error internal(std::string message) { return Error{std::move(message), ErrorKind::Internal, {}}; }
    // The error of work stopped on request; its message is "cancelled".
    static Error cancelled() { return Error{"cancelled", ErrorKind::Cancelled, {}}; }
    bool isCancelled() const { return kind == ErrorKind::Cancelled; }
    // The same error with `context + ": "` in front of the message (kind and setting kept), unless
    // the message already starts with it (a method's own errors already name the method).
    Error prefixed(const std::string& context) const
    {
        const std::string head = context + ": ";
        return Error{message.compare(0, head.size(), head) == 0 ? message : head + message, kind, setting};
    }
};

// Builds "<file>: <problem>", the shape of every error message about a file.
inline Error fileError(const std::string& file, const std::string& problem, ErrorKind kind = ErrorKind::Input)
{
    return Error{file + ": " + problem, kind, {}};
}

// Either a value or an Error. Accessing the wrong alternative throws std::bad_variant_access.
template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : m_value(std::move(value)) {}
    Result(Error error) : m_value(std::move(error)) {}

    bool ok() const { return m_value.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<0>(m_value); }
    const T& value() const& { return std::get<0>(m_value); }
    T&& value() && { return std::get<0>(std::move(m_value)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const Error& error() const { return std::get<1>(m_value); }
    const std::string& message() const { return error().message; }
    ErrorKind kind() const { return error().kind; }
    bool cancelled() const { return !ok() && error().isCancelled(); }

private:
    std::variant<T, Error> m_value;
};

// Success or an Error, with no value.
template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : m_error(std::move(error)), m_failed(true) {}

    bool ok() const { return !m_failed; }
    explicit operator bool() const { return ok(); }
    const Error& error() const { return m_error; }
    const std::string& message() const { return m_error.message; }
    ErrorKind kind() const { return m_error.kind; }
    bool cancelled() const { return m_failed && m_error.isCancelled(); }

private:
    Error m_error;
    bool m_failed = false;
};

using Status = Result<void>;

// Returns the error of `expr` (a Result or Status) from the enclosing function when it failed.
#define POCKET_TRY(expr)           \
    do {                           \
        if (auto s_ = (expr); !s_) \
            return s_.error();     \
    } while (0)

inline const char* errorKindName(ErrorKind kind)
{
    switch (kind) {
    case ErrorKind::Usage: return "usage";
    case ErrorKind::Input: return "input";
    case ErrorKind::Unsupported: return "unsupported";
    case ErrorKind::Io: return "io";
    case ErrorKind::Cancelled: return "cancelled";
    case ErrorKind::Internal: return "internal";
    }
    return "input";
}

} // namespace pocket

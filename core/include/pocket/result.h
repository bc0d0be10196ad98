// Error values for everything a user can get wrong. Core functions that can fail on user input
// return Result<T>; exceptions never leave core. Thread-safe as values (no shared state).
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace pocket {

// A user-facing error: one line that names the file (or option) and the problem.
struct Error {
    std::string message;
};

// Builds "<file>: <problem>", the shape of every error message about a file.
inline Error fileError(const std::string& file, const std::string& problem)
{
    return Error{file + ": " + problem};
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

private:
    Error m_error;
    bool m_failed = false;
};

using Status = Result<void>;

} // namespace pocket

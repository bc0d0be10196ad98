// Reading evaluation text files. Pure functions, any thread.
#pragma once

#include "pocket/support/result.h"

#include <string>
#include <string_view>

namespace pocket {

// The byte offset of the first invalid UTF-8 sequence in `text`, or npos when it is valid.
std::size_t findInvalidUtf8(std::string_view text);
// `text` with every invalid UTF-8 byte replaced by U+FFFD (for JSON and display of generated text).
std::string sanitizeUtf8(std::string_view text);

// Reads a whole text file as UTF-8 (a leading byte-order mark is dropped). Errors name the file:
// missing, unreadable, empty, or not UTF-8 (with the line and byte offset of the first bad byte).
Result<std::string> readTextFile(const std::string& path);

} // namespace pocket

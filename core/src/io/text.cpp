#include "pocket/io/text.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace pocket {

std::size_t findInvalidUtf8(std::string_view text)
{
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::size_t i = 0;
    while (i < n) {
        const unsigned char c = s[i];
        std::size_t len;
        std::uint32_t cp;
        if (c < 0x80) { ++i; continue; }
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return i;
        if (i + len > n) return i;
        for (std::size_t k = 1; k < len; ++k) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        // Overlong forms, surrogates and values past U+10FFFF are invalid.
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += len;
    }
    return std::string_view::npos;
}

Result<std::string> readTextFile(const std::string& path)
{
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
        return fileError(path, "no such file");
    if (std::filesystem::is_directory(path, ec))
        return fileError(path, "is a folder, not a text file");
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return fileError(path, "cannot be read");
    std::stringstream buffer;
    buffer << in.rdbuf();
    std::string text = buffer.str();
    std::size_t bomBytes = 0;
    if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) {
        text.erase(0, 3);
        bomBytes = 3;
    }
    if (text.find_first_not_of(" \t\r\n") == std::string::npos)
        return fileError(path, "empty text file (nothing to evaluate)");
    if (const std::size_t bad = findInvalidUtf8(text); bad != std::string_view::npos) {
        const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(bad), '\n');
        return fileError(path, "not UTF-8 text: invalid byte at offset " + std::to_string(bad + bomBytes) + " (line " + std::to_string(line) + ")");
    }
    return text;
}

std::string sanitizeUtf8(std::string_view text)
{
    std::string out;
    out.reserve(text.size());
    while (!text.empty()) {
        const std::size_t bad = findInvalidUtf8(text);
        if (bad == std::string_view::npos) {
            out.append(text);
            break;
        }
        out.append(text.substr(0, bad));
        out.append("\xEF\xBF\xBD");
        text.remove_prefix(bad + 1);
    }
    return out;
}

} // namespace pocket

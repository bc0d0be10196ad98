// Helpers shared by the tests: where the test data is, and small file utilities.
#pragma once

#include <QtTest/QtTest>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace testsupport {

// The demo model bundled in resources/ (always present).
inline std::string demoModel() { return POCKET_RESOURCES_DIR "/models/stories260K/stories260K.bin"; }
inline std::string demoTokenizer() { return POCKET_RESOURCES_DIR "/models/stories260K/tok512.bin"; }
// A file under ../shared/assets, or "" when the shared assets are not beside the checkout.
inline std::string sharedAsset(const std::string& relative)
{
    const std::string path = std::string(POCKET_SHARED_ASSETS) + "/" + relative;
    return QFileInfo::exists(QString::fromStdString(path)) ? path : std::string();
}

inline std::vector<std::uint8_t> readBytes(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void writeBytes(const std::string& path, const void* data, std::size_t size)
{
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
}

inline void writeBytes(const std::string& path, const std::vector<std::uint8_t>& bytes) { writeBytes(path, bytes.data(), bytes.size()); }

inline void writeText(const std::string& path, const std::string& text) { writeBytes(path, text.data(), text.size()); }

inline std::string readText(const std::string& path)
{
    const auto bytes = readBytes(path);
    return {bytes.begin(), bytes.end()};
}

} // namespace testsupport

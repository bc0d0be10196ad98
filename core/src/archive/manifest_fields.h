// Private to core/src/archive: the JSON helpers every manifest reader and writer of the .pllm
// container shares (strict parsing and dumping, typed field reads whose errors name the file, the
// place and the key), and the guard that turns exceptions into errors naming the file.
#pragma once

#include "pocket/methods/method.h"
#include "pocket/support/result.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <new>
#include <string>
#include <vector>

namespace pocket::archive_detail {

using Json = nlohmann::ordered_json;

constexpr int kMaxJsonDepth = 100;
constexpr std::int64_t kMaxMatrixDim = std::int64_t(1) << 31; // rows * cols stays far inside int64

// Runs `f`, turning anything thrown (allocation failures, library exceptions) into an Error that
// names the file: nothing may escape core.
template <class F>
auto guarded(const std::string& path, F&& f) -> decltype(f())
{
    try {
        return f();
    } catch (const std::bad_alloc&) {
        return fileError(path, "not enough memory");
    } catch (const std::exception& e) {
        return fileError(path, e.what());
    }
}

// Parses `n` bytes as a JSON object; errors name the file and `what` ("the manifest", ...).
Result<Json> parseJson(const char* p, std::size_t n, const std::string& file, const std::string& what);
// Strict dump: text that is not UTF-8 becomes an error instead of a corrupt manifest.
Result<std::string> dumpStrict(const Json& j, const std::string& file);

// Typed reads of manifest fields; every error names the file, the place and the key.
struct Fields {
    const std::string& file;
    std::string where; // "group 2 ('type:q_proj')", "tensor 'x'", "" for the top level
    const Json& obj;

    Error bad(const std::string& what) const { return fileError(file, where.empty() ? what : where + ": " + what); }
    const Json* get(const char* key) const
    {
        const auto it = obj.find(key);
        return it == obj.end() ? nullptr : &*it;
    }
    Result<const Json*> need(const char* key) const
    {
        const Json* v = get(key);
        if (!v)
            return bad(std::string("missing key '") + key + "'");
        return v;
    }
    Status string(const char* key, std::string& out) const
    {
        auto v = need(key);
        if (!v) return v.error();
        if (!(*v)->is_string()) return bad(std::string("key '") + key + "' must be a string");
        out = (*v)->get<std::string>();
        return {};
    }
    Status u64(const char* key, std::uint64_t& out) const
    {
        auto v = need(key);
        if (!v) return v.error();
        if (!(*v)->is_number_unsigned()) return bad(std::string("key '") + key + "' must be a non-negative integer");
        out = (*v)->get<std::uint64_t>();
        return {};
    }
    Status integer(const char* key, std::int64_t min, std::int64_t max, std::int64_t& out) const
    {
        auto v = need(key);
        if (!v) return v.error();
        const Json& j = **v;
        bool inRange = false;
        if (j.is_number_unsigned()) {
            const auto u = j.get<std::uint64_t>();
            inRange = max >= 0 && u <= static_cast<std::uint64_t>(max) && (min <= 0 || u >= static_cast<std::uint64_t>(min));
        } else if (j.is_number_integer()) {
            inRange = j.get<std::int64_t>() >= min && j.get<std::int64_t>() <= max;
        } else {
            return bad(std::string("key '") + key + "' must be an integer");
        }
        if (!inRange)
            return bad(std::string("key '") + key + "' = " + j.dump() + " is out of range [" + std::to_string(min) + ", " + std::to_string(max) + "]");
        out = j.is_number_unsigned() ? static_cast<std::int64_t>(j.get<std::uint64_t>()) : j.get<std::int64_t>();
        return {};
    }
    // Finite numbers are JSON numbers; non-finite ones are the strings "inf", "-inf", "nan".
    Status real(const char* key, double& out) const
    {
        auto v = need(key);
        if (!v) return v.error();
        const Json& j = **v;
        if (j.is_number()) {
            out = j.get<double>();
            return {};
        }
        if (j.is_string()) {
            const auto s = j.get<std::string>();
            if (s == "inf") { out = std::numeric_limits<double>::infinity(); return {}; }
            if (s == "-inf") { out = -std::numeric_limits<double>::infinity(); return {}; }
            if (s == "nan") { out = std::numeric_limits<double>::quiet_NaN(); return {}; }
        }
        return bad(std::string("key '") + key + "' must be a number (or \"inf\", \"-inf\", \"nan\")");
    }
    Result<const Json*> object(const char* key) const
    {
        auto v = need(key);
        if (!v) return v.error();
        if (!(*v)->is_object()) return bad(std::string("key '") + key + "' must be an object");
        return *v;
    }
    Result<const Json*> array(const char* key) const
    {
        auto v = need(key);
        if (!v) return v.error();
        if (!(*v)->is_array()) return bad(std::string("key '") + key + "' must be an array");
        return *v;
    }
    Status strings(const char* key, std::vector<std::string>& out) const
    {
        auto v = array(key);
        if (!v) return v.error();
        out.clear();
        for (const Json& e : **v) {
            if (!e.is_string())
                return bad(std::string("key '") + key + "' must be an array of strings");
            out.push_back(e.get<std::string>());
        }
        return {};
    }
    Status bits(const char* key, BitCounts& out) const
    {
        auto v = object(key);
        if (!v) return v.error();
        const Fields f{file, where.empty() ? key : where + ", " + key, **v};
        for (const Status& s : {f.u64("index", out.indexBits), f.u64("codebook", out.codebookBits), f.u64("decoder", out.decoderBits), f.u64("scale", out.scaleBits)})
            if (!s) return s;
        return {};
    }
};

// Finite numbers as JSON numbers, non-finite ones as "inf", "-inf", "nan".
Json realJson(double v);
Json bitsJson(const BitCounts& b);
// "" counts as {} so a method without parameters or meta facts need not spell it out.
Result<Json> objectFromText(const std::string& text, const std::string& file, const std::string& what);
// "group 2 ('type:q_proj')"
std::string groupWhere(std::size_t index, const std::string& id);

// The JSON of a payload without its bytes (section names only), and back; other keys are ignored.
Result<Json> payloadToJson(const GroupPayload& p, const std::string& file);
Result<GroupPayload> payloadFromJson(const Json& j, const std::string& file, const std::string& where);

} // namespace pocket::archive_detail

// Work-folder group files: one finished group each, in the container format (kind "group"), and
// the JSON of a payload without its bytes (used in manifests and group files).
#pragma once

#include "pocket/methods/method.h"
#include "pocket/support/result.h"

#include <string>

namespace pocket {

// Work-folder files: one finished group each, in the same container format (kind "group").
Status writeGroupFile(const std::string& path, const GroupPayload& payload);
Result<GroupPayload> readGroupFile(const std::string& path);

// JSON of a GroupPayload without bytes (used in manifests and group files), and back. The JSON is
// "" when paramsJson or metaJson is not a JSON object ("" counts as {}) or section names repeat.
std::string groupPayloadToJson(const GroupPayload& payload);
Result<GroupPayload> groupPayloadFromJson(const std::string& json, const std::string& fileForErrors);

} // namespace pocket

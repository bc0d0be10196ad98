// Work-folder group files (one finished group in a container of kind "group") and the JSON of a
// payload without its bytes.
#include "pocket/archive/group_file.h"

#include "manifest_fields.h"

#include "pocket/archive/container.h"

namespace pocket {

using namespace archive_detail;

Status writeGroupFile(const std::string& path, const GroupPayload& payload)
{
    return guarded(path, [&]() -> Status {
        auto j = payloadToJson(payload, path);
        if (!j)
            return j.error();
        auto text = dumpStrict(*j, path);
        if (!text)
            return text.error();
        ContainerWriter writer(path, "group");
        POCKET_TRY(writer.open());
        for (const PayloadSection& s : payload.sections) POCKET_TRY(writer.addSection(s.name, s.bytes.data(), s.bytes.size()));
        return writer.finish(*text);
    });
}

Result<GroupPayload> readGroupFile(const std::string& path)
{
    return guarded(path, [&]() -> Result<GroupPayload> {
        auto c = ContainerReader::open(path, ContainerReader::Verify::All);
        if (!c)
            return c.error();
        if ((*c)->kind() != "group")
            return fileError(path, "is a '" + (*c)->kind() + "' container, not a group file");
        auto j = parseJson((*c)->manifestJson().data(), (*c)->manifestJson().size(), path, "the manifest");
        if (!j)
            return j.error();
        auto p = payloadFromJson(*j, path, "");
        if (!p)
            return p.error();
        if ((*c)->sections().size() != p->sections.size())
            return fileError(path, "the file holds " + std::to_string((*c)->sections().size()) + " sections but the payload names " +
                                       std::to_string(p->sections.size()));
        for (PayloadSection& s : p->sections) {
            auto bytes = (*c)->section(s.name);
            if (!bytes)
                return bytes.error();
            s.bytes.assign(bytes->data, bytes->data + bytes->info.byteSize);
        }
        return std::move(*p);
    });
}

std::string groupPayloadToJson(const GroupPayload& payload)
{
    try {
        auto j = payloadToJson(payload, "group payload");
        if (!j)
            return std::string();
        return j->dump(-1, ' ', false, Json::error_handler_t::replace);
    } catch (const std::exception&) {
        return std::string();
    }
}

Result<GroupPayload> groupPayloadFromJson(const std::string& json, const std::string& fileForErrors)
{
    return guarded(fileForErrors, [&]() -> Result<GroupPayload> {
        auto j = parseJson(json.data(), json.size(), fileForErrors, "the group payload");
        if (!j)
            return j.error();
        return payloadFromJson(*j, fileForErrors, "");
    });
}

} // namespace pocket

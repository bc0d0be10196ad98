// The skeleton of a compression method, for plugins to derive from: it checks the group's inputs,
// fills the payload's header (group id, method id and version, resolved parameters), lets the
// method fill in its sections and bits, and measures the errors on the decoded weights, exactly
// as decompression will produce them. A method then implements compressInto(), decode() and
// estimateBits(). No LibTorch here.
#pragma once

#include "pocket/methods/method.h"

#include <string>

namespace pocket {

class MethodBase : public CompressionMethod {
public:
    const MethodInfo& info() const final { return m_info; }

    // Checks that every matrix holds rows*cols values, starts the payload, calls compressInto(),
    // then fills every matrix's MSE and SNR by decoding the payload with decode().
    Result<GroupPayload> compress(const MatrixGroup& group, const ParamSet& params, const CompressContext& context) final;

protected:
    // `info` is copied; its id prefixes the skeleton's error messages ("rtn: <matrix>: ...").
    explicit MethodBase(MethodInfo info) : m_info(std::move(info)) {}

    // Fills `payload` (its header is already set: groupId, methodId, methodVersion = info().version,
    // paramsJson): metaJson, sections, sharedBits and one MatrixResult per matrix with its bits.
    // May lower payload.methodVersion when the payload does not use a newer version's features.
    // Returns Error::cancelled() when context.onProgress returns false.
    virtual Status compressInto(const MatrixGroup& group, const ParamSet& params, const CompressContext& context, GroupPayload& payload) = 0;

    // "<method id>: <message>", the prefix every error of a method carries.
    Error methodError(const std::string& message, ErrorKind kind = ErrorKind::Input) const
    {
        return Error{m_info.id + ": " + message, kind, {}};
    }
    // Reports one step to context.onProgress; false when the caller asked to stop.
    static bool report(const CompressContext& context, const TrainProgress& progress)
    {
        return !context.onProgress || context.onProgress(progress);
    }

private:
    MethodInfo m_info;
};

} // namespace pocket

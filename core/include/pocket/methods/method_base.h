// The skeleton of a compression method, for plugins to derive from: it checks the group's inputs,
// fills the payload's header (group id, method id and version, resolved parameters), lets the
// method fill in its sections and bits, and measures the errors on the decoded weights, exactly
// as decompression will produce them. A method then implements compressInto(), decode() and
// estimateBits(). No LibTorch here.
#pragma once

#include "pocket/methods/method.h"
#include "pocket/support/parallel.h"

#include <algorithm>
#include <atomic>
#include <memory>
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

// A PayloadDecoder for methods whose rows decode independently: it keeps the payload and its checked
// layout, and splits a matrix's rows over threads. `Layout` provides
//   static Result<Layout> check(const GroupPayload&);           // every field and section checked
//   std::uint64_t bytes() const;                                 // tables it holds beyond the payload
//   std::string decodeRows(const MatrixRef&, std::size_t index, std::int64_t r0, std::int64_t r1,
//                          float* out) const;                    // rows [r0, r1); "" or an error
template <class Layout>
class RowDecoder final : public PayloadDecoder {
public:
    static Result<std::unique_ptr<PayloadDecoder>> make(GroupPayload p)
    {
        std::unique_ptr<RowDecoder> dec(new RowDecoder);
        dec->m_payload = std::move(p);
        auto layout = Layout::check(dec->m_payload);
        if (!layout)
            return layout.error();
        dec->m_layout = std::move(*layout);
        return std::unique_ptr<PayloadDecoder>(std::move(dec));
    }
    std::size_t matrixCount() const override { return m_payload.matrices.size(); }
    const MatrixRef& matrix(std::size_t index) const override { return m_payload.matrices.at(index).ref; }
    std::uint64_t bytes() const override { return payloadBytes(m_payload) + m_layout.bytes(); }
    Status decodeMatrix(std::size_t index, float* out, int threads) const override
    {
        if (index >= m_payload.matrices.size())
            return Error::internal("decodeMatrix: no matrix " + std::to_string(index) + " in group " + m_payload.groupId);
        const MatrixRef& ref = m_payload.matrices[index].ref;
        std::atomic<bool> failed{false};
        std::string error;
        parallelFor(ref.rows, threads, std::max<std::int64_t>(1, 65536 / ref.cols), [&](std::int64_t r0, std::int64_t r1) {
            std::string e = m_layout.decodeRows(ref, index, r0, r1, out);
            if (!e.empty() && !failed.exchange(true))
                error = std::move(e);
        });
        if (failed)
            return Error{error};
        return {};
    }

private:
    RowDecoder() = default;
    GroupPayload m_payload;
    Layout m_layout;
};

} // namespace pocket

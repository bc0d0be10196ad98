// A small, fast, deterministic method for testing the machinery around methods (registry, jobs,
// archives) without training anything: per-matrix symmetric uniform quantisation with one fp16
// scale, codes bit-packed. Optionally groups everything into one group ("sharing=model").
#pragma once

#include "pocket/io/dtype.h"
#include "pocket/methods/method.h"
#include "pocket/methods/vq_kernels.h"

#include <cmath>
#include <cstring>

namespace testsupport {

class FakeQuantMethod final : public pocket::CompressionMethod {
public:
    // `calibrated`: declares needsCalibration, requires every matrix's Hessian, and records its trace
    // in the payload (so anything that changes the Hessians changes the archive).
    explicit FakeQuantMethod(std::string id = "fakequant", bool calibrated = false)
    {
        m_info.id = std::move(id);
        m_info.needsCalibration = calibrated;
    }

    const pocket::MethodInfo& info() const override { return m_info; }

    pocket::Result<std::vector<std::vector<pocket::MatrixRef>>> planGroups(const std::vector<pocket::MatrixRef>& matrices,
                                                                             const pocket::ParamSet& params) const override
    {
        if (params.getText("sharing") == "model")
            return std::vector<std::vector<pocket::MatrixRef>>{matrices};
        return CompressionMethod::planGroups(matrices, params);
    }

    pocket::Result<pocket::BitCounts> estimateBits(const std::vector<pocket::MatrixRef>& group, const pocket::ParamSet& params,
                                                   std::vector<pocket::BitCounts>& perMatrix) const override
    {
        perMatrix.clear();
        for (const auto& m : group) {
            pocket::BitCounts b;
            b.indexBits = static_cast<std::uint64_t>(m.weights()) * static_cast<std::uint64_t>(params.getInt("bits"));
            b.scaleBits = 16;
            perMatrix.push_back(b);
        }
        return pocket::BitCounts{};
    }

    pocket::Result<pocket::GroupPayload> compress(const pocket::MatrixGroup& group, const pocket::ParamSet& params,
                                                  const pocket::CompressContext& context) override
    {
        const int bits = static_cast<int>(params.getInt("bits"));
        const int levels = (1 << (bits - 1)) - 1;
        pocket::GroupPayload p;
        p.groupId = group.id;
        p.methodId = m_info.id;
        p.methodVersion = m_info.version;
        p.paramsJson = params.toJson(m_info.params);
        p.metaJson = "{\"bits\":" + std::to_string(bits) + "}";
        if (m_info.needsCalibration) {
            std::string traces;
            for (const auto& m : group.matrices) {
                if (m.hessian.size() != static_cast<std::size_t>(m.ref.cols * m.ref.cols))
                    return pocket::Error{"fakequant: no Hessian for " + m.ref.name};
                double trace = 0;
                for (std::int64_t i = 0; i < m.ref.cols; ++i)
                    trace += m.hessian[static_cast<std::size_t>(i * m.ref.cols + i)];
                traces += (traces.empty() ? "" : ",") + std::to_string(trace);
                hessianTraces.push_back(trace);
            }
            p.metaJson = "{\"bits\":" + std::to_string(bits) + ",\"traces\":[" + traces + "]}";
        }
        int step = 0;
        for (const auto& m : group.matrices) {
            float maxAbs = 0;
            for (float v : m.values)
                maxAbs = std::max(maxAbs, std::fabs(v));
            const std::uint16_t scaleHalf = pocket::floatToHalf(maxAbs > 0 ? maxAbs / levels : 1.0f);
            const float scale = pocket::halfToFloat(scaleHalf);
            std::vector<std::int32_t> codes(m.values.size());
            for (std::size_t i = 0; i < codes.size(); ++i) {
                const long q = std::lround(m.values[i] / scale);
                codes[i] = static_cast<std::int32_t>(std::clamp<long>(q, -levels, levels) + levels);
            }
            pocket::MatrixResult r;
            r.ref = m.ref;
            r.bits.indexBits = static_cast<std::uint64_t>(codes.size()) * static_cast<std::uint64_t>(bits);
            r.bits.scaleBits = 16;
            p.sections.push_back(pocket::codeSection("codes/" + m.ref.name, codes.data(), static_cast<std::int64_t>(codes.size()), bits));
            std::vector<std::uint8_t> scaleBytes(2);
            std::memcpy(scaleBytes.data(), &scaleHalf, 2);
            p.sections.push_back({"scale/" + m.ref.name, scaleBytes});
            p.matrices.push_back(r);
            pocket::TrainProgress progress;
            progress.groupId = group.id;
            progress.step = ++step;
            progress.totalSteps = static_cast<int>(group.matrices.size());
            progress.epoch = progress.epochs = 1;
            if (context.onProgress && !context.onProgress(progress))
                return pocket::Error::cancelled();
        }
        if (auto measured = pocket::measureByDecoding(*this, group, p); !measured)
            return measured.error();
        ++compressCalls;
        return p;
    }

    pocket::Result<std::vector<std::vector<float>>> decode(const pocket::GroupPayload& p) const override
    {
        std::vector<std::vector<float>> out;
        for (const auto& r : p.matrices) {
            const pocket::PayloadSection* codesSection = p.section("codes/" + r.ref.name);
            const pocket::PayloadSection* scaleSection = p.section("scale/" + r.ref.name);
            if (!codesSection || !scaleSection || scaleSection->bytes.size() != 2)
                return pocket::Error{"fakequant: missing sections for " + r.ref.name};
            // The stream's own width (the bit counts follow what the archive stores, coded or not).
            const int bits = codesSection->symbolBits;
            if (bits < 2 || bits > 16)
                return pocket::Error{"fakequant: codes of " + r.ref.name + " do not say their width"};
            const int levels = (1 << (bits - 1)) - 1;
            std::uint16_t scaleHalf = 0;
            std::memcpy(&scaleHalf, scaleSection->bytes.data(), 2);
            const float scale = pocket::halfToFloat(scaleHalf);
            std::vector<std::int32_t> codes(static_cast<std::size_t>(r.ref.weights()));
            if (!pocket::unpackBits(codesSection->bytes.data(), codesSection->bytes.size(), r.ref.weights(), bits, codes.data()))
                return pocket::Error{"fakequant: short codes for " + r.ref.name};
            std::vector<float> w(codes.size());
            for (std::size_t i = 0; i < codes.size(); ++i)
                w[i] = pocket::halfToFloat(pocket::floatToHalf(static_cast<float>(codes[i] - levels) * scale));
            out.push_back(std::move(w));
        }
        return out;
    }

    int compressCalls = 0;
    std::vector<double> hessianTraces;

private:
    pocket::MethodInfo m_info = [] {
        pocket::MethodInfo m;
        m.id = "fakequant";
        m.displayName = "Fake uniform quantiser (tests)";
        m.bitsFormula = "bits per weight + 16 per matrix";
        m.params = {pocket::ParamSpec::integer("bits", 4, 2, 8, "bits per weight"),
                    pocket::ParamSpec::choice("sharing", "matrix", {"matrix", "model"}, "grouping"),
                    pocket::ParamSpec::real("lr", "0.016", 1e-6, 1, "unused; tests float canonicalisation"),
                    pocket::ParamSpec::boolean("flag", false, "unused; tests booleans")};
        return m;
    }();
};

} // namespace testsupport

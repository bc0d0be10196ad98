// Bit accounting over a whole archive (method doc section 5).
#include "pocket/archive/bit_accounting.h"

#include "pocket/archive/model_archive.h"
#include "pocket/io/checkpoint.h"

namespace pocket {

double ArchiveBits::bpwAllIn() const { return totalWeights ? static_cast<double>(totalBits()) / static_cast<double>(totalWeights) : 0.0; }
double ArchiveBits::bpwCompressed() const
{
    return compressedWeights ? static_cast<double>(compressed.total() + adapterBits) / static_cast<double>(compressedWeights) : 0.0;
}
double ArchiveBits::bpwAdapters() const
{
    return compressedWeights ? static_cast<double>(adapterBits) / static_cast<double>(compressedWeights) : 0.0;
}
double ArchiveBits::ratioFp16() const { return totalBits() ? 16.0 * static_cast<double>(totalWeights) / static_cast<double>(totalBits()) : 0.0; }
double ArchiveBits::ratioFp32() const { return totalBits() ? 32.0 * static_cast<double>(totalWeights) / static_cast<double>(totalBits()) : 0.0; }

ArchiveBits accountBits(const ArchiveManifest& manifest)
{
    ArchiveBits bits;
    for (const TensorInfo& t : expectedTensors(manifest.config))
        bits.totalWeights += static_cast<std::uint64_t>(elementCount(t.shape));
    for (const ArchiveGroup& g : manifest.groups) {
        for (const MatrixResult& m : g.payload.matrices) bits.compressedWeights += static_cast<std::uint64_t>(m.ref.weights());
        bits.compressed += g.payload.totalBits();
    }
    for (const ArchiveTensor& t : manifest.tensors)
        bits.uncompressedBits += static_cast<std::uint64_t>(elementCount(t.shape)) * dtypeSize(t.dtype) * 8;
    for (const ArchiveAdapter& a : manifest.adapters)
        bits.adapterBits += 16 * static_cast<std::uint64_t>(a.rank) * static_cast<std::uint64_t>(a.rows + a.cols);
    return bits;
}

std::vector<MatrixReport> matrixReports(const GroupPayload& group)
{
    std::int64_t groupWeights = 0;
    for (const MatrixResult& m : group.matrices)
        groupWeights += m.ref.weights();
    std::vector<MatrixReport> out;
    for (const MatrixResult& m : group.matrices)
        out.push_back({m.ref.name, group.groupId, group.methodId, m.ref.rows, m.ref.cols, m.bits,
                       matrixBitsPerWeight(m.ref, m.bits, group.sharedBits, groupWeights), m.mse, m.snrDb});
    return out;
}

std::vector<MatrixReport> matrixReports(const std::vector<GroupPayload>& groups)
{
    std::vector<MatrixReport> out;
    for (const GroupPayload& g : groups)
        for (MatrixReport& r : matrixReports(g))
            out.push_back(std::move(r));
    return out;
}

} // namespace pocket

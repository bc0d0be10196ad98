#include "pocket/io/tensor_stats.h"

#include "pocket/io/dtype.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace pocket {

TensorStats tensorStats(const TensorData& data)
{
    const auto count = static_cast<std::size_t>(elementCount(data.info.shape));
    const std::size_t elementBytes = dtypeSize(data.info.dtype);
    std::vector<float> chunk(std::size_t{1} << 16);
    double sum = 0, sumSq = 0;
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    std::int64_t bad = 0;
    for (std::size_t first = 0; first < count; first += chunk.size()) {
        const std::size_t n = std::min(chunk.size(), count - first);
        convertToFloat(data.info.dtype, data.data + first * elementBytes, n, chunk.data());
        for (std::size_t k = 0; k < n; ++k) {
            const float x = chunk[k];
            if (!std::isfinite(x)) {
                ++bad;
                continue;
            }
            sum += x;
            sumSq += static_cast<double>(x) * x;
            lo = std::min(lo, x);
            hi = std::max(hi, x);
        }
    }
    const double n = static_cast<double>(count);
    TensorStats s;
    s.min = lo;
    s.max = hi;
    s.mean = sum / n;
    s.rms = std::sqrt(sumSq / n);
    s.nonFinite = bad;
    return s;
}

} // namespace pocket

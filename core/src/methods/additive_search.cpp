// AQLM's code search on a layer's output error (see pocket/methods/additive_search.h).
#include "pocket/methods/additive_search.h"

#include <algorithm>

namespace pocket::additive {
MatrixState matrixState(const WeightMatrix& m, int g, bool useHessian, double damp)
{
    MatrixState s;
    s.rows = m.ref.rows;
    s.cols = m.ref.cols;
    s.groups = (s.cols + g - 1) / g;
    s.padded = s.groups * g;
    const at::Tensor w = at::from_blob(const_cast<float*>(m.values.data()), {s.rows, s.cols}, at::kFloat);
    s.w = at::constant_pad_nd(w, {0, s.padded - s.cols}).contiguous();
    s.h = at::zeros({s.padded, s.padded}, at::kFloat);
    if (useHessian) {
        const at::Tensor raw = at::from_blob(const_cast<float*>(m.hessian.data()), {s.cols, s.cols}, at::kFloat);
        const double meanDiag = raw.diagonal().mean().item<double>();
        s.h.narrow(0, 0, s.cols).narrow(1, 0, s.cols).copy_(meanDiag > 0 ? raw / meanDiag : raw);
    } else {
        s.h.diagonal().narrow(0, 0, s.cols).fill_(1.0f);
    }
    s.h.diagonal().add_(damp);
    return s;
}

at::Tensor sumCodewords(const at::Tensor& stacked, const at::Tensor& codes)
{
    const std::int64_t m = codes.size(-1), k = stacked.size(0) / m;
    std::vector<std::int64_t> shape = codes.sizes().vec();
    const at::Tensor flat = (codes + at::arange(m, at::kLong) * k).reshape({-1});
    shape.push_back(stacked.size(1));
    return stacked.index_select(0, flat).view(shape).sum(-2);
}

at::Tensor codewordSums(const at::Tensor& codebooks, const at::Tensor& codes, std::int64_t rows, std::int64_t padded)
{
    const at::Tensor sums = sumCodewords(codebooks.reshape({codebooks.size(0) * codebooks.size(1), codebooks.size(2)}), codes); // [groups, rows, g]
    return sums.permute({1, 0, 2}).reshape({rows, padded});
}

at::Tensor beamStep(const at::Tensor& scores, const at::Tensor& book, std::int64_t beam, at::Tensor& partial, at::Tensor& paths)
{
    const std::int64_t rows = scores.size(0), k = book.size(0), g = book.size(1), depth = paths.size(2);
    const std::int64_t width = std::min<std::int64_t>(beam, scores.size(1) * k);
    const auto [top, arg] = scores.reshape({rows, -1}).topk(width, 1, /*largest=*/false, /*sorted=*/true);
    const at::Tensor parent = arg.div(k, "floor"), code = arg.remainder(k);
    partial = partial.gather(1, parent.unsqueeze(2).expand({rows, width, g})) + book.index_select(0, code.reshape({-1})).view({rows, width, g});
    paths = at::cat({paths.gather(1, parent.unsqueeze(2).expand({rows, width, depth})), code.unsqueeze(2)}, 2);
    return top;
}

// Beam search over the M codebooks in order for rows sharing the metric A = H_bb: minimises
// s^2 y^T A y - 2 s y.a over y = sum_m C_m[c_m]. Returns the best sum [rows, g], its codes
// [rows, M] and its cost [rows]. With a beam of at least K^(M-1) every combination is tried.
std::tuple<at::Tensor, at::Tensor, at::Tensor> beamSearch(const at::Tensor& codebooks, const at::Tensor& a, const at::Tensor& metric,
                                                          const at::Tensor& scale, std::int64_t beam)
{
    const std::int64_t rows = a.size(0), m = codebooks.size(0), k = codebooks.size(1), g = codebooks.size(2);
    const at::Tensor s = scale.view({rows, 1, 1}), s2 = s * s;
    at::Tensor partial = at::zeros({rows, 1, g}, at::kFloat);
    at::Tensor cost = at::zeros({rows, 1}, at::kFloat);
    at::Tensor paths = at::zeros({rows, 1, 0}, at::kLong);
    for (std::int64_t b = 0; b < m; ++b) {
        const at::Tensor book = codebooks[b];                     // [K, g]
        const at::Tensor quad = (book.mm(metric) * book).sum(1);  // [K]
        const at::Tensor v = 2 * s2 * at::matmul(partial, metric) - 2 * s * a.unsqueeze(1);
        const at::Tensor scores = cost.unsqueeze(2) + at::matmul(v, book.t()) + s2 * quad.view({1, 1, k}); // [rows, W, K]
        cost = beamStep(scores, book, beam, partial, paths);
    }
    return {partial.select(1, 0), paths.select(1, 0), cost.select(1, 0)};
}

// One sweep of the code search over the column groups of one matrix, rows in chunks; a group's
// codes change only where the search found a lower cost than the current codes'.
void searchCodes(MatrixState& s, const at::Tensor& codebooks, std::int64_t beam)
{
    const std::int64_t g = codebooks.size(2), k = codebooks.size(1);
    const std::int64_t chunk = std::max<std::int64_t>(1, (std::int64_t{1} << 23) / (std::min(beam, k) * k));
    const at::Tensor y = codewordSums(codebooks, s.codes, s.rows, s.padded);
    for (std::int64_t r0 = 0; r0 < s.rows; r0 += chunk) {
        const std::int64_t n = std::min(chunk, s.rows - r0);
        const at::Tensor scale = s.scale.narrow(0, r0, n);
        at::Tensor wHat = y.narrow(0, r0, n) * scale.unsqueeze(1);
        at::Tensor u = (s.w.narrow(0, r0, n) - wHat).mm(s.h); // E H
        for (std::int64_t b = 0; b < s.groups; ++b) {
            const at::Tensor metric = s.h.narrow(0, b * g, g).narrow(1, b * g, g);
            const at::Tensor current = wHat.narrow(1, b * g, g);
            const at::Tensor a = u.narrow(1, b * g, g) + current.mm(metric);
            auto [best, codes, cost] = beamSearch(codebooks, a, metric, scale, beam);
            const at::Tensor yNow = y.narrow(0, r0, n).narrow(1, b * g, g);
            const at::Tensor costNow = scale.pow(2) * (yNow.mm(metric) * yNow).sum(1) - 2 * scale * (yNow * a).sum(1);
            const at::Tensor better = cost < costNow;
            const at::Tensor newW = at::where(better.unsqueeze(1), best, yNow) * scale.unsqueeze(1);
            const at::Tensor delta = newW - current;
            at::Tensor codeSlice = s.codes[b].narrow(0, r0, n);
            codeSlice.copy_(at::where(better.unsqueeze(1), codes, codeSlice));
            u.sub_(delta.mm(s.h.narrow(0, b * g, g)));
            wHat.narrow(1, b * g, g).copy_(newW);
        }
    }
}

} // namespace pocket::additive

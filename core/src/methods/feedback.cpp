#include "pocket/methods/feedback.h"

#include "pocket/methods/vq_kernels.h"

#include <cmath>

namespace pocket::vqcommon {

bool choleskyLower(std::vector<double>& a, std::int64_t n)
{
    for (std::int64_t j = 0; j < n; ++j) {
        double diag = a[j * n + j];
        for (std::int64_t k = 0; k < j; ++k)
            diag -= a[j * n + k] * a[j * n + k];
        if (!(diag > 0))
            return false;
        const double l = std::sqrt(diag);
        a[j * n + j] = l;
        for (std::int64_t i = j + 1; i < n; ++i) {
            double v = a[i * n + j];
            for (std::int64_t k = 0; k < j; ++k)
                v -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = v / l;
        }
        for (std::int64_t k = j + 1; k < n; ++k)
            a[j * n + k] = 0;
    }
    return true;
}

bool inverseCholeskyUpper(std::vector<double> h, std::int64_t n, std::vector<double>& u)
{
    if (!choleskyLower(h, n))
        return false;
    std::vector<double> linv(static_cast<std::size_t>(n * n), 0.0); // L^-1, lower
    for (std::int64_t i = 0; i < n; ++i) {
        linv[i * n + i] = 1 / h[i * n + i];
        for (std::int64_t j = 0; j < i; ++j) {
            double v = 0;
            for (std::int64_t k = j; k < i; ++k)
                v -= h[i * n + k] * linv[k * n + j];
            linv[i * n + j] = v / h[i * n + i];
        }
    }
    std::vector<double> hinv(static_cast<std::size_t>(n * n), 0.0);
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j <= i; ++j) {
            double v = 0;
            for (std::int64_t k = i; k < n; ++k)
                v += linv[k * n + i] * linv[k * n + j];
            hinv[i * n + j] = hinv[j * n + i] = v;
        }
    if (!choleskyLower(hinv, n))
        return false;
    u.assign(static_cast<std::size_t>(n * n), 0.0);
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = i; j < n; ++j)
            u[i * n + j] = hinv[j * n + i];
    return true;
}

Status assignWithFeedback(const WeightMatrix& m, std::int64_t k, int d, double damp, const std::vector<float>& rowScale,
                          const BlockBooks& blockBooks, std::int32_t* idx, int threads, const std::string& who)
{
    const std::int64_t rows = m.ref.rows, cols = m.ref.cols;
    if (cols % d != 0)
        return Error::usage(who + ": " + m.ref.name + ": error feedback needs d to divide the " + std::to_string(cols) + " columns", "settings");
    if (m.hessian.size() != static_cast<std::size_t>(cols * cols))
        return Error::usage(who + ": " + m.ref.name + ": error feedback needs calibration data", "calibration text");
    std::vector<double> w(m.values.begin(), m.values.end());
    std::vector<double> h(m.hessian.begin(), m.hessian.end());
    double meanDiag = 0;
    for (std::int64_t i = 0; i < cols; ++i) {
        if (h[i * cols + i] == 0) { // a dead input: its weights never matter
            h[i * cols + i] = 1;
            for (std::int64_t r = 0; r < rows; ++r)
                w[r * cols + i] = 0;
        }
        meanDiag += h[i * cols + i] / static_cast<double>(cols);
    }
    for (std::int64_t i = 0; i < cols; ++i)
        h[i * cols + i] += damp * meanDiag;
    std::vector<double> u;
    if (!inverseCholeskyUpper(std::move(h), cols, u))
        return Error::usage(who + ": " + m.ref.name + ": the Hessian is not positive definite; try a larger damp", "settings");
    std::vector<float> books, scaledBook(static_cast<std::size_t>(k * d)), scaled(static_cast<std::size_t>(rows * d));
    std::vector<std::int32_t> bookOfRow, codes(static_cast<std::size_t>(rows));
    for (std::int64_t c0 = 0; c0 < cols; c0 += d) {
        blockBooks(c0 / d, books, bookOfRow);
        for (std::int64_t r = 0; r < rows; ++r) {
            const double s = rowScale.empty() ? 1.0 : rowScale[static_cast<std::size_t>(r)];
            for (int j = 0; j < d; ++j)
                scaled[r * d + j] = static_cast<float>(w[r * cols + c0 + j] / s / u[(c0 + j) * cols + c0 + j]);
        }
        for (std::int64_t r0 = 0; r0 < rows;) {
            std::int64_t r1 = r0 + 1;
            while (r1 < rows && bookOfRow[r1] == bookOfRow[r0])
                ++r1;
            const float* book = &books[static_cast<std::size_t>(bookOfRow[r0]) * k * d];
            for (std::int64_t c = 0; c < k; ++c)
                for (int j = 0; j < d; ++j)
                    scaledBook[c * d + j] = static_cast<float>(book[c * d + j] / u[(c0 + j) * cols + c0 + j]);
            nearestCodewords(&scaled[r0 * d], r1 - r0, scaledBook.data(), k, d, &codes[r0], nullptr, threads);
            r0 = r1;
        }
        for (std::int64_t r = 0; r < rows; ++r)
            idx[(c0 / d) * rows + r] = codes[r];
        for (int j = 0; j < d; ++j) {
            const std::int64_t col = c0 + j;
            const double diag = u[col * cols + col];
            for (std::int64_t r = 0; r < rows; ++r) {
                const double s = rowScale.empty() ? 1.0 : rowScale[static_cast<std::size_t>(r)];
                const double q = s * books[(static_cast<std::size_t>(bookOfRow[r]) * k + codes[r]) * d + j];
                const double err = (w[r * cols + col] - q) / diag;
                double* row = &w[r * cols];
                const double* ucol = &u[col * cols];
                for (std::int64_t c = col + 1; c < cols; ++c)
                    row[c] -= err * ucol[c];
            }
        }
    }
    return {};
}

} // namespace pocket::vqcommon

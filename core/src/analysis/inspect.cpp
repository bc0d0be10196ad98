// The Inspect tab's figures for one matrix of an archive (see inspect.h). The codebook view reads
// the column-blocks payload both codebook methods write (docs/archive-format.md: "d", "K",
// "codebook" fp16, "indices/<matrix>" packed, optional "row_scales/<matrix>" fp16 and pocketllm's
// fp32 group "scale"), so the sub-vectors and the codewords are compared in the same units.
#include "pocket/analysis/inspect.h"

#include "pocket/archive/model_archive.h"
#include "pocket/io/dtype.h"
#include "pocket/methods/vq_kernels.h"
#include "pocket/support/parallel.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <thread>

namespace pocket {

namespace {

using json = nlohmann::json;

bool stop(const InspectOptions& o) { return o.cancelled && o.cancelled(); }

WeightHistogram histogramOf(const std::vector<float>& original, const std::vector<float>& decoded, int bins)
{
    WeightHistogram h;
    float lo = std::numeric_limits<float>::max(), hi = std::numeric_limits<float>::lowest();
    for (const std::vector<float>* v : {&original, &decoded})
        for (float x : *v)
            if (std::isfinite(x)) {
                lo = std::min(lo, x);
                hi = std::max(hi, x);
            }
    if (lo > hi)
        lo = hi = 0;
    if (hi == lo)
        hi = lo + 1e-6f;
    h.lo = lo;
    h.hi = hi;
    auto count = [&](const std::vector<float>& v, std::vector<double>& out) {
        out.assign(static_cast<std::size_t>(bins), 0);
        const double width = (h.hi - h.lo) / bins;
        for (float x : v) {
            if (!std::isfinite(x))
                continue;
            const auto b = static_cast<std::int64_t>((x - h.lo) / width);
            out[static_cast<std::size_t>(std::clamp<std::int64_t>(b, 0, bins - 1))] += 1;
        }
    };
    if (!original.empty())
        count(original, h.original);
    count(decoded, h.decoded);
    return h;
}

ErrorMap errorMapOf(const std::vector<float>& original, const std::vector<float>& decoded, std::int64_t rows, std::int64_t cols, int maxCells,
                    int threads)
{
    ErrorMap m;
    m.rowsPerCell = (rows + maxCells - 1) / maxCells;
    m.colsPerCell = (cols + maxCells - 1) / maxCells;
    m.rows = static_cast<int>((rows + m.rowsPerCell - 1) / m.rowsPerCell);
    m.cols = static_cast<int>((cols + m.colsPerCell - 1) / m.colsPerCell);
    m.mean.assign(static_cast<std::size_t>(m.rows) * m.cols, 0);
    m.rms.assign(m.mean.size(), 0);
    parallelFor(m.rows, threads, 1, [&](std::int64_t begin, std::int64_t end) {
        std::vector<double> sum(static_cast<std::size_t>(m.cols)), sq(static_cast<std::size_t>(m.cols));
        for (std::int64_t cr = begin; cr < end; ++cr) {
            std::fill(sum.begin(), sum.end(), 0);
            std::fill(sq.begin(), sq.end(), 0);
            const std::int64_t r0 = cr * m.rowsPerCell, r1 = std::min(rows, r0 + m.rowsPerCell);
            for (std::int64_t r = r0; r < r1; ++r)
                for (std::int64_t c = 0; c < cols; ++c) {
                    const double e = static_cast<double>(original[static_cast<std::size_t>(r * cols + c)]) - decoded[static_cast<std::size_t>(r * cols + c)];
                    sum[static_cast<std::size_t>(c / m.colsPerCell)] += e;
                    sq[static_cast<std::size_t>(c / m.colsPerCell)] += e * e;
                }
            for (int cc = 0; cc < m.cols; ++cc) {
                const std::int64_t c0 = cc * m.colsPerCell, c1 = std::min(cols, c0 + m.colsPerCell);
                const double n = static_cast<double>((r1 - r0) * (c1 - c0));
                m.mean[static_cast<std::size_t>(cr * m.cols + cc)] = static_cast<float>(sum[static_cast<std::size_t>(cc)] / n);
                m.rms[static_cast<std::size_t>(cr * m.cols + cc)] = static_cast<float>(std::sqrt(sq[static_cast<std::size_t>(cc)] / n));
            }
        }
    });
    return m;
}

// The payload facts the codebook view needs; false (with a note) when the payload is not a
// column-blocks codebook payload.
struct CodebookPayload {
    int d = 0, dim = 0, books = 1, rlnGroup = 0;
    std::int64_t k = 0;
    int bits = 0;
    std::vector<float> codebook; // books*k x dim
    std::vector<std::int32_t> codes; // count x books
    std::vector<float> rowScales;    // empty: none
    float groupScale = 1;
};

Result<CodebookPayload> readCodebookPayload(const GroupPayload& p, const std::string& matrix, std::int64_t rows, std::int64_t cols)
{
    CodebookPayload c;
    const json meta = json::parse(p.metaJson, nullptr, false);
    const json::const_iterator layout = meta.is_object() ? meta.find("layout") : meta.end();
    if (!meta.is_object() || layout == meta.end() || *layout != "column-blocks" || !p.section("codebook"))
        return Error::unsupported(p.methodId + " stores no codebook of sub-vectors");
    // The archive is input: every field is checked for its type and range before it sizes anything.
    auto field = [&](const char* key, std::int64_t absent, std::int64_t lo, std::int64_t hi, std::int64_t& out) {
        const auto it = meta.find(key);
        out = it == meta.end() ? absent : it->is_number_integer() ? it->get<std::int64_t>() : lo - 1;
        return out >= lo && out <= hi;
    };
    std::int64_t d = 0, latent = 0, books = 0, group = 0, bits = 0;
    const bool ok = field("d", 0, 1, 4096, d) && field("K", 0, 1, std::int64_t(1) << 32, c.k) && field("latent", 0, 0, 4096, latent) &&
                    field("codebooks", 1, 1, 64, books) && field("rln_group", 0, 0, std::int64_t(1) << 31, group) &&
                    field("index_bits", 0, 1, 32, bits);
    c.d = static_cast<int>(d);
    c.dim = static_cast<int>(latent > 0 ? latent : d);
    c.books = static_cast<int>(books);
    c.rlnGroup = static_cast<int>(group);
    c.bits = static_cast<int>(bits);
    const PayloadSection* book = p.section("codebook");
    const PayloadSection* idx = p.section("indices/" + matrix);
    if (!ok || !idx || book->bytes.size() / 2 / static_cast<std::size_t>(c.books * c.dim) != static_cast<std::size_t>(c.k) ||
        book->bytes.size() != static_cast<std::size_t>(2 * c.books * c.dim) * static_cast<std::size_t>(c.k))
        return Error("the payload of " + matrix + " has an unexpected codebook layout");
    c.codebook.resize(static_cast<std::size_t>(c.books * c.k * c.dim));
    convertToFloat(DType::F16, book->bytes.data(), c.codebook.size(), c.codebook.data());
    const std::int64_t count = rows * ((cols + c.d - 1) / c.d);
    c.codes.resize(static_cast<std::size_t>(count * c.books));
    if (!unpackBits(idx->bytes.data(), idx->bytes.size(), count * c.books, c.bits, c.codes.data()))
        return Error("the indices of " + matrix + " are truncated");
    for (std::int32_t& code : c.codes)
        if (code < 0 || code >= c.k)
            return Error("an index of " + matrix + " is out of range");
    if (const PayloadSection* rs = p.section("row_scales/" + matrix)) {
        if (rs->bytes.size() != static_cast<std::size_t>(2 * rows))
            return Error("the row scales of " + matrix + " have the wrong size");
        c.rowScales.resize(static_cast<std::size_t>(rows));
        convertToFloat(DType::F16, rs->bytes.data(), c.rowScales.size(), c.rowScales.data());
    }
    if (const PayloadSection* s = p.section("scale"); s && s->bytes.size() == 4)
        std::memcpy(&c.groupScale, s->bytes.data(), 4);
    return c;
}

// The matrix in the codebook's units (row scales and the group scale divided out), as sub-vectors.
std::vector<float> subvectorsInCodebookUnits(const std::vector<float>& w, std::int64_t rows, std::int64_t cols, const CodebookPayload& c)
{
    std::vector<float> scaled(w);
    for (std::int64_t r = 0; r < rows; ++r) {
        const float s = (c.rowScales.empty() ? 1.0f : c.rowScales[static_cast<std::size_t>(r)]) * c.groupScale;
        for (std::int64_t j = 0; j < cols; ++j)
            scaled[static_cast<std::size_t>(r * cols + j)] = s != 0 ? scaled[static_cast<std::size_t>(r * cols + j)] / s : 0;
    }
    std::vector<float> sub(static_cast<std::size_t>(rows * ((cols + c.d - 1) / c.d) * c.d));
    toSubvectors(scaled.data(), rows, cols, c.d, sub.data());
    return sub;
}

// Projection axes of `points` (n x d): two unit vectors and the share of the variance along each.
void pcaAxes(const std::vector<float>& points, int d, std::vector<double>& axes, double explained[2], std::vector<double>& mean)
{
    const std::int64_t n = static_cast<std::int64_t>(points.size()) / d;
    mean.assign(static_cast<std::size_t>(d), 0);
    for (std::int64_t i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j)
            mean[static_cast<std::size_t>(j)] += points[static_cast<std::size_t>(i * d + j)];
    for (double& m : mean)
        m /= std::max<std::int64_t>(1, n);
    std::vector<double> cov(static_cast<std::size_t>(d * d), 0);
    for (std::int64_t i = 0; i < n; ++i)
        for (int a = 0; a < d; ++a) {
            const double xa = points[static_cast<std::size_t>(i * d + a)] - mean[static_cast<std::size_t>(a)];
            for (int b = a; b < d; ++b)
                cov[static_cast<std::size_t>(a * d + b)] += xa * (points[static_cast<std::size_t>(i * d + b)] - mean[static_cast<std::size_t>(b)]);
        }
    double trace = 0;
    for (int a = 0; a < d; ++a) {
        for (int b = a; b < d; ++b)
            cov[static_cast<std::size_t>(b * d + a)] = cov[static_cast<std::size_t>(a * d + b)];
        trace += cov[static_cast<std::size_t>(a * d + a)];
    }
    double values[2];
    leadingEigenvectors(cov, d, axes, values);
    for (int i = 0; i < 2; ++i)
        explained[i] = trace > 0 ? values[i] / trace : 0;
}

void project(const float* x, int d, const std::vector<double>& axes, const std::vector<double>& mean, std::vector<float>& out)
{
    for (int a = 0; a < 2; ++a) {
        double v = 0;
        for (int j = 0; j < d; ++j)
            v += (x[j] - mean[static_cast<std::size_t>(j)]) * axes[static_cast<std::size_t>(a * d + j)];
        out.push_back(static_cast<float>(v));
    }
}

// Long: one pass per figure of the view (axes, points, codewords, decoder map, usage, tiles).
CodebookView codebookViewOf(const CodebookPayload& c, const std::vector<float>& originalSub, const std::vector<float>& decodedSub,
                            bool decoder, const InspectOptions& o)
{
    CodebookView v;
    v.d = c.d;
    v.dim = c.dim;
    v.codewords = c.k;
    v.rlnGroup = decoder ? c.rlnGroup : 0;
    const std::vector<float>& pts = originalSub.empty() ? decodedSub : originalSub;
    const std::int64_t n = static_cast<std::int64_t>(pts.size()) / c.d;
    // Axes: the coordinates for d = 2 (d = 1: the value and 0), else PCA of the sub-vectors.
    std::vector<double> axes(static_cast<std::size_t>(2 * c.d), 0), mean(static_cast<std::size_t>(c.d), 0);
    if (c.d <= 2) { // the coordinates themselves, with the share of the variance each carries
        axes[0] = 1;
        if (c.d == 2)
            axes[static_cast<std::size_t>(c.d + 1)] = 1;
        double sum[2] = {0, 0}, sq[2] = {0, 0};
        for (std::int64_t i = 0; i < n; ++i)
            for (int j = 0; j < c.d; ++j) {
                sum[j] += pts[static_cast<std::size_t>(i * c.d + j)];
                sq[j] += static_cast<double>(pts[static_cast<std::size_t>(i * c.d + j)]) * pts[static_cast<std::size_t>(i * c.d + j)];
            }
        double var[2] = {0, 0};
        for (int j = 0; j < c.d && n > 0; ++j)
            var[j] = std::max(0.0, sq[j] / n - (sum[j] / n) * (sum[j] / n));
        const double total = var[0] + var[1];
        v.explained[0] = total > 0 ? var[0] / total : 1;
        v.explained[1] = total > 0 ? var[1] / total : 0;
    } else {
        v.pca = true;
        pcaAxes(pts, c.d, axes, v.explained, mean);
    }
    v.axes = axes;
    v.center = mean;
    const std::int64_t step = std::max<std::int64_t>(1, n / std::max(1, o.samplePoints));
    for (std::int64_t i = 0; i < n; i += step)
        project(&pts[static_cast<std::size_t>(i * c.d)], c.d, axes, mean, v.points);
    // Codewords (first codebook): on the same axes when they live in the sub-vectors' space.
    if (c.dim == c.d) {
        for (std::int64_t k = 0; k < c.k; ++k)
            project(&c.codebook[static_cast<std::size_t>(k * c.dim)], c.d, axes, mean, v.codebook);
    } else {
        std::vector<float> book(c.codebook.begin(), c.codebook.begin() + c.k * c.dim);
        std::vector<double> bookAxes, bookMean;
        double bookExplained[2];
        pcaAxes(book, c.dim, bookAxes, bookExplained, bookMean);
        for (std::int64_t k = 0; k < c.k; ++k)
            project(&book[static_cast<std::size_t>(k * c.dim)], c.dim, bookAxes, bookMean, v.codebook);
        v.note += "The codewords (latent size " + std::to_string(c.dim) + ") are drawn on their own principal axes. ";
    }
    // Usage of the first codebook by this matrix.
    v.usage.assign(static_cast<std::size_t>(c.k), 0);
    for (std::int64_t i = 0; i < n; ++i)
        ++v.usage[static_cast<std::size_t>(c.codes[static_cast<std::size_t>(i * c.books)])];
    double entropy = 0;
    for (std::int64_t u : v.usage) {
        v.dead += u == 0;
        if (u > 0)
            entropy -= static_cast<double>(u) / n * std::log(static_cast<double>(u) / n);
    }
    v.indexPerplexity = std::exp(entropy);
    if (c.books > 1)
        v.note += "Codebook 1 of " + std::to_string(c.books) + " is shown (a sub-vector decodes from the sum of one codeword of each). ";
    if (!decoder)
        return v;
    // Where the decoder maps each codeword: the mean decoded sub-vector of its users, projected.
    std::vector<double> sums(static_cast<std::size_t>(c.k * c.d), 0);
    for (std::int64_t i = 0; i < n && c.books == 1; ++i) {
        const std::int64_t k = c.codes[static_cast<std::size_t>(i)];
        for (int j = 0; j < c.d; ++j)
            sums[static_cast<std::size_t>(k * c.d + j)] += decodedSub[static_cast<std::size_t>(i * c.d + j)];
    }
    std::vector<float> meanDecoded(static_cast<std::size_t>(c.d));
    for (std::int64_t k = 0; k < c.k && c.books == 1; ++k) {
        const std::int64_t u = v.usage[static_cast<std::size_t>(k)];
        if (u == 0) {
            v.decodedCodewords.insert(v.decodedCodewords.end(), 2, std::numeric_limits<float>::quiet_NaN());
            continue;
        }
        for (int j = 0; j < c.d; ++j)
            meanDecoded[static_cast<std::size_t>(j)] = static_cast<float>(sums[static_cast<std::size_t>(k * c.d + j)] / static_cast<double>(u));
        project(meanDecoded.data(), c.d, axes, mean, v.decodedCodewords);
    }
    // RLN3 normalises each tile of G consecutive latents (the codewords of G sub-vectors) together.
    const std::int64_t g = c.rlnGroup > 0 ? c.rlnGroup : 1;
    const std::int64_t tiles = n / g;
    const std::int64_t tileStep = std::max<std::int64_t>(1, tiles / std::max(1, o.maxTiles));
    for (std::int64_t t = 0; t < tiles && c.books == 1; t += tileStep) {
        double s = 0, s2 = 0;
        for (std::int64_t i = t * g; i < (t + 1) * g; ++i) {
            const float* q = &c.codebook[static_cast<std::size_t>(c.codes[static_cast<std::size_t>(i)] * c.dim)];
            for (int j = 0; j < c.dim; ++j) {
                s += q[j];
                s2 += static_cast<double>(q[j]) * q[j];
            }
        }
        const double count = static_cast<double>(g * c.dim), m = s / count;
        v.tileMean.push_back(static_cast<float>(m));
        v.tileStd.push_back(static_cast<float>(std::sqrt(std::max(0.0, s2 / count - m * m))));
    }
    return v;
}

} // namespace

void leadingEigenvectors(const std::vector<double>& symmetric, int d, std::vector<double>& vectors, double values[2])
{
    std::vector<double> a(symmetric), v(static_cast<std::size_t>(d * d), 0);
    auto at = [d](std::vector<double>& m, int i, int j) -> double& { return m[static_cast<std::size_t>(i * d + j)]; };
    for (int i = 0; i < d; ++i)
        at(v, i, i) = 1;
    for (int sweep = 0; sweep < 100; ++sweep) {
        double off = 0;
        for (int p = 0; p < d; ++p)
            for (int q = p + 1; q < d; ++q)
                off += at(a, p, q) * at(a, p, q);
        if (off < 1e-30)
            break;
        for (int p = 0; p < d; ++p)
            for (int q = p + 1; q < d; ++q) {
                if (std::abs(at(a, p, q)) < 1e-300)
                    continue;
                const double theta = (at(a, q, q) - at(a, p, p)) / (2 * at(a, p, q));
                const double t = (theta >= 0 ? 1 : -1) / (std::abs(theta) + std::sqrt(theta * theta + 1));
                const double cs = 1 / std::sqrt(t * t + 1), sn = t * cs;
                for (int k = 0; k < d; ++k) { // A <- A J (columns p, q)
                    const double akp = at(a, k, p), akq = at(a, k, q);
                    at(a, k, p) = cs * akp - sn * akq;
                    at(a, k, q) = sn * akp + cs * akq;
                }
                for (int k = 0; k < d; ++k) { // A <- J^T A (rows p, q)
                    const double apk = at(a, p, k), aqk = at(a, q, k);
                    at(a, p, k) = cs * apk - sn * aqk;
                    at(a, q, k) = sn * apk + cs * aqk;
                }
                for (int k = 0; k < d; ++k) { // V <- V J
                    const double vkp = at(v, k, p), vkq = at(v, k, q);
                    at(v, k, p) = cs * vkp - sn * vkq;
                    at(v, k, q) = sn * vkp + cs * vkq;
                }
            }
    }
    std::vector<int> order(static_cast<std::size_t>(d));
    for (int i = 0; i < d; ++i)
        order[static_cast<std::size_t>(i)] = i;
    std::sort(order.begin(), order.end(), [&](int x, int y) { return at(a, x, x) > at(a, y, y); });
    vectors.assign(static_cast<std::size_t>(2 * d), 0);
    for (int r = 0; r < 2; ++r) {
        const int col = r < d ? order[static_cast<std::size_t>(r)] : -1;
        values[r] = col >= 0 ? at(a, col, col) : 0;
        for (int k = 0; k < d && col >= 0; ++k)
            vectors[static_cast<std::size_t>(r * d + k)] = at(v, k, col);
    }
}

Result<std::vector<std::string>> archiveMatrixNames(const std::string& archivePath)
{
    auto archive = Archive::open(archivePath, ContainerReader::Verify::ManifestOnly);
    if (!archive)
        return archive.error();
    std::vector<std::string> names;
    for (const ArchiveGroup& g : (*archive)->manifest().groups)
        for (const MatrixResult& m : g.payload.matrices)
            names.push_back(m.ref.name);
    return names;
}

// Long: the stages in order (payload, decode, original, histogram, heat map, codebook view).
Result<MatrixInspection> inspectMatrix(const std::string& archivePath, const std::string& matrixName, const Checkpoint* original,
                                       const MethodRegistry& registry, const InspectOptions& options)
{
    auto archive = Archive::open(archivePath, ContainerReader::Verify::ManifestOnly);
    if (!archive)
        return archive.error();
    const ArchiveManifest& manifest = (*archive)->manifest();
    std::size_t group = manifest.groups.size(), index = 0;
    for (std::size_t gi = 0; gi < manifest.groups.size() && group == manifest.groups.size(); ++gi)
        for (std::size_t mi = 0; mi < manifest.groups[gi].payload.matrices.size(); ++mi)
            if (manifest.groups[gi].payload.matrices[mi].ref.name == matrixName) {
                group = gi;
                index = mi;
                break;
            }
    if (group == manifest.groups.size())
        return fileError(archivePath, "no compressed matrix " + matrixName);
    auto payload = (*archive)->groupPayload(group);
    if (!payload)
        return payload.error();
    MatrixInspection out;
    const MatrixRef ref = payload->matrices[index].ref;
    out.name = matrixName;
    out.methodId = payload->methodId;
    out.groupId = payload->groupId;
    out.rows = ref.rows;
    out.cols = ref.cols;
    auto method = registry.find(payload->methodId);
    if (!method)
        return method.error().prefixed(archivePath);
    const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    std::vector<float> decoded(static_cast<std::size_t>(ref.rows * ref.cols));
    {
        auto decoder = (*method)->prepareDecoder(*payload);
        if (!decoder)
            return decoder.error().prefixed(archivePath);
        POCKET_TRY((*decoder)->decodeMatrix(index, decoded.data(), threads));
    }
    if (stop(options))
        return Error::cancelled();
    std::vector<float> orig;
    if (original) {
        const TensorInfo* info = original->find(matrixName);
        if (!info || info->shape != std::vector<std::int64_t>{ref.rows, ref.cols}) {
            out.note += "The open model has no " + std::to_string(ref.rows) + " x " + std::to_string(ref.cols) + " matrix " + matrixName +
                        ": it is not this archive's original (" + manifest.sourceName + "). ";
        } else {
            auto t = original->load(matrixName);
            if (!t)
                return t.error();
            orig = t->toFloat();
            out.hasOriginal = true;
            const std::string openName = std::filesystem::path(original->path()).filename().string();
            if (!manifest.sourceName.empty() && openName != manifest.sourceName)
                out.note += "The error is against " + openName + ", but the archive was made from " + manifest.sourceName +
                            ": if that is another model, the error shown is meaningless. ";
        }
    } else {
        out.note += "Without the original model (" + manifest.sourceName + ") there is no error to show. ";
    }
    if (out.hasOriginal) {
        double sig = 0, err = 0;
        for (std::size_t i = 0; i < orig.size(); ++i) {
            sig += static_cast<double>(orig[i]) * orig[i];
            err += (static_cast<double>(orig[i]) - decoded[i]) * (static_cast<double>(orig[i]) - decoded[i]);
        }
        out.mse = err / static_cast<double>(orig.size());
        out.snrDb = err > 0 ? 10 * std::log10(sig / err) : 99;
        out.error = errorMapOf(orig, decoded, ref.rows, ref.cols, std::max(1, options.maxCells), threads);
    }
    out.histogram = histogramOf(orig, decoded, std::max(2, options.bins));
    if (stop(options))
        return Error::cancelled();
    auto book = readCodebookPayload(*payload, matrixName, ref.rows, ref.cols);
    if (!book) {
        out.note += book.message() + ": no codebook view. ";
        return out;
    }
    const std::vector<float> originalSub = out.hasOriginal ? subvectorsInCodebookUnits(orig, ref.rows, ref.cols, *book) : std::vector<float>{};
    const std::vector<float> decodedSub = subvectorsInCodebookUnits(decoded, ref.rows, ref.cols, *book);
    out.codebook = codebookViewOf(*book, originalSub, decodedSub, payload->methodId == "pocketllm", options);
    return out;
}

} // namespace pocket

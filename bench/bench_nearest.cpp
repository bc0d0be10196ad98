// Nearest-codeword search at the PocketLLM trainer's shape (K = 32768, batch 16384, dim 4 and 8):
// pocket::nearestCodewords against the naive LibTorch broadcast and a chunked LibTorch matmul.
//
// Run (RelWithDebInfo, the default build type):
//   cmake -S . -B build-vq -G Ninja && ninja -C build-vq bench_nearest && ./build-vq/bin/bench_nearest [--threads N]
// POCKET_VQ_ISA=avx2 (or generic) caps the instruction set of our search; the default uses the
// widest the CPU has, and the bench times both when they differ.
#include "pocket/methods/vq_kernels.h"

#include <torch/torch.h>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::int64_t kCodewords = 32768;
constexpr std::int64_t kBatch = 16384;
constexpr std::int64_t kNaiveBatch = 1024;
constexpr std::int64_t kTorchChunk = 1024;

double seconds(std::chrono::steady_clock::time_point since)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

double peakRssMiB()
{
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

// Best of `runs` wall times of f().
template <class F>
double bestOf(int runs, F&& f)
{
    double best = 1e300;
    for (int r = 0; r < runs; ++r) {
        const auto start = std::chrono::steady_clock::now();
        f();
        best = std::min(best, seconds(start));
    }
    return best;
}

// What nearestCodewords allocates besides its output (mirrors vq_kernels.cpp): the centred,
// transposed, padded codebook with norms and mean, and per thread the broadcast tile and a chunk
// of running minima.
double ourExtraBytes(int dim, int threads)
{
    const double stride = static_cast<double>((kCodewords + 15) / 16 * 16);
    const double codebook = ((dim + 15) / 16 * 16 + stride * (dim + 1)) * 4.0;
    const double perThread = (16.0 * dim * 16 + 256) * 4.0;
    return codebook + threads * perThread;
}

double exactDistance(const float* z, const float* c, int dim)
{
    double sum = 0;
    for (int i = 0; i < dim; ++i)
        sum += (static_cast<double>(z[i]) - c[i]) * (static_cast<double>(z[i]) - c[i]);
    return sum;
}

struct Case {
    int dim = 0;
    at::Tensor codebook; // [K, dim]
    at::Tensor z;        // [batch, dim]
    std::vector<std::int32_t> ours;
};

Case makeCase(int dim)
{
    Case c;
    c.dim = dim;
    torch::manual_seed(dim);
    c.codebook = torch::randn({kCodewords, dim});
    c.z = torch::randn({kBatch, dim});
    c.ours.resize(kBatch);
    return c;
}

// (a) ours, under each instruction-set cap; runs before any LibTorch search so that the peak RSS
// it reports is not the naive search's.
void benchOurs(Case& c, int threads)
{
    std::printf("\n== dim %d, K %lld, batch %lld, %d threads ==\n", c.dim, static_cast<long long>(kCodewords),
                static_cast<long long>(kBatch), threads);
    const char* cap = std::getenv("POCKET_VQ_ISA");
    const std::string saved = cap ? cap : "";
    std::vector<std::string> isas;
    if (cap)
        isas.push_back(cap);
    else
        isas = {"avx2", "widest"};
    for (const std::string& isa : isas) {
        if (isa == "widest")
            unsetenv("POCKET_VQ_ISA");
        else
            setenv("POCKET_VQ_ISA", isa.c_str(), 1);
        const double rssBefore = peakRssMiB();
        const double t = bestOf(5, [&] {
            pocket::nearestCodewords(c.z.data_ptr<float>(), kBatch, c.codebook.data_ptr<float>(), kCodewords, c.dim, c.ours.data(), nullptr,
                                     threads);
        });
        std::printf("(a) ours [%s]: %.4f s, %.0f vectors/s; allocates %.2f MiB; peak RSS %.1f -> %.1f MiB\n", isa.c_str(), t,
                    kBatch / t, mib(ourExtraBytes(c.dim, threads)), rssBefore, peakRssMiB());
    }
    if (cap)
        setenv("POCKET_VQ_ISA", saved.c_str(), 1);
    else
        unsetenv("POCKET_VQ_ISA");
}

void benchTorch(const Case& c)
{
    std::printf("\n== dim %d, LibTorch ==\n", c.dim);
    const int dim = c.dim;
    const at::Tensor& codebook = c.codebook;
    const at::Tensor& z = c.z;
    const float* zp = z.data_ptr<float>();
    const float* cp = codebook.data_ptr<float>();
    torch::NoGradGuard noGrad;

    // (b) the naive broadcast [batch, d, K], on a batch that fits.
    {
        const at::Tensor zs = z.slice(0, 0, kNaiveBatch);
        const double rssBefore = peakRssMiB();
        at::Tensor idx;
        const double t = bestOf(2, [&] { idx = ((zs.unsqueeze(2) - codebook.t().unsqueeze(0)).pow(2)).sum(1).argmin(1); });
        const double tensorBytes = static_cast<double>(kNaiveBatch) * dim * kCodewords * 4;
        std::printf("(b) naive torch, batch %lld: %.3f s, %.0f vectors/s; [batch,d,K] tensor %.0f MiB "
                    "(%.1f GiB at batch %lld); peak RSS %.1f -> %.1f MiB\n",
                    static_cast<long long>(kNaiveBatch), t, kNaiveBatch / t, mib(tensorBytes),
                    tensorBytes * (kBatch / kNaiveBatch) / (1024.0 * 1024.0 * 1024.0), static_cast<long long>(kBatch), rssBefore,
                    peakRssMiB());
        std::int64_t differ = 0;
        const auto* ip = idx.data_ptr<std::int64_t>();
        for (std::int64_t v = 0; v < kNaiveBatch; ++v)
            differ += ip[v] != c.ours[v];
        std::printf("    indices differing from (a): %lld of %lld\n", static_cast<long long>(differ), static_cast<long long>(kNaiveBatch));
    }

    // (c) |c|^2 - 2 z.c by torch::addmm, argmin, chunked over vectors.
    {
        at::Tensor idx = at::empty({kBatch}, at::kLong);
        // One score buffer reused by every chunk: a fresh 128 MiB tensor per chunk would be mmap'ed
        // and page-faulted each time, timing the allocator rather than the search.
        at::Tensor scores = at::empty({kTorchChunk, kCodewords});
        const double rssBefore = peakRssMiB();
        const double t = bestOf(5, [&] {
            const at::Tensor norms = codebook.pow(2).sum(1).unsqueeze(0);
            const at::Tensor ct = codebook.t().contiguous();
            for (std::int64_t c0 = 0; c0 < kBatch; c0 += kTorchChunk) {
                const std::int64_t n = std::min(kBatch, c0 + kTorchChunk) - c0;
                at::Tensor out = scores.slice(0, 0, n);
                at::addmm_out(out, norms, z.slice(0, c0, c0 + n), ct, 1.0, -2.0);
                at::Tensor idxOut = idx.slice(0, c0, c0 + n);
                at::argmin_out(idxOut, out, 1);
            }
        });
        std::printf("(c) torch addmm+argmin chunked by %lld: %.3f s, %.0f vectors/s; score chunk %.0f MiB; peak RSS %.1f -> %.1f MiB\n",
                    static_cast<long long>(kTorchChunk), t, kBatch / t, mib(static_cast<double>(kTorchChunk) * kCodewords * 4),
                    rssBefore, peakRssMiB());
        // Where (a) and (c) disagree, which pick is truly nearer (double precision)?
        std::int64_t differ = 0, oursNearer = 0, torchNearer = 0;
        const auto* ip = idx.data_ptr<std::int64_t>();
        for (std::int64_t v = 0; v < kBatch; ++v) {
            if (ip[v] == c.ours[v])
                continue;
            ++differ;
            const double a = exactDistance(zp + v * dim, cp + c.ours[v] * dim, dim);
            const double b = exactDistance(zp + v * dim, cp + ip[v] * dim, dim);
            oursNearer += a < b;
            torchNearer += b < a;
        }
        std::printf("    indices differing (a) vs (c): %lld of %lld (truly nearer: ours %lld, torch %lld, equal %lld)\n",
                    static_cast<long long>(differ), static_cast<long long>(kBatch), static_cast<long long>(oursNearer),
                    static_cast<long long>(torchNearer), static_cast<long long>(differ - oursNearer - torchNearer));
    }
}

} // namespace

int main(int argc, char** argv)
{
    int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = std::max(1, std::atoi(argv[++i]));
        } else {
            std::fprintf(stderr, "usage: %s [--threads N]\n", argv[0]);
            return 2;
        }
    }
    at::set_num_threads(threads);
    std::vector<Case> cases;
    for (int dim : {4, 8}) {
        cases.push_back(makeCase(dim));
        benchOurs(cases.back(), threads);
    }
    for (const Case& c : cases)
        benchTorch(c);
    return 0;
}

// bench/kernel_bench.cpp: the micro-kernel benchmarks of moe-bench (BM_Kernel, BM_DecodeStream; the top of
// moe_bench.cpp).
#include "bench_common.hpp"

namespace {

using bench::Index;
using bench::kGiga;
using bench::last_level_cache_bytes;
using bench::thread_count;

// ---- the micro-kernel alone ------------------------------------------------------------------------

// One thread multiplies `rows` token rows (range 0: 1, 2 or 6) by `panels` (range 1: 1, or 2 through
// kernels::multiply_panels) packed weight panels of kKernelDepth depth rows, hot in L2 (256 KiB a panel
// in f32, 64 KiB in q8): the rate the kernel computes at when memory is not the limit. A decode pass is
// bound by DRAM only when this rate, at 1 row, exceeds one thread's share of BM_ReadBandwidth; otherwise
// the kernel's instructions are.
constexpr Index kKernelDepth = 1024;

// One pass of the kernel over `panels` (1 or 2) consecutive panels from `panel` on into out (a tile's rows
// per panel) through kernels::multiply_panels, as a decode pass's go. Not inlined into the
// benchmark loop: there GCC spilled the rows-1 tile's registers (2.5x slower), where in the layer's own
// functions it keeps them.
template <class Precision>
__attribute__((noinline)) void kernel_pass(const moe::detail::kernels::ActivationRow<Precision>* rows, int count,
                                           const moe::detail::kernels::PanelMatrix<Precision>& matrix, Index panel,
                                           int panels, float (*out)[moe::detail::kernels::kPanelColumns]) {
  namespace k = moe::detail::kernels;
  auto store = [&](int which, auto& acc, int n) {
    for (int r = 0; r < n; ++r)
      for (int v = 0; v < k::kTileVectors; ++v)
        moe::detail::simd::store(out[which * k::kTileRows + r] + v * moe::detail::simd::kWidth, acc[r][v]);
  };
  const k::PanelRef<Precision> refs[2] = {matrix.panel(panel), matrix.panel(panel + panels - 1)};
  k::multiply_panels<Precision>(rows, count, refs, panels, matrix.depth(), store);
}

// Values in [-1, 1) from a small LCG, the same for every precision.
struct RandomValues {
  std::uint64_t seed = 7;
  float operator()() {
    seed = seed * 6364136223846793005u + 1442695040888963407u;
    return float(seed >> 40) / float(1u << 23) - 1.0f;
  }
};

// `count` token rows of x (depth values each) as this precision's kernel reads them: f32 rows as they are,
// int8 codes with block scales and sums, or bf16 codes, over the panel's padded depth.
template <class Precision>
struct KernelRows {
  std::vector<std::int8_t> codes;
  std::vector<float> scales;
  std::vector<std::int32_t> sums;
  std::vector<std::uint16_t> halves;
  moe::detail::kernels::ActivationRow<Precision> row[moe::detail::kernels::kTileRows];

  KernelRows(const float* x, int count, Index depth, Index padded)
      : codes(std::size_t(count * padded)),
        scales(std::size_t(count * padded / moe::detail::kernels::kActivationBlock)),
        sums(scales.size()),
        halves(std::size_t(count * padded)) {
    namespace k = moe::detail::kernels;
    for (int r = 0; r < count; ++r) {
      const float* xr = x + r * depth;
      if constexpr (moe::int8_activations<Precision>::value) {
        const Index b = r * padded / k::kActivationBlock;
        k::quantize_activations(xr, depth, padded, codes.data() + r * padded, scales.data() + b, sums.data() + b);
        row[r] = {codes.data() + r * padded, scales.data() + b, sums.data() + b};
      } else if constexpr (moe::bf16_activations<Precision>::value) {
        k::round_activations_bf16(xr, depth, padded, halves.data() + r * padded);
        row[r] = {halves.data() + r * padded};
      } else {
        row[r] = xr;
      }
    }
  }
};

template <class Precision>
void BM_Kernel(benchmark::State& state) {
  namespace k = moe::detail::kernels;
  const int rows = int(state.range(0)), panels = int(state.range(1));
  std::vector<float> w(std::size_t(panels * k::kPanelColumns * kKernelDepth)), x(std::size_t(rows * kKernelDepth));
  RandomValues next;
  for (float& v : w) v = next();
  for (float& v : x) v = next();
  k::PanelMatrix<Precision> matrix;
  matrix.pack(w.data(), panels * k::kPanelColumns, kKernelDepth, kKernelDepth, kKernelDepth);
  const KernelRows<Precision> activations(x.data(), rows, kKernelDepth, matrix.depth());
  alignas(64) float out[2 * k::kTileRows][k::kPanelColumns];
  for (auto _ : state) {
    kernel_pass<Precision>(activations.row, rows, matrix, 0, panels, out);
    benchmark::DoNotOptimize(out);
    benchmark::ClobberMemory();
  }
  const double passes = double(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(matrix.bytes() / kGiga * passes, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(rows) * double(panels * k::kPanelColumns) * double(kKernelDepth) / kGiga * passes,
                         benchmark::Counter::kIsRate);
  state.SetLabel(std::string(moe::TypeName<Precision>()) + ", 1 thread, " + moe::detail::simd::arch_name());
}

// ---- the micro-kernel streaming cold weights -------------------------------------------------------

// One token row times a matrix of kStreamCaches last-level caches of weights (kKernelDepth depth rows),
// each of thread_count() threads taking a contiguous share of its panels through kernels::multiply_rows.
// This is a decode pass's weight stream without a layer around it (no routing, no barriers, no
// epilogue): BM_DecodeStream GB/s / BM_ReadBandwidth GB/s says how close a precision's kernel streams to
// the probe, and BM_Fused at 1 token how much of that a layer pass keeps. 16 caches, not kColdFactor's 4:
// on the 2-core Zen 5 VM a 128 MiB matrix streamed at 139-154% of the probe (f32) where 512 MiB gave
// 89-99% in the same alternation, which suggests part of the smaller one stayed cached. The matrix is
// built once per precision and kept (512 MiB each at 32 MiB); its output rows repeat a pool of 64 random
// rows.
constexpr double kStreamCaches = 16.0;

template <class Precision>
void BM_DecodeStream(benchmark::State& state) {
  namespace k = moe::detail::kernels;
  constexpr Index kPoolRows = 64;
  static k::PanelMatrix<Precision> matrix;
  static std::vector<float> x;
  if (matrix.panels() == 0) {
    k::PanelMatrix<Precision> one_panel;  // for the bytes a panel takes in this precision
    one_panel.resize(k::kPanelColumns, kKernelDepth);
    const Index panels = Index(std::ceil(kStreamCaches * last_level_cache_bytes() / one_panel.bytes()));
    std::vector<float> pool(std::size_t(kPoolRows * kKernelDepth));
    RandomValues next;
    for (float& v : pool) v = next();
    x.resize(std::size_t(kKernelDepth));
    for (float& v : x) v = next();
    matrix.resize(panels * k::kPanelColumns, kKernelDepth);
    for (Index o = 0; o < panels * k::kPanelColumns; ++o)
      matrix.set_output(o, pool.data() + o % kPoolRows * kKernelDepth, kKernelDepth);
  }
  const KernelRows<Precision> activations(x.data(), 1, kKernelDepth, matrix.depth());
  const int threads = thread_count();
  struct alignas(64) ThreadOutput {  // cache lines of its own per thread
    float rows[2 * k::kTileRows][k::kPanelColumns];
  };
  std::vector<ThreadOutput> out(static_cast<std::size_t>(threads));
  for (auto _ : state) {
    BENCH_OMP(omp parallel num_threads(threads)) {
#ifdef _OPENMP
      const int thread = omp_get_thread_num();
#else
      const int thread = 0;
#endif
      // Two panels at a time, as a decode pass takes them.
      for (Index p = matrix.panels() * thread / threads, end = matrix.panels() * (thread + 1) / threads; p < end;
           p += 2)
        kernel_pass<Precision>(activations.row, 1, matrix, p, int(std::min<Index>(2, end - p)),
                               out[std::size_t(thread)].rows);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] =
      benchmark::Counter(matrix.bytes() / kGiga * double(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(std::string(moe::TypeName<Precision>()) + ", " + std::to_string(int(matrix.bytes() / (1 << 20))) +
                 " MiB, " + std::to_string(threads) + " threads, " + moe::detail::simd::arch_name());
}

}  // namespace

#define MOE_BENCH_KERNEL(PRECISION)        \
  BENCHMARK_TEMPLATE(BM_Kernel, PRECISION) \
      ->ArgNames({"rows", "panels"})       \
      ->Args({1, 1})                       \
      ->Args({1, 2})                       \
      ->Args({2, 1})                       \
      ->Args({2, 2})                       \
      ->Args({6, 1})
#define MOE_BENCH_KERNEL_OF(p) MOE_BENCH_KERNEL(moe::p);
MOE_FOR_EACH_PRECISION(MOE_BENCH_KERNEL_OF)
#define MOE_BENCH_DECODE_STREAM(PRECISION) \
  BENCHMARK_TEMPLATE(BM_DecodeStream, PRECISION)->UseRealTime()->Unit(benchmark::kMillisecond)
#define MOE_BENCH_DECODE_STREAM_OF(p) MOE_BENCH_DECODE_STREAM(moe::p);
MOE_FOR_EACH_PRECISION(MOE_BENCH_DECODE_STREAM_OF)

// bench/moe_bench.cpp: the benchmarks behind docs/PERFORMANCE.md.
//
// Families, each over two shapes (shape:0 "mixtral": hidden 1024, FFN 3584, 8 experts, top-2; shape:1
// "finegrained": hidden 1024, FFN 512, 64 experts, top-8; both SwiGLU with renormalised softmax top-k)
// and a token count (1 and 8 are decode, 64 and 512 prefill):
//   BM_Fused<P>        the library's Layer::forward with weights stored in P (moe::f32, bf16, f16, q8, q4, q8a8,
//                      q4a8, bf16a16, fp8, mxfp4, mxfp4a8), as moe::layers compiles it (make_layer_as);
//   BM_EigenPerExpert  the same layer written as Eigen GEMMs, one gathered batch per expert (what a PyTorch
//                      eager MoE does), on the same weights;
//   BM_Naive           the same layer as plain scalar loops, one token at a time, selected experts only;
//                      single-threaded by design, and only for 1 and 8 tokens (it is slow);
//   BM_Kernel<P>       the micro-kernel alone, one thread, one or two weight panels hot in L2, 1, 2 or 6 token rows
//                      (no shape, no tokens argument);
//   BM_DecodeStream<P> the micro-kernel alone on every thread, one token row, weights streamed from DRAM
//                      (no shape, no tokens argument);
//   BM_PassOverhead    one token through a tiny layer on 1 or 2 threads: what a pass costs whatever its size;
//   BM_ReadBandwidth   what the cores can stream from DRAM (a vectorised sum over 1 GiB);
//   BM_FmaPeak         what the cores can compute (independent FMA chains in registers).
// Every family may use omp_get_max_threads() threads (set OMP_NUM_THREADS to change it) except BM_Naive
// and BM_Kernel; Eigen itself decides per product (a 1-row product is a GEMV, which it never
// parallelises). All are timed in wall-clock time (UseRealTime: the default CPU timer counts only the main thread).
//
// Run (a full run holds ~9 GiB: weight copies, BM_DecodeStream's 8 x 512 MiB matrices, the bandwidth buffer,
// the token batches; before BM_DecodeStream, --benchmark_repetitions=3 took 70 s on the 2-core Zen 5 machine,
// setup included):
//   ./moe-bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//   ./moe-bench --benchmark_filter='BM_Fused<moe::q4>/shape:1' --benchmark_min_time=0.2
// MOE_BENCH_LLC_MIB overrides the last-level cache size the cold-weight rotation is sized for (32 MiB).
// On a shared machine, run when it is idle: another process's threads halve every figure here.
//
// Counters: "GB/s" is weight bytes a pass needs per second (the router plus every expert that received a
// token, each counted once, as Layer::cost reports them), "GFLOP/s" the useful flops of the pass (2 per
// multiply-add of the router and of the selected experts' three matrices), "tokens/s" the tokens. Every
// formulation is credited with the same flops, and the same bytes but for the router, which the fused
// layer pads to whole panels (mixtral's 8 x 1024 router counts 256 KB there, 32 KB elsewhere: 0.25% of
// a decode pass), so ratios of counters are ratios of times.
//
// The ratios in docs/PERFORMANCE.md, from the medians of --benchmark_repetitions=3, same shape and tokens:
//   vs plain code      BM_Naive time / BM_Fused<moe::f32> time (1 and 8 tokens);
//   vs Eigen           BM_EigenPerExpert time / BM_Fused<moe::f32> time;
//   vs f32             BM_Fused<moe::f32> time / BM_Fused<P> time: what a smaller weight buys;
//   bandwidth use      BM_Fused GB/s / BM_ReadBandwidth GB/s: the figure of merit for decode, where a pass
//                      streams each selected expert once and the FMA units mostly wait;
//   compute use        BM_Fused GFLOP/s / BM_FmaPeak GFLOP/s: the figure of merit for prefill.
//
// Cold weights. A decode pass reads each selected expert once, so with a single layer its weights would
// sit in the last-level cache from the previous iteration and the benchmark would time the cache, not
// DRAM as a real model (dozens of layers, gigabytes of weights) does. So the layer benchmarks rotate,
// iteration by iteration, over separately filled copies of the layer (different seeds) and over
// kBatches different token batches, with enough copies that one round of the rotation (copies x the
// weight bytes of a pass) exceeds kColdFactor (4) times the last-level cache. The copy count comes from the
// shape: a pass reads at least top_k experts whatever its tokens, so copies = ceil(4 * LLC / (top_k x
// bytes of one expert)); at 32 MiB that is 2 copies of mixtral (88 MB a pass) and 3 of finegrained
// (50 MB a pass), used for every token count. The copies are built once per shape and formulation and
// kept (static caches), and their total is capped at kWeightBudget (4.5 GiB; ~6 GiB with the 1 GiB
// bandwidth buffer and the token batches). Should the cap cut a rotation short, the benchmark's label
// says "WARM" with how many cache sizes the rotation covers.
//
// Before timing, each shape checks that the three formulations compute the same outputs (one line on
// stderr; a disagreement fails the shape's benchmarks).
//
// The families live in layer_bench.cpp (layers, formulations, the cold-weight rotation), kernel_bench.cpp
// (the micro-kernel) and this file (the machine probes and main); bench_common.hpp holds what they share.
#include "bench_common.hpp"

namespace {

using bench::Index;
using bench::kGiga;
using bench::last_level_cache_bytes;
using bench::thread_count;

// ---- machine probes ------------------------------------------------------------------------------

// DRAM read bandwidth: each thread sums its contiguous share of a 1 GiB buffer with kAccumulators
// independent vector sums, so the adds never wait on each other and only memory limits the loop.
void BM_ReadBandwidth(benchmark::State& state) {
  constexpr Index kFloats = Index(1) << 28;  // 1 GiB, 32x the last-level cache
  constexpr int kAccumulators = 8;
  constexpr Index kStep = kAccumulators * moe::detail::simd::kWidth;
  // The library's own buffer type, so that the probe reads from the same kind of pages as the weights:
  // huge pages where the system grants them (detail/aligned_buffer.hpp), which read faster.
  static moe::detail::AlignedBuffer<float> buffer;
  const int threads = thread_count();
  const Index share = (kFloats / threads) / kStep * kStep;
  if (buffer.size() == 0) {
    try {
      buffer.resize(kFloats);
    } catch (const std::bad_alloc&) {
      state.SkipWithError("cannot allocate 1 GiB");
      return;
    }
    float* data = buffer.data();
    BENCH_OMP(omp parallel for num_threads(threads) schedule(static))
    for (Index i = 0; i < kFloats; ++i) data[i] = 1.0f / float(1 + (i & 1023));
  }
  const float* data = buffer.data();
  for (auto _ : state) {
    float total = 0;
    BENCH_OMP(omp parallel num_threads(threads) reduction(+ : total)) {
#ifdef _OPENMP
      const int thread = omp_get_thread_num();
#else
      const int thread = 0;
#endif
      const float* p = data + thread * share;
      moe::detail::simd::Vec acc[kAccumulators];
      for (auto& a : acc) a = moe::detail::simd::broadcast(0.0f);
      for (Index i = 0; i < share; i += kStep)
        for (int a = 0; a < kAccumulators; ++a)
          acc[a] = acc[a] + moe::detail::simd::load(p + i + a * moe::detail::simd::kWidth);
      for (int a = 1; a < kAccumulators; ++a) acc[0] = acc[0] + acc[a];
      total += moe::detail::simd::reduce_add(acc[0]);
    }
    benchmark::DoNotOptimize(total);
  }
  const double bytes = double(share) * threads * sizeof(float);
  state.counters["GB/s"] = benchmark::Counter(bytes / kGiga * double(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel("1 GiB, " + std::to_string(threads) + " threads");
}

// FMA peak: each thread runs kChains independent FMA chains on registers. An FMA has 4 cycles of
// latency and Zen 4/5 and recent Intel cores issue 2 per cycle, so 8 chains keep both ports busy; 16
// leave margin and still fit in 32 registers (12 of 16 with AVX2) alongside the two operands.
void BM_FmaPeak(benchmark::State& state) {
  constexpr int kChains = moe::detail::simd::kRegisters >= 32 ? 16 : 12;
  constexpr Index kSteps = Index(1) << 21;
  const int threads = thread_count();
  volatile float factor = 0.999f, offset = 1e-3f;  // run-time values, so nothing folds
  const float a_value = factor, b_value = offset;
  for (auto _ : state) {
    float sink = 0;
    BENCH_OMP(omp parallel num_threads(threads) reduction(+ : sink)) {
      const moe::detail::simd::Vec a = moe::detail::simd::broadcast(a_value), b = moe::detail::simd::broadcast(b_value);
      moe::detail::simd::Vec acc[kChains];
      for (int c = 0; c < kChains; ++c) acc[c] = moe::detail::simd::broadcast(float(c));
      for (Index step = 0; step < kSteps; ++step)
        for (int c = 0; c < kChains; ++c) acc[c] = moe::detail::simd::fma(acc[c], a, b);
      for (int c = 1; c < kChains; ++c) acc[0] = acc[0] + acc[c];
      sink += moe::detail::simd::reduce_add(acc[0]);
    }
    benchmark::DoNotOptimize(sink);
  }
  const double flops = 2.0 * double(kSteps) * kChains * moe::detail::simd::kWidth * threads;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops / kGiga * double(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(std::to_string(kChains) + " chains x " + std::to_string(threads) + " threads, " +
                 moe::detail::simd::arch_name());
}

}  // namespace

BENCHMARK(BM_ReadBandwidth)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FmaPeak)->UseRealTime()->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("moe_simd", moe::detail::simd::arch_name());
  benchmark::AddCustomContext("moe_threads", std::to_string(thread_count()));
  benchmark::AddCustomContext("eigen_threads", std::to_string(Eigen::nbThreads()));
  benchmark::AddCustomContext("llc_assumed_MiB", std::to_string(int(last_level_cache_bytes() / (1024 * 1024))));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

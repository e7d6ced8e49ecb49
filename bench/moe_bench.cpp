// bench/moe_bench.cpp: the benchmarks behind docs/PERFORMANCE.md.
//
// Families, each over two shapes (shape:0 "mixtral": hidden 1024, FFN 3584, 8 experts, top-2; shape:1
// "finegrained": hidden 1024, FFN 512, 64 experts, top-8; both SwiGLU with renormalised softmax top-k)
// and a token count (1 and 8 are decode, 64 and 512 prefill):
//   BM_Fused<P>        the library's Layer::forward with weights stored in P (moe::f32, bf16, f16, q8, q4, q8a8,
//                      q4a8, bf16a16);
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
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <new>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

// GCC 12.2 (Debian 12) warns inside its own avx512fintrin.h when Eigen's GEMM transposes AVX-512 registers
// (_mm512_undefined_ps initialises itself; GCC PR 105593, fixed in 12.3). The diagnostic state is looked up
// where the intrinsics are defined, so the intrinsics header alone is included under the switch.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12 && (defined(__x86_64__) || defined(__i386__))
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include <Eigen/Core>
#include <moe/moe.hpp>

#include "synthetic_layer.hpp"

#ifdef _OPENMP
#include <omp.h>
#define BENCH_OMP(directive) _Pragma(#directive)
#else
#define BENCH_OMP(directive)
#endif

namespace {

using moe::Index;
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class Precision>
using FusedLayerOf = moe::Layer<moe::Dynamic, moe::Dynamic, Precision>;
using FusedLayer = FusedLayerOf<moe::f32>;

// ---- shapes and the cold-weight rotation ----------------------------------------------------------

struct Shape {
  const char* name;
  Index hidden;
  Index ffn;
  int experts;
  int top_k;
};
constexpr Shape kShapes[] = {
    {"mixtral", 1024, 3584, 8, 2},
    {"finegrained", 1024, 512, 64, 8},
};
constexpr int kShapeCount = int(sizeof(kShapes) / sizeof(kShapes[0]));

constexpr int kBatches = 64;                                 // token batches a benchmark rotates over
constexpr double kColdFactor = 4.0;                          // rotation / last-level cache
constexpr double kWeightBudget = 10.0 * 1024 * 1024 * 1024;  // f32 and raw copies, plus each precision's
constexpr double kGiga = 1e9;

moe::LayerConfig config_of(const Shape& s) {
  moe::LayerConfig c;
  c.hidden_size = s.hidden;
  c.ffn_size = s.ffn;
  c.num_experts = s.experts;
  c.top_k = s.top_k;
  c.ffn = moe::SwiGLU;
  return c;
}

// The VM this was written on hides its cache topology (no sysfs cache entries, and sysconf's L3 figure,
// 508 MiB, is not what one CCD's cores share), so the size is a Zen 5 CCD's 32 MiB unless
// MOE_BENCH_LLC_MIB says otherwise.
double last_level_cache_bytes() {
  static const double bytes = [] {
    const char* env = std::getenv("MOE_BENCH_LLC_MIB");
    const double mib = env != nullptr && std::atof(env) > 0 ? std::atof(env) : 32.0;
    return mib * 1024 * 1024;
  }();
  return bytes;
}

int thread_count() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Copy i of a shape has the same weights in every formulation.
std::uint64_t weight_seed(int shape, int copy) { return 1000u * std::uint64_t(shape) + std::uint64_t(copy) + 1; }

double g_weight_bytes_held = 0;

// A shape's layer copies for one formulation, built on first use.
template <class Copy>
struct Rotation {
  std::vector<std::unique_ptr<Copy>> copies;
  double min_pass_bytes = 0;  // weight bytes any pass reads at least: top_k experts
  int wanted = 0;             // copies kColdFactor asks for

  const Copy& operator[](std::size_t i) const { return *copies[i % copies.size()]; }
  double cache_multiple() const { return double(copies.size()) * min_pass_bytes / last_level_cache_bytes(); }
  std::string label(const Shape& shape) const {
    char text[160];
    std::snprintf(text, sizeof text, "%s, %s: %zu cop%s x %d batches, rotation >= %.1fx LLC", shape.name,
                  int(copies.size()) < wanted ? "WARM (memory cap)" : "cold", copies.size(),
                  copies.size() == 1 ? "y" : "ies", kBatches, cache_multiple());
    return text;
  }
};

// Fills copies until the rotation is cold or the memory budget is spent. make(i) builds copy i.
template <class Copy, class Make>
void build_rotation(Rotation<Copy>& rotation, const Shape& shape, Make&& make) {
  if (!rotation.copies.empty()) return;
  rotation.copies.push_back(make(0));
  const Copy& first = *rotation.copies.front();
  const double copy_bytes = first.expert_bytes() * shape.experts;
  rotation.min_pass_bytes = first.expert_bytes() * shape.top_k;
  rotation.wanted = std::max(1, int(std::ceil(kColdFactor * last_level_cache_bytes() / rotation.min_pass_bytes)));
  g_weight_bytes_held += copy_bytes;
  while (int(rotation.copies.size()) < rotation.wanted && g_weight_bytes_held + copy_bytes <= kWeightBudget) {
    rotation.copies.push_back(make(int(rotation.copies.size())));
    g_weight_bytes_held += copy_bytes;
  }
}

template <class Precision = moe::f32>
Rotation<FusedLayerOf<Precision>>& fused_rotation(int s) {
  static Rotation<FusedLayerOf<Precision>> rotations[kShapeCount];
  build_rotation(rotations[s], kShapes[s], [s](int i) {
    auto layer = std::make_unique<FusedLayerOf<Precision>>(config_of(kShapes[s]), moe::SoftmaxTopK(true));
    synthetic::fill(*layer, weight_seed(s, i));
    return layer;
  });
  return rotations[s];
}

// The same weights unpacked, as Eigen row-major matrices in the PyTorch layout W[out][in]. It takes the
// Layer's place in synthetic::fill, so copy i holds exactly the weights of the fused copy i.
class RawLayer {
public:
  explicit RawLayer(const moe::LayerConfig& config) : config_(config) {
    gate.resize(config.num_experts);
    up.resize(config.num_experts);
    down.resize(config.num_experts);
  }

  const moe::LayerConfig& config() const { return config_; }
  double expert_bytes() const { return 3.0 * double(config_.ffn_size) * double(config_.hidden_size) * sizeof(float); }
  double router_bytes() const { return double(router.size()) * sizeof(float); }

  void set_router(const moe::WeightView& w) { router = map(w); }
  void set_expert(int e, const moe::WeightView& g, const moe::WeightView& u, const moe::WeightView& d) {
    gate[e] = map(g);
    up[e] = map(u);
    down[e] = map(d);
  }
  // synthetic::fill names these too; both shapes are SwiGLU without shared experts, so none is called.
  void set_expert(int, const moe::WeightView&, const moe::WeightView&) { unsupported(); }
  void set_shared_expert(int, const moe::WeightView&, const moe::WeightView&, const moe::WeightView&) { unsupported(); }
  void set_shared_expert(int, const moe::WeightView&, const moe::WeightView&) { unsupported(); }
  void set_shared_expert_gate(int, const moe::WeightView&) { unsupported(); }

  RowMatrix router;                       // experts x hidden
  std::vector<RowMatrix> gate, up, down;  // ffn x hidden, ffn x hidden, hidden x ffn

private:
  static RowMatrix map(const moe::WeightView& w) {
    return Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>>(w.data, w.rows, w.cols, Eigen::OuterStride<>(w.stride));
  }
  [[noreturn]] static void unsupported() { throw std::logic_error("RawLayer: only gated experts are benchmarked"); }

  moe::LayerConfig config_;
};

Rotation<RawLayer>& raw_rotation(int s) {
  static Rotation<RawLayer> rotations[kShapeCount];
  build_rotation(rotations[s], kShapes[s], [s](int i) {
    auto layer = std::make_unique<RawLayer>(config_of(kShapes[s]));
    synthetic::fill(*layer, weight_seed(s, i));
    return layer;
  });
  return rotations[s];
}

// kBatches batches of `tokens` tokens each, back to back.
const std::vector<float>& token_batches(int s, Index tokens) {
  static std::map<std::pair<int, Index>, std::vector<float>> cache;
  std::vector<float>& batches = cache[{s, tokens}];
  if (batches.empty())
    batches = synthetic::tokens(kBatches * tokens, kShapes[s].hidden,
                                7000u + 100u * std::uint64_t(s) + std::uint64_t(tokens));
  return batches;
}

// ---- the Eigen formulation -----------------------------------------------------------------------

// logits = X Wr^T; softmax, top-k and renormalise per token; then per expert: gather its tokens into X_e,
// G = X_e Wg^T, U = X_e Wu^T, H = silu(G) * U, Y_e = H Wd^T, and scatter-add the weighted rows into Y.
// Buffers are sized once; Eigen still allocates its GEMM blocking space inside each product, packs the
// weights it multiplies (a copy of each expert matrix per product) and splits a product across threads
// only when it has enough rows, so at a few tokens per expert it runs on one thread.
class EigenMoe {
public:
  EigenMoe(const Shape& shape, Index max_tokens)
      : k_(shape.top_k),
        logits_(max_tokens, shape.experts),
        xe_(max_tokens, shape.hidden),
        g_(max_tokens, shape.ffn),
        u_(max_tokens, shape.ffn),
        h_(max_tokens, shape.ffn),
        ye_(max_tokens, shape.hidden),
        probability_(shape.experts),
        order_(shape.experts),
        ids_(max_tokens * shape.top_k),
        weights_(max_tokens * shape.top_k),
        counts_(shape.experts),
        offsets_(shape.experts + 1),
        cursor_(shape.experts),
        token_of_(max_tokens * shape.top_k),
        weight_of_(max_tokens * shape.top_k) {}

  moe::ForwardCost forward(const RawLayer& w, const float* x, float* y, Index tokens) {
    const Index hidden = w.config().hidden_size, ffn = w.config().ffn_size;
    const int experts = w.config().num_experts;
    Eigen::Map<const RowMatrix> X(x, tokens, hidden);
    Eigen::Map<RowMatrix> Y(y, tokens, hidden);

    auto logits = logits_.topRows(tokens);
    logits.noalias() = X * w.router.transpose();
    for (Index t = 0; t < tokens; ++t) {
      const float top = logits.row(t).maxCoeff();
      for (int e = 0; e < experts; ++e) probability_[e] = std::exp(logits(t, e) - top);
      const float total = std::accumulate(probability_.begin(), probability_.end(), 0.0f);
      for (float& p : probability_) p /= total;
      std::iota(order_.begin(), order_.end(), 0);
      std::partial_sort(order_.begin(), order_.begin() + k_, order_.end(), [&](int a, int b) {
        const float pa = probability_[a], pb = probability_[b];
        return pa > pb || (pa == pb && a < b);
      });
      float chosen = 0;
      for (int j = 0; j < k_; ++j) chosen += probability_[order_[j]];
      for (int j = 0; j < k_; ++j) {
        ids_[t * k_ + j] = order_[j];
        weights_[t * k_ + j] = probability_[order_[j]] / chosen;
      }
    }

    std::fill(counts_.begin(), counts_.end(), 0);
    for (Index i = 0; i < tokens * k_; ++i) ++counts_[ids_[i]];
    offsets_[0] = 0;
    for (int e = 0; e < experts; ++e) offsets_[e + 1] = offsets_[e] + counts_[e];
    std::copy(offsets_.begin(), offsets_.end() - 1, cursor_.begin());
    for (Index t = 0; t < tokens; ++t)
      for (int j = 0; j < k_; ++j) {
        const int slot = cursor_[ids_[t * k_ + j]]++;
        token_of_[slot] = int(t);
        weight_of_[slot] = weights_[t * k_ + j];
      }

    moe::ForwardCost cost;
    cost.weight_bytes = w.router_bytes();
    cost.flops = 2.0 * double(tokens) * double(hidden) * experts;
    Y.setZero();
    for (int e = 0; e < experts; ++e) {
      const int first = offsets_[e];
      const Index n = offsets_[e + 1] - first;
      if (n == 0) continue;
      for (Index i = 0; i < n; ++i) xe_.row(i) = X.row(token_of_[first + i]);
      const auto Xe = xe_.topRows(n);
      auto G = g_.topRows(n);
      auto U = u_.topRows(n);
      auto H = h_.topRows(n);
      auto Ye = ye_.topRows(n);
      G.noalias() = Xe * w.gate[e].transpose();
      U.noalias() = Xe * w.up[e].transpose();
      H.array() = G.array() / (1.0f + (-G.array()).exp()) * U.array();
      Ye.noalias() = H * w.down[e].transpose();
      for (Index i = 0; i < n; ++i) Y.row(token_of_[first + i]) += weight_of_[first + i] * Ye.row(i);
      cost.weight_bytes += w.expert_bytes();
      cost.flops += 2.0 * double(n) * double(hidden) * double(ffn) * 3.0;
    }
    return cost;
  }

private:
  int k_;
  RowMatrix logits_, xe_, g_, u_, h_, ye_;
  std::vector<float> probability_;
  std::vector<int> order_, ids_;
  std::vector<float> weights_;
  std::vector<int> counts_, offsets_, cursor_, token_of_;
  std::vector<float> weight_of_;
};

// ---- the plain formulation -----------------------------------------------------------------------

// One token at a time, float scalar loops over the PyTorch-layout weights, only the chosen experts. No
// -ffast-math, so the compiler keeps each dot product's additions in order, one dependent chain.
class NaiveMoe {
public:
  explicit NaiveMoe(const Shape& shape)
      : logits_(shape.experts), chosen_(shape.top_k), weight_(shape.top_k), hidden_(shape.ffn), used_(shape.experts) {}

  moe::ForwardCost forward(const RawLayer& w, const float* x, float* y, Index tokens) {
    const Index H = w.config().hidden_size, F = w.config().ffn_size;
    const int E = w.config().num_experts, K = w.config().top_k;
    std::fill(used_.begin(), used_.end(), false);
    for (Index t = 0; t < tokens; ++t) {
      const float* xt = x + t * H;
      float* yt = y + t * H;
      for (int e = 0; e < E; ++e) {
        const float* router = w.router.data() + e * H;
        float sum = 0;
        for (Index i = 0; i < H; ++i) sum += router[i] * xt[i];
        logits_[e] = sum;
      }
      // The K largest logits, ties to the lower index; softmax over them (= renormalised top-k softmax).
      for (int j = 0; j < K; ++j) {
        int best = -1;
        for (int e = 0; e < E; ++e) {
          if (std::find(chosen_.begin(), chosen_.begin() + j, e) != chosen_.begin() + j) continue;
          if (best < 0 || logits_[e] > logits_[best]) best = e;
        }
        chosen_[j] = best;
      }
      float total = 0;
      for (int j = 0; j < K; ++j) {
        weight_[j] = std::exp(logits_[chosen_[j]] - logits_[chosen_[0]]);
        total += weight_[j];
      }
      for (Index o = 0; o < H; ++o) yt[o] = 0;
      for (int j = 0; j < K; ++j) {
        const int e = chosen_[j];
        used_[e] = true;
        const float* gate = w.gate[e].data();
        const float* up = w.up[e].data();
        const float* down = w.down[e].data();
        for (Index f = 0; f < F; ++f) {
          float g = 0, u = 0;
          for (Index i = 0; i < H; ++i) {
            g += gate[f * H + i] * xt[i];
            u += up[f * H + i] * xt[i];
          }
          hidden_[f] = g / (1.0f + std::exp(-g)) * u;
        }
        const float scale = weight_[j] / total;
        for (Index o = 0; o < H; ++o) {
          float sum = 0;
          for (Index f = 0; f < F; ++f) sum += down[o * F + f] * hidden_[f];
          yt[o] += scale * sum;
        }
      }
    }
    moe::ForwardCost cost;
    cost.weight_bytes = w.router_bytes();
    cost.flops = 2.0 * double(tokens) * double(H) * E + 2.0 * double(tokens) * K * double(H) * double(F) * 3.0;
    for (int e = 0; e < E; ++e)
      if (used_[e]) cost.weight_bytes += w.expert_bytes();
    return cost;
  }

private:
  std::vector<float> logits_;
  std::vector<int> chosen_;
  std::vector<float> weight_;
  std::vector<float> hidden_;
  std::vector<bool> used_;
};

// ---- shared plumbing -----------------------------------------------------------------------------

// The three formulations on copy 0 and one batch of 8 tokens: the largest difference must be within
// 1e-4 of the largest output (float rounding gives ~1e-6; a wrong expert or weight gives ~1). Empty when
// they agree, else what went wrong.
const std::string& agreement(int s) {
  static std::string result[kShapeCount];
  static bool checked[kShapeCount] = {};
  if (checked[s]) return result[s];
  checked[s] = true;
  const Shape& shape = kShapes[s];
  const Index tokens = 8;
  const float* x = token_batches(s, tokens).data();
  const FusedLayer& fused = fused_rotation(s)[0];
  const RawLayer& raw = raw_rotation(s)[0];
  std::vector<float> y_fused(tokens * shape.hidden), y_eigen(y_fused.size()), y_naive(y_fused.size());
  moe::Workspace ws = fused.workspace(tokens);
  fused.forward(x, shape.hidden, y_fused.data(), shape.hidden, tokens, ws);
  EigenMoe(shape, tokens).forward(raw, x, y_eigen.data(), tokens);
  NaiveMoe(shape).forward(raw, x, y_naive.data(), tokens);
  float scale = 0, fused_error = 0, eigen_error = 0;
  for (std::size_t i = 0; i < y_naive.size(); ++i) {
    scale = std::max(scale, std::abs(y_naive[i]));
    fused_error = std::max(fused_error, std::abs(y_fused[i] - y_naive[i]));
    eigen_error = std::max(eigen_error, std::abs(y_eigen[i] - y_naive[i]));
  }
  const bool agree = fused_error <= 1e-4f * scale && eigen_error <= 1e-4f * scale;
  char text[200];
  std::snprintf(text, sizeof text,
                "%s: fused, Eigen and naive outputs %s (max |y| %.3g, max |fused - naive| %.3g, "
                "max |eigen - naive| %.3g)",
                shape.name, agree ? "agree" : "DISAGREE", double(scale), double(fused_error), double(eigen_error));
  std::fprintf(stderr, "moe-bench: %s\n", text);
  if (!agree) result[s] = text;
  return result[s];
}

bool ready(benchmark::State& state, int s) {
  const std::string& problem = agreement(s);
  if (problem.empty()) return true;
  state.SkipWithError(problem.c_str());
  return false;
}

void report(benchmark::State& state, double weight_bytes, double flops, Index tokens, const std::string& label) {
  state.counters["GB/s"] = benchmark::Counter(weight_bytes / kGiga, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / kGiga, benchmark::Counter::kIsRate);
  state.counters["tokens/s"] =
      benchmark::Counter(double(tokens) * double(state.iterations()), benchmark::Counter::kIsRate);
  state.SetItemsProcessed(std::int64_t(tokens) * state.iterations());
  state.SetLabel(label);
}

// ---- the layer benchmarks ------------------------------------------------------------------------

// Precision: the weights' storage; f32 is the one the other formulations are checked against at start-up.
// The others compute with their own (rounded) weights, checked by the tests, so only their speed is here.
template <class Precision>
void BM_Fused(benchmark::State& state) {
  const int s = int(state.range(0));
  const Index tokens = state.range(1);
  const Shape& shape = kShapes[s];
  const Rotation<FusedLayerOf<Precision>>& rotation = fused_rotation<Precision>(s);
  if (!ready(state, s)) return;
  const float* batches = token_batches(s, tokens).data();
  moe::Workspace ws = rotation[0].workspace(tokens);
  std::vector<float> y(tokens * shape.hidden);
  double bytes = 0, flops = 0;
  std::size_t i = 0;
  for (auto _ : state) {
    const FusedLayerOf<Precision>& layer = rotation[i];
    const float* x = batches + Index(i % kBatches) * tokens * shape.hidden;
    const moe::ForwardCost cost = layer.cost(layer.forward(x, shape.hidden, y.data(), shape.hidden, tokens, ws));
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    bytes += cost.weight_bytes;
    flops += cost.flops;
    ++i;
  }
  report(state, bytes, flops, tokens, std::string(moe::TypeName<Precision>()) + ", " + rotation.label(shape));
  // The memory footprint of an expert's weights as packed (codes, scales and padding) per parameter.
  state.counters["bytes/param"] = rotation[0].expert_bytes() / (3.0 * double(shape.hidden) * double(shape.ffn));
}

void BM_EigenPerExpert(benchmark::State& state) {
  const int s = int(state.range(0));
  const Index tokens = state.range(1);
  const Shape& shape = kShapes[s];
  const Rotation<RawLayer>& rotation = raw_rotation(s);
  if (!ready(state, s)) return;
  const float* batches = token_batches(s, tokens).data();
  EigenMoe eigen(shape, tokens);
  std::vector<float> y(tokens * shape.hidden);
  double bytes = 0, flops = 0;
  std::size_t i = 0;
  for (auto _ : state) {
    const float* x = batches + Index(i % kBatches) * tokens * shape.hidden;
    const moe::ForwardCost cost = eigen.forward(rotation[i], x, y.data(), tokens);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    bytes += cost.weight_bytes;
    flops += cost.flops;
    ++i;
  }
  report(state, bytes, flops, tokens, rotation.label(shape) + ", eigen threads " + std::to_string(Eigen::nbThreads()));
}

void BM_Naive(benchmark::State& state) {
  const int s = int(state.range(0));
  const Index tokens = state.range(1);
  const Shape& shape = kShapes[s];
  const Rotation<RawLayer>& rotation = raw_rotation(s);
  if (!ready(state, s)) return;
  const float* batches = token_batches(s, tokens).data();
  NaiveMoe naive(shape);
  std::vector<float> y(tokens * shape.hidden);
  double bytes = 0, flops = 0;
  std::size_t i = 0;
  for (auto _ : state) {
    const float* x = batches + Index(i % kBatches) * tokens * shape.hidden;
    const moe::ForwardCost cost = naive.forward(rotation[i], x, y.data(), tokens);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    bytes += cost.weight_bytes;
    flops += cost.flops;
    ++i;
  }
  report(state, bytes, flops, tokens, rotation.label(shape) + ", 1 thread");
}

// ---- the fixed cost of a pass ----------------------------------------------------------------------

// One token through a layer so small (hidden 64, FFN 64, 8 experts, top-2, f32, hot in L1: 50 K multiply-
// adds) that its time is what every pass pays whatever its size: checks, routing, grouping, the thread
// team and its barriers. range 0: threads. In a decode pass of the shapes above (0.2-1.4 ms) it is the part
// no kernel speed removes.
void BM_PassOverhead(benchmark::State& state) {
  const int threads = int(state.range(0));
  moe::LayerConfig c = config_of(Shape{"tiny", 64, 64, 8, 2});
  FusedLayer layer(c, moe::SoftmaxTopK(true));
  synthetic::fill(layer, 5);
  const std::vector<float> x = synthetic::tokens(kBatches, c.hidden_size, 6);
  std::vector<float> y(std::size_t(c.hidden_size));
  moe::Workspace ws = layer.workspace(1, threads);
  std::size_t i = 0;
  for (auto _ : state) {
    layer.forward(x.data() + Index(i++ % kBatches) * c.hidden_size, c.hidden_size, y.data(), c.hidden_size, 1, ws);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetLabel(std::to_string(threads) + (threads == 1 ? " thread" : " threads"));
}

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
__attribute__((noinline)) void kernel_pass(const moe::kernels::ActivationRow<Precision>* rows, int count,
                                           const moe::kernels::PanelMatrix<Precision>& matrix, Index panel, int panels,
                                           float (*out)[moe::kernels::kPanelColumns]) {
  namespace k = moe::kernels;
  auto store = [&](int which, auto& acc, int n) {
    for (int r = 0; r < n; ++r)
      for (int v = 0; v < k::kTileVectors; ++v)
        moe::simd::store(out[which * k::kTileRows + r] + v * moe::simd::kWidth, acc[r][v]);
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
  moe::kernels::ActivationRow<Precision> row[moe::kernels::kTileRows];

  KernelRows(const float* x, int count, Index depth, Index padded)
      : codes(std::size_t(count * padded)),
        scales(std::size_t(count * padded / moe::kernels::kActivationBlock)),
        sums(scales.size()),
        halves(std::size_t(count * padded)) {
    namespace k = moe::kernels;
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
  namespace k = moe::kernels;
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
  state.SetLabel(std::string(moe::TypeName<Precision>()) + ", 1 thread, " + moe::simd::arch_name());
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
  namespace k = moe::kernels;
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
                 " MiB, " + std::to_string(threads) + " threads, " + moe::simd::arch_name());
}

// ---- machine probes ------------------------------------------------------------------------------

// DRAM read bandwidth: each thread sums its contiguous share of a 1 GiB buffer with kAccumulators
// independent vector sums, so the adds never wait on each other and only memory limits the loop.
void BM_ReadBandwidth(benchmark::State& state) {
  constexpr Index kFloats = Index(1) << 28;  // 1 GiB, 32x the last-level cache
  constexpr int kAccumulators = 8;
  constexpr Index kStep = kAccumulators * moe::simd::kWidth;
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
      moe::simd::Vec acc[kAccumulators];
      for (auto& a : acc) a = moe::simd::broadcast(0.0f);
      for (Index i = 0; i < share; i += kStep)
        for (int a = 0; a < kAccumulators; ++a) acc[a] = acc[a] + moe::simd::load(p + i + a * moe::simd::kWidth);
      for (int a = 1; a < kAccumulators; ++a) acc[0] = acc[0] + acc[a];
      total += moe::simd::reduce_add(acc[0]);
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
  constexpr int kChains = moe::simd::kRegisters >= 32 ? 16 : 12;
  constexpr Index kSteps = Index(1) << 21;
  const int threads = thread_count();
  volatile float factor = 0.999f, offset = 1e-3f;  // run-time values, so nothing folds
  const float a_value = factor, b_value = offset;
  for (auto _ : state) {
    float sink = 0;
    BENCH_OMP(omp parallel num_threads(threads) reduction(+ : sink)) {
      const moe::simd::Vec a = moe::simd::broadcast(a_value), b = moe::simd::broadcast(b_value);
      moe::simd::Vec acc[kChains];
      for (int c = 0; c < kChains; ++c) acc[c] = moe::simd::broadcast(float(c));
      for (Index step = 0; step < kSteps; ++step)
        for (int c = 0; c < kChains; ++c) acc[c] = moe::simd::fma(acc[c], a, b);
      for (int c = 1; c < kChains; ++c) acc[0] = acc[0] + acc[c];
      sink += moe::simd::reduce_add(acc[0]);
    }
    benchmark::DoNotOptimize(sink);
  }
  const double flops = 2.0 * double(kSteps) * kChains * moe::simd::kWidth * threads;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops / kGiga * double(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(std::to_string(kChains) + " chains x " + std::to_string(threads) + " threads, " +
                 moe::simd::arch_name());
}

}  // namespace

// Every precision of moe::Precisions (MOE_FOR_EACH_PRECISION), for each benchmark that runs one.
#define MOE_BENCH_FUSED(PRECISION)             \
  BENCHMARK_TEMPLATE(BM_Fused, PRECISION)      \
      ->ArgNames({"shape", "tokens"})          \
      ->ArgsProduct({{0, 1}, {1, 8, 64, 512}}) \
      ->UseRealTime()                          \
      ->Unit(benchmark::kMillisecond)
#define MOE_BENCH_FUSED_OF(p) MOE_BENCH_FUSED(moe::p);
MOE_FOR_EACH_PRECISION(MOE_BENCH_FUSED_OF)
BENCHMARK(BM_EigenPerExpert)
    ->ArgNames({"shape", "tokens"})
    ->ArgsProduct({{0, 1}, {1, 8, 64, 512}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Naive)
    ->ArgNames({"shape", "tokens"})
    ->ArgsProduct({{0, 1}, {1, 8}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
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
BENCHMARK(BM_PassOverhead)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReadBandwidth)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FmaPeak)->UseRealTime()->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("moe_simd", moe::simd::arch_name());
  benchmark::AddCustomContext("moe_threads", std::to_string(thread_count()));
  benchmark::AddCustomContext("eigen_threads", std::to_string(Eigen::nbThreads()));
  benchmark::AddCustomContext("llc_assumed_MiB", std::to_string(int(last_level_cache_bytes() / (1024 * 1024))));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

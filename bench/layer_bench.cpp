// bench/layer_bench.cpp: the layer benchmarks of moe-bench (BM_Fused, BM_EigenPerExpert, BM_Naive,
// BM_PassOverhead; what they measure and how: the top of moe_bench.cpp), the Eigen and plain formulations,
// and the cold-weight rotation they share.
#include <moe/any_layer.hpp>

#include "bench_common.hpp"

namespace {

using bench::Index;
using bench::kGiga;
using bench::last_level_cache_bytes;
using bench::thread_count;
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
// The fused layer as moe::layers compiles it (make_layer_as, any_layer.hpp): Layer<Dynamic, Dynamic,
// Precision> behind one virtual call a pass, so this file instantiates no forward pass of its own.
using FusedLayer = moe::AnyLayer;

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

moe::LayerConfig config_of(const Shape& s) {
  moe::LayerConfig c;
  c.hidden_size = s.hidden;
  c.ffn_size = s.ffn;
  c.num_experts = s.experts;
  c.top_k = s.top_k;
  c.ffn = moe::SwiGLU;
  return c;
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
Rotation<FusedLayer>& fused_rotation(int s) {
  static Rotation<FusedLayer> rotations[kShapeCount];
  build_rotation(rotations[s], kShapes[s], [s](int i) {
    auto layer = moe::make_layer_as<Precision>(config_of(kShapes[s]), moe::SoftmaxTopK(true));
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

// The one timed loop of the layer benchmarks: iteration i runs pass(rotation[i], batch i % kBatches, y), the
// copies and batches in turn so that the weights come cold from DRAM (the top of moe_bench.cpp), and adds
// up the weight bytes and flops the passes report, for report().
template <class Copy, class Pass>
void time_rotation(benchmark::State& state, const Rotation<Copy>& rotation, const float* batches, Index tokens,
                   const Shape& shape, float* y, Pass&& pass) {
  double bytes = 0, flops = 0;
  std::size_t i = 0;
  for (auto _ : state) {
    const float* x = batches + Index(i % kBatches) * tokens * shape.hidden;
    const moe::ForwardCost cost = pass(rotation[i], x, y);
    benchmark::DoNotOptimize(y);
    benchmark::ClobberMemory();
    bytes += cost.weight_bytes;
    flops += cost.flops;
    ++i;
  }
  state.counters["GB/s"] = benchmark::Counter(bytes / kGiga, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / kGiga, benchmark::Counter::kIsRate);
}

// The counters every layer benchmark reports besides time_rotation's, and its label.
void report(benchmark::State& state, Index tokens, const std::string& label) {
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
  const Rotation<FusedLayer>& rotation = fused_rotation<Precision>(s);
  if (!ready(state, s)) return;
  const float* batches = token_batches(s, tokens).data();
  moe::Workspace ws = rotation[0].workspace(tokens);
  std::vector<float> y(tokens * shape.hidden);
  time_rotation(state, rotation, batches, tokens, shape, y.data(),
                [&](const FusedLayer& layer, const float* x, float* out) {
                  return layer.cost(layer.forward(x, shape.hidden, out, shape.hidden, tokens, ws));
                });
  report(state, tokens, std::string(moe::TypeName<Precision>()) + ", " + rotation.label(shape));
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
  time_rotation(state, rotation, batches, tokens, shape, y.data(),
                [&](const RawLayer& raw, const float* x, float* out) { return eigen.forward(raw, x, out, tokens); });
  report(state, tokens, rotation.label(shape) + ", eigen threads " + std::to_string(Eigen::nbThreads()));
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
  time_rotation(state, rotation, batches, tokens, shape, y.data(),
                [&](const RawLayer& raw, const float* x, float* out) { return naive.forward(raw, x, out, tokens); });
  report(state, tokens, rotation.label(shape) + ", 1 thread");
}

// ---- the fixed cost of a pass ----------------------------------------------------------------------

// One token through a layer so small (hidden 64, FFN 64, 8 experts, top-2, f32, hot in L1: 50 K multiply-
// adds) that its time is what every pass pays whatever its size: checks, routing, grouping, the thread
// team and its barriers. range 0: threads. In a decode pass of the shapes above (0.2-1.4 ms) it is the part
// no kernel speed removes.
void BM_PassOverhead(benchmark::State& state) {
  const int threads = int(state.range(0));
  moe::LayerConfig c = config_of(Shape{"tiny", 64, 64, 8, 2});
  const std::unique_ptr<FusedLayer> made = moe::make_layer_as<moe::f32>(c, moe::SoftmaxTopK(true));
  FusedLayer& layer = *made;
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
BENCHMARK(BM_PassOverhead)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);

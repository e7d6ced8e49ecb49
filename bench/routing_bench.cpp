// bench/routing_bench.cpp: what routing costs, alone and end to end (docs/PERFORMANCE.md, "Routing").
//
//   BM_Route/<strategy>/experts/k/tokens   one batch of router logits -> every token's experts and weights
//                                          (route() per token, then finish_batch() for batch policies);
//                                          items_per_second = tokens routed per second (ns per token =
//                                          1e9 / items_per_second). Logits are precomputed: this times the
//                                          selection rule, not the router GEMM.
//   BM_TopK/<method>/experts/k             selecting the k largest of E scores: kernels::top_k (one pass,
//                                          insertion into a k-list) against std::partial_sort and
//                                          std::nth_element (+ sort of the k), per token.
//   BM_Layer/<strategy>/shape/tokens       the whole layer's forward pass under each strategy, on the two
//                                          reference shapes of moe-bench (0 mixtral, 1 finegrained).
//
//   ./moe-routing-bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <moe/moe.hpp>

#include "synthetic_layer.hpp"

namespace {

std::vector<float> random_logits(moe::Index tokens, int experts, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> v(std::size_t(tokens * experts));
  for (float& x : v) x = normal(rng);
  return v;
}

// The strategies under test, each configured for E experts and k slots (as the benchmarks name them).
// DeepSeek-V3's router shape: 8 groups keeping 4 at 64+ experts (V3: 256 experts, 8 groups, top-4 groups),
// 4 keeping 2 below; a small random score-correction bias.
moe::SigmoidGroupTopK deepseek(int experts) {
  moe::SigmoidGroupTopK r;
  r.groups = experts >= 64 ? 8 : (experts >= 8 ? 4 : 1);
  r.topk_groups = r.groups >= 4 ? r.groups / 2 : r.groups;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  for (int e = 0; e < experts; ++e) r.bias.push_back(normal(rng));
  r.scaling = 2.5f;
  return r;
}
moe::CapacityTopK capacity() {
  moe::CapacityTopK r;
  r.capacity_factor = 1.25f;
  return r;
}
moe::ExpertChoice expert_choice(int k) {
  moe::ExpertChoice r;
  r.capacity_factor = float(k);
  return r;
}

template <class Routing>
void route_batch(const Routing& routing, const float* logits, moe::Index tokens, int experts, int slots, int* ids,
                 float* weights, const std::int64_t* token_ids, int* expert_scratch, int* token_scratch) {
  for (moe::Index t = 0; t < tokens; ++t)
    routing.template route<moe::Dynamic>(logits + t * experts, experts, slots, ids + t * slots, weights + t * slots);
  if constexpr (moe::detail::has_finish_batch<Routing>::value)
    routing.finish_batch(moe::RoutingBatch{tokens, experts, slots, logits, experts, token_ids, ids, weights,
                                           expert_scratch, token_scratch});
}

template <class Routing>
void BM_Route(benchmark::State& state, Routing routing) {
  const int experts = int(state.range(0)), k = int(state.range(1));
  const moe::Index tokens = state.range(2);
  const int slots = Routing::kSelectsAll ? experts : k;
  if constexpr (std::is_same<Routing, moe::SigmoidGroupTopK>::value) routing = deepseek(experts);
  if (Routing::kSelectsAll && k != 1) {  // a slot per expert: k does not apply, run it once per grid point
    state.SkipWithError("k does not apply to this strategy");
    return;
  }
  if constexpr (moe::detail::has_check<Routing>::value) {
    try {
      routing.check(experts, slots);
    } catch (const moe::Error& e) {
      state.SkipWithError(e.what());
      return;
    }
  }
  const std::vector<float> logits = random_logits(tokens, experts, 11);
  std::vector<int> ids(static_cast<std::size_t>(tokens * slots));
  std::vector<int> expert_scratch(static_cast<std::size_t>(experts)), token_scratch(static_cast<std::size_t>(tokens));
  std::vector<float> weights(ids.size());
  std::vector<std::int64_t> token_ids(static_cast<std::size_t>(tokens));
  std::iota(token_ids.begin(), token_ids.end(), std::int64_t(1000));
  for (auto _ : state) {
    route_batch(routing, logits.data(), tokens, experts, slots, ids.data(), weights.data(), token_ids.data(),
                expert_scratch.data(), token_scratch.data());
    benchmark::DoNotOptimize(ids.data());
    benchmark::DoNotOptimize(weights.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * tokens);
}

void route_grid(benchmark::internal::Benchmark* b) {
  b->ArgNames({"experts", "k", "tokens"});
  for (int experts : {8, 64, 256})
    for (int k : {1, 2, 8})
      for (int tokens : {1, 64, 4096})
        if (k <= experts) b->Args({experts, k, tokens});
}

// BM_TopK: per token, E scores -> the k largest (ids and values), three ways.
enum TopKMethod { kInsertion = 0, kPartialSort = 1, kNthElement = 2 };

void BM_TopK(benchmark::State& state) {
  const auto method = TopKMethod(state.range(0));
  const int experts = int(state.range(1)), k = int(state.range(2));
  constexpr moe::Index kTokens = 256;
  const std::vector<float> logits = random_logits(kTokens, experts, 13);
  std::vector<int> ids(static_cast<std::size_t>(k)), order(static_cast<std::size_t>(experts));
  std::vector<float> values(static_cast<std::size_t>(k));
  for (auto _ : state) {
    for (moe::Index t = 0; t < kTokens; ++t) {
      const float* s = logits.data() + t * experts;
      if (method == kInsertion) {
        moe::detail::kernels::top_k(s, experts, k, ids.data(), values.data());
      } else {
        std::iota(order.begin(), order.end(), 0);
        auto larger = [s](int a, int b) { return s[a] > s[b] || (s[a] == s[b] && a < b); };
        if (method == kPartialSort) {
          std::partial_sort(order.begin(), order.begin() + k, order.end(), larger);
        } else {
          std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), larger);
          std::sort(order.begin(), order.begin() + k, larger);
        }
        for (int j = 0; j < k; ++j) {
          ids[std::size_t(j)] = order[std::size_t(j)];
          values[std::size_t(j)] = s[order[std::size_t(j)]];
        }
      }
      benchmark::DoNotOptimize(ids.data());
      benchmark::DoNotOptimize(values.data());
    }
  }
  state.SetItemsProcessed(state.iterations() * kTokens);
  static const char* const kNames[] = {"kernels::top_k", "std::partial_sort", "std::nth_element+sort"};
  state.SetLabel(kNames[method]);
}

// The whole layer under a strategy: shape 0 mixtral (1024/3584, 8 experts, top-2), 1 finegrained
// (1024/512, 64 experts, top-8); f32 weights, warm (one layer, reused).
template <class Routing>
void BM_Layer(benchmark::State& state, Routing routing) {
  const bool finegrained = state.range(0) == 1;
  const moe::Index tokens = state.range(1);
  moe::LayerConfig c;
  c.hidden_size = 1024;
  c.ffn_size = finegrained ? 512 : 3584;
  c.num_experts = finegrained ? 64 : 8;
  c.top_k = Routing::kSelectsAll ? 0 : (finegrained ? 8 : 2);
  if constexpr (std::is_same<Routing, moe::ExpertChoice>::value) routing.capacity_factor = finegrained ? 8.0f : 2.0f;
  if constexpr (std::is_same<Routing, moe::SigmoidGroupTopK>::value) routing = deepseek(c.num_experts);
  std::unique_ptr<moe::Layer<moe::Dynamic, moe::Dynamic, moe::f32, Routing>> layer;
  try {
    layer = std::make_unique<moe::Layer<moe::Dynamic, moe::Dynamic, moe::f32, Routing>>(c, routing);
  } catch (const moe::Error& e) {
    state.SkipWithError(e.what());
    return;
  }
  synthetic::fill(*layer, 3);
  const std::vector<float> x = synthetic::tokens(tokens, c.hidden_size, 4);
  std::vector<float> y(x.size());
  std::vector<std::int64_t> token_ids(static_cast<std::size_t>(tokens));
  std::iota(token_ids.begin(), token_ids.end(), std::int64_t(1));
  moe::Workspace ws = layer->workspace(tokens);
  // One untimed pass: page in the weights and workspace, start the OpenMP threads.
  layer->forward(x.data(), c.hidden_size, y.data(), c.hidden_size, tokens, ws, nullptr, token_ids.data());
  double flops = 0;
  for (auto _ : state) {
    const moe::RoutingResult r =
        layer->forward(x.data(), c.hidden_size, y.data(), c.hidden_size, tokens, ws, nullptr, token_ids.data());
    flops = layer->cost(r).flops;
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * tokens);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void layer_grid(benchmark::internal::Benchmark* b) {
  b->ArgNames({"shape", "tokens"});
  for (int shape : {0, 1})
    for (int tokens : {1, 64}) b->Args({shape, tokens});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

#define MOE_ROUTE_BENCH(name, ...)                                                                  \
  BENCHMARK_CAPTURE(BM_Route, name, __VA_ARGS__)->Apply(route_grid)->Unit(benchmark::kMicrosecond); \
  BENCHMARK_CAPTURE(BM_Layer, name, __VA_ARGS__)->Apply(layer_grid)

MOE_ROUTE_BENCH(softmax_topk_renorm, moe::SoftmaxTopK(true));
MOE_ROUTE_BENCH(softmax_topk, moe::SoftmaxTopK(false));
MOE_ROUTE_BENCH(topk_softmax, moe::TopKSoftmax());
MOE_ROUTE_BENCH(sigmoid_group_topk, deepseek(64));
MOE_ROUTE_BENCH(top_p_0_9, moe::TopP(0.9f));
MOE_ROUTE_BENCH(capacity_1_25, capacity());
MOE_ROUTE_BENCH(expert_choice, expert_choice(2));
MOE_ROUTE_BENCH(hash, moe::HashRouting());
MOE_ROUTE_BENCH(dense_softmax, moe::DenseSoftmax());

BENCHMARK(BM_TopK)
    ->ArgNames({"method", "experts", "k"})
    ->ArgsProduct({{kInsertion, kPartialSort, kNthElement}, {8, 64, 256}, {1, 2, 8}});

BENCHMARK_MAIN();

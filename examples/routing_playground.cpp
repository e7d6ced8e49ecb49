// routing-playground: every routing strategy on the same layer and the same tokens, side by side.
//
// The first thing to run when choosing a router: for each strategy, how evenly it spreads tokens over the
// experts (max/mean load and its coefficient of variation), how many choices a capacity limit drops and how
// many tokens end up with no expert, the Switch load-balancing loss, the router z-loss and entropy, and the
// time of a whole forward pass.
//
//   routing-playground [--tokens N] [--experts E] [--top-k K] [--hidden H] [--ffn F] [--repeat R] [--seed S]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <moe/moe.hpp>

#include "synthetic_layer.hpp"

namespace {

struct Options {
  moe::Index tokens = 512;
  int experts = 16;
  int top_k = 2;
  moe::Index hidden = 512;
  moe::Index ffn = 1024;
  int repeat = 5;
  unsigned long long seed = 1;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr,
               "routing-playground: %s\nusage: routing-playground [--tokens N] [--experts E] [--top-k K] "
               "[--hidden H] [--ffn F] [--repeat R] [--seed S]\n",
               message.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") usage_error("runs every routing strategy on one synthetic layer");
    if (i + 1 >= argc) usage_error(arg + " needs a value");
    char* end = nullptr;
    const long long v = std::strtoll(argv[++i], &end, 10);
    if (end == argv[i] || *end != '\0' || v < 1 || v > (1 << 20)) usage_error(arg + " needs an integer in [1, 2^20]");
    if (arg == "--tokens")
      o.tokens = v;
    else if (arg == "--experts")
      o.experts = int(v);
    else if (arg == "--top-k")
      o.top_k = int(v);
    else if (arg == "--hidden")
      o.hidden = v;
    else if (arg == "--ffn")
      o.ffn = v;
    else if (arg == "--repeat")
      o.repeat = int(v);
    else if (arg == "--seed")
      o.seed = static_cast<unsigned long long>(v);
    else
      usage_error("unknown option '" + arg + "'");
  }
  if (o.top_k > o.experts) usage_error("--top-k exceeds --experts");
  if (o.experts > 4096) usage_error("--experts must be <= 4096 here");
  return o;
}

// One row of the table: the strategy's statistics over the batch and its median forward time.
template <class Routing>
void row(const char* name, const Options& o, Routing routing, int top_k, const std::vector<float>& x,
         const std::vector<std::int64_t>& token_ids) {
  moe::LayerConfig c;
  c.hidden_size = o.hidden;
  c.ffn_size = o.ffn;
  c.num_experts = o.experts;
  c.top_k = top_k;
  std::unique_ptr<moe::Layer<moe::Dynamic, moe::Dynamic, moe::f32, Routing>> layer;
  try {
    layer = std::make_unique<moe::Layer<moe::Dynamic, moe::Dynamic, moe::f32, Routing>>(c, routing);
  } catch (const moe::Error& e) {
    std::printf("%-22s  (not applicable: %s)\n", name, e.what());
    return;
  }
  synthetic::fill(*layer, o.seed);  // the same weights for every strategy: same seed, same shapes
  moe::Workspace ws = layer->workspace(o.tokens);
  std::vector<float> y(x.size());
  moe::RoutingStats stats(o.experts);
  layer->forward(x.data(), o.hidden, y.data(), o.hidden, o.tokens, ws, &stats, token_ids.data());
  std::vector<double> ms;
  for (int r = 0; r < o.repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    layer->forward(x.data(), o.hidden, y.data(), o.hidden, o.tokens, ws, nullptr, token_ids.data());
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("%-22s %8.2f %7.2f %6.2f %7lld %8lld %8.3f %8.3f %7.3f %9.3f\n", name,
              double(stats.assignments()) / double(stats.tokens()), stats.load_imbalance(), stats.load_cv(),
              static_cast<long long>(stats.dropped()), static_cast<long long>(stats.unrouted_tokens()),
              stats.aux_loss(), stats.z_loss(), stats.mean_entropy(), ms[ms.size() / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    const std::vector<float> x = synthetic::tokens(o.tokens, o.hidden, o.seed + 1);
    std::vector<std::int64_t> token_ids(static_cast<std::size_t>(o.tokens));
    for (moe::Index t = 0; t < o.tokens; ++t) token_ids[std::size_t(t)] = (t * 7919) % 1000;  // a small vocabulary
    std::printf("routing-playground: %lld tokens, hidden %lld, ffn %lld, %d experts, k = %d, f32, simd %s\n\n",
                static_cast<long long>(o.tokens), static_cast<long long>(o.hidden), static_cast<long long>(o.ffn),
                o.experts, o.top_k, moe::detail::simd::arch_name());
    std::printf("%-22s %8s %7s %6s %7s %8s %8s %8s %7s %9s\n", "strategy", "exp/tok", "max/avg", "cv", "dropped",
                "no-exp", "aux", "z-loss", "entropy", "ms/pass");
    const int k = o.top_k;
    row("softmax_topk (renorm)", o, moe::SoftmaxTopK(true), k, x, token_ids);
    row("softmax_topk", o, moe::SoftmaxTopK(false), k, x, token_ids);
    row("topk_softmax", o, moe::TopKSoftmax(), k, x, token_ids);
    moe::SigmoidGroupTopK deepseek;
    deepseek.groups = o.experts % 4 == 0 && o.experts >= 8 ? 4 : 1;
    deepseek.topk_groups = deepseek.groups > 1 ? 2 : 1;
    row("sigmoid_group_topk", o, deepseek, k, x, token_ids);
    row("top_p (p=0.7, k_max)", o, moe::TopP(0.7f), k, x, token_ids);
    moe::CapacityTopK switch_like;
    switch_like.capacity_factor = 1.0f;
    switch_like.renormalize = k > 1;
    row("capacity (cf=1.0)", o, switch_like, k, x, token_ids);
    moe::ExpertChoice choice;
    choice.capacity_factor = float(k);
    row("expert_choice (c=k)", o, choice, 0, x, token_ids);
    row("hash (token ids)", o, moe::HashRouting(), k, x, token_ids);
    row("dense_softmax", o, moe::DenseSoftmax(), 0, x, token_ids);
    std::printf(
        "\nexp/tok: experts per token that ran; max/avg, cv: load over experts; dropped: choices over capacity;\n"
        "no-exp: tokens with no expert; aux: E * sum_i f_i P_i (k when balanced); z-loss: mean logsumexp^2;\n"
        "entropy: mean router entropy (nats); ms/pass: median forward time.\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "routing-playground: %s\n", e.what());
    return 1;
  }
  return 0;
}

// moe-run: runs an MoE layer and reports its speed and where the tokens went.
//
// With no arguments it builds a deterministic synthetic Mixtral-shaped layer (8 experts, top-2, SwiGLU,
// at hidden 1024 / FFN 3584 so that it fits anywhere) and runs random tokens through it.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include <unistd.h>
#include <stdexcept>
#include <string>
#include <vector>

#include <moe/any_layer.hpp>
#include <moe/io/hf_model.hpp>
#include <moe/io/layer_summary.hpp>
#include <moe/io/npy.hpp>
#include <moe/moe.hpp>
#include <moe/recommended_precision.hpp>
#include <moe/routing_plot.hpp>

#define MOE_PROGRAM_TARGET_HERE
#include "program_target.hpp"
#include "synthetic_layer.hpp"

namespace {

struct Options {
  moe::Index tokens = 64;
  int repeat = 20;
  int threads = 0;
  moe::Index hidden = 1024;
  moe::Index ffn = 3584;
  int experts = 8;
  int top_k = 2;
  int shared = 0;
  bool renormalize = true;
  std::string dtype;  // default: f32 for the synthetic layer, auto for a checkpoint
  int bits = 0;       // --bits: the recommended precision of that many bits a weight, instead of --dtype
  unsigned long long seed = 1;
  std::string stats_path;  // --stats FILE.json
  std::string plot_path;   // --plot FILE.svg
  // A checkpoint's MoE block instead of the synthetic layer.
  std::string model_dir;
  std::string layer;
  std::string input_path;
  std::string output_path;
  bool repeat_given = false;
  bool list_layers = false;  // --list-layers: describe every layer of --model, load nothing
};

const char* const kUsage =
    R"(usage: moe-run --model DIR --layer L --input X.npy --output Y.npy [--dtype auto|T | --bits B]
               [--threads N] [--repeat R] [--stats FILE.json]
       moe-run --model DIR --list-layers
       moe-run [options]

With --model: computes the MoE block of layer L of the Hugging Face model folder DIR (config.json and
model.safetensors, or shards with model.safetensors.index.json; model types mixtral, qwen2_moe, qwen3_moe,
olmoe, deepseek_v2, deepseek_v3, glm4_moe, granitemoe, llama4_text, llama4, gpt_oss, grok-1, dbrx,
switch_transformers, where L is encoder.N or decoder.N) on
the tokens in X.npy (float32 or float16, tokens x hidden_size) and writes the block's output, without the
residual, to Y.npy (float32). --dtype auto (the default) keeps the checkpoint's precision (FP8 weights in 128-input
blocks as fp8, other FP8 blocks decoded to f32, MXFP4 as mxfp4). --repeat R times R passes after a warm-up and reports
median and min latency, tokens/s, GB/s and GFLOP/s; --stats writes those and the routing statistics as
JSON. --list-layers prints each layer of DIR: dense or MoE, its experts, top-k,
shared experts, sizes, how its expert weights are stored and the bytes of its tensors, from config.json and
the safetensors headers (no weight is read; the tensors' names, shapes and dtypes are checked).

Without --model: runs a synthetic MoE layer (deterministic random weights and tokens) and prints the latency of one
forward pass (median and min over --repeat passes, after one warm-up), tokens/s, the expert weights
streamed per second (GB/s), useful GFLOP/s, and how many tokens each expert received.

options:
  --tokens N      tokens per forward pass (default 64; 1 is a decode step)
  --repeat R      timed forward passes (default 20)
  --threads N     threads per pass (default: OpenMP's default, e.g. OMP_NUM_THREADS or all cores)
  --hidden H      hidden size (default 1024)
  --ffn F         expert FFN size (default 3584)
  --experts E     routed experts (default 8)
  --top-k K       experts per token (default 2)
  --shared S      always-on shared experts of FFN size F (default 0)
  --stats F.json  write the timing and the routing statistics of the timed passes (load per expert,
                  imbalance, aux and z losses, entropy, co-activation) as JSON
  --plot F.svg    write an SVG of the per-expert load and a token x expert heatmap of the last pass
  --no-renormalize  keep the full-softmax weights of the chosen experts (Qwen2-MoE/OLMoE style)
  --dtype T       expert weight storage: f32 (default), bf16, f16, q8 (int8, a scale per row),
                  q4 (int4, an f16 scale per 32 weights), or q8a8 / q4a8 (q8 / q4 weights with
                  activations quantised to int8 per 32 values: int8 dot products), or bf16a16 (bf16
                  weights with activations rounded to bf16: bf16 dot products), or fp8 (e4m3 codes, an f32
                  scale per 128 inputs: the FP8 checkpoints' format), or mxfp4 (E2M1 codes, a power-of-two
                  scale per 32 inputs: gpt-oss's MXFP4), or mxfp4a8 (mxfp4's weights with activations
                  quantised to int8 per 32 values: int8 dot products); the router stays f32
  --bits B        instead of --dtype: the precision moe recommends for B bits a weight (16, 8 or 4) on
                  the instruction set this build is for; an activation-coding precision (bf16a16, q8a8,
                  q4a8) only where its dot product is an instruction here (moe/recommended_precision.hpp);
                  with --model the checkpoint's weights are converted to it (e.g. f16 to bf16 at 16)
  --seed N        seed of the synthetic weights and tokens (default 1)
  --version       the version, the compiler, the instruction set this build is for and the one this CPU has
  --help          this text
)";

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "moe-run: %s\n(run moe-run --help for the options)\n", message.c_str());
  std::exit(2);
}

long long parse_integer(const std::string& option, const char* text, long long low, long long high) {
  if (text == nullptr) fail(option + " needs a value");
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || errno != 0) fail(option + " expects an integer, got '" + text + "'");
  if (value < low || value > high)
    fail(option + " must be in [" + std::to_string(low) + ", " + std::to_string(high) + "], got " + text);
  return value;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    auto take = [&](long long low, long long high) {
      ++i;
      return parse_integer(arg, value, low, high);
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--version") {
      std::exit(moe_program_print_version("moe-run"));
    } else if (arg == "--tokens") {
      o.tokens = take(1, 1 << 20);
    } else if (arg == "--repeat") {
      o.repeat = int(take(1, 1000000));
      o.repeat_given = true;
    } else if (arg == "--threads") {
      o.threads = int(take(1, MOE_MAX_THREADS));
    } else if (arg == "--hidden") {
      o.hidden = take(1, 1 << 20);
    } else if (arg == "--ffn") {
      o.ffn = take(1, 1 << 20);
    } else if (arg == "--experts") {
      o.experts = int(take(1, 1 << 16));
    } else if (arg == "--top-k") {
      o.top_k = int(take(1, 1 << 16));
    } else if (arg == "--shared") {
      o.shared = int(take(0, 64));
    } else if (arg == "--seed") {
      o.seed = static_cast<unsigned long long>(take(0, (1LL << 62)));
    } else if (arg == "--list-layers") {
      o.list_layers = true;
    } else if (arg == "--no-renormalize") {
      o.renormalize = false;
    } else if (arg == "--bits") {
      o.bits = int(take(-(1LL << 31), (1LL << 31) - 1));
      if (moe::recommended_precision_name(o.bits) == nullptr)
        fail("--bits must be 16, 8 or 4, got " + std::to_string(o.bits));
    } else if (arg == "--dtype") {
      if (value == nullptr) fail("--dtype needs a value");
      o.dtype = value;
      ++i;
      if (o.dtype != "auto" && !moe::is_precision_name(o.dtype))
        fail("--dtype must be auto or one of " + moe::precision_names() + ", got '" + o.dtype + "'");
    } else if (arg == "--stats" || arg == "--plot" || arg == "--model" || arg == "--layer" || arg == "--input" ||
               arg == "--output") {
      if (value == nullptr || *value == '\0') fail(arg + " needs a value");
      std::string& target = arg == "--stats"   ? o.stats_path
                            : arg == "--plot"  ? o.plot_path
                            : arg == "--model" ? o.model_dir
                            : arg == "--layer" ? o.layer
                            : arg == "--input" ? o.input_path
                                               : o.output_path;
      target = value;
      ++i;
    } else {
      fail("unknown option '" + arg + "'");
    }
  }
  if (o.bits != 0) {
    if (!o.dtype.empty()) fail("--bits and --dtype both choose the weight storage: give one");
    o.dtype = moe::recommended_precision_name(o.bits);
  }
  if (o.list_layers) {
    if (o.model_dir.empty()) fail("--list-layers needs --model DIR");
    if (argc != 4) fail("--list-layers takes --model DIR and nothing else");
    return o;
  }
  if (!o.model_dir.empty()) {
    if (o.layer.empty()) fail("--model needs --layer");
    if (o.input_path.empty()) fail("--model needs --input X.npy");
    if (o.output_path.empty()) fail("--model needs --output Y.npy");
    if (o.dtype.empty()) o.dtype = "auto";
    if (!o.plot_path.empty()) fail("--plot is for the synthetic layer; use --stats with --model");
  } else {
    if (!o.layer.empty() || !o.input_path.empty() || !o.output_path.empty())
      fail("--layer, --input and --output need --model DIR");
    if (o.dtype.empty()) o.dtype = "f32";
    if (o.dtype == "auto") fail("--dtype auto needs --model (the synthetic layer has no checkpoint precision)");
  }
  if (o.top_k > o.experts)
    fail("--top-k " + std::to_string(o.top_k) + " exceeds --experts " + std::to_string(o.experts));
  return o;
}

// Writes a file all or nothing (io/file.hpp's AtomicFileWriter): a failure never leaves a partial file.
template <class Write>
void write_file(const std::string& path, Write&& write) {
  std::ostringstream text;
  write(static_cast<std::ostream&>(text));
  const std::string bytes = text.str();
  moe::io::detail::AtomicFileWriter file(path, "moe-run");
  file.write(bytes.data(), bytes.size());
  file.commit();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The synthetic mode.
int run(const Options& o) {
  moe::LayerConfig config;
  config.hidden_size = o.hidden;
  config.ffn_size = o.ffn;
  config.num_experts = o.experts;
  config.top_k = o.top_k;
  config.ffn = moe::SwiGLU;
  config.num_shared_experts = o.shared;
  const std::unique_ptr<moe::AnyLayer> layer = moe::make_layer(o.dtype, config, moe::SoftmaxTopK(o.renormalize));

  const double packed_bytes =
      double(o.experts + o.shared) * 3.0 * double(o.hidden) * double(o.ffn) * layer->bits_per_weight() / 8.0;
  std::printf("moe-run: synthetic %s layer: hidden %lld, ffn %lld, %d experts, top-%d%s, %s, %s weights (%.1f MB)\n",
              o.experts == 8 && o.top_k == 2 ? "Mixtral-shaped" : "MoE", static_cast<long long>(o.hidden),
              static_cast<long long>(o.ffn), o.experts, o.top_k,
              o.shared ? (", " + std::to_string(o.shared) + " shared").c_str() : "",
              o.renormalize ? "softmax top-k renormalised" : "softmax top-k", layer->precision(), packed_bytes / 1e6);

  synthetic::fill(*layer, o.seed);
  moe::Workspace ws = layer->workspace(o.tokens, o.threads);

  // A few distinct batches, so the load table reflects more than one batch's routing.
  const int batches = std::min(o.repeat + 1, 8);
  const std::vector<float> x = synthetic::tokens(o.tokens * batches, o.hidden, o.seed + 1000);
  std::vector<float> y(static_cast<std::size_t>(o.tokens * o.hidden));
  const float* batch0 = x.data();
  auto batch = [&](int i) { return batch0 + std::size_t(i % batches) * std::size_t(o.tokens * o.hidden); };

  layer->forward(batch(0), o.hidden, y.data(), o.hidden, o.tokens, ws);  // warm-up: page in, start threads
  std::vector<double> seconds;
  std::vector<long long> load(std::size_t(o.experts), 0);
  moe::ForwardCost total;
  // Statistics only when asked for: off, a pass does not touch them.
  const bool want_stats = !o.stats_path.empty() || !o.plot_path.empty();
  // The co-activation table is experts^2: only built when asked for.
  std::optional<moe::RoutingStats> stats;
  if (want_stats) stats.emplace(o.experts);
  std::vector<int> last_ids;
  std::vector<float> last_weights;
  for (int r = 0; r < o.repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    const moe::RoutingResult routed =
        layer->forward(batch(r + 1), o.hidden, y.data(), o.hidden, o.tokens, ws, want_stats ? &*stats : nullptr);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    const moe::ForwardCost cost = layer->cost(routed);
    total.weight_bytes += cost.weight_bytes;
    total.flops += cost.flops;
    for (int e = 0; e < o.experts; ++e) load[std::size_t(e)] += routed.tokens_per_expert()(e);
    if (want_stats && r + 1 == o.repeat) {
      last_ids.assign(routed.expert_ids().data(), routed.expert_ids().data() + routed.expert_ids().size());
      last_weights.assign(routed.weights().data(), routed.weights().data() + routed.weights().size());
    }
  }
  double checksum = 0;
  for (float v : y) checksum += v;

  const double med = median(seconds);
  const double best = *std::min_element(seconds.begin(), seconds.end());
  const int threads = MOE_HAS_OPENMP && o.threads > 0 ? o.threads : moe::default_thread_count();
  std::printf("simd %s (%d floats), %d thread%s, %lld tokens per pass, %d passes after 1 warm-up\n",
              moe::detail::simd::arch_name(), moe::detail::simd::kWidth, threads, threads == 1 ? "" : "s",
              static_cast<long long>(o.tokens), o.repeat);
  std::printf("latency     median %.3f ms   min %.3f ms\n", med * 1e3, best * 1e3);
  // Rates of the median pass, so one slow pass (another process, a page fault) does not skew them.
  std::printf("throughput  %.1f tokens/s   %.2f GB/s weights   %.2f GFLOP/s   (median pass)\n", double(o.tokens) / med,
              total.weight_bytes / o.repeat / med / 1e9, total.flops / o.repeat / med / 1e9);
  std::printf("output checksum %.6g\n", checksum);
  if (!o.stats_path.empty()) {
    write_file(o.stats_path, [&](std::ostream& out) {
      out << "{\n  \"tokens_per_pass\": " << o.tokens << ",\n  \"passes\": " << o.repeat
          << ",\n  \"threads\": " << threads << ",\n  \"dtype\": \"" << layer->precision()
          << "\",\n  \"latency_ms\": {\"median\": " << med * 1e3 << ", \"min\": " << best * 1e3
          << "},\n  \"tokens_per_second\": " << double(o.tokens) / med
          << ",\n  \"weight_gb_per_second\": " << total.weight_bytes / o.repeat / med / 1e9
          << ",\n  \"gflop_per_second\": " << total.flops / o.repeat / med / 1e9 << ",\n  \"routing\": ";
      stats->write_json(out);
      out << "\n}\n";
    });
    std::printf("statistics written to %s\n", o.stats_path.c_str());
  }
  if (!o.plot_path.empty()) {
    write_file(o.plot_path, [&](std::ostream& out) {
      moe::write_routing_svg(out, *stats, last_ids.data(), last_weights.data(), o.tokens, layer->top_k());
    });
    std::printf("plot written to %s\n", o.plot_path.c_str());
  }

  long long routed_total = 0, most = 0;
  for (long long c : load) {
    routed_total += c;
    most = std::max(most, c);
  }
  const double mean = double(routed_total) / o.experts;
  std::printf("\nexpert load over %d passes (%lld token-expert pairs; max/mean %.2f)\n", o.repeat, routed_total,
              mean > 0 ? double(most) / mean : 0.0);
  std::printf("  expert    tokens   share\n");
  for (int e = 0; e < o.experts; ++e) {
    const long long c = load[std::size_t(e)];
    const int bar = most > 0 ? int(40.0 * double(c) / double(most) + 0.5) : 0;
    std::printf("  %6d  %8lld  %5.1f%%  %s\n", e, c, routed_total ? 100.0 * double(c) / double(routed_total) : 0.0,
                std::string(std::size_t(bar), '#').c_str());
  }
  return 0;
}

// The checkpoint mode: one MoE block of a Hugging Face model folder on the tokens of an .npy file.
int run_model(const Options& o) {
  const moe::io::BlockSpec spec = moe::io::read_block_spec(o.model_dir, o.layer);  // fails fast, before loading
  const moe::Index H = spec.config.hidden_size;
  const moe::io::NpyArray x = moe::io::read_npy(o.input_path);
  if (x.shape[1] != H)
    throw std::runtime_error(o.input_path + " has " + std::to_string(x.shape[1]) + " columns but hidden_size of " +
                             o.model_dir + " is " + std::to_string(H));
  const moe::Index tokens = x.shape[0];
  if (tokens == 0) throw std::runtime_error(o.input_path + " has no tokens");
  for (std::size_t i = 0; i < x.data.size(); ++i)
    if (!std::isfinite(x.data[i]))
      throw std::runtime_error(o.input_path + ": token " + std::to_string(i / std::size_t(H)) + " has NaN or Inf");
  // Fail on an unwritable output before the work, not after.
  {
    const std::string probe = o.output_path + ".probe.tmp";
    std::ofstream out(probe, std::ios::binary);
    if (!out) throw std::runtime_error("cannot write " + o.output_path + ": " + std::strerror(errno));
    out.close();
    std::remove(probe.c_str());
  }

  const bool show_progress = isatty(2) != 0;
  auto progress = [&](int done, int total) {
    if (!show_progress) return;
    std::fprintf(stderr, "\rmoe-run: loading %d/%d experts", done, total);
    if (done == total) std::fprintf(stderr, "\n");
  };
  const auto load_start = std::chrono::steady_clock::now();
  const std::unique_ptr<moe::io::MoeBlock> block = moe::io::load_block(o.model_dir, o.layer, o.dtype, progress);
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  const moe::LayerConfig& c = spec.config;
  std::printf("moe-run: %s layer %s: hidden %lld, ffn %lld, %d experts, top-%d%s, %s weights, loaded in %.2f s\n",
              spec.model_type.c_str(), o.layer.c_str(), static_cast<long long>(c.hidden_size),
              static_cast<long long>(c.ffn_size), c.num_experts, c.top_k, c.num_shared_experts ? ", shared expert" : "",
              block->precision(), load_seconds);

  moe::Workspace ws = block->workspace(tokens, o.threads);
  std::vector<float> y(std::size_t(tokens * H));
  moe::RoutingStats stats(c.num_experts);
  const moe::RoutingResult first = block->forward(x.data.data(), y.data(), tokens, ws, &stats);
  const moe::Index dropped = first.dropped();

  std::vector<double> seconds;
  moe::ForwardCost cost = block->cost(first);
  if (o.repeat_given) {
    std::vector<float> scratch(y.size());
    for (int r = 0; r < o.repeat; ++r) {
      const auto start = std::chrono::steady_clock::now();
      block->forward(x.data.data(), scratch.data(), tokens, ws);
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  }
  moe::io::write_npy(o.output_path, y.data(), tokens, H);
  std::printf("%lld tokens -> %s%s\n", static_cast<long long>(tokens), o.output_path.c_str(),
              dropped ? (" (" + std::to_string(dropped) + " choices dropped by expert capacity)").c_str() : "");
  double med = 0, best = 0;
  if (!seconds.empty()) {
    med = median(seconds);
    best = *std::min_element(seconds.begin(), seconds.end());
    std::printf("latency     median %.3f ms   min %.3f ms   (%d passes after the first)\n", med * 1e3, best * 1e3,
                o.repeat);
    std::printf("throughput  %.1f tokens/s   %.2f GB/s weights   %.2f GFLOP/s   (median pass)\n", double(tokens) / med,
                cost.weight_bytes / med / 1e9, cost.flops / med / 1e9);
  }
  if (!o.stats_path.empty()) {
    write_file(o.stats_path, [&](std::ostream& out) {
      out << "{\n  \"model\": \"" << spec.model_type << "\",\n  \"layer\": \"" << o.layer
          << "\",\n  \"tokens\": " << tokens << ",\n  \"dtype\": \"" << block->precision() << "\"";
      if (!seconds.empty())
        out << ",\n  \"passes\": " << o.repeat << ",\n  \"latency_ms\": {\"median\": " << med * 1e3
            << ", \"min\": " << best * 1e3 << "},\n  \"tokens_per_second\": " << double(tokens) / med
            << ",\n  \"weight_gb_per_second\": " << cost.weight_bytes / med / 1e9
            << ",\n  \"gflop_per_second\": " << cost.flops / med / 1e9;
      out << ",\n  \"routing\": ";
      stats.write_json(out);
      out << "\n}\n";
    });
    std::printf("statistics written to %s\n", o.stats_path.c_str());
  }
  // auto stays exact; a precision that runs the same weights much faster here is named last, once the run
  // has succeeded, so that an error is still the one line on stderr.
  if (o.dtype == "auto") {
    if (const char* twin = moe::faster_decode_twin(block->precision())) {
      std::fflush(stdout);
      std::fprintf(stderr,
                   "moe-run: note: on this instruction set --dtype %s runs the same %s weights about twice as fast "
                   "at decode (int8 activations, rounded per 32 values); auto keeps %s, exact\n",
                   twin, block->precision(), block->precision());
    }
  }
  return 0;
}

// --list-layers: one line per layer of the model folder.
int list_layers(const Options& o) {
  const std::vector<moe::io::LayerSummary> layers = moe::io::summarize_layers(o.model_dir);
  int sparse = 0;
  for (const auto& l : layers) sparse += l.moe;
  std::printf("moe-run: %s: %zu layers, %d MoE, %zu dense (nothing loaded)\n", o.model_dir.c_str(), layers.size(),
              sparse, layers.size() - std::size_t(sparse));
  std::printf("%-12s %-5s %7s %5s %6s %7s %7s  %-18s %12s\n", "layer", "kind", "experts", "top-k", "shared", "hidden",
              "ffn", "expert weights", "MB");
  for (const auto& l : layers) {
    if (!l.moe) {
      std::printf("%-12s %-5s %7s %5s %6s %7s %7s  %-18s %12s  (%s)\n", l.layer.c_str(), "dense", "-", "-", "-", "-",
                  "-", "-", "-", l.dense_reason.c_str());
      continue;
    }
    std::printf("%-12s %-5s %7d %5d %6d %7lld %7lld  %-18s %12.3f\n", l.layer.c_str(), "moe", l.experts, l.top_k,
                l.shared_experts, static_cast<long long>(l.hidden_size), static_cast<long long>(l.ffn_size),
                l.weights.c_str(), double(l.bytes) / 1e6);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  try {
    if (options.list_layers) return list_layers(options);
    if (!options.model_dir.empty()) return run_model(options);
    return run(options);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "moe-run: out of memory for this shape (try a smaller --hidden, --ffn or --experts)\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe-run: %s\n", e.what());
  }
  return 1;
}

// bench/ggml_moe_ffn.cpp: one Mixture-of-Experts FFN block on ggml's CPU backend (the engine of llama.cpp),
// built the way llama.cpp builds it, timed the way moe-run times moe's layer; the ggml side of
// scripts/compare-llama-cpp.sh.
//
// The graph is llm_graph_context::build_moe_ffn of llama.cpp (src/llama-graph.cpp) for a Mixtral-style block
// (softmax gating, renormalised top-k weights, SwiGLU experts, no shared expert, no biases):
//   logits   = mul_mat(gate_inp, x)                    [E, T]   the router, f32
//   probs    = soft_max(logits)                        [E, T]
//   selected = argsort_top_k(probs, K)                 [K, T]   i32 expert ids
//   weights  = get_rows(probs, selected), divided by their sum (clamped to f16's smallest normal: norm_w)
//   up       = mul_mat_id(up_exps,   x, selected)      [F, K, T]
//   gate     = mul_mat_id(gate_exps, x, selected)      [F, K, T]
//   par      = swiglu_split(gate, up)                  silu(gate) * up
//   experts  = mul_mat_id(down_exps, par, selected)    [H, K, T], then * weights
//   out      = experts[:, 0, :] + ... + experts[:, K-1, :]   (views and ggml_add, as build_moe_ffn sums them)
// ggml's tensor order is innermost first: gate_exps and up_exps are [H, F, E] (E matrices of F rows of H
// weights), down_exps is [F, H, E], x is [H, T].
//
// What it measures: the wall-clock time of ggml_backend_graph_compute on that graph, one warm-up pass and then
// --repeat timed passes on the same weights, the tokens taken in turn from min(repeat + 1, 8) distinct batches as
// moe-run takes them: each batch routes to experts of its own, so the experts a pass reads are in the caches only
// where they fit with the other batches' (with one batch, a 1-token pass would read the same top-k experts every
// time, from L3 where they fit, while moe-run's read others). It prints `ggml <type> tokens <T> threads <N>:
// median <m> ms min <n> ms`. Setup (weight generation, quantisation, repacking, graph allocation) and copying the
// next batch into the input tensor are not timed.
//
// Weights: deterministic uniform random f32 values (a counter-based hash of --seed, the tensor and the index, so
// any subset can be regenerated), stored in --type with ggml's own ggml_quantize_chunk; the router stays f32.
// Like llama.cpp's loader (weight_buft_supported / select_weight_buft in src/llama-model.cpp), each expert
// tensor goes to the first of the CPU backend's extra buffer types (ggml_backend_dev_get_extra_bufts: AMX,
// KleidiAI, CPU_REPACK...) whose supports_op accepts a MUL_MAT_ID on it, and to the plain CPU buffer otherwise.
// The repack buffer rewrites the weights at upload into interleaved blocks (q4_0 as q4_0_8x8 on AVX2, q4_K as
// q4_K_8x8, mxfp4 as mxfp4_8x8...) that its GEMM kernels read; which buffer and layout each tensor got is
// printed. --no-repack keeps them all in the plain CPU buffer.
//
// --check: runs the graph once on a small f32 layer and compares it with the plain scalar reference below
// (one token at a time: softmax, top-k, renormalise, SwiGLU experts, weighted sum, in double); prints the
// largest error relative to the largest output and exits 1 above 1e-4.
//
// Build (what scripts/compare-llama-cpp.sh does): ggml configured with -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF,
// CPU backend only, Release, then (one command)
//   g++ -std=c++17 -O3 -march=native -fopenmp -I<ggml>/include bench/ggml_moe_ffn.cpp
//       libggml.a libggml-cpu.a libggml-base.a -lpthread -lm -o ggml-moe-ffn
// For older ggml snapshots the script defines MOE_GGML_NO_ARGSORT_TOP_K (ggml_top_k was argsort + view then),
// MOE_GGML_NO_SWIGLU_SPLIT (ggml_silu + ggml_mul) and MOE_GGML_NO_MXFP4 when ggml.h lacks them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

namespace {

// ---- arguments ----------------------------------------------------------------------------------------------

struct Options {
  int64_t hidden = 1024;
  int64_t ffn = 2816;
  int64_t experts = 8;
  int64_t top_k = 2;
  int64_t tokens = 64;
  std::string type = "f32";
  int threads = 0;  // 0: the hardware's
  int repeat = 20;
  uint64_t seed = 1;
  bool check = false;
  bool no_repack = false;
};

void usage(FILE* out) {
  std::fprintf(out,
               "usage: ggml-moe-ffn [--hidden H] [--ffn F] [--experts E] [--top-k K] [--tokens T]\n"
               "                    [--type f32|bf16|q8_0|q4_0|q4_K|mxfp4] [--threads N] [--repeat R] [--seed S]\n"
               "                    [--no-repack] [--check]\n"
               "Times llama.cpp's MoE FFN block (build_moe_ffn, softmax top-k renormalised, SwiGLU) on ggml's CPU\n"
               "backend: one warm-up pass, then R timed passes (default 20); defaults H 1024, F 2816, E 8, K 2, T 64.\n"
               "--check compares an f32 layer (default H 256, F 512, E 8, K 2, T 16) with a scalar reference.\n");
}

bool parse(int argc, char** argv, Options& o) {
  bool shape_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "ggml-moe-ffn: %s needs a value\n", name);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--hidden") {
      o.hidden = std::atoll(value("--hidden")), shape_given = true;
    } else if (a == "--ffn") {
      o.ffn = std::atoll(value("--ffn")), shape_given = true;
    } else if (a == "--experts") {
      o.experts = std::atoll(value("--experts")), shape_given = true;
    } else if (a == "--top-k") {
      o.top_k = std::atoll(value("--top-k")), shape_given = true;
    } else if (a == "--tokens") {
      o.tokens = std::atoll(value("--tokens")), shape_given = true;
    } else if (a == "--type") {
      o.type = value("--type");
    } else if (a == "--threads") {
      o.threads = std::atoi(value("--threads"));
    } else if (a == "--repeat") {
      o.repeat = std::atoi(value("--repeat"));
    } else if (a == "--seed") {
      o.seed = std::strtoull(value("--seed"), nullptr, 10);
    } else if (a == "--check") {
      o.check = true;
    } else if (a == "--no-repack") {
      o.no_repack = true;
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else {
      std::fprintf(stderr, "ggml-moe-ffn: unknown argument %s\n", a.c_str());
      usage(stderr);
      return false;
    }
  }
  if (o.check && !shape_given) o.hidden = 256, o.ffn = 512, o.experts = 8, o.top_k = 2, o.tokens = 16;
  if (o.threads <= 0) o.threads = std::max(1, int(std::thread::hardware_concurrency()));
  if (o.hidden <= 0 || o.ffn <= 0 || o.experts <= 0 || o.top_k <= 0 || o.top_k > o.experts || o.tokens <= 0 ||
      o.repeat <= 0) {
    std::fprintf(stderr, "ggml-moe-ffn: sizes must be positive, and --top-k at most --experts\n");
    return false;
  }
  return true;
}

bool type_of(const std::string& name, ggml_type& type) {
  static const std::map<std::string, ggml_type> kTypes = {
      {"f32", GGML_TYPE_F32},     {"bf16", GGML_TYPE_BF16}, {"q8_0", GGML_TYPE_Q8_0},
      {"q4_0", GGML_TYPE_Q4_0},   {"q4_K", GGML_TYPE_Q4_K},
#ifndef MOE_GGML_NO_MXFP4
      {"mxfp4", GGML_TYPE_MXFP4},
#endif
  };
  const auto it = kTypes.find(name);
  if (it == kTypes.end()) return false;
  type = it->second;
  return true;
}

// ---- deterministic weights ----------------------------------------------------------------------------------

// The streams of synthetic values, one per tensor.
enum Stream : uint64_t { kTokens = 1, kRouter, kGate, kUp, kDown };

uint64_t mix(uint64_t z) {  // splitmix64's finaliser
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Element i (in ggml's order) of a stream: uniform in [-scale, scale), a pure function of (seed, stream, i), so
// the reference regenerates exactly what was quantised and the experts can be filled in parallel.
float synthetic(uint64_t seed, Stream stream, uint64_t i, float scale) {
  const uint64_t z = mix(mix(seed * 0x100000001B3ull + stream) + i);
  return scale * (float(int64_t(z >> 40) - (int64_t(1) << 23)) / float(int64_t(1) << 23));
}

float input_scale(const Options& o) { return 1.0f / std::sqrt(float(o.hidden)); }
float down_scale(const Options& o) { return 1.0f / std::sqrt(float(o.ffn)); }

// ---- buffer types -------------------------------------------------------------------------------------------

// ggml logs the interleaved layout it repacks a tensor into (at debug level); kept per tensor name for the report.
std::map<std::string, std::string> g_repack_layout;

void log_callback(ggml_log_level level, const char* text, void*) {
  if (const char* at = std::strstr(text, "repack tensor ")) {
    const std::string rest = at + std::strlen("repack tensor ");
    const size_t with = rest.find(" with ");
    if (with != std::string::npos) {
      std::string layout = rest.substr(with + 6);
      while (!layout.empty() && (layout.back() == '\n' || layout.back() == ' ')) layout.pop_back();
      g_repack_layout[rest.substr(0, with)] = layout;
    }
    return;
  }
  if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

// The check llama.cpp's loader makes before placing an expert tensor in a buffer type: a MUL_MAT_ID on the tensor,
// with a zero-size buffer of that type attached so that supports_op sees the buffer type, asked of the device.
bool buffer_type_accepts(ggml_backend_dev_t device, ggml_backend_buffer_type_t buft, ggml_tensor* w, int64_t top_k) {
  ggml_init_params params = {ggml_tensor_overhead() * 8, nullptr, true};
  ggml_context* ctx = ggml_init(params);
  ggml_tensor* b = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, w->ne[0], top_k, 512);
  ggml_tensor* ids = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, top_k, 512);
  ggml_tensor* op = ggml_mul_mat_id(ctx, w, b, ids);
  w->buffer = ggml_backend_buft_alloc_buffer(buft, 0);
  const bool ok = ggml_backend_dev_supports_op(device, op);
  ggml_backend_buffer_free(w->buffer);
  w->buffer = nullptr;
  ggml_free(ctx);
  return ok;
}

// The buffer types llama.cpp tries for a CPU weight, in its order: the device's extra ones, then the plain buffer.
std::vector<ggml_backend_buffer_type_t> candidate_buffer_types(ggml_backend_t backend, bool no_repack) {
  std::vector<ggml_backend_buffer_type_t> list;
  ggml_backend_dev_t device = ggml_backend_get_device(backend);
  auto get_extra = (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(
      ggml_backend_dev_backend_reg(device), "ggml_backend_dev_get_extra_bufts");
  if (get_extra != nullptr && !no_repack) {
    for (ggml_backend_buffer_type_t* extra = get_extra(device); extra != nullptr && *extra != nullptr; ++extra) {
      list.push_back(*extra);
    }
  }
  list.push_back(ggml_backend_cpu_buffer_type());
  return list;
}

// One expert tensor in its own context and buffer.
struct ExpertTensor {
  ggml_context* ctx = nullptr;
  ggml_tensor* t = nullptr;
  ggml_backend_buffer_t buffer = nullptr;
};

// Creates an expert tensor [cols, rows, E] of `type`, places it as llama.cpp would, and uploads its weights:
// each expert's f32 values quantised with ggml_quantize_chunk into a staging copy, then one ggml_backend_tensor_set
// of the whole tensor (the repack buffer converts the layout there and accepts only whole tensors).
ExpertTensor make_expert_tensor(ggml_backend_t backend, const Options& o, ggml_type type, const char* name,
                                Stream stream, int64_t cols, int64_t rows, float scale) {
  ExpertTensor e;
  ggml_init_params params = {ggml_tensor_overhead() * 2, nullptr, true};
  e.ctx = ggml_init(params);
  e.t = ggml_new_tensor_3d(e.ctx, type, cols, rows, o.experts);
  ggml_set_name(e.t, name);

  ggml_backend_dev_t device = ggml_backend_get_device(backend);
  ggml_backend_buffer_type_t chosen = ggml_backend_cpu_buffer_type();
  for (ggml_backend_buffer_type_t buft : candidate_buffer_types(backend, o.no_repack)) {
    if (buft == ggml_backend_cpu_buffer_type() || buffer_type_accepts(device, buft, e.t, o.top_k)) {
      chosen = buft;
      break;
    }
  }
  e.buffer = ggml_backend_alloc_ctx_tensors_from_buft(e.ctx, chosen);
  if (e.buffer == nullptr) {
    std::fprintf(stderr, "ggml-moe-ffn: cannot allocate %s (%zu bytes) in %s\n", name, ggml_nbytes(e.t),
                 ggml_backend_buft_name(chosen));
    std::exit(1);
  }

  const size_t expert_bytes = ggml_row_size(type, cols) * size_t(rows);
  std::vector<uint8_t> staging(expert_bytes * size_t(o.experts));
  const uint64_t per_expert = uint64_t(cols) * uint64_t(rows);
#pragma omp parallel num_threads(o.threads)
  {
    std::vector<float> values(per_expert);
#pragma omp for schedule(dynamic, 1)
    for (int64_t x = 0; x < o.experts; ++x) {
      for (uint64_t i = 0; i < per_expert; ++i)
        values[i] = synthetic(o.seed, stream, uint64_t(x) * per_expert + i, scale);
      ggml_quantize_chunk(type, values.data(), staging.data() + size_t(x) * expert_bytes, 0, rows, cols, nullptr);
    }
  }
  ggml_backend_tensor_set(e.t, staging.data(), 0, staging.size());

  const auto layout = g_repack_layout.find(name);
  std::printf("expert tensor %-9s %-5s [%lld, %lld, %lld] in %s%s%s%s\n", name, ggml_type_name(type), (long long)cols,
              (long long)rows, (long long)o.experts, ggml_backend_buft_name(chosen),
              layout != g_repack_layout.end() ? " (as " : "",
              layout != g_repack_layout.end() ? layout->second.c_str() : "",
              layout != g_repack_layout.end() ? ")" : "");
  return e;
}

// ---- the graph ----------------------------------------------------------------------------------------------

// build_moe_ffn's Mixtral path (LLM_FFN_SILU with a gate, softmax gating, norm_w, w_scale 1), node for node.
ggml_tensor* build_moe_ffn(ggml_context* ctx, ggml_cgraph* gf, ggml_tensor* cur, ggml_tensor* gate_inp,
                           ggml_tensor* up_exps, ggml_tensor* gate_exps, ggml_tensor* down_exps, int64_t n_expert,
                           int64_t n_expert_used) {
  const int64_t n_embd = cur->ne[0];
  const int64_t n_tokens = cur->ne[1];

  ggml_tensor* logits = ggml_mul_mat(ctx, gate_inp, cur);  // [n_expert, n_tokens]
  ggml_tensor* probs = ggml_soft_max(ctx, logits);         // [n_expert, n_tokens]

#ifndef MOE_GGML_NO_ARGSORT_TOP_K
  ggml_tensor* selected_experts = ggml_argsort_top_k(ctx, probs, int(n_expert_used));  // [n_expert_used, n_tokens]
#else
  ggml_tensor* selected_experts = ggml_top_k(ctx, probs, int(n_expert_used));  // argsort + view in those snapshots
#endif

  probs = ggml_reshape_3d(ctx, probs, 1, n_expert, n_tokens);
  ggml_tensor* weights = ggml_get_rows(ctx, probs, selected_experts);  // [1, n_expert_used, n_tokens]

  // norm_w: the selected probabilities divided by their sum, the sum clamped to f16's smallest normal
  weights = ggml_reshape_2d(ctx, weights, n_expert_used, n_tokens);
  ggml_tensor* weights_sum = ggml_sum_rows(ctx, weights);  // [1, n_tokens]
  weights_sum = ggml_clamp(ctx, weights_sum, 6.103515625e-5f, INFINITY);
  weights = ggml_div(ctx, weights, weights_sum);  // [n_expert_used, n_tokens]
  weights = ggml_reshape_3d(ctx, weights, 1, n_expert_used, n_tokens);
  ggml_build_forward_expand(gf, weights);

  cur = ggml_reshape_3d(ctx, cur, n_embd, 1, n_tokens);
  ggml_tensor* up = ggml_mul_mat_id(ctx, up_exps, cur, selected_experts);      // [n_ff, n_expert_used, n_tokens]
  ggml_tensor* gate = ggml_mul_mat_id(ctx, gate_exps, cur, selected_experts);  // [n_ff, n_expert_used, n_tokens]
#ifndef MOE_GGML_NO_SWIGLU_SPLIT
  ggml_tensor* par = ggml_swiglu_split(ctx, gate, up);  // silu(gate) * up in one op
#else
  ggml_tensor* par = ggml_mul(ctx, ggml_silu(ctx, gate), up);
#endif
  ggml_tensor* experts = ggml_mul_mat_id(ctx, down_exps, par, selected_experts);  // [n_embd, n_expert_used, n_tokens]
  experts = ggml_mul(ctx, experts, weights);
  ggml_build_forward_expand(gf, experts);

  // the views first, then the adds, as build_moe_ffn orders them
  std::vector<ggml_tensor*> cur_experts(static_cast<size_t>(n_expert_used));
  for (int64_t i = 0; i < n_expert_used; ++i) {
    cur_experts[size_t(i)] = ggml_view_2d(ctx, experts, n_embd, n_tokens, experts->nb[2], size_t(i) * experts->nb[1]);
    ggml_build_forward_expand(gf, cur_experts[size_t(i)]);
  }
  ggml_tensor* moe_out = cur_experts[0];
  for (int64_t i = 1; i < n_expert_used; ++i) {
    moe_out = ggml_add(ctx, moe_out, cur_experts[size_t(i)]);
    ggml_build_forward_expand(gf, moe_out);
  }
  if (n_expert_used == 1) moe_out = ggml_cont(ctx, moe_out);  // a view is not contiguous
  return moe_out;
}

// ---- the scalar reference (--check) --------------------------------------------------------------------------

// The block for one token at a time in double, from regenerated f32 weights: softmax over the router logits, the
// top_k largest probabilities, renormalised, each chosen expert's down(silu(gate x) * up x) weighted and summed.
std::vector<float> reference(const Options& o) {
  const int64_t H = o.hidden, F = o.ffn, E = o.experts, K = o.top_k;
  auto weight = [&](Stream s, int64_t e, int64_t row, int64_t col, int64_t cols, int64_t rows, float scale) {
    return double(synthetic(o.seed, s, uint64_t((e * rows + row) * cols + col), scale));
  };
  std::vector<float> out(size_t(H * o.tokens));
  std::vector<double> x(static_cast<size_t>(H)), p(static_cast<size_t>(E)), act(static_cast<size_t>(F));
  std::vector<int64_t> order(static_cast<size_t>(E));
  for (int64_t t = 0; t < o.tokens; ++t) {
    for (int64_t h = 0; h < H; ++h) x[size_t(h)] = synthetic(o.seed, kTokens, uint64_t(t * H + h), 1.0f);
    double top = -INFINITY;
    for (int64_t e = 0; e < E; ++e) {
      double logit = 0;
      for (int64_t h = 0; h < H; ++h) logit += weight(kRouter, 0, e, h, H, E, input_scale(o)) * x[size_t(h)];
      p[size_t(e)] = logit;
      top = std::max(top, logit);
    }
    double total = 0;
    for (double& v : p) total += (v = std::exp(v - top));
    for (double& v : p) v /= total;
    for (int64_t e = 0; e < E; ++e) order[size_t(e)] = e;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[size_t(a)] > p[size_t(b)]; });
    double chosen = 0;
    for (int64_t k = 0; k < K; ++k) chosen += p[size_t(order[size_t(k)])];
    for (int64_t k = 0; k < K; ++k) {
      const int64_t e = order[size_t(k)];
      const double w = p[size_t(e)] / chosen;
      for (int64_t f = 0; f < F; ++f) {
        double g = 0, u = 0;
        for (int64_t h = 0; h < H; ++h) {
          g += weight(kGate, e, f, h, H, F, input_scale(o)) * x[size_t(h)];
          u += weight(kUp, e, f, h, H, F, input_scale(o)) * x[size_t(h)];
        }
        act[size_t(f)] = g / (1.0 + std::exp(-g)) * u;
      }
      for (int64_t h = 0; h < H; ++h) {
        double y = 0;
        for (int64_t f = 0; f < F; ++f) y += weight(kDown, e, h, f, F, H, down_scale(o)) * act[size_t(f)];
        out[size_t(t * H + h)] += float(w * y);
      }
    }
  }
  return out;
}

std::string milliseconds(double ms) {  // at least 4 significant digits, never an exponent
  const int decimals = std::clamp(3 - int(std::floor(std::log10(std::max(ms, 1e-9)))), 1, 9);
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, ms);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) return 2;
  ggml_type type;
  if (!type_of(o.type, type)) {
    std::fprintf(stderr, "ggml-moe-ffn: unknown or unavailable --type %s\n", o.type.c_str());
    return 2;
  }
  if (o.check && type != GGML_TYPE_F32) {
    std::fprintf(stderr, "ggml-moe-ffn: --check compares f32 weights only (--type f32)\n");
    return 2;
  }
  // a row of every expert matrix is whole blocks of the type: H for gate and up, F for down
  const int64_t block = ggml_blck_size(type);
  if (o.hidden % block != 0 || o.ffn % block != 0) {
    std::fprintf(stderr,
                 "ggml-moe-ffn: %s stores rows in blocks of %lld values; hidden %lld and ffn %lld must be "
                 "multiples of it\n",
                 o.type.c_str(), (long long)block, (long long)o.hidden, (long long)o.ffn);
    return 3;
  }

  ggml_log_set(log_callback, nullptr);
  ggml_backend_t backend = ggml_backend_cpu_init();
  ggml_backend_cpu_set_n_threads(backend, o.threads);

  ExpertTensor gate_exps = make_expert_tensor(backend, o, type, "gate_exps", kGate, o.hidden, o.ffn, input_scale(o));
  ExpertTensor up_exps = make_expert_tensor(backend, o, type, "up_exps", kUp, o.hidden, o.ffn, input_scale(o));
  ExpertTensor down_exps = make_expert_tensor(backend, o, type, "down_exps", kDown, o.ffn, o.hidden, down_scale(o));

  // the router and the tokens: f32, in the plain CPU buffer (the graph allocator leaves allocated tensors alone)
  ggml_init_params input_params = {ggml_tensor_overhead() * 4, nullptr, true};
  ggml_context* input_ctx = ggml_init(input_params);
  ggml_tensor* gate_inp = ggml_new_tensor_2d(input_ctx, GGML_TYPE_F32, o.hidden, o.experts);
  ggml_tensor* x = ggml_new_tensor_2d(input_ctx, GGML_TYPE_F32, o.hidden, o.tokens);
  ggml_backend_buffer_t input_buffer =
      ggml_backend_alloc_ctx_tensors_from_buft(input_ctx, ggml_backend_cpu_buffer_type());
  {
    std::vector<float> values(size_t(o.hidden * o.experts));
    for (int64_t i = 0; i < o.hidden * o.experts; ++i)
      values[size_t(i)] = synthetic(o.seed, kRouter, uint64_t(i), input_scale(o));
    ggml_backend_tensor_set(gate_inp, values.data(), 0, ggml_nbytes(gate_inp));
  }
  // The token batches: batch 0 is the one --check compares with the reference (reference() regenerates it).
  const int batches = o.check ? 1 : std::min(o.repeat + 1, 8);
  std::vector<float> tokens(size_t(o.hidden * o.tokens) * size_t(batches));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = synthetic(o.seed, kTokens, uint64_t(i), 1.0f);
  auto set_batch = [&](int b) {
    ggml_backend_tensor_set(x, tokens.data() + size_t(b % batches) * size_t(o.hidden * o.tokens), 0, ggml_nbytes(x));
  };
  set_batch(0);

  ggml_init_params graph_params = {ggml_tensor_overhead() * size_t(64 + 2 * o.top_k) + ggml_graph_overhead(), nullptr,
                                   true};
  ggml_context* graph_ctx = ggml_init(graph_params);
  ggml_cgraph* gf = ggml_new_graph(graph_ctx);
  ggml_tensor* out = build_moe_ffn(graph_ctx, gf, x, gate_inp, up_exps.t, gate_exps.t, down_exps.t, o.experts, o.top_k);
  ggml_set_output(out);
  ggml_build_forward_expand(gf, out);
  ggml_gallocr_t galloc = ggml_gallocr_new(ggml_backend_cpu_buffer_type());
  if (!ggml_gallocr_alloc_graph(galloc, gf)) {
    std::fprintf(stderr, "ggml-moe-ffn: cannot allocate the graph\n");
    return 1;
  }

  int status = 0;
  if (o.check) {
    if (ggml_backend_graph_compute(backend, gf) != GGML_STATUS_SUCCESS) return 1;
    std::vector<float> got(size_t(ggml_nelements(out)));
    ggml_backend_tensor_get(out, got.data(), 0, ggml_nbytes(out));
    const std::vector<float> want = reference(o);
    double largest = 0, error = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      largest = std::max(largest, std::fabs(double(want[i])));
      error = std::max(error, std::fabs(double(got[i]) - double(want[i])));
    }
    const double relative = largest > 0 ? error / largest : error;
    const bool ok = relative <= 1e-4 && std::isfinite(relative);
    std::printf(
        "check: hidden %lld ffn %lld experts %lld top-k %lld tokens %lld threads %d: max relative error %.3g "
        "(max |ggml - reference| / max |reference|, limit 1e-4): %s\n",
        (long long)o.hidden, (long long)o.ffn, (long long)o.experts, (long long)o.top_k, (long long)o.tokens, o.threads,
        relative, ok ? "ok" : "FAILED");
    status = ok ? 0 : 1;
  } else {
    if (ggml_backend_graph_compute(backend, gf) != GGML_STATUS_SUCCESS) return 1;  // warm-up
    std::vector<double> ms;
    for (int r = 0; r < o.repeat; ++r) {
      set_batch(r + 1);
      const auto start = std::chrono::steady_clock::now();
      if (ggml_backend_graph_compute(backend, gf) != GGML_STATUS_SUCCESS) return 1;
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(ms.begin(), ms.end());
    const size_t n = ms.size();
    const double median = n % 2 == 1 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
    std::printf("ggml %s tokens %lld threads %d: median %s ms min %s ms\n", o.type.c_str(), (long long)o.tokens,
                o.threads, milliseconds(median).c_str(), milliseconds(ms.front()).c_str());
  }

  ggml_gallocr_free(galloc);
  ggml_free(graph_ctx);
  ggml_backend_buffer_free(input_buffer);
  ggml_free(input_ctx);
  for (ExpertTensor* e : {&gate_exps, &up_exps, &down_exps}) {
    ggml_backend_buffer_free(e->buffer);
    ggml_free(e->ctx);
  }
  ggml_backend_free(backend);
  return status;
}

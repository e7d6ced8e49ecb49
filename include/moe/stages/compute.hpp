// moe/stages/compute.hpp: stage 3 of a forward pass, compute: one work item's input projections.
//
// A work item is a run of consecutive input panels of one expert (WorkItem); for every token the expert
// received, the item's panels of the input projection, with the activation fused into the epilogue
// (act(gate) * up for gated experts, act(up) for plain ones), written to the expert's hidden rows in the
// workspace: f32, or already in the coding the down projection reads (ActivationCoding).
#pragma once

#include <algorithm>

#include "../config.hpp"
#include "../expert_set.hpp"
#include "../kernels/activation.hpp"
#include "../kernels/gemm.hpp"
#include "../kernels/quantize.hpp"
#include "../precision.hpp"
#include "../simd.hpp"
#include "../workspace.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace stages {

// How the expert stages code the activations their kernels read, for Precision: f32 rows, int8 blocks
// (q8a8, q4a8) or bf16 pairs (bf16a16).
template <class Precision>
struct ActivationCoding {
  static constexpr bool kInt8 = int8_activations<Precision>::value;
  static constexpr bool kBf16 = bf16_activations<Precision>::value;
  // Where half a gated panel is whole int8 activation blocks (AVX-512: 32 floats, one block), the input
  // projection's epilogue quantises each hidden block as it makes it: no f32 hidden rows, and no separate
  // pass (nor its barrier) before the down projection. Elsewhere that pass quantises the f32 rows.
  static constexpr bool kQuantizeInEpilogue =
      kInt8 && (detail::kernels::kPanelColumns / 2) % detail::kernels::kActivationBlock == 0;
  // The buffers a workspace holds for this coding.
  static constexpr Workspace::Coding kBuffers =
      kInt8 ? Workspace::Coding::kInt8Blocks : (kBf16 ? Workspace::Coding::kBf16Pairs : Workspace::Coding::kF32Rows);
};

// Whether the tile of tokens from `first` on, of an expert whose tokens are [begin, end), asks
// kernels::multiply_panels to prefetch the panels (tiles of 1-2 rows always do): the first tile reads them
// from memory, the later ones from L2. Only with at most two tiles, where the first one's stream is at
// least half of the panels' reads; with more tiles it is a smaller share, and prefetching it showed no
// gain (docs/PERFORMANCE.md, decision "The first token tile prefetches").
inline bool prefetches(int first, int begin, int end) {
  return first == begin && end - begin <= 2 * detail::kernels::kTileRows;
}

template <class Precision>
class Compute {
public:
  using Row = detail::kernels::ActivationRow<Precision>;  // what the expert kernels read a token's activations as

  explicit Compute(const ExpertSet<Precision>& experts) : experts_(experts) {}

  // Sizes the activation buffers for ws's shape and max_tokens: the coded input rows (int8 or bf16), and
  // the hidden rows this stage writes and combine reads: f32, or already coded for the down projection.
  static void reserve(Workspace& ws) {
    const Workspace::Shape& shape = ws.shape_;
    const Index tokens = ws.max_tokens_;
    constexpr Index kBlock = detail::kernels::kActivationBlock;
    ws.hidden_.resize(kBf16 || kQuantizeInEpilogue ? 0 : tokens * shape.hidden_row_floats);
    const Index input_codes = kInt8 ? tokens * shape.quantized_width : 0;
    const Index hidden_codes = kInt8 ? tokens * shape.hidden_row_floats : 0;
    ws.input_codes_.resize(input_codes);
    ws.input_scales_.resize(input_codes / kBlock);
    ws.input_sums_.resize(input_codes / kBlock);
    ws.hidden_codes_.resize(hidden_codes);
    ws.hidden_scales_.resize(hidden_codes / kBlock);
    ws.hidden_sums_.resize(hidden_codes / kBlock);
    ws.input_bf16_.resize(kBf16 ? tokens * shape.quantized_width : 0);
    ws.hidden_bf16_.resize(kBf16 ? tokens * shape.hidden_row_floats : 0);
  }
  // Codes token t's input row x[0, hidden) into ws as the expert kernels read it (nothing to do for f32
  // activations): int8 blocks or bf16 values, padded to ws's quantized width.
  static void code_input(const float* x, Index hidden, Index t, Workspace& ws) {
    const Index width = ws.shape_.quantized_width;
    if constexpr (kInt8) {
      const Index blocks_per_row = width / detail::kernels::kActivationBlock;
      detail::kernels::quantize_activations(x, hidden, width, ws.input_codes_.data() + t * width,
                                            ws.input_scales_.data() + t * blocks_per_row,
                                            ws.input_sums_.data() + t * blocks_per_row);
    } else if constexpr (kBf16) {
      detail::kernels::round_activations_bf16(x, hidden, width, ws.input_bf16_.data() + t * width);
    } else {
      (void)x, (void)hidden, (void)t, (void)width;
    }
  }
  // Token t's input row as the expert kernels read it: x itself, or its int8 or bf16 codes.
  static Row input_row(const float* x, Index x_stride, int t, const Workspace& ws) {
    if constexpr (kInt8) {
      const Index width = ws.shape_.quantized_width, block = t * width / detail::kernels::kActivationBlock;
      return {ws.input_codes_.data() + t * width, ws.input_scales_.data() + block, ws.input_sums_.data() + block};
    } else if constexpr (kBf16) {
      return {ws.input_bf16_.data() + t * ws.shape_.quantized_width};
    } else {
      return x + t * x_stride;
    }
  }
  // The codes of expert e's input panels [p, p + panels), to bring in ahead (kernels::NextWeights).
  detail::kernels::NextWeights panels_from(int e, Index p, int panels) const {
    const auto& projection = experts_[e].input_projection();
    return projection.codes_from(p, 0, panels * projection.depth());
  }

  // Expert e's input projection for `panels` (1 or 2) consecutive panels from p on, for all its tokens,
  // with the activation in the epilogue: act(gate) * up for gated experts, act(up) for plain ones, into the
  // expert's hidden rows. kernels::multiply_panels runs a tile of one or two tokens over two panels at once.
  // The tiles after the first bring `next` into L2.
  template <Activation A>
  void run(int e, Index p, int panels, const float* x, Index x_stride, Workspace& ws,
           detail::kernels::NextWeights next) const {
    constexpr int kHalf = detail::kernels::kTileVectors / 2;
    const bool gated = experts_.gated();
    const Index ffn = experts_.ffn_padded(e);
    const auto& projection = experts_[e].input_projection();
    const Index hidden = ws.hidden_offset_[e] + p * Expert::hidden_per_panel(gated);
    // A row's hidden values from this panel, h[0, count), go to the f32 rows, or straight to the bf16 or
    // int8 rows the down projection reads (at and count are whole blocks: Expert::ffn_padded).
    auto put = [&ws](Index at, const detail::simd::Vec* h, int count) {
      for (int v = 0; v < count; ++v) {
        if constexpr (kBf16) {
          detail::simd::store_bf16(ws.hidden_bf16_.data() + at + v * kWidth, h[v]);
        } else if constexpr (kQuantizeInEpilogue) {
          if (v % detail::kernels::kBlockVectors != 0) continue;
          const Index start = at + v * kWidth, block = start / detail::kernels::kActivationBlock;
          detail::kernels::quantize_block(h + v, ws.hidden_codes_.data() + start, ws.hidden_scales_.data() + block,
                                          ws.hidden_sums_.data() + block);
        } else {
          detail::simd::store(ws.hidden_.data() + at + v * kWidth, h[v]);
        }
      }
    };
    const detail::kernels::PanelRef<Precision> refs[2] = {projection.panel(p), projection.panel(p + panels - 1)};
    const int begin = ws.offsets_[e], end = ws.offsets_[e + 1];
    // What only some families' experts have (Llama 4's input scaling, gpt-oss's biases and clamped SwiGLU)
    // runs in a function of its own, hidden_with_extras, behind one branch per row and panel pair: the
    // common epilogue stays as short as without them, and their constants take no register in the kernel.
    const Extras extras{e < experts_.routed() && experts_.scale_expert_input(), &experts_[e], &experts_.ffn(),
                        p * Expert::hidden_per_panel(gated)};
    const bool with_extras = extras.scaled || extras.expert->has_bias() || (gated && extras.type->clamped());
    for (int first = begin; first < end; first += kRows) {
      const int n = std::min(kRows, end - first);
      Row rows[kRows];
      for (int r = 0; r < n; ++r) rows[r] = input_row(x, x_stride, ws.assigned_token_[first + r], ws);
      const Index out = hidden + Index(first - begin) * ffn;
      // Panel `which` of the call's (0 or 1) yields hidden columns from out + which * hidden_per_panel.
      auto epilogue = [&](int which, auto& acc, int m) {
        const Index at = out + which * Expert::hidden_per_panel(gated);
        for (int r = 0; r < m; ++r) {
          detail::simd::Vec h[detail::kernels::kTileVectors];
          if (with_extras) {
            // A copy goes out of line, so that the tile's sums themselves never need an address.
            detail::simd::Vec sums[detail::kernels::kTileVectors];
            MOE_UNROLL for (int v = 0; v < detail::kernels::kTileVectors; ++v) sums[v] = acc[r][v];
            put(at + r * ffn, h, hidden_with_extras<A>(sums, ws.assigned_weight_[first + r], which, gated, extras, h));
          } else if (gated) {
            MOE_UNROLL for (int v = 0; v < kHalf; ++v) h[v] =
                detail::kernels::activate<A>(acc[r][v]) * acc[r][v + kHalf];
            put(at + r * ffn, h, kHalf);
          } else {
            MOE_UNROLL for (int v = 0; v < detail::kernels::kTileVectors; ++v) h[v] =
                detail::kernels::activate<A>(acc[r][v]);
            put(at + r * ffn, h, detail::kernels::kTileVectors);
          }
        }
      };
      detail::kernels::multiply_panels(rows, n, refs, panels, experts_.hidden_size(), epilogue,
                                       prefetches(first, begin, end), first == begin ? nullptr : &next);
    }
  }

private:
  using Expert = typename ExpertSet<Precision>::Expert;

  // An expert's extras, for hidden_with_extras.
  struct Extras {
    bool scaled;           // a routed expert of a layer that scales expert inputs: it computes on w x
    const Expert* expert;  // its biases, if any
    const FfnType* type;   // the clamped SwiGLU, if it is one
    Index first_unit;      // the hidden unit of the call's first panel's first column
  };

  // A row's hidden values h from its sums acc (gate then up for gated experts) of panel `which`, with the
  // extras: the sums times the routing weight w (w x through a projection with no bias on its input is w
  // times the sums of x), plus the biases, then the activation, for gpt-oss's clamped SwiGLU
  //   h = (clamp(u, -limit, limit) + up_offset) * g' sigmoid(alpha g'),   g' = min(g, limit),
  // computed as silu(alpha g') * (clamp(u) + up_offset) / alpha. Returns how many vectors of h it wrote.
  template <Activation A>
  static MOE_NEVER_INLINE int hidden_with_extras(const detail::simd::Vec* sums, float w, int which, bool gated,
                                                 const Extras& x, detail::simd::Vec* h) {
    constexpr int kVectors = detail::kernels::kTileVectors, kHalf = kVectors / 2;
    detail::simd::Vec acc[kVectors];
    for (int v = 0; v < kVectors; ++v) acc[v] = x.scaled ? sums[v] * detail::simd::broadcast(w) : sums[v];
    const Index unit = x.first_unit + which * Expert::hidden_per_panel(gated);
    if (x.expert->has_bias()) {
      // Gated: the panel's gate units, then its up units; plain: up units only.
      const float* gate_bias = x.expert->gate_bias(unit);
      const float* up_bias = x.expert->up_bias(unit);
      for (int v = 0; v < kVectors; ++v)
        acc[v] =
            acc[v] + detail::simd::load(gated ? (v < kHalf ? gate_bias + v * kWidth : up_bias + (v - kHalf) * kWidth)
                                              : up_bias + v * kWidth);
    }
    if (!gated) {
      for (int v = 0; v < kVectors; ++v) h[v] = detail::kernels::activate<A>(acc[v]);
      return kVectors;
    }
    const FfnType& type = *x.type;
    if (A != Activation::SiLU || !type.clamped()) {
      for (int v = 0; v < kHalf; ++v) h[v] = detail::kernels::activate<A>(acc[v]) * acc[v + kHalf];
      return kHalf;
    }
    const detail::simd::Vec alpha = detail::simd::broadcast(type.alpha),
                            inverse_alpha = detail::simd::broadcast(1.0f / type.alpha),
                            limit = detail::simd::broadcast(type.limit), low = detail::simd::broadcast(-type.limit),
                            up_offset = detail::simd::broadcast(type.up_offset);
    for (int v = 0; v < kHalf; ++v) {
      // The sums second: x86's min and max return their second operand when one is NaN, so a NaN sum stays
      // NaN (as torch.clamp keeps it) and the layer's overflow check reports it.
      const detail::simd::Vec g = detail::simd::min(limit, acc[v]) * alpha;
      const detail::simd::Vec u =
          (detail::simd::min(limit, detail::simd::max(low, acc[v + kHalf])) + up_offset) * inverse_alpha;
      h[v] = detail::kernels::activate<A>(g) * u;
    }
    return kHalf;
  }

  static constexpr bool kInt8 = ActivationCoding<Precision>::kInt8;
  static constexpr bool kBf16 = ActivationCoding<Precision>::kBf16;
  static constexpr bool kQuantizeInEpilogue = ActivationCoding<Precision>::kQuantizeInEpilogue;
  static constexpr int kRows = detail::kernels::kTileRows;
  static constexpr int kWidth = detail::simd::kWidth;

  const ExpertSet<Precision>& experts_;
};

}  // namespace stages
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

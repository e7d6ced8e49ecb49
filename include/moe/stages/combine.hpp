// moe/stages/combine.hpp: stage 4 of a forward pass, combine: output panels from the experts' hidden rows.
//
// Each output panel of every token is owned by one call: it is zeroed, then every expert's down projection
// of its tokens' hidden rows is added, weighted by the routing weight, in a fixed order, so the result does
// not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>

#include "../config.hpp"
#include "../expert_set.hpp"
#include "../kernels/gemm.hpp"
#include "../simd.hpp"
#include "../workspace.hpp"
#include "compute.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace stages {

template <class Precision>
class Combine {
public:
  using Row = detail::kernels::ActivationRow<Precision>;

  explicit Combine(const ExpertSet<Precision>& experts) : experts_(experts) {}

  // Output panels [p_begin, p_end) of every token: zero them, then add each expert's weighted down
  // projection, experts in index order, then dropped tokens passed through (weight * x), then shared
  // experts, so each output element has one owner and a fixed summation order (whatever the panel range).
  void run(Index p_begin, Index p_end, const float* x, Index x_stride, float* y, Index y_stride, Index tokens,
           Workspace& ws) const {
    const Index first_column = p_begin * kPanel;
    const Index columns = std::min(p_end * kPanel, experts_.hidden_size()) - first_column;
    for (Index t = 0; t < tokens; ++t) std::fill_n(y + t * y_stride + first_column, columns, 0.0f);
    for (int e = 0; e < experts_.count(); ++e) {
      if (e == experts_.routed()) pass_dropped_through(first_column, columns, x, x_stride, y, y_stride, ws);
      const Index ffn = experts_.ffn_padded(e);
      const int begin = ws.offsets_[e], end = ws.offsets_[e + 1];
      if (begin == end) continue;
      // A routed expert that took its routing weight on the input (stages/compute.hpp) adds its output as is.
      const bool unweighted = e < experts_.routed() && experts_.scale_expert_input();
      // Panel by panel (two at a time: kernels::multiply_panels), each front to back: one stream through the
      // expert's contiguous panels.
      const auto& projection = experts_[e].down_projection();
      for (Index p = p_begin; p < p_end; p += 2) {
        const int panels = p + 1 < p_end ? 2 : 1;
        for (Index k0 = 0; k0 < ffn; k0 += detail::kernels::kDepthBlock) {
          const Index depth = std::min(detail::kernels::kDepthBlock, ffn - k0);
          const detail::kernels::PanelRef<Precision> refs[2] = {projection.panel(p, k0),
                                                                projection.panel(p + panels - 1, k0)};
          detail::kernels::NextWeights next =
              end - begin > kRows ? down_block_after(e, p, k0, ws) : detail::kernels::NextWeights{};
          for (int first = begin; first < end; first += kRows) {
            const int n = std::min(kRows, end - first);
            Row rows[kRows];
            for (int r = 0; r < n; ++r) rows[r] = hidden_row(e, first - begin + r, k0, ws);
            // Panel p + which's sums, added to its columns of each row's token.
            auto epilogue = [&](int which, auto& acc, int m) {
              const Index column = (p + which) * kPanel;
              const Index width = std::min(kPanel, experts_.hidden_size() - column);
              for (int r = 0; r < m; ++r)
                add_weighted(acc[r], unweighted ? 1.0f : ws.assigned_weight_[first + r],
                             y + ws.assigned_token_[first + r] * y_stride + column, width);
            };
            detail::kernels::multiply_panels(rows, n, refs, panels, depth, epilogue, prefetches(first, begin, end),
                                             first == begin ? nullptr : &next);
          }
        }
      }
      if (experts_[e].has_bias()) add_down_bias(e, first_column, columns, unweighted, y, y_stride, ws);
    }
    if (experts_.shared() == 0) pass_dropped_through(first_column, columns, x, x_stride, y, y_stride, ws);
  }

  // The down-projection codes combine reads after expert e's depth block from k0 on of panel p: its next
  // depth block, or else the first block of the next expert with tokens. Only panel p's: a pair of panels
  // is combined only with one tile of tokens, which has no later tile to bring anything in.
  detail::kernels::NextWeights down_block_after(int e, Index p, Index k0, const Workspace& ws) const {
    const Index k1 = k0 + detail::kernels::kDepthBlock;
    if (k1 < experts_.ffn_padded(e))
      return experts_[e].down_projection().codes_from(
          p, k1, std::min(detail::kernels::kDepthBlock, experts_.ffn_padded(e) - k1));
    for (int f = e + 1; f < experts_.count(); ++f)
      if (ws.offsets_[f + 1] > ws.offsets_[f])
        return experts_[f].down_projection().codes_from(p, 0,
                                                        std::min(detail::kernels::kDepthBlock, experts_.ffn_padded(f)));
    return {};
  }

  // y[t] += weight * b over columns [column, column + width) for each token t of expert e, b its down
  // projection's bias: out of the kernels' epilogue, which stays as short as for experts without biases.
  void add_down_bias(int e, Index column, Index width, bool unweighted, float* y, Index y_stride,
                     const Workspace& ws) const {
    const float* bias = experts_[e].down_bias(0);
    for (int i = ws.offsets_[e]; i < ws.offsets_[e + 1]; ++i) {
      const float weight = unweighted ? 1.0f : ws.assigned_weight_[i];
      float* out = y + ws.assigned_token_[i] * y_stride;
      for (Index c = column; c < column + width; ++c) out[c] = std::fma(weight, bias[c], out[c]);
    }
  }

  // y[t] += weight * x[t] over columns [column, column + width) for each dropped choice, when the policy
  // passes dropped tokens through.
  static void pass_dropped_through(Index column, Index width, const float* x, Index x_stride, float* y, Index y_stride,
                                   const Workspace& ws) {
    for (int i = 0; i < ws.pass_through_count_; ++i) {
      const Index t = ws.dropped_token_[i];
      const float weight = ws.dropped_weight_[i];
      for (Index c = column; c < column + width; ++c)
        y[t * y_stride + c] = std::fma(weight, x[t * x_stride + c], y[t * y_stride + c]);
    }
  }

  // The i-th hidden row of expert e (its i-th token), from depth k0 on (a multiple of the depth block).
  Row hidden_row(int e, Index i, Index k0, const Workspace& ws) const {
    const Index start = ws.hidden_offset_[e] + i * experts_.ffn_padded(e) + k0;
    if constexpr (kInt8) {
      const Index block = start / detail::kernels::kActivationBlock;
      return {ws.hidden_codes_.data() + start, ws.hidden_scales_.data() + block, ws.hidden_sums_.data() + block};
    } else if constexpr (kBf16) {
      return {ws.hidden_bf16_.data() + start};
    } else {
      return ws.hidden_.data() + start;
    }
  }

  // out[0, width) += weight * lanes of acc.
  static MOE_ALWAYS_INLINE void add_weighted(const detail::simd::Vec (&acc)[detail::kernels::kTileVectors],
                                             float weight, float* out, Index width) {
    if (width == kPanel) {
      const detail::simd::Vec w = detail::simd::broadcast(weight);
      MOE_UNROLL for (int v = 0; v < detail::kernels::kTileVectors; ++v)
          detail::simd::store(out + v * kWidth, detail::simd::fma(w, acc[v], detail::simd::load(out + v * kWidth)));
    } else {
      // The last panel of a hidden size that is not a multiple of it: the same sums, lane by lane.
      alignas(64) float lanes[kPanel];
      MOE_UNROLL for (int v = 0; v < detail::kernels::kTileVectors; ++v)
          detail::simd::store(lanes + v * kWidth, acc[v]);
      for (Index c = 0; c < width; ++c) out[c] = std::fma(weight, lanes[c], out[c]);
    }
  }

private:
  static constexpr bool kInt8 = ActivationCoding<Precision>::kInt8;
  static constexpr bool kBf16 = ActivationCoding<Precision>::kBf16;
  static constexpr int kRows = detail::kernels::kTileRows;
  static constexpr int kWidth = detail::simd::kWidth;
  static constexpr Index kPanel = detail::kernels::kPanelColumns;

  const ExpertSet<Precision>& experts_;
};

}  // namespace stages
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

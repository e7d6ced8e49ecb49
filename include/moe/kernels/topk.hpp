// moe/kernels/topk.hpp: the k largest of n scores, for the small k of MoE routing.
#pragma once

#include "../config.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace kernels {

// Writes the indices and values of the k largest of score(0), ..., score(n - 1), largest first. Ties go to
// the lower index (a later score must be strictly larger to displace an earlier one), so the result is
// deterministic. One pass with insertion into a sorted k-list: nearly every score is rejected by a single
// compare against the current k-th best, so this is O(n) for the k << n of MoE routers, with no scratch
// memory. With K fixed at compile time the insertion loops unroll. NaN scores are never selected over
// numbers (the caller rejects them before routing).
template <int K = Dynamic, class Score>
inline void top_k_of(int n, int k_runtime, Score&& score, int* ids, float* values) {
  const int k = K == Dynamic ? k_runtime : K;
  int filled = 0;
  for (int i = 0; i < n; ++i) {
    const float s = score(i);
    if (filled == k && !(s > values[k - 1])) continue;
    int pos = filled < k ? filled++ : k - 1;
    while (pos > 0 && s > values[pos - 1]) {
      values[pos] = values[pos - 1];
      ids[pos] = ids[pos - 1];
      --pos;
    }
    values[pos] = s;
    ids[pos] = i;
  }
}

// The same over an array of n scores.
template <int K = Dynamic>
inline void top_k(const float* scores, int n, int k_runtime, int* ids, float* values) {
  top_k_of<K>(
      n, k_runtime, [scores](int i) { return scores[i]; }, ids, values);
}

}  // namespace kernels
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

// moe/kernels/prefetch.hpp: how the tiles ask for weights before they need them: kPrefetchBytes ahead of
// the row they read, and the weights the thread reads next (NextWeights).
#pragma once

#include <cstdint>

#include "../config.hpp"
#include "../simd.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace kernels {

// How far ahead of the current depth row a tile that streams its weights from memory prefetches them, in
// bytes (prefetch_ahead says which tiles do).
inline constexpr int kPrefetchBytes = 4096;

// Asks for the Bytes bytes of weights kPrefetchBytes past `codes` where a tile of Rows token rows streams
// them from memory: always at 1-2 rows, and at more only when the caller says it is the first tile over
// the panel (`prefetch`); the rule and its reasons are at widening_tile.hpp's accumulate_row. Every tile
// kind calls this.
template <int Rows, int Bytes>
MOE_ALWAYS_INLINE void prefetch_ahead(const void* codes, bool prefetch) {
  if (Rows <= 2 || prefetch) {
    MOE_UNROLL for (int line = 0; line < Bytes; line += 64)
        detail::simd::prefetch(reinterpret_cast<std::uintptr_t>(codes) + kPrefetchBytes + line);
  }
}

// Weights the calling thread reads next, [from, to) in bytes (codes only): another panel, or the next depth
// block of the one it is reading. A tile that finds its own weights in L2 (every tile over a panel but the
// first) brings these in, one cache line per depth row it runs (per pair of rows in the bf16a16 tile), so
// that the next panel streams from memory while this one is multiplied, instead of stalling the first tile
// over it at DRAM pace (docs/PERFORMANCE.md, decision "The next panel streams in during the current one").
// The int8 tile does not (multiply_rows). Addresses, not pointers: prefetching past them never faults.
struct NextWeights {
  std::uintptr_t from = 0, to = 0;

  MOE_ALWAYS_INLINE void fetch_line() {
    if (from < to) {
      detail::simd::prefetch<2>(from);
      from += 64;
    }
  }
};

}  // namespace kernels
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

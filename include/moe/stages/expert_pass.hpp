// moe/stages/expert_pass.hpp: stages 3 and 4 of a forward pass, planned and run on one team of threads.
//
// plan() cuts the busy experts' input projections into work items (WorkItem) after the group stage has
// counted each expert's tokens; run() computes every item (stages/compute.hpp), then combines every
// output panel (stages/combine.hpp), in one parallel region. Neither depends on the routing policy: a
// program compiles them once per precision, whatever its policies.
#pragma once

#include <algorithm>
#include <atomic>

#include "../config.hpp"
#include "../detail/team.hpp"
#include "../expert_set.hpp"
#include "../kernels/activation.hpp"
#include "../kernels/gemm.hpp"
#include "../kernels/quantize.hpp"
#include "../workspace.hpp"
#include "combine.hpp"
#include "compute.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace stages {

template <class Precision>
class ExpertPass {
public:
  // Sizes the buffers this stage writes besides compute's (Compute::reserve), for ws's shape: where each
  // expert's hidden rows start, and the work items.
  static void reserve(Workspace& ws) {
    ws.hidden_offset_.resize(ws.shape_.experts + ws.shape_.shared_experts);
    ws.items_.resize(ws.shape_.input_items);
  }

  explicit ExpertPass(const ExpertSet<Precision>& experts) : experts_(experts) {}

  // From each expert's token count (counts, routed then shared), where its hidden rows start in the
  // hidden scratch (hidden_offset, one per expert) and the work items of the input projections for a team
  // of `threads` (items, room for every panel of every expert); returns the number of items.
  int plan(const int* counts, int threads, Index* hidden_offset, WorkItem* items_out) const {
    const int count = experts_.count();
    // Read only for busy experts (so busy >= 1, and at least one item each); the max spares an idle batch a
    // division by zero.
    const int busy = int(std::count_if(counts, counts + count, [](int c) { return c > 0; }));
    const Index items_per_expert = (kItemsPerThread * threads + busy - 1) / std::max(busy, 1);
    Index hidden = 0;
    int items = 0;
    for (int e = 0; e < count; ++e) {
      hidden_offset[e] = hidden;
      hidden += Index(counts[e]) * experts_.ffn_padded(e);
      if (counts[e] == 0) continue;
      const Index panels = experts_.input_panels(e), span = item_span(e, counts[e], items_per_expert);
      for (Index p = 0; p < panels; p += span)
        items_out[items++] = WorkItem{e, int(p), int(std::min(span, panels - p))};
    }
    return items;
  }

  // Stages 3 and 4, in one parallel region: compute every (expert, input panel) item, then combine every
  // output panel. Scheduled dynamically: items of busy experts cost more, and which thread runs an item
  // never changes what it computes. With more than one tile of tokens, a thread claims its next item when
  // it starts one, so that the current item's later tiles can bring the next one's panels into L2
  // (NextWeights); with one tile of tokens (decode) there is no later tile to do that, and a thread claims
  // an item only when it is free, which keeps the threads' last items balanced.
  template <Activation A>
  void run(const float* x, Index x_stride, float* y, Index y_stride, Index tokens, Workspace& ws) const {
    const Compute<Precision> compute(experts_);
    const Combine<Precision> combine(experts_);
    const int items = ws.item_count_;
    const Index out_panels = (experts_.hidden_size() + kPanel - 1) / kPanel;
    const int threads = detail::team_size(ws.threads_);
    std::atomic<int> unclaimed{0};  // the first item no thread has claimed
    detail::run_on_team(threads, [&] {
      // Item `item`, two panels a call, each call bringing in the panels computed after its own: the
      // item's next two, or the first two of item `following` (none when following == items).
      auto compute_item = [&](int item, int following) {
        const int e = ws.items_[item].expert;
        for (int p = ws.items_[item].first_panel, last = p + ws.items_[item].panels; p < last; p += 2) {
          detail::kernels::NextWeights next;
          if (p + 2 < last)
            next = compute.panels_from(e, p + 2, std::min(2, last - p - 2));
          else if (following < items)
            next = compute.panels_from(ws.items_[following].expert, ws.items_[following].first_panel,
                                       std::min(2, ws.items_[following].panels));
          compute.template run<A>(e, p, std::min(2, last - p), x, x_stride, ws, next);
        }
      };
      if (tokens <= kRows) {
        MOE_OMP(omp for schedule(dynamic))
        for (int item = 0; item < items; ++item) compute_item(item, items);
      } else {
        for (int item = unclaimed.fetch_add(1, std::memory_order_relaxed); item < items;) {
          const int following = unclaimed.fetch_add(1, std::memory_order_relaxed);
          compute_item(item, following);
          item = following;
        }
        MOE_OMP(omp barrier)  // the combine reads every item's hidden rows
      }
      if constexpr (kInt8 && !kQuantizeInEpilogue) {
        // The down projections read the hidden rows as int8: quantise each once, every block of it.
        for (int e = 0; e < experts_.count(); ++e) {
          const Index ffn = experts_.ffn_padded(e);
          MOE_OMP(omp for schedule(static) nowait)
          for (int i = 0; i < ws.counts_[e]; ++i) {
            const Index start = ws.hidden_offset_[e] + i * ffn, block = start / detail::kernels::kActivationBlock;
            detail::kernels::quantize_activations(ws.hidden_.data() + start, ffn, ffn, ws.hidden_codes_.data() + start,
                                                  ws.hidden_scales_.data() + block, ws.hidden_sums_.data() + block);
          }
        }
        MOE_OMP(omp barrier)
      }
      const Index span = combine_span(tokens, out_panels, threads);
      MOE_OMP(omp for schedule(dynamic) nowait)  // the end of the team's region waits
      for (Index p = 0; p < out_panels; p += span)
        combine.run(p, std::min(out_panels, p + span), x, x_stride, y, y_stride, tokens, ws);
    });
  }

private:
  // Consecutive output panels one combine item takes. With one tile of tokens an item streams each
  // expert's down-projection panels once, and consecutive panels are contiguous: for short panels, an item
  // of several reads each expert as one stream of up to kStreamBytes (item_span explains why that
  // matters), and of long ones two (item_span: the 1-row tile pairs them), while two items per thread keep
  // the threads balanced (every output panel costs the same).
  // With more tokens one panel per item keeps it in L2 across the token tiles.
  Index combine_span(Index tokens, Index out_panels, int threads) const {
    if (tokens > kRows) return 1;
    const double panel_bytes = experts_[0].down_projection().bytes() / double(out_panels);
    const Index wanted = std::max<Index>(kPairedPanels, Index(kStreamBytes / panel_bytes));
    return std::max<Index>(1, std::min(wanted, out_panels / (2 * Index(threads))));
  }

  // Consecutive input panels one work item computes. With one tile of tokens an item streams its panels
  // once, and a panel of a 1-byte precision is short (64 KiB for a 1024-deep projection): a stream that
  // short spends much of its time ramping up the hardware prefetcher, so items then take consecutive panels
  // (contiguous in memory) up to kStreamBytes, and at least two, so that a 1-row tile runs two panels and
  // two FMA chains per vector (kernels::multiply_panels; an f32 panel 1024 deep is 256 KiB with AVX-512),
  // while leaving at least `items` items of the expert for the threads. plan() asks for kItemsPerThread items per
  // thread over all busy experts, not per expert: with 8 busy fine-grained experts (16 panels each) a rule of 8 items
  // per expert cut every stream to 2 panels, each paying that ramp-up. With more tokens a panel is reused across tiles
  // and one panel per item keeps it in L2 (docs/PERFORMANCE.md, decision "Decode work items: long streams, counted per
  // thread").
  static constexpr double kStreamBytes = 256 * 1024;
  // The fewest panels a decode item takes where the expert has enough: the two a 1-row tile runs together.
  static constexpr Index kPairedPanels = 2;
  static constexpr Index kItemsPerThread = 8;
  Index item_span(int e, int tokens, Index items) const {
    if (tokens > kRows) return 1;
    const Index panels = experts_.input_panels(e);
    const double panel_bytes = experts_[e].input_projection().bytes() / double(panels);
    const Index wanted = std::max<Index>(kPairedPanels, Index(kStreamBytes / panel_bytes));
    return std::max<Index>(1, std::min(wanted, panels / items));
  }

  static constexpr bool kInt8 = ActivationCoding<Precision>::kInt8;
  static constexpr bool kQuantizeInEpilogue = ActivationCoding<Precision>::kQuantizeInEpilogue;
  static constexpr int kRows = detail::kernels::kTileRows;
  static constexpr Index kPanel = detail::kernels::kPanelColumns;

  const ExpertSet<Precision>& experts_;
};

}  // namespace stages
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

// moe/workspace.hpp: all the scratch memory of a forward pass, sized once.
#pragma once

#include <string>

#include <cstdint>

#include "config.hpp"
#include "detail/aligned_buffer.hpp"

#if MOE_HAS_OPENMP
#include <omp.h>
#endif

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// Threads a forward pass uses when its workspace does not say: OpenMP's default (OMP_NUM_THREADS, or
// every core), or 1 without OpenMP or with MOE_DONT_PARALLELIZE.
inline int default_thread_count() {
#if MOE_HAS_OPENMP
  return omp_get_max_threads() < MOE_MAX_THREADS ? omp_get_max_threads() : MOE_MAX_THREADS;
#else
  return 1;
#endif
}

template <int Experts, int TopK, class Precision, class Routing>
class Layer;
namespace stages {
template <class Routing, int Slots>
class Route;
template <class Precision>
class Compute;
template <class Precision>
class Combine;
template <class Precision>
class ExpertPass;
struct Group;
}  // namespace stages

// A run of consecutive input panels of one expert: the unit of work of the compute stage.
struct WorkItem {
  int expert;
  int first_panel;
  int panels;
};

// Scratch for forward passes of up to max_tokens() tokens through layers of one shape. Make it with
// Layer::workspace(max_tokens); after that a forward pass allocates nothing. One workspace serves one
// forward pass at a time: give each calling thread its own.
class Workspace {
public:
  // How the expert stages code activations, as far as the buffers go (stages::ActivationCoding): f32 rows,
  // int8 blocks (q8a8, q4a8) or bf16 values (bf16a16).
  enum class Coding { kF32Rows, kInt8Blocks, kBf16Pairs };

  Workspace() = default;

  Index max_tokens() const { return max_tokens_; }
  // Threads a forward pass uses; 0 (the default) means default_thread_count().
  int threads() const { return threads_; }
  void set_threads(int threads) {
    MOE_CHECK(threads >= 0, "Workspace::set_threads", "thread count must be >= 0, got " + std::to_string(threads));
    threads_ = threads;
  }
  // Bytes of scratch held, for sizing on small devices.
  Index bytes() const {
    Index total = 0;
    for_each_buffer([&total](const auto& buffer) { total += buffer.size() * Index(sizeof(*buffer.data())); });
    return total;
  }

private:
  template <int, int, class, class>
  friend class Layer;
  template <class, int>
  friend class stages::Route;
  template <class>
  friend class stages::Compute;
  template <class>
  friend class stages::Combine;
  template <class>
  friend class stages::ExpertPass;
  friend struct stages::Group;

  // The layer shape the buffers were sized for; a forward pass checks that its layer has the same.
  struct Shape {
    Index hidden_size = 0;
    Index logits_width = 0;       // router columns, padded to whole panels
    Index hidden_row_floats = 0;  // hidden activations of one token over all its experts
    int slots = 0;                // routed experts per token
    int experts = 0;
    int shared_experts = 0;
    Index input_items = 0;             // (expert, panel) items when every expert is busy
    Index quantized_width = 0;         // int8 or bf16 codes of one input row (0: the layer keeps activations f32)
    Coding coding = Coding::kF32Rows;  // which activation buffers exist
    bool operator==(const Shape& o) const {
      return hidden_size == o.hidden_size && logits_width == o.logits_width && quantized_width == o.quantized_width &&
             coding == o.coding && hidden_row_floats == o.hidden_row_floats && slots == o.slots &&
             experts == o.experts && shared_experts == o.shared_experts && input_items == o.input_items;
    }
  };

  // Calls f(buffer) for every buffer below: one list, for bytes().
  template <class F>
  void for_each_buffer(F&& f) const {
    f(logits_), f(ids_), f(weights_), f(shared_weights_), f(counts_), f(offsets_), f(fill_), f(assigned_token_);
    f(assigned_weight_), f(dropped_token_), f(dropped_weight_), f(hidden_offset_), f(hidden_), f(items_);
    f(input_codes_), f(input_scales_), f(input_sums_), f(hidden_codes_), f(hidden_scales_), f(hidden_sums_);
    f(input_bf16_), f(hidden_bf16_);
  }

  Shape shape_;
  Index max_tokens_ = 0;
  int threads_ = 0;
  int item_count_ = 0;  // input-projection work items of the current pass

  detail::AlignedBuffer<float> logits_;          // tokens x logits_width: router logits, then shared gates
  detail::AlignedBuffer<int> ids_;               // tokens x slots: chosen experts
  detail::AlignedBuffer<float> weights_;         // tokens x slots: their weights
  detail::AlignedBuffer<float> shared_weights_;  // tokens x shared experts: gate value (1 when ungated)
  detail::AlignedBuffer<int> counts_;            // per expert: tokens routed to it
  detail::AlignedBuffer<int> offsets_;           // per expert + 1: prefix sums of counts
  detail::AlignedBuffer<int> fill_;              // per expert: cursor while grouping
  detail::AlignedBuffer<int> assigned_token_;    // grouped (token, weight) pairs, expert by expert
  detail::AlignedBuffer<float> assigned_weight_;
  detail::AlignedBuffer<int> dropped_token_;     // choices dropped by a capacity limit and passed through
  detail::AlignedBuffer<float> dropped_weight_;  // their weights
  Index dropped_count_ = 0;                      // dropped choices of the current pass
  int pass_through_count_ = 0;                   // of those, passed through
  detail::AlignedBuffer<Index> hidden_offset_;   // per expert: where its hidden rows start in hidden_
  detail::AlignedBuffer<float> hidden_;          // hidden activations of every (token, expert) pair
  detail::AlignedBuffer<WorkItem> items_;        // work items of the input projections
  // Int8 activations (q8a8, q4a8; kernels/quantize.hpp): the input rows and every hidden row, quantised.
  // Where the compute stage quantises the hidden rows in its epilogue (AVX-512), hidden_ stays empty.
  detail::AlignedBuffer<std::int8_t> input_codes_;  // tokens x quantized_width
  detail::AlignedBuffer<float> input_scales_;       // tokens x quantized_width / 32
  detail::AlignedBuffer<std::int32_t> input_sums_;
  detail::AlignedBuffer<std::int8_t> hidden_codes_;  // laid out as hidden_
  detail::AlignedBuffer<float> hidden_scales_;       // one per 32 of hidden_
  detail::AlignedBuffer<std::int32_t> hidden_sums_;
  // bf16 activations (bf16a16; kernels/quantize.hpp): the input rows and every hidden row, rounded. The
  // compute stage writes the hidden rows straight as bf16, and hidden_ stays empty.
  detail::AlignedBuffer<std::uint16_t> input_bf16_;   // tokens x quantized_width
  detail::AlignedBuffer<std::uint16_t> hidden_bf16_;  // laid out as hidden_ would be
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

// moe/expert_set.hpp: the experts of one layer, packed, with the sizes the stages plan their work by.
#pragma once

#include <cstddef>
#include <vector>

#include "config.hpp"
#include "expert.hpp"
#include "layer_config.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// A layer's routed experts, then its shared ones, each packed in Precision (ExpertWeights). Expert e's
// hidden row is ffn_padded(e) wide: a whole number of input panels (input_panels(e)) and of activation
// blocks. What the compute and combine stages read; it does not depend on the routing policy, so neither
// do they.
template <class Precision>
class ExpertSet {
public:
  using Expert = ExpertWeights<Precision>;

  ExpertSet() = default;
  // config must be checked, with shared_ffn_size filled in (Layer's constructor does both).
  explicit ExpertSet(const LayerConfig& config)
      : hidden_size_(config.hidden_size),
        ffn_size_(config.ffn_size),
        shared_ffn_size_(config.shared_ffn_size),
        ffn_(config.ffn),
        scale_expert_input_(config.scale_expert_input),
        routed_(config.num_experts),
        experts_(std::size_t(config.num_experts + config.num_shared_experts)) {}

  Index hidden_size() const { return hidden_size_; }
  const FfnType& ffn() const { return ffn_; }
  bool gated() const { return ffn_.gated; }
  // Whether routed experts take their routing weight on the input (LayerConfig::scale_expert_input).
  bool scale_expert_input() const { return scale_expert_input_; }
  int routed() const { return routed_; }
  int shared() const { return count() - routed_; }
  int count() const { return int(experts_.size()); }

  Expert& operator[](int e) { return experts_[std::size_t(e)]; }
  const Expert& operator[](int e) const { return experts_[std::size_t(e)]; }

  Index ffn_of(int e) const { return e < routed_ ? ffn_size_ : shared_ffn_size_; }
  Index ffn_padded(int e) const { return Expert::ffn_padded(ffn_of(e), gated()); }
  Index input_panels(int e) const { return ffn_padded(e) / Expert::hidden_per_panel(gated()); }

private:
  Index hidden_size_ = 0;
  Index ffn_size_ = 0;
  Index shared_ffn_size_ = 0;
  FfnType ffn_{};
  bool scale_expert_input_ = false;
  int routed_ = 0;
  std::vector<Expert> experts_;
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

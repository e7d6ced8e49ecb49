// moe/any_layer.hpp: a layer whose weight precision is chosen at run time, behind one interface.
//
//   std::unique_ptr<moe::AnyLayer> layer = moe::make_layer("q8", config, moe::SoftmaxTopK(true));
//
// AnyLayer is what a program that takes the precision from its user (moe-run's --dtype, io::load_block)
// holds: Layer<Dynamic, Dynamic, Precision, Routing> behind virtual functions. One virtual call per pass or
// per weight matrix costs nothing next to the pass; what it saves is compile time: a caller that chooses
// among every precision would otherwise instantiate the whole forward pass once per precision (and per
// activation function inside it) in its own translation unit.
//
// Compiled once (the way fmt offers a compiled library or header-only use): with MOE_COMPILED_LAYERS
// defined, this header declares make_layer_as<Precision, Routing> for the routing policies io/ uses as
// explicit instantiations made elsewhere, so a caller compiles none of them. The CMake target moe::layers
// defines it and compiles one translation unit per precision, each of them
//   #include <moe/any_layer.hpp>
//   MOE_INSTANTIATE_LAYERS(moe::q8)
// (a project without CMake writes the same). Both sides must be compiled with the same flags: the
// instruction-set namespace (target.hpp) makes a mismatch of -m flags a link error, but not one of
// MOE_MAX_THREADS, MOE_DONT_PARALLELIZE or OpenMP. Without the macro, everything is
// instantiated where it is used, as in the rest of this header-only library.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "config.hpp"
#include "layer.hpp"
#include "precision.hpp"
#include "router.hpp"
#include "routing_batch.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

class AnyLayer {
public:
  virtual ~AnyLayer() = default;

  virtual const LayerConfig& config() const = 0;
  // The weight precision's name (TypeName) and the routing policy's (Routing::kName).
  virtual const char* precision() const = 0;
  virtual const char* routing() const = 0;
  // Bits a stored weight takes, with its share of the scales (Precision::kBitsPerWeight).
  virtual double bits_per_weight() const = 0;
  // Bytes of packed weights one routed expert streams when it runs (codes, scales and padding).
  virtual double expert_bytes() const = 0;
  Index hidden_size() const { return config().hidden_size; }
  int experts() const { return config().num_experts; }
  int top_k() const { return config().top_k; }

  // The weights, as Layer's setters take them.
  virtual void set_router(const WeightView& weight) = 0;
  virtual void set_expert(int e, const WeightView& gate, const WeightView& up, const WeightView& down) = 0;
  virtual void set_expert(int e, const WeightView& up, const WeightView& down) = 0;
  virtual void set_shared_expert(int s, const WeightView& gate, const WeightView& up, const WeightView& down) = 0;
  virtual void set_shared_expert(int s, const WeightView& up, const WeightView& down) = 0;
  virtual void set_expert(int e, const Fp8BlockView& gate, const Fp8BlockView& up, const Fp8BlockView& down) = 0;
  virtual void set_shared_expert(int s, const Fp8BlockView& gate, const Fp8BlockView& up, const Fp8BlockView& down) = 0;
  virtual void set_shared_expert_gate(int s, const WeightView& weight) = 0;
  virtual void set_expert_bias(int e, const float* gate, const float* up, const float* down) = 0;
  virtual void set_router_bias(const float* bias) = 0;

  virtual Workspace workspace(Index max_tokens, int threads) const = 0;
  Workspace workspace(Index max_tokens) const { return workspace(max_tokens, 0); }
  // Layer::forward with pointers and row strides.
  virtual RoutingResult forward(const float* x, Index x_stride, float* y, Index y_stride, Index tokens, Workspace& ws,
                                RoutingStats* stats, const std::int64_t* token_ids) const = 0;
  RoutingResult forward(const float* x, Index x_stride, float* y, Index y_stride, Index tokens, Workspace& ws,
                        RoutingStats* stats = nullptr) const {
    return forward(x, x_stride, y, y_stride, tokens, ws, stats, nullptr);
  }
  virtual ForwardCost cost(const RoutingResult& routed) const = 0;
};

namespace detail {

template <class Precision, class Routing>
class AnyLayerOf final : public AnyLayer {
public:
  AnyLayerOf(const LayerConfig& config, const Routing& routing) : layer_(config, routing) {}

  const LayerConfig& config() const override { return layer_.config(); }
  const char* precision() const override { return TypeName<Precision>(); }
  const char* routing() const override { return Routing::kName; }
  double bits_per_weight() const override { return Precision::kBitsPerWeight; }
  double expert_bytes() const override { return layer_.expert_bytes(); }

  void set_router(const WeightView& weight) override { layer_.set_router(weight); }
  void set_expert(int e, const WeightView& gate, const WeightView& up, const WeightView& down) override {
    layer_.set_expert(e, gate, up, down);
  }
  void set_expert(int e, const WeightView& up, const WeightView& down) override { layer_.set_expert(e, up, down); }
  void set_shared_expert(int s, const WeightView& gate, const WeightView& up, const WeightView& down) override {
    layer_.set_shared_expert(s, gate, up, down);
  }
  void set_shared_expert(int s, const WeightView& up, const WeightView& down) override {
    layer_.set_shared_expert(s, up, down);
  }
  void set_expert(int e, const Fp8BlockView& gate, const Fp8BlockView& up, const Fp8BlockView& down) override {
    layer_.set_expert(e, gate, up, down);
  }
  void set_shared_expert(int s, const Fp8BlockView& gate, const Fp8BlockView& up, const Fp8BlockView& down) override {
    layer_.set_shared_expert(s, gate, up, down);
  }
  void set_shared_expert_gate(int s, const WeightView& weight) override { layer_.set_shared_expert_gate(s, weight); }
  void set_expert_bias(int e, const float* gate, const float* up, const float* down) override {
    layer_.set_expert_bias(e, gate, up, down);
  }
  void set_router_bias(const float* bias) override { layer_.set_router_bias(bias); }

  Workspace workspace(Index max_tokens, int threads) const override { return layer_.workspace(max_tokens, threads); }
  RoutingResult forward(const float* x, Index x_stride, float* y, Index y_stride, Index tokens, Workspace& ws,
                        RoutingStats* stats, const std::int64_t* token_ids) const override {
    return layer_.forward(x, x_stride, y, y_stride, tokens, ws, stats, token_ids);
  }
  ForwardCost cost(const RoutingResult& routed) const override { return layer_.cost(routed); }

private:
  Layer<Dynamic, Dynamic, Precision, Routing> layer_;
};

}  // namespace detail

// A Layer<Dynamic, Dynamic, Precision, Routing> as an AnyLayer. Not inline, so that an explicit
// instantiation declaration (MOE_COMPILED_LAYERS) keeps every caller from instantiating it.
template <class Precision, class Routing>
std::unique_ptr<AnyLayer> make_layer_as(const LayerConfig& config, const Routing& routing) {
  return std::make_unique<detail::AnyLayerOf<Precision, Routing>>(config, routing);
}

// A layer storing its weights in the precision named `precision` (one of precision_names()).
template <class Routing = SoftmaxTopK>
std::unique_ptr<AnyLayer> make_layer(const std::string& precision, const LayerConfig& config,
                                     const Routing& routing = Routing{}) {
  std::unique_ptr<AnyLayer> layer;
  const bool named =
      with_precision_named(precision, [&](auto p) { layer = make_layer_as<decltype(p)>(config, routing); });
  MOE_CHECK(named, "make_layer", "precision must be one of " + precision_names() + ", got '" + precision + "'");
  return layer;
}

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

// The routing policies whose layers moe::layers compiles for every precision: io::load_block's.
#define MOE_FOR_EACH_COMPILED_ROUTING(X, Precision) \
  X(Precision, ::moe::SoftmaxTopK)                  \
  X(Precision, ::moe::SigmoidGroupTopK)             \
  X(Precision, ::moe::SoftmaxGroupTopK)             \
  X(Precision, ::moe::CapacityTopK)

#define MOE_DETAIL_LAYER_INSTANCE(Precision, Routing)                                                         \
  template std::unique_ptr<::moe::AnyLayer> moe::make_layer_as<Precision, Routing>(const ::moe::LayerConfig&, \
                                                                                   const Routing&);
#define MOE_DETAIL_EXTERN_LAYER_INSTANCE(Precision, Routing) extern MOE_DETAIL_LAYER_INSTANCE(Precision, Routing)

// In one translation unit of a program: compiles make_layer_as<Precision, R> for the compiled policies R.
#define MOE_INSTANTIATE_LAYERS(Precision) MOE_FOR_EACH_COMPILED_ROUTING(MOE_DETAIL_LAYER_INSTANCE, Precision)

#ifdef MOE_COMPILED_LAYERS
#define MOE_DETAIL_EXTERN_LAYERS(Precision) \
  MOE_FOR_EACH_COMPILED_ROUTING(MOE_DETAIL_EXTERN_LAYER_INSTANCE, ::moe::Precision)
MOE_FOR_EACH_PRECISION(MOE_DETAIL_EXTERN_LAYERS)
#endif

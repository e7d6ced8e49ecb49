// tests/test_layer_precision.cpp: the layer computing with each weight precision against the reference on the
// same (dequantised) weights: sizes off every block, decode work items, threads, a token alone or in a batch,
// NaN inside an expert, weights a precision cannot hold.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "layer_check.hpp"
#include "precision_list.hpp"

// For q8a8, q4a8 and bf16a16 the reference also carries the activations' coding error as a bound
// (reference::int8_step_error, bf16_step_error): that bound is the precision's stated extra error.
TEST_CASE_TEMPLATE_DEFINE("the layer computes with stored weights like the reference does", P,
                          layer_against_reference) {
  using Layer = check::CompiledLayer<P>;
  SUBCASE("gated experts, sizes off every block, tokens over several tiles") {
    check::against_reference<Layer>(check::config(77, 45, 5, 2), moe::SoftmaxTopK(true), 23, 201);
  }
  SUBCASE("one token") {
    check::against_reference<Layer>(check::config(40, 30, 4, 2), moe::SoftmaxTopK(false), 1, 202);
  }
  SUBCASE("decode work items that span several short panels") {
    // 1024 hidden units in 32+ panels of a 40-deep projection: items of several consecutive panels.
    check::against_reference<Layer>(check::config(40, 1000, 4, 2), moe::SoftmaxTopK(true), 2, 204);
  }
  SUBCASE("decode work items over many busy experts: fewer, longer items") {
    // Every expert busy (k = E = 8): items are counted per thread, not per expert, so each expert's 32 or
    // more short panels (2000 in the scalar build) make a few long items, the last one often partial.
    check::against_reference<Layer>(check::config(40, 1000, 8, 8), moe::SoftmaxTopK(true), 1, 207, 1);
    check::against_reference<Layer>(check::config(40, 1000, 8, 8), moe::SoftmaxTopK(true), 1, 208, 2);
  }
  SUBCASE("decode combine items that span several output panels, the last one partial") {
    // 581 outputs: 10 panels of 64 (AVX-512) or more, each a short 40-deep down projection.
    check::against_reference<Layer>(check::config(581, 40, 3, 2), moe::SoftmaxTopK(true), 1, 205, 1);
    check::against_reference<Layer>(check::config(581, 40, 3, 2), moe::SoftmaxTopK(true), 3, 206, 2);
  }
  SUBCASE("decode work items of two long panels") {
    // 520- and 530-deep projections: an f32 panel of 64 columns (AVX-512) is 130 KiB or more, so a decode
    // item takes two (kPairedPanels), not the one that fits in 256 KiB, and its 1-row tiles pair them; the
    // 9 output panels make combine items of two the same way.
    check::against_reference<Layer>(check::config(520, 530, 3, 2), moe::SoftmaxTopK(true), 1, 212, 2);
  }
  SUBCASE("routing weights on the experts' inputs (Llama 4), a shared expert") {
    auto c = check::config(70, 45, 4, 1);
    c.scale_expert_input = true;
    c.num_shared_experts = 1;
    check::against_reference<Layer>(c, moe::SoftmaxTopK(false), 11, 209, 1);
    check::against_reference<Layer>(c, moe::SoftmaxTopK(false), 11, 209, 2);
  }
  SUBCASE("gpt-oss's experts: biases, a router bias, the clamped SwiGLU") {
    check::against_reference<Layer>(check::config(70, 45, 6, 2, moe::GptOssSwiGLU), moe::SoftmaxTopK(true), 11, 210, 2,
                                    true);
  }
  SUBCASE("an FFN wider than a depth block, a plain MLP, a shared expert") {
    auto c = check::config(33, 530, 3, 1, moe::ReluMLP);
    c.num_shared_experts = 1;
    c.shared_ffn_size = 70;
    check::against_reference<Layer>(c, moe::SoftmaxTopK(true), 7, 203);
  }
}
TEST_CASE_TEMPLATE_APPLY(layer_against_reference, check::AllPrecisions);

TEST_CASE_TEMPLATE("stored precisions give the same bits on one and two threads", P, moe::bf16, moe::q4, moe::q4a8,
                   moe::bf16a16) {
  const auto c = check::config(64, 96, 6, 2);
  const auto one = check::against_reference<moe::Layer<6, 2, P>>(c, moe::SoftmaxTopK(true), 13, 211, 1);
  const auto two = check::against_reference<moe::Layer<6, 2, P>>(c, moe::SoftmaxTopK(true), 13, 211, 2);
  CHECK(std::memcmp(one.y.data(), two.y.data(), one.y.size() * sizeof(float)) == 0);
}

// A token's output is a function of the token alone: the same bits whether it runs alone (decode: 1-row
// tiles, work items of several panels) or in a batch (tiles of up to kTileRows rows, one panel per item),
// at whatever position its experts' tiles give it.
TEST_CASE_TEMPLATE_DEFINE("a token gives the same bits alone and in a batch", P, token_alone_and_in_batch) {
  // 13 tokens on 3 experts: tiles of 6 rows and fewer, against passes of 1 and 2 tokens. The second
  // shape's small passes pair panels (kernels::multiply_panels, tiles of 1 and 2 rows) in the input
  // projections, an odd count of them (19 on AVX-512). Paired combine items are checked against the
  // reference ("decode combine items that span several output panels", one thread).
  for (const moe::Index H : {moe::Index(70), moe::Index(300)}) {
    const auto c = check::config(H, H == 70 ? 100 : 600, 3, 2);
    const reference::Weights w = reference::random_weights(c, 221, 4.0f);
    check::CompiledLayer<P> layer(c, moe::SoftmaxTopK(true));
    reference::load(layer, w);
    constexpr moe::Index kTokens = 13;
    const std::vector<float> x = synthetic::tokens(kTokens, H, 222);
    moe::Workspace ws = layer.workspace(kTokens);
    std::vector<float> batch(kTokens * H), small(2 * H);
    layer.forward(x.data(), H, batch.data(), H, kTokens, ws);
    for (const moe::Index n : {moe::Index(1), moe::Index(2)}) {
      for (moe::Index t = 0; t + n <= kTokens; t += n) {
        layer.forward(x.data() + t * H, H, small.data(), H, n, ws);
        INFO("hidden " << H << ", tokens " << t << " to " << t + n - 1);
        CHECK(std::memcmp(small.data(), batch.data() + t * H, std::size_t(n * H) * sizeof(float)) == 0);
      }
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(token_alone_and_in_batch, check::AllPrecisions);

// A NaN inside an expert is an error in every precision, as in f32: never dropped or turned into a finite
// code by the int8 or bf16 activation rounding.
TEST_CASE_TEMPLATE_DEFINE("a NaN hidden value is reported, not dropped", P, nan_hidden_reported) {
  constexpr moe::Index H = 40, F = 8;
  const auto c = check::config(H, F, 2, 1);
  check::CompiledLayer<P> layer(c, moe::SoftmaxTopK(true));
  // Huge finite inputs and weights every precision holds: gate unit 0 overflows to +Inf, and its up
  // weights are zero, so its hidden value is silu(Inf) * 0 = NaN; every other hidden value is 0.
  std::vector<float> router(2 * H, 0.0f), gate(F * H, 0.0f), up(F * H, 0.0f), down(H * F, 1.0f);
  std::fill_n(gate.begin(), H, 1000.0f);
  layer.set_router(moe::WeightView(router.data(), 2, H));
  for (int e = 0; e < 2; ++e)
    layer.set_expert(e, moe::WeightView(gate.data(), F, H), moe::WeightView(up.data(), F, H),
                     moe::WeightView(down.data(), H, F));
  const std::vector<float> x(3 * H, 1e36f);
  std::vector<float> y(x.size());
  moe::Workspace ws = layer.workspace(3);
  for (moe::Index tokens : {1, 3})
    CHECK_THROWS_WITH_AS(layer.forward(x.data(), H, y.data(), H, tokens, ws),
                         doctest::Contains("overflowed to Inf or NaN inside an expert"), moe::Error);
}
TEST_CASE_TEMPLATE_APPLY(nan_hidden_reported, check::AllPrecisions);

TEST_CASE("weights a precision cannot hold are refused with their place") {
  const auto c = check::config(8, 4, 2, 1);
  check::CompiledLayer<moe::f16> layer(c);
  std::vector<float> a(4 * 8, 0.5f), b(8 * 4, 0.5f);
  a[9] = 1e5f;
  CHECK_THROWS_WITH_AS(layer.set_expert(0, moe::WeightView(a.data(), 4, 8), moe::WeightView(b.data(), 4, 8),
                                        moe::WeightView(b.data(), 8, 4)),
                       doctest::Contains("expert 0 gate weight 100000 at (1, 1) is outside the range of f16"),
                       moe::Error);
  check::CompiledLayer<moe::q4> small(c);
  a[9] = 1e5f;  // representable as a q4 block scale: 1e5 / 7 < 65504
  CHECK_NOTHROW(small.set_expert(0, moe::WeightView(a.data(), 4, 8), moe::WeightView(b.data(), 4, 8),
                                 moe::WeightView(b.data(), 8, 4)));
  a[9] = 1e6f;
  CHECK_THROWS_WITH_AS(small.set_expert(0, moe::WeightView(a.data(), 4, 8), moe::WeightView(b.data(), 4, 8),
                                        moe::WeightView(b.data(), 8, 4)),
                       doctest::Contains("outside the range of q4"), moe::Error);
}

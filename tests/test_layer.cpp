// tests/test_layer.cpp: the fused sparse forward pass against the plainly written reference.
#include <doctest/doctest.h>

#include <cstring>
#include <limits>
#include <string>

#include "layer_check.hpp"

using moe::Dynamic;

// Hidden and FFN sizes below are deliberately not multiples of any SIMD width or panel width.
TEST_CASE("forward matches the reference: softmax top-k, renormalised and not") {
  const auto c = check::config(100, 70, 5, 2);
  for (moe::Index tokens : {1, 7, 40}) {
    CAPTURE(tokens);
    check::against_reference<moe::Layer<>>(c, moe::SoftmaxTopK(true), tokens, 11);
    check::against_reference<moe::Layer<>>(c, moe::SoftmaxTopK(false), tokens, 12);
  }
}

TEST_CASE("forward matches the reference: one expert, and k equal to the expert count") {
  check::against_reference<moe::Layer<1, 1>>(check::config(37, 19, 1, 1), moe::SoftmaxTopK(true), 5, 21);
  check::against_reference<moe::Layer<>>(check::config(37, 19, 1, 1), moe::SoftmaxTopK(false), 1, 22);
  check::against_reference<moe::Layer<4, 4>>(check::config(50, 33, 4, 4), moe::SoftmaxTopK(false), 9, 23);
  check::against_reference<moe::Layer<>>(check::config(50, 33, 4, 4), moe::SoftmaxTopK(true), 9, 24);
}

TEST_CASE("forward matches the reference: many experts, many tokens per expert") {
  // 60 tokens x top-3 of 8 experts: every expert gets several tiles of tokens.
  check::against_reference<moe::Layer<8, 3>>(check::config(129, 200, 8, 3), moe::SoftmaxTopK(true), 60, 31);
}

TEST_CASE("forward matches the reference for every expert kind") {
  const moe::FfnType kinds[] = {moe::SwiGLU,
                                moe::GeGLU,
                                moe::GeluMLP,
                                moe::ReluMLP,
                                moe::FfnType{moe::Activation::GELUTanh, true},
                                moe::FfnType{moe::Activation::SiLU, false}};
  unsigned seed = 40;
  for (const moe::FfnType& kind : kinds) {
    const std::string activation = moe::activation_name(kind.activation);
    CAPTURE(activation);
    CAPTURE(kind.gated);
    check::against_reference<moe::Layer<>>(check::config(72, 45, 6, 2, kind), moe::SoftmaxTopK(true), 11, ++seed);
  }
}

TEST_CASE("forward matches the reference with shared experts") {
  SUBCASE("one shared expert with a sigmoid gate and its own size (Qwen2-MoE)") {
    auto c = check::config(90, 40, 6, 2);
    c.num_shared_experts = 1;
    c.shared_ffn_size = 77;
    c.shared_expert_gate = true;
    check::against_reference<moe::Layer<>>(c, moe::SoftmaxTopK(false), 13, 51);
  }
  SUBCASE("two ungated shared experts (DeepSeek-style), plain MLP experts") {
    auto c = check::config(64, 24, 4, 1, moe::ReluMLP);
    c.num_shared_experts = 2;
    check::against_reference<moe::Layer<4, 1>>(c, moe::SoftmaxTopK(true), 8, 52);
  }
}

TEST_CASE("forward matches the reference when the routing weight scales the expert's input (Llama 4)") {
  // expert(w x) added unweighted, which differs from w expert(x) for every nonlinear activation.
  for (const moe::FfnType& kind : {moe::SwiGLU, moe::GeluMLP}) {
    CAPTURE(kind.gated);
    auto c = check::config(83, 51, 5, 2, kind);
    c.scale_expert_input = true;
    for (moe::Index tokens : {1, 9, 40}) {
      CAPTURE(tokens);
      for (int threads : {1, 2})
        check::against_reference<moe::Layer<>>(c, moe::SoftmaxTopK(false), tokens, 61, threads);
    }
  }
  SUBCASE("with a shared expert, which is not scaled; k = E; one expert") {
    auto c = check::config(40, 30, 4, 4);
    c.scale_expert_input = true;
    c.num_shared_experts = 1;
    check::against_reference<moe::Layer<4, 4>>(c, moe::SoftmaxTopK(false), 7, 62);
    check::against_reference<moe::Layer<>>(check::config(40, 30, 1, 1), moe::SoftmaxTopK(false), 3, 63);
  }
  SUBCASE("differs from weighting the output") {
    auto c = check::config(32, 24, 4, 1);
    const reference::Weights w = reference::random_weights(c, 64, 4.0f);
    const std::vector<float> x = synthetic::tokens(3, c.hidden_size, 65);
    std::vector<float> y_out(x.size()), y_in(x.size());
    for (bool scaled : {false, true}) {
      c.scale_expert_input = scaled;
      moe::Layer<> layer(c, moe::SoftmaxTopK(false));
      reference::load(layer, w);
      moe::Workspace ws = layer.workspace(3);
      layer.forward(x.data(), c.hidden_size, (scaled ? y_in : y_out).data(), c.hidden_size, 3, ws);
    }
    double differs = 0;
    for (std::size_t i = 0; i < x.size(); ++i) differs = std::max(differs, double(std::abs(y_in[i] - y_out[i])));
    CHECK(differs > 1e-3);
  }
}

TEST_CASE("forward matches the reference with biases and gpt-oss's clamped SwiGLU") {
  SUBCASE("biases on every projection and on the router, gated and plain experts") {
    for (const moe::FfnType& kind : {moe::SwiGLU, moe::GeluMLP}) {
      CAPTURE(kind.gated);
      for (moe::Index tokens : {1, 13})
        for (int threads : {1, 2})
          check::against_reference<moe::Layer<>>(check::config(83, 51, 5, 2, kind), moe::SoftmaxTopK(true), tokens, 71,
                                                 threads, true);
    }
  }
  SUBCASE("gpt-oss's experts: clamped SwiGLU, biases, top-k then softmax") {
    // Router weights scaled by 4 and biases of 0.5 put gate and up values on both sides of the limit.
    for (moe::Index tokens : {1, 9, 40}) {
      CAPTURE(tokens);
      check::against_reference<moe::Layer<>>(check::config(96, 70, 8, 4, moe::GptOssSwiGLU), moe::TopKSoftmax(), tokens,
                                             72, 2, true);
    }
    check::against_reference<moe::Layer<4, 4>>(check::config(33, 29, 4, 4, moe::GptOssSwiGLU), moe::TopKSoftmax(), 5,
                                               73, 1, true);
    check::against_reference<moe::Layer<>>(check::config(33, 29, 1, 1, moe::GptOssSwiGLU), moe::TopKSoftmax(), 3, 74, 1,
                                           true);
  }
  SUBCASE("the clamp is reached") {
    // A limit of 0.5 clamps most gate and up values: the result still matches, and differs from plain SwiGLU.
    moe::FfnType tight = moe::GptOssSwiGLU;
    tight.limit = 0.5f;
    check::against_reference<moe::Layer<>>(check::config(40, 30, 4, 2, tight), moe::TopKSoftmax(), 7, 75, 2, true);
  }
  SUBCASE("refused: a clamped SwiGLU on other experts, bad parameters, biases before weights or with NaN") {
    moe::FfnType plain = moe::GptOssSwiGLU;
    plain.gated = false;
    CHECK_THROWS_WITH_AS(moe::Layer<>(check::config(8, 8, 2, 1, plain)), doctest::Contains("gated SiLU experts only"),
                         moe::Error);
    moe::FfnType bad = moe::GptOssSwiGLU;
    bad.alpha = 0.0f;
    CHECK_THROWS_WITH_AS(moe::Layer<>(check::config(8, 8, 2, 1, bad)), doctest::Contains("finite alpha > 0"),
                         moe::Error);
    moe::Layer<> layer(check::config(8, 8, 2, 1));
    std::vector<float> b(8, 0.0f);
    CHECK_THROWS_WITH_AS(layer.set_expert_bias(0, b.data(), b.data(), b.data()),
                         doctest::Contains("expert 0 has no weights: set_expert first"), moe::Error);
    reference::load(layer, reference::random_weights(layer.config(), 76));
    CHECK_THROWS_WITH_AS(layer.set_expert_bias(0, nullptr, b.data(), b.data()),
                         doctest::Contains("pass gate, up and down biases"), moe::Error);
    b[3] = std::nanf("");
    CHECK_THROWS_WITH_AS(layer.set_expert_bias(1, b.data(), b.data(), b.data()),
                         doctest::Contains("expert 1 gate bias has NaN or Inf"), moe::Error);
    const float router_bias[2] = {0.0f, std::numeric_limits<float>::infinity()};  // one per expert
    CHECK_THROWS_WITH_AS(layer.set_router_bias(router_bias), doctest::Contains("router bias has NaN or Inf"),
                         moe::Error);
  }
}

TEST_CASE("dense MoE runs every expert weighted by the softmax") {
  check::against_reference<moe::Layer<Dynamic, Dynamic, moe::f32, moe::DenseSoftmax>>(check::config(70, 30, 5, 0),
                                                                                      moe::DenseSoftmax(), 9, 61);
  auto c = check::config(70, 30, 3, 3);
  c.num_shared_experts = 1;
  check::against_reference<moe::Layer<3, 3, moe::f32, moe::DenseSoftmax>>(c, moe::DenseSoftmax(), 4, 62);
}

TEST_CASE_TEMPLATE("fixed and Dynamic expert counts give the same bits", Fixed, moe::Layer<6, 2>,
                   moe::Layer<6, Dynamic>, moe::Layer<Dynamic, 2>) {
  const auto c = check::config(55, 42, 6, 2);
  const auto dynamic = check::against_reference<moe::Layer<>>(c, moe::SoftmaxTopK(true), 17, 71);
  const auto fixed = check::against_reference<Fixed>(c, moe::SoftmaxTopK(true), 17, 71);
  CHECK(std::memcmp(dynamic.y.data(), fixed.y.data(), dynamic.y.size() * sizeof(float)) == 0);
  CHECK(dynamic.ids == fixed.ids);
  CHECK(dynamic.weights == fixed.weights);
}

TEST_CASE("the Eigen interface: matrices, maps, row blocks, and in-place") {
  const auto c = check::config(40, 24, 4, 2);
  const reference::Weights w = reference::random_weights(c, 81, 4.0f);
  moe::Layer<4, 2> layer(c, moe::SoftmaxTopK(true));
  reference::load(layer, w);
  using RowMatrix = moe::Layer<4, 2>::RowMatrix;
  const std::vector<float> source = synthetic::tokens(6, 40, 82);
  const RowMatrix x = Eigen::Map<const RowMatrix>(source.data(), 6, 40);
  moe::Workspace ws = layer.workspace(6);

  RowMatrix y(6, 40);
  layer.forward(x, y, ws);
  const reference::Output ref = reference::forward(c, w, reference::Gating::SoftmaxTopKRenormalized, x.data(), 6);
  for (Eigen::Index i = 0; i < y.size(); ++i)
    CHECK(std::abs(y.data()[i] - ref.y[std::size_t(i)]) <= ref.error_bound[std::size_t(i)]);

  SUBCASE("a block of rows of a wider matrix, both ways") {
    RowMatrix wide_in = RowMatrix::Zero(9, 50), wide_out = RowMatrix::Constant(9, 50, 7.0f);
    wide_in.block(2, 3, 6, 40) = x;
    layer.forward(wide_in.block(2, 3, 6, 40), wide_out.block(1, 5, 6, 40), ws);
    CHECK(wide_out.block(1, 5, 6, 40) == y);
    CHECK(wide_out(0, 5) == 7.0f);  // outside the block: untouched
    CHECK(wide_out(1, 4) == 7.0f);
  }
  SUBCASE("a single token as a row vector") {
    const Eigen::RowVectorXf one = x.row(3);
    Eigen::RowVectorXf out(40);
    layer.forward(one, out, ws);
    CHECK(out == y.row(3));
  }
  SUBCASE("in place: y may be x") {
    RowMatrix inout = x;
    layer.forward(inout, inout, ws);
    CHECK(inout == y);
  }
  SUBCASE("zero tokens is a no-op") {
    RowMatrix none(0, 40);
    const moe::RoutingResult routed = layer.forward(none, none, ws);
    CHECK(routed.tokens() == 0);
  }
}

TEST_CASE("a workspace is reusable across passes and token counts") {
  const auto c = check::config(33, 20, 5, 2);
  const reference::Weights w = reference::random_weights(c, 91, 4.0f);
  moe::Layer<> layer(c, moe::SoftmaxTopK(true));
  reference::load(layer, w);
  moe::Workspace ws = layer.workspace(12);
  const std::vector<float> x = synthetic::tokens(12, 33, 92);
  std::vector<float> all(12 * 33), part(12 * 33);
  layer.forward(x.data(), 33, all.data(), 33, 12, ws);
  layer.forward(x.data() + 5 * 33, 33, part.data(), 33, 1, ws);  // token 5 alone
  layer.forward(x.data(), 33, part.data() + 33, 33, 4, ws);      // then a smaller batch
  CHECK(std::memcmp(part.data(), all.data() + 5 * 33, 33 * sizeof(float)) == 0);
  CHECK(std::memcmp(part.data() + 33, all.data(), 4 * 33 * sizeof(float)) == 0);
}

TEST_CASE("forward matches the reference at the edges of the tiling") {
  SUBCASE("an FFN wider than one depth block of the down projection") {
    check::against_reference<moe::Layer<>>(check::config(24, 600, 3, 2), moe::SoftmaxTopK(true), 10, 111);
  }
  SUBCASE("a hidden size below one SIMD vector") {
    check::against_reference<moe::Layer<>>(check::config(5, 3, 3, 1), moe::SoftmaxTopK(false), 4, 112);
  }
  SUBCASE("more router rows than one panel, with the shared gate in the last one") {
    auto c = check::config(20, 8, 70, 3);
    c.num_shared_experts = 1;
    c.shared_expert_gate = true;
    check::against_reference<moe::Layer<70, 3>>(c, moe::SoftmaxTopK(true), 9, 113);
  }
}

TEST_CASE("weights given as strided Eigen blocks pack to the same layer as contiguous ones") {
  auto c = check::config(30, 21, 3, 2);
  c.num_shared_experts = 1;
  c.shared_expert_gate = true;
  const reference::Weights w = reference::random_weights(c, 121, 4.0f);
  moe::Layer<> contiguous(c, moe::SoftmaxTopK(true)), strided(c, moe::SoftmaxTopK(true));
  reference::load(contiguous, w);
  using RowMatrix = moe::Layer<>::RowMatrix;
  // Each matrix sits inside a larger one, so its rows are not contiguous.
  auto embed = [](const std::vector<float>& m, Eigen::Index rows, Eigen::Index cols) {
    RowMatrix big = RowMatrix::Constant(rows + 2, cols + 7, 1e30f);
    big.block(1, 3, rows, cols) = Eigen::Map<const RowMatrix>(m.data(), rows, cols);
    return big;
  };
  const RowMatrix router = embed(w.router, 3, 30);
  strided.set_router(router.block(1, 3, 3, 30));
  for (int e = 0; e < 3; ++e) {
    const RowMatrix g = embed(w.gate[e], 21, 30), u = embed(w.up[e], 21, 30), d = embed(w.down[e], 30, 21);
    strided.set_expert(e, g.block(1, 3, 21, 30), u.block(1, 3, 21, 30), d.block(1, 3, 30, 21));
  }
  const RowMatrix g = embed(w.shared_gate_proj[0], 21, 30), u = embed(w.shared_up[0], 21, 30),
                  d = embed(w.shared_down[0], 30, 21), gate = embed(w.shared_gate[0], 1, 30);
  strided.set_shared_expert(0, g.block(1, 3, 21, 30), u.block(1, 3, 21, 30), d.block(1, 3, 30, 21));
  strided.set_shared_expert_gate(0, gate.block(1, 3, 1, 30));

  const std::vector<float> x = synthetic::tokens(7, 30, 122);
  std::vector<float> y1(x.size()), y2(x.size());
  moe::Workspace ws = contiguous.workspace(7);
  contiguous.forward(x.data(), 30, y1.data(), 30, 7, ws);
  strided.forward(x.data(), 30, y2.data(), 30, 7, ws);
  CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
}

// The README's quickstart: a Mixtral-style layer (8 experts, top-2, SwiGLU), weights in, tokens through.
#include <moe/moe.hpp>

#include <iostream>

int main() {
  moe::LayerConfig config;
  config.hidden_size = 256;  // token width
  config.ffn_size = 512;     // each expert's hidden width
  config.ffn = moe::SwiGLU;

  // 8 experts and top-2 fixed at compile time; Mixtral renormalises the top-2 weights.
  moe::Layer<8, 2> layer(config, moe::SoftmaxTopK(/*renormalize=*/true));

  // Weights in the PyTorch layout W[out][in]: any row-major Eigen matrix, Map or raw pointer.
  using Matrix = moe::Layer<8, 2>::RowMatrix;
  layer.set_router(Matrix::Random(8, 256) * 0.1f);
  for (int e = 0; e < 8; ++e)
    layer.set_expert(e, Matrix::Random(512, 256) * 0.06f,  // gate_proj (w1)
                     Matrix::Random(512, 256) * 0.06f,     // up_proj   (w3)
                     Matrix::Random(256, 512) * 0.04f);    // down_proj (w2)

  // Scratch for up to 32 tokens: forward passes after this allocate nothing.
  moe::Workspace workspace = layer.workspace(32);

  Matrix x = Matrix::Random(32, 256), y(32, 256);  // tokens x hidden
  const moe::RoutingResult routed = layer.forward(x, y, workspace);

  std::cout << "token 0 went to experts " << routed.expert_ids().row(0) << " with weights " << routed.weights().row(0)
            << "\ntokens per expert: " << routed.tokens_per_expert() << "\n|y| = " << y.norm() << "\n";
  return y.allFinite() ? 0 : 1;
}

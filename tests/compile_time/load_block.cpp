// tests/compile_time/load_block.cpp: the smallest program that runs the MoE block of a checkpoint through
// io/, as a user writes it. scripts/compile-times.sh times its compilation; it is never run.
#include <cstdio>
#include <vector>

#include <moe/io/hf_model.hpp>

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const auto block = moe::io::load_block(argv[1], argv[2], argc > 3 ? argv[3] : "auto");
  const moe::Index hidden = block->spec().config.hidden_size;
  std::vector<float> x(std::size_t(hidden), 0.5f), y(x.size());
  moe::Workspace ws = block->workspace(1, 0);
  block->forward(x.data(), y.data(), 1, ws);
  std::printf("%s: y[0] = %g\n", block->precision(), double(y[0]));
  return 0;
}

// tests/test_threads_allocations.cpp: bitwise equality across thread counts, and no heap allocation in
// a steady-state forward pass.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "layer_check.hpp"

// A counting global operator new: every allocation in this test binary passes through here. GCC sees
// the replaced operator delete's free() inlined next to operator new and warns of a mismatch that is
// none: this pair is the allocator.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
std::atomic<long> allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void* operator new(std::size_t size, std::align_val_t align) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  const std::size_t a = static_cast<std::size_t>(align);
  if (void* p = std::aligned_alloc(a, (size + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t align) { return operator new(size, align); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

TEST_CASE("one and two threads give bitwise identical outputs and routing") {
  auto c = check::config(150, 90, 8, 2);
  c.num_shared_experts = 1;
  c.shared_expert_gate = true;
  for (moe::Index tokens : {1, 3, 50}) {
    CAPTURE(tokens);
    const auto one = check::against_reference<moe::Layer<8, 2>>(c, moe::SoftmaxTopK(true), tokens, 101, 1);
    const auto two = check::against_reference<moe::Layer<8, 2>>(c, moe::SoftmaxTopK(true), tokens, 101, 2);
    const auto three = check::against_reference<moe::Layer<8, 2>>(c, moe::SoftmaxTopK(true), tokens, 101, 3);
    CHECK(std::memcmp(one.y.data(), two.y.data(), one.y.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(one.y.data(), three.y.data(), one.y.size() * sizeof(float)) == 0);
    CHECK(one.ids == two.ids);
    CHECK(one.weights == two.weights);
  }
}

// Callers that run passes from their own threads, each with its own workspace. A pass of one thread runs its
// work-sharing loops without a parallel region of its own (detail::run_on_team); inside a caller's OpenMP
// team those loops would otherwise be shared out among the caller's threads, each with other data.
TEST_CASE("passes called from a caller's parallel region each compute their own tokens") {
  auto c = check::config(70, 50, 8, 2);
  c.num_shared_experts = 1;
  moe::Layer<> layer(c, moe::SoftmaxTopK(true));
  synthetic::fill(layer, 31);
  constexpr int kCallers = 4;
  for (moe::Index tokens : {1, 9}) {
    CAPTURE(tokens);
    const std::vector<float> x = synthetic::tokens(kCallers * tokens, 70, 32);
    std::vector<float> expected(x.size()), y(x.size(), 0.0f);
    moe::Workspace serial = layer.workspace(tokens, 1);
    for (int caller = 0; caller < kCallers; ++caller)
      layer.forward(x.data() + caller * tokens * 70, 70, expected.data() + caller * tokens * 70, 70, tokens, serial);
    for (int threads : {1, 2}) {
      CAPTURE(threads);
      std::fill(y.begin(), y.end(), 0.0f);
      MOE_OMP(omp parallel for num_threads(2) schedule(static, 1))
      for (int caller = 0; caller < kCallers; ++caller) {
        moe::Workspace ws = layer.workspace(tokens, threads);
        layer.forward(x.data() + caller * tokens * 70, 70, y.data() + caller * tokens * 70, 70, tokens, ws);
      }
      CHECK(std::memcmp(y.data(), expected.data(), y.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("a steady-state forward pass allocates nothing") {
  auto c = check::config(64, 40, 6, 2);
  c.num_shared_experts = 1;
  moe::Layer<> layer(c, moe::SoftmaxTopK(true));
  synthetic::fill(layer, 7);
  const std::vector<float> x = synthetic::tokens(32, 64, 8);
  std::vector<float> y(x.size());
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    moe::Workspace ws = layer.workspace(32, threads);
    layer.forward(x.data(), 64, y.data(), 64, 32, ws);  // warm-up: lets OpenMP start its thread pool
    const long before = allocations.load();
    for (moe::Index tokens : {1, 7, 32, 2}) layer.forward(x.data(), 64, y.data(), 64, tokens, ws);
    using RowMatrix = moe::Layer<>::RowMatrix;
    Eigen::Map<const RowMatrix> xm(x.data(), 32, 64);
    Eigen::Map<RowMatrix> ym(y.data(), 32, 64);
    layer.forward(xm, ym, ws);
    layer.forward(xm.topRows(5), ym.topRows(5), ws);
    CHECK(allocations.load() - before == 0);
  }
  // The counter does see the library's allocations: making a workspace allocates.
  const long before = allocations.load();
  moe::Workspace another = layer.workspace(8);
  CHECK(allocations.load() > before);
}

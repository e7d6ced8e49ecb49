// tests/test_kernels.cpp: the small kernels (top-k, softmax, activations, reductions, the panel
// micro-kernel) against scalar double-precision loops.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <random>
#include <utility>
#include <vector>

#include <moe/moe.hpp>

#include "reference.hpp"

namespace {

std::vector<float> random_vector(std::size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Indices of the k largest, largest first, ties to the lower index.
std::vector<int> expected_top_k(const std::vector<float>& s, int k) {
  std::vector<int> order(s.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return s[a] > s[b]; });
  order.resize(std::size_t(k));
  return order;
}

template <int K>
void check_top_k(const std::vector<float>& scores, int k) {
  std::vector<int> ids(std::size_t(k), -1);
  std::vector<float> values(static_cast<std::size_t>(k));
  moe::kernels::top_k<K>(scores.data(), int(scores.size()), k, ids.data(), values.data());
  const std::vector<int> expected = expected_top_k(scores, k);
  CHECK(ids == expected);
  for (int j = 0; j < k; ++j) CHECK(values[std::size_t(j)] == scores[std::size_t(expected[std::size_t(j)])]);
}

}  // namespace

TEST_CASE("top_k picks the k largest, largest first, ties to the lower index") {
  for (int n : {1, 2, 7, 8, 64, 257}) {
    for (int k : {1, 2, 3, 8, n}) {
      if (k > n) continue;
      CAPTURE(n);
      CAPTURE(k);
      check_top_k<moe::Dynamic>(random_vector(std::size_t(n), unsigned(n * 31 + k)), k);
      // Heavy ties: scores from a 3-value set.
      std::vector<float> tied(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) tied[std::size_t(i)] = float((i * 7) % 3);
      check_top_k<moe::Dynamic>(tied, k);
    }
  }
  check_top_k<2>(random_vector(8, 1), 2);
  check_top_k<8>(random_vector(64, 2), 8);
  check_top_k<1>(std::vector<float>{-1.0f, -1.0f, -3.0f}, 1);
  check_top_k<3>(std::vector<float>{5.0f, 5.0f, 5.0f}, 3);
}

TEST_CASE("softmax, row_max and sum_exp match double precision") {
  for (int n : {1, 3, 15, 16, 17, 64, 100}) {
    CAPTURE(n);
    const std::vector<float> x = random_vector(std::size_t(n), unsigned(n), 5.0f);
    double top = -1e300;
    for (float v : x) top = std::max(top, double(v));
    CHECK(moe::kernels::row_max(x.data(), n) == float(top));
    double sum = 0;
    for (float v : x) sum += std::exp(double(v) - top);
    CHECK(moe::kernels::sum_exp(x.data(), n, float(top)) == doctest::Approx(sum).epsilon(n * 4e-7));
    std::vector<float> p(static_cast<std::size_t>(n));
    moe::kernels::softmax(x.data(), p.data(), n);
    for (int i = 0; i < n; ++i)
      CHECK(p[std::size_t(i)] == doctest::Approx(std::exp(double(x[std::size_t(i)]) - top) / sum).epsilon(n * 4e-7));
  }
}

TEST_CASE("the vector exp is within 2 ulps of double precision, and right at the edges") {
  // Every 1/64 over the range where e^x is a normal float (xsimd's exp, the AVX2 and SSE path, overflows
  // from about 88.4 on, where e^x is within 1.4x of FLT_MAX), plus the subnormal and overflow edges.
  std::vector<float> normal;
  for (float x = -87.0f; x <= 88.0f; x += 1.0f / 64) normal.push_back(x);
  for (float x : normal) {
    CAPTURE(x);
    const double expected = std::exp(double(x));
    const float got = moe::simd::reduce_max(moe::simd::exp(moe::simd::broadcast(x)));
    REQUIRE(std::abs(got - expected) <= 2 * std::numeric_limits<float>::epsilon() * expected);
  }
  const float inf = std::numeric_limits<float>::infinity();
  auto exp_of = [](float x) { return moe::simd::reduce_max(moe::simd::exp(moe::simd::broadcast(x))); };
  CHECK(exp_of(0.0f) == 1.0f);
  CHECK(exp_of(88.8f) == inf);
  CHECK(exp_of(1e30f) == inf);
  CHECK(exp_of(inf) == inf);
  CHECK(exp_of(-104.0f) == 0.0f);
  CHECK(exp_of(-inf) == 0.0f);
  CHECK(std::isnan(exp_of(std::nanf(""))));
  // A subnormal result: within one subnormal step, or 0 (xsimd's exp flushes them).
  const float tiny = exp_of(-100.0f);
  CHECK((tiny == 0.0f || std::abs(tiny - std::exp(-100.0)) <= std::numeric_limits<float>::denorm_min()));
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F
  CHECK(tiny > 0.0f);  // simd.hpp's own exp keeps them
#endif
}

TEST_CASE("activations match their definitions, including far tails") {
  const float inputs[] = {-100.0f, -20.0f, -5.5f, -1.0f, -0.25f, 0.0f, 1e-3f, 0.5f, 2.0f, 9.0f, 50.0f, 100.0f};
  const moe::Activation all[] = {moe::Activation::SiLU, moe::Activation::GELU, moe::Activation::GELUTanh,
                                 moe::Activation::ReLU};
  for (moe::Activation a : all) {
    const std::string activation = moe::activation_name(a);
    CAPTURE(activation);
    for (float x : inputs) {
      CAPTURE(x);
      float lanes[moe::simd::kWidth];
      moe::kernels::with_activation(a, [&](auto act) {
        moe::simd::store(lanes, moe::kernels::activate<decltype(act)::value>(moe::simd::broadcast(x)));
      });
      const double expected = reference::activate(a, x);
      // A few float ulps relative, or an absolute floor where the function is ~0 (tails of SiLU/GELU).
      CHECK(std::abs(lanes[0] - expected) <= 8 * std::numeric_limits<float>::epsilon() * std::abs(expected) + 1e-30);
      CHECK(std::isfinite(lanes[0]));
    }
  }
}

TEST_CASE("all_finite finds a NaN or Inf at any position") {
  for (int n : {1, 5, 16, 17, 40}) {
    std::vector<float> x(std::size_t(n), 1.5f);
    CHECK(moe::kernels::all_finite(x.data(), n));
    for (int i = 0; i < n; ++i) {
      x[std::size_t(i)] = std::numeric_limits<float>::quiet_NaN();
      CHECK_FALSE(moe::kernels::all_finite(x.data(), n));
      x[std::size_t(i)] = -std::numeric_limits<float>::infinity();
      CHECK_FALSE(moe::kernels::all_finite(x.data(), n));
      x[std::size_t(i)] = std::numeric_limits<float>::max();
      CHECK(moe::kernels::all_finite(x.data(), n));
      x[std::size_t(i)] = 1.5f;
    }
  }
}

using HeapBuffer = moe::detail::AlignedBuffer<float>;
using PooledBuffer = moe::detail::AlignedBuffer<float, moe::detail::SmallArrays::kHugePagePool>;

TEST_CASE_TEMPLATE("AlignedBuffer: zeroed, aligned and copied at every size, huge-page arrays on a huge-page boundary",
                   Buffer, HeapBuffer, PooledBuffer) {
  constexpr moe::Index kHugeFloats = moe::Index(Buffer::kHugePage / sizeof(float));
  // Sizes below, at and past one huge page, one with a tail of a part page, and back down: each resize
  // releases what the previous size took, by operator delete or by unmapping.
  const moe::Index sizes[] = {1, 1000, kHugeFloats - 1, kHugeFloats, 3 * kHugeFloats + 1001, 17, 2 * kHugeFloats + 5};
  Buffer buffer;
  CHECK(buffer.size() == 0);
  for (moe::Index size : sizes) {
    CAPTURE(size);
    buffer.resize(size);
    REQUIRE(buffer.size() == size);
    const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
    CHECK(address % Buffer::kAlignment == 0);
#if defined(__linux__)
    if (size * moe::Index(sizeof(float)) >= moe::Index(Buffer::kHugePage)) CHECK(address % Buffer::kHugePage == 0);
#endif
    bool zero = true;
    for (moe::Index i = 0; i < size; ++i) zero = zero && buffer[i] == 0.0f;
    CHECK(zero);
    for (moe::Index i = 0; i < size; ++i) buffer[i] = float(i % 4093);  // every page, the last element too
    const Buffer copy(buffer);
    bool same = copy.size() == size;
    for (moe::Index i = 0; same && i < size; ++i) same = copy[i] == float(i % 4093);
    CHECK(same);
    Buffer moved(std::move(buffer));
    CHECK(moved.size() == size);
    CHECK(buffer.size() == 0);
    CHECK(moved[size - 1] == float((size - 1) % 4093));
    buffer = moved;  // copy-assigned back, for the next size
    CHECK(buffer[size - 1] == moved[size - 1]);
  }
  // Resizing to the same size zeroes the contents again.
  buffer.resize(buffer.size());
  CHECK(buffer[buffer.size() - 1] == 0.0f);
}

#if defined(MOE_DETAIL_HUGE_PAGE_POOL)
TEST_CASE(
    "HugePagePool: small arrays share chunks in order, without overlap; a chunk is unmapped with its last array") {
  using Pool = moe::detail::HugePagePool;
  Pool& pool = Pool::instance();
  const std::size_t before = pool.chunks();
  auto chunk_of = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) / Pool::kChunk; };
  // 40 arrays of about 1.14 MiB (not a multiple of a page or of the alignment): 45 MiB, more than one chunk.
  constexpr int kArrays = 40;
  auto bytes_of = [](int i) { return std::size_t(1200001 - 4 * i); };
  std::vector<unsigned char*> arrays;
  for (int i = 0; i < kArrays; ++i) {
    arrays.push_back(static_cast<unsigned char*>(pool.allocate(bytes_of(i), 64)));
    CHECK(reinterpret_cast<std::uintptr_t>(arrays.back()) % 64 == 0);
    std::memset(arrays.back(), i + 1, bytes_of(i));  // every byte is writable
  }
  // Each array starts past the end of the one before, or in a later chunk. 27 fit a chunk, so at most 3 of
  // the 39 neighbours are apart (2 new chunks, and the end of one that other arrays had started).
  int neighbours_in_one_chunk = 0;
  for (int i = 1; i < kArrays; ++i) {
    if (chunk_of(arrays[std::size_t(i)]) != chunk_of(arrays[std::size_t(i - 1)])) continue;
    ++neighbours_in_one_chunk;
    CHECK(arrays[std::size_t(i)] >= arrays[std::size_t(i - 1)] + bytes_of(i - 1));
  }
  CHECK(neighbours_in_one_chunk >= 36);
  CHECK(pool.chunks() >= before + 2);
  bool intact = true;  // nothing was written over
  for (int i = 0; i < kArrays; ++i)
    for (std::size_t j = 0; j < bytes_of(i); j += 4093)
      intact = intact && arrays[std::size_t(i)][j] == i + 1 && arrays[std::size_t(i)][bytes_of(i) - 1] == i + 1;
  CHECK(intact);
  for (int i = 0; i < kArrays; ++i) {
    CHECK(pool.owns(arrays[std::size_t(i)]));
    pool.deallocate(arrays[std::size_t(i)]);
  }
  // Every chunk these arrays used went back to the system with its last array.
  CHECK(pool.chunks() == before);

  // Weights below a huge page come from the pool, scratch arrays from the heap; at and past a huge page
  // each is its own mapping, whichever the kind.
  const PooledBuffer small_weights(1000), large_weights(moe::Index(PooledBuffer::kHugePage / sizeof(float)));
  const HeapBuffer scratch(1000);
  CHECK(pool.owns(small_weights.data()));
  CHECK_FALSE(pool.owns(large_weights.data()));
  CHECK_FALSE(pool.owns(scratch.data()));
}
#endif

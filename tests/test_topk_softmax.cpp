// tests/test_topk_softmax.cpp: the routing kernels (kernels/topk.hpp, kernels/softmax.hpp) against scalar loops
// in double precision.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <moe/moe.hpp>

#include "kernel_check.hpp"
#include "reference.hpp"

using kernel_check::random_vector;

namespace {

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
  moe::detail::kernels::top_k<K>(scores.data(), int(scores.size()), k, ids.data(), values.data());
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
    CHECK(moe::detail::kernels::row_max(x.data(), n) == float(top));
    double sum = 0;
    for (float v : x) sum += std::exp(double(v) - top);
    CHECK(moe::detail::kernels::sum_exp(x.data(), n, float(top)) == doctest::Approx(sum).epsilon(n * 4e-7));
    std::vector<float> p(static_cast<std::size_t>(n));
    moe::detail::kernels::softmax(x.data(), p.data(), n);
    for (int i = 0; i < n; ++i)
      CHECK(p[std::size_t(i)] == doctest::Approx(std::exp(double(x[std::size_t(i)]) - top) / sum).epsilon(n * 4e-7));
  }
}

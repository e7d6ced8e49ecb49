// tests/test_routing_stats.cpp: routing statistics against figures worked out by hand and against plainly
// written loops, merging, and the JSON, CSV and SVG writers.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <locale>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <moe/routing_plot.hpp>
#include <moe/routing_stats.hpp>

using moe::kDroppedExpert;
using moe::kNoExpert;

namespace {

// One batch as RoutingStats::add takes it: tokens x experts logits, tokens x slots ids and weights.
struct Batch {
  int experts = 0;
  int slots = 0;
  std::vector<float> logits;
  std::vector<int> ids;
  std::vector<float> weights;
  moe::Index tokens() const { return moe::Index(ids.size()) / slots; }
};

void add(moe::RoutingStats& stats, const Batch& b) {
  stats.add(b.logits.data(), b.experts, b.tokens(), b.ids.data(), b.weights.data(), b.slots);
}

Batch concat(const Batch& a, const Batch& b) {
  Batch c = a;
  c.logits.insert(c.logits.end(), b.logits.begin(), b.logits.end());
  c.ids.insert(c.ids.end(), b.ids.begin(), b.ids.end());
  c.weights.insert(c.weights.end(), b.weights.begin(), b.weights.end());
  return c;
}

// Random logits, each token's top-`slots` experts with renormalised weights, and some slots turned into
// kDroppedExpert or kNoExpert.
Batch random_batch(unsigned seed, moe::Index tokens, int experts, int slots, double drop_rate) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  Batch b{experts, slots, {}, {}, {}};
  for (moe::Index t = 0; t < tokens; ++t) {
    std::vector<float> row(static_cast<std::size_t>(experts));
    for (float& x : row) x = normal(rng);
    b.logits.insert(b.logits.end(), row.begin(), row.end());
    std::vector<bool> taken(row.size(), false);
    for (int j = 0; j < slots; ++j) {
      int best = -1;
      for (int e = 0; e < experts; ++e)
        if (!taken[std::size_t(e)] && (best < 0 || row[std::size_t(e)] > row[std::size_t(best)])) best = e;
      taken[std::size_t(best)] = true;
      const double u = uniform(rng);
      b.ids.push_back(u < drop_rate ? kDroppedExpert : u < 2 * drop_rate ? kNoExpert : best);
      b.weights.push_back(1.0f / float(slots));
    }
  }
  return b;
}

// The figures, by the definitions and nothing else: softmax without a shift (the logits are small).
struct Plain {
  std::vector<std::int64_t> counts;
  double aux = 0, z = 0, entropy = 0;
};

Plain plain(const Batch& b) {
  const moe::Index T = b.tokens();
  const int E = b.experts;
  Plain r;
  r.counts.assign(std::size_t(E), 0);
  std::vector<double> mean_prob(std::size_t(E), 0.0);
  for (moe::Index t = 0; t < T; ++t) {
    double sum = 0;
    for (int i = 0; i < E; ++i) sum += std::exp(double(b.logits[std::size_t(t * E + i)]));
    r.z += std::log(sum) * std::log(sum) / double(T);
    for (int i = 0; i < E; ++i) {
      const double p = std::exp(double(b.logits[std::size_t(t * E + i)])) / sum;
      mean_prob[std::size_t(i)] += p / double(T);
      r.entropy -= p * std::log(p) / double(T);
    }
    for (int j = 0; j < b.slots; ++j) {
      const int id = b.ids[std::size_t(t * b.slots + j)];
      if (id >= 0) r.counts[std::size_t(id)] += 1;
    }
  }
  for (int i = 0; i < E; ++i) r.aux += E * (double(r.counts[std::size_t(i)]) / double(T)) * mean_prob[std::size_t(i)];
  return r;
}

// Same statistics: counts exactly, double figures to a few ulps of accumulated rounding.
void check_same(const moe::RoutingStats& a, const moe::RoutingStats& b) {
  REQUIRE(a.experts() == b.experts());
  CHECK(a.tokens() == b.tokens());
  CHECK(a.assignments() == b.assignments());
  CHECK(a.dropped() == b.dropped());
  CHECK(a.unrouted_tokens() == b.unrouted_tokens());
  CHECK(a.tokens_per_expert() == b.tokens_per_expert());
  CHECK(a.dead_experts() == b.dead_experts());
  for (int i = 0; i < a.experts(); ++i)
    for (int j = 0; j < a.experts(); ++j) CHECK(a.coactivation(i, j) == b.coactivation(i, j));
  const double eps = 1e-12;  // sums of a few hundred terms of order 1, added in another order
  CHECK(a.aux_loss() == doctest::Approx(b.aux_loss()).epsilon(eps));
  CHECK(a.z_loss() == doctest::Approx(b.z_loss()).epsilon(eps));
  CHECK(a.mean_entropy() == doctest::Approx(b.mean_entropy()).epsilon(eps));
  CHECK(a.load_imbalance() == b.load_imbalance());
  CHECK(a.load_cv() == b.load_cv());
  for (int i = 0; i < a.experts(); ++i) {
    CHECK(a.mean_router_prob()[std::size_t(i)] == doctest::Approx(b.mean_router_prob()[std::size_t(i)]).epsilon(eps));
    CHECK(a.mean_weight()[std::size_t(i)] == doctest::Approx(b.mean_weight()[std::size_t(i)]).epsilon(eps));
  }
}

std::size_t occurrences(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// A light XML check: every element opened is closed in order, attribute values are quoted, and no
// stray '<' or '&' sits in text. Returns an empty string when well formed, else what went wrong.
std::string xml_problem(const std::string& xml) {
  std::vector<std::string> open;
  std::size_t i = 0;
  while (i < xml.size()) {
    if (xml[i] == '&') {
      const std::size_t end = xml.find(';', i);
      if (end == std::string::npos || end - i > 6) return "bare & at " + std::to_string(i);
      i = end + 1;
      continue;
    }
    if (xml[i] != '<') {
      if (xml[i] == '>') return "stray > at " + std::to_string(i);
      ++i;
      continue;
    }
    // Scan to the tag's '>' skipping quoted attribute values.
    std::size_t j = i + 1;
    char quote = 0;
    for (; j < xml.size(); ++j) {
      if (quote) {
        if (xml[j] == quote)
          quote = 0;
        else if (xml[j] == '<')
          return "< inside an attribute at " + std::to_string(j);
      } else if (xml[j] == '"' || xml[j] == '\'') {
        quote = xml[j];
      } else if (xml[j] == '>') {
        break;
      } else if (xml[j] == '<') {
        return "unclosed tag at " + std::to_string(i);
      }
    }
    if (j == xml.size()) return "unterminated tag at " + std::to_string(i);
    const std::string tag = xml.substr(i + 1, j - i - 1);
    i = j + 1;
    if (tag.front() == '?') {
      if (tag.back() != '?') return "bad processing instruction";
      continue;
    }
    const std::size_t name_end = tag.find_first_of(" \n\t/", tag.front() == '/' ? 1 : 0);
    if (tag.front() == '/') {
      const std::string name = tag.substr(1, name_end == std::string::npos ? std::string::npos : name_end - 1);
      if (open.empty() || open.back() != name)
        return "</" + name + "> closes " + (open.empty() ? "nothing" : open.back());
      open.pop_back();
    } else if (tag.back() != '/') {
      open.push_back(tag.substr(0, name_end));
    }
  }
  return open.empty() ? "" : "<" + open.back() + "> is never closed";
}

// The number after "key": in a JSON text.
double json_value(const std::string& json, const std::string& key) {
  const std::size_t at = json.find("\"" + key + "\": ");
  REQUIRE(at != std::string::npos);
  return std::strtod(json.c_str() + at + key.size() + 4, nullptr);
}

double svg_size(const std::string& svg, const char* attribute) {
  const std::size_t at = svg.find(std::string(attribute) + "=\"", svg.find("<svg"));
  REQUIRE(at != std::string::npos);
  return std::strtod(svg.c_str() + at + std::string(attribute).size() + 2, nullptr);
}

}  // namespace

TEST_CASE("routing statistics of a small case, worked out by hand") {
  // 4 experts, top-2. Token A has equal logits: p = 1/4 each, logsumexp = ln 4, entropy = ln 4; it runs experts
  // 0 and 1. Token B has logits (ln 3, 0, 0, 0): the exponentials are (3, 1, 1, 1), p = (1/2, 1/6, 1/6, 1/6),
  // logsumexp = ln 6, entropy = (1/2) ln 2 + 3 (1/6) ln 6 = (1/2) ln 12; it runs expert 0, its second choice is
  // dropped.
  //   counts c = (2, 1, 0, 0), T = 2, f = c / T = (1, 1/2, 0, 0)
  //   P = ((1/4 + 1/2) / 2, (1/4 + 1/6) / 2, ...) = (3/8, 5/24, 5/24, 5/24)
  //   aux loss = 4 (1 * 3/8 + 1/2 * 5/24) = 4 * 23/48 = 23/12
  //   z-loss = ((ln 4)^2 + (ln 6)^2) / 2 = 2.566107025620603
  //   mean entropy = (ln 4 + (1/2) ln 12) / 2 = 1.3143738430069454
  //   mean load 3/4: imbalance = 2 / (3/4) = 8/3; deviations (5/4, 1/4, -3/4, -3/4), variance 2.75 / 4,
  //   CV = sqrt(0.6875) / 0.75 = 1.1055415967851332
  const float ln3 = std::log(3.0f);
  const Batch b{4, 2, {0, 0, 0, 0, ln3, 0, 0, 0}, {0, 1, 0, kDroppedExpert}, {0.5f, 0.5f, 1.0f, 0.0f}};
  moe::RoutingStats stats(4);
  add(stats, b);
  CHECK(stats.experts() == 4);
  CHECK(stats.tokens() == 2);
  CHECK(stats.assignments() == 3);
  CHECK(stats.dropped() == 1);
  CHECK(stats.unrouted_tokens() == 0);
  CHECK(stats.tokens_per_expert() == std::vector<std::int64_t>{2, 1, 0, 0});
  CHECK(stats.dead_experts() == std::vector<int>{2, 3});
  CHECK(stats.coactivation(0, 1) == 1);
  CHECK(stats.coactivation(1, 0) == 1);
  CHECK(stats.coactivation(0, 0) == 2);
  CHECK(stats.coactivation(0, 2) == 0);
  CHECK(stats.load_imbalance() == doctest::Approx(8.0 / 3).epsilon(1e-15));
  CHECK(stats.load_cv() == doctest::Approx(1.1055415967851332).epsilon(1e-15));
  // ln 3 rounded to float moves token B's probabilities by ~1e-8 relative.
  CHECK(stats.aux_loss() == doctest::Approx(23.0 / 12).epsilon(1e-6));
  CHECK(stats.z_loss() == doctest::Approx(2.566107025620603).epsilon(1e-6));
  CHECK(stats.mean_entropy() == doctest::Approx(1.3143738430069454).epsilon(1e-6));
  const std::vector<double> p = stats.mean_router_prob();
  CHECK(p[0] == doctest::Approx(3.0 / 8).epsilon(1e-6));
  CHECK(p[3] == doctest::Approx(5.0 / 24).epsilon(1e-6));
  CHECK(stats.mean_weight() == std::vector<double>{0.75, 0.5, 0.0, 0.0});

  // A uniform router over balanced experts gives the textbook values: aux loss k, entropy ln E.
  const Batch balanced{4, 2, std::vector<float>(8, 0.0f), {0, 1, 2, 3}, {0.5f, 0.5f, 0.5f, 0.5f}};
  moe::RoutingStats uniform(4);
  add(uniform, balanced);
  CHECK(uniform.aux_loss() == doctest::Approx(2.0).epsilon(1e-15));
  CHECK(uniform.mean_entropy() == doctest::Approx(std::log(4.0)).epsilon(1e-15));
  CHECK(uniform.z_loss() == doctest::Approx(std::log(4.0) * std::log(4.0)).epsilon(1e-15));
  CHECK(uniform.load_imbalance() == 1.0);
  CHECK(uniform.load_cv() == 0.0);
}

TEST_CASE("3 tokens, 4 experts, top-2: the figures match plainly written loops") {
  const Batch b{4,
                2,
                {1.5f, -0.25f, 0.75f, -2.0f, /**/ 0.1f, 0.2f, 3.0f, -1.0f, /**/ -0.5f, 2.5f, 2.25f, 0.0f},
                {0, 2, /**/ 2, 1, /**/ 1, 2},
                {0.68f, 0.32f, 0.94f, 0.06f, 0.56f, 0.44f}};
  moe::RoutingStats stats(4);
  add(stats, b);
  const Plain want = plain(b);
  CHECK(stats.tokens_per_expert() == want.counts);
  CHECK(stats.tokens_per_expert() == std::vector<std::int64_t>{1, 2, 3, 0});
  CHECK(stats.aux_loss() == doctest::Approx(want.aux).epsilon(1e-13));
  CHECK(stats.z_loss() == doctest::Approx(want.z).epsilon(1e-13));
  CHECK(stats.mean_entropy() == doctest::Approx(want.entropy).epsilon(1e-13));
  CHECK(stats.coactivation(0, 2) == 1);
  CHECK(stats.coactivation(1, 2) == 2);
  CHECK(stats.coactivation(2, 1) == 2);
  CHECK(stats.coactivation(2, 2) == 3);
  CHECK(stats.coactivation(0, 1) == 0);
  CHECK(stats.dead_experts() == std::vector<int>{3});
  CHECK(stats.mean_weight()[2] == doctest::Approx((0.32 + 0.94 + 0.44) / 3).epsilon(1e-7));

  // Larger and shifted logits: the max-subtracted double softmax still agrees with the plain one.
  Batch big = random_batch(3, 50, 16, 4, 0.0);
  for (float& x : big.logits) x += 30.0f;
  moe::RoutingStats big_stats(16);
  add(big_stats, big);
  const Plain big_want = plain(big);
  CHECK(big_stats.tokens_per_expert() == big_want.counts);
  CHECK(big_stats.aux_loss() == doctest::Approx(big_want.aux).epsilon(1e-12));
  CHECK(big_stats.z_loss() == doctest::Approx(big_want.z).epsilon(1e-12));
  CHECK(big_stats.mean_entropy() == doctest::Approx(big_want.entropy).epsilon(1e-12));
}

TEST_CASE("dropped and unused slots, -Inf logits and a row stride") {
  // 3 experts, 3 slots; logits rows padded to a stride of 5 (the padding is garbage and must be ignored).
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> logits = {0, 0, -inf, nan, nan,  //
                                     1, 2, 3,    nan, nan,  //
                                     0, 0, 0,    nan, nan,  //
                                     5, 0, 0,    nan, nan};
  const std::vector<int> ids = {kNoExpert,
                                kNoExpert,
                                kNoExpert,  // no expert at all
                                kDroppedExpert,
                                kNoExpert,
                                kDroppedExpert,  // both choices dropped
                                2,
                                kDroppedExpert,
                                kNoExpert,  // one ran, one dropped
                                0,
                                1,
                                2};  // dense
  const std::vector<float> weights(12, 0.25f);
  moe::RoutingStats stats(3);
  stats.add(logits.data(), 5, 4, ids.data(), weights.data(), 3);
  CHECK(stats.tokens() == 4);
  CHECK(stats.assignments() == 4);
  CHECK(stats.dropped() == 3);
  CHECK(stats.unrouted_tokens() == 2);
  CHECK(stats.tokens_per_expert() == std::vector<std::int64_t>{1, 1, 2});
  CHECK(stats.coactivation(0, 1) == 1);
  CHECK(stats.coactivation(2, 0) == 1);
  CHECK(stats.coactivation(2, 2) == 2);
  CHECK(stats.dead_experts().empty());
  // Token 0 is a fair coin between experts 0 and 1 (expert 2 masked): entropy ln 2, logsumexp ln 2.
  moe::RoutingStats masked(3);
  masked.add(logits.data(), 5, 1, ids.data(), weights.data(), 3);
  CHECK(masked.mean_entropy() == doctest::Approx(std::log(2.0)).epsilon(1e-15));
  CHECK(masked.z_loss() == doctest::Approx(std::log(2.0) * std::log(2.0)).epsilon(1e-15));
  CHECK(masked.mean_router_prob()[2] == 0.0);
  CHECK(masked.load_imbalance() == 0.0);  // nothing ran
  CHECK(masked.aux_loss() == 0.0);
  CHECK(std::isfinite(stats.mean_entropy()));

  // No tokens: every figure is 0, none is NaN.
  moe::RoutingStats empty(5);
  empty.add(nullptr, 0, 0, nullptr, nullptr, 0);
  CHECK(empty.tokens() == 0);
  CHECK(empty.aux_loss() == 0.0);
  CHECK(empty.z_loss() == 0.0);
  CHECK(empty.mean_entropy() == 0.0);
  CHECK(empty.load_cv() == 0.0);
  CHECK(empty.dead_experts().size() == 5);
}

TEST_CASE("merging shards: associative, and the same as one add of all their tokens") {
  const Batch a = random_batch(1, 37, 8, 2, 0.1), b = random_batch(2, 64, 8, 2, 0.2), c = random_batch(4, 5, 8, 2, 0.0);
  moe::RoutingStats sa(8), sb(8), sc(8);
  add(sa, a);
  add(sb, b);
  add(sc, c);

  moe::RoutingStats left = sa;  // (a + b) + c
  left.merge(sb);
  left.merge(sc);
  moe::RoutingStats bc = sb;  // a + (b + c)
  bc.merge(sc);
  moe::RoutingStats right = sa;
  right.merge(bc);
  check_same(left, right);

  moe::RoutingStats all(8);
  add(all, concat(concat(a, b), c));
  check_same(left, all);
  CHECK(all.dropped() > 0);

  // Two adds into one object are a merge too.
  moe::RoutingStats twice(8);
  add(twice, a);
  add(twice, b);
  add(twice, c);
  check_same(twice, all);

  // reset() forgets everything; an empty merge changes nothing.
  moe::RoutingStats cleared = all;
  cleared.reset();
  CHECK(cleared.tokens() == 0);
  CHECK(cleared.coactivation(1, 1) == 0);
  moe::RoutingStats merged_empty = all;
  merged_empty.merge(cleared);
  check_same(merged_empty, all);

  moe::RoutingStats other(9);
  CHECK_THROWS_WITH_AS(left.merge(other),
                       doctest::Contains("moe::RoutingStats::merge: cannot merge statistics of 9 experts into "
                                         "statistics of 8 experts"),
                       moe::Error);
}

TEST_CASE("bad routing is refused with a message naming the token, and counts nothing") {
  CHECK_THROWS_WITH_AS(moe::RoutingStats(0), doctest::Contains("moe::RoutingStats: experts must be in [1, 65536]"),
                       moe::Error);
  moe::RoutingStats stats(4);
  const std::vector<float> logits(12, 0.0f);
  const std::vector<float> weights(6, 0.5f);
  add(stats, Batch{4, 2, logits, {0, 1, 2, 3, 1, 0}, weights});
  const moe::RoutingStats before = stats;

  const auto refused = [&](std::vector<float> l, std::vector<int> ids, std::vector<float> w, const char* message) {
    CAPTURE(message);
    CHECK_THROWS_WITH_AS(add(stats, Batch{4, 2, l, ids, w}), doctest::Contains(message), moe::Error);
    check_same(stats, before);
  };
  refused(logits, {0, 1, 2, 4, 1, 0}, weights,
          "moe::RoutingStats::add: token 1 slot 1 has expert id 4, expected [0, 4), kNoExpert (-1) or "
          "kDroppedExpert (-2)");
  refused(logits, {0, 1, 2, 3, -3, 0}, weights, "token 2 slot 0 has expert id -3");
  refused(logits, {0, 1, 2, 2, 1, 0}, weights, "moe::RoutingStats::add: token 1 selects expert 2 twice");
  std::vector<float> bad = logits;
  bad[9] = std::numeric_limits<float>::quiet_NaN();
  refused(bad, {0, 1, 2, 3, 1, 0}, weights, "moe::RoutingStats::add: token 2 has a NaN logit for expert 1");
  bad[9] = std::numeric_limits<float>::infinity();
  refused(bad, {0, 1, 2, 3, 1, 0}, weights, "token 2 has a +Inf logit for expert 1");
  std::vector<float> masked = logits;
  for (int i = 0; i < 4; ++i) masked[std::size_t(4 + i)] = -std::numeric_limits<float>::infinity();
  refused(masked, {0, 1, 2, 3, 1, 0}, weights, "token 1 has no finite logit");
  std::vector<float> bad_weights = weights;
  bad_weights[2] = std::numeric_limits<float>::quiet_NaN();
  refused(logits, {0, 1, 2, 3, 1, 0}, bad_weights, "token 1 slot 0 has a non-finite weight");
  // Repeating a marker is not a repeated expert.
  add(stats, Batch{4, 2, logits, {kNoExpert, kNoExpert, kDroppedExpert, kDroppedExpert, 3, kNoExpert}, weights});
  CHECK(stats.dropped() == 2);

  int ids[2] = {0, 1};
  float w[2] = {0.5f, 0.5f};
  CHECK_THROWS_WITH_AS(stats.add(logits.data(), 3, 1, ids, w, 2), doctest::Contains("logits_stride 3 is less than"),
                       moe::Error);
  CHECK_THROWS_WITH_AS(stats.add(logits.data(), 4, 1, ids, w, 0), doctest::Contains("slots must be >= 1"), moe::Error);
  CHECK_THROWS_WITH_AS(stats.add(nullptr, 4, 1, ids, w, 2), doctest::Contains("must not be null"), moe::Error);
  CHECK_THROWS_WITH_AS(stats.coactivation(0, 4), doctest::Contains("moe::RoutingStats::coactivation: expert index 4"),
                       moe::Error);
}

TEST_CASE("JSON and CSV output") {
  const Batch b = random_batch(7, 40, 6, 2, 0.1);
  moe::RoutingStats stats(6);
  add(stats, b);
  std::ostringstream json_stream;
  stats.write_json(json_stream);
  const std::string json = json_stream.str();

  // Structure: balanced brackets and braces (no strings here contain any), one object.
  int depth = 0, min_depth = 0;
  for (const char ch : json) {
    if (ch == '{' || ch == '[') ++depth;
    if (ch == '}' || ch == ']') min_depth = std::min(min_depth, --depth);
  }
  CHECK(depth == 0);
  CHECK(min_depth == 0);
  CHECK(json.front() == '{');
  CHECK(json.find_last_not_of('\n') == json.rfind('}'));
  for (const char* key : {"experts", "tokens", "assignments", "dropped", "unrouted_tokens", "load_imbalance", "load_cv",
                          "aux_loss", "z_loss", "mean_entropy", "tokens_per_expert", "dead_experts", "coactivation",
                          "mean_router_prob", "mean_weight"}) {
    CAPTURE(key);
    CHECK(occurrences(json, "\"" + std::string(key) + "\":") == 1);
  }
  CHECK(json.find("nan") == std::string::npos);
  CHECK(json.find("inf") == std::string::npos);
  // The coactivation table has one row per expert, and numbers read back exactly.
  CHECK(occurrences(json.substr(json.find("\"coactivation\"")), "[") == 7);
  CHECK(json_value(json, "aux_loss") == stats.aux_loss());
  CHECK(json_value(json, "z_loss") == stats.z_loss());
  CHECK(json_value(json, "mean_entropy") == stats.mean_entropy());
  CHECK(json_value(json, "load_cv") == stats.load_cv());
  CHECK(json_value(json, "tokens") == 40);

  // A caller's locale with digit grouping and a decimal comma does not leak into the output.
  struct Comma : std::numpunct<char> {
    char do_decimal_point() const override { return ','; }
    char do_thousands_sep() const override { return '.'; }
    std::string do_grouping() const override { return "\1"; }
  };
  std::ostringstream localised;
  localised.imbue(std::locale(std::locale::classic(), new Comma));
  stats.write_json(localised);
  CHECK(localised.str() == json);

  std::ostringstream csv_stream;
  stats.write_csv(csv_stream);
  std::istringstream csv(csv_stream.str());
  std::string line;
  std::vector<std::string> rows;
  int comments = 0;
  while (std::getline(csv, line)) {
    if (line.rfind("#", 0) == 0)
      ++comments;
    else
      rows.push_back(line);
  }
  CHECK(comments == 10);
  REQUIRE(rows.size() == 7);
  CHECK(rows[0] == "expert,tokens,load,token_fraction,mean_router_prob,mean_weight,top_partner,top_partner_tokens");
  for (const std::string& r : rows) CHECK(occurrences(r, ",") == 7);
  CHECK(rows[1].rfind("0," + std::to_string(stats.tokens_per_expert()[0]) + ",", 0) == 0);

  // Empty statistics still write valid output with no NaN.
  moe::RoutingStats empty(3);
  std::ostringstream empty_json, empty_csv;
  empty.write_json(empty_json);
  empty.write_csv(empty_csv);
  CHECK(empty_json.str().find("nan") == std::string::npos);
  CHECK(empty_json.str().find("\"dead_experts\": [0, 1, 2]") != std::string::npos);
  CHECK(empty_csv.str().find("\n2,0,,,,,,\n") != std::string::npos);
}

TEST_CASE("SVG of the routing: one rect per heatmap cell, well formed, bounded size") {
  struct Shape {
    moe::Index tokens;
    int experts, slots;
    moe::Index shown;
  };
  for (const Shape shape : {Shape{3, 8, 2, 256}, Shape{1, 8, 8, 256}, Shape{256, 256, 8, 256}, Shape{300, 64, 4, 100},
                            Shape{40, 128, 128, 256}, Shape{10, 8, 2, 0}}) {
    CAPTURE(shape.tokens);
    CAPTURE(shape.experts);
    const Batch b = random_batch(unsigned(shape.experts), shape.tokens, shape.experts, shape.slots, 0.05);
    moe::RoutingStats stats(shape.experts);
    add(stats, b);
    std::ostringstream out;
    moe::write_routing_svg(out, stats, b.ids.data(), b.weights.data(), shape.tokens, shape.slots, shape.shown);
    const std::string svg = out.str();
    CHECK(svg.rfind("<?xml", 0) == 0);
    CHECK(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\"") != std::string::npos);
    CHECK(svg.substr(svg.size() - 7) == "</svg>\n");
    CHECK(xml_problem(svg) == "");

    const moe::Index shown = std::min(shape.tokens, shape.shown);
    std::size_t cells = 0, dropping = 0;
    for (moe::Index t = 0; t < shown; ++t) {
      bool dropped = false;
      for (int j = 0; j < shape.slots; ++j) {
        const int id = b.ids[std::size_t(t * shape.slots + j)];
        cells += id >= 0;
        dropped = dropped || id == kDroppedExpert;
      }
      dropping += dropped;
    }
    CHECK(occurrences(svg, "<rect class=\"cell\"") == cells);
    CHECK(occurrences(svg, "<rect class=\"drop\"") == dropping);
    std::size_t live = 0;
    for (const std::int64_t c : stats.tokens_per_expert()) live += c > 0;
    CHECK(occurrences(svg, "<rect class=\"bar\"") == live);
    CHECK(svg_size(svg, "width") <= 1200);
    CHECK(svg_size(svg, "height") <= 1400);
    CHECK(svg.find("nan") == std::string::npos);
  }

  // No tokens at all: a valid document with an empty load panel.
  moe::RoutingStats empty(8);
  std::ostringstream out;
  moe::write_routing_svg(out, empty, nullptr, nullptr, 0, 0);
  CHECK(xml_problem(out.str()) == "");
  CHECK(out.str().find("no assignments yet") != std::string::npos);

  const int ids[4] = {0, 1, 8, 2};
  const float weights[4] = {0.5f, 0.5f, 0.5f, 0.5f};
  moe::RoutingStats stats(8);
  CHECK_THROWS_WITH_AS(moe::write_routing_svg(out, stats, ids, weights, 2, 2),
                       doctest::Contains("moe::write_routing_svg: token 1 slot 0 has expert id 8"), moe::Error);
  CHECK_THROWS_WITH_AS(moe::write_routing_svg(out, stats, ids, weights, 1, 0), doctest::Contains("slots must be >= 1"),
                       moe::Error);
  CHECK_THROWS_WITH_AS(moe::write_routing_svg(out, stats, nullptr, weights, 1, 2),
                       doctest::Contains("must not be null"), moe::Error);
  CHECK_THROWS_WITH_AS(moe::write_routing_svg(out, stats, ids, weights, 1, 2, -1),
                       doctest::Contains("max_tokens_shown must be >= 0"), moe::Error);
  CHECK(moe::detail::svg::escape("a<b & \"c\" 'd'>") == "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
}

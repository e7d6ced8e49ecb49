// moe/routing_stats.hpp: routing statistics of an MoE layer, filled batch by batch and mergeable.
//
// What a router did is the first thing to look at when an MoE model trains badly or serves slowly: experts
// that receive no tokens, a few experts that receive most of them, tokens dropped by a capacity limit. This
// header accumulates the figures the literature uses for that (load imbalance, the Switch/Mixtral
// load-balancing loss, ST-MoE's router z-loss, router entropy, which experts run together) and writes them
// as JSON or CSV. It knows nothing of Eigen or of the layer: it reads router logits and the routing decision
// (expert ids and weights per token) from plain arrays, so any router, ours or not, can feed it.
//
// Every accumulator is a sum (int64 counts, double sums), so statistics of shards merged in any order equal
// those of one pass over all tokens: counts exactly, double sums up to rounding.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <locale>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "slot_markers.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

class RoutingStats {
public:
  // experts >= 1. Memory is O(experts^2) for the coactivation table (8 * experts^2 bytes: 512 KiB for 256).
  explicit RoutingStats(int experts) : experts_(experts) {
    MOE_CHECK(experts >= 1 && experts <= (1 << 16), "RoutingStats",
              "experts must be in [1, 65536], got " + std::to_string(experts));
    reset();
  }

  // One batch: `tokens` rows of experts() router logits, row i at logits + i * logits_stride, and the routing
  // decision, tokens x slots row-major: ids[t * slots + j] in [0, experts()), kNoExpert or kDroppedExpert,
  // weights[t * slots + j] its routing weight (read only where an expert ran). Logits may be -Inf (a masked
  // expert); NaN, +Inf or a row of only -Inf is an error, as is any other id, an expert twice in a row or a
  // non-finite weight where an expert ran.
  // The whole batch is checked before anything is counted, so a throwing add() leaves the statistics as they
  // were. tokens == 0 does nothing (the pointers may then be null).
  void add(const float* logits, Index logits_stride, Index tokens, const int* ids, const float* weights, int slots) {
    const char* where = "RoutingStats::add";
    MOE_CHECK(tokens >= 0, where, "tokens must be >= 0, got " + std::to_string(tokens));
    if (tokens == 0) return;
    MOE_CHECK(slots >= 1, where, "slots must be >= 1, got " + std::to_string(slots));
    MOE_CHECK(logits != nullptr && ids != nullptr && weights != nullptr, where,
              "logits, ids and weights must not be null");
    MOE_CHECK(logits_stride >= experts_, where,
              "logits_stride " + std::to_string(logits_stride) + " is less than the " + std::to_string(experts_) +
                  " experts");
    check_batch(logits, logits_stride, tokens, ids, weights, slots);

    std::vector<double>& probs = scratch_probs_;
    std::vector<int>& ran = scratch_ran_;
    ran.resize(std::size_t(slots));
    const std::size_t e_count = std::size_t(experts_);
    for (Index t = 0; t < tokens; ++t) {
      const float* row = logits + t * logits_stride;
      // Softmax and logsumexp in double, shifted by the row max so exp never overflows:
      //   p_i = exp(x_i - m) / s,  s = sum_i exp(x_i - m),  logsumexp = m + ln s,
      //   entropy = -sum_i p_i ln p_i = ln s - sum_i p_i (x_i - m)   (masked experts, p_i = 0, add nothing).
      double m = -std::numeric_limits<double>::infinity();
      for (std::size_t i = 0; i < e_count; ++i) m = std::max(m, double(row[i]));
      double s = 0;
      for (std::size_t i = 0; i < e_count; ++i) s += (probs[i] = std::exp(double(row[i]) - m));
      const double log_s = std::log(s);
      double weighted_shift = 0;
      for (std::size_t i = 0; i < e_count; ++i) {
        probs[i] /= s;
        prob_sum_[i] += probs[i];
        if (probs[i] > 0) weighted_shift += probs[i] * (double(row[i]) - m);
      }
      const double lse = m + log_s;
      z_sum_ += lse * lse;
      entropy_sum_ += log_s - weighted_shift;

      int count = 0;
      for (int j = 0; j < slots; ++j) {
        const int id = ids[t * slots + j];
        if (id >= 0) {
          ran[std::size_t(count++)] = id;
          counts_[std::size_t(id)] += 1;
          weight_sum_[std::size_t(id)] += double(weights[t * slots + j]);
        } else if (id == kDroppedExpert) {
          dropped_ += 1;
        }
      }
      assignments_ += count;
      if (count == 0) unrouted_ += 1;
      for (int a = 0; a < count; ++a)
        for (int b = 0; b < count; ++b) coactivation_[std::size_t(ran[a]) * e_count + std::size_t(ran[b])] += 1;
    }
    tokens_ += tokens;
  }

  // Adds another shard's statistics (same expert count): afterwards *this describes both shards' tokens.
  void merge(const RoutingStats& other) {
    MOE_CHECK(other.experts_ == experts_, "RoutingStats::merge",
              "cannot merge statistics of " + std::to_string(other.experts_) + " experts into statistics of " +
                  std::to_string(experts_) + " experts");
    tokens_ += other.tokens_;
    assignments_ += other.assignments_;
    dropped_ += other.dropped_;
    unrouted_ += other.unrouted_;
    z_sum_ += other.z_sum_;
    entropy_sum_ += other.entropy_sum_;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      counts_[i] += other.counts_[i];
      prob_sum_[i] += other.prob_sum_[i];
      weight_sum_[i] += other.weight_sum_[i];
    }
    for (std::size_t i = 0; i < coactivation_.size(); ++i) coactivation_[i] += other.coactivation_[i];
  }

  // Back to no tokens, same expert count.
  void reset() {
    const std::size_t e = std::size_t(experts_);
    tokens_ = assignments_ = dropped_ = unrouted_ = 0;
    z_sum_ = entropy_sum_ = 0;
    counts_.assign(e, 0);
    prob_sum_.assign(e, 0.0);
    weight_sum_.assign(e, 0.0);
    coactivation_.assign(e * e, 0);
    scratch_probs_.assign(e, 0.0);
  }

  // ---- counts (exact) ----
  // Below, T = tokens(), E = experts(), c_i = tokens_per_expert()[i], p_t = softmax of token t's logits.

  int experts() const { return experts_; }
  // T: tokens added.
  std::int64_t tokens() const { return tokens_; }
  // sum_i c_i: (token, expert) selections that ran (not kNoExpert, not kDroppedExpert).
  std::int64_t assignments() const { return assignments_; }
  // c_i: tokens for which expert i ran.
  const std::vector<std::int64_t>& tokens_per_expert() const { return counts_; }
  // Slots marked kDroppedExpert.
  std::int64_t dropped() const { return dropped_; }
  // Tokens for which no expert ran (every slot kNoExpert or kDroppedExpert).
  std::int64_t unrouted_tokens() const { return unrouted_; }
  // Tokens in which experts i and j both ran: symmetric, coactivation(i, i) = c_i.
  std::int64_t coactivation(int i, int j) const {
    check_expert(i, "RoutingStats::coactivation");
    check_expert(j, "RoutingStats::coactivation");
    return coactivation_[std::size_t(i) * std::size_t(experts_) + std::size_t(j)];
  }
  // Experts with c_i = 0, ascending.
  std::vector<int> dead_experts() const {
    std::vector<int> dead;
    for (int i = 0; i < experts_; ++i)
      if (counts_[std::size_t(i)] == 0) dead.push_back(i);
    return dead;
  }

  // ---- derived figures (0 when there is nothing to average over) ----

  // max_i c_i / mean_i c_i, the mean over all E experts: 1 is perfect balance, E is one expert taking all.
  double load_imbalance() const {
    if (assignments_ == 0) return 0;
    const std::int64_t top = *std::max_element(counts_.begin(), counts_.end());
    return double(top) / mean_count();
  }
  // Coefficient of variation of the loads: sqrt(mean_i (c_i - c)^2) / c, c = mean_i c_i (population std).
  double load_cv() const {
    if (assignments_ == 0) return 0;
    const double mean = mean_count();
    double squares = 0;
    for (const std::int64_t c : counts_) squares += (double(c) - mean) * (double(c) - mean);
    return std::sqrt(squares / double(experts_)) / mean;
  }
  // P_i = (1/T) sum_t p_t[i]: the router's mean probability for expert i (sums to 1 over i).
  std::vector<double> mean_router_prob() const {
    std::vector<double> p(counts_.size(), 0.0);
    if (tokens_ > 0)
      for (std::size_t i = 0; i < p.size(); ++i) p[i] = prob_sum_[i] / double(tokens_);
    return p;
  }
  // Mean routing weight of expert i over the selections that ran; 0 for a dead expert.
  std::vector<double> mean_weight() const {
    std::vector<double> w(counts_.size(), 0.0);
    for (std::size_t i = 0; i < w.size(); ++i)
      if (counts_[i] > 0) w[i] = weight_sum_[i] / double(counts_[i]);
    return w;
  }
  // The load-balancing loss as transformers' load_balancing_loss_func computes it (Switch for k = 1, Mixtral
  // for top-k): E * sum_i f_i * P_i with f_i = c_i / T, the fraction of tokens dispatched to expert i (summing
  // to k when every slot runs) and P_i as in mean_router_prob(). Perfect balance gives k; one expert taking
  // every token with probability 1 gives E * k. f_i counts selections that ran: a dropped choice does not say
  // which expert it was for (Switch's and GShard's own code count choices before the capacity cut, so with
  // drops this is lower than theirs).
  double aux_loss() const {
    if (tokens_ == 0) return 0;
    double sum = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) sum += double(counts_[i]) * prob_sum_[i];
    return double(experts_) * sum / (double(tokens_) * double(tokens_));
  }
  // ST-MoE's router z-loss: (1/T) sum_t (logsumexp_i x_t[i])^2.
  double z_loss() const { return tokens_ == 0 ? 0 : z_sum_ / double(tokens_); }
  // (1/T) sum_t H(p_t), H(p) = -sum_i p_i ln p_i in nats: ln E is a uniform router, 0 a one-hot one.
  double mean_entropy() const { return tokens_ == 0 ? 0 : entropy_sum_ / double(tokens_); }

  // ---- output ----

  // One JSON object: "experts", "tokens", "assignments", "dropped", "unrouted_tokens", "load_imbalance",
  // "load_cv", "aux_loss", "z_loss", "mean_entropy", "tokens_per_expert": [E], "mean_router_prob": [E],
  // "mean_weight": [E], "dead_experts": [...], "coactivation": [E][E]. Doubles are printed with the fewest
  // digits that read back to the same value (at most max_digits10); non-finite ones as null.
  void write_json(std::ostream& out) const {
    std::ostringstream s = classic_stream();
    s << "{\n";
    s << "  \"experts\": " << experts_ << ",\n";
    s << "  \"tokens\": " << tokens_ << ",\n";
    s << "  \"assignments\": " << assignments_ << ",\n";
    s << "  \"dropped\": " << dropped_ << ",\n";
    s << "  \"unrouted_tokens\": " << unrouted_ << ",\n";
    s << "  \"load_imbalance\": " << json_number(load_imbalance()) << ",\n";
    s << "  \"load_cv\": " << json_number(load_cv()) << ",\n";
    s << "  \"aux_loss\": " << json_number(aux_loss()) << ",\n";
    s << "  \"z_loss\": " << json_number(z_loss()) << ",\n";
    s << "  \"mean_entropy\": " << json_number(mean_entropy()) << ",\n";
    const auto list = [&s](const char* key, const auto& values, bool last) {
      s << "  \"" << key << "\": [";
      for (std::size_t i = 0; i < values.size(); ++i) {
        if (i) s << ", ";
        if constexpr (std::is_floating_point_v<std::decay_t<decltype(values[i])>>)
          s << json_number(values[i]);
        else
          s << values[i];
      }
      s << (last ? "]\n" : "],\n");
    };
    list("tokens_per_expert", counts_, false);
    list("mean_router_prob", mean_router_prob(), false);
    list("mean_weight", mean_weight(), false);
    list("dead_experts", dead_experts(), false);
    s << "  \"coactivation\": [";
    const std::size_t e = std::size_t(experts_);
    for (std::size_t i = 0; i < e; ++i) {
      s << (i ? ",\n    [" : "\n    [");
      for (std::size_t j = 0; j < e; ++j) s << (j ? ", " : "") << coactivation_[i * e + j];
      s << "]";
    }
    s << "\n  ]\n}\n";
    out << s.str();
  }

  // A per-expert table. First, comment lines "# key: value" with the summary figures (tokens, assignments,
  // dropped, unrouted_tokens, load_imbalance, load_cv, aux_loss, z_loss, mean_entropy); then the header
  //   expert,tokens,load,token_fraction,mean_router_prob,mean_weight,top_partner,top_partner_tokens
  // and one row per expert: c_i; c_i / mean_j c_j (1 = its fair share); f_i = c_i / T; P_i; the mean weight
  // when it ran; the other expert it ran with most often (lowest index on ties) and in how many tokens.
  // Undefined fields (no tokens, a dead expert's mean weight, no partner) are left empty.
  void write_csv(std::ostream& out) const {
    std::ostringstream s = classic_stream();
    s << "# experts: " << experts_ << "\n# tokens: " << tokens_ << "\n# assignments: " << assignments_
      << "\n# dropped: " << dropped_ << "\n# unrouted_tokens: " << unrouted_
      << "\n# load_imbalance: " << number(load_imbalance()) << "\n# load_cv: " << number(load_cv())
      << "\n# aux_loss: " << number(aux_loss()) << "\n# z_loss: " << number(z_loss())
      << "\n# mean_entropy: " << number(mean_entropy()) << "\n";
    s << "expert,tokens,load,token_fraction,mean_router_prob,mean_weight,top_partner,top_partner_tokens\n";
    const std::vector<double> p = mean_router_prob(), w = mean_weight();
    const std::size_t e = std::size_t(experts_);
    for (std::size_t i = 0; i < e; ++i) {
      s << i << ',' << counts_[i] << ',';
      if (assignments_ > 0) s << number(double(counts_[i]) / mean_count());
      s << ',';
      if (tokens_ > 0)
        s << number(double(counts_[i]) / double(tokens_)) << ',' << number(p[i]);
      else
        s << ',';
      s << ',';
      if (counts_[i] > 0) s << number(w[i]);
      s << ',';
      std::size_t partner = e;
      for (std::size_t j = 0; j < e; ++j)
        if (j != i && coactivation_[i * e + j] > 0 &&
            (partner == e || coactivation_[i * e + j] > coactivation_[i * e + partner]))
          partner = j;
      if (partner < e)
        s << partner << ',' << coactivation_[i * e + partner];
      else
        s << ',';
      s << '\n';
    }
    out << s.str();
  }

private:
  void check_expert(int i, const char* where) const {
    MOE_CHECK(i >= 0 && i < experts_, where,
              "expert index " + std::to_string(i) + " is out of range [0, " + std::to_string(experts_) + ")");
  }

  // Everything add() rejects, before it counts anything. Duplicates are found with a per-expert stamp of the
  // last row that used the expert, so a dense row (slots = experts) costs O(slots), not O(slots^2).
  void check_batch(const float* logits, Index logits_stride, Index tokens, const int* ids, const float* weights,
                   int slots) {
    const char* where = "RoutingStats::add";
    std::vector<std::int64_t>& last_row = scratch_last_row_;
    last_row.assign(std::size_t(experts_), -1);
    for (Index t = 0; t < tokens; ++t) {
      const float* row = logits + t * logits_stride;
      float m = -std::numeric_limits<float>::infinity();
      for (int i = 0; i < experts_; ++i) {
        MOE_CHECK(!std::isnan(row[i]) && row[i] != std::numeric_limits<float>::infinity(), where,
                  "token " + std::to_string(t) + " has a " + (std::isnan(row[i]) ? "NaN" : "+Inf") +
                      " logit for expert " + std::to_string(i));
        m = std::max(m, row[i]);
      }
      MOE_CHECK(m > -std::numeric_limits<float>::infinity(), where,
                "token " + std::to_string(t) + " has no finite logit (every expert is -Inf)");
      for (int j = 0; j < slots; ++j) {
        const int id = ids[t * slots + j];
        if (id == kNoExpert || id == kDroppedExpert) continue;
        MOE_CHECK(id >= 0 && id < experts_, where,
                  "token " + std::to_string(t) + " slot " + std::to_string(j) + " has expert id " + std::to_string(id) +
                      ", expected [0, " + std::to_string(experts_) + "), kNoExpert (-1) or kDroppedExpert (-2)");
        MOE_CHECK(last_row[std::size_t(id)] != t, where,
                  "token " + std::to_string(t) + " selects expert " + std::to_string(id) + " twice");
        last_row[std::size_t(id)] = t;
        MOE_CHECK(std::isfinite(weights[t * slots + j]), where,
                  "token " + std::to_string(t) + " slot " + std::to_string(j) + " has a non-finite weight");
      }
    }
  }

  double mean_count() const { return double(assignments_) / double(experts_); }

  // Output streams are formatted in the classic locale whatever the caller's stream is imbued with: a
  // locale with a decimal comma or digit grouping would break both formats.
  static std::ostringstream classic_stream() {
    std::ostringstream s;
    s.imbue(std::locale::classic());
    return s;
  }
  // The shortest of 15, 16, 17 (max_digits10) significant digits that reads back to the same double.
  static std::string number(double x) {
    std::string text;
    for (int digits = std::numeric_limits<double>::digits10; digits <= std::numeric_limits<double>::max_digits10;
         ++digits) {
      std::ostringstream s = classic_stream();
      s.precision(digits);
      s << x;
      text = s.str();
      std::istringstream back(text);
      back.imbue(std::locale::classic());
      double read = 0;
      back >> read;
      if (read == x) break;
    }
    return text;
  }
  static std::string json_number(double x) { return std::isfinite(x) ? number(x) : "null"; }

  int experts_;
  std::int64_t tokens_ = 0;
  std::int64_t assignments_ = 0;
  std::int64_t dropped_ = 0;
  std::int64_t unrouted_ = 0;
  double z_sum_ = 0;        // sum_t logsumexp_t^2
  double entropy_sum_ = 0;  // sum_t H(p_t)
  std::vector<std::int64_t> counts_;
  std::vector<double> prob_sum_;            // sum_t p_t[i]
  std::vector<double> weight_sum_;          // sum of expert i's weights where it ran
  std::vector<std::int64_t> coactivation_;  // E x E, row-major
  // Per-call scratch, kept so that add() allocates only on its first call.
  std::vector<double> scratch_probs_;
  std::vector<int> scratch_ran_;
  std::vector<std::int64_t> scratch_last_row_;
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

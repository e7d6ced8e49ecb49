// moe/routing_plot.hpp: a picture of what a router did, as one standalone SVG 1.1 document.
//
// Two panels, sharing the expert axis so that a column of the heatmap sits under its bar:
//   load     tokens per expert over everything the RoutingStats has seen, with the mean as a dashed line;
//   heatmap  the routing weights of the first tokens of one batch, a row per token and a column per expert,
//            darker for a larger weight; a token's dropped choices (kDroppedExpert, which name no expert)
//            are marked in a separate column on the right.
// Sizes are computed from the number of experts and tokens so that 8 to 256 experts and 1 to 256 tokens stay
// legible within about 1100 x 1350 px. Written by hand, like the JSON and CSV of routing_stats.hpp, so the
// library needs nothing to plot.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <locale>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "config.hpp"
#include "routing_stats.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace svg {

// Coordinates with at most two decimals: a hundredth of a pixel is invisible, and it keeps a 65536-cell
// heatmap at a few megabytes.
inline std::string num(double x) {
  std::ostringstream s;
  s.imbue(std::locale::classic());
  s.setf(std::ios::fixed);
  s.precision(2);
  s << (std::abs(x) < 0.005 ? 0.0 : x);
  std::string text = s.str();
  text.erase(text.find_last_not_of('0') + 1);
  if (text.back() == '.') text.pop_back();
  return text;
}

// A figure for a label: three significant digits.
inline std::string label(double x) {
  std::ostringstream s;
  s.imbue(std::locale::classic());
  s.precision(3);
  s << x;
  return s.str();
}

inline std::string escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// The smallest of 1, 2, 5 times a power of ten that is >= x (x > 0): steps for axis ticks.
inline double nice_step(double x) {
  const double power = std::pow(10.0, std::floor(std::log10(x)));
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (m * power >= x) return m * power;
  return 10 * power;
}

// The smallest power of two >= x (x >= 1): label every n-th expert or token, so that labels fall on
// 0, 8, 16, ... which suits expert counts, all powers of two in practice.
inline int power_of_two_at_least(double x) {
  int n = 1;
  while (n < x) n *= 2;
  return n;
}

// Light to dark blue, linear in sRGB as an SVG gradient is, so the legend's gradient matches the cells.
inline constexpr int kLight[3] = {0xde, 0xeb, 0xf7};
inline constexpr int kDark[3] = {0x08, 0x30, 0x6b};
inline constexpr const char* kLightHex = "#deebf7";
inline constexpr const char* kDarkHex = "#08306b";
inline constexpr const char* kDroppedHex = "#ff7f0e";  // orange: stands out from every shade of blue
inline constexpr const char* kBarHex = "#4c78a8";
inline constexpr const char* kMeanHex = "#d62728";

inline std::string ramp(double t) {
  t = std::min(1.0, std::max(0.0, t));
  static const char* digits = "0123456789abcdef";
  std::string hex = "#";
  for (int c = 0; c < 3; ++c) {
    const int v = int(std::lround(kLight[c] + t * (kDark[c] - kLight[c])));
    hex += digits[v >> 4];
    hex += digits[v & 15];
  }
  return hex;
}

inline void text(std::ostream& s, double x, double y, const std::string& content, int size,
                 const char* anchor = "start", const std::string& extra = "") {
  s << "<text x=\"" << num(x) << "\" y=\"" << num(y) << "\" font-size=\"" << size << "\" text-anchor=\"" << anchor
    << '"' << extra << '>' << escape(content) << "</text>\n";
}

}  // namespace svg
}  // namespace detail

// Writes the SVG for `stats` (the load panel) and one batch's routing decision (the heatmap): ids and weights
// are tokens x slots row-major as for RoutingStats::add, ids in [0, stats.experts()), kNoExpert (left blank)
// or kDroppedExpert (marked in the "drop" column). The heatmap shows the first min(tokens, max_tokens_shown)
// tokens; its colour scale runs from 0 to the largest weight shown. Every id is checked, and the shown
// weights must be finite.
inline void write_routing_svg(std::ostream& out, const RoutingStats& stats, const int* ids, const float* weights,
                              Index tokens, int slots, Index max_tokens_shown = 256) {
  namespace svg = detail::svg;
  const char* where = "write_routing_svg";
  const int experts = stats.experts();
  MOE_CHECK(tokens >= 0, where, "tokens must be >= 0, got " + std::to_string(tokens));
  MOE_CHECK(max_tokens_shown >= 0, where, "max_tokens_shown must be >= 0, got " + std::to_string(max_tokens_shown));
  if (tokens > 0) {
    MOE_CHECK(slots >= 1, where, "slots must be >= 1, got " + std::to_string(slots));
    MOE_CHECK(ids != nullptr && weights != nullptr, where, "ids and weights must not be null");
    for (Index t = 0; t < tokens; ++t)
      for (int j = 0; j < slots; ++j) {
        const int id = ids[t * slots + j];
        MOE_CHECK(id == kNoExpert || id == kDroppedExpert || (id >= 0 && id < experts), where,
                  "token " + std::to_string(t) + " slot " + std::to_string(j) + " has expert id " + std::to_string(id) +
                      ", expected [0, " + std::to_string(experts) + "), kNoExpert (-1) or kDroppedExpert (-2)");
      }
  }
  const Index shown = std::min(tokens, max_tokens_shown);
  double max_weight = 0;
  for (Index t = 0; t < shown; ++t)
    for (int j = 0; j < slots; ++j)
      if (ids[t * slots + j] >= 0) {
        const float w = weights[t * slots + j];
        MOE_CHECK(std::isfinite(w), where,
                  "token " + std::to_string(t) + " slot " + std::to_string(j) + " has a non-finite weight");
        max_weight = std::max(max_weight, double(w));
      }
  const double scale_top = max_weight > 0 ? max_weight : 1.0;

  // ---- geometry: one column width for both panels; rows shrink so the heatmap fits 880 px ----
  const double column = std::min(40.0, 960.0 / experts);
  const double left = 64, plot_width = column * experts;
  const double drop_x = left + plot_width + 10, drop_width = 14;
  const double width = std::max(560.0, drop_x + drop_width + 24);
  const double bars_top = 100, bars_height = 220, bars_bottom = bars_top + bars_height;
  const double heat_top = bars_bottom + 74;
  const double row = shown > 0 ? std::min(16.0, 880.0 / double(shown)) : 0;
  const double heat_bottom = heat_top + row * double(shown);
  const double height = shown > 0 ? heat_bottom + 84 : heat_top + 10;
  const int expert_label_every = svg::power_of_two_at_least(26.0 / column);
  const int font = column >= 12 ? 11 : 10;

  std::ostringstream s;
  s.imbue(std::locale::classic());
  s << "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" << svg::num(width) << "\" height=\""
    << svg::num(height) << "\" viewBox=\"0 0 " << svg::num(width) << ' ' << svg::num(height)
    << "\" font-family=\"sans-serif\">\n";
  s << "<title>" << svg::escape("MoE routing: " + std::to_string(experts) + " experts") << "</title>\n";
  s << "<defs><linearGradient id=\"moe-weight-scale\" x1=\"0\" y1=\"0\" x2=\"1\" y2=\"0\"><stop offset=\"0\" "
       "stop-color=\""
    << svg::kLightHex << "\"/><stop offset=\"1\" stop-color=\"" << svg::kDarkHex << "\"/></linearGradient></defs>\n";
  s << "<rect x=\"0\" y=\"0\" width=\"" << svg::num(width) << "\" height=\"" << svg::num(height)
    << "\" fill=\"#ffffff\"/>\n";

  // ---- title and the summary figures ----
  svg::text(s, left, 26, "MoE routing: " + std::to_string(experts) + " experts", 16, "start", " font-weight=\"bold\"");
  svg::text(s, left, 46,
            std::to_string(stats.tokens()) + " tokens, " + std::to_string(stats.assignments()) + " assignments, " +
                std::to_string(stats.dropped()) + " dropped, " + std::to_string(stats.unrouted_tokens()) +
                " unrouted, " + std::to_string(stats.dead_experts().size()) + " dead experts",
            12);
  svg::text(s, left, 63,
            "load max/mean " + svg::label(stats.load_imbalance()) + ", CV " + svg::label(stats.load_cv()) +
                ", aux loss " + svg::label(stats.aux_loss()) + ", z-loss " + svg::label(stats.z_loss()) + ", entropy " +
                svg::label(stats.mean_entropy()) + " nats",
            12);

  // Expert numbers under a panel, every expert_label_every-th.
  const auto expert_axis = [&](double y) {
    for (int e = 0; e < experts; e += expert_label_every)
      svg::text(s, left + (e + 0.5) * column, y + 12, std::to_string(e), font, "middle");
    svg::text(s, left + plot_width / 2, y + 27, "expert", 11, "middle");
  };

  // ---- load panel ----
  // The mean goes in the panel's heading rather than beside its line, where it would sit on the bars.
  s << "<text x=\"" << svg::num(left) << "\" y=\"" << svg::num(bars_top - 12) << "\" font-size=\"13\">"
    << "<tspan font-weight=\"bold\">Tokens per expert</tspan>";
  if (stats.assignments() > 0)
    s << "<tspan fill=\"" << svg::kMeanHex << "\" dx=\"6\">(dashed: mean "
      << svg::label(double(stats.assignments()) / experts) << ")</tspan>";
  s << "</text>\n";
  const std::vector<std::int64_t>& counts = stats.tokens_per_expert();
  const std::int64_t top_count = *std::max_element(counts.begin(), counts.end());
  const double step = svg::nice_step(std::max(1.0, double(top_count) / 4));
  const double axis_top = std::max(step, std::ceil(double(top_count) / step) * step);
  const auto bar_y = [&](double count) { return bars_bottom - count / axis_top * bars_height; };
  for (double tick = 0; tick <= axis_top + step / 2; tick += step) {
    const double y = bar_y(tick);
    s << "<line x1=\"" << svg::num(left) << "\" y1=\"" << svg::num(y) << "\" x2=\"" << svg::num(left + plot_width)
      << "\" y2=\"" << svg::num(y) << "\" stroke=\"#e0e0e0\" stroke-width=\"1\"/>\n";
    svg::text(s, left - 6, y + 4, svg::label(tick), 10, "end");
  }
  for (int e = 0; e < experts; ++e) {
    const double count = double(counts[std::size_t(e)]);
    if (count == 0) continue;
    s << "<rect class=\"bar\" x=\"" << svg::num(left + (e + 0.1) * column) << "\" y=\"" << svg::num(bar_y(count))
      << "\" width=\"" << svg::num(column * 0.8) << "\" height=\"" << svg::num(bars_bottom - bar_y(count))
      << "\" fill=\"" << svg::kBarHex << "\"><title>expert " << e << ": " << counts[std::size_t(e)]
      << " tokens</title></rect>\n";
  }
  s << "<line x1=\"" << svg::num(left) << "\" y1=\"" << svg::num(bars_bottom) << "\" x2=\""
    << svg::num(left + plot_width) << "\" y2=\"" << svg::num(bars_bottom) << "\" stroke=\"#000000\"/>\n";
  s << "<line x1=\"" << svg::num(left) << "\" y1=\"" << svg::num(bars_top) << "\" x2=\"" << svg::num(left) << "\" y2=\""
    << svg::num(bars_bottom) << "\" stroke=\"#000000\"/>\n";
  svg::text(s, 28, (bars_top + bars_bottom) / 2, "tokens", 11, "middle",
            " transform=\"rotate(-90 28 " + svg::num((bars_top + bars_bottom) / 2) + ")\"");
  if (stats.assignments() > 0) {
    const double mean = double(stats.assignments()) / experts;
    const double y = bar_y(mean);
    s << "<line x1=\"" << svg::num(left) << "\" y1=\"" << svg::num(y) << "\" x2=\"" << svg::num(left + plot_width)
      << "\" y2=\"" << svg::num(y) << "\" stroke=\"" << svg::kMeanHex
      << "\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>\n";
  } else {
    svg::text(s, left + plot_width / 2, bars_top + bars_height / 2, "no assignments yet", 12, "middle");
  }
  expert_axis(bars_bottom);

  // ---- heatmap ----
  if (shown == 0) {
    svg::text(s, left, heat_top - 12, "No tokens to show", 13, "start", " font-weight=\"bold\"");
    s << "</svg>\n";
    out << s.str();
    return;
  }
  svg::text(s, left, heat_top - 22,
            "Routing weights, first " + std::to_string(shown) + " of " + std::to_string(tokens) + " tokens", 13,
            "start", " font-weight=\"bold\"");
  svg::text(s, drop_x + drop_width / 2, heat_top - 5, "drop", 9, "middle");
  s << "<rect x=\"" << svg::num(left) << "\" y=\"" << svg::num(heat_top) << "\" width=\"" << svg::num(plot_width)
    << "\" height=\"" << svg::num(heat_bottom - heat_top) << "\" fill=\"#ffffff\" stroke=\"#bbbbbb\"/>\n";
  s << "<rect x=\"" << svg::num(drop_x) << "\" y=\"" << svg::num(heat_top) << "\" width=\"" << svg::num(drop_width)
    << "\" height=\"" << svg::num(heat_bottom - heat_top) << "\" fill=\"#ffffff\" stroke=\"#bbbbbb\"/>\n";
  // A one-pixel gap between cells large enough to spare it keeps neighbouring tokens and experts apart.
  const double cell_width = column >= 6 ? column - 1 : column, cell_height = row >= 6 ? row - 1 : row;
  for (Index t = 0; t < shown; ++t) {
    const double y = heat_top + double(t) * row;
    int dropped = 0;
    for (int j = 0; j < slots; ++j) {
      const int id = ids[t * slots + j];
      if (id == kDroppedExpert) ++dropped;
      if (id < 0) continue;
      s << "<rect class=\"cell\" x=\"" << svg::num(left + id * column) << "\" y=\"" << svg::num(y) << "\" width=\""
        << svg::num(cell_width) << "\" height=\"" << svg::num(cell_height) << "\" fill=\""
        << svg::ramp(double(weights[t * slots + j]) / scale_top) << "\"/>\n";
    }
    if (dropped > 0)
      s << "<rect class=\"drop\" x=\"" << svg::num(drop_x) << "\" y=\"" << svg::num(y) << "\" width=\""
        << svg::num(drop_width) << "\" height=\"" << svg::num(cell_height) << "\" fill=\"" << svg::kDroppedHex
        << "\"><title>token " << t << ": " << dropped << " dropped</title></rect>\n";
  }
  const int token_label_every = svg::power_of_two_at_least(12.0 / row);
  for (Index t = 0; t < shown; t += token_label_every)
    svg::text(s, left - 4, heat_top + (double(t) + 0.5) * row + 3.5, std::to_string(t), 9, "end");
  svg::text(s, 28, (heat_top + heat_bottom) / 2, "token", 11, "middle",
            " transform=\"rotate(-90 28 " + svg::num((heat_top + heat_bottom) / 2) + ")\"");
  expert_axis(heat_bottom);

  // ---- legend: the weight scale, and the two markers ----
  const double legend_y = heat_bottom + 44;
  svg::text(s, left, legend_y + 10, "weight", 11, "start");
  s << "<rect x=\"" << svg::num(left + 48) << "\" y=\"" << svg::num(legend_y) << "\" width=\"160\" height=\"12\" "
    << "fill=\"url(#moe-weight-scale)\" stroke=\"#bbbbbb\"/>\n";
  svg::text(s, left + 48, legend_y + 26, "0", 10, "middle");
  svg::text(s, left + 128, legend_y + 26, svg::label(scale_top / 2), 10, "middle");
  svg::text(s, left + 208, legend_y + 26, svg::label(scale_top), 10, "middle");
  s << "<rect x=\"" << svg::num(left + 236) << "\" y=\"" << svg::num(legend_y)
    << "\" width=\"12\" height=\"12\" fill=\"" << svg::kDroppedHex << "\"/>\n";
  svg::text(s, left + 252, legend_y + 10, "dropped (capacity)", 11, "start");
  s << "<rect x=\"" << svg::num(left + 372) << "\" y=\"" << svg::num(legend_y)
    << "\" width=\"12\" height=\"12\" fill=\"#ffffff\" stroke=\"#bbbbbb\"/>\n";
  svg::text(s, left + 388, legend_y + 10, "not selected", 11, "start");
  s << "</svg>\n";
  out << s.str();
}

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

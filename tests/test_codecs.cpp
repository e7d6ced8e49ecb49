// tests/test_codecs.cpp: the weight precisions' codes: f16, bf16, e4m3 and E2M1 conversions by their
// definitions, and every precision's round trip within its step.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <moe/detail/small_floats.hpp>

#include "kernel_check.hpp"

using kernel_check::bits_float;
using kernel_check::random_vector;

namespace {

// f16 by its definition: sign, 5-bit exponent (bias 15), 10-bit fraction, subnormals below 2^-14.
double f16_value(std::uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 10) & 31, fraction = h & 1023;
  const double magnitude = exponent == 0 ? std::ldexp(fraction, -24) : std::ldexp(1024 + fraction, exponent - 25);
  return sign ? -magnitude : magnitude;
}

// e4m3fn by its definition (OCP 8-bit floating point, E4M3): sign, 4-bit exponent (bias 7), 3-bit fraction,
// subnormals below 2^-6, no infinities, S.1111.111 is NaN.
double e4m3_value(std::uint8_t c) {
  const int sign = c >> 7, exponent = (c >> 3) & 15, fraction = c & 7;
  const double magnitude = exponent == 0 ? std::ldexp(fraction, -9) : std::ldexp(8 + fraction, exponent - 10);
  return sign ? -magnitude : magnitude;
}

}  // namespace

TEST_CASE("e4m3 decodes every code by its definition") {
  for (std::uint32_t c = 0; c < 256; ++c) {
    const std::uint8_t code = std::uint8_t(c);
    const float value = moe::detail::e4m3_to_float(code);
    CHECK(moe::detail::e4m3_is_nan(code) == ((c & 0x7f) == 0x7f));
    if ((c & 0x7f) == 0x7f) {
      CHECK(std::isnan(value));
      continue;
    }
    REQUIRE(double(value) == e4m3_value(code));
    REQUIRE(std::signbit(value) == bool(c & 0x80));  // 0x80 is -0
  }
  CHECK(moe::detail::e4m3_to_float(0x7e) == moe::detail::kE4m3Max);
  CHECK(moe::detail::e4m3_to_float(0x38) == 1.0f);
  CHECK(moe::detail::e4m3_to_float(0x01) == std::ldexp(1.0f, -9));
  CHECK(moe::detail::e4m3_to_float(0xfe) == -448.0f);
}

TEST_CASE("MXFP4: E2M1 decodes every code by its definition, E8M0 is a power of two with 0xff NaN") {
  for (std::uint32_t c = 0; c < 16; ++c) {
    // sign, 2 exponent bits of bias 1, 1 mantissa bit; exponent 0 is subnormal: m / 2.
    const std::uint32_t e = (c >> 1) & 3, m = c & 1;
    const double magnitude = e == 0 ? m / 2.0 : (1.0 + m / 2.0) * std::ldexp(1.0, int(e) - 1);
    const float value = moe::detail::e2m1_to_float(std::uint8_t(c));
    CHECK(double(std::fabs(value)) == magnitude);
    CHECK(std::signbit(value) == bool(c & 8));
    CHECK(moe::detail::e2m1_to_float(std::uint8_t(c | 0xf0)) == value);  // the high nibble is not read
  }
  CHECK(moe::detail::e2m1_to_float(7) == 6.0f);
  for (int c = 0; c < 255; ++c) CHECK(moe::detail::e8m0_exponent(std::uint8_t(c)) == c - 127);
  CHECK(moe::detail::e8m0_is_nan(0xff));
  CHECK(!moe::detail::e8m0_is_nan(0xfe));
}

namespace {

// The e4m3 code nearest to x by search over every code's value, ties to the even code, saturating at 448.
std::uint8_t e4m3_nearest(double x) {
  const double a = std::min(std::fabs(x), 448.0);
  int best = 0;
  for (int c = 1; c < 0x7f; ++c) {
    const double d = std::fabs(e4m3_value(std::uint8_t(c)) - a), b = std::fabs(e4m3_value(std::uint8_t(best)) - a);
    if (d < b || (d == b && c % 2 == 0)) best = c;
  }
  return std::uint8_t(best | (std::signbit(x) ? 0x80 : 0));
}

}  // namespace

TEST_CASE("e4m3 encodes to the nearest code, ties to even, saturating at 448") {
  for (std::uint32_t c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    REQUIRE(moe::detail::float_to_e4m3(moe::detail::e4m3_to_float(std::uint8_t(c))) == c);
  }
  // Midpoints between neighbours go to the even code; just off them, to the nearer.
  for (int c = 0; c < 0x7e; ++c) {
    const double middle = (e4m3_value(std::uint8_t(c)) + e4m3_value(std::uint8_t(c + 1))) / 2;
    CHECK(moe::detail::float_to_e4m3(float(middle)) == (c % 2 == 0 ? c : c + 1));
    CHECK(moe::detail::float_to_e4m3(std::nextafter(float(middle), 0.0f)) == c);
    CHECK(moe::detail::float_to_e4m3(std::nextafter(float(middle), 1000.0f)) == c + 1);
  }
  std::vector<float> xs = kernel_check::random_vector(20000, 7, 3.0f);
  for (float& x : xs) x = x * x * x;  // spread over the binades, both signs
  for (const float x : xs) REQUIRE(moe::detail::float_to_e4m3(x) == e4m3_nearest(x));
  CHECK(moe::detail::float_to_e4m3(448.0f) == 0x7e);
  CHECK(moe::detail::float_to_e4m3(1e9f) == 0x7e);
  CHECK(moe::detail::float_to_e4m3(-500.0f) == 0xfe);
  CHECK(moe::detail::e4m3_is_nan(moe::detail::float_to_e4m3(std::nanf(""))));
}

TEST_CASE("fp8 stores each 128 inputs of a row as the nearest e4m3 codes of w / (max|w| / 448)") {
  const moe::Index rows = 3, cols = 300;  // two whole blocks of 128 and a partial one of 44
  std::vector<float> w = random_vector(std::size_t(rows * cols), 11, 0.3f);
  w[5] = 40.0f;  // an outlier: row 0's first block scale is 40 / 448, its small weights subnormal codes
  for (moe::Index c = 256; c < cols; ++c) w[std::size_t(2 * cols + c)] = 1e-39f;  // a block below FLT_MIN: zeros
  std::vector<float> out(w.size());
  moe::round_trip<moe::fp8>(w.data(), rows, cols, cols, out.data());
  for (moe::Index r = 0; r < rows; ++r) {
    for (moe::Index b = 0; b < cols; b += 128) {
      const moe::Index end = std::min<moe::Index>(b + 128, cols);
      float largest = 0;
      for (moe::Index c = b; c < end; ++c) largest = std::max(largest, std::abs(w[std::size_t(r * cols + c)]));
      const float scale = largest / 448.0f;
      for (moe::Index c = b; c < end; ++c) {
        const float x = w[std::size_t(r * cols + c)];
        const float expected =
            scale < 1.1754943508222875e-38f ? 0.0f : float(e4m3_value(e4m3_nearest(double(x / scale)))) * scale;
        INFO("row " << r << " column " << c << ": " << x);
        REQUIRE(out[std::size_t(r * cols + c)] == expected);
      }
    }
  }
  CHECK(out[5] == 40.0f);
  CHECK(out[std::size_t(2 * cols + 299)] == 0.0f);
}

namespace {

// The E2M1 code nearest to x by search over the 8 magnitudes, ties to the even code (mantissa bit 0),
// saturating at 6.
std::uint8_t e2m1_nearest(double x) {
  const double a = std::min(std::fabs(x), 6.0);
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const double d = std::fabs(double(moe::detail::e2m1_to_float(std::uint8_t(c))) - a);
    const double b = std::fabs(double(moe::detail::e2m1_to_float(std::uint8_t(best))) - a);
    if (d < b || (d == b && c % 2 == 0)) best = c;
  }
  return std::uint8_t(best | (std::signbit(x) ? 8 : 0));
}

}  // namespace

TEST_CASE("E2M1 encodes to the nearest code, ties to even, saturating at 6") {
  // Every multiple of 1/64 in [-8, 8] (every code, every midpoint and points between) and their neighbours.
  for (int i = -512; i <= 512; ++i) {
    for (float x :
         {float(i) / 64.0f, std::nextafter(float(i) / 64.0f, -9.0f), std::nextafter(float(i) / 64.0f, 9.0f)}) {
      INFO("x = " << x);
      REQUIRE(moe::detail::float_to_e2m1(x) == e2m1_nearest(x));
    }
  }
  for (std::uint8_t c = 0; c < 16; ++c) CHECK(moe::detail::float_to_e2m1(moe::detail::e2m1_to_float(c)) == c);
  CHECK(moe::detail::float_to_e2m1(1e30f) == 7);
  CHECK(moe::detail::float_to_e2m1(-std::numeric_limits<float>::infinity()) == 15);
  CHECK(moe::detail::float_to_e2m1(0.25f) == 0);   // tie: down to 0
  CHECK(moe::detail::float_to_e2m1(0.75f) == 2);   // tie: up to 1
  CHECK(moe::detail::float_to_e2m1(5.0f) == 6);    // tie: down to 4
  CHECK(moe::detail::float_to_e2m1(-3.5f) == 14);  // tie: up to -4
}

TEST_CASE("mxfp4 stores each 32 inputs of a row as E2M1 codes of w / 2^s, s the least with max|w| <= 6 * 2^s") {
  const moe::Index rows = 4, cols = 77;  // two whole blocks and a partial one
  std::vector<float> w = random_vector(std::size_t(rows * cols), 11, 0.3f);
  w[5] = 0.0f;
  w[40] = 6.0f;                                                            // row 0, block 1: s = 0 exactly
  for (moe::Index c = 64; c < 77; ++c) w[std::size_t(cols + c)] = 3e-39f;  // row 1's last block: subnormal weights
  std::vector<float> out(w.size());
  moe::round_trip<moe::mxfp4>(w.data(), rows, cols, cols, out.data());
  for (moe::Index r = 0; r < rows; ++r) {
    for (moe::Index b = 0; b < cols; b += 32) {
      const moe::Index end = std::min<moe::Index>(b + 32, cols);
      double largest = 0;
      for (moe::Index c = b; c < end; ++c) largest = std::max(largest, std::fabs(double(w[std::size_t(r * cols + c)])));
      int s = -127;  // the definition, by search
      while (largest > std::ldexp(6.0, s)) ++s;
      for (moe::Index c = b; c < end; ++c) {
        const double x = w[std::size_t(r * cols + c)];
        const double expected = std::ldexp(double(moe::detail::e2m1_to_float(e2m1_nearest(std::ldexp(x, -s)))), s);
        INFO("row " << r << " column " << c << ": " << x << ", s = " << s);
        REQUIRE(double(out[std::size_t(r * cols + c)]) == expected);
        // The bound precisions/mxfp4.hpp states.
        REQUIRE(std::fabs(expected - x) <= std::max({std::fabs(x) / 4, largest / 12, std::ldexp(1.0, -129)}));
      }
    }
  }
  CHECK(out[5] == 0.0f);
  CHECK(out[40] == 6.0f);
  CHECK(out[std::size_t(cols + 70)] == std::ldexp(1.0f, -128));  // 3e-39 / 2^-127 = 0.51: the code 0.5
}

TEST_CASE("mxfp4 packs published MXFP4 values, decoded to f32, back into the same values") {
  // Random blocks of codes under scales from E8M0's smallest to the largest mxfp4 stores, one block with
  // every code, one of zeros, blocks whose largest code is each of 0.5 .. 6.
  std::uint32_t state = 12345;
  auto next = [&state] { return state = state * 1664525u + 1013904223u; };
  for (int trial = 0; trial < 4000; ++trial) {
    const int e = trial < 253 ? trial : int(next() >> 24) % 253;  // E8M0 0 .. 252
    std::uint8_t codes[32];
    const int top = trial % 8;  // the largest magnitude index in the block
    for (int i = 0; i < 32; ++i) codes[i] = std::uint8_t((next() >> 20) % 16);
    for (int i = 0; i < 32; ++i) codes[i] = std::uint8_t((codes[i] & 8) | std::min(codes[i] & 7, top));
    codes[trial % 32] = std::uint8_t(top | (codes[trial % 32] & 8));
    if (trial == 0)
      for (int i = 0; i < 32; ++i) codes[i] = std::uint8_t(i % 16);
    float w[32], out[32];
    for (int i = 0; i < 32; ++i) w[i] = std::ldexp(moe::detail::e2m1_to_float(codes[i]), e - 127);
    moe::round_trip<moe::mxfp4>(w, 1, 32, 32, out);
    for (int i = 0; i < 32; ++i) {
      INFO("trial " << trial << " E8M0 " << e << " code " << int(codes[i]));
      REQUIRE(out[i] == w[i]);
    }
  }
}

TEST_CASE("f16 decodes every code by its definition and re-encodes it exactly") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const std::uint16_t code = std::uint16_t(h);
    const float value = moe::f16::decode(code);
    if (((h >> 10) & 31) == 31) {
      CHECK(((h & 1023) ? std::isnan(value) : std::isinf(value)));
      continue;
    }
    REQUIRE(double(value) == f16_value(code));
    REQUIRE(moe::f16::encode(value) == code);
  }
}

TEST_CASE("f16 rounds to nearest even, overflows to Inf, keeps subnormals") {
  // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties go to the even code (1).
  CHECK(moe::f16::encode(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);
  CHECK(moe::f16::encode(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);  // tie to even upwards
  CHECK(moe::f16::encode(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);
  CHECK(moe::f16::encode(65504.0f) == 0x7bff);
  CHECK(moe::f16::encode(65519.0f) == 0x7bff);
  CHECK(moe::f16::encode(65520.0f) == 0x7c00);
  CHECK(moe::f16::encode(-1e9f) == 0xfc00);
  CHECK(moe::f16::encode(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(moe::f16::encode(std::ldexp(1.0f, -25)) == 0x0000);  // tie between 0 and the smallest: even
  CHECK(moe::f16::encode(std::ldexp(3.0f, -25)) == 0x0002);
  CHECK(std::isnan(moe::f16::decode(moe::f16::encode(std::nanf("")))));
}

TEST_CASE("bf16 keeps the top half of f32, rounded to nearest even") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float value = moe::bf16::decode(std::uint16_t(h));
    if (std::isnan(value)) continue;
    REQUIRE(moe::bf16::encode(value) == h);
    REQUIRE(value == bits_float(h << 16));
  }
  CHECK(moe::bf16::encode(bits_float(0x3f808000u)) == 0x3f80);  // tie: even
  CHECK(moe::bf16::encode(bits_float(0x3f818000u)) == 0x3f82);  // tie: even upwards
  CHECK(moe::bf16::encode(bits_float(0x3f808001u)) == 0x3f81);
  CHECK(std::isnan(moe::bf16::decode(moe::bf16::encode(std::nanf("")))));
}

TEST_CASE_TEMPLATE("a round trip stays within the precision's step", P, moe::bf16, moe::f16, moe::q8, moe::q4) {
  const moe::Index rows = 5, cols = 77;  // 77: two whole q4 blocks and a partial one
  std::vector<float> w = random_vector(std::size_t(rows * cols), 3, 0.7f);
  w[10] = 0.0f;
  w[11] = -3.5f;  // an outlier that sets row 0's scales
  std::vector<float> out(w.size());
  moe::round_trip<P>(w.data(), rows, cols, cols, out.data());
  for (moe::Index r = 0; r < rows; ++r) {
    for (moe::Index c = 0; c < cols; ++c) {
      const float x = w[std::size_t(r * cols + c)], y = out[std::size_t(r * cols + c)];
      float step;  // the largest error the format allows for x
      if (std::is_same<P, moe::bf16>::value) {
        step = std::ldexp(std::abs(x), -8);
      } else if (std::is_same<P, moe::f16>::value) {
        step = std::ldexp(std::abs(x), -11) + std::ldexp(1.0f, -25);
      } else {
        const moe::Index begin = std::is_same<P, moe::q4>::value ? c / 32 * 32 : 0;
        const moe::Index end = std::is_same<P, moe::q4>::value ? std::min<moe::Index>(begin + 32, cols) : cols;
        float largest = 0;
        for (moe::Index i = begin; i < end; ++i) largest = std::max(largest, std::abs(w[std::size_t(r * cols + i)]));
        // Half a quantisation step; for q4 also the f16 rounding of the scale (7 steps of 2^-11 each).
        step = std::is_same<P, moe::q8>::value ? largest / 254.0f * 1.0001f
                                               : largest / 7.0f * (0.5f + 8 * std::ldexp(1.0f, -11));
      }
      INFO("row " << r << " column " << c << ": " << x << " -> " << y);
      REQUIRE(std::abs(y - x) <= step);
    }
  }
  // Zero stays zero, and a round trip of a round trip changes nothing (for q8 the recomputed scale
  // fl(127 s) / 127 may differ from s in its last bit, so there only within one step).
  CHECK(out[10] == 0.0f);
  std::vector<float> again(out.size());
  moe::round_trip<P>(out.data(), rows, cols, cols, again.data());
  if (!std::is_same<P, moe::q8>::value) CHECK(again == out);
  // A row (or block) below FLT_MIN is stored as zeros, never NaN.
  std::vector<float> tiny(static_cast<std::size_t>(cols), 1e-39f), tiny_out(static_cast<std::size_t>(cols));
  moe::round_trip<P>(tiny.data(), 1, cols, cols, tiny_out.data());
  for (float v : tiny_out) REQUIRE(std::isfinite(v));
  CHECK_THROWS_WITH_AS(moe::round_trip<P>(std::vector<float>{1.0f, std::nanf("")}.data(), 1, 2, 2, tiny_out.data()),
                       doctest::Contains("w has NaN or Inf at (0, 1)"), moe::Error);
}

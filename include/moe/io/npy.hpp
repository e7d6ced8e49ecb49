// moe/io/npy.hpp: tokens x hidden matrices as NumPy .npy files (float32 or float16 in, float32 out).
//
// The format (numpy.lib.format): the magic "\x93NUMPY", a version byte pair (1.0, 2.0 or 3.0), the header's
// length (2 bytes little-endian in 1.0, 4 bytes after), the header: a Python dict literal
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// padded with spaces and ended by '\n', then the data, C order. We read what np.save writes for a 2-D
// float32 or float16 array and refuse everything else with a one-line message naming the file:
// other dtypes, big-endian data, Fortran order, a shape that is not 2-D, data shorter or longer than the
// shape says. A reader of our own, not a Python parser: strings, True/False, tuples of integers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../detail/half_floats.hpp"
#include "file.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace io {

// A 2-D float array, row-major: shape {rows, cols}, data rows * cols floats.
struct NpyArray {
  std::vector<Index> shape;
  std::vector<float> data;
};

namespace detail {

// The dict literal of an .npy header, read by hand: {'key': value, ...} with string, True/False and tuple
// values, an optional trailing comma, whitespace anywhere between tokens.
class NpyHeaderReader {
public:
  NpyHeaderReader(const std::string& text, const std::string& name) : text_(text), name_(name) {}

  void read(std::string& descr, bool& fortran_order, std::vector<Index>& shape) {
    bool seen_descr = false, seen_order = false, seen_shape = false;
    expect('{');
    for (;;) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = string_literal("a key");
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        once(seen_descr, key);
        if (peek() == '[') problem("has a structured dtype (descr is a list); expected '<f4' or '<f2'");
        descr = string_literal("descr's value");
      } else if (key == "fortran_order") {
        once(seen_order, key);
        fortran_order = boolean();
      } else if (key == "shape") {
        once(seen_shape, key);
        shape = tuple();
      } else {
        problem("has an unexpected key '" + quoted_text(key, true) + "' in its header");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != '}') syntax("',' or '}'");
    }
    ++pos_;
    skip_space();
    if (pos_ != text_.size()) syntax("the end of the header after '}'");
    if (!seen_descr) problem("has no 'descr' in its header");
    if (!seen_order) problem("has no 'fortran_order' in its header");
    if (!seen_shape) problem("has no 'shape' in its header");
  }

private:
  [[noreturn]] void problem(const std::string& what) const { fail("io::parse_npy", name_ + " " + what); }
  [[noreturn]] void syntax(const std::string& expected) const {
    const std::string found =
        pos_ < text_.size() ? "'" + quoted_text(text_.substr(pos_, 1), true) + "'" : std::string("the end");
    problem("has a malformed header: expected " + expected + " at byte " + std::to_string(pos_) + ", found " + found);
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    if (peek() != c) syntax(std::string("'") + c + "'");
    ++pos_;
  }
  void once(bool& seen, const std::string& key) {
    if (seen) problem("has '" + key + "' twice in its header");
    seen = true;
  }
  // 'text' or "text"; no escapes (no header np.save writes has any).
  std::string string_literal(const char* what) {
    const char quote = peek();
    if (quote != '\'' && quote != '"') syntax(std::string(what) + " in quotes");
    const std::size_t start = ++pos_;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\') syntax(std::string(what) + " without backslash escapes");
      ++pos_;
    }
    if (pos_ >= text_.size()) syntax("a closing quote");
    return text_.substr(start, pos_++ - start);
  }
  bool boolean() {
    for (const bool value : {true, false}) {
      const char* word = value ? "True" : "False";
      const std::size_t length = value ? 4 : 5;
      if (text_.compare(pos_, length, word) == 0) {
        pos_ += length;
        return value;
      }
    }
    syntax("True or False for 'fortran_order'");
  }
  // (d0, d1, ...) with an optional trailing comma; Python 2's "3L" is accepted.
  std::vector<Index> tuple() {
    std::vector<Index> dims;
    expect('(');
    for (;;) {
      skip_space();
      if (peek() == ')') break;
      if (peek() == '-') problem("has a negative dimension in its shape");
      if (peek() < '0' || peek() > '9') syntax("a dimension (a non-negative integer) in 'shape'");
      Index d = 0;
      while (peek() >= '0' && peek() <= '9') {
        const int digit = peek() - '0';
        if (d > (std::numeric_limits<Index>::max() - digit) / 10) problem("has a dimension too large to represent");
        d = d * 10 + digit;
        ++pos_;
      }
      if (peek() == 'L') ++pos_;
      if (dims.size() >= 64) problem("has more than 64 dimensions");
      dims.push_back(d);
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != ')') syntax("',' or ')' in 'shape'");
    }
    ++pos_;
    return dims;
  }

  const std::string& text_;
  const std::string& name_;
  std::size_t pos_ = 0;
};

inline std::string npy_shape_text(const std::vector<Index>& shape) {
  std::string text;
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? " x " : "") + std::to_string(shape[i]);
  return text;
}

}  // namespace detail

// Reads an .npy file held in memory; `name` (the path) is what error messages call it.
inline NpyArray parse_npy(const unsigned char* bytes, std::size_t size, const std::string& name) {
  const char* where = "io::parse_npy";
  static const unsigned char kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  MOE_CHECK(size >= 10 && std::memcmp(bytes, kMagic, 6) == 0, where,
            name + " is not an .npy file (it does not start with \"\\x93NUMPY\" and a header length)");
  const int major = bytes[6], minor = bytes[7];
  MOE_CHECK((major == 1 || major == 2 || major == 3) && minor == 0, where,
            name + " has .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                ", which is not supported (expected 1.0, 2.0 or 3.0)");
  const std::size_t preamble = major == 1 ? 10 : 12;
  MOE_CHECK(size >= preamble, where, name + " is truncated: it ends inside its header length");
  const std::uint64_t header_size = major == 1 ? detail::load_le16(bytes + 8) : detail::load_le32(bytes + 8);
  MOE_CHECK(header_size <= size - preamble, where,
            name + " is truncated: its header is " + std::to_string(header_size) + " bytes but only " +
                std::to_string(size - preamble) + " follow the header length");
  const std::string header(reinterpret_cast<const char*>(bytes + preamble), std::size_t(header_size));

  std::string descr;
  bool fortran_order = false;
  std::vector<Index> shape;
  detail::NpyHeaderReader(header, name).read(descr, fortran_order, shape);

  // '<' is little-endian; '=' (native) and '|' (not applicable) mean the same for the files np.save writes on
  // the little-endian machines everyone has, and numpy itself reads '|f4' as native.
  std::size_t item = 0;
  if (descr == "<f4" || descr == "=f4" || descr == "|f4") item = 4;
  if (descr == "<f2" || descr == "=f2" || descr == "|f2") item = 2;
  MOE_CHECK(descr != ">f4" && descr != ">f2", where,
            name + " has big-endian data (dtype '" + descr + "'); expected little-endian '<f4' or '<f2'");
  MOE_CHECK(item != 0, where,
            name + " has dtype '" + detail::quoted_text(descr, true) +
                "', which is not supported (expected '<f4' float32 or '<f2' float16: save x.astype(np.float32))");
  MOE_CHECK(!fortran_order, where, name + " is in Fortran order; expected C order (save np.ascontiguousarray(x))");
  MOE_CHECK(shape.size() == 2, where,
            name + " is " + std::to_string(shape.size()) + "-D" +
                (shape.empty() ? std::string(" (a scalar)") : " (" + detail::npy_shape_text(shape) + ")") +
                "; expected tokens x hidden");

  const std::size_t data_size = size - preamble - std::size_t(header_size);
  const char* type = item == 4 ? "float32" : "float16";
  const std::string declared = "its shape " + detail::npy_shape_text(shape) + " of " + type;
  std::uint64_t needed = 0;
  MOE_CHECK(detail::checked_product({std::uint64_t(shape[0]), std::uint64_t(shape[1]), item}, needed), where,
            name + ": " + declared + " is too large (its byte count overflows 64 bits)");
  MOE_CHECK(needed <= data_size, where,
            name + " is truncated: " + declared + " needs " + std::to_string(needed) + " bytes of data, but only " +
                std::to_string(data_size) + " follow the header");
  MOE_CHECK(needed == data_size, where,
            name + " has " + std::to_string(data_size - needed) + " trailing bytes after the " +
                std::to_string(needed) + " bytes of data " + declared + " declares");
  const std::size_t count = std::size_t(needed) / item;

  NpyArray array;
  array.shape = shape;
  array.data.resize(count);
  const unsigned char* data = bytes + preamble + header_size;
  if (item == 4) {
    for (std::size_t i = 0; i < count; ++i) array.data[i] = ::moe::detail::bits_float(detail::load_le32(data + 4 * i));
  } else {
    for (std::size_t i = 0; i < count; ++i)
      array.data[i] = ::moe::detail::f16_to_float(detail::load_le16(data + 2 * i));
  }
  return array;
}

// Reads an .npy file: a 2-D float32 or float16 array (tokens x hidden), returned as float32.
inline NpyArray read_npy(const std::string& path) {
  const detail::MappedFile file(path, "io::read_npy");
  return parse_npy(file.data(), file.size(), path);
}

// Writes rows x cols floats, row-major, as a float32 C-order .npy (version 1.0, what np.save writes). All or
// nothing: a failure leaves no partial file behind, and an existing file at `path` stays as it was.
inline void write_npy(const std::string& path, const float* data, Index rows, Index cols) {
  const char* where = "io::write_npy";
  MOE_CHECK(rows >= 0 && cols >= 0, where,
            "cannot write " + path + ": negative shape " + std::to_string(rows) + " x " + std::to_string(cols));
  MOE_CHECK(
      cols == 0 || std::uint64_t(rows) <= std::uint64_t(std::numeric_limits<Index>::max()) / 4 / std::uint64_t(cols),
      where,
      "cannot write " + path + ": shape " + std::to_string(rows) + " x " + std::to_string(cols) + " is too large");
  MOE_CHECK(data != nullptr || rows * cols == 0, where, "cannot write " + path + ": data is null");

  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  // Pad with spaces so that the data starts at a multiple of 64 bytes (numpy's alignment), then '\n'.
  header.append(63 - (10 + header.size()) % 64, ' ');
  header += '\n';
  unsigned char preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
  preamble[8] = static_cast<unsigned char>(header.size() & 0xff);
  preamble[9] = static_cast<unsigned char>(header.size() >> 8);

  detail::AtomicFileWriter out(path, where);
  out.write(preamble, sizeof preamble);
  out.write(header.data(), header.size());
  // Little-endian on any host, 64 KiB at a time.
  constexpr std::size_t kChunk = 16384;
  std::vector<unsigned char> buffer(4 * kChunk);
  const std::size_t count = std::size_t(rows) * std::size_t(cols);
  for (std::size_t start = 0; start < count; start += kChunk) {
    const std::size_t n = count - start < kChunk ? count - start : kChunk;
    for (std::size_t i = 0; i < n; ++i)
      detail::store_le32(buffer.data() + 4 * i, ::moe::detail::float_bits(data[start + i]));
    out.write(buffer.data(), 4 * n);
  }
  out.commit();
}

}  // namespace io
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

// moe/precision.hpp: weight storage precisions as tag types.
//
// A precision says how one weight is stored and how the kernels turn a run of stored weights back
// into f32 lanes. The layer and the packing code only talk to these members, so adding a precision
// (bf16, f16, int8, int4) means adding a tag here and its load in the kernels, not touching the layer.
#pragma once

#include <cstddef>

namespace moe {

// f32 storage: 4 bytes a weight, loaded as is.
struct f32 {
  using Storage = float;
  static constexpr const char* kName = "f32";
  static constexpr double kBytesPerWeight = 4.0;

  static constexpr Storage encode(float value) { return value; }
  static constexpr float decode(Storage stored) { return stored; }
};

// The precision's name, for logs, benchmarks and the CLI.
template <class Precision>
constexpr const char* TypeName() {
  return Precision::kName;
}

template <class Precision>
struct is_supported_precision {
  static constexpr bool value = false;
};
template <>
struct is_supported_precision<f32> {
  static constexpr bool value = true;
};

}  // namespace moe

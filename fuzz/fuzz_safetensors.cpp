// fuzz/fuzz_safetensors.cpp: libFuzzer target for parse_safetensors (fuzz/run.sh builds and runs it). Any
// input may be refused with a moe::Error; anything else (another exception, a crash, a sanitizer report, a
// broken promise checked below) is a finding. Every accepted tensor is read whole, so ASan sees any view
// that reaches outside the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <moe/io/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const std::vector<moe::io::TensorView> tensors = moe::io::parse_safetensors(data, size, "fuzz.safetensors");
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const moe::io::TensorView& t = tensors[i];
      if (t.name == "__metadata__" || t.file != "fuzz.safetensors") std::abort();
      if (i > 0 && !(tensors[i - 1].name < t.name)) std::abort();  // sorted, unique
      if (t.data < data || t.bytes > size || t.data + t.bytes > data + size) std::abort();
      const moe::Index n = t.elements();
      if (n < 0 || std::size_t(n) * moe::io::dtype_size(t.dtype) != t.bytes) std::abort();
      std::vector<float> out(std::size_t(n) + 1, 0.0f);
      out.back() = 42.0f;  // to_float writes exactly n floats
      moe::io::to_float(t, out.data());
      if (out.back() != 42.0f) std::abort();
      if (const float* direct = moe::io::as_f32_if_possible(t)) {
        volatile float sum = 0.0f;
        for (moe::Index k = 0; k < n; ++k) sum = sum + direct[k];
      }
      // No two non-empty tensors share a byte.
      for (std::size_t j = 0; j < i; ++j) {
        const moe::io::TensorView& u = tensors[j];
        if (t.bytes > 0 && u.bytes > 0 && t.data < u.data + u.bytes && u.data < t.data + t.bytes) std::abort();
      }
    }
  } catch (const moe::Error& e) {
    const std::string message = e.what();
    if (message.rfind("moe::io::parse_safetensors: fuzz.safetensors", 0) != 0 ||
        message.find('\n') != std::string::npos)
      std::abort();
  }
  return 0;
}

// fuzz/fuzz_npy.cpp: libFuzzer target for parse_npy (fuzz/run.sh builds and runs it). Any input may be
// refused with a moe::Error; anything else (another exception, a crash, a sanitizer report, a broken
// promise checked below) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include <moe/io/npy.hpp>

namespace {

// A refusal must be one line that names the function and the file.
void check_message(const char* what) {
  const std::string message = what;
  if (message.rfind("moe::io::parse_npy: ", 0) != 0 || message.find("fuzz.npy") == std::string::npos ||
      message.find('\n') != std::string::npos)
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const moe::io::NpyArray a = moe::io::parse_npy(data, size, "fuzz.npy");
    // Accepted: 2-D, and as many floats as the shape says, each from bytes inside the input.
    if (a.shape.size() != 2 || a.shape[0] < 0 || a.shape[1] < 0) std::abort();
    if (a.data.size() != std::size_t(a.shape[0]) * std::size_t(a.shape[1])) std::abort();
    if (a.data.size() * 2 > size) std::abort();
    volatile float sum = 0.0f;
    for (const float x : a.data) sum = sum + x;
  } catch (const moe::Error& e) {
    check_message(e.what());
  }
  return 0;
}

// The target namespace (moe/target.hpp) and the CPU's features (moe/cpu.hpp).
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <typeinfo>

#include <moe/cpu.hpp>
#include <moe/layer.hpp>

#if MOE_TEST_TARGET_PAIR
// tests/target/layer_type_name.cpp, compiled for the architecture's baseline and for a later target.
const char* layer_type_name_baseline();
const char* layer_type_name_later();
const char* target_name_baseline();
const char* target_name_later();
#endif

TEST_CASE("the target's name is in every moe type's mangled name") {
  const std::string name = moe::target::kName;
  CHECK(std::string(typeid(moe::Layer<8, 2>).name()).find(name) != std::string::npos);
  // What moe shares across targets is not in it: one catch (moe::Error) serves every target.
  CHECK(std::string(typeid(moe::Error).name()).find(name) == std::string::npos);
#if defined(MOE_DONT_VECTORIZE)
  CHECK(name.rfind("scalar", 0) == 0);
#elif defined(__AVX512BW__)
  CHECK(name.rfind("avx512bw", 0) == 0);
#elif defined(__AVX2__)
  CHECK(name.rfind("avx2", 0) == 0);
#elif defined(__x86_64__)
  CHECK(name.rfind("sse", 0) == 0);
#elif defined(__aarch64__)
  CHECK(name.rfind("neon64", 0) == 0);
#endif
#if defined(__AVX512BF16__) && !defined(MOE_DONT_VECTORIZE)
  CHECK(name.find("_bf16") != std::string::npos);
#endif
#if defined(__ARM_FEATURE_DOTPROD) && !defined(MOE_DONT_VECTORIZE)
  CHECK(name.find("_dotprod") != std::string::npos);
#endif
}

#if MOE_TEST_TARGET_PAIR
TEST_CASE("two targets' translation units give moe::Layer different mangled names") {
  const std::string baseline = target_name_baseline(), later = target_name_later();
  INFO("baseline target " << baseline << ", later target " << later);
  CHECK(baseline != later);
  const std::string baseline_layer = layer_type_name_baseline(), later_layer = layer_type_name_later();
  CHECK(baseline_layer != later_layer);
  CHECK(baseline_layer.find(baseline) != std::string::npos);
  CHECK(later_layer.find(later) != std::string::npos);
}
#endif

TEST_CASE("the CPU running the tests has every feature their target uses") {
  // The tests run only where the CPU has the target (.ci/run); cpu::has must then find each feature
  // target::kFeatures lists, which also checks that both spell them alike.
  for (const char* const* feature = moe::target::kFeatures; *feature != nullptr; ++feature) {
    bool known = false;
    for (const moe::cpu::Feature* f = moe::cpu::kDetectable; f->name != nullptr; ++f)
      known |= std::strcmp(f->name, *feature) == 0;
    INFO("feature " << *feature);
    CHECK(known);
    if (moe::cpu::kCanTell) CHECK(moe::cpu::has(*feature));
  }
  char missing[64];
  CHECK(moe::cpu::missing(moe::target::kFeatures, missing, sizeof missing) == 0);
  CHECK(std::string(missing).empty());
  CHECK_FALSE(moe::cpu::has("no-such-feature"));

  // missing() lists what the CPU lacks, space-separated, and counts what did not fit.
  const char* const unknown[] = {"no-such-feature", "nor-this-one", nullptr};
  if (moe::cpu::kCanTell) {
    CHECK(moe::cpu::missing(unknown, missing, sizeof missing) == 2);
    CHECK(std::string(missing) == "no-such-feature nor-this-one");
    char small[20];
    CHECK(moe::cpu::missing(unknown, small, sizeof small) == 2);
    CHECK(std::string(small) == "no-such-feature");
  }
}

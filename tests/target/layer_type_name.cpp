// Compiled twice into moe-tests, once for the architecture's baseline and once for a later target
// (CMakeLists.txt names them), each time with its own MOE_TEST_TARGET suffix on the two functions: what
// moe::Layer is called, mangled, in a translation unit of that target, and the target's name.
#include <typeinfo>

#include <moe/layer.hpp>

#define MOE_TEST_PASTE_(a, b) a##b
#define MOE_TEST_PASTE(a, b) MOE_TEST_PASTE_(a, b)

const char* MOE_TEST_PASTE(layer_type_name_, MOE_TEST_TARGET)() { return typeid(moe::Layer<8, 2>).name(); }
const char* MOE_TEST_PASTE(target_name_, MOE_TEST_TARGET)() { return moe::target::kName; }

// moe/io/json_util.hpp: typed, checked reads of JSON objects (a model's config.json), whose errors name the
// file and the key:
//   moe::io::json_get: config.json: key 'hidden_size' is missing
//   moe::io::json_get: config.json: key 'hidden_size' has the wrong type (expected an integer, got string)
//   moe::io::json_get: config.json: key 'n_shared_experts' = -1 is out of range (expected an integer in [0, 65536])
// T is bool, std::string, an integer type (a JSON integer that fits T) or float / double (any JSON number
// that fits). Every refusal is a moe::Error; nlohmann's own exceptions never escape.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "../config.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace io {
namespace detail {

inline std::string json_value_kind(const nlohmann::json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number_float()) return "floating-point number";
  return v.type_name();
}

template <class T>
T json_convert(const nlohmann::json& v, const std::string& key, const std::string& file) {
  static_assert(std::is_same<T, bool>::value || std::is_integral<T>::value || std::is_floating_point<T>::value ||
                    std::is_same<T, std::string>::value,
                "json_get reads bool, integers, float, double and std::string");
  const char* where = "io::json_get";
  const std::string named = file + ": key '" + key + "'";
  if constexpr (std::is_same<T, bool>::value) {
    MOE_CHECK(v.is_boolean(), where,
              named + " has the wrong type (expected a boolean, got " + json_value_kind(v) + ")");
    return v.get<bool>();
  } else if constexpr (std::is_integral<T>::value) {
    MOE_CHECK(v.is_number_integer(), where,
              named + " has the wrong type (expected an integer, got " + json_value_kind(v) + ")");
    const std::string range = "[" + std::to_string(std::numeric_limits<T>::min()) + ", " +
                              std::to_string(std::numeric_limits<T>::max()) + "]";
    if (v.is_number_unsigned()) {
      const std::uint64_t u = v.get<std::uint64_t>();
      MOE_CHECK(u <= std::uint64_t(std::numeric_limits<T>::max()), where,
                named + " = " + v.dump() + " is out of range (expected an integer in " + range + ")");
      return static_cast<T>(u);
    }
    const std::int64_t i = v.get<std::int64_t>();  // negative here: non-negative integers parse as unsigned
    MOE_CHECK(std::is_signed<T>::value && i >= std::int64_t(std::numeric_limits<T>::min()), where,
              named + " = " + v.dump() + " is out of range (expected an integer in " + range + ")");
    return static_cast<T>(i);
  } else if constexpr (std::is_floating_point<T>::value) {
    MOE_CHECK(v.is_number(), where, named + " has the wrong type (expected a number, got " + json_value_kind(v) + ")");
    const double d = v.get<double>();
    MOE_CHECK(std::fabs(d) <= double(std::numeric_limits<T>::max()), where,
              named + " = " + v.dump() + " is out of range for a " + (sizeof(T) == 4 ? "float" : "double"));
    return static_cast<T>(d);
  } else {
    MOE_CHECK(v.is_string(), where, named + " has the wrong type (expected a string, got " + json_value_kind(v) + ")");
    return v.get<std::string>();
  }
}

inline void json_require_object(const nlohmann::json& j, const std::string& key, const std::string& file) {
  MOE_CHECK(j.is_object(), "io::json_get",
            file + " is a JSON " + json_value_kind(j) + ", not an object (reading key '" + key + "')");
}

}  // namespace detail

// j[key] as T; `file` names j in messages ("config.json", or "config.json ffn_config" for a nested object).
template <class T>
T json_get(const nlohmann::json& j, const std::string& key, const std::string& file) {
  detail::json_require_object(j, key, file);
  const auto it = j.find(key);
  MOE_CHECK(it != j.end(), "io::json_get", file + ": key '" + key + "' is missing");
  return detail::json_convert<T>(*it, key, file);
}

// j[key] as T, or `fallback` when the key is missing or null (transformers writes null for "not set").
template <class T>
T json_get_or(const nlohmann::json& j, const std::string& key, const T& fallback, const std::string& file) {
  detail::json_require_object(j, key, file);
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return detail::json_convert<T>(*it, key, file);
}

namespace detail {
template <class T>
T json_in_range(T value, const std::string& key, T low, T high, const std::string& file) {
  static_assert(std::is_integral<T>::value, "json_get_in reads integers");
  MOE_CHECK(value >= low && value <= high, "io::json_get",
            file + ": key '" + key + "' = " + std::to_string(value) + " is out of range (expected an integer in [" +
                std::to_string(low) + ", " + std::to_string(high) + "])");
  return value;
}
}  // namespace detail

// j[key] as the integer type T, refused unless low <= j[key] <= high: a size from a config file is checked
// before anything is allocated or iterated for it.
template <class T>
T json_get_in(const nlohmann::json& j, const std::string& key, T low, T high, const std::string& file) {
  return detail::json_in_range(json_get<T>(j, key, file), key, low, high, file);
}

// j[key] as T in [low, high], or `fallback` when the key is missing or null.
template <class T>
T json_get_or_in(const nlohmann::json& j, const std::string& key, const T& fallback, T low, T high,
                 const std::string& file) {
  return detail::json_in_range(json_get_or<T>(j, key, fallback, file), key, low, high, file);
}

}  // namespace io
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

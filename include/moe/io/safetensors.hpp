// moe/io/safetensors.hpp: tensors of safetensors files and Hugging Face model folders, memory-mapped.
//
// The format: 8 bytes, the header's length N (little-endian u64); N bytes of JSON, an object mapping each
// tensor's name to {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]} (offsets into the
// data section, which starts right after the header), plus an optional "__metadata__" entry we skip; then
// the data, C order, little-endian. parse_safetensors() checks all of it before anyone reads a byte of data:
// a malformed file is refused with one line naming the file and the tensor, never read out of bounds.
// F32, BF16, F16 and F8_E4M3 tensors are supported (the dtypes of the MoE weights of HF checkpoints; F8_E4M3
// with the block scales io/hf_model.hpp reads beside it); a file holding any other dtype is refused, naming
// the tensor.
//
// A model folder (Checkpoint) is model.safetensors, or the shards that model.safetensors.index.json's
// "weight_map" names (tensor name -> shard file), each shard opened and checked once.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../config.hpp"
#include "../detail/half_floats.hpp"
#include "../detail/small_floats.hpp"
#include "file.hpp"
#include "json_util.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace io {

// The tensor dtypes we read, with their safetensors names. U8 holds packed codes (MXFP4 blocks and E8M0
// scales), never a float tensor.
enum class DType { F32, BF16, F16, F8_E4M3, U8 };

inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::BF16:
      return "BF16";
    case DType::F16:
      return "F16";
    case DType::F8_E4M3:
      return "F8_E4M3";
    case DType::U8:
      return "U8";
  }
  return "?";
}

inline std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return 4;
    case DType::BF16:
    case DType::F16:
      return 2;
    case DType::F8_E4M3:
    case DType::U8:
      return 1;
  }
  return 1;
}

// One tensor of a mapped file: its bytes stay in the file's mapping, valid while the SafetensorsFile (or the
// Checkpoint) that holds it lives.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<Index> shape;  // [] for a scalar
  const unsigned char* data = nullptr;
  std::size_t bytes = 0;  // elements() * dtype_size(dtype), checked
  std::string file;       // the file it is in, for messages

  Index elements() const {
    for (const Index d : shape)
      if (d == 0) return 0;
    Index n = 1;
    for (const Index d : shape) n *= d;  // cannot overflow: parse_safetensors checked that the file holds them
    return n;
  }
};

namespace detail {

// The error of a parser or nlohmann's, as one printable line without its "[json.exception...] " prefix.
inline std::string json_error_text(const nlohmann::json::exception& e) {
  std::string text = e.what();
  const std::size_t bracket = text.find("] ");
  if (text.rfind("[json.exception.", 0) == 0 && bracket != std::string::npos) text.erase(0, bracket + 2);
  return quoted_text(text, false, 200);
}

// Parses JSON text or throws moe::Error("moe::<where>: <name>: <what> is not valid JSON (...)").
inline nlohmann::json parse_json_or_fail(const unsigned char* begin, std::size_t size, const char* where,
                                         const std::string& name, const char* what) {
  try {
    return nlohmann::json::parse(begin, begin + size);
  } catch (const nlohmann::json::exception& e) {
    fail(where, name + ": " + what + " is not valid JSON (" + json_error_text(e) + ")");
  }
}

inline std::string dims_text(const std::vector<Index>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// One entry of a safetensors header, checked; `data` is the data section, `data_size` its length.
inline TensorView safetensors_entry(const std::string& key, const nlohmann::json& entry, const unsigned char* data,
                                    std::size_t data_size, const std::string& name) {
  const char* where = "io::parse_safetensors";
  const std::string tensor = name + ": tensor '" + quoted_text(key) + "'";
  MOE_CHECK(entry.is_object(), where,
            tensor + " is a JSON " + json_value_kind(entry) + ", not an object with dtype, shape and data_offsets");
  auto field = [&](const char* field_name, bool want_string, const char* expected) -> const nlohmann::json& {
    const auto it = entry.find(field_name);
    MOE_CHECK(it != entry.end(), where, tensor + " has no '" + field_name + "'");
    MOE_CHECK(want_string ? it->is_string() : it->is_array(), where,
              tensor + ": '" + field_name + "' is a JSON " + json_value_kind(*it) + ", expected " + expected);
    return *it;
  };

  TensorView view;
  view.name = key;
  view.file = name;
  const std::string dtype = field("dtype", true, "a string such as \"BF16\"").get<std::string>();
  if (dtype == "F32") {
    view.dtype = DType::F32;
  } else if (dtype == "BF16") {
    view.dtype = DType::BF16;
  } else if (dtype == "F16") {
    view.dtype = DType::F16;
  } else if (dtype == "F8_E4M3") {
    view.dtype = DType::F8_E4M3;
  } else if (dtype == "U8") {
    view.dtype = DType::U8;
  } else {
    fail(where, tensor + " has dtype '" + quoted_text(dtype) +
                    "', which is not supported (supported: F32, BF16, F16, F8_E4M3, U8)");
  }

  const nlohmann::json& shape = field("shape", false, "an array of non-negative integers");
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const nlohmann::json& d = shape[i];
    const std::string entry_name = tensor + ": shape entry " + std::to_string(i);
    MOE_CHECK(
        d.is_number_integer(), where,
        entry_name + " is " + (d.is_number_float() ? d.dump() : "a JSON " + json_value_kind(d)) + ", not an integer");
    MOE_CHECK(d.is_number_unsigned(), where, entry_name + " is negative (" + d.dump() + ")");
    const std::uint64_t value = d.get<std::uint64_t>();
    MOE_CHECK(value <= std::uint64_t(std::numeric_limits<Index>::max()), where,
              entry_name + " (" + d.dump() + ") is too large");
    view.shape.push_back(Index(value));
  }
  // The byte count, checked step by step (a zero dimension makes it 0 whatever the others are).
  std::uint64_t expected_bytes = dtype_size(view.dtype);
  if (std::find(view.shape.begin(), view.shape.end(), Index(0)) != view.shape.end()) expected_bytes = 0;
  for (const Index d : view.shape) {
    MOE_CHECK(checked_product({expected_bytes, std::uint64_t(d)}, expected_bytes) &&
                  expected_bytes <= std::uint64_t(std::numeric_limits<Index>::max()),
              where, tensor + ": shape " + dims_text(view.shape) + " has too many elements (the byte count overflows)");
  }

  const nlohmann::json& offsets = field("data_offsets", false, "[begin, end]");
  MOE_CHECK(offsets.size() == 2 && offsets[0].is_number_unsigned() && offsets[1].is_number_unsigned(), where,
            tensor + ": 'data_offsets' must be [begin, end], two non-negative integers");
  const std::uint64_t begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
  const std::string range = "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
  MOE_CHECK(begin <= end, where, tensor + ": data_offsets " + range + " end before they begin");
  MOE_CHECK(end <= data_size, where,
            tensor + ": data_offsets " + range + " run past the end of the data section (" + std::to_string(data_size) +
                " bytes)");
  MOE_CHECK(end - begin == expected_bytes, where,
            tensor + ": data_offsets " + range + " hold " + std::to_string(end - begin) + " bytes, but shape " +
                dims_text(view.shape) + " of " + dtype + " needs " + std::to_string(expected_bytes));
  view.data = data + begin;
  view.bytes = std::size_t(end - begin);
  return view;
}

}  // namespace detail

// Checks a safetensors file held in memory and returns its tensors, sorted by name, viewing
// `bytes` (which must outlive them). `name` (the path) is what messages call the file.
inline std::vector<TensorView> parse_safetensors(const unsigned char* bytes, std::size_t size,
                                                 const std::string& name) {
  const char* where = "io::parse_safetensors";
  MOE_CHECK(size >= 8, where,
            name + " is too short to be a safetensors file (" + std::to_string(size) +
                " bytes; its header length alone takes 8)");
  const std::uint64_t header_size = detail::load_le64(bytes);
  MOE_CHECK(header_size <= size - 8, where,
            name + ": header length " + std::to_string(header_size) + " runs past the end of the file (" +
                std::to_string(size) + " bytes, " + std::to_string(size - 8) + " after the length)");
  const nlohmann::json header =
      detail::parse_json_or_fail(bytes + 8, std::size_t(header_size), where, name, "the header");
  MOE_CHECK(header.is_object(), where,
            name + ": the header is a JSON " + detail::json_value_kind(header) + ", not an object");

  const unsigned char* data = bytes + 8 + header_size;
  const std::size_t data_size = size - 8 - std::size_t(header_size);
  std::vector<TensorView> tensors;
  for (auto it = header.begin(); it != header.end(); ++it) {  // nlohmann's objects iterate sorted by key
    if (it.key() == "__metadata__") continue;
    tensors.push_back(detail::safetensors_entry(it.key(), it.value(), data, data_size, name));
  }

  // No two tensors share a byte: sorted by where they begin, each must begin where the one before ends or later
  // (empty tensors hold no bytes and may sit anywhere).
  std::vector<const TensorView*> order;
  for (const TensorView& t : tensors)
    if (t.bytes > 0) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorView* a, const TensorView* b) { return a->data < b->data; });
  auto range = [&](const TensorView& v) {
    return "[" + std::to_string(v.data - data) + ", " + std::to_string(std::size_t(v.data - data) + v.bytes) + "]";
  };
  for (std::size_t k = 1; k < order.size(); ++k) {
    const TensorView& before = *order[k - 1];
    const TensorView& t = *order[k];
    MOE_CHECK(t.data >= before.data + before.bytes, where,
              name + ": tensors '" + detail::quoted_text(before.name) + "' " + range(before) + " and '" +
                  detail::quoted_text(t.name) + "' " + range(t) + " overlap");
  }
  return tensors;
}

// A safetensors file, memory-mapped (read-only, private) and checked. Move-only; moving keeps every
// TensorView valid.
class SafetensorsFile {
public:
  explicit SafetensorsFile(const std::string& path)
      : file_(path, "io::SafetensorsFile"), tensors_(parse_safetensors(file_.data(), file_.size(), path)) {}
  SafetensorsFile(SafetensorsFile&&) = default;
  SafetensorsFile& operator=(SafetensorsFile&&) = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return file_.path(); }
  // Sorted by name.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // The tensor called `name`, or nullptr.
  const TensorView* find(const std::string& name) const {
    const auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                                     [](const TensorView& t, const std::string& n) { return t.name < n; });
    return it != tensors_.end() && it->name == name ? &*it : nullptr;
  }

private:
  detail::MappedFile file_;
  std::vector<TensorView> tensors_;
};

// The tensors of a Hugging Face model folder: model.safetensors, or the shards model.safetensors.index.json
// names. Move-only.
class Checkpoint {
public:
  explicit Checkpoint(const std::string& dir) : dir_(dir) {
    const char* where = "io::Checkpoint";
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::file_status status = fs::status(dir, ec);
    MOE_CHECK(fs::exists(status), where, "model folder " + dir + " does not exist");
    MOE_CHECK(fs::is_directory(status), where, dir + " is not a folder");
    const std::string index = (fs::path(dir) / "model.safetensors.index.json").string();
    const std::string single = (fs::path(dir) / "model.safetensors").string();
    if (fs::exists(fs::status(index, ec))) {
      open_index(index);
    } else {
      MOE_CHECK(fs::exists(fs::status(single, ec)), where,
                dir + " has no model.safetensors or model.safetensors.index.json" + pickles_note(dir));
      shards_.emplace_back(single);
      for (const TensorView& t : shards_.back().tensors()) tensors_.emplace(t.name, &t);
    }
  }
  Checkpoint(Checkpoint&&) = default;
  Checkpoint& operator=(Checkpoint&&) = default;
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const std::string& dir() const { return dir_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorView& tensor(const std::string& name) const {
    const auto it = tensors_.find(name);
    MOE_CHECK(it != tensors_.end(), "io::Checkpoint::tensor",
              dir_ + ": tensor '" + detail::quoted_text(name) + "' not found");
    return *it->second;
  }
  // Every tensor's name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& entry : tensors_) out.push_back(entry.first);
    return out;
  }
  // The files, each once.
  const std::vector<SafetensorsFile>& files() const { return shards_; }

private:
  // For a folder without safetensors that holds PyTorch's pickled weights (pytorch_model.bin or its shards,
  // as hpc-ai's Grok-1 port publishes them): what they are and how to convert them, else "".
  static std::string pickles_note(const std::string& dir) {
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.rfind("pytorch_model", 0) == 0 && detail::ends_with(name, ".bin"))
        return "; its " + detail::quoted_text(name) +
               " is PyTorch's pickle format, which moe does not read: save the model as safetensors "
               "(transformers: model.save_pretrained(dir, safe_serialization=True))";
    }
    return "";
  }

  void open_index(const std::string& index) {
    const char* where = "io::Checkpoint";
    namespace fs = std::filesystem;
    nlohmann::json json;
    {
      const detail::MappedFile file(index, where);
      json = detail::parse_json_or_fail(file.data(), file.size(), where, index, "it");
    }
    const auto map = json.is_object() ? json.find("weight_map") : json.end();
    MOE_CHECK(json.is_object() && map != json.end() && map->is_object(), where,
              index + " has no \"weight_map\" object (tensor name -> shard file)");
    // Tensor -> shard, each shard opened once (std::map keeps the shard list in a stable order).
    std::map<std::string, std::size_t> shard_of_file;
    std::vector<std::pair<std::string, std::size_t>> wanted;
    for (auto it = map->begin(); it != map->end(); ++it) {
      const std::string tensor = "tensor '" + detail::quoted_text(it.key()) + "'";
      MOE_CHECK(it->is_string(), where,
                index + ": weight_map maps " + tensor + " to a JSON " + detail::json_value_kind(*it) +
                    ", expected a shard file name");
      const std::string shard = it->get<std::string>();
      const fs::path relative(shard);
      bool inside = !shard.empty() && relative.is_relative();
      for (const fs::path& part : relative) inside = inside && part != "..";
      MOE_CHECK(inside, where,
                index + ": weight_map maps " + tensor + " to '" + detail::quoted_text(shard) +
                    "', which is not a file name inside " + dir_);
      auto found = shard_of_file.find(shard);
      if (found == shard_of_file.end()) {
        const std::string path = (fs::path(dir_) / relative).string();
        std::error_code ec;
        MOE_CHECK(fs::exists(fs::status(path, ec)), where,
                  index + " maps " + tensor + " to shard " + detail::quoted_text(shard) + ", but " + path +
                      " does not exist");
        shards_.emplace_back(path);
        found = shard_of_file.emplace(shard, shards_.size() - 1).first;
      }
      wanted.emplace_back(it.key(), found->second);
    }
    for (const auto& [name, shard] : wanted) {
      const TensorView* t = shards_[shard].find(name);
      MOE_CHECK(t != nullptr, where,
                index + " maps tensor '" + detail::quoted_text(name) + "' to " + shards_[shard].path() +
                    ", which does not contain it");
      tensors_.emplace(name, t);
    }
  }

  std::string dir_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, const TensorView*> tensors_;  // into shards_' tensors, which never move
};

// The tensor's values as float32, bit-exact: F32 as stored, BF16 as the top half of an f32, F16 widened as
// detail/half_floats.hpp's f16 decode does, F8_E4M3 as detail/small_floats.hpp's e4m3 decode does (the codes
// alone: their block scales are io/hf_model.hpp's). `out` holds t.elements() floats.
inline void to_float(const TensorView& t, float* out) {
  const std::size_t n = t.bytes / dtype_size(t.dtype);
  const unsigned char* p = t.data;
  switch (t.dtype) {
    case DType::F32:
      for (std::size_t i = 0; i < n; ++i) out[i] = ::moe::detail::bits_float(detail::load_le32(p + 4 * i));
      break;
    case DType::BF16:
      for (std::size_t i = 0; i < n; ++i) out[i] = ::moe::detail::bf16_to_float(detail::load_le16(p + 2 * i));
      break;
    case DType::F16:
      for (std::size_t i = 0; i < n; ++i) out[i] = ::moe::detail::f16_to_float(detail::load_le16(p + 2 * i));
      break;
    case DType::F8_E4M3:
      for (std::size_t i = 0; i < n; ++i) out[i] = ::moe::detail::e4m3_to_float(p[i]);
      break;
    case DType::U8:  // codes, not values: the readers refuse a U8 tensor wherever they expect floats
      for (std::size_t i = 0; i < n; ++i) out[i] = float(p[i]);
      break;
  }
}

// The mapped data itself when the tensor is F32 and 4-byte aligned on a little-endian host (zero copy),
// else nullptr: convert with to_float() then.
inline const float* as_f32_if_possible(const TensorView& t) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (t.dtype == DType::F32 && reinterpret_cast<std::uintptr_t>(t.data) % alignof(float) == 0)
    return reinterpret_cast<const float*>(t.data);
#else
  (void)t;
#endif
  return nullptr;
}

}  // namespace io
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

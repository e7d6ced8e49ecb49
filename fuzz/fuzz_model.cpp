// fuzz/fuzz_model.cpp: libFuzzer target for a whole model folder (fuzz/run.sh builds and runs it): the input
// is a config.json, a NUL byte, then a model.safetensors, written to a folder of this process's own. Every
// layer is summarised (summarize_layers, what --list-layers prints) and every MoE layer is loaded as
// load_block loads it (hf_model.hpp's Block::load: FP8 codes and block scales, MXFP4 blocks and E8M0 scales,
// fused, stacked, transposed and interleaved expert tensors, biases, shared experts) into a layer that reads
// every weight it is given. ASan does not guard a file's mapping, so while a layer loads, the mapped bytes
// outside every tensor (the seeds leave 32 bytes between tensors, fuzz/make_corpus.py) are poisoned: a read
// that strays past its tensor is reported rather than landing in a neighbour. No precision's layer is compiled
// here (MOE_COMPILED_LAYERS, and make_block_layer is never called): the readers are under test, not the kernels.
//
// A refusal must be a one-line moe::Error from io/. A folder that summarize_layers accepts may then be refused
// by the load only for what the headers cannot show (a NaN code or scale, an Inf scale, an MXFP4 block that
// overflows float32): anything else, and any weight of the wrong shape handed to the layer, is a finding.
#define MOE_COMPILED_LAYERS
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

#include <sanitizer/asan_interface.h>

#include <moe/io/hf_model.hpp>
#include <moe/io/layer_summary.hpp>

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_model: %s\n", what);
  std::abort();
}

// Every value of a view is read (an out-of-bounds read is ASan's), and its shape is the one the layer expects.
volatile float sink = 0.0f;
void read_view(const moe::WeightView& w, moe::Index rows, moe::Index cols) {
  if (w.data == nullptr || w.rows != rows || w.cols != cols || w.stride < cols)
    finding("a weight view of the wrong shape");
  for (moe::Index r = 0; r < rows; ++r)
    for (moe::Index c = 0; c < cols; ++c) sink = sink + w.data[r * w.stride + c];
}
void read_view(const moe::Fp8BlockView& w, moe::Index rows, moe::Index cols) {
  if (w.codes == nullptr || w.scales == nullptr || w.rows != rows || w.cols != cols || w.block_rows < 1 ||
      w.block_cols < 1)
    finding("an FP8 view of the wrong shape");
  // Not checked for overflow: a code times its scale may exceed f32, which the layer's set_expert refuses
  // (expert.hpp, check_matrix) as it does an Inf in f32 weights.
  std::vector<float> row(static_cast<std::size_t>(cols));
  for (moe::Index r = 0; r < rows; ++r) {
    w.decode_row(r, row.data());
    for (float v : row) sink = sink + v;
  }
}
void read_values(const float* v, moe::Index n) {
  if (v == nullptr) finding("a null bias");
  for (moe::Index i = 0; i < n; ++i) sink = sink + v[i];
}

// The layer load_block would fill, reduced to reading what it is given.
class ReadingLayer final : public moe::AnyLayer {
public:
  explicit ReadingLayer(const moe::LayerConfig& c) : c_(c) {}
  const moe::LayerConfig& config() const override { return c_; }
  const char* precision() const override { return "reading"; }
  const char* routing() const override { return "none"; }
  double bits_per_weight() const override { return 32.0; }
  double expert_bytes() const override { return 0.0; }

  void set_router(const moe::WeightView& w) override { read_view(w, c_.num_experts, c_.hidden_size); }
  void set_expert(int e, const moe::WeightView& gate, const moe::WeightView& up, const moe::WeightView& down) override {
    expert(e, true);
    projections(&gate, up, down, c_.ffn_size);
  }
  void set_expert(int e, const moe::WeightView& up, const moe::WeightView& down) override {
    expert(e, false);
    projections<moe::WeightView>(nullptr, up, down, c_.ffn_size);
  }
  void set_expert(int e, const moe::Fp8BlockView& gate, const moe::Fp8BlockView& up,
                  const moe::Fp8BlockView& down) override {
    expert(e, true);
    projections(&gate, up, down, c_.ffn_size);
  }
  void set_shared_expert(int s, const moe::WeightView& gate, const moe::WeightView& up,
                         const moe::WeightView& down) override {
    shared(s, true);
    projections(&gate, up, down, c_.shared_ffn_size);
  }
  void set_shared_expert(int s, const moe::WeightView& up, const moe::WeightView& down) override {
    shared(s, false);
    projections<moe::WeightView>(nullptr, up, down, c_.shared_ffn_size);
  }
  void set_shared_expert(int s, const moe::Fp8BlockView& gate, const moe::Fp8BlockView& up,
                         const moe::Fp8BlockView& down) override {
    shared(s, true);
    projections(&gate, up, down, c_.shared_ffn_size);
  }
  void set_shared_expert_gate(int s, const moe::WeightView& w) override {
    if (s != 0 || !c_.shared_expert_gate) finding("a shared expert gate the config does not have");
    read_view(w, 1, c_.hidden_size);
  }
  void set_expert_bias(int e, const float* gate, const float* up, const float* down) override {
    if (e < 0 || e >= c_.num_experts) finding("an expert bias out of range");
    read_values(gate, c_.ffn_size);
    read_values(up, c_.ffn_size);
    read_values(down, c_.hidden_size);
  }
  void set_router_bias(const float* bias) override { read_values(bias, c_.num_experts); }

  moe::Workspace workspace(moe::Index, int) const override { finding("workspace called on a reading layer"); }
  moe::RoutingResult forward(const float*, moe::Index, float*, moe::Index, moe::Index, moe::Workspace&,
                             moe::RoutingStats*, const std::int64_t*) const override {
    finding("forward called on a reading layer");
  }
  moe::ForwardCost cost(const moe::RoutingResult&) const override { finding("cost called on a reading layer"); }

  // Every expert set exactly once, each with the kind of projections the config says.
  void check_complete() const {
    for (int e = 0; e < c_.num_experts; ++e)
      if (!set_[static_cast<std::size_t>(e)]) finding("an expert the load never set");
  }

private:
  // An expert's projections, ffn wide: gate (if gated) and up ffn x hidden, down hidden x ffn.
  template <class View>
  void projections(const View* gate, const View& up, const View& down, moe::Index ffn) const {
    if (gate != nullptr) read_view(*gate, ffn, c_.hidden_size);
    read_view(up, ffn, c_.hidden_size);
    read_view(down, c_.hidden_size, ffn);
  }
  void expert(int e, bool gated) {
    if (e < 0 || e >= c_.num_experts || set_[static_cast<std::size_t>(e)])
      finding("an expert index out of range or set twice");
    if (gated != c_.ffn.gated) finding("an expert set with the wrong kind of projections");
    set_[static_cast<std::size_t>(e)] = true;
  }
  void shared(int s, bool gated) {
    if (s != 0 || c_.num_shared_experts < 1) finding("a shared expert the config does not have");
    if (gated != c_.ffn.gated) finding("a shared expert set with the wrong kind of projections");
  }

  moe::LayerConfig c_;
  std::vector<bool> set_ = std::vector<bool>(static_cast<std::size_t>(c_.num_experts), false);
};

// From construction to destruction, the pages of each file's mapping that hold tensors are poisoned except
// the tensors themselves (ASan tracks 8-byte granules: a tensor that does not start on one leaves that
// granule's head readable, and the seeds' tensors start on one). Declared after the Checkpoint, so that it is
// undone before the mapping goes and the addresses are reused.
class PoisonOutsideTensors {
public:
  explicit PoisonOutsideTensors(const moe::io::Checkpoint& ckpt) {
    constexpr std::uintptr_t page = 4096;
    for (const moe::io::SafetensorsFile& file : ckpt.files()) {
      std::uintptr_t lo = UINTPTR_MAX, hi = 0;
      for (const moe::io::TensorView& t : file.tensors()) {
        if (t.bytes == 0) continue;
        lo = std::min(lo, reinterpret_cast<std::uintptr_t>(t.data));
        hi = std::max(hi, reinterpret_cast<std::uintptr_t>(t.data) + t.bytes);
      }
      if (lo >= hi) continue;
      lo &= ~(page - 1);
      hi = (hi + page - 1) & ~(page - 1);
      ranges_.emplace_back(reinterpret_cast<const void*>(lo), hi - lo);
      ASAN_POISON_MEMORY_REGION(ranges_.back().first, ranges_.back().second);
      for (const moe::io::TensorView& t : file.tensors()) ASAN_UNPOISON_MEMORY_REGION(t.data, t.bytes);
    }
  }
  ~PoisonOutsideTensors() {
    for (const auto& range : ranges_) ASAN_UNPOISON_MEMORY_REGION(range.first, range.second);
  }
  PoisonOutsideTensors(const PoisonOutsideTensors&) = delete;
  PoisonOutsideTensors& operator=(const PoisonOutsideTensors&) = delete;

private:
  std::vector<std::pair<const void*, std::size_t>> ranges_;
};

void check_error(const moe::Error& e) {
  const std::string message = e.what();
  if (message.rfind("moe::io::", 0) != 0 || message.find('\n') != std::string::npos)
    finding(("an error that is not one line from io/: " + message).c_str());
}

// What only the data shows: a folder summarize_layers accepted may be refused for these alone.
bool data_error(const moe::Error& e) {
  const std::string message = e.what();
  for (const char* what : {"NaN", "Inf", "overflows float32"})
    if (message.find(what) != std::string::npos) return true;
  return false;
}

const std::string& folder() {
  static const std::string dir = [] {
    std::string pattern = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/fuzz_model.XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) finding("cannot make a temporary folder");
    return pattern;
  }();
  return dir;
}

void write_file(const std::string& path, const std::uint8_t* data, std::size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(data, 1, size, f) != size || std::fclose(f) != 0) finding("cannot write a file");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const void* nul = std::memchr(data, 0, size);
  if (nul == nullptr) return 0;
  const std::size_t config_size = static_cast<std::size_t>(static_cast<const std::uint8_t*>(nul) - data);
  const std::string& dir = folder();
  write_file(dir + "/config.json", data, config_size);
  write_file(dir + "/model.safetensors", data + config_size + 1, size - config_size - 1);

  std::vector<moe::io::LayerSummary> layers;
  try {
    layers = moe::io::summarize_layers(dir);
  } catch (const moe::Error& e) {
    check_error(e);
    return 0;
  }
  int loaded = 0;
  for (const moe::io::LayerSummary& row : layers) {
    if (!row.moe || ++loaded > 4) continue;
    try {
      const moe::io::BlockSpec spec = moe::io::read_block_spec(dir, row.layer);
      const moe::io::Checkpoint ckpt(dir);
      const PoisonOutsideTensors poison(ckpt);
      auto reading = std::make_unique<ReadingLayer>(spec.config);
      const ReadingLayer& layer = *reading;
      moe::io::detail::Block block(spec, std::move(reading));
      block.load(ckpt, {});
      layer.check_complete();
    } catch (const moe::Error& e) {
      check_error(e);
      if (!data_error(e))
        finding(("a folder --list-layers accepts that the load refuses: " + std::string(e.what())).c_str());
    }
  }
  return 0;
}

// tests/test_io.cpp: the file readers of include/moe/io/: .npy in and out, safetensors files, Hugging Face
// model folders and config.json reads. Every broken input must give a moe::Error of one line naming the
// file and the problem; files are built by hand in a temporary folder.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include <signal.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <moe/io/block_spec.hpp>
#include <moe/io/json_util.hpp>
#include <moe/io/npy.hpp>
#include <moe/io/safetensors.hpp>

namespace fs = std::filesystem;

namespace {

// A fresh folder under the system's temporary directory, removed with everything in it at the end.
class TempDir {
public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() / ("moe-test-io-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }
  // The names in the folder, sorted.
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(path_)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

private:
  fs::path path_;
};

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  REQUIRE(out.good());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::uint32_t bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

std::string le16(std::uint16_t v) { return {char(v & 0xff), char(v >> 8)}; }
std::string le32(std::uint32_t v) { return le16(std::uint16_t(v & 0xffff)) + le16(std::uint16_t(v >> 16)); }
std::string le64(std::uint64_t v) { return le32(std::uint32_t(v)) + le32(std::uint32_t(v >> 32)); }

// An .npy file of the given version with `header` as is (not padded) and `data` after it.
std::string npy_bytes(const std::string& header, const std::string& data, int major = 1) {
  std::string out = "\x93NUMPY";
  out += char(major);
  out += char(0);
  out += major == 1 ? le16(std::uint16_t(header.size())) : le32(std::uint32_t(header.size()));
  return out + header + data;
}

std::string npy_header(const std::string& descr, const std::string& shape, const std::string& order = "False") {
  return "{'descr': '" + descr + "', 'fortran_order': " + order + ", 'shape': " + shape + ", }\n";
}

std::string f32_bytes(const std::vector<float>& values) {
  std::string out;
  for (const float v : values) out += le32(bits(v));
  return out;
}

// A safetensors file: the header's length, the header, the data.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

// The message of the moe::Error that f throws ("(no error)" when it throws none; other exceptions fail).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const moe::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// f must throw a moe::Error of one line that contains every one of `parts`.
template <class F>
void check_error(F&& f, std::initializer_list<std::string> parts) {
  const std::string message = error_of(f);
  INFO("message: " << message);
  CHECK(message.find('\n') == std::string::npos);
  CHECK(message.rfind("moe::io::", 0) == 0);
  for (const std::string& part : parts) {
    INFO("expected part: " << part);
    CHECK(message.find(part) != std::string::npos);
  }
}

}  // namespace

// ---- .npy ------------------------------------------------------------------------------------------------

TEST_CASE("npy: write_npy and read_npy round-trip float32 bit for bit, in np.save's layout") {
  TempDir dir;
  const std::string path = dir / "x.npy";
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> values = {
      1.0f, -0.0f, 3.5e-42f /* subnormal */, inf, -inf, std::nanf(""), 65504, 1e-8f, -123.25f, 0.1f, 3e38f, -7.0f};
  moe::io::write_npy(path, values.data(), 3, 4);
  const std::string bytes = read_file(path);
  // np.save's header for this array, padded so that the data starts at byte 128 (a multiple of 64).
  const std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
  REQUIRE(bytes.size() == 128 + 48);
  CHECK(bytes.substr(0, 10) == std::string("\x93NUMPY\x01\x00\x76\x00", 10));
  CHECK(bytes.substr(10, header.size()) == header);
  CHECK(bytes.substr(10 + header.size(), 128 - 11 - header.size()) == std::string(128 - 11 - header.size(), ' '));
  CHECK(bytes[127] == '\n');
  CHECK(bytes.substr(128) == f32_bytes(values));

  const moe::io::NpyArray a = moe::io::read_npy(path);
  CHECK(a.shape == std::vector<moe::Index>{3, 4});
  REQUIRE(a.data.size() == values.size());
  for (std::size_t i = 0; i < values.size(); ++i) CHECK(bits(a.data[i]) == bits(values[i]));
  CHECK(dir.listing() == std::vector<std::string>{"x.npy"});  // no temporary file left

  SUBCASE("an empty array, and overwriting an existing file") {
    moe::io::write_npy(path, nullptr, 0, 5);
    const moe::io::NpyArray empty = moe::io::read_npy(path);
    CHECK(empty.shape == std::vector<moe::Index>{0, 5});
    CHECK(empty.data.empty());
  }
  SUBCASE("a wide array whose data spans several write chunks") {
    std::vector<float> wide(3 * 20000);
    for (std::size_t i = 0; i < wide.size(); ++i) wide[i] = float(i) * 0.5f - 7.0f;
    moe::io::write_npy(path, wide.data(), 3, 20000);
    const moe::io::NpyArray b = moe::io::read_npy(path);
    CHECK(b.shape == std::vector<moe::Index>{3, 20000});
    CHECK(b.data == wide);
  }
}

TEST_CASE("npy: float16 files read as float32 exactly, every code") {
  TempDir dir;
  std::string data;
  for (std::uint32_t code = 0; code < 65536; ++code) data += le16(std::uint16_t(code));
  const std::string path = dir / "half.npy";
  for (const char* descr : {"<f2", "=f2", "|f2"}) {
    CAPTURE(descr);
    write_file(path, npy_bytes(npy_header(descr, "(256, 256)"), data));
    const moe::io::NpyArray a = moe::io::read_npy(path);
    CHECK(a.shape == std::vector<moe::Index>{256, 256});
    REQUIRE(a.data.size() == 65536);
    bool all_equal = true;
    for (std::uint32_t code = 0; code < 65536; ++code)
      all_equal = all_equal && bits(a.data[code]) == bits(moe::detail::f16_to_float(std::uint16_t(code)));
    CHECK(all_equal);
    CHECK(a.data[0x3c00] == 1.0f);
    CHECK(a.data[0xc000] == -2.0f);
    CHECK(a.data[0x7bff] == 65504.0f);
    CHECK(a.data[0x0001] == std::ldexp(1.0f, -24));
    CHECK(a.data[0x7c00] == std::numeric_limits<float>::infinity());
    CHECK(std::isnan(a.data[0x7e00]));
  }
}

TEST_CASE("npy: the header variants numpy writes or once wrote are read") {
  TempDir dir;
  const std::string path = dir / "v.npy";
  const std::string data = f32_bytes({1, 2, 3, 4, 5, 6});
  auto check_read = [&](const std::string& file) {
    write_file(path, file);
    const moe::io::NpyArray a = moe::io::read_npy(path);
    CHECK(a.shape == std::vector<moe::Index>{2, 3});
    CHECK(a.data == std::vector<float>{1, 2, 3, 4, 5, 6});
  };
  check_read(npy_bytes(npy_header("<f4", "(2, 3)"), data, 2));  // version 2.0: 4-byte header length
  check_read(npy_bytes(npy_header("<f4", "(2, 3)"), data, 3));  // version 3.0: utf-8 header
  check_read(npy_bytes(npy_header("=f4", "(2, 3)"), data));
  check_read(npy_bytes(npy_header("|f4", "(2, 3)"), data));
  check_read(npy_bytes("{'descr':'<f4','fortran_order':False,'shape':(2,3)}", data));  // no spaces, no newline
  check_read(npy_bytes("{\"shape\": (2L, 3L), \"fortran_order\": False, \"descr\": \"<f4\"}\n", data));  // Python 2
}

TEST_CASE("npy: every broken file is refused with one line naming the file and the problem") {
  TempDir dir;
  const std::string path = dir / "bad.npy";
  const std::string six = f32_bytes({1, 2, 3, 4, 5, 6});
  auto refused = [&](const std::string& file, std::initializer_list<std::string> parts) {
    write_file(path, file);
    std::vector<std::string> all(parts);
    all.push_back(path);
    const std::string message = error_of([&] { moe::io::read_npy(path); });
    INFO("message: " << message);
    CHECK(message.find('\n') == std::string::npos);
    for (const std::string& part : all) {
      INFO("expected part: " << part);
      CHECK(message.find(part) != std::string::npos);
    }
  };

  refused("", {"is not an .npy file"});
  refused("PK\x03\x04 a zip file, maybe an .npz", {"is not an .npy file"});
  refused(npy_bytes(npy_header("<f4", "(2, 3)"), six).substr(0, 9), {"is not an .npy file"});
  refused(npy_bytes(npy_header("<f4", "(2, 3)"), six, 4), {"version 4.0", "expected 1.0, 2.0 or 3.0"});
  refused(npy_bytes(npy_header("<f4", "(2, 3)"), six, 2).substr(0, 11), {"truncated"});
  refused(npy_bytes(npy_header("<f4", "(2, 3)"), six).substr(0, 30), {"truncated", "header"});
  refused(npy_bytes("{'descr' '<f4', 'fortran_order': False, 'shape': (2, 3), }", six),
          {"malformed header", "expected ':'"});
  refused(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } junk", six), {"malformed header"});
  refused(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", six), {"malformed header"});
  refused(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3]}", six), {"malformed header"});
  refused(npy_bytes("{'descr': '<f4', 'fortran_order': Nope, 'shape': (2, 3)}", six), {"True or False"});
  refused(npy_bytes("{'descr': '<f4', 'fortran_order': False}", six), {"no 'shape'"});
  refused(npy_bytes("{'descr': '<f4', 'shape': (2, 3)}", six), {"no 'fortran_order'"});
  refused(npy_bytes("{'fortran_order': False, 'shape': (2, 3)}", six), {"no 'descr'"});
  refused(npy_bytes("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", six),
          {"'descr' twice"});
  refused(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra\\n': 1}", six),
          {"malformed header"});
  refused(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}", six),
          {"unexpected key 'extra'"});
  refused(npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}", six), {"structured dtype"});
  refused(npy_bytes(npy_header("<f8", "(2, 3)"), six + six), {"dtype '<f8'", "not supported", "'<f4'", "'<f2'"});
  refused(npy_bytes(npy_header("<i4", "(2, 3)"), six), {"dtype '<i4'", "not supported"});
  refused(npy_bytes(npy_header(">f4", "(2, 3)"), six), {"big-endian"});
  refused(npy_bytes(npy_header("<f4", "(2, 3)", "True"), six), {"Fortran order"});
  refused(npy_bytes(npy_header("<f4", "(6,)"), six), {"is 1-D (6); expected tokens x hidden"});
  refused(npy_bytes(npy_header("<f4", "(1, 2, 3)"), six), {"is 3-D (1 x 2 x 3); expected tokens x hidden"});
  refused(npy_bytes(npy_header("<f4", "()"), six.substr(0, 4)), {"is 0-D (a scalar); expected tokens x hidden"});
  refused(npy_bytes(npy_header("<f4", "(-2, 3)"), six), {"negative dimension"});
  refused(npy_bytes(npy_header("<f4", "(99999999999999999999999, 1)"), six), {"too large"});
  refused(npy_bytes(npy_header("<f4", "(2, 3)"), six.substr(0, 20)),
          {"truncated", "2 x 3 of float32 needs 24 bytes of data, but only 20"});
  refused(npy_bytes(npy_header("<f2", "(2, 3)"), six.substr(0, 10)), {"truncated", "float16 needs 12 bytes"});
  refused(npy_bytes(npy_header("<f4", "(2, 3)"), six + "xy"), {"2 trailing bytes", "24 bytes of data"});
  refused(npy_bytes(npy_header("<f4", "(100000, 100000)"), six), {"truncated", "40000000000 bytes"});
  refused(npy_bytes(npy_header("<f4", "(4294967296, 4294967296)"), six), {"too large", "overflows"});
  refused(npy_bytes(npy_header("<f4\x01\xff", "(2, 3)"), six), {"dtype '<f4\\x01\\xff'"});  // escaped: one line

  check_error([&] { moe::io::read_npy(dir / "missing.npy"); },
              {"cannot open " + (dir / "missing.npy") + ": No such file or directory"});
  check_error([&] { moe::io::read_npy(dir.path().string()); }, {"cannot open " + dir.path().string()});
}

TEST_CASE("npy: write_npy names the path it cannot write and leaves no partial file") {
  TempDir dir;
  const std::vector<float> values(1000, 1.5f);

  SUBCASE("a folder that does not exist") {
    const std::string path = dir / "no-such-dir/y.npy";
    check_error([&] { moe::io::write_npy(path, values.data(), 10, 100); },
                {"cannot write " + path, "No such file or directory"});
    CHECK(dir.listing().empty());
  }
  SUBCASE("a path that is a folder: the temporary file is made, then removed") {
    fs::create_directory(dir / "taken");
    check_error([&] { moe::io::write_npy(dir / "taken", values.data(), 10, 100); },
                {"cannot write " + (dir / "taken")});
    CHECK(dir.listing() == std::vector<std::string>{"taken"});
  }
  SUBCASE("a write that fails halfway keeps the old file whole") {
    const std::string path = dir / "y.npy";
    write_file(path, "the old contents");
    // RLIMIT_FSIZE makes write() fail with EFBIG past 4 KiB (SIGXFSZ ignored meanwhile): the data is 40 KB.
    struct rlimit old_limit;
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    struct rlimit small = old_limit;
    small.rlim_cur = 4096;
    void (*old_handler)(int) = ::signal(SIGXFSZ, SIG_IGN);
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::vector<float> big(10000, 2.0f);
    const std::string message = error_of([&] { moe::io::write_npy(path, big.data(), 100, 100); });
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    ::signal(SIGXFSZ, old_handler);
    INFO("message: " << message);
    CHECK(message.find("cannot write " + path) != std::string::npos);
    CHECK(message.find("File too large") != std::string::npos);
    CHECK(read_file(path) == "the old contents");
    CHECK(dir.listing() == std::vector<std::string>{"y.npy"});
  }
  SUBCASE("a read-only folder (not testable as root, who may write anywhere)") {
    if (::geteuid() != 0) {
      fs::create_directory(dir / "ro");
      fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
      check_error([&] { moe::io::write_npy(dir / "ro/y.npy", values.data(), 10, 100); },
                  {"cannot write " + (dir / "ro/y.npy"), "Permission denied"});
      fs::permissions(dir / "ro", fs::perms::owner_all);
      CHECK(fs::is_empty(dir.path() / "ro"));
    }
  }
  SUBCASE("impossible shapes") {
    check_error([&] { moe::io::write_npy(dir / "z.npy", values.data(), -1, 3); }, {"negative shape"});
    check_error([&] { moe::io::write_npy(dir / "z.npy", nullptr, 2, 3); }, {"data is null"});
    CHECK(dir.listing().empty());
  }
}

// ---- safetensors -----------------------------------------------------------------------------------------

namespace {

// Three tensors, one per dtype, laid out back to back, with a __metadata__ entry.
struct SampleFile {
  std::vector<float> f32 = {1.5f, -2.0f, 3.0e-39f, std::numeric_limits<float>::infinity(), 0.1f, -0.0f};
  std::vector<std::uint16_t> bf16 = {0x3f80, 0xc000, 0x7f80, 0x0001, 0x7fc1, 0x8000, 0x4049, 0x3e4c};
  std::vector<std::uint16_t> f16 = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x8000};

  std::string bytes() const {
    std::string data = f32_bytes(f32);
    for (const std::uint16_t v : bf16) data += le16(v);
    for (const std::uint16_t v : f16) data += le16(v);
    const std::string header = R"({"__metadata__": {"format": "pt"},)"
                               R"( "a.f32": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},)"
                               R"( "b.bf16": {"dtype": "BF16", "shape": [8], "data_offsets": [24, 40]},)"
                               R"( "c.f16": {"dtype": "F16", "shape": [3, 1, 2], "data_offsets": [40, 52]}})";
    return safetensors_bytes(header + std::string(-header.size() % 8, ' '), data);
  }
};

}  // namespace

TEST_CASE("safetensors: F32, BF16 and F16 tensors read back bit-exact") {
  TempDir dir;
  const SampleFile sample;
  const std::string path = dir / "model.safetensors";
  write_file(path, sample.bytes());

  moe::io::SafetensorsFile file(path);
  REQUIRE(file.tensors().size() == 3);  // __metadata__ skipped
  CHECK(file.tensors()[0].name == "a.f32");
  CHECK(file.tensors()[1].name == "b.bf16");
  CHECK(file.tensors()[2].name == "c.f16");
  CHECK(file.find("missing") == nullptr);

  const moe::io::TensorView& a = *file.find("a.f32");
  CHECK(a.dtype == moe::io::DType::F32);
  CHECK(a.shape == std::vector<moe::Index>{2, 3});
  CHECK(a.elements() == 6);
  CHECK(a.bytes == 24);
  CHECK(a.file == path);
  std::vector<float> out(6);
  moe::io::to_float(a, out.data());
  for (std::size_t i = 0; i < 6; ++i) CHECK(bits(out[i]) == bits(sample.f32[i]));
  // The header is padded to 8 bytes and the file mapped at a page: the F32 data is aligned, no copy needed.
  const float* direct = moe::io::as_f32_if_possible(a);
  REQUIRE(direct != nullptr);
  CHECK(static_cast<const void*>(direct) == static_cast<const void*>(a.data));
  for (std::size_t i = 0; i < 6; ++i) CHECK(bits(direct[i]) == bits(sample.f32[i]));

  const moe::io::TensorView& b = *file.find("b.bf16");
  CHECK(b.dtype == moe::io::DType::BF16);
  CHECK(moe::io::as_f32_if_possible(b) == nullptr);
  out.resize(8);
  moe::io::to_float(b, out.data());
  for (std::size_t i = 0; i < 8; ++i) CHECK(bits(out[i]) == std::uint32_t(sample.bf16[i]) << 16);

  const moe::io::TensorView& c = *file.find("c.f16");
  CHECK(c.dtype == moe::io::DType::F16);
  CHECK(c.shape == std::vector<moe::Index>{3, 1, 2});
  out.resize(6);
  moe::io::to_float(c, out.data());
  for (std::size_t i = 0; i < 6; ++i) CHECK(bits(out[i]) == bits(moe::detail::f16_to_float(sample.f16[i])));
  CHECK(out[0] == 1.0f);
  CHECK(out[2] == 65504.0f);

  CHECK(std::string(moe::io::dtype_name(moe::io::DType::BF16)) == "BF16");
  CHECK(moe::io::dtype_size(moe::io::DType::F32) == 4);
  CHECK(moe::io::dtype_size(moe::io::DType::F16) == 2);

  SUBCASE("moving the file keeps the views valid") {
    moe::io::SafetensorsFile moved(std::move(file));
    CHECK(moved.find("a.f32") == &a);
    std::vector<float> again(6);
    moe::io::to_float(a, again.data());
    CHECK(bits(again[0]) == bits(1.5f));
  }
}

TEST_CASE("safetensors: unaligned F32 data is converted, scalars and empty tensors are fine") {
  TempDir dir;
  const std::string path = dir / "odd.safetensors";
  const std::string header = R"({"h": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},)"
                             R"( "s": {"dtype": "F32", "shape": [], "data_offsets": [2, 6]},)"
                             R"( "e": {"dtype": "F32", "shape": [0, 4], "data_offsets": [6, 6]},)"
                             R"( "z": {"dtype": "BF16", "shape": [4, 0], "data_offsets": [6, 6]}})";
  write_file(path,
             safetensors_bytes(header + std::string(-header.size() % 8, ' '), le16(0x3c00) + f32_bytes({-4.25f})));
  moe::io::SafetensorsFile file(path);
  const moe::io::TensorView& s = *file.find("s");
  CHECK(s.shape.empty());
  CHECK(s.elements() == 1);
  CHECK(moe::io::as_f32_if_possible(s) == nullptr);  // at byte 2 of the data: not 4-byte aligned
  float value = 0;
  moe::io::to_float(s, &value);
  CHECK(value == -4.25f);
  CHECK(file.find("e")->elements() == 0);
  CHECK(file.find("z")->elements() == 0);
}

TEST_CASE("safetensors: every broken file is refused with one line naming the file and the tensor") {
  TempDir dir;
  const std::string path = dir / "bad.safetensors";
  const std::string data = f32_bytes({1, 2, 3, 4, 5, 6});
  auto header_with = [](const std::string& entry) { return "{\"t\": " + entry + "}"; };
  auto refused = [&](const std::string& file, std::initializer_list<std::string> parts) {
    write_file(path, file);
    std::vector<std::string> all(parts);
    all.push_back(path);
    const std::string message = error_of([&] { moe::io::SafetensorsFile f(path); });
    INFO("message: " << message);
    CHECK(message.find('\n') == std::string::npos);
    for (const std::string& part : all) {
      INFO("expected part: " << part);
      CHECK(message.find(part) != std::string::npos);
    }
  };
  auto entry = [&](const std::string& e, std::initializer_list<std::string> parts) {
    refused(safetensors_bytes(header_with(e), data), parts);
  };

  refused("", {"too short", "0 bytes"});
  refused("abc", {"too short", "3 bytes"});
  refused(le64(1000) + "{}", {"header length 1000 runs past the end of the file (10 bytes, 2 after the length)"});
  refused(le64(std::uint64_t(1) << 63) + "{}", {"header length 9223372036854775808 runs past the end"});
  refused(safetensors_bytes("{\"t\": ", data), {"the header is not valid JSON"});
  refused(safetensors_bytes("", data), {"the header is not valid JSON"});
  refused(safetensors_bytes("{\"t\": \"\x01\"}", data), {"the header is not valid JSON"});
  refused(safetensors_bytes("[1, 2]", data), {"the header is a JSON array, not an object"});
  entry("7", {"tensor 't' is a JSON integer, not an object"});
  entry(R"({"shape": [6], "data_offsets": [0, 24]})", {"tensor 't' has no 'dtype'"});
  entry(R"({"dtype": "F32", "data_offsets": [0, 24]})", {"tensor 't' has no 'shape'"});
  entry(R"({"dtype": "F32", "shape": [6]})", {"tensor 't' has no 'data_offsets'"});
  entry(R"({"dtype": 32, "shape": [6], "data_offsets": [0, 24]})", {"tensor 't': 'dtype' is a JSON integer"});
  entry(R"({"dtype": "F32", "shape": "6", "data_offsets": [0, 24]})", {"tensor 't': 'shape' is a JSON string"});
  entry(R"({"dtype": "F32", "shape": [6], "data_offsets": {"begin": 0}})",
        {"tensor 't': 'data_offsets' is a JSON object"});
  entry(R"({"dtype": "I64", "shape": [3], "data_offsets": [0, 24]})",
        {"tensor 't' has dtype 'I64', which is not supported (supported: F32, BF16, F16, F8_E4M3, U8)"});
  entry(R"({"dtype": "F32", "shape": [-6], "data_offsets": [0, 24]})", {"tensor 't': shape entry 0 is negative (-6)"});
  entry(R"({"dtype": "F32", "shape": [2, 3.0], "data_offsets": [0, 24]})",
        {"tensor 't': shape entry 1 is 3.0, not an integer"});
  entry(R"({"dtype": "F32", "shape": [2, "3"], "data_offsets": [0, 24]})",
        {"tensor 't': shape entry 1 is a JSON string, not an integer"});
  entry(R"({"dtype": "F32", "shape": [9223372036854775808], "data_offsets": [0, 24]})",
        {"tensor 't': shape entry 0 (9223372036854775808) is too large"});
  entry(R"({"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 24]})",
        {"tensor 't': shape [4294967296, 4294967296] has too many elements"});
  entry(R"({"dtype": "F32", "shape": [6], "data_offsets": [0]})", {"tensor 't': 'data_offsets' must be [begin, end]"});
  entry(R"({"dtype": "F32", "shape": [6], "data_offsets": [0, 24, 48]})", {"'data_offsets' must be [begin, end]"});
  entry(R"({"dtype": "F32", "shape": [6], "data_offsets": [-1, 24]})", {"'data_offsets' must be [begin, end]"});
  entry(R"({"dtype": "F32", "shape": [6], "data_offsets": [0, 2.5e1]})", {"'data_offsets' must be [begin, end]"});
  entry(R"({"dtype": "F32", "shape": [0], "data_offsets": [8, 4]})", {"tensor 't': data_offsets [8, 4] end before"});
  entry(R"({"dtype": "F32", "shape": [7], "data_offsets": [0, 28]})",
        {"tensor 't': data_offsets [0, 28] run past the end of the data section (24 bytes)"});
  entry(R"({"dtype": "F32", "shape": [5], "data_offsets": [0, 24]})",
        {"tensor 't': data_offsets [0, 24] hold 24 bytes, but shape [5] of F32 needs 20"});
  entry(R"({"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 24]})", {"shape [2, 3] of BF16 needs 12"});
  entry(R"({"dtype": "F16\n", "shape": [6], "data_offsets": [0, 12]})", {"dtype 'F16\\x0a'"});  // one line
  refused(safetensors_bytes(R"({"first": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                            R"( "second": {"dtype": "F16", "shape": [4], "data_offsets": [8, 16]}})",
                            data),
          {"tensors 'first' [0, 16] and 'second' [8, 16] overlap"});
  refused(safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                            R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},)"
                            R"( "c": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})",
                            data),
          {"tensors 'a' [0, 16] and 'b' [4, 8] overlap"});
  // A long tensor that holds a later one whole.
  refused(safetensors_bytes(R"({"long": {"dtype": "F32", "shape": [5], "data_offsets": [0, 20]},)"
                            R"( "short": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},)"
                            R"( "x": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}})",
                            data),
          {"overlap", "'long' [0, 20]"});

  SUBCASE("a truncated file") {
    const std::string whole = SampleFile().bytes();
    refused(whole.substr(0, whole.size() - 10), {"tensor 'c.f16'", "run past the end of the data section"});
    refused(whole.substr(0, 20), {"runs past the end of the file"});
    refused(whole.substr(0, 5), {"too short"});
  }
  SUBCASE("files that are not there") {
    check_error([&] { moe::io::SafetensorsFile f(dir / "none.safetensors"); },
                {"cannot open " + (dir / "none.safetensors") + ": No such file or directory"});
    check_error([&] { moe::io::SafetensorsFile f(dir.path().string()); },
                {"cannot open", "it is a folder, not a regular file"});
  }
}

TEST_CASE("safetensors: F8_E4M3 tensors read as their e4m3 values, one byte each") {
  TempDir dir;
  const std::string path = dir / "f8.safetensors";
  const std::string codes = std::string("\x38\xb8\x7e\x01\x00\x80", 6);  // 1, -1, 448, 2^-9, 0, -0
  write_file(path, safetensors_bytes(R"({"w": {"dtype": "F8_E4M3", "shape": [2, 3], "data_offsets": [0, 6]}})", codes));
  moe::io::SafetensorsFile file(path);
  const moe::io::TensorView& w = *file.find("w");
  CHECK(w.dtype == moe::io::DType::F8_E4M3);
  CHECK(moe::io::dtype_size(w.dtype) == 1);
  CHECK(std::string(moe::io::dtype_name(w.dtype)) == "F8_E4M3");
  CHECK(moe::io::as_f32_if_possible(w) == nullptr);
  float v[6];
  moe::io::to_float(w, v);
  CHECK(v[0] == 1.0f);
  CHECK(v[1] == -1.0f);
  CHECK(v[2] == 448.0f);
  CHECK(v[3] == std::ldexp(1.0f, -9));
  CHECK(v[4] == 0.0f);
  CHECK(std::signbit(v[5]));
  write_file(path, safetensors_bytes(R"({"w": {"dtype": "F8_E4M3", "shape": [2, 3], "data_offsets": [0, 12]}})",
                                     codes + codes));
  check_error([&] { moe::io::SafetensorsFile f(path); }, {"tensor 'w'", "hold 12 bytes", "needs 6"});
}

TEST_CASE("readers refuse a FIFO (or any file that is not a regular file) at once, without waiting for a writer") {
  TempDir dir;
  const std::string fifo = dir / "pipe";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  check_error([&] { moe::io::SafetensorsFile f(fifo); },
              {"cannot open " + fifo + ": it is a FIFO, not a regular file"});
  check_error([&] { moe::io::read_npy(fifo); }, {"cannot open " + fifo, "FIFO"});
  ::mkdir((dir / "model").c_str(), 0700);
  REQUIRE(::mkfifo((dir / "model/config.json").c_str(), 0600) == 0);
  check_error([&] { moe::io::read_block_spec(dir / "model", "0"); }, {"config.json", "it is a FIFO"});
}

TEST_CASE("safetensors: adjacent tensors and gaps are fine") {
  TempDir dir;
  const std::string path = dir / "ok.safetensors";
  write_file(path, safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                                     R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},)"
                                     R"( "c": {"dtype": "F32", "shape": [1], "data_offsets": [20, 24]}})",
                                     f32_bytes({1, 2, 3, 4, 5, 6})));
  moe::io::SafetensorsFile file(path);
  float value = 0;
  moe::io::to_float(*file.find("c"), &value);
  CHECK(value == 6.0f);
}

// ---- model folders ---------------------------------------------------------------------------------------

namespace {

// A shard holding F32 tensors of 2 values each: name -> {v, v + 1}.
void write_shard(const std::string& path, const std::vector<std::pair<std::string, float>>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& [name, v] : tensors) {
    header[name] = {{"dtype", "F32"}, {"shape", {1, 2}}, {"data_offsets", {data.size(), data.size() + 8}}};
    data += f32_bytes({v, v + 1});
  }
  write_file(path, safetensors_bytes(header.dump(), data));
}

}  // namespace

TEST_CASE("Checkpoint: one model.safetensors") {
  TempDir dir;
  write_shard(dir / "model.safetensors", {{"w.a", 1.0f}, {"w.b", 3.0f}});
  const moe::io::Checkpoint ckpt(dir.path().string());
  CHECK(ckpt.names() == std::vector<std::string>{"w.a", "w.b"});
  CHECK(ckpt.has("w.b"));
  CHECK_FALSE(ckpt.has("w.c"));
  CHECK(ckpt.files().size() == 1);
  float v[2];
  moe::io::to_float(ckpt.tensor("w.b"), v);
  CHECK(v[1] == 4.0f);
  check_error([&] { ckpt.tensor("model.layers.3.mlp.gate.weight"); },
              {dir.path().string() + ": tensor 'model.layers.3.mlp.gate.weight' not found"});
}

TEST_CASE("Checkpoint: shards named by model.safetensors.index.json, each opened once") {
  TempDir dir;
  write_shard(dir / "model-00001-of-00002.safetensors", {{"layers.0.w", 1.0f}, {"layers.0.v", 10.0f}});
  write_shard(dir / "model-00002-of-00002.safetensors", {{"layers.1.w", 2.0f}, {"unlisted", 5.0f}});
  write_shard(dir / "model.safetensors", {{"decoy", 0.0f}});  // the index wins over a single file
  nlohmann::json index = {{"metadata", {{"total_size", 24}}},
                          {"weight_map",
                           {{"layers.0.w", "model-00001-of-00002.safetensors"},
                            {"layers.0.v", "model-00001-of-00002.safetensors"},
                            {"layers.1.w", "model-00002-of-00002.safetensors"}}}};
  const std::string index_path = dir / "model.safetensors.index.json";
  write_file(index_path, index.dump(2));

  {
    moe::io::Checkpoint ckpt(dir.path().string());
    CHECK(ckpt.names() == std::vector<std::string>{"layers.0.v", "layers.0.w", "layers.1.w"});
    CHECK(ckpt.files().size() == 2);
    CHECK_FALSE(ckpt.has("unlisted"));
    CHECK_FALSE(ckpt.has("decoy"));
    const moe::io::TensorView& w1 = ckpt.tensor("layers.1.w");
    CHECK(w1.file == dir / "model-00002-of-00002.safetensors");
    const moe::io::Checkpoint moved(std::move(ckpt));  // the views stay valid
    CHECK(&moved.tensor("layers.1.w") == &w1);
    float v[2];
    moe::io::to_float(moved.tensor("layers.0.v"), v);
    CHECK(v[0] == 10.0f);
    CHECK(v[1] == 11.0f);
    CHECK(moe::io::as_f32_if_possible(moved.tensor("layers.1.w"))[0] == 2.0f);
  }

  SUBCASE("a shard file that is missing") {
    index["weight_map"]["layers.2.w"] = "model-00003-of-00002.safetensors";
    write_file(index_path, index.dump());
    check_error([&] { moe::io::Checkpoint c(dir.path().string()); },
                {index_path, "tensor 'layers.2.w'", "model-00003-of-00002.safetensors", "does not exist"});
  }
  SUBCASE("a tensor its shard does not contain") {
    index["weight_map"]["layers.1.v"] = "model-00002-of-00002.safetensors";
    write_file(index_path, index.dump());
    check_error([&] { moe::io::Checkpoint c(dir.path().string()); },
                {index_path, "tensor 'layers.1.v'", "model-00002-of-00002.safetensors", "does not contain it"});
  }
  SUBCASE("a shard outside the folder") {
    index["weight_map"]["layers.1.w"] = "../model-00002-of-00002.safetensors";
    write_file(index_path, index.dump());
    check_error([&] { moe::io::Checkpoint c(dir.path().string()); }, {index_path, "not a file name inside"});
  }
  SUBCASE("a shard name that is not a string") {
    index["weight_map"]["layers.1.w"] = 2;
    write_file(index_path, index.dump());
    check_error([&] { moe::io::Checkpoint c(dir.path().string()); },
                {index_path, "tensor 'layers.1.w'", "JSON integer"});
  }
  SUBCASE("an index that is not JSON, or has no weight_map") {
    write_file(index_path, "{\"weight_map\": {");
    check_error([&] { moe::io::Checkpoint c(dir.path().string()); }, {index_path, "is not valid JSON"});
    write_file(index_path, "{\"metadata\": {}}");
    check_error([&] { moe::io::Checkpoint c(dir.path().string()); }, {index_path, "no \"weight_map\""});
  }
  SUBCASE("a broken shard is reported by its own name") {
    write_file(dir / "model-00002-of-00002.safetensors", "short");
    check_error([&] { moe::io::Checkpoint c(dir.path().string()); },
                {dir / "model-00002-of-00002.safetensors", "too short"});
  }
}

TEST_CASE("Checkpoint: a folder that is missing or has no weights") {
  TempDir dir;
  check_error([&] { moe::io::Checkpoint c(dir / "nope"); }, {"model folder " + (dir / "nope") + " does not exist"});
  check_error([&] { moe::io::Checkpoint c(dir.path().string()); },
              {dir.path().string() + " has no model.safetensors or model.safetensors.index.json"});
  write_file(dir / "file", "x");
  check_error([&] { moe::io::Checkpoint c(dir / "file"); }, {dir / "file", "is not a folder"});
  // PyTorch's pickled weights instead: named, with the way to convert them.
  write_file(dir / "pytorch_model-00001-of-00002.bin", "x");
  check_error([&] { moe::io::Checkpoint c(dir.path().string()); },
              {dir.path().string() + " has no model.safetensors or model.safetensors.index.json",
               "its pytorch_model-00001-of-00002.bin is PyTorch's pickle format", "safe_serialization=True"});
}

// ---- config.json -----------------------------------------------------------------------------------------

TEST_CASE("json_get reads typed keys and names the file and key when it cannot") {
  const nlohmann::json j = nlohmann::json::parse(R"({"hidden_size": 4096, "name": "mixtral", "norm": true,
      "eps": 1e-5, "big": 5000000000, "neg": -3, "unset": null, "text_size": "4096"})");
  CHECK(moe::io::json_get<moe::Index>(j, "hidden_size", "config.json") == 4096);
  CHECK(moe::io::json_get<int>(j, "neg", "config.json") == -3);
  CHECK(moe::io::json_get<std::string>(j, "name", "config.json") == "mixtral");
  CHECK(moe::io::json_get<bool>(j, "norm", "config.json"));
  CHECK(moe::io::json_get<float>(j, "eps", "config.json") == static_cast<float>(1e-5));
  CHECK(moe::io::json_get<double>(j, "hidden_size", "config.json") == 4096.0);  // an integer is a number
  CHECK(moe::io::json_get<std::int64_t>(j, "big", "config.json") == 5000000000);
  CHECK(moe::io::json_get_or<int>(j, "n_group", 1, "config.json") == 1);
  CHECK(moe::io::json_get_or<int>(j, "unset", 7, "config.json") == 7);  // null: not set
  CHECK(moe::io::json_get_or<std::string>(j, "hidden_act", "silu", "config.json") == "silu");
  CHECK(moe::io::json_get_or<int>(j, "hidden_size", 1, "config.json") == 4096);

  check_error([&] { moe::io::json_get<int>(j, "intermediate_size", "config.json"); },
              {"config.json: key 'intermediate_size' is missing"});
  check_error([&] { moe::io::json_get<int>(j, "text_size", "config.json"); },
              {"config.json: key 'text_size' has the wrong type (expected an integer, got string)"});
  check_error([&] { moe::io::json_get_or<int>(j, "text_size", 1, "config.json"); },
              {"key 'text_size' has the wrong type"});
  check_error([&] { moe::io::json_get<int>(j, "eps", "config.json"); },
              {"(expected an integer, got floating-point number)"});
  check_error([&] { moe::io::json_get<bool>(j, "hidden_size", "config.json"); }, {"(expected a boolean, got integer)"});
  check_error([&] { moe::io::json_get<std::string>(j, "unset", "config.json"); }, {"(expected a string, got null)"});
  check_error([&] { moe::io::json_get<double>(j, "name", "config.json"); }, {"(expected a number, got string)"});
  check_error([&] { moe::io::json_get<int>(j, "big", "config.json"); },
              {"config.json: key 'big' = 5000000000 is out of range"});
  check_error([&] { moe::io::json_get<unsigned>(j, "neg", "config.json"); }, {"key 'neg' = -3 is out of range"});
  check_error([&] { moe::io::json_get<int>(j["name"], "x", "config.json"); }, {"config.json is a JSON string"});
}

// moe/io/file.hpp: what the readers share: a read-only memory map, an all-or-nothing writer, little-endian
// loads, an overflow-checked product, and quoting of untrusted text for error messages.
//
// POSIX only (open, fstat, mmap, rename): the io/ headers are optional and the core never includes them.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../config.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace io {
namespace detail {

// detail::fail means the same inside moe::io as in moe: throw moe::Error("moe::<where>: <problem>").
using ::moe::detail::fail;

inline std::string errno_text(int error) { return std::strerror(error); }

// Whether `text` ends with `suffix` (std::string::ends_with is C++20).
inline bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Untrusted text (a dtype from a file, a tensor name) made safe for a one-line message: control bytes, and
// with escape_high the bytes >= 0x80 too, become \xNN; longer than `limit` bytes, it is cut with "...".
inline std::string quoted_text(const std::string& text, bool escape_high = false, std::size_t limit = 80) {
  static const char* const kHex = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < limit; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f || (escape_high && c >= 0x80)) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > limit) out += "...";
  return out;
}

// Files store little-endian values; these read them on any host, unaligned.
inline std::uint16_t load_le16(const unsigned char* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }
inline std::uint32_t load_le32(const unsigned char* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) | (std::uint32_t(p[3]) << 24);
}
inline std::uint64_t load_le64(const unsigned char* p) {
  return std::uint64_t(load_le32(p)) | (std::uint64_t(load_le32(p + 4)) << 32);
}
inline void store_le32(unsigned char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

// The product of the factors in `product`; false when it overflows 64 bits (a zero factor makes it 0 whatever
// the others are).
inline bool checked_product(std::initializer_list<std::uint64_t> factors, std::uint64_t& product) {
  product = 1;
  for (const std::uint64_t f : factors) {
    if (f == 0) {
      product = 0;
      return true;
    }
  }
  for (const std::uint64_t f : factors) {
    if (product > std::numeric_limits<std::uint64_t>::max() / f) return false;
    product *= f;
  }
  return true;
}

// A whole file, mapped read-only (MAP_PRIVATE). Move-only; the mapping keeps its address when the object
// moves, so pointers into data() stay valid. Another process truncating the file while it is mapped makes
// reads past the new end fault (SIGBUS): the usual price of mmap, which every checkpoint reader pays.
class MappedFile {
public:
  MappedFile() = default;
  // Errors start "moe::<where>: cannot open PATH: <strerror>". Anything but a regular file (a folder, a FIFO,
  // a device) is refused before a byte is read: O_NONBLOCK makes open() return at once on a FIFO without a
  // writer, where a plain open() would wait for one forever, and fstat() then names what the path is.
  MappedFile(const std::string& path, const char* where) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      const int error = errno;
      fail(where, "cannot open " + path + ": " + errno_text(error));
    }
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      const int error = errno;
      ::close(fd);
      fail(where, "cannot open " + path + ": " + errno_text(error));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      const char* kind = S_ISDIR(st.st_mode)                          ? "a folder"
                         : S_ISFIFO(st.st_mode)                       ? "a FIFO"
                         : S_ISSOCK(st.st_mode)                       ? "a socket"
                         : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                                                                      : "a special file";
      fail(where, "cannot open " + path + ": it is " + std::string(kind) + ", not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {  // mmap refuses a length of 0; an empty file has no bytes to map
      void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (map == MAP_FAILED) {
        const int error = errno;
        ::close(fd);
        fail(where, "cannot map " + path + ": " + errno_text(error));
      }
      map_ = map;
    }
    ::close(fd);  // the mapping stays
  }
  MappedFile(MappedFile&& other) noexcept
      : path_(std::move(other.path_)), map_(std::exchange(other.map_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      release();
      path_ = std::move(other.path_);
      map_ = std::exchange(other.map_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() { release(); }

  const unsigned char* data() const { return static_cast<const unsigned char*>(map_); }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

private:
  void release() {
    if (map_ != nullptr) ::munmap(map_, size_);
    map_ = nullptr;
    size_ = 0;
  }

  std::string path_;
  void* map_ = nullptr;
  std::size_t size_ = 0;
};

// Writes PATH all or nothing: the bytes go to PATH.tmp.<pid>, which is flushed to disk and renamed over PATH
// by commit(). Any failure, or destruction before commit(), removes the temporary file, so PATH is either
// its old self or complete. Errors start "moe::<where>: cannot write PATH: ".
class AtomicFileWriter {
public:
  AtomicFileWriter(const std::string& path, const char* where)
      : path_(path), temp_(path + ".tmp." + std::to_string(::getpid())), where_(where) {
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd_ < 0) fail_with(errno, "creating ", temp_);
    created_ = true;
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter() { discard(); }

  void write(const void* bytes, std::size_t size) {
    const char* p = static_cast<const char*>(bytes);
    while (size > 0) {
      const ssize_t n = ::write(fd_, p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail_with(n < 0 ? errno : EIO, "writing ", temp_);
      p += n;
      size -= static_cast<std::size_t>(n);
    }
  }

  void commit() {
    if (::fsync(fd_) != 0) fail_with(errno, "flushing ", temp_);
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) fail_with(errno, "closing ", temp_);
    if (::rename(temp_.c_str(), path_.c_str()) != 0) fail_with(errno, "renaming ", temp_);
    committed_ = true;
  }

private:
  // `error` is errno as the failing call left it: passed by value, it is read before anything else runs.
  [[noreturn]] void fail_with(int error, const char* doing, const std::string& what) {
    discard();
    fail(where_, "cannot write " + path_ + ": " + errno_text(error) + " (" + doing + what + ")");
  }
  void discard() {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    if (created_ && !committed_) ::unlink(temp_.c_str());
    created_ = false;
  }

  std::string path_, temp_;
  const char* where_;
  int fd_ = -1;
  bool created_ = false, committed_ = false;
};

}  // namespace detail
}  // namespace io
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

// moe/detail/aligned_buffer.hpp: an owning, cache-line-aligned array of trivially copyable values.
#pragma once

#include <cstring>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "../config.hpp"

namespace moe {
namespace detail {

template <class T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable<T>::value, "AlignedBuffer holds plain values only");

public:
  // 64 bytes: one cache line, and the width of an AVX-512 register.
  static constexpr std::size_t kAlignment = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(Index size) { resize(size); }
  AlignedBuffer(const AlignedBuffer& other) : AlignedBuffer(other.size_) {
    if (size_ > 0) std::memcpy(data_, other.data_, bytes());
  }
  AlignedBuffer(AlignedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  ~AlignedBuffer() { release(); }

  // Discards the contents; the new elements are zero.
  void resize(Index size) {
    MOE_CHECK(size >= 0, "AlignedBuffer::resize", "negative size " + std::to_string(size));
    if (size != size_) {
      release();
      if (size > 0)
        data_ =
            static_cast<T*>(::operator new(sizeof(T) * static_cast<std::size_t>(size), std::align_val_t(kAlignment)));
      size_ = size;
    }
    if (size_ > 0) std::memset(static_cast<void*>(data_), 0, bytes());
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  Index size() const { return size_; }
  T& operator[](Index i) { return data_[i]; }
  const T& operator[](Index i) const { return data_[i]; }

private:
  std::size_t bytes() const { return sizeof(T) * static_cast<std::size_t>(size_); }
  void release() {
    if (data_ != nullptr) ::operator delete(data_, std::align_val_t(kAlignment));
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  Index size_ = 0;
};

}  // namespace detail
}  // namespace moe

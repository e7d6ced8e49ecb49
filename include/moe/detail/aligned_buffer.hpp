// moe/detail/aligned_buffer.hpp: an owning, cache-line-aligned array of trivially copyable values; on Linux,
// arrays of a huge page or more are backed by transparent huge pages, and so are smaller weight arrays.
#pragma once

#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "../config.hpp"
#include "huge_page_pool.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {

// Where an AlignedBuffer puts an array smaller than a huge page: on the heap, or, for weights that live as
// long as their layer, in the shared huge-page chunks of HugePagePool (on Linux without AddressSanitizer;
// on the heap elsewhere).
enum class SmallArrays { kHeap, kHugePagePool };

template <class T, SmallArrays kSmallArrays = SmallArrays::kHeap>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable<T>::value, "AlignedBuffer holds plain values only");

public:
  // 64 bytes: one cache line, and the width of an AVX-512 register.
  static constexpr std::size_t kAlignment = 64;
  // Why huge pages: a decode pass streams each selected expert's weights once from DRAM, and with 4 KiB
  // pages every 4 KiB of that stream is a TLB miss and a page walk (two-dimensional in a virtual machine)
  // and a point where the hardware prefetchers stop (docs/PERFORMANCE.md, decision "Weights in huge pages").
  // Debian's default transparent-huge-page setting is "madvise": only memory that asks gets 2 MiB pages.
  // So on Linux an array of at least kHugePage bytes is its own mapping, starting on a huge-page boundary
  // and advised MADV_HUGEPAGE; the kernel backs each whole 2 MiB of it with one page where it can (the
  // advice is a hint: no huge pages, no harm) and the tail past the last whole one with 4 KiB pages, so no
  // memory is wasted. 2 MiB is the huge page of x86-64 and of arm64 with 4 KiB pages; elsewhere the advice
  // only costs the alignment.
  static constexpr std::size_t kHugePage = std::size_t(2) << 20;
  // Whether arrays smaller than kHugePage come from HugePagePool.
#if defined(MOE_DETAIL_HUGE_PAGE_POOL)
  static constexpr bool kPoolsSmallArrays = kSmallArrays == SmallArrays::kHugePagePool;
#else
  static constexpr bool kPoolsSmallArrays = false;
#endif

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
      if (size > 0) data_ = static_cast<T*>(allocate(sizeof(T) * static_cast<std::size_t>(size)));
      size_ = size;
    }
    // Touches every page: the kernel backs them now (with huge pages where advised), not during a pass.
    if (size_ > 0) std::memset(static_cast<void*>(data_), 0, bytes());
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  Index size() const { return size_; }
  T& operator[](Index i) { return data_[i]; }
  const T& operator[](Index i) const { return data_[i]; }

private:
  std::size_t bytes() const { return sizeof(T) * static_cast<std::size_t>(size_); }

#if defined(__linux__)
  // The mapping of an array of `bytes` >= kHugePage: whole (base) pages.
  static std::size_t mapped_bytes(std::size_t bytes) {
    const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return (bytes + page - 1) / page * page;
  }

  static void* allocate(std::size_t bytes) {
#if defined(MOE_DETAIL_HUGE_PAGE_POOL)
    if (kPoolsSmallArrays && bytes < kHugePage) return HugePagePool::instance().allocate(bytes, kAlignment);
#endif
    if (bytes < kHugePage) return ::operator new(bytes, std::align_val_t(kAlignment));
    return map_huge_pages(mapped_bytes(bytes), kHugePage);  // each array its own mapping
  }

  // Frees what allocate(bytes) returned, by the same test of its size.
  static void deallocate(void* data, std::size_t bytes) {
#if defined(MOE_DETAIL_HUGE_PAGE_POOL)
    if (kPoolsSmallArrays && bytes < kHugePage) {
      HugePagePool::instance().deallocate(data);
      return;
    }
#endif
    if (bytes < kHugePage)
      ::operator delete(data, std::align_val_t(kAlignment));
    else
      munmap(data, mapped_bytes(bytes));
  }
#else
  static void* allocate(std::size_t bytes) { return ::operator new(bytes, std::align_val_t(kAlignment)); }
  static void deallocate(void* data, std::size_t) { ::operator delete(data, std::align_val_t(kAlignment)); }
#endif

  void release() {
    if (data_ != nullptr) deallocate(data_, bytes());
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  Index size_ = 0;
};

}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

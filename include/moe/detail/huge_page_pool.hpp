// moe/detail/huge_page_pool.hpp: mappings advised into transparent huge pages, and the pool that carves weight
// arrays smaller than a huge page from shared ones (Linux only; see AlignedBuffer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <new>

#include "../config.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#endif

// Under AddressSanitizer weights stay on the heap, where it puts a guard zone around each array: a kernel
// that reads past a small test matrix is then caught, which it would not be inside a shared chunk.
#if defined(__SANITIZE_ADDRESS__)
#define MOE_DETAIL_ADDRESS_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOE_DETAIL_ADDRESS_SANITIZER 1
#endif
#endif

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {

#if defined(__linux__)
// Maps `length` bytes (a whole number of pages) starting on an `alignment` boundary (a power of two, at
// least a page), advised MADV_HUGEPAGE: maps `alignment` more than needed, then unmaps the stretches before
// the boundary and past the end, so nothing is left over around it.
inline void* map_huge_pages(std::size_t length, std::size_t alignment) {
  void* mapped = mmap(nullptr, length + alignment, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) throw std::bad_alloc();
  const auto start = reinterpret_cast<std::uintptr_t>(mapped);
  const std::uintptr_t aligned = (start + alignment - 1) / alignment * alignment;
  const std::uintptr_t end = aligned + length, mapped_end = start + length + alignment;
  if (aligned > start) munmap(mapped, aligned - start);
  if (mapped_end > end) munmap(reinterpret_cast<void*>(end), mapped_end - end);
  madvise(reinterpret_cast<void*>(aligned), length, MADV_HUGEPAGE);  // a hint: its failure is no error
  return reinterpret_cast<void*>(aligned);
}
#endif

#if defined(__linux__) && !defined(MOE_DETAIL_ADDRESS_SANITIZER)
#define MOE_DETAIL_HUGE_PAGE_POOL 1

// Why: AlignedBuffer gives an array of a huge page or more its own mapping in 2 MiB pages, but a fine-grained
// expert's matrices are smaller than that (hidden 1024, FFN 512: 0.5 and 0.25 MiB at q4, 1 and 0.5 MiB at
// q8), and from the heap they would sit in 4 KiB pages, where a decode pass's weight stream pays a TLB miss
// and a prefetcher stop every 4 KiB. So packed weights below a huge page are placed one after another in
// chunks of kChunk bytes, each chunk one mapping on a kChunk boundary advised MADV_HUGEPAGE: a layer's
// experts then share huge pages, as an arena per layer would, without the layer owning one
// (docs/PERFORMANCE.md, decision "Small weight arrays share huge pages").
//
// Lifetime: space is handed out in order and never reused; a chunk is unmapped when the last array in it is
// freed. That suits weights, which are packed once when a layer is built (repacking the same shape keeps
// its arrays: AlignedBuffer::resize reallocates only on a new size) and freed with the layer, so at most
// the chunks a layer shares with its neighbours outlive it. Arrays that come and go during a program's life
// (workspaces) would leave holes that are never filled, so they stay on the heap.
class HugePagePool {
public:
  // 32 MiB: 16 huge pages, so that a small layer's weights fill one chunk; the mapping is address space
  // only until touched, and the kernel backs it 2 MiB at a time, so at most one part-used huge page per
  // chunk is memory beyond what the arrays take.
  static constexpr std::size_t kChunk = std::size_t(32) << 20;

  // One pool per process, never destroyed: a layer that is itself a static object may free its weights
  // after other statics are gone.
  static HugePagePool& instance() {
    static HugePagePool* const pool = new HugePagePool;
    return *pool;
  }

  // bytes (0 < bytes < kChunk) at an address that is a multiple of alignment (a power of two, <= 4096).
  void* allocate(std::size_t bytes, std::size_t alignment) {
    const std::lock_guard<std::mutex> lock(mutex_);
    auto open = chunks_.find(open_);
    std::size_t offset = open == chunks_.end() ? 0 : (open->second.used + alignment - 1) / alignment * alignment;
    if (open == chunks_.end() || offset + bytes > kChunk) {
      open = chunks_.emplace(reinterpret_cast<std::uintptr_t>(map_huge_pages(kChunk, kChunk)), Chunk{}).first;
      open_ = open->first;
      offset = 0;
    }
    open->second.used = offset + bytes;
    ++open->second.live;
    return reinterpret_cast<void*>(open->first + offset);
  }

  // Frees what allocate returned; the chunk goes back to the system with its last array.
  void deallocate(void* data) {
    const std::lock_guard<std::mutex> lock(mutex_);
    const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(data) / kChunk * kChunk;
    const auto chunk = chunks_.find(base);
    if (chunk == chunks_.end()) return;  // not ours: cannot happen through AlignedBuffer
    if (--chunk->second.live > 0) return;
    munmap(reinterpret_cast<void*>(base), kChunk);
    chunks_.erase(chunk);
    if (open_ == base) open_ = 0;
  }

  // For tests: the chunks mapped now, and whether `data` lies in one of them.
  std::size_t chunks() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return chunks_.size();
  }
  bool owns(const void* data) {
    const std::lock_guard<std::mutex> lock(mutex_);
    return chunks_.count(reinterpret_cast<std::uintptr_t>(data) / kChunk * kChunk) > 0;
  }

private:
  struct Chunk {
    std::size_t used = 0;  // bytes handed out from the start
    std::size_t live = 0;  // arrays not yet freed
  };

  std::mutex mutex_;
  std::map<std::uintptr_t, Chunk> chunks_;  // by base address, a multiple of kChunk
  std::uintptr_t open_ = 0;                 // the chunk new arrays go to (0: none yet, or it was freed)
};

#endif

}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe

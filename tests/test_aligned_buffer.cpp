// tests/test_aligned_buffer.cpp: detail::AlignedBuffer and the huge-page pool small weight arrays share.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <moe/moe.hpp>

#include "kernel_check.hpp"
#include "reference.hpp"

using kernel_check::random_vector;

using HeapBuffer = moe::detail::AlignedBuffer<float>;
using PooledBuffer = moe::detail::AlignedBuffer<float, moe::detail::SmallArrays::kHugePagePool>;

TEST_CASE_TEMPLATE("AlignedBuffer: zeroed, aligned and copied at every size, huge-page arrays on a huge-page boundary",
                   Buffer, HeapBuffer, PooledBuffer) {
  constexpr moe::Index kHugeFloats = moe::Index(Buffer::kHugePage / sizeof(float));
  // Sizes below, at and past one huge page, one with a tail of a part page, and back down: each resize
  // releases what the previous size took, by operator delete or by unmapping.
  const moe::Index sizes[] = {1, 1000, kHugeFloats - 1, kHugeFloats, 3 * kHugeFloats + 1001, 17, 2 * kHugeFloats + 5};
  Buffer buffer;
  CHECK(buffer.size() == 0);
  for (moe::Index size : sizes) {
    CAPTURE(size);
    buffer.resize(size);
    REQUIRE(buffer.size() == size);
    const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
    CHECK(address % Buffer::kAlignment == 0);
#if defined(__linux__)
    if (size * moe::Index(sizeof(float)) >= moe::Index(Buffer::kHugePage)) CHECK(address % Buffer::kHugePage == 0);
#endif
    bool zero = true;
    for (moe::Index i = 0; i < size; ++i) zero = zero && buffer[i] == 0.0f;
    CHECK(zero);
    for (moe::Index i = 0; i < size; ++i) buffer[i] = float(i % 4093);  // every page, the last element too
    const Buffer copy(buffer);
    bool same = copy.size() == size;
    for (moe::Index i = 0; same && i < size; ++i) same = copy[i] == float(i % 4093);
    CHECK(same);
    Buffer moved(std::move(buffer));
    CHECK(moved.size() == size);
    CHECK(buffer.size() == 0);
    CHECK(moved[size - 1] == float((size - 1) % 4093));
    buffer = moved;  // copy-assigned back, for the next size
    CHECK(buffer[size - 1] == moved[size - 1]);
  }
  // Resizing to the same size zeroes the contents again.
  buffer.resize(buffer.size());
  CHECK(buffer[buffer.size() - 1] == 0.0f);
}

#if defined(MOE_DETAIL_HUGE_PAGE_POOL)
TEST_CASE(
    "HugePagePool: small arrays share chunks in order, without overlap; a chunk is unmapped with its last array") {
  using Pool = moe::detail::HugePagePool;
  Pool& pool = Pool::instance();
  const std::size_t before = pool.chunks();
  auto chunk_of = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) / Pool::kChunk; };
  // 40 arrays of about 1.14 MiB (not a multiple of a page or of the alignment): 45 MiB, more than one chunk.
  constexpr int kArrays = 40;
  auto bytes_of = [](int i) { return std::size_t(1200001 - 4 * i); };
  std::vector<unsigned char*> arrays;
  for (int i = 0; i < kArrays; ++i) {
    arrays.push_back(static_cast<unsigned char*>(pool.allocate(bytes_of(i), 64)));
    CHECK(reinterpret_cast<std::uintptr_t>(arrays.back()) % 64 == 0);
    std::memset(arrays.back(), i + 1, bytes_of(i));  // every byte is writable
  }
  // Each array starts past the end of the one before, or in a later chunk. 27 fit a chunk, so at most 3 of
  // the 39 neighbours are apart (2 new chunks, and the end of one that other arrays had started).
  int neighbours_in_one_chunk = 0;
  for (int i = 1; i < kArrays; ++i) {
    if (chunk_of(arrays[std::size_t(i)]) != chunk_of(arrays[std::size_t(i - 1)])) continue;
    ++neighbours_in_one_chunk;
    CHECK(arrays[std::size_t(i)] >= arrays[std::size_t(i - 1)] + bytes_of(i - 1));
  }
  CHECK(neighbours_in_one_chunk >= 36);
  CHECK(pool.chunks() >= before + 2);
  bool intact = true;  // nothing was written over
  for (int i = 0; i < kArrays; ++i)
    for (std::size_t j = 0; j < bytes_of(i); j += 4093)
      intact = intact && arrays[std::size_t(i)][j] == i + 1 && arrays[std::size_t(i)][bytes_of(i) - 1] == i + 1;
  CHECK(intact);
  for (int i = 0; i < kArrays; ++i) {
    CHECK(pool.owns(arrays[std::size_t(i)]));
    pool.deallocate(arrays[std::size_t(i)]);
  }
  // Every chunk these arrays used went back to the system with its last array.
  CHECK(pool.chunks() == before);

  // Weights below a huge page come from the pool, scratch arrays from the heap; at and past a huge page
  // each is its own mapping, whichever the kind.
  const PooledBuffer small_weights(1000), large_weights(moe::Index(PooledBuffer::kHugePage / sizeof(float)));
  const HeapBuffer scratch(1000);
  CHECK(pool.owns(small_weights.data()));
  CHECK_FALSE(pool.owns(large_weights.data()));
  CHECK_FALSE(pool.owns(scratch.data()));
}
#endif

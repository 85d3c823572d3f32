// SPDX-License-Identifier: Apache-2.0
//! @file
//! Block level radix select: the key of the count-th largest of n 64-bit keys, found by 8
//! passes of an 8-bit histogram. Keys are produced on demand by a functor (no staging copy);
//! keys must be distinct (frugal's topk_key is) and 0 means "absent".
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/ordered_key.cuh>

#include <cstdint>

namespace frugal {

#if FRUGAL_KERNEL_CODE

template <int BlockThreads>
class block_radix_select {
  static_assert(BlockThreads % 32 == 0 && BlockThreads <= 1024,
                "frugal::block_radix_select: BlockThreads must be a multiple of 32, at most 1024");

 public:
  struct TempStorage {
    unsigned histogram[256];
    topk_key prefix;
    long long needed;
  };

  FRUGAL_DEVICE explicit block_radix_select(TempStorage& storage) : storage_(storage) {}

  //! The key t such that exactly `count` of the non-zero keys key_of(i), i in [0, n), are >= t.
  //! Requires 1 <= count <= the number of non-zero keys. Every thread of the block must call it
  //! with the same arguments; 8 passes over the keys, 3 barriers each.
  template <class KeyOf>
  FRUGAL_DEVICE topk_key threshold(KeyOf key_of, std::int64_t n, long long count) {
    const int tid = int(threadIdx.x);
    topk_key prefix = 0, mask = 0;
    long long needed = count;
    for (int shift = 56; shift >= 0; shift -= 8) {
      for (int b = tid; b < 256; b += BlockThreads) storage_.histogram[b] = 0;
      __syncthreads();
      for (std::int64_t i = tid; i < n; i += BlockThreads) {
        const topk_key key = key_of(i);
        if (key != empty_topk_key && (key & mask) == prefix) atomicAdd(&storage_.histogram[(key >> shift) & 0xff], 1u);
      }
      __syncthreads();
      if (tid == 0) {
        // The bin, from the top, in which the needed-th largest key lies.
        long long above = 0;
        int bin = 255;
        for (; bin > 0; --bin) {
          if (above + storage_.histogram[bin] >= needed) break;
          above += storage_.histogram[bin];
        }
        storage_.needed = needed - above;
        storage_.prefix = prefix | (topk_key(bin) << shift);
      }
      __syncthreads();
      needed = storage_.needed;
      prefix = storage_.prefix;
      mask |= topk_key(0xff) << shift;
      __syncthreads();  // the histogram is cleared again next pass
    }
    return prefix;
  }

 private:
  TempStorage& storage_;
};

#endif  // FRUGAL_KERNEL_CODE

}  // namespace frugal

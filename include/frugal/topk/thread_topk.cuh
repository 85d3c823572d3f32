// SPDX-License-Identifier: Apache-2.0
//! @file
//! Thread level top-k: keeps the K largest topk_keys a thread has seen, sorted descending, in
//! registers. Registers only, no intrinsics: the same code runs under g++ and is tested there.
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/ordered_key.cuh>

namespace frugal {

//! The K largest keys inserted so far, `keys[0]` the largest; unused slots hold empty_topk_key.
//!
//! `insert` is a fixed compare-exchange chain (K steps, fully unrolled, no data-dependent
//! branches or register indexing), so it costs the same for every input and never spills to
//! local memory for K <= 32.
template <int K>
struct thread_topk {
  static_assert(K >= 1 && K <= 64, "frugal::thread_topk: K must be in [1, 64]");
  topk_key keys[K];

  FRUGAL_HOST_DEVICE thread_topk() {
    FRUGAL_UNROLL
    for (int i = 0; i < K; ++i) keys[i] = empty_topk_key;
  }

  FRUGAL_HOST_DEVICE void insert(topk_key key) {
    FRUGAL_UNROLL
    for (int i = 0; i < K; ++i) {
      const bool larger = key > keys[i];
      const topk_key kept = larger ? key : keys[i];
      key = larger ? keys[i] : key;
      keys[i] = kept;
    }
  }

  FRUGAL_HOST_DEVICE void insert(float value, std::uint32_t index) { insert(make_topk_key(value, index)); }
};

//! The K largest of `values` (index i for values[i]), in descending order with ties to the lower
//! index and NaN last; slots beyond N stay empty.
template <int K, int N>
FRUGAL_HOST_DEVICE thread_topk<K> thread_topk_of(const float (&values)[N]) {
  static_assert(N >= 1, "frugal::thread_topk_of: N must be at least 1");
  thread_topk<K> best;
  FRUGAL_UNROLL
  for (int i = 0; i < N; ++i) best.insert(values[i], std::uint32_t(i));
  return best;
}

}  // namespace frugal

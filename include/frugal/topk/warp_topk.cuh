// SPDX-License-Identifier: Apache-2.0
//! @file
//! Warp level top-k: the k largest of the Width * ItemsPerLane keys a (logical) warp holds.
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/ordered_key.cuh>
#include <frugal/core/warp.cuh>

namespace frugal {

//! Most values one warp selects from (32 lanes x 32 items).
inline constexpr int warp_topk_max_items = 1024;
//! Largest k a warp selection returns (one result per lane).
inline constexpr int warp_topk_max_k = 32;

#if FRUGAL_KERNEL_CODE

namespace detail {

// Sorts keys in descending order with Batcher's odd-even merge network: compile-time indices
// only, so the keys stay in registers. Comparators that would touch the padding up to a power of
// two are dropped (padding is smaller than every key and never moves).
FRUGAL_HOST_DEVICE constexpr int ceil_log2(int n) {
  int l = 0;
  while ((1 << l) < n) ++l;
  return l;
}

template <int N>
FRUGAL_DEVICE void sort_keys_descending(topk_key (&a)[N]) {
  constexpr int levels = ceil_log2(N);
  constexpr int P2 = 1 << levels;
  FRUGAL_UNROLL
  for (int lp = 0; lp < levels; ++lp) {
    FRUGAL_UNROLL
    for (int lk = lp; lk >= 0; --lk) {
      const int p = 1 << lp, d = 1 << lk;
      FRUGAL_UNROLL
      for (int j = d % p; j + d < P2; j += 2 * d) {
        FRUGAL_UNROLL
        for (int i = 0; i < d; ++i) {
          const int lo = i + j, hi = i + j + d;
          if (hi < N && lo / (2 * p) == hi / (2 * p)) {
            const topk_key x = a[lo], y = a[hi];
            const bool swap = y > x;
            a[lo] = swap ? y : x;
            a[hi] = swap ? x : y;
          }
        }
      }
    }
  }
}

// The largest key of the logical warp, in every lane. A full warp on sm_80 and later (and in host
// SIMT) uses two redux.sync instructions, the high words then the low words of the lanes holding
// the largest high word; otherwise a butterfly of 64-bit shuffles.
template <int Width>
FRUGAL_DEVICE topk_key warp_max_key(topk_key key) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  if constexpr (Width == 32) {
    const unsigned high = unsigned(key >> 32), low = unsigned(key);
    const unsigned top = __reduce_max_sync(full_warp_mask, high);
    const unsigned top_low = __reduce_max_sync(full_warp_mask, high == top ? low : 0u);
    return (topk_key(top) << 32) | top_low;
  }
#endif
  return warp_max<Width>(key);
}

}  // namespace detail

//! Selects the `k` largest keys held by the calling logical warp (Width lanes, a power of two;
//! several logical warps of one warp select independently). Lane r < k of the logical warp
//! returns the r-th largest key (r = 0 is the largest); other lanes return empty_topk_key, as do
//! ranks beyond the number of non-empty keys. Requires k <= Width; every lane of the warp must
//! call it with the same k. `items` is consumed (its contents afterwards are unspecified).
//!
//! Algorithm: each lane sorts its items (a sorting network, registers only); then k rounds, each
//! a warp max of the lanes' first items (two redux.sync on a full warp from sm_80, a butterfly
//! otherwise). Keys are distinct, so exactly one lane owns the winner; it shifts its items down.
//! Cost per round: the reduction and ItemsPerLane - 1 register moves, instead of a rescan.
template <int ItemsPerLane, int Width = 32>
FRUGAL_DEVICE topk_key warp_topk(topk_key (&items)[ItemsPerLane], int k) {
  static_assert(ItemsPerLane >= 1 && ItemsPerLane * 32 <= warp_topk_max_items,
                "frugal::warp_topk: ItemsPerLane must be in [1, 32] (at most 1024 values per warp)");
  FRUGAL_CHECK_LOGICAL_WARP(Width);
  const int lane = int(lane_index()) % Width;
  detail::sort_keys_descending(items);

  topk_key mine = empty_topk_key;
  // Rounds stay a loop: unrolling k rounds multiplies code size (and compile time) by k.
#if defined(__CUDA_ARCH__)
#pragma unroll 1
#endif
  for (int rank = 0; rank < k; ++rank) {
    const topk_key winner = detail::warp_max_key<Width>(items[0]);
    if (lane == rank) mine = winner;
    // Fewer than k keys: the winner is empty and every lane "pops" an empty key, which changes
    // nothing that matters (empty keys stay last).
    if (items[0] == winner) {
      FRUGAL_UNROLL
      for (int i = 0; i + 1 < ItemsPerLane; ++i) items[i] = items[i + 1];
      items[ItemsPerLane - 1] = empty_topk_key;
    }
  }
  return mine;
}

#endif  // FRUGAL_KERNEL_CODE

}  // namespace frugal

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

//! Selects the `k` largest keys held by the calling logical warp (Width lanes, a power of two;
//! several logical warps of one warp select independently). Lane r < k of the logical warp
//! returns the r-th largest key (r = 0 is the largest); other lanes return empty_topk_key, as do
//! ranks beyond the number of non-empty keys. Requires k <= Width; every lane of the warp must
//! call it with the same k. `items` is consumed: selected keys are replaced by empty_topk_key.
//!
//! Algorithm: k rounds; each round one butterfly max-reduction of the lanes' current best keys.
//! Keys are distinct, so exactly one lane owns the winner; it removes it and rescans its items.
//! Cost per round: log2(Width) 64-bit shuffles + ItemsPerLane compares; no shared memory.
template <int ItemsPerLane, int Width = 32>
FRUGAL_DEVICE topk_key warp_topk(topk_key (&items)[ItemsPerLane], int k) {
  static_assert(ItemsPerLane >= 1 && ItemsPerLane * 32 <= warp_topk_max_items,
                "frugal::warp_topk: ItemsPerLane must be in [1, 32] (at most 1024 values per warp)");
  FRUGAL_CHECK_LOGICAL_WARP(Width);
  const int lane = int(lane_index()) % Width;
  topk_key best = items[0];
  FRUGAL_UNROLL
  for (int i = 1; i < ItemsPerLane; ++i) best = items[i] > best ? items[i] : best;

  topk_key mine = empty_topk_key;
  // Rounds stay a loop: unrolling k rounds of an unrolled rescan multiplies code size (and
  // compile time) by k for no gain.
#if defined(__CUDA_ARCH__)
#pragma unroll 1
#endif
  for (int rank = 0; rank < k; ++rank) {
    const topk_key winner = warp_max<Width>(best);
    if (lane == rank) mine = winner;
    // Fewer than k keys: the winner is empty and every lane "removes" it, which changes nothing.
    if (best == winner) {
      best = empty_topk_key;
      FRUGAL_UNROLL
      for (int i = 0; i < ItemsPerLane; ++i) {
        items[i] = items[i] == winner ? empty_topk_key : items[i];
        best = items[i] > best ? items[i] : best;
      }
    }
  }
  return mine;
}

#endif  // FRUGAL_KERNEL_CODE

}  // namespace frugal

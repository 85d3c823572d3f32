// SPDX-License-Identifier: Apache-2.0
//! @file
//! Warp level top-k: the k largest of the 32 * ItemsPerLane keys a warp holds, for k <= 32.
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

//! Selects the `k` (1..32) largest keys of the warp. Lane r < k returns the r-th largest key
//! (r = 0 is the largest); other lanes return empty_topk_key, as do ranks beyond the number of
//! non-empty keys. All 32 lanes must call it with the same k. `items` is consumed: selected keys
//! are replaced by empty_topk_key.
//!
//! Algorithm: k rounds; each round one butterfly max-reduction of the lanes' current best keys.
//! Keys are distinct, so exactly one lane owns the winner; it removes it and rescans its items.
//! Cost per round: 5 64-bit shuffles + ItemsPerLane compares; no shared memory.
template <int ItemsPerLane>
FRUGAL_DEVICE topk_key warp_topk(topk_key (&items)[ItemsPerLane], int k) {
  static_assert(ItemsPerLane >= 1 && ItemsPerLane * 32 <= warp_topk_max_items,
                "frugal::warp_topk: ItemsPerLane must be in [1, 32] (at most 1024 values per warp)");
  const int lane = int(lane_index());
  topk_key best = items[0];
  FRUGAL_UNROLL
  for (int i = 1; i < ItemsPerLane; ++i) best = items[i] > best ? items[i] : best;

  topk_key mine = empty_topk_key;
  for (int rank = 0; rank < k; ++rank) {
    const topk_key winner = warp_max(best);
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

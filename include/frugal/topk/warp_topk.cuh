// SPDX-License-Identifier: Apache-2.0
//! @file
//! Warp level top-k: the k largest of the Width * ItemsPerLane keys a (logical) warp holds.
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/ordered_key.cuh>
#include <frugal/core/warp.cuh>

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace frugal {

//! Most values one warp selects from (32 lanes x 32 items).
inline constexpr int warp_topk_max_items = 1024;
//! Largest k a warp selection returns (one result per lane).
inline constexpr int warp_topk_max_k = 32;

#if FRUGAL_KERNEL_CODE

namespace detail {

FRUGAL_HOST_DEVICE constexpr int ceil_log2(int n) {
  int l = 0;
  while ((1 << l) < n) ++l;
  return l;
}

// One compare-exchange of a sorting network: keys[lo] gets the larger key.
struct network_pair {
  int lo, hi;
};

// Batcher's odd-even merge network for n keys: the network for the next power of two with the
// comparators that touch the padding dropped (padding is smaller than every key and never
// moves). Calls visit(lo, hi) for each comparator in order. (A visitor rather than an optional
// output pointer: GCC cannot constant-evaluate `if (out)` on a member array's address under
// -fsanitize=null.)
template <class Visit>
FRUGAL_HOST_DEVICE constexpr void visit_merge_network(int n, Visit& visit) {
  const int levels = ceil_log2(n), padded = 1 << levels;
  for (int lp = 0; lp < levels; ++lp)
    for (int lk = lp; lk >= 0; --lk) {
      const int p = 1 << lp, d = 1 << lk;
      for (int j = d % p; j + d < padded; j += 2 * d)
        for (int i = 0; i < d; ++i) {
          const int lo = i + j, hi = i + j + d;
          if (hi < n && lo / (2 * p) == hi / (2 * p)) visit(lo, hi);
        }
    }
}

struct network_counter {
  int count = 0;
  FRUGAL_HOST_DEVICE constexpr void operator()(int, int) { ++count; }
};

FRUGAL_HOST_DEVICE constexpr int merge_network_size(int n) {
  network_counter counter;
  visit_merge_network(n, counter);
  return counter.count;
}

// The network as a compile-time table, so every index below is a template argument and the
// keys stay in registers (loops over it, even with unroll pragmas, are not always unrolled
// beyond 8 keys, and an array indexed at run time lives in local memory).
template <int N>
struct merge_network {
  static constexpr int size = merge_network_size(N);
  network_pair pairs[size > 0 ? size : 1];

  struct filler {
    network_pair* pairs;
    int count = 0;
    FRUGAL_HOST_DEVICE constexpr void operator()(int lo, int hi) { pairs[count++] = network_pair{lo, hi}; }
  };
  FRUGAL_HOST_DEVICE constexpr merge_network() : pairs{} {
    filler fill{pairs};
    visit_merge_network(N, fill);
  }
};
template <int N>
inline constexpr merge_network<N> merge_network_v{};

// Keys are 64-bit topk_keys, or 32-bit compact keys (compact_topk_key) where a value and its
// index fit in 32 bits; 0 is the empty key for both.
template <class Key>
inline constexpr bool is_topk_key_type = std::is_same_v<Key, topk_key> || std::is_same_v<Key, compact_topk_key>;

template <int Lo, int Hi, int N, class Key>
FRUGAL_DEVICE void compare_exchange(Key (&a)[N]) {
  const Key x = a[Lo], y = a[Hi];
  const bool swap = key_greater(y, x);
  a[Lo] = swap ? y : x;
  a[Hi] = swap ? x : y;
}

template <int N, class Key, std::size_t... P>
FRUGAL_DEVICE void apply_merge_network(Key (&a)[N], std::index_sequence<P...>) {
  (compare_exchange<merge_network_v<N>.pairs[P].lo, merge_network_v<N>.pairs[P].hi>(a), ...);
}

// a[i] = a[i + 1], the last key emptied: a lane's sorted keys after it gave away its first.
template <int N, class Key, std::size_t... Index>
FRUGAL_DEVICE void shift_keys_down(Key (&a)[N], std::index_sequence<Index...>) {
  ((a[Index] = a[Index + 1]), ...);
  a[N - 1] = Key(0);
}

// Sorts keys in descending order (Batcher's odd-even merge network, 19 comparators for 8 keys).
template <int N, class Key>
FRUGAL_DEVICE void sort_keys_descending(Key (&a)[N]) {
  apply_merge_network(a, std::make_index_sequence<std::size_t(merge_network<N>::size)>{});
}

// The largest key of the logical warp, in every lane. A full warp on sm_80 and later (and in host
// SIMT) uses redux.sync: one for a compact key; for a 64-bit key two, the high words then the low
// words of the lanes holding the largest high word. Otherwise a butterfly of shuffles.
template <int Width, class Key>
FRUGAL_DEVICE Key warp_max_key(Key key) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  if constexpr (Width == 32 && sizeof(Key) == 4) {
    return __reduce_max_sync(full_warp_mask, key);
  } else if constexpr (Width == 32) {
    const unsigned high = unsigned(key >> 32), low = unsigned(key);
    const unsigned top = __reduce_max_sync(full_warp_mask, high);
    const unsigned top_low = __reduce_max_sync(full_warp_mask, high == top ? low : 0u);
    return (Key(top) << 32) | top_low;
  }
#endif
  return warp_max<Width>(key);
}

// The lane's two largest keys (the second is empty when the lane holds fewer than two).
template <int N, class Key>
FRUGAL_DEVICE void best_two_keys(const Key (&a)[N], Key& first, Key& second) {
  first = a[0];
  second = Key(0);
  FRUGAL_UNROLL
  for (int i = 1; i < N; ++i) {
    const Key x = a[i];
    if constexpr (sizeof(Key) == 4) {
      // Three integer min/max on compact keys: the smaller of x and the first competes for second.
      const Key below = x < first ? x : first;
      second = below > second ? below : second;
      first = x > first ? x : first;
    } else {
      const bool above_first = key_greater(x, first), above_second = key_greater(x, second);
      second = above_second ? (above_first ? first : x) : second;
      first = above_first ? x : first;
    }
  }
}

// k rounds over each lane's two largest keys: redux.sync, a compare and a two-key shift per
// round. A lane that gave away both before the last round (a second key that is gone and was not
// the last winner) was left out of the later rounds; that was right if its third key is below the
// last winner, which such lanes then find by a rescan (only when some lane ran dry). Returns
// whether the result is exact, the same in every lane of the warp.
template <int N, int Width, class Key>
FRUGAL_DEVICE bool select_from_best_two(const Key (&items)[N], Key first, const Key second, int k, int lane, Key& mine) {
  Key next = second, winner = Key(0);
  mine = Key(0);
  // Fully unrolled where k is a constant after inlining (routing): the loop counter, the test
  // and the copies of the shifted keys between registers go.
  FRUGAL_UNROLL
  for (int rank = 0; rank < k; ++rank) {
    winner = warp_max_key<Width>(first);
    if (lane == rank) mine = winner;
    if (first == winner) {
      first = next;
      next = Key(0);
    }
  }
  const bool ran_dry = second != Key(0) && first == Key(0) && second != winner;
  if (!__any_sync(full_warp_mask, ran_dry)) return true;
  Key third = Key(0);  // the largest key below the second
  FRUGAL_UNROLL
  for (int i = 0; i < N; ++i) third = key_greater(items[i], third) && key_greater(second, items[i]) ? items[i] : third;
  return !__any_sync(full_warp_mask, ran_dry && key_greater(third, winner));
}

}  // namespace detail

//! Selects the `k` largest keys held by the calling logical warp (Width lanes, a power of two;
//! several logical warps of one warp select independently). Lane r < k of the logical warp
//! returns the r-th largest key (r = 0 is the largest); other lanes return the empty key 0, as do
//! ranks beyond the number of non-empty keys. Requires k <= Width; every lane of the warp must
//! call it with the same k. `items` is consumed (its contents afterwards are unspecified). Keys
//! are topk_key, or compact_topk_key where values and indices fit in 32 bits (half the work).
//!
//! Algorithm: k rounds, each a warp max of the lanes' best keys (redux.sync on a full warp from
//! sm_80, a butterfly otherwise). Keys are distinct, so exactly one lane owns the winner and
//! refills its best key. When k <= Width / 4 the rounds first run over each lane's two largest
//! keys only, which is exact unless a lane holds three of the k results (about 3% of random rows
//! for k = 8 of 256, every row of equal keys); the warp then falls back to the full selection:
//! the refill is a register shift when the lane sorted its keys first (a sorting network,
//! registers only) or a rescan of its keys otherwise; the sort is chosen when k rounds of
//! rescans would cost more than sorting once (k >= 3 for 8 keys per lane, k >= 8 for 32).
template <int ItemsPerLane, int Width = 32, class Key>
FRUGAL_DEVICE Key warp_topk(Key (&items)[ItemsPerLane], int k) {
  static_assert(ItemsPerLane >= 1 && ItemsPerLane * 32 <= warp_topk_max_items,
                "frugal::warp_topk: ItemsPerLane must be in [1, 32] (at most 1024 values per warp)");
  static_assert(detail::is_topk_key_type<Key>, "frugal::warp_topk: keys must be topk_key or compact_topk_key");
  FRUGAL_CHECK_LOGICAL_WARP(Width);
  const int lane = int(lane_index()) % Width;
  if constexpr (ItemsPerLane >= 3) {
    // k is the same in every lane, and select_from_best_two's answer too: the warp stays converged.
    if (k * 4 <= Width) {
      Key first, second, mine;
      detail::best_two_keys(items, first, second);
      if (detail::select_from_best_two<ItemsPerLane, Width>(items, first, second, k, lane, mine)) return mine;
    }
  }
  // About 6 instructions per comparator, once, against about 5 per key more in every rescan
  // than in a shift. k is the same in every lane, so the choice is too.
  constexpr int sort_cost = 6 * detail::merge_network<ItemsPerLane>::size;
  const bool sorted = k * 5 * ItemsPerLane > sort_cost;
  Key best;
  if (sorted) {
    detail::sort_keys_descending(items);
    best = items[0];
  } else {
    best = items[0];
    FRUGAL_UNROLL
    for (int i = 1; i < ItemsPerLane; ++i) best = items[i] > best ? items[i] : best;
  }

  Key mine = Key(0);
  // Rounds stay a loop where a round refills from several keys: unrolling k rounds multiplies
  // code size (and compile time) by k. With one key per lane a round is a handful of
  // instructions, unrolled where k is a constant after inlining (routing's group selection).
#if defined(__CUDA_ARCH__)
#pragma unroll(ItemsPerLane == 1 ? 32 : 1)
#endif
  for (int rank = 0; rank < k; ++rank) {
    const Key winner = detail::warp_max_key<Width>(best);
    if (lane == rank) mine = winner;
    // Fewer than k keys: the winner is empty and every lane "refills" an empty best, which
    // changes nothing that matters (empty keys stay last).
    if (best == winner) {
      if (sorted) {
        detail::shift_keys_down(items, std::make_index_sequence<std::size_t(ItemsPerLane - 1)>{});
        best = items[0];
      } else {
        best = Key(0);
        FRUGAL_UNROLL
        for (int i = 0; i < ItemsPerLane; ++i) {
          items[i] = items[i] == winner ? Key(0) : items[i];
          best = items[i] > best ? items[i] : best;
        }
      }
    }
  }
  return mine;
}

//! One chosen (value, index) pair: the index and the value as its key holds it (frugal's
//! order maps -0.0 to +0.0 and every NaN to one NaN).
struct topk_entry {
  std::uint32_t index;
  float value;
};

//! warp_topk over (value, index) pairs: lane r < k gets the r-th largest pair of the logical
//! warp (values by frugal's order, ties to the lower index); pair i of a lane takes part when bit
//! i of `valid` is set. ZeroBits > 0 selects on compact_topk_key, for values whose fp32 bits end
//! in that many zeros (exact_float_trailing_zeros) and indices below 2^ZeroBits - 1; ZeroBits = 0
//! on topk_key. Lanes at or beyond k, or beyond the number of pairs, get an unspecified entry.
template <int ZeroBits, int ItemsPerLane, int Width = 32>
FRUGAL_DEVICE topk_entry warp_topk_entry(const float (&values)[ItemsPerLane], const std::uint32_t (&indices)[ItemsPerLane],
                                         unsigned valid, int k) {
  static_assert(ItemsPerLane <= 32, "frugal::warp_topk_entry: at most 32 pairs per lane");
  if constexpr (ZeroBits > 0) {
    compact_topk_key keys[ItemsPerLane];
    FRUGAL_UNROLL
    for (int i = 0; i < ItemsPerLane; ++i)
      keys[i] = (valid >> i) & 1u ? make_compact_topk_key<ZeroBits>(values[i], indices[i]) : compact_topk_key(0);
    const compact_topk_key chosen = warp_topk<ItemsPerLane, Width>(keys, k);
    return {compact_topk_key_index<ZeroBits>(chosen), compact_topk_key_value<ZeroBits>(chosen)};
  } else {
    topk_key keys[ItemsPerLane];
    FRUGAL_UNROLL
    for (int i = 0; i < ItemsPerLane; ++i) keys[i] = (valid >> i) & 1u ? make_topk_key(values[i], indices[i]) : empty_topk_key;
    const topk_key chosen = warp_topk<ItemsPerLane, Width>(keys, k);
    return {topk_key_index(chosen), topk_key_value(chosen)};
  }
}

//! warp_topk_entry<0> (any fp32 values, indices <= 255) at about the cost of compact keys where
//! it can: first on make_truncated_topk_key<8> keys (the top 24 bits of each value), whose
//! order is the exact one when the k winners' fields strictly decrease and no other key reaches
//! the k-th winner's field (counted over the warp); otherwise again on topk_key. NaN winners
//! may share their field: NaNs are equal, ordered by index, which the truncated keys do too.
//! The entry's value is not returned (NaN): the keys no longer hold it.
template <int ItemsPerLane, int Width = 32>
FRUGAL_DEVICE topk_entry warp_topk_entry_truncated(const float (&values)[ItemsPerLane],
                                                   const std::uint32_t (&indices)[ItemsPerLane], unsigned valid, int k) {
  static_assert(ItemsPerLane <= 32, "frugal::warp_topk_entry_truncated: at most 32 pairs per lane");
  constexpr std::uint32_t low = 0xffu, nan_field = 0x100u;
  compact_topk_key keys[ItemsPerLane], kept[ItemsPerLane];
  FRUGAL_UNROLL
  for (int i = 0; i < ItemsPerLane; ++i)
    kept[i] = keys[i] = (valid >> i) & 1u ? make_truncated_topk_key<8>(values[i], indices[i]) : compact_topk_key(0);
  const compact_topk_key chosen = warp_topk<ItemsPerLane, Width>(keys, k);
  const int lane = int(lane_index()) % Width;
  const std::uint32_t field = chosen & ~low;
  // Winners r and r + 1 (both numbers) sharing a field may be out of order.
  const std::uint32_t next_field = warp_broadcast<Width>(field, lane + 1 < Width ? lane + 1 : lane);
  bool ambiguous = lane + 1 < k && field == next_field && field > nan_field;
  // Another key reaching the k-th winner's field may belong before it. (An empty k-th winner:
  // every key was chosen. A NaN k-th winner: every number was.)
  // The count runs in every logical warp of the warp, whatever its k-th winner: the shuffles
  // span them all. So does the vote: logical warps fall back together.
  const std::uint32_t last = warp_broadcast<Width>(field, k - 1);
  unsigned reaching = 0;
  FRUGAL_UNROLL
  for (int i = 0; i < ItemsPerLane; ++i) reaching += kept[i] >= last ? 1u : 0u;
  const unsigned total = warp_sum<Width>(reaching);
  ambiguous = ambiguous || (last > nan_field && total != unsigned(k));
  if (__any_sync(full_warp_mask, ambiguous)) {
    // Values passed on opaquely: otherwise the compiler keeps each value's NaN test from the
    // truncated keys alive across the rounds for the 64-bit keys (two instructions per value on
    // every row, to save one on the rare rerun).
    float opaque[ItemsPerLane];
    FRUGAL_UNROLL
    for (int i = 0; i < ItemsPerLane; ++i) opaque[i] = launder(values[i]);
    return warp_topk_entry<0, ItemsPerLane, Width>(opaque, indices, valid, k);
  }
  return {(low - (chosen & low)), NAN};
}

//! warp_topk_entry's index alone.
template <int ZeroBits, int ItemsPerLane, int Width = 32>
FRUGAL_DEVICE std::uint32_t warp_topk_index(const float (&values)[ItemsPerLane], const std::uint32_t (&indices)[ItemsPerLane],
                                            unsigned valid, int k) {
  return warp_topk_entry<ZeroBits, ItemsPerLane, Width>(values, indices, valid, k).index;
}

#endif  // FRUGAL_KERNEL_CODE

}  // namespace frugal

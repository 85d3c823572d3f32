// SPDX-License-Identifier: Apache-2.0
// The dispatch plan as one cooperative kernel (docs/moe_dispatch.md). Every block owns one tile
// (a contiguous run of slots, a multiple of 256); the phases meet at grid barriers:
//   1 ranks      each slot's rank among its tile's slots of the same expert; the tile histograms
//   2 tiles      per expert (a warp each), exclusive scan of the tile histograms: each tile's base
//                rank, the expert's total and kept count
//   3 sort       only for drop policies that keep by priority: the expert-grouped slot list
//   4 capacity   only for those policies: per expert, which entries are kept, their rank among the kept
//   5 layout     every block scans the kept counts into its own shared row offsets; padding rows,
//                tile experts and the offsets outputs
//   6 maps       slot <-> row and expanded-row <-> row maps
// Dropless and token-order plans need two grid barriers, priority policies four. Ranks come from
// counting, never from atomics' order, so every output is bitwise deterministic.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/detail/plan_kernels.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/block.cuh>
#include <frugal/core/block_select.cuh>
#include <frugal/core/grid_sync.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/ordered_key.cuh>
#include <frugal/core/philox.cuh>
#include <frugal/core/shared_memory.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/moe/dispatch_config.cuh>

#include <cstddef>
#include <cstdint>

namespace frugal::moe::detail {

inline constexpr int plan_threads = 256;  // threads per block = slots per sub-tile
inline constexpr int plan_warps = plan_threads / 32;
inline constexpr int plan_max_experts = 4096;  // as many as route_config allows
// Two extra histogram bins count malformed ids: outside [-1, E), and repeated within a token.
inline constexpr int plan_bins_extra = 2;

// What every phase needs: the problem, the options, and the workspace arrays.
struct plan_problem {
  std::int64_t tokens = 0;
  int k = 0;
  int experts = 0;
  std::int64_t slots = 0;       // tokens * k
  std::int64_t tile_slots = 0;  // slots per tile, a multiple of plan_threads
  std::int64_t tiles = 0;       // ceil(slots / tile_slots)
  std::int64_t capacity = 0;    // 0: unbounded
  std::int64_t max_rows = 0;
  bool by_priority = false;     // a bounded capacity under slot_major, weight_priority or random
  plan_params params;
  // workspace
  std::int32_t* tile_counts = nullptr;  // [E + 2, tiles]: tile histograms, then tile base ranks
  std::int32_t* rank = nullptr;         // [slots]: in-tile rank, then rank (or kept rank); -1 = not placed
  std::int32_t* sorted = nullptr;       // [slots]: slots grouped by expert in token order (by_priority)
  std::int32_t* totals = nullptr;       // [E + 2]: routed entries per expert, then the two id error counts
  std::int32_t* kept = nullptr;         // [E]
};

inline std::int64_t plan_max_tiles(std::int64_t slots) { return (slots + plan_threads - 1) / plan_threads; }

inline std::size_t plan_workspace_bytes(std::int64_t slots, int experts) {
  const std::int64_t bins = experts + plan_bins_extra;
  const std::int64_t ints = plan_max_tiles(slots) * bins + 2 * slots + bins + experts;
  return std::size_t(ints > 0 ? ints : 1) * sizeof(std::int32_t);
}

// One tile per block of a grid of at most `most_blocks` blocks.
inline void plan_tiling(plan_problem& p, int most_blocks) {
  const std::int64_t sub_tiles = plan_max_tiles(p.slots);
  const std::int64_t per_tile = sub_tiles <= most_blocks ? 1 : (sub_tiles + most_blocks - 1) / most_blocks;
  p.tile_slots = per_tile * plan_threads;
  p.tiles = (p.slots + p.tile_slots - 1) / p.tile_slots;
}

inline void carve_plan_workspace(void* workspace, plan_problem& p) {
  const std::int64_t bins = p.experts + plan_bins_extra;
  auto* w = static_cast<std::int32_t*>(workspace);
  p.tile_counts = w;
  w += p.tiles * bins;
  p.rank = w;
  w += p.slots;
  p.sorted = w;
  w += p.slots;
  p.totals = w;
  w += bins;
  p.kept = w;
}

// Shared memory of the phases: the collectives' storage (static) and three arrays sized by the
// expert count (dynamic: 2E + 3 ints and 8E bytes, 16 KiB at 1024 experts, 64 KiB + 12 bytes at 4096).
// `offsets` survives the grid barriers: the dropless offsets in phases 3 and 4, the row offsets
// in phases 5 and 6.
struct plan_collectives {
  typename block_scan<int, plan_threads>::TempStorage scan;
  typename block_radix_select<plan_threads>::TempStorage select;
};

struct plan_shared {
  int* histogram;                 // [E + 2]  phase 1: the tile histogram so far
  int* offsets;                   // [E + 1]
  std::uint8_t* warp_counts;      // [plan_warps][E]  phase 1: per-warp counts of the sub-tile (<= 32)
  plan_collectives* collectives;
};

inline std::size_t plan_shared_bytes(int experts) {
  return std::size_t(2 * experts + plan_bins_extra + 1) * sizeof(int) + std::size_t(plan_warps) * std::size_t(experts);
}

// ---- phase 1 ----------------------------------------------------------------------------------
template <class IdT>
FRUGAL_DEVICE void plan_ranks(const IdT* ids, const plan_problem& p, plan_shared& sm) {
  const int tid = int(threadIdx.x), lane = tid % 32, warp = tid / 32, E = p.experts;
  const int bins = E + plan_bins_extra;
  for (int i = tid; i < plan_warps * E; i += plan_threads) sm.warp_counts[i] = 0;
  for (std::int64_t tile = blockIdx.x; tile < p.tiles; tile += gridDim.x) {
    for (int b = tid; b < bins; b += plan_threads) sm.histogram[b] = 0;
    __syncthreads();
    const std::int64_t first = tile * p.tile_slots;
    for (std::int64_t base = first; base < first + p.tile_slots && base < p.slots; base += plan_threads) {
      const std::int64_t s = base + tid;
      const std::int64_t id = s < p.slots ? std::int64_t(ids[s]) : -1;
      const bool valid = id >= 0 && id < E;
      const int e = valid ? int(id) : -1;
      if (s < p.slots) {
        bool dup = false;  // the same expert earlier in the same token
        for (std::int64_t j = s / p.k * p.k; valid && j < s; ++j) dup |= std::int64_t(ids[j]) == id;
        if (id < -1 || id >= E) atomicAdd(&sm.histogram[E], 1);
        if (dup) atomicAdd(&sm.histogram[E + 1], 1);
      }
      const unsigned same = __match_any_sync(full_warp_mask, e);
      const unsigned below = same & ((1u << lane) - 1u);
      const bool leader = below == 0;
      if (valid && leader) sm.warp_counts[warp * E + e] = std::uint8_t(__popc(same));
      __syncthreads();
      int in_tile = valid ? sm.histogram[e] + __popc(below) : -1;
      for (int w = 0; valid && w < warp; ++w) in_tile += sm.warp_counts[w * E + e];
      if (s < p.slots) p.rank[s] = in_tile;
      __syncthreads();  // every read of histogram and warp_counts is done
      if (valid && leader) {
        atomicAdd(&sm.histogram[e], int(sm.warp_counts[warp * E + e]));
        sm.warp_counts[warp * E + e] = 0;
      }
      __syncthreads();
    }
    for (int b = tid; b < bins; b += plan_threads) p.tile_counts[b * p.tiles + tile] = sm.histogram[b];
    __syncthreads();  // before the next tile clears the histogram
  }
}

// ---- phase 2: a warp per expert (and per error bin) ---------------------------------------------
FRUGAL_DEVICE void plan_tile_scan(const plan_problem& p, int first_warp, int warp_stride) {
  const int lane = int(threadIdx.x) % 32;
  for (int b = first_warp; b < p.experts + plan_bins_extra; b += warp_stride) {
    std::int32_t* counts = p.tile_counts + b * p.tiles;
    int carry = 0;
    for (std::int64_t base = 0; base < p.tiles; base += 32) {
      const std::int64_t tile = base + lane;
      const int c = tile < p.tiles ? counts[tile] : 0;
      int total = 0;
      const int before = warp_exclusive_sum(c, total);
      if (tile < p.tiles) counts[tile] = carry + before;
      carry += total;
    }
    if (lane == 0) {
      p.totals[b] = carry;
      if (b < p.experts) p.kept[b] = p.capacity > 0 && carry > p.capacity ? int(p.capacity) : carry;
    }
  }
}

// Exclusive scan over the experts of value_of(e) into sm.offsets[0..E]; returns the total.
// Thread tid owns experts [tid * per, (tid + 1) * per), so offsets come out in expert order.
template <class ValueOf>
FRUGAL_DEVICE int scan_experts(int experts, ValueOf value_of, plan_shared& sm) {
  constexpr int per = plan_max_experts / plan_threads;
  const int tid = int(threadIdx.x);
  int mine[per], sum = 0;
  FRUGAL_UNROLL
  for (int i = 0; i < per; ++i) {
    const int e = tid * per + i;
    mine[i] = e < experts ? value_of(e) : 0;
    sum += mine[i];
  }
  int total = 0;
  int before = block_scan<int, plan_threads>(sm.collectives->scan).exclusive_sum(sum, total);
  FRUGAL_UNROLL
  for (int i = 0; i < per; ++i) {
    const int e = tid * per + i;
    if (e < experts) sm.offsets[e] = before;
    before += mine[i];
  }
  if (tid == 0) sm.offsets[experts] = total;
  __syncthreads();
  return total;
}

// A slot's rank among its expert's routed slots: its tile's base plus its in-tile rank.
FRUGAL_DEVICE int plan_full_rank(const plan_problem& p, std::int64_t s, int e, int in_tile) {
  return p.tile_counts[e * p.tiles + s / p.tile_slots] + in_tile;
}

// A slot's index in slot-major order (all first choices, then all second choices...): the
// expanded row index of the TensorRT-LLM layout, and slot_major's drop order.
FRUGAL_DEVICE std::int64_t plan_expanded_index(const plan_problem& p, std::int64_t s) {
  return (s % p.k) * p.tokens + s / p.k;
}

// ---- phase 3 (by_priority) ----------------------------------------------------------------------
template <class IdT>
FRUGAL_DEVICE void plan_sort(const IdT* ids, const plan_problem& p, plan_shared& sm, std::int64_t first,
                             std::int64_t stride) {
  scan_experts(p.experts, [&](int e) { return p.totals[e]; }, sm);  // dropless offsets
  for (std::int64_t s = first; s < p.slots; s += stride) {
    const int r = p.rank[s];
    if (r < 0) continue;
    const int e = int(ids[s]);
    const int full = plan_full_rank(p, s, e, r);
    p.rank[s] = full;
    p.sorted[sm.offsets[e] + full] = std::int32_t(s);
  }
}

// ---- phase 4 (by_priority): one expert per call, the whole block ---------------------------------
// Priority keys: larger = kept first; distinct; never 0.
template <class W>
FRUGAL_DEVICE topk_key plan_priority(const plan_problem& p, const W* weights, std::int64_t s) {
  const std::uint32_t flat = std::uint32_t(s);
  switch (p.params.policy) {
    case drop_policy::slot_major: {
      return (topk_key(1) << 32) | topk_key(0xffffffffu - std::uint32_t(plan_expanded_index(p, s)));
    }
    case drop_policy::weight_priority: return make_topk_key(to_float(weights[s]), flat);
    case drop_policy::random: {
      const philox_words r = philox4x32_10(philox_words{{flat, std::uint32_t(std::uint64_t(s) >> 32), 0x5eedu, 0}},
                                           std::uint32_t(p.params.seed), std::uint32_t(p.params.seed >> 32));
      return (topk_key(r.v[0] | 1u) << 32) | topk_key(0xffffffffu - flat);
    }
    default: return (topk_key(1) << 32) | topk_key(0xffffffffu - flat);  // token order
  }
}

template <class W>
FRUGAL_DEVICE void plan_capacity_of(int e, const W* weights, const plan_problem& p, plan_shared& sm) {
  const int tid = int(threadIdx.x);
  const int count = p.totals[e], kept = p.kept[e];
  if (kept == count) return;  // ranks stay as they are
  const std::int32_t* segment = p.sorted + sm.offsets[e];
  auto key_of = [&](std::int64_t j) { return plan_priority(p, weights, segment[j]); };
  const topk_key threshold = block_radix_select<plan_threads>(sm.collectives->select).threshold(key_of, count, kept);
  // Kept entries get their rank among the kept, still in token order.
  block_scan<int, plan_threads> scan(sm.collectives->scan);
  int written = 0;
  for (int base = 0; base < count; base += plan_threads) {
    const int j = base + tid;
    const int take = j < count && key_of(j) >= threshold ? 1 : 0;
    int total = 0;
    const int position = scan.exclusive_sum(take, total);
    if (j < count) p.rank[segment[j]] = take ? written + position : -1;
    written += total;
  }
}

// ---- phase 5 ------------------------------------------------------------------------------------
// Every block scans the row offsets into its shared memory; block 0 writes the offsets outputs;
// the grid writes the padding rows and the tile experts.
FRUGAL_DEVICE void plan_layout(const plan_problem& p, const plan_outputs& out, plan_shared& sm, int first_warp,
                               int warp_stride, std::int64_t first, std::int64_t stride) {
  const int tid = int(threadIdx.x), E = p.experts, lane = tid % 32;
  const bool masked = p.params.layout == placement::masked;
  const int block = p.params.block_size;
  const int total = scan_experts(
      E, [&](int e) { return masked ? int(p.capacity) : (p.kept[e] + block - 1) / block * block; }, sm);
  if (blockIdx.x == 0) {
    for (int e = tid; e <= E; e += plan_threads) {
      if (out.offsets) out.offsets[e] = sm.offsets[e];
      if (out.offsets64) out.offsets64[e] = sm.offsets[e];
      if (e == E) continue;
      if (out.counts) out.counts[e] = p.kept[e];
      if (out.dropped) out.dropped[e] = p.totals[e] - p.kept[e];
    }
    if (tid == 0) {
      if (out.id_errors) {
        out.id_errors[0] = p.totals[E];
        out.id_errors[1] = p.totals[E + 1];
      }
      if (out.total_rows) out.total_rows[0] = total;
    }
  }
  // Rows no entry fills: the sentinels. A warp per expert for the rows after its kept entries,
  // the grid for the rows after the last segment.
  const std::int32_t pad_slot = plan_padding_sentinel(p.tokens, p.k);
  auto pad = [&](std::int64_t r) {
    if (out.row_to_slot) out.row_to_slot[r] = pad_slot;
    if (out.row_to_expanded) out.row_to_expanded[r] = -1;
    if (out.row_to_token) out.row_to_token[r] = -1;
  };
  for (int e = first_warp; e < E; e += warp_stride)
    for (std::int64_t r = std::int64_t(sm.offsets[e]) + p.kept[e] + lane; r < sm.offsets[e + 1]; r += 32) pad(r);
  for (std::int64_t r = std::int64_t(total) + first; r < p.max_rows; r += stride) pad(r);
  if (out.tile_experts && !masked) {
    for (std::int64_t t = first; t < p.max_rows / block; t += stride) {
      // the expert whose segment holds row t * block (segments are whole tiles)
      const std::int64_t row = t * block;
      int lo = 0, hi = E;  // last e with offsets[e] <= row
      while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (sm.offsets[mid] <= row) lo = mid;
        else hi = mid;
      }
      out.tile_experts[t] = row < total ? lo : -1;
    }
  }
}

// ---- phase 6 ------------------------------------------------------------------------------------
template <class IdT>
FRUGAL_DEVICE void plan_maps(const IdT* ids, const plan_problem& p, const plan_outputs& out, const plan_shared& sm,
                             std::int64_t first, std::int64_t stride) {
  for (std::int64_t s = first; s < p.slots; s += stride) {
    int r = p.rank[s];
    const int e = r >= 0 ? int(ids[s]) : -1;
    if (r >= 0 && !p.by_priority) {  // token order: the first `capacity` ranks are kept
      r = plan_full_rank(p, s, e, r);
      if (p.capacity > 0 && r >= p.capacity) r = -1;
    }
    const std::int64_t expanded = plan_expanded_index(p, s);
    const std::int32_t row = r >= 0 ? sm.offsets[e] + r : -1;
    if (out.slot_to_row) out.slot_to_row[s] = row;
    if (out.expanded_to_row) out.expanded_to_row[expanded] = row;
    if (row >= 0) {
      if (out.row_to_slot) out.row_to_slot[row] = std::int32_t(s);
      if (out.row_to_expanded) out.row_to_expanded[row] = std::int32_t(expanded);
      if (out.row_to_token) out.row_to_token[row] = std::int32_t(s / p.k);
    }
  }
}

// ---- the kernel ---------------------------------------------------------------------------------
// Launched cooperatively with one block per tile (p.tiles blocks, at least one) and
// plan_shared_bytes(E) of dynamic shared memory.
template <class IdT, class W>
__global__ void __launch_bounds__(plan_threads, 1)
    plan_kernel(const IdT* __restrict__ ids, const W* __restrict__ weights, plan_problem p, plan_outputs out) {
  __shared__ plan_collectives collectives;
  int* const dynamic = dynamic_shared<int>();
  plan_shared sm;
  sm.histogram = dynamic;
  sm.offsets = dynamic + p.experts + plan_bins_extra;
  sm.warp_counts = reinterpret_cast<std::uint8_t*>(sm.offsets + p.experts + 1);
  sm.collectives = &collectives;
  const int first_warp = int(blockIdx.x) * plan_warps + int(threadIdx.x) / 32, warp_stride = int(gridDim.x) * plan_warps;
  const std::int64_t first = std::int64_t(blockIdx.x) * plan_threads + threadIdx.x;
  const std::int64_t stride = std::int64_t(gridDim.x) * plan_threads;
  plan_ranks(ids, p, sm);
  grid_sync();
  plan_tile_scan(p, first_warp, warp_stride);
  grid_sync();
  if (p.by_priority) {
    plan_sort(ids, p, sm, first, stride);
    grid_sync();
    for (int e = int(blockIdx.x); e < p.experts; e += int(gridDim.x)) {
      plan_capacity_of(e, weights, p, sm);
      __syncthreads();
    }
    grid_sync();
  }
  plan_layout(p, out, sm, first_warp, warp_stride, first, stride);
  plan_maps(ids, p, out, sm, first, stride);
}

}  // namespace frugal::moe::detail

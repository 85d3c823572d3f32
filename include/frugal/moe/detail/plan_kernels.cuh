// SPDX-License-Identifier: Apache-2.0
// The dispatch plan as six phases over 256-slot tiles (docs/moe_dispatch.md):
//   1 ranks      in-tile rank of every slot among its expert's slots, and the tile histogram
//   2 tiles      per expert, exclusive scan of the tile histograms; dropless segment offsets
//   3 sort       full rank = tile base + in-tile rank; the expert-grouped slot list (token order)
//   4 capacity   per expert, which entries the drop policy keeps, and their rank among the kept
//   5 layout     kept counts, padded offsets, tile experts, padding rows
//   6 maps       slot <-> row and expanded-row <-> row maps
// Every phase is a device function over a range of work items. Large plans run them as six
// kernels; small plans (T*k <= 64K) run all six in one block (one launch). Ranks come from
// counting, never from atomics' order, so every output is bitwise deterministic.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/detail/plan_kernels.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/block.cuh>
#include <frugal/core/block_select.cuh>
#include <frugal/core/ordered_key.cuh>
#include <frugal/core/philox.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/moe/dispatch_config.cuh>

#include <cstddef>
#include <cstdint>

namespace frugal::moe::detail {

inline constexpr int plan_threads = 256;             // threads per block = slots per tile
inline constexpr int plan_warps = plan_threads / 32;
inline constexpr int plan_max_experts = 1024;
inline constexpr std::int64_t plan_single_block_slots = 65536;

// What every phase needs: the problem, the options, and the workspace arrays.
struct plan_problem {
  std::int64_t tokens = 0;
  int k = 0;
  int experts = 0;
  std::int64_t slots = 0;      // tokens * k
  std::int64_t tiles = 0;      // ceil(slots / plan_threads)
  std::int64_t capacity = 0;   // 0: unbounded
  std::int64_t max_rows = 0;
  plan_params params;
  // workspace
  std::int32_t* tile_counts = nullptr;       // [tiles, E]: histograms, then tile bases
  std::int32_t* rank = nullptr;              // [slots]: in-tile rank, rank, kept rank; -1 = not placed
  std::int32_t* sorted = nullptr;            // [slots]: slots grouped by expert, token order
  std::int32_t* totals = nullptr;            // [E] routed entries per expert
  std::int32_t* dropless_offsets = nullptr;  // [E + 1]
  std::int32_t* kept = nullptr;              // [E]
  std::int32_t* row_offsets = nullptr;       // [E + 1]
  std::int32_t* invalid = nullptr;           // [2]: ids outside [-1, E), duplicate ids within a token
};

inline std::size_t plan_workspace_bytes(std::int64_t slots, int experts) {
  const std::int64_t tiles = (slots + plan_threads - 1) / plan_threads;
  const std::int64_t ints = tiles * experts + 2 * slots + experts + (experts + 1) + experts + (experts + 1) + 2;
  return std::size_t(ints > 0 ? ints : 1) * sizeof(std::int32_t);
}

inline void carve_plan_workspace(void* workspace, plan_problem& p) {
  auto* w = static_cast<std::int32_t*>(workspace);
  p.tile_counts = w;
  w += p.tiles * p.experts;
  p.rank = w;
  w += p.slots;
  p.sorted = w;
  w += p.slots;
  p.totals = w;
  w += p.experts;
  p.dropless_offsets = w;
  w += p.experts + 1;
  p.kept = w;
  w += p.experts;
  p.row_offsets = w;
  w += p.experts + 1;
  p.invalid = w;
}

// Shared memory of the phases that need it.
struct plan_shared {
  int warp_counts[plan_warps][plan_max_experts];  // phase 1: per-warp counts of the current tile
  int histogram[plan_max_experts];                // phase 1: the tile histogram
  typename block_scan<int, plan_threads>::TempStorage scan;
  typename block_radix_select<plan_threads>::TempStorage select;
};

// ---- phase 1 ----------------------------------------------------------------------------------
template <class IdT>
FRUGAL_DEVICE void plan_ranks(const IdT* ids, const plan_problem& p, std::int64_t first_tile, std::int64_t tile_stride,
                              plan_shared& sm) {
  const int tid = int(threadIdx.x), lane = tid % 32, warp = tid / 32, E = p.experts;
  for (int i = tid; i < plan_warps * E; i += plan_threads) sm.warp_counts[i / E][i % E] = 0;
  __syncthreads();
  for (std::int64_t tile = first_tile; tile < p.tiles; tile += tile_stride) {
    for (int e = tid; e < E; e += plan_threads) sm.histogram[e] = 0;
    const std::int64_t s = tile * plan_threads + tid;
    const std::int64_t id = s < p.slots ? std::int64_t(ids[s]) : -1;
    const bool valid = id >= 0 && id < E;
    const int e = valid ? int(id) : -1;
    if (s < p.slots) {
      int bad = (id < -1 || id >= E) ? 1 : 0;  // invalid id
      int dup = 0;                             // the same expert earlier in the same token
      const std::int64_t t = s / p.k;
      for (std::int64_t j = t * p.k; valid && j < s; ++j) dup |= std::int64_t(ids[j]) == id;
      if (bad) atomicAdd(&p.invalid[0], 1);
      if (dup) atomicAdd(&p.invalid[1], 1);
    }
    const unsigned same = __match_any_sync(full_warp_mask, e);
    const unsigned below = same & ((1u << lane) - 1u);
    const bool leader = below == 0;
    __syncthreads();  // histogram zeroed
    if (valid && leader) {
      sm.warp_counts[warp][e] = __popc(same);
      atomicAdd(&sm.histogram[e], __popc(same));
    }
    __syncthreads();
    int in_tile = __popc(below);
    for (int w = 0; valid && w < warp; ++w) in_tile += sm.warp_counts[w][e];
    if (s < p.slots) p.rank[s] = valid ? in_tile : -1;
    for (int x = tid; x < E; x += plan_threads) p.tile_counts[tile * E + x] = sm.histogram[x];
    __syncthreads();  // every read of warp_counts is done
    if (valid && leader) sm.warp_counts[warp][e] = 0;
  }
}

// Exclusive scan over the experts of value_of(e); store(e, offset) for each; returns the total.
// Thread tid owns experts [tid * per, (tid + 1) * per), so offsets come out in expert order.
template <class ValueOf, class Store>
FRUGAL_DEVICE int scan_experts(int experts, ValueOf value_of, Store store, plan_shared& sm) {
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
  int before = block_scan<int, plan_threads>(sm.scan).exclusive_sum(sum, total);
  FRUGAL_UNROLL
  for (int i = 0; i < per; ++i) {
    const int e = tid * per + i;
    if (e < experts) store(e, before);
    before += mine[i];
  }
  return total;
}

// ---- phase 2: one block ------------------------------------------------------------------------
FRUGAL_DEVICE void plan_tile_scan(const plan_problem& p, plan_shared& sm) {
  const int tid = int(threadIdx.x), E = p.experts;
  for (int e = tid; e < E; e += plan_threads) {
    int running = 0;
    for (std::int64_t tile = 0; tile < p.tiles; ++tile) {
      const int c = p.tile_counts[tile * E + e];
      p.tile_counts[tile * E + e] = running;
      running += c;
    }
    p.totals[e] = running;
  }
  __syncthreads();
  const int total = scan_experts(
      E, [&](int e) { return p.totals[e]; }, [&](int e, int offset) { p.dropless_offsets[e] = offset; }, sm);
  if (tid == 0) p.dropless_offsets[E] = total;
}

// ---- phase 3 ----------------------------------------------------------------------------------
template <class IdT>
FRUGAL_DEVICE void plan_sort(const IdT* ids, const plan_problem& p, std::int64_t first, std::int64_t stride) {
  for (std::int64_t s = first; s < p.slots; s += stride) {
    const int r = p.rank[s];
    if (r < 0) continue;
    const int e = int(ids[s]);
    const int full = p.tile_counts[(s / plan_threads) * p.experts + e] + r;
    p.rank[s] = full;
    p.sorted[p.dropless_offsets[e] + full] = std::int32_t(s);
  }
}

// ---- phase 4: one expert per call, the whole block ---------------------------------------------
// Priority keys: larger = kept first; distinct; never 0.
FRUGAL_DEVICE topk_key plan_priority(const plan_problem& p, const float* weights, std::int64_t s) {
  const std::uint32_t flat = std::uint32_t(s);
  switch (p.params.policy) {
    case drop_policy::slot_major: {
      const std::int64_t expanded = (s % p.k) * p.tokens + s / p.k;
      return (topk_key(1) << 32) | topk_key(0xffffffffu - std::uint32_t(expanded));
    }
    case drop_policy::weight_priority: return make_topk_key(weights[s], flat);
    case drop_policy::random: {
      const philox_words r = philox4x32_10(philox_words{{flat, std::uint32_t(std::uint64_t(s) >> 32), 0x5eedu, 0}},
                                           std::uint32_t(p.params.seed), std::uint32_t(p.params.seed >> 32));
      return (topk_key(r.v[0] | 1u) << 32) | topk_key(0xffffffffu - flat);
    }
    default: return (topk_key(1) << 32) | topk_key(0xffffffffu - flat);  // token order
  }
}

FRUGAL_DEVICE void plan_capacity_of(int e, const float* weights, const plan_problem& p, plan_shared& sm) {
  const int tid = int(threadIdx.x);
  const int count = p.totals[e];
  const std::int32_t* segment = p.sorted + p.dropless_offsets[e];
  const bool bounded = p.capacity > 0 && count > p.capacity;
  const int kept = bounded ? int(p.capacity) : count;
  if (tid == 0) p.kept[e] = kept;
  if (!bounded) return;  // ranks stay as they are
  if (p.params.policy == drop_policy::token_order) {
    for (int j = kept + tid; j < count; j += plan_threads) p.rank[segment[j]] = -1;
    return;
  }
  auto key_of = [&](std::int64_t j) { return plan_priority(p, weights, segment[j]); };
  const topk_key threshold = block_radix_select<plan_threads>(sm.select).threshold(key_of, count, kept);
  // Kept entries get their rank among the kept, still in token order.
  block_scan<int, plan_threads> scan(sm.scan);
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

// ---- phase 5: one block ------------------------------------------------------------------------
FRUGAL_DEVICE void plan_layout(const plan_problem& p, const plan_outputs& out, plan_shared& sm) {
  const int tid = int(threadIdx.x), E = p.experts;
  const bool masked = p.params.layout == placement::masked;
  const int block = p.params.block_size;
  const int total = scan_experts(
      E, [&](int e) { return masked ? int(p.capacity) : (p.kept[e] + block - 1) / block * block; },
      [&](int e, int offset) {
        p.row_offsets[e] = offset;
        if (out.offsets) out.offsets[e] = offset;
        if (out.offsets64) out.offsets64[e] = offset;
        if (out.counts) out.counts[e] = p.kept[e];
        if (out.dropped) out.dropped[e] = p.totals[e] - p.kept[e];
      },
      sm);
  if (tid == 0) {
    if (out.id_errors) {
      out.id_errors[0] = p.invalid[0];
      out.id_errors[1] = p.invalid[1];
    }
    p.row_offsets[E] = total;
    if (out.offsets) out.offsets[E] = total;
    if (out.offsets64) out.offsets64[E] = total;
    if (out.total_rows) out.total_rows[0] = total;
  }
  __syncthreads();
  // Rows no entry fills: the sentinels.
  const std::int32_t pad_slot = plan_padding_sentinel(p.tokens, p.k);
  for (int e = 0; e < E; ++e) {
    const std::int64_t first = std::int64_t(p.row_offsets[e]) + p.kept[e], last = p.row_offsets[e + 1];
    for (std::int64_t r = first + tid; r < last; r += plan_threads) {
      if (out.row_to_slot) out.row_to_slot[r] = pad_slot;
      if (out.row_to_expanded) out.row_to_expanded[r] = -1;
      if (out.row_to_token) out.row_to_token[r] = -1;
    }
  }
  for (std::int64_t r = std::int64_t(total) + tid; r < p.max_rows; r += plan_threads) {
    if (out.row_to_slot) out.row_to_slot[r] = pad_slot;
    if (out.row_to_expanded) out.row_to_expanded[r] = -1;
    if (out.row_to_token) out.row_to_token[r] = -1;
  }
  if (out.tile_experts && !masked) {
    const std::int64_t tiles = p.max_rows / block;
    for (std::int64_t t = tid; t < tiles; t += plan_threads) {
      // the expert whose segment holds row t * block (segments are whole tiles)
      const std::int64_t row = t * block;
      int lo = 0, hi = E;  // last e with row_offsets[e] <= row
      while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (p.row_offsets[mid] <= row) lo = mid;
        else hi = mid;
      }
      out.tile_experts[t] = row < total ? lo : -1;
    }
  }
}

// ---- phase 6 ----------------------------------------------------------------------------------
template <class IdT>
FRUGAL_DEVICE void plan_maps(const IdT* ids, const plan_problem& p, const plan_outputs& out, std::int64_t first,
                             std::int64_t stride) {
  for (std::int64_t s = first; s < p.slots; s += stride) {
    const int r = p.rank[s];
    const std::int64_t expanded = (s % p.k) * p.tokens + s / p.k;
    const std::int32_t row = r >= 0 ? p.row_offsets[int(ids[s])] + r : -1;
    if (out.slot_to_row) out.slot_to_row[s] = row;
    if (out.expanded_to_row) out.expanded_to_row[expanded] = row;
    if (row >= 0) {
      if (out.row_to_slot) out.row_to_slot[row] = std::int32_t(s);
      if (out.row_to_expanded) out.row_to_expanded[row] = std::int32_t(expanded);
      if (out.row_to_token) out.row_to_token[row] = std::int32_t(s / p.k);
    }
  }
}

// ---- kernels ------------------------------------------------------------------------------------
template <class IdT>
__global__ void __launch_bounds__(plan_threads, 1)
    plan_single_block_kernel(const IdT* __restrict__ ids, const float* __restrict__ weights, plan_problem p, plan_outputs out) {
  __shared__ plan_shared sm;
  if (threadIdx.x < 2) p.invalid[threadIdx.x] = 0;
  __syncthreads();
  plan_ranks(ids, p, 0, 1, sm);
  __syncthreads();
  plan_tile_scan(p, sm);
  __syncthreads();
  plan_sort(ids, p, threadIdx.x, plan_threads);
  __syncthreads();
  for (int e = 0; e < p.experts; ++e) {
    plan_capacity_of(e, weights, p, sm);
    __syncthreads();
  }
  plan_layout(p, out, sm);
  __syncthreads();
  plan_maps(ids, p, out, threadIdx.x, plan_threads);
}

template <class IdT>
__global__ void __launch_bounds__(plan_threads, 1) plan_ranks_kernel(const IdT* __restrict__ ids, plan_problem p) {
  __shared__ plan_shared sm;
  plan_ranks(ids, p, blockIdx.x, gridDim.x, sm);
}

__global__ void __launch_bounds__(plan_threads, 1) plan_tile_scan_kernel(plan_problem p) {
  __shared__ plan_shared sm;
  plan_tile_scan(p, sm);
}

template <class IdT>
__global__ void __launch_bounds__(plan_threads) plan_sort_kernel(const IdT* __restrict__ ids, plan_problem p) {
  plan_sort(ids, p, std::int64_t(blockIdx.x) * plan_threads + threadIdx.x, std::int64_t(gridDim.x) * plan_threads);
}

__global__ void __launch_bounds__(plan_threads, 1) plan_capacity_kernel(const float* __restrict__ weights, plan_problem p) {
  __shared__ plan_shared sm;
  for (int e = blockIdx.x; e < p.experts; e += gridDim.x) {
    plan_capacity_of(e, weights, p, sm);
    __syncthreads();
  }
}

__global__ void __launch_bounds__(plan_threads, 1) plan_layout_kernel(plan_problem p, plan_outputs out) {
  __shared__ plan_shared sm;
  plan_layout(p, out, sm);
}

template <class IdT>
__global__ void __launch_bounds__(plan_threads) plan_maps_kernel(const IdT* __restrict__ ids, plan_problem p, plan_outputs out) {
  plan_maps(ids, p, out, std::int64_t(blockIdx.x) * plan_threads + threadIdx.x, std::int64_t(gridDim.x) * plan_threads);
}

}  // namespace frugal::moe::detail

// SPDX-License-Identifier: Apache-2.0
// The kernels behind frugal::moe::route: a warp path (32 / lanes tokens per warp, E <= 1024)
// and a block path (one 128-thread block per token, 1024 < E <= 4096).
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/detail/route_kernels.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/block.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/moe/block_route.cuh>
#include <frugal/moe/route_config.cuh>
#include <frugal/moe/route_math.cuh>
#include <frugal/moe/score_table.cuh>
#include <frugal/moe/warp_route.cuh>
#include <frugal/topk/warp_topk.cuh>

#include <cstdint>
#include <type_traits>

namespace frugal::moe::detail {

// Threads of a block-path block (one token at a time).
inline constexpr int route_block_threads = 128;

// Writes one slot of token t (called by lane r < k of the token's logical warp).
template <int Experts, class IdT, class WeightT>
FRUGAL_DEVICE void write_slot(const route_outputs<IdT, WeightT>& out, const route_params& params, std::int64_t tokens,
                              std::int64_t t, int k, int r, bool padding, bool degenerate, const route_slot& s) {
  const std::int64_t o = t * k + r;
  out.ids[o] = IdT(padding ? not_routed : local_expert_id(s.expert, params, Experts));
  if (out.global_ids) out.global_ids[o] = IdT(padding ? not_routed : s.expert);
  out.weights[o] = from_float<WeightT>(padding ? 0.0f : s.weight);
  if (out.source_rows) out.source_rows[o] = padding ? -1 : std::int32_t(r * tokens + t);
  if (r == 0 && degenerate && !padding && out.degenerate_rows) atomicAdd(out.degenerate_rows, 1);
}

// Tokens a warp selects one after the other before finishing them together, 32 / Batch lanes
// each (at least k): the weights, the renormalisation and the stores cost about as much as a
// token's whole selection does per logit, and k of 32 lanes would do them alone. Only for full
// warps per token (E > 16) and k <= 8: up to 8 tokens per batch.
template <class Config>
constexpr int route_batch() {
  int lanes_per_token = 4;
  while (lanes_per_token < Config::k) lanes_per_token *= 2;
  return Config::lanes == 32 && lanes_per_token <= 8 ? 32 / lanes_per_token : 1;
}

// Whether route() may score bf16 logits from a bf16_score_table (an elementwise scoring that is
// more than the identity, on the warp path, with vector loads: the table kernels need aligned
// rows). It does so at run time where every logit is scored (a selection bias or a non-monotone
// scoring, no soft-cap, no noise) and T amortises the fill.
template <class Config, class T>
constexpr bool route_may_tabulate() {
  using S = typename Config::scoring;
  return std::is_same_v<T, __nv_bfloat16> && Config::kind == scoring_kind::elementwise &&
         !std::is_same_v<S, identity_scoring> && route_vector_width<Config, T>() > 1;  // 1 on the block path
}

// Blocks per SM a warp-path kernel asks registers for: with a table, 3 blocks of 8 warps (as
// many warps as 6 blocks of 4 without one), which up to 8 logits per lane fit without spills.
template <class Config, bool Tabulated>
constexpr int route_min_blocks() {
  return Tabulated && Config::items <= 8 ? 3 : 1;
}

// Calls body(table) with the block's filled bf16_score_table (Tabulated), or no_score_table{}.
template <class Config, bool Tabulated, class Body>
FRUGAL_DEVICE void with_score_table(Body&& body) {
  if constexpr (Tabulated) {
    using table_t = bf16_score_table<typename Config::scoring>;
    __shared__ typename table_t::TempStorage storage;
    const table_t table(storage);
    table.fill();
    body(table);
  } else {
    body(no_score_table{});
  }
}

// The warp path at large T: each warp selects Batch tokens in turn (warp_route_select, a full
// warp each), parks token j's choice in lanes [j L, j L + L) (L = 32 / Batch, lane j L + r holds
// slot r), then finishes all of them at once on logical warps of L lanes.
template <class Config, int VectorWidth, class T, class IdT, class WeightT, int WarpsPerBlock, int Batch, bool Tabulated>
__global__ void __launch_bounds__(WarpsPerBlock * 32, (route_min_blocks<Config, Tabulated>()))
    route_warp_batch_kernel(const T* __restrict__ logits, const T* __restrict__ noise_logits, std::int64_t ld, std::int64_t tokens,
                            route_params params, route_outputs<IdT, WeightT> out) {
  static_assert(Config::lanes == 32 && Batch >= 2 && 32 % Batch == 0 && 32 / Batch >= Config::k,
                "frugal::moe::route: a batch finishes each token on at least k lanes");
  constexpr int L = 32 / Batch;
  const int lane = int(threadIdx.x % 32), parked = lane / L, r = lane % L;
  const std::int64_t first = (std::int64_t(blockIdx.x) * WarpsPerBlock + threadIdx.x / 32) * Batch;
  const std::int64_t stride = std::int64_t(gridDim.x) * WarpsPerBlock * Batch;
  with_score_table<Config, Tabulated>([&](const auto& table) {
    for (std::int64_t base = first; base < tokens; base += stride) {
      route_choice mine;  // of token base + parked, slot r
      bool padding = false;
      const int count = tokens - base < Batch ? int(tokens - base) : Batch;  // the same in every lane
      for (int j = 0; j < count; ++j) {
        const std::int64_t t = base + j;
        const bool active = !(params.row_mask && params.row_mask[t] == 0);
        const route_choice choice = warp_route_select<Config, VectorWidth>(
            logits + (active ? t : 0) * ld, noise_logits ? noise_logits + (active ? t : 0) * ld : nullptr, t, active, params, table);
        const int expert = warp_broadcast<32>(choice.expert, r);  // slot r sits in lane r
        const float x = warp_broadcast<32>(choice.x, r);
        if (parked == j) {
          padding = !active;
          mine.expert = expert;
          mine.x = x;
          mine.stats = choice.stats;
          mine.degenerate = choice.degenerate;
        }
      }
      const std::int64_t t = base + parked;
      const bool exists = parked < count;
      bool degenerate = mine.degenerate;
      const route_slot slot = finish_route<Config, L>(mine.expert, mine.x, params, mine.stats, degenerate);
      if (exists && r < Config::k) write_slot<Config::experts>(out, params, tokens, t, Config::k, r, padding, degenerate, slot);
    }
  });
}

template <class Config, int VectorWidth, class T, class IdT, class WeightT, int WarpsPerBlock, bool Tabulated>
__global__ void __launch_bounds__(WarpsPerBlock * 32, (route_min_blocks<Config, Tabulated>()))
    route_warp_kernel(const T* __restrict__ logits, const T* __restrict__ noise_logits, std::int64_t ld, std::int64_t tokens,
                      route_params params, route_outputs<IdT, WeightT> out) {
  constexpr int W = Config::lanes, tokens_per_warp = 32 / W;
  const int lane = int(threadIdx.x % 32), r = lane % W;
  const std::int64_t first = (std::int64_t(blockIdx.x) * WarpsPerBlock + threadIdx.x / 32) * tokens_per_warp;
  const std::int64_t stride = std::int64_t(gridDim.x) * WarpsPerBlock * tokens_per_warp;
  // `base` is the same in every lane, so every lane runs the same iterations and shuffles.
  with_score_table<Config, Tabulated>([&](const auto& table) {
    for (std::int64_t base = first; base < tokens; base += stride) {
      const std::int64_t t = base + lane / W;
      const bool exists = t < tokens;
      const bool padding = exists && params.row_mask && params.row_mask[t] == 0;
      const bool active = exists && !padding;
      const std::int64_t row = active ? t : 0;
      bool degenerate = false;
      const route_slot slot = warp_route<Config, VectorWidth>(logits + row * ld, noise_logits ? noise_logits + row * ld : nullptr, t,
                                                 active, params, degenerate, table);
      if (exists && r < Config::k) write_slot<Config::experts>(out, params, tokens, t, Config::k, r, padding, degenerate, slot);
    }
  });
}

// The block path: one token per block at a time (block_route), grid-stride over tokens.
template <class Config, class T, class IdT, class WeightT>
__global__ void __launch_bounds__(route_block_threads, 1)
    route_block_kernel(const T* __restrict__ logits, const T* __restrict__ noise_logits, std::int64_t ld, std::int64_t tokens,
                       route_params params, route_outputs<IdT, WeightT> out) {
  using router_t = block_route<Config, route_block_threads>;
  __shared__ typename router_t::TempStorage storage;
  router_t router(storage);
  const int tid = int(threadIdx.x);
  for (std::int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    if (params.row_mask && params.row_mask[t] == 0) {  // uniform across the block
      if (tid < Config::k) write_slot<Config::experts>(out, params, tokens, t, Config::k, tid, true, false, route_slot{});
      continue;
    }
    bool degenerate = false;
    const route_slot slot = router.route(logits + t * ld, noise_logits ? noise_logits + t * ld : nullptr,
                                         t, params, degenerate);
    if (tid < Config::k) write_slot<Config::experts>(out, params, tokens, t, Config::k, tid, false, degenerate, slot);
  }
}

}  // namespace frugal::moe::detail

// SPDX-License-Identifier: Apache-2.0
//! @file
//! Block level: one token routed by a whole thread block, for E too large for a warp's registers
//! (frugal::moe::route takes this path for 1024 < E <= 4096). CUB's shape: the block provides
//! the TempStorage (__shared__), constructs a block_route on it and calls route() with every
//! thread, once per token. The same rules and results as warp_route (docs/moe_routing.md).
#pragma once

#include <frugal/config.cuh>

#if FRUGAL_KERNEL_CODE

#include <frugal/core/block.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/moe/route_config.cuh>
#include <frugal/moe/route_math.cuh>
#include <frugal/moe/warp_route.cuh>
#include <frugal/topk/warp_topk.cuh>

#include <cstdint>

namespace frugal::moe {

//! Routes one token with a block of BlockThreads threads (a multiple of 32, at most 1024). Expert
//! e is held by thread e % BlockThreads as item e / BlockThreads. Scores and the row statistics
//! use block reductions; group scores come from shared memory; each warp selects its k best
//! experts as candidates and warp 0 selects the k best of them.
template <class Config, int BlockThreads = 128>
class block_route {
  static_assert(BlockThreads % 32 == 0 && BlockThreads >= 32 && BlockThreads <= 1024,
                "frugal::moe::block_route: BlockThreads must be a multiple of 32 in [32, 1024]");
  static constexpr int E = Config::experts, K = Config::k, G = Config::groups, EPG = Config::experts_per_group;
  static constexpr int warps = BlockThreads / 32, items = (E + BlockThreads - 1) / BlockThreads;
  static constexpr int candidates_per_lane = (warps * K + 31) / 32;
  using reduce_t = block_reduce<float, BlockThreads>;

 public:
  struct TempStorage {
    float group_values[G > 1 ? E : 1];
    topk_key candidates[warps * K];
    unsigned kept_groups;
    bool degenerate;
    typename reduce_t::TempStorage reduce;
  };

  FRUGAL_DEVICE explicit block_route(TempStorage& storage) : storage_(storage) {}

  //! Routes the token `row` ([E] logits, any of float, __half, __nv_bfloat16; noise_row its
  //! noise-network logits or nullptr). Every thread of the block calls it. Returns slot r in
  //! thread r < k (other threads: unspecified); `degenerate` is set in every thread. Ends with a
  //! __syncthreads(): the storage may route the next token at once.
  template <class T, class NoiseT = T>
  FRUGAL_DEVICE route_slot route(const T* row, const NoiseT* noise_row, std::int64_t token, const route_params& params,
                                 bool& degenerate) {
    using S = typename Config::scoring;
    const int tid = int(threadIdx.x), lane = tid % 32, warp = tid / 32;
    reduce_t reduce(storage_.reduce);

    float x[items];
    FRUGAL_UNROLL
    for (int i = 0; i < items; ++i) {
      const int e = i * BlockThreads + tid;
      x[i] = e < E ? transformed_logit(to_float(row[e]), params, token, e, noise_row ? to_float(noise_row[e]) : NAN) : NAN;
    }
    softmax_stats stats;
    float v[items];
    if constexpr (Config::kind == scoring_kind::row_softmax) {
      stats = softmax_stats_of(x, reduce);
      FRUGAL_UNROLL
      for (int i = 0; i < items; ++i) {
        const int e = i * BlockThreads + tid;
        v[i] = selection_value<S>(x[i], stats.probability(x[i]), e < E ? params.selection_bias : nullptr, e);
      }
      degenerate = stats.degenerate();
    } else {
      float live = 0.0f;
      FRUGAL_UNROLL
      for (int i = 0; i < items; ++i) {
        const int e = i * BlockThreads + tid;
        v[i] = selection_value<S>(x[i], elementwise_score<S>(x[i]), e < E ? params.selection_bias : nullptr, e);
        live = (e < E && v[i] == v[i] && x[i] > -INFINITY) ? 1.0f : live;
      }
      degenerate = reduce.max(live) == 0.0f;  // warp_route_select's rule
    }

    unsigned kept_groups = ~0u;
    if constexpr (G > 1) {
      FRUGAL_UNROLL
      for (int i = 0; i < items; ++i)
        if (i * BlockThreads + tid < E) storage_.group_values[i * BlockThreads + tid] = v[i];
      __syncthreads();
      if (warp == 0) {
        const bool top2 = group_uses_top2<Config::group_rule>(params.selection_bias) && EPG >= 2;
        const bool sum_scores = top2 && scoring_is_monotone<S> && !params.selection_bias;  // as warp_route_select
        float a1 = -INFINITY, a2 = -INFINITY;
        if (lane < G)
          for (int j = 0; j < EPG; ++j) insert_top2(a1, a2, storage_.group_values[lane * EPG + j]);
        if (sum_scores) {
          a1 = group_score_of<Config>(a1, stats);
          a2 = group_score_of<Config>(a2, stats);
        }
        topk_key group_key[1] = {lane < G ? make_topk_key(top2 ? a1 + a2 : a1, std::uint32_t(lane)) : empty_topk_key};
        const topk_key kept = warp_topk<1, 32>(group_key, Config::topk_groups);
        const unsigned bit = (lane < Config::topk_groups && kept != empty_topk_key) ? 1u << topk_key_index(kept) : 0u;
        const unsigned mask = warp_or(bit);
        if (lane == 0) storage_.kept_groups = mask;
      }
      __syncthreads();
      kept_groups = storage_.kept_groups;
    }

    // Each warp selects its k best, then warp 0 selects the k best of the warps' candidates.
    topk_key keys[items];
    FRUGAL_UNROLL
    for (int i = 0; i < items; ++i) {
      const int e = i * BlockThreads + tid;
      keys[i] = (e < E && ((kept_groups >> (e / EPG)) & 1u)) ? make_topk_key(v[i], std::uint32_t(e)) : empty_topk_key;
    }
    const topk_key warp_best = warp_topk<items, 32>(keys, K);
    if (lane < K) storage_.candidates[warp * K + lane] = warp_best;
    __syncthreads();
    route_slot slot{};
    if (warp == 0) {
      topk_key pool[candidates_per_lane];
      FRUGAL_UNROLL
      for (int j = 0; j < candidates_per_lane; ++j)
        pool[j] = j * 32 + lane < warps * K ? storage_.candidates[j * 32 + lane] : empty_topk_key;
      const topk_key chosen = warp_topk<candidates_per_lane, 32>(pool, K);
      const int expert = int(topk_key_index(chosen));
      const float chosen_x = chosen_logit<Config, 32>(expert, row, noise_row, token, true, params);
      slot = finish_route<Config, 32>(expert, chosen_x, params, stats, degenerate);
      if (lane == 0) storage_.degenerate = degenerate;  // finish_route may find the row degenerate
    }
    __syncthreads();
    degenerate = storage_.degenerate;
    __syncthreads();  // every thread has read the storage
    return slot;
  }

 private:
  TempStorage& storage_;
};

}  // namespace frugal::moe

#endif  // FRUGAL_KERNEL_CODE

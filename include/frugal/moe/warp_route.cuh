// SPDX-License-Identifier: Apache-2.0
//! @file
//! Warp level routing of one token per logical warp (Config::lanes lanes, E <= 1024): scoring,
//! selection bias, group-limited selection, top-k, weights, renormalisation and scaling, all in
//! registers and shuffles. Call it from your own kernel to fuse routing with what surrounds it.
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/ordered_key.cuh>
#include <frugal/core/vector_io.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/moe/route_config.cuh>
#include <frugal/moe/route_math.cuh>
#include <frugal/moe/score_table.cuh>
#include <frugal/topk/warp_topk.cuh>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace frugal::moe {

//! The widest vector (at most 16 bytes) that divides both the items per lane and E, so that
//! each lane's chunks of logits load in single accesses.
template <class Config, class T>
FRUGAL_HOST_DEVICE constexpr int route_vector_width() {
  int v = 1;
  while (v * 2 * int(sizeof(T)) <= 16 && (Config::block_path || Config::items % (v * 2) == 0) && Config::experts % (v * 2) == 0)
    v *= 2;
  return Config::block_path ? 1 : v;
}

#if FRUGAL_KERNEL_CODE

//! The transformed logit of the calling lane's chosen expert, read back from the row, for lanes
//! r < k of a logical warp of W lanes (NaN in the others, and without a token).
template <class Config, int W, class T, class NoiseT>
FRUGAL_DEVICE float chosen_logit(int chosen_expert, const T* row, const NoiseT* noise_row, std::int64_t token,
                                 bool active, const route_params& params) {
  if (int(lane_index()) % W >= Config::k || !active) return NAN;
  const int e = chosen_expert;
  return transformed_logit(to_float(row[e]), params, token, e, noise_row ? to_float(noise_row[e]) : NAN);
}

//! The last step of routing, shared by the warp and block paths: lane r < k of a logical warp of
//! W lanes holds the r-th chosen expert and its transformed logit `chosen_x`; returns the slot
//! with its final weight (scores of the chosen experts computed from their logits, NaN scores
//! weigh 0, degenerate rows get experts 0..k-1 with weight 0, then renormalisation and scaling).
//! `row_stats` are the row's softmax statistics (row softmax only; the same in every lane of
//! the logical warp, as `degenerate` is).
template <class Config, int W>
FRUGAL_DEVICE route_slot finish_route(int chosen_expert, float chosen_x, const route_params& params,
                                      const softmax_stats& row_stats, bool& degenerate) {
  constexpr int K = Config::k;
  const int lane = int(lane_index()) % W;
  const bool holds_slot = lane < K;
  route_slot slot;
  slot.expert = holds_slot ? chosen_expert : 0;
  if (!holds_slot) chosen_x = NAN;  // NaN: no term, no max in the statistics below
  softmax_stats stats = row_stats;
  if constexpr (Config::kind == scoring_kind::selected_softmax) {
    const float held[1] = {chosen_x};
    warp_reducer<W> reducer;
    stats = softmax_stats_of(held, reducer);  // of the chosen logits
  }
  if constexpr (Config::kind != scoring_kind::elementwise) degenerate = degenerate || stats.degenerate();
  float weight = chosen_weight<Config>(chosen_x, stats);
  if (degenerate) {
    slot.expert = lane;
    weight = 0.0f;
  }
  if (params.renormalize) weight = renormalized_weight(weight, warp_sum<W>(holds_slot ? weight : 0.0f) + params.renormalize_epsilon);
  slot.weight = weight * params.routed_scaling;
  return slot;
}

//! What a token's selection leaves for its weights (finish_route): in lane r < k of the logical
//! warp the r-th chosen expert and its transformed logit; the row's softmax statistics (row
//! softmax) and whether the row is degenerate, the same in every lane of the logical warp.
struct route_choice {
  int expert = 0;
  float x = NAN;
  softmax_stats stats;
  bool degenerate = false;
};

//! The selection half of warp_route (same arguments): scores, bias, groups, top-k, and the row
//! statistics the weights need. finish_route turns it into the slot; a kernel may run it on
//! several tokens first and finish them together, k lanes each (the device-wide route does at
//! large T).
template <class Config, int VectorWidth = 0, class T, class NoiseT = T, class Table = no_score_table>
FRUGAL_DEVICE route_choice warp_route_select(const T* row, const NoiseT* noise_row, std::int64_t token, bool active,
                                             const route_params& params, const Table& table = {}) {
  static_assert(!Config::block_path, "frugal::moe::warp_route: NumExperts > 1024 routes with one block per token");
  using S = typename Config::scoring;
  constexpr bool uses_table = !std::is_same_v<Table, no_score_table>;
  static_assert(!uses_table || (std::is_same_v<Table, bf16_score_table<S>> && std::is_same_v<T, __nv_bfloat16>),
                "frugal::moe::warp_route: the score table must be bf16_score_table<Config::scoring>, for bf16 logits");
  constexpr int E = Config::experts, K = Config::k, W = Config::lanes, Items = Config::items;
  constexpr int G = Config::groups, EPG = Config::experts_per_group;
  const int lane = int(lane_index()) % W;

  // 1. Transformed logits. Item i of a lane is expert expert_of(i): chunks of V consecutive
  //    experts per lane (one vector load each), lanes side by side, chunks W * V apart.
  constexpr int V = VectorWidth > 0 ? VectorWidth : route_vector_width<Config, T>();
  static_assert(V >= 1 && Items % V == 0 && E % V == 0 && V * sizeof(T) <= 16,
                "frugal::moe::warp_route: VectorWidth must divide the items per lane and NumExperts (at most 16 bytes)");
  auto expert_of = [lane](int i) { return (i / V) * (W * V) + lane * V + i % V; };
  float x[Items];
  // One loop per case, chosen once: the plain one (no soft-cap, no noise, the common router) has
  // no branch per logit.
  auto load_logits = [&](auto transform) {
    FRUGAL_UNROLL
    for (int c = 0; c < Items / V; ++c) {
      const int first = expert_of(c * V);
      vector<T, V> chunk;
      if (active && first < E) chunk = load_vector<V>(row + first);  // chunks lie wholly inside or outside the row
      FRUGAL_UNROLL
      for (int j = 0; j < V; ++j) {
        const int e = first + j;
        x[c * V + j] = active && e < E ? transform(to_float(chunk[j]), e) : NAN;
      }
    }
  };
  const bool plain = !(params.softcap > 0.0f) && params.noise_std == 0.0f;
  if (plain) {
    load_logits([](float raw, int) { return raw; });
  } else {
    load_logits([&](float raw, int e) {
      return transformed_logit(raw, params, token, e, noise_row ? to_float(noise_row[e]) : NAN);
    });
  }

  // 2. Scores and selection values. Without a bias or groups, row softmax selects on the logits
  //    themselves, so its largest logit is the first chosen one: the statistics wait for the
  //    selection and skip the max reduction.
  softmax_stats stats;
  bool degenerate;
  float v[Items];
  bool any_number = false;
  warp_reducer<W> reducer;
  // The bias of expert e, for items that are experts (e < E).
  auto bias_of = [&](int e) { return params.selection_bias && e < E ? params.selection_bias : nullptr; };
  const bool stats_after_selection = Config::kind == scoring_kind::row_softmax && G == 1 && !params.selection_bias;
  if (stats_after_selection) {
    FRUGAL_UNROLL
    for (int i = 0; i < Items; ++i) v[i] = x[i];
    degenerate = false;  // finish_route tells, from the statistics
  } else if constexpr (Config::kind == scoring_kind::row_softmax) {
    stats = softmax_stats_of(x, reducer);
    FRUGAL_UNROLL
    for (int i = 0; i < Items; ++i) {
      const int e = expert_of(i);
      v[i] = selection_value<S>(x[i], stats.probability(x[i]), bias_of(e), e);
    }
    degenerate = stats.degenerate();
  } else {
    auto score_by_formula = [&](int i) {
      v[i] = selection_value<S>(x[i], elementwise_score<S>(x[i]), bias_of(expert_of(i)), expert_of(i));
    };
    bool tabulated = false;
    if constexpr (uses_table) {
      // The table holds the scores of the bf16 logits as loaded (plain), where each one is
      // needed (a bias, or a non-monotone scoring). A warp holding a logit outside it (an
      // unusual number, a NaN, or a padding row) scores those logits by the formula. Items
      // beyond the experts (e >= E) keep whatever the lookup gave: nothing reads them (the
      // groups, the allowed mask and the degenerate test all skip them).
      tabulated = plain && (params.selection_bias || !scoring_is_monotone<S>);
      if (tabulated) {
        bool missed = false;
        FRUGAL_UNROLL
        for (int i = 0; i < Items; ++i) {
          const int e = expert_of(i);
          missed |= !score_table_holds(x[i]) & (e < E);  // no branch per logit
          v[i] = selection_value_of_number<S>(x[i], table.score_of_bf16(x[i]), bias_of(e), e);
        }
        if (warp_any<W>(missed)) {
          // The table holds x exactly where its entry stands for x. Asked so, not by the range
          // compares again, the compiler does not keep each item's compare result across the
          // vote (two instructions per item on every row, for a rare path).
          FRUGAL_UNROLL
          for (int i = 0; i < Items; ++i)
            if (float_bits(score_table_logit(score_table_entry(x[i]))) != float_bits(x[i]) && expert_of(i) < E)
              score_by_formula(i);
        }
      }
    }
    if (!tabulated) {
      FRUGAL_UNROLL
      for (int i = 0; i < Items; ++i) score_by_formula(i);
    }
    // Degenerate: no expert has both a logit above -inf and a selection value that is a number
    // (all -inf or NaN logits, whatever the scoring; or all selection values NaN).
    FRUGAL_UNROLL
    for (int i = 0; i < Items; ++i) any_number = any_number || (expert_of(i) < E && v[i] == v[i] && x[i] > -INFINITY);
    degenerate = !warp_any<W>(any_number);
  }

  // 3. Group-limited routing: keep the best TopKGroups groups.
  unsigned kept_groups = ~0u;
  if constexpr (G > 1) {
    const bool top2 = group_uses_top2<Config::group_rule>(params.selection_bias) && EPG >= 2;
    // A group's top two sum scores (+ bias). Where the selection values are the logits (a
    // monotone scoring without a bias) the two largest logits are scored first: the same two.
    const bool sum_scores = top2 && scoring_is_monotone<S> && !params.selection_bias;
    auto group_value = [&](float a1, float a2) {
      if (!top2) return a1;
      if (sum_scores) return group_score_of<Config>(a1, stats) + group_score_of<Config>(a2, stats);
      return a1 + a2;
    };
    constexpr int Chunks = Items / V, L = EPG / V;
    // Segmented: every chunk's V experts lie in one group and a group spans L aligned lanes of a
    // chunk (DeepSeek-V3: E = 256, 8 groups, bf16: V = 8, L = 4). Then a group's top 2 is a
    // butterfly over its L lanes, and its key sits in the segment's first lane.
    constexpr bool segmented = EPG % V == 0 && L <= W && (L & (L - 1)) == 0 && (W * V) % EPG == 0;
    constexpr int GroupKeys = segmented ? Chunks : 1;
    topk_key group_keys[GroupKeys];
    if constexpr (segmented) {
      FRUGAL_UNROLL
      for (int c = 0; c < Chunks; ++c) {
        float a1 = -INFINITY, a2 = -INFINITY;
        FRUGAL_UNROLL
        for (int j = 0; j < V; ++j)
          insert_top2(a1, a2, expert_of(c * V + j) < E ? v[c * V + j] : -INFINITY);
        FRUGAL_UNROLL
        for (int offset = L / 2; offset > 0; offset /= 2) {
          const float b1 = shfl_xor<W>(a1, offset);
          const float b2 = top2 ? shfl_xor<W>(a2, offset) : -INFINITY;
          merge_top2(a1, a2, b1, b2);
        }
        const int first = expert_of(c * V);
        group_keys[c] = lane % L == 0 && first < E ? make_topk_key(group_value(a1, a2), std::uint32_t(first / EPG))
                                                   : empty_topk_key;
      }
    } else {
      // General layouts: each lane folds its items into per-group top 2s; a butterfly per group.
      float g1[G], g2[G];
      FRUGAL_UNROLL
      for (int g = 0; g < G; ++g) g1[g] = g2[g] = -INFINITY;
      FRUGAL_UNROLL
      for (int i = 0; i < Items; ++i) {
        const int e = expert_of(i), group = e / EPG;
        const float gv = e < E ? v[i] : -INFINITY;
        FRUGAL_UNROLL
        for (int g = 0; g < G; ++g)
          if (group == g) insert_top2(g1[g], g2[g], gv);
      }
      float mine = -INFINITY;
      FRUGAL_UNROLL
      for (int g = 0; g < G; ++g) {
        float a1 = g1[g], a2 = g2[g];
        FRUGAL_UNROLL
        for (int offset = W / 2; offset > 0; offset /= 2) {
          const float b1 = shfl_xor<W>(a1, offset);
          const float b2 = top2 ? shfl_xor<W>(a2, offset) : -INFINITY;
          merge_top2(a1, a2, b1, b2);
        }
        if (lane == g) mine = group_value(a1, a2);
      }
      group_keys[0] = lane < G ? make_topk_key(mine, std::uint32_t(lane)) : empty_topk_key;
    }
    const topk_key kept = warp_topk<GroupKeys, W>(group_keys, Config::topk_groups);
    const unsigned bit = (lane < Config::topk_groups && kept != empty_topk_key) ? 1u << topk_key_index(kept) : 0u;
    kept_groups = warp_or<W>(bit);
  }

  // 4. Top-k over the selection values of the kept groups.
  std::uint32_t experts[Items];
  unsigned allowed = 0;
  FRUGAL_UNROLL
  for (int i = 0; i < Items; ++i) {
    const int e = expert_of(i);
    experts[i] = std::uint32_t(e);
    allowed |= e < E && ((kept_groups >> (e / EPG)) & 1u) ? 1u << i : 0u;
  }
  topk_entry chosen{};
  // Without a bias a monotone scoring selects on the (transformed) logits, so the key holds the
  // chosen logit (a -0.0 as +0.0): no read back from the row, which is a dependent load.
  const bool value_is_logit = scoring_is_monotone<S> && params.selection_bias == nullptr;
  // When the selection values are the 16-bit logits as loaded (a monotone scoring, no bias, no
  // soft-cap, no noise), a value and its expert fit in 32 bits: same order, half the work.
  // Computed values (a bias, a score) of up to 256 experts go on 32-bit keys of their top 24
  // bits first, checked, and on 64-bit keys where the check fails.
  constexpr int zero_bits = exact_float_trailing_zeros<T>;
  constexpr bool compact_fits = zero_bits > 0 && scoring_is_monotone<S> && E < (1 << zero_bits);
  const bool compact = compact_fits && plain && value_is_logit;
  if constexpr (compact_fits) {
    if (compact) chosen = warp_topk_entry<zero_bits, Items, W>(v, experts, allowed, K);
  }
  if (!compact) {
    if constexpr (E <= 256) {
      chosen = value_is_logit ? warp_topk_entry<0, Items, W>(v, experts, allowed, K)
                              : warp_topk_entry_truncated<Items, W>(v, experts, allowed, K);
    } else {
      chosen = warp_topk_entry<0, Items, W>(v, experts, allowed, K);
    }
  }
  const int chosen_expert = int(chosen.index);
  const float chosen_x = value_is_logit ? chosen.value : chosen_logit<Config, W>(chosen_expert, row, noise_row, token, active, params);

  // Row softmax whose statistics waited for the selection: lane 0 holds the largest chosen logit.
  if (stats_after_selection) {
    const float largest = warp_broadcast<W>(chosen_x, 0);
    // Renormalised, the row's sum S cancels: p_r / (sum p_j + eps) = e_r / (sum e_j + eps S),
    // with e = exp(x - max). The max is chosen, so sum e_j >= 1, and eps S <= eps E: below half
    // an ulp of it, it cannot change the rounded denominator, and neither can eps. So a sum of 1
    // gives the same weights, up to the roundings of the two formulas, without the sum over the row.
    // Asked of the whole warp: the statistics' collectives span every logical warp in it.
    const bool finite = largest > -INFINITY && largest < INFINITY;
    if (params.renormalize && renormalize_ignores_row_sum(params.renormalize_epsilon, E) && !reducer.any(!finite)) {
      stats.max = largest;
      stats.sum = 1.0f;
    } else {
      stats = softmax_stats_given_max(x, largest == largest ? largest : -INFINITY, reducer);
    }
  }
  route_choice choice;
  choice.expert = chosen_expert;
  choice.x = chosen_x;
  choice.stats = stats;
  choice.degenerate = degenerate;
  return choice;
}

//! Routes one token. Every lane of the warp must call it (lanes of logical warps whose token does
//! not exist pass active = false and still take part in the shuffles).
//!
//! @param row         the token's E logits (any of float, __half, __nv_bfloat16)
//! @param noise_row   the token's noise-network logits, or nullptr
//! @param token       the token's index (seeds the noise)
//! @param active      false for a logical warp without a token
//! @param degenerate  set (in every lane) when the row is degenerate: ids 0..k-1, weights 0
//! @param table       no_score_table{}, or (bf16 logits, an elementwise scoring) the block's filled
//!                    bf16_score_table<Config::scoring>: the same results, scores looked up
//! @tparam VectorWidth logits loaded VectorWidth at a time; 0 (the default) is the widest that
//!         applies, route_vector_width<Config, T>() (16 bytes when E allows). row (and noise_row)
//!         must be aligned to VectorWidth * sizeof(T) bytes: 16 for the default with float
//!         logits and E a multiple of 4 (a row of a contiguous [T, E] array with 16-byte aligned
//!         storage is); pass 1 for rows of any alignment.
//!
//! template <class Config, int VectorWidth = 0, class T, class NoiseT = T, class Table = no_score_table>
//! route_slot warp_route(const T* row, const NoiseT* noise_row, std::int64_t token, bool active,
//!                       const route_params& params, bool& degenerate, const Table& table = {});
//! (noise_row may be a plain nullptr.)
template <class Config, int VectorWidth = 0, class T, class NoiseT = T, class Table = no_score_table>
FRUGAL_DEVICE route_slot warp_route(const T* row, const NoiseT* noise_row, std::int64_t token, bool active,
                                    const route_params& params, bool& degenerate, const Table& table = {}) {
  const route_choice choice = warp_route_select<Config, VectorWidth>(row, noise_row, token, active, params, table);
  degenerate = choice.degenerate;
  return finish_route<Config, Config::lanes>(choice.expert, choice.x, params, choice.stats, degenerate);
}

//! warp_route() without noise logits: noise_row a plain nullptr.
template <class Config, int VectorWidth = 0, class T, class Table = no_score_table>
FRUGAL_DEVICE route_slot warp_route(const T* row, std::nullptr_t, std::int64_t token, bool active, const route_params& params,
                                    bool& degenerate, const Table& table = {}) {
  return warp_route<Config, VectorWidth>(row, static_cast<const T*>(nullptr), token, active, params, degenerate, table);
}

#endif  // FRUGAL_KERNEL_CODE

}  // namespace frugal::moe

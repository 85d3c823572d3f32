// SPDX-License-Identifier: Apache-2.0
//! @file
//! Thread level: one token routed by one thread, the whole row in its registers, for small E
//! (at most 64: Mixtral's 8, a gate of 16 or 32 experts). No collective, so it composes into any
//! kernel shape (a thread per token, or inside a loop over a tile). The same rules as warp_route
//! (docs/moe_routing.md): the same ids; the same weights up to the order of the softmax and
//! renormalisation sums (sequential here, a butterfly across lanes there).
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/ordered_key.cuh>
#include <frugal/moe/route_config.cuh>
#include <frugal/moe/route_math.cuh>
#include <frugal/topk/thread_topk.cuh>

#include <cstdint>

namespace frugal::moe {

//! Routes the token `row` ([E] logits: float, __half or __nv_bfloat16; noise_row its noise-network
//! logits or nullptr; `token` its index, which seeds the noise) in the calling thread. Writes the k
//! slots in order (slot j: the j-th chosen expert, global id, and its final weight) and whether
//! the row is degenerate (then experts 0..k-1 with weight 0).
template <class Config, class T, class NoiseT = T>
FRUGAL_HOST_DEVICE void thread_route(const T* row, const NoiseT* noise_row, std::int64_t token, const route_params& params,
                                     route_slot (&slots)[Config::k], bool& degenerate) {
  static_assert(Config::experts <= 64, "frugal::moe::thread_route: NumExperts must be at most 64 (the row lives in one thread's registers)");
  using S = typename Config::scoring;
  constexpr int E = Config::experts, K = Config::k, G = Config::groups, EPG = Config::experts_per_group;
  auto logit = [&](int e) { return transformed_logit(to_float(row[e]), params, token, e, noise_row ? to_float(noise_row[e]) : NAN); };
  float x[E];
  FRUGAL_UNROLL
  for (int e = 0; e < E; ++e) x[e] = logit(e);

  // Scores, selection values, and the degenerate-row rule.
  const single_thread_reducer one;
  softmax_stats stats;
  float v[E];
  if constexpr (Config::kind == scoring_kind::row_softmax) {
    stats = softmax_stats_of(x, one);
    FRUGAL_UNROLL
    for (int e = 0; e < E; ++e) v[e] = selection_value<S>(x[e], stats.probability(x[e]), params.selection_bias, e);
    degenerate = stats.degenerate();
  } else {
    bool live = false;
    FRUGAL_UNROLL
    for (int e = 0; e < E; ++e) {
      v[e] = selection_value<S>(x[e], elementwise_score<S>(x[e]), params.selection_bias, e);
      live = live || (v[e] == v[e] && x[e] > -INFINITY);
    }
    degenerate = !live;
  }

  // Group-limited routing: keep the best TopKGroups groups.
  unsigned kept_groups = ~0u;
  if constexpr (G > 1) {
    const bool top2 = group_uses_top2<Config::group_rule>(params.selection_bias) && EPG >= 2;
    const bool sum_scores = top2 && scoring_is_monotone<S> && !params.selection_bias;
    thread_topk<Config::topk_groups> best_groups;
    FRUGAL_UNROLL
    for (int g = 0; g < G; ++g) {
      float a1 = -INFINITY, a2 = -INFINITY;
      FRUGAL_UNROLL
      for (int j = 0; j < EPG; ++j) insert_top2(a1, a2, v[g * EPG + j]);
      if (sum_scores) {
        a1 = group_score_of<Config>(a1, stats);
        a2 = group_score_of<Config>(a2, stats);
      }
      best_groups.insert(top2 ? a1 + a2 : a1, std::uint32_t(g));
    }
    kept_groups = 0;
    FRUGAL_UNROLL
    for (int j = 0; j < Config::topk_groups; ++j) kept_groups |= 1u << topk_key_index(best_groups.keys[j]);
  }

  // Top-k of the kept groups' experts.
  thread_topk<K> best;
  FRUGAL_UNROLL
  for (int e = 0; e < E; ++e)
    if ((kept_groups >> (e / EPG)) & 1u) best.insert(v[e], std::uint32_t(e));

  // Weights: read back the chosen logits (no register indexing), then finish as finish_route does.
  float chosen_x[K];
  FRUGAL_UNROLL
  for (int j = 0; j < K; ++j) chosen_x[j] = logit(int(topk_key_index(best.keys[j])));
  softmax_stats weight_stats = stats;
  if constexpr (Config::kind == scoring_kind::selected_softmax) weight_stats = softmax_stats_of(chosen_x, one);
  if constexpr (Config::kind != scoring_kind::elementwise) degenerate = degenerate || weight_stats.degenerate();
  float w[K], sum = 0.0f;
  FRUGAL_UNROLL
  for (int j = 0; j < K; ++j) {
    w[j] = degenerate ? 0.0f : chosen_weight<Config>(chosen_x[j], weight_stats);
    sum += w[j];
  }
  FRUGAL_UNROLL
  for (int j = 0; j < K; ++j) {
    const float weight = params.renormalize ? renormalized_weight(w[j], sum + params.renormalize_epsilon) : w[j];
    slots[j].expert = degenerate ? j : int(topk_key_index(best.keys[j]));
    slots[j].weight = weight * params.routed_scaling;
  }
}

}  // namespace frugal::moe

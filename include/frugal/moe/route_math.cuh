// SPDX-License-Identifier: Apache-2.0
//! @file
//! Thread level pieces of routing shared by the warp and block paths, the backward and the host
//! reference: the transformed logit (soft-cap, noise), softmax with frugal's rules for NaN and
//! infinities, and the selection value. Plain arithmetic, so it runs and is tested under g++.
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/philox.cuh>
#include <frugal/moe/route_config.cuh>
#include <frugal/moe/scoring.cuh>

#include <cmath>
#include <cstdint>

namespace frugal::moe {

//! The standard normal drawn for (token, expert) under `params`' seed and offset.
FRUGAL_HOST_DEVICE float routing_noise(const route_params& params, std::int64_t token, int expert) {
  const philox_words counter{{std::uint32_t(expert), std::uint32_t(std::uint64_t(token)),
                              std::uint32_t(std::uint64_t(token) >> 32), params.noise_offset}};
  const philox_words r = philox4x32_10(counter, std::uint32_t(params.noise_seed), std::uint32_t(params.noise_seed >> 32));
  return normal_from_words(r.v[0], r.v[1]);
}

//! The logit as routing sees it: soft-capped, then with noise added when noise_std != 0.
//! `noise_logit` is the raw noise-network logit of (token, expert), or NaN when there is none.
FRUGAL_HOST_DEVICE float transformed_logit(float raw, const route_params& params, std::int64_t token, int expert,
                                           float noise_logit) {
  float x = softcap(raw, params.softcap);
  if (params.noise_std != 0.0f) {
    const float scale = noise_logit == noise_logit ? sqrt_softplus_scoring::softplus(noise_logit) : 1.0f;
    x += params.noise_std * scale * routing_noise(params, token, expert);
  }
  return x;
}

//! One routing slot: the r-th chosen expert of a token (global id, 0..E-1) and its final weight
//! (in lane r < k of the token's logical warp for warp_route; slots[r] for thread_route).
struct route_slot {
  int expert = 0;
  float weight = 0.0f;
};

//! Row statistics for softmax with frugal's rules: NaN logits take no probability; if any logit
//! is +inf, the +inf logits share the probability equally; a row whose logits are all -inf or NaN
//! has no softmax (degenerate).
struct softmax_stats {
  float max = -INFINITY;  //!< largest non-NaN logit
  float sum = 0.0f;       //!< sum of exp(x - max) over non-NaN logits (when max is finite)
  float inf_count = 0.0f; //!< number of +inf logits (when max is +inf)

  FRUGAL_HOST_DEVICE bool degenerate() const { return !(max > -INFINITY); }

  //! Probability of a logit (0 for NaN, and for every logit of a degenerate row).
  FRUGAL_HOST_DEVICE float probability(float x) const {
    if (x != x || degenerate()) return 0.0f;
    if (max == INFINITY) return x == INFINITY ? 1.0f / inf_count : 0.0f;
    return std::exp(x - max) / sum;
  }
};

//! e^d for a term of a softmax normaliser (d = x - max <= 0): 2^(d log2 e), one ex2 where expf
//! takes about eight instructions. Its error (2 ulp, plus the rounding of d * log2 e, small where
//! the terms are large) is of the size of the rounding the sum itself adds, so the normaliser is
//! as accurate as with expf; the numerators of the weights keep expf. On the GPU the ex2 flushes
//! results below 2^-126 to zero (exp2f spends three more instructions on them): such a term
//! cannot change a sum that holds the max's term, 1, by even half an ulp.
FRUGAL_HOST_DEVICE float normaliser_term(float d) {
  const float power = d * 1.44269504088896341f;
#if defined(__CUDA_ARCH__)
  float term;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(term) : "f"(power));
  return term;
#else
  return exp2f(power);
#endif
}

//! Whether renormalised weights e_r / (sum_j e_j + eps S) of a row whose max is among the chosen
//! (so sum_j e_j >= 1) equal e_r / sum_j e_j once rounded: eps S <= eps E stays below half an ulp
//! of 1 (2^-24), so adding it cannot change the rounded denominator. (route() refuses eps < 0;
//! for the device functions, which do not check, a negative eps takes the full statistics.)
FRUGAL_HOST_DEVICE constexpr bool renormalize_ignores_row_sum(float epsilon, int experts) {
  return epsilon >= 0.0f && epsilon * float(experts) < 5.9604644775390625e-08f;  // 2^-24
}

//! The term a logit adds to softmax_stats::sum once `max` is known.
FRUGAL_HOST_DEVICE float softmax_term(float x, float max) {
  return (x != x || !(max > -INFINITY) || max == INFINITY) ? 0.0f : normaliser_term(x - max);
}

//! softmax_stats of the logits `x` spread over the threads a `reducer` (frugal::warp_reducer or
//! frugal::block_reduce) combines, given their largest non-NaN logit `max` (-inf when there is
//! none). Every thread of the reducer must call it.
//!
//! Same values as summing softmax_term, arranged for the common row (finite max): every term is
//! a normaliser_term whose NaN (from a NaN logit) fmaxf turns into 0, with no branch per logit,
//! and the +inf count is only reduced when some row's max is +inf. The branches ask the reducer
//! whether any of the threads its collectives span needs them, so they stay uniform there.
template <int Items, class Reducer>
FRUGAL_HOST_DEVICE softmax_stats softmax_stats_given_max(const float (&x)[Items], float max, Reducer& reducer) {
  softmax_stats stats;
  stats.max = max;
  const bool finite = max > -INFINITY && max < INFINITY;
  if (reducer.any(finite)) {
    float sum = 0.0f;
    FRUGAL_UNROLL
    for (int i = 0; i < Items; ++i) sum += fmaxf(normaliser_term(x[i] - max), 0.0f);
    stats.sum = reducer.sum(finite ? sum : 0.0f);
  }
  if (reducer.any(max == INFINITY)) {
    float infs = 0.0f;
    FRUGAL_UNROLL
    for (int i = 0; i < Items; ++i) infs += x[i] == INFINITY ? 1.0f : 0.0f;
    stats.inf_count = reducer.sum(max == INFINITY ? infs : 0.0f);
  }
  return stats;
}

//! softmax_stats of the logits `x` spread over the threads a `reducer` combines (the max
//! reduced first). Every thread of the reducer must call it.
template <int Items, class Reducer>
FRUGAL_HOST_DEVICE softmax_stats softmax_stats_of(const float (&x)[Items], Reducer& reducer) {
  float m = -INFINITY;
  FRUGAL_UNROLL
  for (int i = 0; i < Items; ++i) m = fmaxf(m, x[i]);
  return softmax_stats_given_max(x, reducer.max(m), reducer);
}

//! The score of a (transformed) logit for elementwise and selected-softmax scorings
//! (row softmax needs the row: softmax_stats::probability).
template <class Scoring>
FRUGAL_HOST_DEVICE float elementwise_score(float x) {
  if constexpr (scoring_kind_of<Scoring> == scoring_kind::elementwise) return Scoring{}(x);
  else return x;
}

//! The value selection ranks an expert by (selection_value): NaN for a NaN logit; score + bias
//! when a bias is given; otherwise the logit itself for monotone scorings (same order, no ties
//! made by rounding or saturation), else the score. This one is for a logit that is a number.
//! No branch on the logit (a warp's logits take both sides): the sum is formed, then replaced.
template <class Scoring>
FRUGAL_HOST_DEVICE float selection_value_of_number(float x, float score, const float* bias, int expert) {
  if (bias) return score + bias[expert];
  if constexpr (scoring_is_monotone<Scoring>) return x;
  else return score;
}
//! selection_value_of_number, for a logit x that may be NaN.
template <class Scoring>
FRUGAL_HOST_DEVICE float selection_value(float x, float score, const float* bias, int expert) {
  const float v = selection_value_of_number<Scoring>(x, score, bias, expert);
  return x != x ? x : v;  // a NaN logit is never selected before a number, whatever its bias
}

//! The weight of a chosen expert whose transformed logit is x, before renormalisation and
//! scaling: its probability under `stats` (row softmax: the row's statistics; top-k-then-softmax:
//! those of the chosen logits) or its elementwise score. A NaN or infinite score weighs 0.
template <class Config>
FRUGAL_HOST_DEVICE float chosen_weight(float x, const softmax_stats& stats) {
  float w;
  if constexpr (Config::kind == scoring_kind::elementwise) w = elementwise_score<typename Config::scoring>(x);
  else w = stats.probability(x);
  return fabsf(w) < INFINITY ? w : 0.0f;
}

//! A weight renormalised by `denominator` (the chosen weights' sum + epsilon); 0 where the
//! denominator is 0 (every weight 0 with epsilon 0; or signed scores that cancel).
FRUGAL_HOST_DEVICE float renormalized_weight(float weight, float denominator) {
  return denominator != 0.0f ? weight / denominator : 0.0f;
}

//! A reducer over one thread (the interface of frugal::warp_reducer and frugal::block_reduce):
//! the row statistics of a row a single thread holds.
struct single_thread_reducer {
  template <class T>
  FRUGAL_HOST_DEVICE T sum(T v) const { return v; }
  template <class T>
  FRUGAL_HOST_DEVICE T max(T v) const { return v; }
  FRUGAL_HOST_DEVICE bool any(bool p) const { return p; }
};

//! The score of a group member whose selection value is its logit `x` (a monotone scoring
//! without a bias): the elementwise score, or the row-softmax probability. Top-k-then-softmax
//! has no score before selection: its group values stay the logits.
template <class Config>
FRUGAL_HOST_DEVICE float group_score_of(float x, const softmax_stats& stats) {
  if constexpr (Config::kind == scoring_kind::elementwise) return elementwise_score<typename Config::scoring>(x);
  else if constexpr (Config::kind == scoring_kind::row_softmax) return stats.probability(x);
  else return x;
}

//! Whether group scores sum the top two (true) or take the max (false).
template <group_score Rule>
FRUGAL_HOST_DEVICE bool group_uses_top2(const float* bias) {
  return Rule == group_score::top2_sum || (Rule == group_score::automatic && bias != nullptr);
}

//! Merges (a1 >= a2) with (b1 >= b2), none of them NaN, into the two largest of the four.
//! fminf/fmaxf: one instruction each on the GPU where compare-and-select takes two. (The sign of
//! a zero may differ from a compare-and-select; group keys canonicalise zeros, so no group
//! choice does.)
FRUGAL_HOST_DEVICE void merge_top2(float& a1, float& a2, float b1, float b2) {
  const float lower = fminf(a1, b1);
  a1 = fmaxf(a1, b1);
  a2 = fmaxf(lower, fmaxf(a2, b2));
}

//! Inserts v into the two largest (a1 >= a2, not NaN); a NaN v counts as -inf (changes nothing).
FRUGAL_HOST_DEVICE void insert_top2(float& a1, float& a2, float v) {
  const float lower = v >= a1 ? a1 : v;  // min(a1, v); a NaN v stays NaN, and both fmaxf drop it
  a1 = fmaxf(a1, v);
  a2 = fmaxf(a2, lower);
}

//! The id written for expert `e` of `experts` under expert parallelism: local id, or not_routed.
//! An expert_map entry outside [0, experts) (a local id space is never larger than the global
//! one) is written as not_routed: a malformed map never yields an id no expert owns.
FRUGAL_HOST_DEVICE int local_expert_id(int e, const route_params& params, int experts) {
  if (params.expert_map) {
    const int id = params.expert_map[e];
    return id >= 0 && id < experts ? id : not_routed;
  }
  if (params.local_expert_end < 0) return e;
  return (e >= params.local_expert_begin && e < params.local_expert_end) ? e - params.local_expert_begin : not_routed;
}

}  // namespace frugal::moe

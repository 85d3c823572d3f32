// SPDX-License-Identifier: Apache-2.0
//! @file
//! Compile-time configuration and runtime options of Top-k routing (frugal::moe::route).
#pragma once

#include <frugal/config.cuh>
#include <frugal/moe/scoring.cuh>

#include <cmath>
#include <cstdint>

namespace frugal::moe {

//! Written as expert id for a slot that has no local expert: a padding row, or (expert
//! parallelism) an expert owned by another rank.
inline constexpr int not_routed = -1;

//! How a group's score is formed in group-limited routing.
enum class group_score {
  automatic,  //!< top2_sum when a selection bias is given, max otherwise (DeepSeek-V3)
  max,        //!< the largest selection value in the group
  top2_sum,   //!< the sum of the two largest selection values in the group
};

//! The compile-time shape of a router: E experts, top-k, the scoring policy, and group-limited
//! routing (E split into NumGroups contiguous groups; the best TopKGroups groups are kept).
//! A configuration that cannot work does not compile; the message names the parameter.
template <int NumExperts, int TopK, class Scoring = softmax_scoring, int NumGroups = 1,
          int TopKGroups = NumGroups, group_score GroupScore = group_score::automatic>
struct route_config {
  static_assert(NumExperts >= 1 && NumExperts <= 4096, "frugal::moe::route_config: NumExperts must be in [1, 4096]");
  static_assert(TopK >= 1 && TopK <= 32, "frugal::moe::route_config: TopK must be in [1, 32]");
  static_assert(TopK <= NumExperts, "frugal::moe::route_config: TopK must not exceed NumExperts");
  static_assert(NumGroups >= 1 && NumGroups <= 32, "frugal::moe::route_config: NumGroups must be in [1, 32]");
  static_assert(NumExperts % NumGroups == 0, "frugal::moe::route_config: NumGroups must divide NumExperts");
  static_assert(TopKGroups >= 1 && TopKGroups <= NumGroups,
                "frugal::moe::route_config: TopKGroups must be in [1, NumGroups]");
  static_assert(TopK <= TopKGroups * (NumExperts / NumGroups),
                "frugal::moe::route_config: TopK must not exceed TopKGroups * (NumExperts / NumGroups), the experts of the kept groups");

  using scoring = Scoring;
  static constexpr int experts = NumExperts;
  static constexpr int k = TopK;
  static constexpr int groups = NumGroups;
  static constexpr int topk_groups = TopKGroups;
  static constexpr int experts_per_group = NumExperts / NumGroups;
  static constexpr group_score group_rule = GroupScore;
  static constexpr scoring_kind kind = scoring_kind_of<Scoring>;

  //! Warp path (E <= 1024): a logical warp of `lanes` lanes per token, `items` experts per lane,
  //! expert e held by lane e % lanes as item e / lanes. Block path (E > 1024): one block per token.
  static constexpr bool block_path = NumExperts > 1024;
  static constexpr int lanes = block_path ? 32 : (NumExperts >= 32 ? 32 : NumExperts > 16 ? 32 : NumExperts > 8 ? 16
                                                  : NumExperts > 4 ? 8 : NumExperts > 2 ? 4 : NumExperts > 1 ? 2 : 1);
  static constexpr int items = (NumExperts + lanes - 1) / lanes;
};

//! Runtime options of routing. Defaults: plain top-k, no bias, no renormalisation.
struct route_params {
  //! [E] fp32 added to the scores for selection only: it changes which experts win, not their
  //! weights (DeepSeek-V3 aux-loss-free balancing). nullptr: none.
  const float* selection_bias = nullptr;
  //! Divide the k weights by (their sum + renormalize_epsilon).
  bool renormalize = false;
  float renormalize_epsilon = 1e-20f;
  //! Multiplies the final weights (DeepSeek-V3: 2.5).
  float routed_scaling = 1.0f;
  //! Logit soft-capping before scoring: cap * tanh(x / cap); 0 = off.
  float softcap = 0.0f;
  //! Noisy top-k (Shazeer et al. 2017): x += noise_std * N(0,1) * (noise_logits ? softplus(noise_logits) : 1),
  //! N drawn by Philox4x32-10 from (noise_seed, noise_offset, token, expert): reproducible.
  //! noise_std = 0: off. The noise is part of the logits (it moves weights too) and is treated as
  //! a constant by the backward.
  float noise_std = 0.0f;
  unsigned long long noise_seed = 0;
  unsigned noise_offset = 0;
  //! Expert parallelism: experts [local_expert_begin, local_expert_end) are written as
  //! e - local_expert_begin, others as not_routed (their weights are still written). end < 0: all
  //! experts are local. expert_map ([E] int32, global -> local id or -1) overrides the range.
  int local_expert_begin = 0;
  int local_expert_end = -1;
  const std::int32_t* expert_map = nullptr;
  //! [T] bytes; 0 marks a padding row: ids not_routed, weights 0, source rows -1. nullptr: none.
  const std::uint8_t* row_mask = nullptr;
};

namespace detail {
//! The one check of route_params, shared by route, route_backward and the router losses: what it
//! can see without reading device memory. Messages name the field.
template <class Config>
status check_route_params(const route_params& p) {
  if (!(p.renormalize_epsilon >= 0.0f) || !std::isfinite(p.renormalize_epsilon))
    return status::invalid("frugal::moe: route_params::renormalize_epsilon must be finite and >= 0");
  if (!std::isfinite(p.routed_scaling)) return status::invalid("frugal::moe: route_params::routed_scaling must be finite");
  if (!(p.softcap >= 0.0f) || !std::isfinite(p.softcap))
    return status::invalid("frugal::moe: route_params::softcap must be finite and >= 0 (0 = off)");
  if (!(p.noise_std >= 0.0f) || !std::isfinite(p.noise_std))
    return status::invalid("frugal::moe: route_params::noise_std must be finite and >= 0 (0 = off)");
  if (p.local_expert_end >= 0 &&
      (p.local_expert_begin < 0 || p.local_expert_begin > p.local_expert_end || p.local_expert_end > Config::experts))
    return status::invalid("frugal::moe: route_params: the local expert range must satisfy 0 <= begin <= end <= NumExperts");
  return status{};
}
}  // namespace detail

//! Inputs of routing: logits [T, E] and, for noisy top-k, the noise network's logits [T, E].
template <class T>
struct route_inputs {
  const T* logits = nullptr;
  const T* noise_logits = nullptr;
  //! Elements from one token's row to the next (both arrays); 0: E (contiguous rows). A row of a
  //! wider buffer (a fused QKV-and-router GEMM output) needs no copy.
  std::int64_t ld = 0;
  //! The logits' width as the caller knows it (the router GEMM's N), checked against E; 0: not
  //! given. A buffer narrower than E is then an error, not garbage.
  std::int64_t columns = 0;
};

//! Where routing writes. ids and weights are [T, k]; the rest optional.
template <class IdT = std::int32_t, class WeightT = float>
struct route_outputs {
  IdT* ids = nullptr;          //!< int32 or int64
  WeightT* weights = nullptr;  //!< float or __nv_bfloat16
  //! [T, k]: source_rows[t * k + j] = j * T + t (TensorRT-LLM's expanded-row order), -1 for padding.
  std::int32_t* source_rows = nullptr;
  //! One int32 on the device, incremented once per degenerate row (see docs/moe_routing.md).
  std::int32_t* degenerate_rows = nullptr;
  //! [T, k]: the global expert ids (0..E-1, not_routed for padding) whatever the expert-parallel
  //! mapping of `ids`: what route_backward takes, without routing again.
  IdT* global_ids = nullptr;
};

//! E experts scored per token by Scoring (row softmax over the experts, as in the paper, or an
//! elementwise scoring such as sigmoid).
template <int NumExperts, class Scoring = softmax_scoring>
struct expert_choice_config {
  static_assert(NumExperts >= 1 && NumExperts <= 4096, "frugal::moe::expert_choice_config: NumExperts must be in [1, 4096]");
  static_assert(scoring_kind_of<Scoring> != scoring_kind::selected_softmax,
                "frugal::moe::expert_choice_config: top-k-then-softmax scoring has no meaning when experts choose tokens");
  using scoring = Scoring;
  static constexpr int experts = NumExperts;
  static constexpr int k = 1;  // (unused by expert choice; lets the shared per-token code run)
  static constexpr scoring_kind kind = scoring_kind_of<Scoring>;
};

//! Where expert-choice routing writes.
struct expert_choice_outputs {
  std::int32_t* token_ids = nullptr;          //!< [E * capacity]; -1 in slots left empty (fewer tokens than capacity)
  float* weights = nullptr;                   //!< [E * capacity]: the token's score for the expert (0 when empty or NaN)
  std::int64_t* expert_offsets = nullptr;     //!< [E + 1], e * capacity, or nullptr
  std::int32_t* experts_per_token = nullptr;  //!< [T]: how many experts chose each token, or nullptr
};

}  // namespace frugal::moe

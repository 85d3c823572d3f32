// SPDX-License-Identifier: Apache-2.0
//! @file
//! Sampled routing for policy-gradient training of a router: k experts per token drawn without
//! replacement from softmax(logits / temperature) by Gumbel-top-k (seeded, reproducible), the
//! log-probability of the drawn sequence, and its gradient with respect to the logits scaled per
//! token (REINFORCE: the advantage), fused in one pass like route_backward. docs/moe_routing.md.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/sampled_route.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/moe/route_config.cuh>
#include <frugal/moe/sampling.cuh>
#include <frugal/topk/warp_topk.cuh>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace frugal::moe {

//! E experts, k drawn per token. One warp per token: E <= 1024.
template <int NumExperts, int TopK>
struct sampled_route_config {
  static_assert(NumExperts >= 1 && NumExperts <= 1024, "frugal::moe::sampled_route_config: NumExperts must be in [1, 1024]");
  static_assert(TopK >= 1 && TopK <= 32 && TopK <= NumExperts, "frugal::moe::sampled_route_config: TopK must be in [1, min(32, NumExperts)]");
  static constexpr int experts = NumExperts;
  static constexpr int k = TopK;
  static constexpr int items = (NumExperts + 31) / 32;  // experts per lane: e = i * 32 + lane
};

//! Where sample_route writes.
struct sampled_route_outputs {
  std::int32_t* ids = nullptr;  //!< [T, k] in drawing order; -1 for slots past the drawable experts
  float* log_prob = nullptr;    //!< [T]: log P(ids in this order), a sum of k log-softmax terms
  float* weights = nullptr;     //!< [T, k] softmax(logits / temperature) of each drawn expert, or nullptr
};

namespace detail {

inline constexpr int sampled_warps = 4;  // warps (tokens at a time) per block

// One token's scaled logits x = logits * (1 / temperature) in this lane (-inf past E and for
// -inf logits), their row maximum, and whether the row is degenerate (a NaN or +inf logit).
// (A product with the reciprocal, not a division: the same bits in the reference, and no
// division subroutine in the loop.)
template <class Config, class T>
struct sampled_row {
  float x[Config::items];
  float max = -INFINITY;
  bool degenerate = false;
  int drawable = 0;  // finite logits in the row (every lane)

  FRUGAL_DEVICE sampled_row(const T* row, float inverse_temperature) {
    const int lane = int(lane_index());
    bool bad = false;
    int finite = 0;
    FRUGAL_UNROLL
    for (int i = 0; i < Config::items; ++i) {
      const int e = i * 32 + lane;
      const float v = e < Config::experts ? to_float(row[e]) * inverse_temperature : -INFINITY;
      bad = bad || v != v || v == INFINITY;
      x[i] = v == v ? v : -INFINITY;
      finite += x[i] > -INFINITY;
      max = fmaxf(max, x[i]);
    }
    max = warp_max<32>(max);
    degenerate = warp_any(bad);
    drawable = warp_sum<32>(finite);
  }
  // The sum of exp(x - max) over the lane's experts not yet drawn, summed over the warp.
  FRUGAL_DEVICE float remaining_sum(unsigned drawn) const {
    float s = 0.0f;
    FRUGAL_UNROLL
    for (int i = 0; i < Config::items; ++i) s += (drawn >> i) & 1u || !(x[i] > -INFINITY) ? 0.0f : expf(x[i] - max);
    return warp_sum<32>(s);
  }
  // x of expert e (from its lane), in every lane. Every item is shuffled and the value chosen
  // after: choosing the item first would index the array at run time (local memory).
  FRUGAL_DEVICE float of(int e) const {
    float value = -INFINITY;
    FRUGAL_UNROLL
    for (int i = 0; i < Config::items; ++i) {
      const float v = warp_broadcast<32>(x[i], e % 32);
      value = i == e / 32 ? v : value;
    }
    return value;
  }
};

template <class Config, class T>
__global__ void __launch_bounds__(sampled_warps * 32)
    sample_route_kernel(const T* __restrict__ logits, std::int64_t ld, std::int64_t tokens, sample_params p, sampled_route_outputs out) {
  constexpr int K = Config::k, Items = Config::items;
  const int lane = int(lane_index());
  const std::int64_t stride = std::int64_t(gridDim.x) * sampled_warps;
  for (std::int64_t t = std::int64_t(blockIdx.x) * sampled_warps + threadIdx.x / 32; t < tokens; t += stride) {  // warp-uniform
    const bool padding = p.row_mask && p.row_mask[t] == 0;
    const sampled_row<Config, T> row(logits + (padding ? 0 : t) * ld, inverse_temperature(p));
    // Gumbel-top-k: the k largest x + g are a draw without replacement from softmax(x).
    float key[Items];
    std::uint32_t index[Items];
    unsigned valid = 0;
    FRUGAL_UNROLL
    for (int i = 0; i < Items; ++i) {
      const int e = i * 32 + lane;
      index[i] = std::uint32_t(e);
      const bool drawable = row.x[i] > -INFINITY;
      key[i] = drawable ? row.x[i] + gumbel_noise(p, t, e) : -INFINITY;
      valid |= drawable ? 1u << i : 0u;
    }
    const topk_entry mine = warp_topk_entry<0>(key, index, valid, K);
    const int drawn_count = padding || row.degenerate ? 0 : (row.drawable < K ? row.drawable : K);
    // log P(e_0, ..., e_{n-1}) = sum_r (x_{e_r} - max - log Z_r), Z_r over the experts not drawn before r.
    float log_prob = 0.0f, z0 = 0.0f;
    unsigned drawn = 0;
    for (int r = 0; r < drawn_count; ++r) {
      const float z = row.remaining_sum(drawn);  // (>= 1: the row maximum is among the undrawn or drawn ones, e^0)
      z0 = r == 0 ? z : z0;
      const int e = int(warp_broadcast<32>(mine.index, r));
      log_prob += (row.of(e) - row.max) - logf(z);
      if (lane == e % 32) drawn |= 1u << (e / 32);
    }
    if (lane < K) out.ids[t * K + lane] = lane < drawn_count ? std::int32_t(mine.index) : not_routed;
    if (out.weights) {  // softmax(x)_e of each drawn expert: exp(x_e - max) / Z_0; 0 past the draw
      float w = 0.0f;
      const float inverse_z0 = 1.0f / z0;
      for (int r = 0; r < drawn_count; ++r) {
        const float v = expf(row.of(int(warp_broadcast<32>(mine.index, r))) - row.max) * inverse_z0;
        w = lane == r ? v : w;
      }
      if (lane < K) out.weights[t * K + lane] = w;
    }
    if (lane == 0) out.log_prob[t] = padding ? 0.0f : row.degenerate ? NAN : log_prob;
  }
}

template <class Config, class T, class D>
__global__ void __launch_bounds__(sampled_warps * 32)
    sample_route_backward_kernel(const T* __restrict__ logits, std::int64_t ld, const std::int32_t* __restrict__ ids,
                                 const float* __restrict__ scale, std::int64_t tokens, sample_params p, bool accumulate,
                                 D* __restrict__ d_logits) {
  constexpr int K = Config::k, Items = Config::items, E = Config::experts;
  const int lane = int(lane_index());
  const std::int64_t stride = std::int64_t(gridDim.x) * sampled_warps;
  for (std::int64_t t = std::int64_t(blockIdx.x) * sampled_warps + threadIdx.x / 32; t < tokens; t += stride) {  // warp-uniform
    const bool padding = p.row_mask && p.row_mask[t] == 0;
    const sampled_row<Config, T> row(logits + (padding ? 0 : t) * ld, inverse_temperature(p));
    // d log P / d x_j = [j drawn] - sum_r softmax over the experts not drawn before r, at j.
    float g[Items];
    FRUGAL_UNROLL
    for (int i = 0; i < Items; ++i) g[i] = 0.0f;
    unsigned drawn = 0;
    for (int r = 0; r < K && !padding && !row.degenerate; ++r) {
      const int e = ids[t * K + r];  // the same in every lane: the loop stays uniform
      if (e < 0 || e >= E || !(row.of(e) > -INFINITY) || (warp_broadcast<32>(drawn, e % 32) >> (e / 32)) & 1u) break;
      const float inverse_z = 1.0f / row.remaining_sum(drawn);
      FRUGAL_UNROLL
      for (int i = 0; i < Items; ++i)
        if (!((drawn >> i) & 1u) && row.x[i] > -INFINITY) g[i] -= expf(row.x[i] - row.max) * inverse_z;
      if (lane == e % 32) {
        FRUGAL_UNROLL
        for (int i = 0; i < Items; ++i) g[i] += i == e / 32 ? 1.0f : 0.0f;
        drawn |= 1u << (e / 32);
      }
    }
    const float s = padding || row.degenerate ? 0.0f : scale[t] * inverse_temperature(p);
    FRUGAL_UNROLL
    for (int i = 0; i < Items; ++i) {
      const int e = i * 32 + lane;
      if (e >= E) continue;
      const float v = row.x[i] > -INFINITY ? s * g[i] : 0.0f;
      D* o = d_logits + t * E + e;
      *o = from_float<D>(accumulate ? to_float(*o) + v : v);
    }
  }
}

template <class Config, class T>
status check_sampled(const char* who_tokens, const char* who_ld, const route_inputs<T>& in, std::int64_t tokens, const sample_params& p) {
  if (tokens < 0 || tokens > (std::int64_t(1) << 40)) return status::invalid(who_tokens);
  if (in.noise_logits) return status::invalid("frugal::moe::sample_route: the Gumbel noise is the sampling; noise logits are not taken");
  if (!(p.temperature > 0.0f) || !std::isfinite(p.temperature))
    return status::invalid("frugal::moe::sample_route: temperature must be finite and > 0");
  if ((in.ld != 0 && in.ld < Config::experts) || (in.columns != 0 && in.columns != Config::experts)) return status::invalid(who_ld);
  return status{};
}

inline status sampled_grid(std::int64_t tokens, dim3& grid) {
  int sms = 0;
  FRUGAL_TRY(multiprocessor_count(sms));
  const std::int64_t needed = (tokens + sampled_warps - 1) / sampled_warps, cap = std::int64_t(sms) * 16;
  grid = dim3(unsigned(needed < cap ? needed : cap));
  return status{};
}

}  // namespace detail

//! Draws k experts per token without replacement from softmax(x), x = logits / temperature, by
//! Gumbel-top-k: the k largest x_e + g_e with g_e = gumbel_noise(params, t, e) (Philox from the
//! seed and offset: the same draw for the same inputs, on the device and in the reference).
//! Writes the drawn ids in drawing order (decreasing x + g), log_prob[t] = log P of that ordered
//! draw (Plackett-Luce: sum over r of x_{e_r} - logsumexp of x over the experts not drawn
//! before r) and optionally softmax(x) of each drawn expert. Rows: -inf logits are never drawn
//! (masked experts; with fewer than k finite logits the remaining slots are -1); a NaN or +inf
//! logit makes the row degenerate (ids -1, log_prob NaN: it surfaces in the loss); padding rows
//! (params.row_mask) get ids -1 and log_prob 0. logits: float, __half or __nv_bfloat16, rows
//! `in.ld` apart (0: E). One launch, deterministic.
template <class Config, class T>
status sample_route(route_inputs<T> in, const sampled_route_outputs& out, std::int64_t tokens, const sample_params& params = {},
                    cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::moe::sample_route: logits must be float, __half or __nv_bfloat16");
  FRUGAL_TRY((detail::check_sampled<Config>("frugal::moe::sample_route: tokens must be in [0, 2^40]",
                                            "frugal::moe::sample_route: route_inputs::ld must be 0 or >= E, and columns 0 or E", in, tokens,
                                            params)));
  if (tokens == 0) return status{};
  if (!in.logits || !out.ids || !out.log_prob) return status::invalid("frugal::moe::sample_route: logits, ids and log_prob must not be null");
  const std::int64_t ld = in.ld > 0 ? in.ld : Config::experts, slots = tokens * Config::k;
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(out.ids, slots), byte_range(out.log_prob, tokens), byte_range(out.weights, slots)),
                                  frugal::detail::ranges(byte_range(in.logits, tokens, Config::experts, ld))))
    return status::invalid("frugal::moe::sample_route: the outputs must not overlap each other or the logits");
  dim3 grid;
  FRUGAL_TRY(detail::sampled_grid(tokens, grid));
  return launch(detail::sample_route_kernel<Config, T>, launch_config{grid, dim3(detail::sampled_warps * 32), 0, stream}, in.logits, ld, tokens,
                params, out);
}

//! d_logits[t, e] = scale[t] * d log_prob[t] / d logits[t, e] for the draw `ids` (sample_route's,
//! in its order): with p_r the softmax of x over the experts not drawn before r,
//! d log P / d x_j = [j drawn] - sum_r p_r(j), and x = logits / temperature. For REINFORCE with
//! a baseline, L = -sum_t A_t log P_t gives scale[t] = -A_t. Written to d_logits [T, E] (float,
//! __half, __nv_bfloat16), or added when `accumulate`. -inf logits, padding and degenerate rows
//! get 0; the sequence stops at the first id that is -1, out of range, repeated or at a -inf logit.
//! One launch, deterministic.
template <class Config, class T, class D>
status sample_route_backward(route_inputs<T> in, const std::int32_t* ids, const float* scale, D* d_logits, std::int64_t tokens,
                             const sample_params& params = {}, bool accumulate = false, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T> && is_io_float_v<D>, "frugal::moe::sample_route_backward: logits and d_logits must be float, __half or __nv_bfloat16");
  FRUGAL_TRY((detail::check_sampled<Config>("frugal::moe::sample_route_backward: tokens must be in [0, 2^40]",
                                            "frugal::moe::sample_route_backward: route_inputs::ld must be 0 or >= E, and columns 0 or E", in,
                                            tokens, params)));
  if (tokens == 0) return status{};
  if (!in.logits || !ids || !scale || !d_logits)
    return status::invalid("frugal::moe::sample_route_backward: logits, ids, scale and d_logits must not be null");
  const std::int64_t ld = in.ld > 0 ? in.ld : Config::experts;
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(d_logits, tokens * Config::experts)),
                                  frugal::detail::ranges(byte_range(in.logits, tokens, Config::experts, ld), byte_range(ids, tokens * Config::k),
                                                         byte_range(scale, tokens))))
    return status::invalid("frugal::moe::sample_route_backward: d_logits must not overlap the logits, the ids or the scale");
  dim3 grid;
  FRUGAL_TRY(detail::sampled_grid(tokens, grid));
  return launch(detail::sample_route_backward_kernel<Config, T, D>, launch_config{grid, dim3(detail::sampled_warps * 32), 0, stream}, in.logits,
                ld, ids, scale, tokens, params, accumulate, d_logits);
}

}  // namespace frugal::moe

// SPDX-License-Identifier: Apache-2.0
// Kernels of the training-side routing ops (frugal/moe/balance.cuh). Every sum runs in a fixed
// order (token chunks of fixed size, experts owned by fixed threads), so results are bitwise
// reproducible; integer counts use atomics, which are exact.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/detail/balance_kernels.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/block.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/moe/route_config.cuh>
#include <frugal/moe/route_math.cuh>

#include <cstdint>

namespace frugal::moe::detail {

inline constexpr int balance_threads = 128;
inline constexpr int balance_chunk = 32;  // tokens per statistics block: fixes the summation order

template <int NumExperts, class IdT>
__global__ void __launch_bounds__(256) expert_counts_kernel(const IdT* __restrict__ ids, std::int64_t slots,
                                                            std::int32_t* __restrict__ counts) {
  __shared__ std::int32_t local[NumExperts];
  for (int e = int(threadIdx.x); e < NumExperts; e += int(blockDim.x)) local[e] = 0;
  __syncthreads();
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < slots;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t e = std::int64_t(ids[i]);
    if (e >= 0 && e < NumExperts) atomicAdd(&local[e], 1);
  }
  __syncthreads();
  for (int e = int(threadIdx.x); e < NumExperts; e += int(blockDim.x))
    if (local[e]) atomicAdd(&counts[e], local[e]);
}

// The per-token quantities the losses need, for one token held by a block of 128 threads:
// soft-capped logits (without routing noise), and the "router probability" of each expert: the row softmax (row and
// selected softmax scorings) or the normalised score s / sum(s) (elementwise scorings).
template <class Config>
struct token_probabilities {
  static constexpr int Items = (Config::experts + balance_threads - 1) / balance_threads;
  float raw[Items], x[Items], p[Items];
  softmax_stats stats;   // row softmax of x
  float score_sum = 0;   // elementwise: sum of scores
  bool degenerate = false;

  template <class T>
  FRUGAL_DEVICE void compute(const T* row, std::int64_t /*token: no noise here*/, const route_params& params,
                             block_reduce<float, balance_threads>& reduce) {
    using S = typename Config::scoring;
    constexpr int E = Config::experts;
    const int tid = int(threadIdx.x);
    FRUGAL_UNROLL
    for (int i = 0; i < Items; ++i) {
      const int e = i * balance_threads + tid;
      raw[i] = e < E ? to_float(row[e]) : NAN;
      x[i] = softcap(raw[i], params.softcap);  // the losses see no routing noise
    }
    stats = softmax_stats_of(x, reduce);
    if constexpr (Config::kind == scoring_kind::elementwise) {
      float s = 0.0f;
      FRUGAL_UNROLL
      for (int i = 0; i < Items; ++i) {
        p[i] = i * balance_threads + tid < E ? S{}(x[i]) : 0.0f;
        p[i] = p[i] != p[i] ? 0.0f : p[i];
        s += p[i];
      }
      score_sum = reduce.sum(s);
      degenerate = !(score_sum > 0.0f) || !(score_sum < INFINITY);
      FRUGAL_UNROLL
      for (int i = 0; i < Items; ++i) p[i] = degenerate ? 0.0f : p[i] / score_sum;
    } else {
      degenerate = stats.degenerate();
      FRUGAL_UNROLL
      for (int i = 0; i < Items; ++i) p[i] = stats.probability(x[i]);
    }
  }

  //! log-sum-exp of the transformed logits (0 for a degenerate row; +inf if a logit is +inf).
  FRUGAL_DEVICE float log_sum_exp() const {
    if (stats.degenerate()) return 0.0f;
    if (stats.max == INFINITY) return INFINITY;
    return stats.max + logf(stats.sum);
  }
};

// One block per chunk of balance_chunk tokens: probability sums per expert ([blocks, E]) and
// the sum of squared log-sum-exps ([blocks]), each in token order.
template <class Config, class T, bool Probabilities>
__global__ void __launch_bounds__(balance_threads, 1)
    router_statistics_kernel(const T* __restrict__ logits, std::int64_t tokens, route_params params,
                             float* __restrict__ probability_partials, float* __restrict__ z_partials) {
  constexpr int E = Config::experts;
  using tp = token_probabilities<Config>;
  __shared__ typename block_reduce<float, balance_threads>::TempStorage storage;
  block_reduce<float, balance_threads> reduce(storage);
  float acc[tp::Items];
  FRUGAL_UNROLL
  for (int i = 0; i < tp::Items; ++i) acc[i] = 0.0f;
  float z = 0.0f;
  const std::int64_t begin = std::int64_t(blockIdx.x) * balance_chunk;
  const std::int64_t end = begin + balance_chunk < tokens ? begin + balance_chunk : tokens;
  for (std::int64_t t = begin; t < end; ++t) {
    if (params.row_mask && params.row_mask[t] == 0) continue;  // uniform across the block
    tp token{};
    token.compute(logits + t * E, t, params, reduce);
    if constexpr (Probabilities) {
      FRUGAL_UNROLL
      for (int i = 0; i < tp::Items; ++i) acc[i] += token.p[i];
    } else {
      const float lse = token.log_sum_exp();
      z += lse * lse;
    }
  }
  if constexpr (Probabilities) {
    FRUGAL_UNROLL
    for (int i = 0; i < tp::Items; ++i) {
      const int e = i * balance_threads + int(threadIdx.x);
      if (e < E) probability_partials[std::int64_t(blockIdx.x) * E + e] = acc[i];
    }
  } else if (threadIdx.x == 0) {
    z_partials[blockIdx.x] = z;
  }
}

// Switch load-balancing loss from counts and probability partials (one block).
// L = coefficient * E * sum_e (c_e / C) * P_e, P_e = (k / C) * sum_t p_te, C = sum_e c_e.
template <int NumExperts, int TopK>
__global__ void __launch_bounds__(256)
    load_balancing_finish_kernel(const float* __restrict__ partials, int blocks, const std::int32_t* __restrict__ counts,
                                 float coefficient, float* __restrict__ mean_probability, float* __restrict__ loss) {
  __shared__ typename block_reduce<float, 256>::TempStorage storage;
  __shared__ typename block_reduce<long long, 256>::TempStorage count_storage;
  long long c = 0;
  for (int e = int(threadIdx.x); e < NumExperts; e += 256) c += counts[e];
  const long long total = block_reduce<long long, 256>(count_storage).sum(c);
  float term = 0.0f;
  for (int e = int(threadIdx.x); e < NumExperts; e += 256) {
    float sum = 0.0f;
    for (int b = 0; b < blocks; ++b) sum += partials[std::int64_t(b) * NumExperts + e];
    const float p = total > 0 ? sum * float(TopK) / float(total) : 0.0f;
    if (mean_probability) mean_probability[e] = p;
    term += total > 0 ? float(counts[e]) / float(total) * p : 0.0f;
  }
  const float sum = block_reduce<float, 256>(storage).sum(term);
  if (threadIdx.x == 0) *loss = coefficient * float(NumExperts) * sum;
}

// z-loss: coefficient / T * sum_t lse_t^2 (one block).
template <int = 0>  // a template, so that every unit including this header may define it
__global__ void __launch_bounds__(256) z_loss_finish_kernel(const float* __restrict__ partials, int blocks, std::int64_t tokens,
                                                            float coefficient, float* __restrict__ loss) {
  __shared__ typename block_reduce<float, 256>::TempStorage storage;
  float sum = 0.0f;
  for (int b = int(threadIdx.x); b < blocks; b += 256) sum += partials[b];
  const float total = block_reduce<float, 256>(storage).sum(sum);
  if (threadIdx.x == 0) *loss = coefficient * total / float(tokens);
}

enum class loss_kind { load_balancing, z };

// d logits of either loss, one block per token:
//   load balancing: c * dp/dx . (f - f.p), c = coefficient * E * k / C, f_e = c_e / C;
//   z: coefficient * 2 * lse / T * softmax(x).
template <class Config, class T, class D, loss_kind Loss>
__global__ void __launch_bounds__(balance_threads, 1)
    loss_backward_kernel(const T* __restrict__ logits, const std::int32_t* __restrict__ counts, std::int64_t tokens,
                         float coefficient, route_params params, bool accumulate, D* __restrict__ d_logits) {
  using S = typename Config::scoring;
  constexpr int E = Config::experts;
  using tp = token_probabilities<Config>;
  __shared__ typename block_reduce<float, balance_threads>::TempStorage storage;
  __shared__ typename block_reduce<long long, balance_threads>::TempStorage count_storage;
  block_reduce<float, balance_threads> reduce(storage);
  const int tid = int(threadIdx.x);
  float scale = 0.0f;
  if constexpr (Loss == loss_kind::load_balancing) {
    long long c = 0;
    for (int e = tid; e < E; e += balance_threads) c += counts[e];
    const long long total = block_reduce<long long, balance_threads>(count_storage).sum(c);
    scale = total > 0 ? coefficient * float(E) * float(Config::k) / (float(total) * float(total)) : 0.0f;
  }
  for (std::int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const bool padding = params.row_mask && params.row_mask[t] == 0;
    D* out = d_logits + t * E;
    tp token{};
    if (!padding) token.compute(logits + t * E, t, params, reduce);
    float dot = 0.0f;  // sum_e c_e p_e (load balancing)
    if constexpr (Loss == loss_kind::load_balancing) {
      float part = 0.0f;
      FRUGAL_UNROLL
      for (int i = 0; i < tp::Items; ++i) {
        const int e = i * balance_threads + tid;
        part += e < E && !padding ? float(counts[e]) * token.p[i] : 0.0f;
      }
      dot = reduce.sum(part);  // every thread of the block takes part, padding or not
    }
    FRUGAL_UNROLL
    for (int i = 0; i < tp::Items; ++i) {
      const int e = i * balance_threads + tid;
      if (e >= E) continue;
      float g = 0.0f;
      if (!padding && !token.degenerate) {
        if constexpr (Loss == loss_kind::load_balancing) {
          const float d = scale * (float(counts[e]) - dot);
          if constexpr (Config::kind == scoring_kind::elementwise)
            g = d / token.score_sum * S{}.derivative(token.x[i], S{}(token.x[i]));
          else
            g = token.p[i] * d;
        } else {
          g = coefficient * 2.0f * token.log_sum_exp() / float(tokens) * token.stats.probability(token.x[i]);
        }
        g *= softcap_derivative(token.raw[i], params.softcap);
      }
      if (g != g) g = 0.0f;
      out[e] = from_float<D>(accumulate ? to_float(out[e]) + g : g);
    }
  }
}

// b_e += rate * sign(mean - c_e), mean = sum(c) / E (one block).
template <int = 0>
__global__ void __launch_bounds__(256) update_bias_kernel(const std::int32_t* __restrict__ counts, int experts, float rate,
                                                          float* __restrict__ bias) {
  __shared__ typename block_reduce<long long, 256>::TempStorage storage;
  long long c = 0;
  for (int e = int(threadIdx.x); e < experts; e += 256) c += counts[e];
  const long long total = block_reduce<long long, 256>(storage).sum(c);
  const double mean = double(total) / double(experts);
  for (int e = int(threadIdx.x); e < experts; e += 256) {
    const double load = double(counts[e]);
    const float sign = mean > load ? 1.0f : mean < load ? -1.0f : 0.0f;
    bias[e] += rate * sign;
  }
}

}  // namespace frugal::moe::detail

// SPDX-License-Identifier: Apache-2.0
//! @file
//! Expert-choice routing (Zhou et al. 2022): every expert picks the `capacity` tokens that score
//! it highest. Output in the expert-major layout dispatch uses: for expert e, slots
//! [e * capacity, (e + 1) * capacity) hold its tokens in increasing token order.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/expert_choice.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/block.cuh>
#include <frugal/core/block_select.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/ordered_key.cuh>
#include <frugal/moe/detail/balance_kernels.cuh>
#include <frugal/moe/dispatch_config.cuh>
#include <frugal/moe/route_config.cuh>
#include <frugal/moe/route_math.cuh>

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace frugal::moe {

namespace detail {

inline constexpr int expert_choice_threads = 256;

// scores [E, T] (transposed, so that each expert's column is contiguous): the score of every
// (token, expert); NaN where the token is padding.
template <class Config, class T>
__global__ void __launch_bounds__(balance_threads, 1)
    expert_choice_scores_kernel(const T* __restrict__ logits, std::int64_t tokens, route_params params,
                                float* __restrict__ scores) {
  using S = typename Config::scoring;
  constexpr int E = Config::experts;
  using tp = token_probabilities<Config>;
  __shared__ typename block_reduce<float, balance_threads>::TempStorage storage;
  block_reduce<float, balance_threads> reduce(storage);
  for (std::int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const bool padding = params.row_mask && params.row_mask[t] == 0;
    tp token{};
    if (!padding) token.compute(logits + t * E, t, params, reduce);  // uniform across the block
    FRUGAL_UNROLL
    for (int i = 0; i < tp::Items; ++i) {
      const int e = i * balance_threads + int(threadIdx.x);
      if (e >= E) continue;
      float s = NAN;
      if (!padding) {
        if constexpr (Config::kind == scoring_kind::elementwise) s = S{}(token.x[i]);
        else s = token.stats.probability(token.x[i]);
      }
      scores[std::int64_t(e) * tokens + t] = s;
    }
  }
}

// One block per expert: radix-select the capacity-th largest key (score, lower token first)
// over the expert's column, then write the chosen tokens in token order.
template <int = 0>  // a template, so that every unit including this header may define it
__global__ void __launch_bounds__(expert_choice_threads)
    expert_choice_select_kernel(const float* __restrict__ scores, std::int64_t tokens, const std::uint8_t* __restrict__ row_mask,
                                int capacity, expert_choice_outputs out) {
  constexpr int B = expert_choice_threads;
  __shared__ typename block_radix_select<B>::TempStorage select_storage;
  __shared__ typename block_reduce<long long, B>::TempStorage count_storage;
  __shared__ typename block_scan<int, B>::TempStorage scan_storage;
  const int e = int(blockIdx.x), tid = int(threadIdx.x);
  const float* column = scores + std::int64_t(e) * tokens;
  auto key_of = [&](std::int64_t t) -> topk_key {
    if (row_mask && row_mask[t] == 0) return empty_topk_key;
    return make_topk_key(column[t], std::uint32_t(t));
  };

  long long valid = 0;
  for (std::int64_t t = tid; t < tokens; t += B) valid += key_of(t) != empty_topk_key;
  valid = block_reduce<long long, B>(count_storage).sum(valid);
  const long long chosen = valid < capacity ? valid : capacity;
  // The key of the chosen-th largest: exactly `chosen` keys are >= it.
  const topk_key threshold = chosen > 0 ? block_radix_select<B>(select_storage).threshold(key_of, tokens, chosen) : 0;

  // Chosen tokens in token order.
  block_scan<int, B> scan(scan_storage);
  std::int64_t written = 0;
  for (std::int64_t base = 0; base < tokens; base += B) {
    const std::int64_t t = base + tid;
    const topk_key key = t < tokens ? key_of(t) : empty_topk_key;
    const int take = chosen > 0 && key != empty_topk_key && key >= threshold ? 1 : 0;
    int total = 0;
    const int position = scan.exclusive_sum(take, total);
    if (take) {
      const std::int64_t slot = std::int64_t(e) * capacity + written + position;
      out.token_ids[slot] = std::int32_t(t);
      const float w = column[t];
      out.weights[slot] = w != w ? 0.0f : w;
      if (out.experts_per_token) atomicAdd(&out.experts_per_token[t], 1);
    }
    written += total;
  }
  for (std::int64_t j = chosen + tid; j < capacity; j += B) {
    out.token_ids[std::int64_t(e) * capacity + j] = -1;
    out.weights[std::int64_t(e) * capacity + j] = 0.0f;
  }
  if (out.expert_offsets && tid == 0) {
    out.expert_offsets[e] = std::int64_t(e) * capacity;
    if (e == int(gridDim.x) - 1) out.expert_offsets[e + 1] = std::int64_t(e + 1) * capacity;
  }
}

}  // namespace detail

//! Expert-choice routing of `tokens` rows of logits [T, E]: expert e takes the `capacity` tokens
//! with the largest scores for e (ties to the lower token index, NaN scores after every number,
//! padding rows never), written to out in increasing token order per expert. Scores: the row
//! softmax over experts (softmax_scoring) or the elementwise score of the soft-capped logits.
//! params: softcap and row_mask apply (routing noise does not); a selection bias has no meaning here (one constant per expert) and is refused.
//! shape: tokens T, capacity C, experts E (Config's; 0 means Config's) and hidden (unused here):
//! the one shape of the expert-choice pipeline, which combine_expert_choice takes too.
//! Two-phase: with workspace == nullptr only workspace_bytes (E * T floats) is written.
//! Two launches (three with experts_per_token, which is zeroed first); deterministic.
template <class Config, class T>
status route_expert_choice(void* workspace, std::size_t& workspace_bytes, const T* logits, expert_choice_outputs out,
                           const expert_choice_shape& shape, const route_params& params = {}, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::moe::route_expert_choice: logits must be float, __half or __nv_bfloat16");
  const std::int64_t tokens = shape.tokens;
  const int capacity = shape.capacity;
  if (shape.experts != 0 && shape.experts != Config::experts)
    return status::invalid("frugal::moe::route_expert_choice: shape.experts must be Config's expert count (or 0)");
  if (workspace == nullptr) {
    workspace_bytes = std::size_t(tokens > 0 ? tokens : 1) * Config::experts * sizeof(float);
    return status{};
  }
  if (tokens < 0) return status::invalid("frugal::moe::route_expert_choice: tokens must be >= 0");
  if (tokens > INT32_MAX) return status::invalid("frugal::moe::route_expert_choice: tokens must fit in int32");
  if (capacity < 1 || std::int64_t(capacity) * Config::experts > INT32_MAX)
    return status::invalid("frugal::moe::route_expert_choice: capacity must be >= 1, and E * capacity at most INT32_MAX");
  if ((!logits && tokens > 0) || !out.token_ids || !out.weights)
    return status::invalid("frugal::moe::route_expert_choice: logits, token_ids and weights must not be null");
  if (params.selection_bias)
    return status::invalid("frugal::moe::route_expert_choice: a selection bias cannot change which tokens an expert prefers");
  FRUGAL_TRY(detail::check_route_params<Config>(params));

  if (workspace_bytes < std::size_t(tokens) * Config::experts * sizeof(float))
    return status::invalid("frugal::moe::route_expert_choice: workspace_bytes is smaller than the size query returned");
  auto* scores = static_cast<float*>(workspace);
  int sms = 0;
  FRUGAL_TRY(multiprocessor_count(sms));
  if (out.experts_per_token)
    FRUGAL_TRY(status::from_cuda(cudaMemsetAsync(out.experts_per_token, 0, sizeof(std::int32_t) * std::size_t(tokens), stream)));
  const std::int64_t blocks = tokens < std::int64_t(sms) * 16 ? tokens : std::int64_t(sms) * 16;
  if (tokens > 0)  // (an empty batch still gets its lists written: every place -1, weight 0)
    FRUGAL_TRY(launch(detail::expert_choice_scores_kernel<Config, T>,
                      launch_config{dim3(unsigned(blocks)), dim3(detail::balance_threads), 0, stream}, logits, tokens, params,
                      scores));
  return launch(detail::expert_choice_select_kernel<>,
                launch_config{dim3(unsigned(Config::experts)), dim3(detail::expert_choice_threads), 0, stream},
                static_cast<const float*>(scores), tokens, params.row_mask, capacity, out);
}

}  // namespace frugal::moe

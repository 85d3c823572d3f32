// SPDX-License-Identifier: Apache-2.0
//! @file
//! The training side of routing: per-expert token counts, the Switch load-balancing loss and the
//! router z-loss with their gradients, and the aux-loss-free selection-bias update.
//! Math and definitions: docs/moe_routing.md. All results are bitwise reproducible.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/balance.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/launch.cuh>
#include <frugal/moe/detail/balance_kernels.cuh>
#include <frugal/moe/route_config.cuh>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace frugal::moe {

namespace detail {
inline int balance_blocks(std::int64_t tokens) { return int((tokens + balance_chunk - 1) / balance_chunk); }
inline std::int64_t capped_blocks(std::int64_t needed, int sms) {
  return needed < std::int64_t(sms) * 16 ? needed : std::int64_t(sms) * 16;
}
template <class Config>
status check_loss_arguments(const void* logits, std::int64_t tokens, float coefficient, const route_params& p,
                            const char* who_null, const char* who_tokens) {
  if (tokens < 0) return status::invalid(who_tokens);
  if (!logits && tokens > 0) return status::invalid(who_null);
  if (!std::isfinite(coefficient)) return status::invalid("frugal::moe: the loss coefficient must be finite");
  if (tokens > std::int64_t(INT32_MAX) / Config::k) return status::invalid("frugal::moe: tokens * k must fit in int32");
  FRUGAL_TRY(check_route_params<Config>(p));
  return status{};
}
}  // namespace detail

//! counts[e] = number of slots of ids [T, k] routed to expert e (ids outside [0, E) are not
//! counted: padding and non-local slots). Zeroes `counts` first (stream-ordered memset).
template <class Config, class IdT>
status expert_counts(const IdT* ids, std::int32_t* counts, std::int64_t tokens, cudaStream_t stream = nullptr) {
  static_assert(std::is_same_v<IdT, std::int32_t> || std::is_same_v<IdT, std::int64_t>,
                "frugal::moe::expert_counts: ids must be int32 or int64");
  if (tokens < 0) return status::invalid("frugal::moe::expert_counts: tokens must be >= 0");
  if (tokens > std::int64_t(INT32_MAX) / Config::k)
    return status::invalid("frugal::moe::expert_counts: tokens * k must fit in int32 (the counts are int32)");
  if (!counts) return status::invalid("frugal::moe::expert_counts: counts is null");
  if (tokens > 0 && !ids) return status::invalid("frugal::moe::expert_counts: ids is null");
  FRUGAL_TRY(status::from_cuda(cudaMemsetAsync(counts, 0, sizeof(std::int32_t) * Config::experts, stream)));
  if (tokens == 0) return status{};
  int sms = 0;
  FRUGAL_TRY(multiprocessor_count(sms));
  const std::int64_t slots = tokens * Config::k;
  const std::int64_t blocks = slots / 256 + 1 < std::int64_t(sms) * 4 ? slots / 256 + 1 : std::int64_t(sms) * 4;
  return launch(detail::expert_counts_kernel<Config::experts, IdT>, launch_config{dim3(unsigned(blocks)), dim3(256), 0, stream},
                ids, slots, counts);
}

//! Where load_balancing_loss writes: counts [E] and the loss (1 float) are required.
struct balance_outputs {
  std::int32_t* counts = nullptr;      //!< [E] slots routed to each expert
  float* mean_probability = nullptr;   //!< [E] P_e, or nullptr
  float* loss = nullptr;               //!< one float
};

//! Switch load-balancing loss of routing `ids` ([T, k], global ids) from `logits` [T, E]:
//! L = coefficient * E * sum_e f_e * P_e, f_e = c_e / C, P_e = (k / C) * sum_t p_te, where c_e
//! counts the slots routed to e and C = sum_e c_e (= k * routed tokens), and p_te is the router
//! probability of the soft-capped logits (routing noise is not applied): the row softmax
//! (softmax and top-k-then-softmax scorings) or the normalised score
//! s_te / sum_e s_te (elementwise scorings). Padding rows (params.row_mask) are left out.
//! Two-phase: with workspace == nullptr only workspace_bytes is written.
template <class Config, class T, class IdT>
status load_balancing_loss(void* workspace, std::size_t& workspace_bytes, const T* logits, const IdT* ids, balance_outputs out,
                           std::int64_t tokens, float coefficient, const route_params& params = {}, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::moe::load_balancing_loss: logits must be float, __half or __nv_bfloat16");
  if (tokens > std::int64_t(INT32_MAX) / Config::k)
    return status::invalid("frugal::moe::load_balancing_loss: tokens * k must fit in int32");
  const int blocks = tokens > 0 ? detail::balance_blocks(tokens) : 0;
  if (workspace == nullptr) {
    workspace_bytes = std::size_t(blocks > 0 ? blocks : 1) * Config::experts * sizeof(float);
    return status{};
  }
  FRUGAL_TRY(detail::check_loss_arguments<Config>(logits, tokens, coefficient, params,
                                                  "frugal::moe::load_balancing_loss: logits is null",
                                                  "frugal::moe::load_balancing_loss: tokens must be >= 0"));
  if ((!ids && tokens > 0) || !out.counts || !out.loss)
    return status::invalid("frugal::moe::load_balancing_loss: ids, counts and loss must not be null");
  if (workspace_bytes < std::size_t(blocks) * Config::experts * sizeof(float))
    return status::invalid("frugal::moe::load_balancing_loss: workspace_bytes is smaller than the size query returned");
  auto* partials = static_cast<float*>(workspace);
  FRUGAL_TRY(expert_counts<Config>(ids, out.counts, tokens, stream));
  if (tokens == 0) {  // an empty batch: counts 0 (just written), P 0, loss 0
    if (out.mean_probability)
      FRUGAL_TRY(status::from_cuda(cudaMemsetAsync(out.mean_probability, 0, sizeof(float) * Config::experts, stream)));
    return status::from_cuda(cudaMemsetAsync(out.loss, 0, sizeof(float), stream));
  }
  FRUGAL_TRY(launch(detail::router_statistics_kernel<Config, T, true>,
                    launch_config{dim3(unsigned(blocks)), dim3(detail::balance_threads), 0, stream}, logits, tokens, params,
                    partials, static_cast<float*>(nullptr)));
  return launch(detail::load_balancing_finish_kernel<Config::experts, Config::k>, launch_config{dim3(1), dim3(256), 0, stream},
                static_cast<const float*>(partials), blocks, static_cast<const std::int32_t*>(out.counts), coefficient,
                out.mean_probability, out.loss);
}

//! d logits of load_balancing_loss (counts from it or from expert_counts), written to d_logits
//! [T, E] or added when `accumulate`. f is a constant (counts are not differentiable).
template <class Config, class T, class D>
status load_balancing_loss_backward(const T* logits, const std::int32_t* counts, D* d_logits, std::int64_t tokens, float coefficient,
                                    const route_params& params = {}, bool accumulate = false, cudaStream_t stream = nullptr) {
  using S = typename Config::scoring;
  static_assert(Config::kind != scoring_kind::elementwise || scoring_has_derivative<S>,
                "frugal::moe::load_balancing_loss_backward: the scoring functor needs derivative(x, s)");
  FRUGAL_TRY(detail::check_loss_arguments<Config>(logits, tokens, coefficient, params,
                                                  "frugal::moe::load_balancing_loss_backward: logits is null",
                                                  "frugal::moe::load_balancing_loss_backward: tokens must be >= 0"));
  if (tokens == 0) return status{};  // d_logits is [0, E]
  if (!counts || !d_logits)
    return status::invalid("frugal::moe::load_balancing_loss_backward: counts and d_logits must not be null");
  int sms = 0;
  FRUGAL_TRY(multiprocessor_count(sms));
  return launch(detail::loss_backward_kernel<Config, T, D, detail::loss_kind::load_balancing>,
                launch_config{dim3(unsigned(detail::capped_blocks(tokens, sms))), dim3(detail::balance_threads), 0, stream},
                logits, counts, tokens, coefficient, params, accumulate, d_logits);
}

//! Router z-loss (ST-MoE): L = coefficient / T * sum_t logsumexp(x_t)^2 over the transformed
//! soft-capped logits (routing noise is not applied); padding and degenerate rows add 0.
//! Two-phase: with workspace == nullptr only workspace_bytes is written.
template <class Config, class T>
status router_z_loss(void* workspace, std::size_t& workspace_bytes, const T* logits, float* loss, std::int64_t tokens, float coefficient,
                     const route_params& params = {}, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::moe::router_z_loss: logits must be float, __half or __nv_bfloat16");
  if (tokens > std::int64_t(INT32_MAX) / Config::k) return status::invalid("frugal::moe::router_z_loss: tokens * k must fit in int32");
  const int blocks = tokens > 0 ? detail::balance_blocks(tokens) : 0;
  if (workspace == nullptr) {
    workspace_bytes = std::size_t(blocks > 0 ? blocks : 1) * sizeof(float);
    return status{};
  }
  FRUGAL_TRY(detail::check_loss_arguments<Config>(logits, tokens, coefficient, params,
                                                  "frugal::moe::router_z_loss: logits is null",
                                                  "frugal::moe::router_z_loss: tokens must be >= 0"));
  if (!loss) return status::invalid("frugal::moe::router_z_loss: loss is null");
  if (workspace_bytes < std::size_t(blocks) * sizeof(float))
    return status::invalid("frugal::moe::router_z_loss: workspace_bytes is smaller than the size query returned");
  if (tokens == 0) return status::from_cuda(cudaMemsetAsync(loss, 0, sizeof(float), stream));  // an empty batch: 0
  auto* partials = static_cast<float*>(workspace);
  FRUGAL_TRY(launch(detail::router_statistics_kernel<Config, T, false>,
                    launch_config{dim3(unsigned(blocks)), dim3(detail::balance_threads), 0, stream}, logits, tokens, params,
                    static_cast<float*>(nullptr), partials));
  return launch(detail::z_loss_finish_kernel<>, launch_config{dim3(1), dim3(256), 0, stream}, static_cast<const float*>(partials),
                blocks, tokens, coefficient, loss);
}

//! d logits of router_z_loss: coefficient * 2 * lse_t / T * softmax(x_t), times the soft-cap
//! derivative; written to d_logits [T, E] or added when `accumulate`.
template <class Config, class T, class D>
status router_z_loss_backward(const T* logits, D* d_logits, std::int64_t tokens, float coefficient, const route_params& params = {},
                              bool accumulate = false, cudaStream_t stream = nullptr) {
  FRUGAL_TRY(detail::check_loss_arguments<Config>(logits, tokens, coefficient, params,
                                                  "frugal::moe::router_z_loss_backward: logits is null",
                                                  "frugal::moe::router_z_loss_backward: tokens must be >= 0"));
  if (tokens == 0) return status{};  // d_logits is [0, E]
  if (!d_logits) return status::invalid("frugal::moe::router_z_loss_backward: d_logits is null");
  int sms = 0;
  FRUGAL_TRY(multiprocessor_count(sms));
  return launch(detail::loss_backward_kernel<Config, T, D, detail::loss_kind::z>,
                launch_config{dim3(unsigned(detail::capped_blocks(tokens, sms))), dim3(detail::balance_threads), 0, stream},
                logits, static_cast<const std::int32_t*>(nullptr), tokens, coefficient, params, accumulate, d_logits);
}

//! Aux-loss-free balancing (DeepSeek-V3): bias[e] += rate * sign(mean_load - counts[e]),
//! mean_load = sum(counts) / E; bias [E] is read and written. One launch.
inline status update_selection_bias(const std::int32_t* counts, float* bias, int num_experts, float rate,
                                    cudaStream_t stream = nullptr) {
  if (num_experts < 1) return status::invalid("frugal::moe::update_selection_bias: num_experts must be >= 1");
  if (!counts || !bias) return status::invalid("frugal::moe::update_selection_bias: counts and bias must not be null");
  if (!std::isfinite(rate)) return status::invalid("frugal::moe::update_selection_bias: rate must be finite");
  return launch(detail::update_bias_kernel<>, launch_config{dim3(1), dim3(256), 0, stream}, counts, num_experts, rate, bias);
}

}  // namespace frugal::moe

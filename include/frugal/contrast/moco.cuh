// SPDX-License-Identifier: Apache-2.0
//! @file
//! MoCo's loss, fused (docs/contrastive.md, contrast/pairwise.cuh): queries Q [N, D], each against
//! its positive key K_i and a queue of negatives [Kq, D] (contrast/momentum.cuh keeps the queue).
//! The queue is the partner set of the statistics and gradient passes (64 x 64 tiles on the
//! tensor cores, never stored); the positive logit is a per-row dot product, merged first into
//! each row's statistics (ties go to it) and, in the backward, its term of dQ added per row.
//! Keys and queue come from the momentum encoder and take no gradient. O(N) memory, bitwise
//! reproducible.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/contrast/moco.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/contrast/contrast_config.cuh>
#include <frugal/contrast/pairwise.cuh>
#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>

#include <cstddef>
#include <cstdint>

namespace frugal::contrast {

//! The sizes of a MoCo loss: N queries (and keys), Kq queued negatives, D elements each.
struct moco_shape {
  std::int64_t queries = 0;
  std::int64_t queued = 0;
  int dim = 0;
};

namespace detail {

inline const char* invalid_moco(const moco_shape& shape, const logit_options& o) {
  if (shape.queries < 0 || shape.queued < 0 || shape.dim < 1 || shape.queries > detail::max_rows || shape.queued > detail::max_rows)
    return "frugal::contrast (MoCo): queries >= 0, queued >= 0, dim >= 1";
  if (const char* why = invalid_logit_options(o)) return why;
  if (o.bias != 0.0f) return "frugal::contrast (MoCo): the bias is SigLIP's; the softmax losses take none";
  return nullptr;
}

// Norms of the three operands (when normalising) and the positive logits.
template <class T>
status moco_prologue(const T* q, const T* k, const T* queue, const moco_shape& shape, const logit_options& o, float* inv_q, float* inv_k,
                     float* inv_queue, float* positive, cudaStream_t stream) {
  FRUGAL_TRY(launch_inverse_norms(q, shape.queries, inv_q, k, shape.queries, inv_k, shape.dim, stream));
  if (inv_queue) FRUGAL_TRY(launch_inverse_norms(queue, shape.queued, shape.dim, inv_queue, stream));
  if (shape.queries <= 0) return status{};
  return launch(positive_logits_kernel<T>, launch_config{row_grid(shape.queries), dim3(row_threads), 0, stream}, q, k,
                static_cast<const float*>(inv_q), static_cast<const float*>(inv_k), shape.queries, shape.dim, std::exp(clamp_log_scale(o).value),
                positive);
}

}  // namespace detail

//! MoCo forward: l_i = s [<q_i, k_i>, <q_i, queue_0>, ...] (normalised rows when o.normalize),
//! L = (1/N) sum_i [ LSE(l_i) - l_i0 ]; outputs as infonce_outputs (accuracy: the positive key
//! ranks first, ties going to it). With an empty queue every loss is 0. Two-phase workspace.
template <class T>
status moco_forward(void* workspace, std::size_t& workspace_bytes, const T* q, const T* k, const T* queue, const infonce_outputs& out,
                    const moco_shape& shape, const logit_options& o = {}, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::contrast::moco_forward: T must be float, __half or __nv_bfloat16");
  if (const char* why = detail::invalid_moco(shape, o)) return status::invalid(why);
  const std::int64_t n = shape.queries, kq = shape.queued;
  detail::workspace_carver w(workspace);
  float* inv_q = o.normalize ? w.take<float>(n) : nullptr;
  float* inv_k = o.normalize ? w.take<float>(n) : nullptr;
  float* inv_queue = o.normalize ? w.take<float>(kq) : nullptr;
  float* positive = w.take<float>(n);
  float* row_loss = out.row_loss ? out.row_loss : w.take<float>(n);
  float* correct = w.take<float>(n);
  if (workspace == nullptr) {
    workspace_bytes = w.bytes();
    return status{};
  }
  if (workspace_bytes < w.bytes()) return status::invalid("frugal::contrast::moco_forward: workspace_bytes is smaller than the size query returned");
  if (!out.loss || (n > 0 && (!q || !k)) || (n > 0 && kq > 0 && !queue))
    return status::invalid("frugal::contrast::moco_forward: loss, q, k and (when queued > 0) the queue must not be null");
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(out.loss, 1), byte_range(out.row_lse, n), byte_range(out.row_loss, n),
                                                         byte_range(out.accuracy, 1)),
                                  frugal::detail::ranges(byte_range(q, n * shape.dim), byte_range(k, n * shape.dim), byte_range(queue, kq * shape.dim),
                                                         byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(workspace_bytes)))))
    return status::invalid("frugal::contrast::moco_forward: the outputs must not overlap each other, the inputs or the workspace");
  FRUGAL_TRY(detail::moco_prologue(q, k, queue, shape, o, inv_q, inv_k, inv_queue, positive, stream));
  pair_rule rule;
  rule.kind = pairing::none;
  const auto p = detail::make_score(q, queue, n, kq, shape.dim, o, inv_q, inv_queue, rule, false);
  detail::anchor_outputs stats{out.row_lse, row_loss, correct, nullptr, 0.0f};
  stats.apart_positive = positive;
  FRUGAL_TRY((detail::stats_pass<T, false>(q, queue, p, stats, stream)));
  const float inv_n = n > 0 ? 1.0f / float(n) : 0.0f;
  FRUGAL_TRY(detail::launch_fixed_sum(row_loss, n, inv_n, out.loss, stream));
  return out.accuracy ? detail::launch_fixed_sum(correct, n, inv_n, out.accuracy, stream) : status{};
}

//! MoCo backward from the forward's row log-sum-exps: with P the softmax of l_i,
//! dQ_hat_i = s (u/N) [ (P_i0 - 1) k_hat_i + sum_j P_ij queue_hat_j ] (the queue's part as a
//! gradient pass over its tiles, the key's part per row), through the normalisation
//! (grads.d_rows; d_cols and d_bias null: keys and queue take no gradient), and dL/d log_scale.
template <class T, class G>
status moco_backward(void* workspace, std::size_t& workspace_bytes, const T* q, const T* k, const T* queue, const float* row_lse,
                     const float* upstream, const contrast_gradients<G>& grads, const moco_shape& shape, const logit_options& o = {},
                     cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T> && is_io_float_v<G>, "frugal::contrast::moco_backward: T and G must be float, __half or __nv_bfloat16");
  if (const char* why = detail::invalid_moco(shape, o)) return status::invalid(why);
  const std::int64_t n = shape.queries, kq = shape.queued;
  const int slices = detail::gradient_slices(shape.dim);
  detail::workspace_carver w(workspace);
  float* inv_q = o.normalize ? w.take<float>(n) : nullptr;
  float* inv_k = o.normalize ? w.take<float>(n) : nullptr;
  float* inv_queue = o.normalize ? w.take<float>(kq) : nullptr;
  float* positive = w.take<float>(n);
  float* dots = w.take<float>(std::int64_t(slices) * n);
  if (workspace == nullptr) {
    workspace_bytes = w.bytes();
    return status{};
  }
  if (workspace_bytes < w.bytes()) return status::invalid("frugal::contrast::moco_backward: workspace_bytes is smaller than the size query returned");
  if (n > 0 && (!grads.d_rows || !q || !k || !row_lse || (kq > 0 && !queue)))
    return status::invalid("frugal::contrast::moco_backward: d_rows, q, k, row_lse and (when queued > 0) the queue must not be null");
  if (grads.d_cols || grads.d_bias)
    return status::invalid("frugal::contrast::moco_backward: keys and queue take no gradient and there is no bias: d_cols and d_bias must be null");
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(grads.d_rows, n * shape.dim), byte_range(grads.d_log_scale, 1)),
                                  frugal::detail::ranges(byte_range(q, n * shape.dim), byte_range(k, n * shape.dim), byte_range(queue, kq * shape.dim),
                                                         byte_range(row_lse, n), byte_range(upstream, 1),
                                                         byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(workspace_bytes)))))
    return status::invalid("frugal::contrast::moco_backward: the gradients must not overlap each other, the inputs or the workspace");
  if (n == 0) return grads.d_log_scale ? detail::launch_fixed_sum(dots, 0, 1.0f, grads.d_log_scale, stream) : status{};
  FRUGAL_TRY(detail::moco_prologue(q, k, queue, shape, o, inv_q, inv_k, inv_queue, positive, stream));
  pair_rule rule;
  rule.kind = pairing::none;
  detail::gradient_params p;
  p.row_side = detail::softmax_side(row_lse, 1.0f / float(n));
  p.upstream = upstream;
  p.score = detail::make_score(q, queue, n, kq, shape.dim, o, inv_q, inv_queue, rule, false);
  FRUGAL_TRY((detail::gradient_pass<T, G, false>(q, queue, p, grads.d_rows, detail::gradient_outputs_raw{dots, nullptr, nullptr, nullptr}, stream, false)));
  FRUGAL_TRY(launch(detail::positive_term_kernel<T, G>, launch_config{detail::row_grid(n), dim3(detail::row_threads), 0, stream}, k,
                    static_cast<const float*>(inv_k), static_cast<const float*>(positive), row_lse, upstream, 1.0f / float(n), p.score.scale, n,
                    shape.dim, grads.d_rows, dots));
  FRUGAL_TRY(detail::launch_unnormalize(q, p.score, static_cast<const float*>(dots), grads.d_rows, stream));
  if (!grads.d_log_scale) return status{};
  return detail::launch_fixed_sum(dots, clamp_log_scale(o).passes_gradient ? std::int64_t(slices) * n : 0, 1.0f, grads.d_log_scale, stream);
}

}  // namespace frugal::contrast

// SPDX-License-Identifier: Apache-2.0
//! @file
//! InfoNCE and CLIP, fused (docs/contrastive.md): rows X [N, D] against columns Y [M, D], the
//! logits Z = s X_hat Y_hat^T computed in 64 x 64 tiles on the tensor cores and consumed in
//! registers, never stored (contrast/pairwise.cuh). Forward: one pass per direction, each row's
//! online log-sum-exp, loss and first maximum. Backward: dX by row blocks and dY by column
//! blocks, each recomputing its tiles from the saved log-sum-exps. O(N + M) memory, no atomics,
//! bitwise reproducible.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/contrast/infonce.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/contrast/contrast_config.cuh>
#include <frugal/contrast/pairwise.cuh>
#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace frugal::contrast {

namespace detail {

inline const char* invalid_infonce(const contrast_shape& shape, const logit_options& o, const softmax_options& so) {
  const std::int64_t n = shape.rows, m = shape.cols;
  if (n < 0 || m < 0 || shape.dim < 1 || (n > 0 && m < 1) || n > detail::max_rows || m > detail::max_rows)
    return "frugal::contrast (InfoNCE, CLIP): rows >= 0, cols >= 1 (when rows > 0), dim >= 1";
  if (so.row_offset < 0 || so.row_offset + n > m)
    return "frugal::contrast (InfoNCE, CLIP): the positives row_offset + i must be columns (0 <= row_offset, row_offset + rows <= cols)";
  if (!(so.label_smoothing >= 0.0f && so.label_smoothing < 1.0f)) return "frugal::contrast (InfoNCE, CLIP): label_smoothing must be in [0, 1)";
  if (const char* why = invalid_logit_options(o)) return why;
  if (o.bias != 0.0f) return "frugal::contrast (InfoNCE, CLIP): the bias is SigLIP's; the softmax losses take none";
  return nullptr;
}

}  // namespace detail

//! InfoNCE forward, one direction: row i of X against every column of Y, its positive being
//! column so.row_offset + i (the rank offset of distributed training; row_offset + N <= M).
//! L = (1/N) sum_i [ LSE_j Z_ij - (1 - eps) Z_i,p(i) - (eps/M) sum_j Z_ij ],
//! Z = exp(clamped log_scale) X_hat Y_hat^T, X_hat = X or its L2-normalised rows (o.normalize).
//! bf16 or fp16 inputs with fp32 accumulation; fp32 inputs on the tensor cores as tf32 (rounded
//! to nearest). Two-phase workspace (O(N + M) floats). One pass over the N x M logits in 64 x 64
//! tiles, then the means in a fixed order. Bitwise reproducible.
template <class T>
status infonce_forward(void* workspace, std::size_t& workspace_bytes, const T* rows, const T* cols, const infonce_outputs& out,
                       const contrast_shape& shape, const logit_options& o = {}, const softmax_options& so = {},
                       cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::contrast::infonce_forward: T must be float, __half or __nv_bfloat16");
  const std::int64_t n = shape.rows, m = shape.cols;
  if (const char* why = detail::invalid_infonce(shape, o, so)) return status::invalid(why);
  detail::workspace_carver w(workspace);
  float* inv_rows = o.normalize ? w.take<float>(n) : nullptr;
  float* inv_cols = o.normalize ? w.take<float>(m) : nullptr;
  float* row_loss = out.row_loss ? out.row_loss : w.take<float>(n);
  float* row_correct = w.take<float>(n);
  if (workspace == nullptr) {
    workspace_bytes = w.bytes();
    return status{};
  }
  if (workspace_bytes < w.bytes()) return status::invalid("frugal::contrast::infonce_forward: workspace_bytes is smaller than the size query returned");
  if (!out.loss || (n > 0 && (!rows || !cols))) return status::invalid("frugal::contrast::infonce_forward: loss, rows and cols must not be null");
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(out.loss, 1), byte_range(out.row_lse, n), byte_range(out.row_loss, n),
                                                         byte_range(out.accuracy, 1)),
                                  frugal::detail::ranges(byte_range(rows, n * shape.dim), byte_range(cols, m * shape.dim),
                                                         byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(workspace_bytes)))))
    return status::invalid("frugal::contrast::infonce_forward: the outputs must not overlap each other, the inputs or the workspace");
  FRUGAL_TRY(detail::launch_inverse_norms(rows, n, inv_rows, cols, m, inv_cols, shape.dim, stream));
  pair_rule rule;
  rule.offset = so.row_offset;
  const auto p = detail::make_score(rows, cols, n, m, shape.dim, o, inv_rows, inv_cols, rule, false);
  FRUGAL_TRY((detail::stats_pass<T, false>(rows, cols, p, detail::anchor_outputs{out.row_lse, row_loss, row_correct, nullptr, so.label_smoothing}, stream)));
  const float inv_n = n > 0 ? 1.0f / float(n) : 0.0f;
  FRUGAL_TRY(detail::launch_fixed_sum(row_loss, n, inv_n, out.loss, stream));
  return out.accuracy ? detail::launch_fixed_sum(row_correct, n, inv_n, out.accuracy, stream) : status{};
}

//! InfoNCE backward: from the forward's row log-sum-exps, G_ij = (u/N)[P_ij - (1 - eps)[j = p(i)]
//! - eps/M] (P the row softmax, u the upstream gradient) and dX_hat = s G Y_hat (row blocks),
//! dY_hat = s G^T X_hat (column blocks, when grads.d_cols is set), each recomputing the logits;
//! back through the normalisation when o.normalize; dL/d log_scale = sum_i <x_hat_i, dX_hat_i>
//! (0 outside the clamp). Passes over the N x M logits: 2 (recompute, product) per gradient at
//! D <= 256, and one more recompute per further 256 of D. O(N + M) workspace, no atomics.
template <class T, class G>
status infonce_backward(void* workspace, std::size_t& workspace_bytes, const T* rows, const T* cols, const float* row_lse, const float* upstream,
                        const contrast_gradients<G>& grads, const contrast_shape& shape, const logit_options& o = {},
                        const softmax_options& so = {}, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T> && is_io_float_v<G>, "frugal::contrast::infonce_backward: T and G must be float, __half or __nv_bfloat16");
  const std::int64_t n = shape.rows, m = shape.cols;
  if (const char* why = detail::invalid_infonce(shape, o, so)) return status::invalid(why);
  const int slices = detail::gradient_slices(shape.dim);
  detail::workspace_carver w(workspace);
  float* inv_rows = o.normalize ? w.take<float>(n) : nullptr;
  float* inv_cols = o.normalize ? w.take<float>(m) : nullptr;
  float* dots_rows = w.take<float>(std::int64_t(slices) * n);
  float* dots_cols = grads.d_cols ? w.take<float>(std::int64_t(slices) * m) : nullptr;
  if (workspace == nullptr) {
    workspace_bytes = w.bytes();
    return status{};
  }
  if (workspace_bytes < w.bytes()) return status::invalid("frugal::contrast::infonce_backward: workspace_bytes is smaller than the size query returned");
  if (!grads.d_rows || (n > 0 && (!rows || !cols || !row_lse)))
    return status::invalid("frugal::contrast::infonce_backward: d_rows, rows, cols and row_lse must not be null");
  if (grads.d_bias) return status::invalid("frugal::contrast::infonce_backward: d_bias is SigLIP's; InfoNCE has no bias");
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(
          frugal::detail::ranges(byte_range(grads.d_rows, n * shape.dim), byte_range(grads.d_cols, m * shape.dim), byte_range(grads.d_log_scale, 1)),
          frugal::detail::ranges(byte_range(rows, n * shape.dim), byte_range(cols, m * shape.dim), byte_range(row_lse, n), byte_range(upstream, 1),
                                 byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(workspace_bytes)))))
    return status::invalid("frugal::contrast::infonce_backward: the gradients must not overlap each other, the inputs or the workspace");
  FRUGAL_TRY(detail::launch_inverse_norms(rows, n, inv_rows, cols, m, inv_cols, shape.dim, stream));
  pair_rule rule;
  rule.offset = so.row_offset;
  detail::gradient_params p;
  p.row_side = detail::softmax_side(row_lse, n > 0 ? 1.0f / float(n) : 0.0f, so.label_smoothing, m);
  p.upstream = upstream;
  p.score = detail::make_score(rows, cols, n, m, shape.dim, o, inv_rows, inv_cols, rule, false);
  FRUGAL_TRY((detail::gradient_pass<T, G, false>(rows, cols, p, grads.d_rows, detail::gradient_outputs_raw{dots_rows, nullptr, nullptr, nullptr}, stream)));
  if (grads.d_cols) {
    p.score = detail::make_score(cols, rows, m, n, shape.dim, o, inv_cols, inv_rows, rule, true);
    FRUGAL_TRY((detail::gradient_pass<T, G, false>(cols, rows, p, grads.d_cols, detail::gradient_outputs_raw{dots_cols, nullptr, nullptr, nullptr}, stream)));
  }
  if (!grads.d_log_scale) return status{};
  return detail::launch_fixed_sum(dots_rows, clamp_log_scale(o).passes_gradient ? std::int64_t(slices) * n : 0, 1.0f, grads.d_log_scale, stream);
}

//! What clip_forward writes: the mean loss (required) and optionally the row and column
//! log-sum-exps [N] each (the backward's statistics), and the top-1 accuracy of each direction.
struct clip_outputs {
  float* loss = nullptr;
  float* row_lse = nullptr;
  float* col_lse = nullptr;
  float* row_accuracy = nullptr;
  float* col_accuracy = nullptr;
};

//! CLIP's symmetric loss: the mean of InfoNCE from X to Y (rows of Z = s X_hat Y_hat^T) and from
//! Y to X (its columns), X and Y [N, D] paired row by row. Two passes over the logits (the
//! column statistics of Z are the row statistics of Z^T, computed with the operands exchanged),
//! O(N) memory, then the mean of the 2N losses in a fixed order. Same options, types and rules as
//! infonce_forward; the rank offset does not apply (each direction of a distributed CLIP is its
//! own infonce_forward call). Two-phase workspace.
template <class T>
status clip_forward(void* workspace, std::size_t& workspace_bytes, const T* x, const T* y, const clip_outputs& out, std::int64_t n, int dim,
                    const logit_options& o = {}, const softmax_options& so = {}, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::contrast::clip_forward: T must be float, __half or __nv_bfloat16");
  if (so.row_offset != 0) return status::invalid("frugal::contrast::clip_forward: row_offset does not apply (use infonce_forward per direction)");
  const contrast_shape shape{n, n, dim};
  if (const char* why = detail::invalid_infonce(shape, o, so)) return status::invalid(why);
  detail::workspace_carver w(workspace);
  float* inv_x = o.normalize ? w.take<float>(n) : nullptr;
  float* inv_y = o.normalize ? w.take<float>(n) : nullptr;
  float* losses = w.take<float>(2 * n);   // X to Y, then Y to X: one mean over both
  float* correct = w.take<float>(2 * n);
  if (workspace == nullptr) {
    workspace_bytes = w.bytes();
    return status{};
  }
  if (workspace_bytes < w.bytes()) return status::invalid("frugal::contrast::clip_forward: workspace_bytes is smaller than the size query returned");
  if (!out.loss || (n > 0 && (!x || !y))) return status::invalid("frugal::contrast::clip_forward: loss, x and y must not be null");
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(out.loss, 1), byte_range(out.row_lse, n), byte_range(out.col_lse, n),
                                                         byte_range(out.row_accuracy, 1), byte_range(out.col_accuracy, 1)),
                                  frugal::detail::ranges(byte_range(x, n * dim), byte_range(y, n * dim),
                                                         byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(workspace_bytes)))))
    return status::invalid("frugal::contrast::clip_forward: the outputs must not overlap each other, the inputs or the workspace");
  FRUGAL_TRY(detail::launch_inverse_norms(x, n, inv_x, y, n, inv_y, dim, stream));
  const pair_rule rule;
  const auto rows_p = detail::make_score(x, y, n, n, dim, o, inv_x, inv_y, rule, false);
  const auto cols_p = detail::make_score(y, x, n, n, dim, o, inv_y, inv_x, rule, false);
  FRUGAL_TRY((detail::stats_pass<T, false>(x, y, rows_p, detail::anchor_outputs{out.row_lse, losses, correct, nullptr, so.label_smoothing}, stream)));
  FRUGAL_TRY((detail::stats_pass<T, false>(y, x, cols_p, detail::anchor_outputs{out.col_lse, losses + n, correct + n, nullptr, so.label_smoothing}, stream)));
  const float inv_n = n > 0 ? 1.0f / float(n) : 0.0f;
  FRUGAL_TRY(detail::launch_fixed_sum(losses, 2 * n, 0.5f * inv_n, out.loss, stream));
  if (out.row_accuracy) FRUGAL_TRY(detail::launch_fixed_sum(correct, n, inv_n, out.row_accuracy, stream));
  return out.col_accuracy ? detail::launch_fixed_sum(correct + n, n, inv_n, out.col_accuracy, stream) : status{};
}

//! CLIP backward from the forward's row and column log-sum-exps:
//! G_ij = (u/2N)[P^r_ij + P^c_ij - 2 (1 - eps)[i = j] - 2 eps/N], dX_hat = s G Y_hat by row
//! blocks, dY_hat = s G^T X_hat by column blocks (both required), through the normalisation,
//! and dL/d log_scale. Same pass count, memory and determinism as infonce_backward.
template <class T, class G>
status clip_backward(void* workspace, std::size_t& workspace_bytes, const T* x, const T* y, const float* row_lse, const float* col_lse,
                     const float* upstream, const contrast_gradients<G>& grads, std::int64_t n, int dim, const logit_options& o = {},
                     const softmax_options& so = {}, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T> && is_io_float_v<G>, "frugal::contrast::clip_backward: T and G must be float, __half or __nv_bfloat16");
  if (so.row_offset != 0) return status::invalid("frugal::contrast::clip_backward: row_offset does not apply (use infonce_backward per direction)");
  const contrast_shape shape{n, n, dim};
  if (const char* why = detail::invalid_infonce(shape, o, so)) return status::invalid(why);
  const int slices = detail::gradient_slices(dim);
  detail::workspace_carver w(workspace);
  float* inv_x = o.normalize ? w.take<float>(n) : nullptr;
  float* inv_y = o.normalize ? w.take<float>(n) : nullptr;
  float* dots_x = w.take<float>(std::int64_t(slices) * n);
  float* dots_y = w.take<float>(std::int64_t(slices) * n);
  if (workspace == nullptr) {
    workspace_bytes = w.bytes();
    return status{};
  }
  if (workspace_bytes < w.bytes()) return status::invalid("frugal::contrast::clip_backward: workspace_bytes is smaller than the size query returned");
  if (n > 0 && (!grads.d_rows || !grads.d_cols || !x || !y || !row_lse || !col_lse))
    return status::invalid("frugal::contrast::clip_backward: d_rows, d_cols, x, y, row_lse and col_lse must not be null");
  if (grads.d_bias) return status::invalid("frugal::contrast::clip_backward: d_bias is SigLIP's; CLIP has no bias");
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(
          frugal::detail::ranges(byte_range(grads.d_rows, n * dim), byte_range(grads.d_cols, n * dim), byte_range(grads.d_log_scale, 1)),
          frugal::detail::ranges(byte_range(x, n * dim), byte_range(y, n * dim), byte_range(row_lse, n), byte_range(col_lse, n), byte_range(upstream, 1),
                                 byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(workspace_bytes)))))
    return status::invalid("frugal::contrast::clip_backward: the gradients must not overlap each other, the inputs or the workspace");
  FRUGAL_TRY(detail::launch_inverse_norms(x, n, inv_x, y, n, inv_y, dim, stream));
  const pair_rule rule;
  detail::gradient_params p;
  const float weight = n > 0 ? 0.5f / float(n) : 0.0f;
  p.row_side = detail::softmax_side(row_lse, weight, so.label_smoothing, n);
  p.col_side = detail::softmax_side(col_lse, weight, so.label_smoothing, n);
  p.upstream = upstream;
  p.score = detail::make_score(x, y, n, n, dim, o, inv_x, inv_y, rule, false);
  FRUGAL_TRY((detail::gradient_pass<T, G, false>(x, y, p, grads.d_rows, detail::gradient_outputs_raw{dots_x, nullptr, nullptr, nullptr}, stream)));
  p.score = detail::make_score(y, x, n, n, dim, o, inv_y, inv_x, rule, true);
  FRUGAL_TRY((detail::gradient_pass<T, G, false>(y, x, p, grads.d_cols, detail::gradient_outputs_raw{dots_y, nullptr, nullptr, nullptr}, stream)));
  if (!grads.d_log_scale) return status{};
  return detail::launch_fixed_sum(dots_x, clamp_log_scale(o).passes_gradient ? std::int64_t(slices) * n : 0, 1.0f, grads.d_log_scale, stream);
}

}  // namespace frugal::contrast

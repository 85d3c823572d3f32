// SPDX-License-Identifier: Apache-2.0
//! @file
//! SigLIP's pairwise sigmoid loss, fused on the tensor cores without the N x M matrix
//! (docs/contrastive.md, contrast/pairwise.cuh): Z = s X_hat Y_hat^T + b, label +1 for column
//! row_offset + i and -1 elsewhere, L = (1/N) sum_ij softplus(-l_ij Z_ij). G = dL/dZ depends on
//! Z_ij alone, so the backward needs no statistics and the forward rides along its row pass:
//! a training step is 4 passes over the logits at D <= 256 (dX: recompute and product, dY: the
//! same), not 5. Across ranks, other ranks' columns are negatives only: a shard needs nothing
//! from the others but their embeddings. O(N + M) memory, bitwise reproducible.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/contrast/siglip.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/contrast/contrast_config.cuh>
#include <frugal/contrast/pairwise.cuh>
#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>

#include <cstddef>
#include <cstdint>

namespace frugal::contrast {

//! What the SigLIP loss reports: the mean loss, each row's loss [N] and the top-1 accuracy (the
//! first largest logit of a row is its positive); each optional in the backward.
struct siglip_outputs {
  float* loss = nullptr;
  float* row_loss = nullptr;
  float* accuracy = nullptr;
};

namespace detail {

inline const char* invalid_siglip(const contrast_shape& shape, const logit_options& o, std::int64_t row_offset) {
  const std::int64_t n = shape.rows, m = shape.cols;
  if (n < 0 || m < 0 || shape.dim < 1 || (n > 0 && m < 1) || n > detail::max_rows || m > detail::max_rows)
    return "frugal::contrast (SigLIP): rows >= 0, cols >= 1 (when rows > 0), dim >= 1";
  if (row_offset < 0 || row_offset + n > m)
    return "frugal::contrast (SigLIP): the positives row_offset + i must be columns (0 <= row_offset, row_offset + rows <= cols)";
  return invalid_logit_options(o);
}

}  // namespace detail

//! SigLIP forward alone (evaluation): one pass of row blocks, each row's sum of softplus terms
//! and first maximum, then the means in a fixed order. out.loss required.
template <class T>
status siglip_forward(void* workspace, std::size_t& workspace_bytes, const T* rows, const T* cols, const siglip_outputs& out,
                      const contrast_shape& shape, const logit_options& o = {}, std::int64_t row_offset = 0, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::contrast::siglip_forward: T must be float, __half or __nv_bfloat16");
  const std::int64_t n = shape.rows, m = shape.cols;
  if (const char* why = detail::invalid_siglip(shape, o, row_offset)) return status::invalid(why);
  detail::workspace_carver w(workspace);
  float* inv_rows = o.normalize ? w.take<float>(n) : nullptr;
  float* inv_cols = o.normalize ? w.take<float>(m) : nullptr;
  float* row_loss = out.row_loss ? out.row_loss : w.take<float>(n);
  float* correct = w.take<float>(n);
  if (workspace == nullptr) {
    workspace_bytes = w.bytes();
    return status{};
  }
  if (workspace_bytes < w.bytes()) return status::invalid("frugal::contrast::siglip_forward: workspace_bytes is smaller than the size query returned");
  if (!out.loss || (n > 0 && (!rows || !cols))) return status::invalid("frugal::contrast::siglip_forward: loss, rows and cols must not be null");
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(out.loss, 1), byte_range(out.row_loss, n), byte_range(out.accuracy, 1)),
                                  frugal::detail::ranges(byte_range(rows, n * shape.dim), byte_range(cols, m * shape.dim),
                                                         byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(workspace_bytes)))))
    return status::invalid("frugal::contrast::siglip_forward: the outputs must not overlap each other, the inputs or the workspace");
  FRUGAL_TRY(detail::launch_inverse_norms(rows, n, inv_rows, cols, m, inv_cols, shape.dim, stream));
  pair_rule rule;
  rule.offset = row_offset;
  const auto p = detail::make_score(rows, cols, n, m, shape.dim, o, inv_rows, inv_cols, rule, false);
  FRUGAL_TRY((detail::stats_pass<T, true>(rows, cols, p, detail::anchor_outputs{nullptr, row_loss, correct, nullptr, 0.0f}, stream)));
  const float inv_n = n > 0 ? 1.0f / float(n) : 0.0f;
  FRUGAL_TRY(detail::launch_fixed_sum(row_loss, n, inv_n, out.loss, stream));
  return out.accuracy ? detail::launch_fixed_sum(correct, n, inv_n, out.accuracy, stream) : status{};
}

//! SigLIP backward, with the forward riding along (report: any of its fields, or all null):
//! G_ij = (u/N)[sigmoid(Z_ij) - [j = row_offset + i]], dX_hat = s G Y_hat by row blocks (which
//! also sum each row's softplus terms and G), dY_hat = s G^T X_hat by column blocks (when
//! grads.d_cols is set), through the normalisation; dL/d log_scale = sum_i <x_hat_i, dX_hat_i>
//! (0 outside the clamp) and dL/d bias = sum_ij G_ij. Two-phase workspace, O(N + M).
template <class T, class G>
status siglip_backward(void* workspace, std::size_t& workspace_bytes, const T* rows, const T* cols, const float* upstream,
                       const contrast_gradients<G>& grads, const siglip_outputs& report, const contrast_shape& shape, const logit_options& o = {},
                       std::int64_t row_offset = 0, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T> && is_io_float_v<G>, "frugal::contrast::siglip_backward: T and G must be float, __half or __nv_bfloat16");
  const std::int64_t n = shape.rows, m = shape.cols;
  if (const char* why = detail::invalid_siglip(shape, o, row_offset)) return status::invalid(why);
  const int slices = detail::gradient_slices(shape.dim);
  const bool reporting = report.loss || report.row_loss || report.accuracy;
  detail::workspace_carver w(workspace);
  float* inv_rows = o.normalize ? w.take<float>(n) : nullptr;
  float* inv_cols = o.normalize ? w.take<float>(m) : nullptr;
  float* dots_rows = w.take<float>(std::int64_t(slices) * n);
  float* dots_cols = grads.d_cols ? w.take<float>(std::int64_t(slices) * m) : nullptr;
  float* g_sums = w.take<float>((n + 63) / 64);
  float* row_loss = report.row_loss ? report.row_loss : reporting ? w.take<float>(n) : nullptr;
  float* correct = reporting ? w.take<float>(n) : nullptr;
  if (workspace == nullptr) {
    workspace_bytes = w.bytes();
    return status{};
  }
  if (workspace_bytes < w.bytes()) return status::invalid("frugal::contrast::siglip_backward: workspace_bytes is smaller than the size query returned");
  if (!grads.d_rows || (n > 0 && (!rows || !cols))) return status::invalid("frugal::contrast::siglip_backward: d_rows, rows and cols must not be null");
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(
          frugal::detail::ranges(byte_range(grads.d_rows, n * shape.dim), byte_range(grads.d_cols, m * shape.dim), byte_range(grads.d_log_scale, 1),
                                 byte_range(grads.d_bias, 1), byte_range(report.loss, 1), byte_range(report.row_loss, n), byte_range(report.accuracy, 1)),
          frugal::detail::ranges(byte_range(rows, n * shape.dim), byte_range(cols, m * shape.dim), byte_range(upstream, 1),
                                 byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(workspace_bytes)))))
    return status::invalid("frugal::contrast::siglip_backward: the outputs must not overlap each other, the inputs or the workspace");
  FRUGAL_TRY(detail::launch_inverse_norms(rows, n, inv_rows, cols, m, inv_cols, shape.dim, stream));
  pair_rule rule;
  rule.offset = row_offset;
  detail::gradient_params p;
  p.row_side.weight = n > 0 ? 1.0f / float(n) : 0.0f;
  p.upstream = upstream;
  p.score = detail::make_score(rows, cols, n, m, shape.dim, o, inv_rows, inv_cols, rule, false);
  FRUGAL_TRY((detail::gradient_pass<T, G, true>(rows, cols, p, grads.d_rows, detail::gradient_outputs_raw{dots_rows, g_sums, row_loss, correct}, stream)));
  if (grads.d_cols) {
    p.score = detail::make_score(cols, rows, m, n, shape.dim, o, inv_cols, inv_rows, rule, true);
    FRUGAL_TRY((detail::gradient_pass<T, G, true>(cols, rows, p, grads.d_cols, detail::gradient_outputs_raw{dots_cols, nullptr, nullptr, nullptr}, stream)));
  }
  if (grads.d_log_scale)
    FRUGAL_TRY(detail::launch_fixed_sum(dots_rows, clamp_log_scale(o).passes_gradient ? std::int64_t(slices) * n : 0, 1.0f, grads.d_log_scale, stream));
  if (grads.d_bias) FRUGAL_TRY(detail::launch_fixed_sum(g_sums, n > 0 ? (n + 63) / 64 : 0, 1.0f, grads.d_bias, stream));
  const float inv_n = n > 0 ? 1.0f / float(n) : 0.0f;
  if (report.loss) FRUGAL_TRY(detail::launch_fixed_sum(row_loss, n, inv_n, report.loss, stream));
  return report.accuracy ? detail::launch_fixed_sum(correct, n, inv_n, report.accuracy, stream) : status{};
}

}  // namespace frugal::contrast

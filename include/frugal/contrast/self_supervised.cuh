// SPDX-License-Identifier: Apache-2.0
//! @file
//! The losses over one set of embeddings scored against itself (docs/contrastive.md), fused on
//! the tensor cores without the N x N matrix (contrast/pairwise.cuh): NT-Xent (SimCLR's two
//! views) and SupCon (Khosla et al., L_out). Each sample is a row and a column of Z, so its
//! gradient has two parts, s (G + G^T) X_hat: one pass by row blocks forms both from the row
//! log-sum-exps of the anchor and of the partner. Forward 1 pass, backward 2 (recompute and
//! product) at D <= 256, plus a recompute per further 256 of D. O(N) memory, bitwise
//! reproducible.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/contrast/self_supervised.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/contrast/contrast_config.cuh>
#include <frugal/contrast/pairwise.cuh>
#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>

#include <cstddef>
#include <cstdint>

namespace frugal::contrast {

namespace detail {

inline const char* invalid_self_shape(std::int64_t n, int dim, const logit_options& o) {
  if (n < 0 || dim < 1 || n > detail::max_rows) return "frugal::contrast (NT-Xent, SupCon): n >= 0 and dim >= 1";
  if (const char* why = invalid_logit_options(o)) return why;
  if (o.bias != 0.0f) return "frugal::contrast (NT-Xent, SupCon): the bias is SigLIP's; the softmax losses take none";
  return nullptr;
}

// The backward shared by NT-Xent and SupCon: dX_hat = s (G + G^T) X_hat in one pass of row
// blocks (both sides of G from the same statistics), through the normalisation, and
// dL/d log_scale = (1/2) sum_i <x_hat_i, dX_hat_i> (each pair is counted from both ends).
template <class T, class G>
status self_backward(const T* x, std::int64_t n, int dim, const pair_rule& rule, const gradient_side& side, const float* upstream,
                     const contrast_gradients<G>& grads, const logit_options& o, float* inv_norm, float* dots, cudaStream_t stream) {
  if (o.normalize) FRUGAL_TRY(launch_inverse_norms(x, n, dim, inv_norm, stream));
  gradient_params p;
  p.row_side = side;
  p.col_side = side;
  p.upstream = upstream;
  p.score = make_score(x, x, n, n, dim, o, inv_norm, inv_norm, rule, false);
  FRUGAL_TRY((gradient_pass<T, G, false>(x, x, p, grads.d_rows, gradient_outputs_raw{dots, nullptr, nullptr, nullptr}, stream)));
  if (!grads.d_log_scale) return status{};
  return launch_fixed_sum(dots, clamp_log_scale(o).passes_gradient ? std::int64_t(gradient_slices(dim)) * n : 0, 0.5f, grads.d_log_scale, stream);
}

template <class T, class G>
const char* invalid_self_gradients(const T* x, std::int64_t n, int dim, const float* stats, const float* upstream, const contrast_gradients<G>& grads,
                                   const void* workspace, std::size_t workspace_bytes, const float* more_stats = nullptr) {
  if (n > 0 && (!grads.d_rows || !x || !stats)) return "frugal::contrast (NT-Xent, SupCon): d_rows, the embeddings and row_lse must not be null";
  if (grads.d_cols || grads.d_bias)
    return "frugal::contrast (NT-Xent, SupCon): the rows are the columns (their gradient is d_rows) and there is no bias: d_cols and d_bias must be null";
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(grads.d_rows, n * dim), byte_range(grads.d_log_scale, 1)),
                                  frugal::detail::ranges(byte_range(x, n * dim), byte_range(stats, n), byte_range(more_stats, n), byte_range(upstream, 1),
                                                         byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(workspace_bytes)))))
    return "frugal::contrast (NT-Xent, SupCon): the gradients must not overlap each other, the inputs or the workspace";
  return nullptr;
}

}  // namespace detail

//! NT-Xent (SimCLR) forward: 2H views V [2H, D] (view i and view i + H are the same sample),
//! each against the other 2H - 1, its partner the positive:
//! L = (1/2H) sum_i [ LSE_{j != i} Z_ij - Z_i,pos(i) ], Z = s V_hat V_hat^T.
//! Outputs as infonce_outputs (row_lse is what the backward needs; accuracy: the partner ranks
//! first). `views` must be even. Two-phase workspace.
template <class T>
status nt_xent_forward(void* workspace, std::size_t& workspace_bytes, const T* v, const infonce_outputs& out, std::int64_t views, int dim,
                       const logit_options& o = {}, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::contrast::nt_xent_forward: T must be float, __half or __nv_bfloat16");
  if (const char* why = detail::invalid_self_shape(views, dim, o)) return status::invalid(why);
  if (views % 2 != 0) return status::invalid("frugal::contrast::nt_xent_forward: views must be even (two views of each sample)");
  detail::workspace_carver w(workspace);
  float* inv_norm = o.normalize ? w.take<float>(views) : nullptr;
  float* row_loss = out.row_loss ? out.row_loss : w.take<float>(views);
  float* correct = w.take<float>(views);
  if (workspace == nullptr) {
    workspace_bytes = w.bytes();
    return status{};
  }
  if (workspace_bytes < w.bytes()) return status::invalid("frugal::contrast::nt_xent_forward: workspace_bytes is smaller than the size query returned");
  if (!out.loss || (views > 0 && !v)) return status::invalid("frugal::contrast::nt_xent_forward: loss and the views must not be null");
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(out.loss, 1), byte_range(out.row_lse, views), byte_range(out.row_loss, views),
                                                         byte_range(out.accuracy, 1)),
                                  frugal::detail::ranges(byte_range(v, views * dim),
                                                         byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(workspace_bytes)))))
    return status::invalid("frugal::contrast::nt_xent_forward: the outputs must not overlap each other, the views or the workspace");
  if (o.normalize) FRUGAL_TRY(detail::launch_inverse_norms(v, views, dim, inv_norm, stream));
  pair_rule rule;
  rule.kind = pairing::views;
  rule.half = views / 2;
  rule.exclude_self = true;
  const auto p = detail::make_score(v, v, views, views, dim, o, inv_norm, inv_norm, rule, false);
  FRUGAL_TRY((detail::stats_pass<T, false>(v, v, p, detail::anchor_outputs{out.row_lse, row_loss, correct, nullptr, 0.0f}, stream)));
  const float inv = views > 0 ? 1.0f / float(views) : 0.0f;
  FRUGAL_TRY(detail::launch_fixed_sum(row_loss, views, inv, out.loss, stream));
  return out.accuracy ? detail::launch_fixed_sum(correct, views, inv, out.accuracy, stream) : status{};
}

//! NT-Xent backward from the forward's row log-sum-exps: G_ij = (u/2H)[softmax_{j != i}(Z_i)_j -
//! [j = pos(i)]], dV = s (G + G^T) V_hat through the normalisation (grads.d_rows; d_cols and
//! d_bias null), and dL/d log_scale.
template <class T, class G>
status nt_xent_backward(void* workspace, std::size_t& workspace_bytes, const T* v, const float* row_lse, const float* upstream,
                        const contrast_gradients<G>& grads, std::int64_t views, int dim, const logit_options& o = {},
                        cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T> && is_io_float_v<G>, "frugal::contrast::nt_xent_backward: T and G must be float, __half or __nv_bfloat16");
  if (const char* why = detail::invalid_self_shape(views, dim, o)) return status::invalid(why);
  if (views % 2 != 0) return status::invalid("frugal::contrast::nt_xent_backward: views must be even (two views of each sample)");
  detail::workspace_carver w(workspace);
  float* inv_norm = o.normalize ? w.take<float>(views) : nullptr;
  float* dots = w.take<float>(std::int64_t(detail::gradient_slices(dim)) * views);
  if (workspace == nullptr) {
    workspace_bytes = w.bytes();
    return status{};
  }
  if (workspace_bytes < w.bytes()) return status::invalid("frugal::contrast::nt_xent_backward: workspace_bytes is smaller than the size query returned");
  if (const char* why = detail::invalid_self_gradients(v, views, dim, row_lse, upstream, grads, workspace, workspace_bytes)) return status::invalid(why);
  pair_rule rule;
  rule.kind = pairing::views;
  rule.half = views / 2;
  rule.exclude_self = true;
  return detail::self_backward(v, views, dim, rule, detail::softmax_side(row_lse, views > 0 ? 1.0f / float(views) : 0.0f), upstream, grads, o,
                               inv_norm, dots, stream);
}

//! What supcon_forward writes: the mean loss (required), each anchor's log-sum-exp and number of
//! positives [N] (both needed by the backward), and each anchor's loss [N] (optional).
struct supcon_outputs {
  float* loss = nullptr;
  float* row_lse = nullptr;
  float* row_positives = nullptr;
  float* row_loss = nullptr;
};

//! SupCon (Khosla et al., the L_out form) forward: N embeddings X with int32 labels; anchor i's
//! positives P(i) are the other samples with its label, its softmax runs over every other sample:
//! L_i = LSE_{a != i} Z_ia - (1/|P(i)|) sum_{p in P(i)} Z_ip, L = mean over the anchors with a
//! positive (an anchor without one gives 0 and is not counted; L = 0 when none has one).
//! SupContrast's temperature / base_temperature factor is a constant the caller may apply.
template <class T>
status supcon_forward(void* workspace, std::size_t& workspace_bytes, const T* x, const std::int32_t* labels, const supcon_outputs& out,
                      std::int64_t n, int dim, const logit_options& o = {}, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::contrast::supcon_forward: T must be float, __half or __nv_bfloat16");
  if (const char* why = detail::invalid_self_shape(n, dim, o)) return status::invalid(why);
  detail::workspace_carver w(workspace);
  float* inv_norm = o.normalize ? w.take<float>(n) : nullptr;
  float* row_loss = out.row_loss ? out.row_loss : w.take<float>(n);
  float* positives = out.row_positives ? out.row_positives : w.take<float>(n);
  float* anchors = w.take<float>(1);
  if (workspace == nullptr) {
    workspace_bytes = w.bytes();
    return status{};
  }
  if (workspace_bytes < w.bytes()) return status::invalid("frugal::contrast::supcon_forward: workspace_bytes is smaller than the size query returned");
  if (!out.loss || (n > 0 && (!x || !labels))) return status::invalid("frugal::contrast::supcon_forward: loss, x and labels must not be null");
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(out.loss, 1), byte_range(out.row_lse, n), byte_range(out.row_positives, n),
                                                         byte_range(out.row_loss, n)),
                                  frugal::detail::ranges(byte_range(x, n * dim), byte_range(labels, n),
                                                         byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(workspace_bytes)))))
    return status::invalid("frugal::contrast::supcon_forward: the outputs must not overlap each other, the inputs or the workspace");
  if (o.normalize) FRUGAL_TRY(detail::launch_inverse_norms(x, n, dim, inv_norm, stream));
  pair_rule rule;
  rule.kind = pairing::labels;
  rule.labels = labels;
  rule.exclude_self = true;
  const auto p = detail::make_score(x, x, n, n, dim, o, inv_norm, inv_norm, rule, false);
  FRUGAL_TRY((detail::stats_pass<T, false>(x, x, p, detail::anchor_outputs{out.row_lse, row_loss, nullptr, positives, 0.0f}, stream)));
  FRUGAL_TRY(detail::launch_fixed_sum(positives, n, 1.0f, anchors, stream, nullptr, true));
  return detail::launch_fixed_sum(row_loss, n, 1.0f, out.loss, stream, anchors);
}

//! SupCon backward from the forward's log-sum-exps and positive counts: for anchors with a
//! positive, G_ij = (u/|V|)[softmax_{a != i}(Z_i)_j - [j in P(i)] / |P(i)|], dX = s (G + G^T)
//! X_hat through the normalisation (grads.d_rows), and dL/d log_scale.
template <class T, class G>
status supcon_backward(void* workspace, std::size_t& workspace_bytes, const T* x, const std::int32_t* labels, const float* row_lse,
                       const float* row_positives, const float* upstream, const contrast_gradients<G>& grads, std::int64_t n, int dim,
                       const logit_options& o = {}, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T> && is_io_float_v<G>, "frugal::contrast::supcon_backward: T and G must be float, __half or __nv_bfloat16");
  if (const char* why = detail::invalid_self_shape(n, dim, o)) return status::invalid(why);
  detail::workspace_carver w(workspace);
  float* inv_norm = o.normalize ? w.take<float>(n) : nullptr;
  float* dots = w.take<float>(std::int64_t(detail::gradient_slices(dim)) * n);
  float* anchors = w.take<float>(1);
  if (workspace == nullptr) {
    workspace_bytes = w.bytes();
    return status{};
  }
  if (workspace_bytes < w.bytes()) return status::invalid("frugal::contrast::supcon_backward: workspace_bytes is smaller than the size query returned");
  if (n > 0 && (!labels || !row_positives)) return status::invalid("frugal::contrast::supcon_backward: labels and row_positives must not be null");
  if (const char* why = detail::invalid_self_gradients(x, n, dim, row_lse, upstream, grads, workspace, workspace_bytes, row_positives))
    return status::invalid(why);
  FRUGAL_TRY(detail::launch_fixed_sum(row_positives, n, 1.0f, anchors, stream, nullptr, true));
  pair_rule rule;
  rule.kind = pairing::labels;
  rule.labels = labels;
  rule.exclude_self = true;
  detail::gradient_side side = detail::softmax_side(row_lse, 1.0f);
  side.positives = row_positives;
  side.count = anchors;
  return detail::self_backward(x, n, dim, rule, side, upstream, grads, o, inv_norm, dots, stream);
}

}  // namespace frugal::contrast

// SPDX-License-Identifier: Apache-2.0
//! @file
//! Combine: each token's k expert outputs summed back with their routing weights, in a fixed
//! order with fp32 accumulation (bitwise deterministic); and the backward of permute and combine.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/combine.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/launch.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/moe/detail/dispatch_checks.cuh>
#include <frugal/moe/detail/dispatch_kernels.cuh>

#include <cstdint>

namespace frugal::moe {

namespace detail {
// combine_kernel over `tokens` tokens whose rows `slots` lists: a block per token, grid-stride.
template <class T, class OutT, class Slots>
status launch_combine(const T* y, int hidden, std::int64_t tokens, const Slots& slots, const OutT* residual, OutT* out,
                      cudaStream_t stream) {
  dim3 grid;
  FRUGAL_TRY(row_grid(tokens, grid));
  return launch(combine_kernel<T, OutT, dispatch_vector<T>, Slots>, launch_config{grid, dim3(dispatch_threads), 0, stream}, y,
                hidden, tokens, slots, residual, out);
}
}  // namespace detail

//! out[t] = residual[t] + sum_{j=0..k-1} w[t, j] * y[slot_to_row[t*k + j]] over the slots that
//! have a row (dropped and not-routed slots contribute nothing; rows outside [0, rows) are
//! ignored). Accumulation in fp32 with fused multiply-adds in slot order, then one rounding to
//! OutT: bitwise deterministic. weights [T, k] fp32 or nullptr (unweighted sum); residual [T,
//! hidden] OutT or nullptr, and may be `out` itself (an in-place residual add: each element is
//! read before the same thread writes it). y: T = float, __half, __nv_bfloat16; OutT: any of the three.
//! hidden a multiple of 16 / sizeof(T); y, residual and out 16-byte aligned. One launch.
template <class T, class OutT>
status combine(const T* y, std::int64_t rows, int hidden, int k, std::int64_t tokens, const std::int32_t* slot_to_row,
               const float* weights, const OutT* residual, OutT* out, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T> && is_io_float_v<OutT>, "frugal::moe::combine: element types must be float, __half or __nv_bfloat16");
  FRUGAL_TRY(detail::check_counts("frugal::moe::combine: tokens and rows must be >= 0, k in [1, 32], tokens * k and rows at most INT32_MAX",
                                   tokens, rows, k));
  FRUGAL_TRY(detail::check_rows<T>("frugal::moe::combine: hidden must be a positive multiple of 16 / sizeof(T)",
                                   "frugal::moe::combine: y, residual and out must be 16-byte aligned", hidden, {y, residual, out}));
  if (tokens == 0) return status{};
  if (!slot_to_row || !out || (!y && rows > 0)) return status::invalid("frugal::moe::combine: null pointer");
  // residual == out is an in-place add (each element read before the same thread writes it);
  // any other overlap with out would be read after another block wrote it.
  const frugal::detail::byte_range out_range(out, tokens * hidden);
  if (frugal::detail::any_overlap(frugal::detail::ranges(out_range), frugal::detail::ranges(frugal::detail::byte_range(y, rows * hidden), frugal::detail::byte_range(slot_to_row, tokens * k),
                                        frugal::detail::byte_range(weights, weights ? tokens * k : 0))) ||
      (static_cast<const void*>(residual) != static_cast<const void*>(out) && out_range.overlaps(frugal::detail::byte_range(residual, tokens * hidden))))
    return status::invalid("frugal::moe::combine: out must not overlap y, the map or the weights (residual may be out itself, exactly)");
  return detail::launch_combine(y, hidden, tokens, detail::token_choice_slots{slot_to_row, weights, rows, k}, residual, out, stream);
}

//! Backward of permute: d x[t] = sum_j d_permuted[slot_to_row[t*k + j]] (a combine without
//! weights), fp32 accumulation in slot order.
template <class T>
status permute_backward(const T* d_permuted, std::int64_t rows, int hidden, int k, std::int64_t tokens,
                        const std::int32_t* slot_to_row, T* d_x, cudaStream_t stream = nullptr) {
  return combine<T, T>(d_permuted, rows, hidden, k, tokens, slot_to_row, nullptr, nullptr, d_x, stream);
}

//! Backward of combine, given d out [T, hidden]:
//!  - d_y [rows, hidden] = w[slot(row)] * d_out[token(row)], zeros for padding rows
//!    (row_to_slot from the plan; with slot_to_row each d_out row is read once); nullptr to skip;
//!  - d_weights [T, k] = <d_out[t], y[slot_to_row[t*k + j]]> (0 for slots without a row), fp32,
//!    a fixed-order butterfly sum; nullptr to skip.
//! The residual's gradient is d_out itself.
template <class T>
status combine_backward(const T* d_out, const T* y, std::int64_t rows, int hidden, int k, std::int64_t tokens,
                        const std::int32_t* slot_to_row, const std::int32_t* row_to_slot, const float* weights, T* d_y,
                        float* d_weights, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::moe::combine_backward: T must be float, __half or __nv_bfloat16");
  FRUGAL_TRY(detail::check_counts("frugal::moe::combine_backward: tokens and rows must be >= 0, k in [1, 32], tokens * k and rows at most INT32_MAX",
                                   tokens, rows, k));
  FRUGAL_TRY(detail::check_rows<T>("frugal::moe::combine_backward: hidden must be a positive multiple of 16 / sizeof(T)",
                                   "frugal::moe::combine_backward: d_out, y and d_y must be 16-byte aligned", hidden, {d_out, y, d_y}));
  if (frugal::detail::any_overlap(frugal::detail::ranges(frugal::detail::byte_range(d_y, rows * hidden), frugal::detail::byte_range(d_weights, tokens * k)),
                          frugal::detail::ranges(frugal::detail::byte_range(d_out, tokens * hidden), frugal::detail::byte_range(y, rows * hidden),
                           frugal::detail::byte_range(slot_to_row, tokens * k), frugal::detail::byte_range(row_to_slot, rows),
                           frugal::detail::byte_range(weights, tokens * k))))
    return status::invalid("frugal::moe::combine_backward: d_y and d_weights must not overlap the inputs or each other");
  if (d_y) {
    if (!row_to_slot || !weights || (!d_out && tokens > 0))
      return status::invalid("frugal::moe::combine_backward: d_y needs d_out, row_to_slot and weights");
    if (rows > 0) {
      // With slot_to_row each d_out row is read once and written, scaled, to its k rows.
      dim3 grid;
      FRUGAL_TRY(detail::source_grid(tokens, rows, slot_to_row, grid));
      FRUGAL_TRY(launch(detail::permute_kernel<T, detail::dispatch_vector<T>>,
                        launch_config{grid, dim3(detail::dispatch_threads), 0, stream}, d_out, tokens, hidden, k, row_to_slot,
                        slot_to_row, rows, weights, d_y));
    }
  }
  if (d_weights && tokens > 0) {
    if (!slot_to_row || !d_out || (!y && rows > 0))
      return status::invalid("frugal::moe::combine_backward: d_weights needs d_out, y and slot_to_row");
    dim3 grid;
    FRUGAL_TRY(detail::row_grid((tokens * k + 3) / 4, grid));
    FRUGAL_TRY(launch(detail::combine_weight_grad_kernel<T, T, detail::dispatch_vector<T>>,
                      launch_config{grid, dim3(detail::dispatch_threads), 0, stream}, d_out, y, rows, hidden, k, tokens, slot_to_row,
                      d_weights));
  }
  return status{};
}

//! The way back from expert choice (route_expert_choice): out[t] = residual[t] + sum over the
//! experts e that chose t, in increasing e, of weights[e C + j] * y[e C + j] (fp32 fused
//! multiply-adds in that order, one rounding to OutT: bitwise deterministic). y [E C, hidden] in
//! the expert-major order of token_ids [E C] (each expert's tokens increasing, then -1 for
//! empty places); weights [E C] or nullptr (an unweighted sum: the backward of the permute that
//! gathered y's rows, permute(x, T, H, 1, token_ids, nullptr, E C, ...)). experts in [1, 1024].
//! Types, alignment and residual as for combine. One launch; each token finds its rows by a
//! binary search in every expert's list.
template <class T, class OutT>
status combine_expert_choice(const T* y, int experts, int capacity, const std::int32_t* token_ids, const float* weights,
                             std::int64_t tokens, int hidden, const OutT* residual, OutT* out, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T> && is_io_float_v<OutT>,
                "frugal::moe::combine_expert_choice: element types must be float, __half or __nv_bfloat16");
  if (experts < 1 || experts > detail::expert_choice_slots::max_slots || capacity < 1 || tokens < 0 ||
      std::int64_t(experts) * capacity > INT32_MAX || tokens > INT32_MAX)
    return status::invalid("frugal::moe::combine_expert_choice: experts must be in [1, 1024], capacity >= 1, tokens >= 0, experts * capacity and tokens at most INT32_MAX");
  FRUGAL_TRY(detail::check_rows<T>("frugal::moe::combine_expert_choice: hidden must be a positive multiple of 16 / sizeof(T)",
                                   "frugal::moe::combine_expert_choice: y, residual and out must be 16-byte aligned", hidden,
                                   {y, residual, out}));
  if (tokens == 0) return status{};
  if (!token_ids || !out || !y) return status::invalid("frugal::moe::combine_expert_choice: null pointer");
  const std::int64_t places = std::int64_t(experts) * capacity;
  const frugal::detail::byte_range out_range(out, tokens * hidden);
  if (frugal::detail::any_overlap(frugal::detail::ranges(out_range), frugal::detail::ranges(frugal::detail::byte_range(y, places * hidden), frugal::detail::byte_range(token_ids, places),
                                        frugal::detail::byte_range(weights, weights ? places : 0))) ||
      (static_cast<const void*>(residual) != static_cast<const void*>(out) && out_range.overlaps(frugal::detail::byte_range(residual, tokens * hidden))))
    return status::invalid("frugal::moe::combine_expert_choice: out must not overlap y, the ids or the weights (residual may be out itself, exactly)");
  return detail::launch_combine(y, hidden, tokens, detail::expert_choice_slots{token_ids, weights, experts, capacity}, residual,
                                out, stream);
}

//! Backward of combine_expert_choice, given d out [T, hidden]: d_y [E C, hidden] = w[r] *
//! d_out[token_ids[r]] (zeros for empty places; nullptr to skip) and d_weights [E C] =
//! <d_out[token_ids[r]], y[r]> (fp32, a fixed-order butterfly sum; 0 for empty places; nullptr
//! to skip). A place whose token id is outside [0, tokens) is treated as empty (never read). The residual's gradient is d_out itself; the permute's (a gather of x) is
//! combine_expert_choice of d_y-like rows without weights.
template <class T>
status combine_expert_choice_backward(const T* d_out, const T* y, int experts, int capacity, const std::int32_t* token_ids,
                                      const float* weights, std::int64_t tokens, int hidden, T* d_y, float* d_weights,
                                      cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::moe::combine_expert_choice_backward: T must be float, __half or __nv_bfloat16");
  if (experts < 1 || capacity < 1 || tokens < 0 || std::int64_t(experts) * capacity > INT32_MAX || tokens > INT32_MAX)
    return status::invalid("frugal::moe::combine_expert_choice_backward: experts and capacity must be >= 1, tokens >= 0, experts * capacity and tokens at most INT32_MAX");
  FRUGAL_TRY(detail::check_rows<T>("frugal::moe::combine_expert_choice_backward: hidden must be a positive multiple of 16 / sizeof(T)",
                                   "frugal::moe::combine_expert_choice_backward: d_out, y and d_y must be 16-byte aligned", hidden,
                                   {d_out, y, d_y}));
  if (!d_y && !d_weights) return status{};
  if (!token_ids || !d_out || (d_weights && !y)) return status::invalid("frugal::moe::combine_expert_choice_backward: null pointer");
  const std::int64_t rows = std::int64_t(experts) * capacity;
  if (frugal::detail::any_overlap(frugal::detail::ranges(frugal::detail::byte_range(d_y, rows * hidden), frugal::detail::byte_range(d_weights, rows)),
                          frugal::detail::ranges(frugal::detail::byte_range(d_out, tokens * hidden), frugal::detail::byte_range(y, rows * hidden),
                           frugal::detail::byte_range(token_ids, rows), frugal::detail::byte_range(weights, weights ? rows : 0))))
    return status::invalid("frugal::moe::combine_expert_choice_backward: d_y and d_weights must not overlap the inputs or each other");
  dim3 grid;
  FRUGAL_TRY(detail::row_grid((rows + 3) / 4, grid));
  return launch(detail::expert_choice_combine_backward_kernel<T, T, detail::dispatch_vector<T>>,
                launch_config{grid, dim3(detail::dispatch_threads), 0, stream}, d_out, y, rows, hidden, tokens, token_ids, weights,
                d_y, d_weights);
}

}  // namespace frugal::moe

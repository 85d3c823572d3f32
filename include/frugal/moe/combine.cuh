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
#include <frugal/moe/dispatch_config.cuh>

#include <cstddef>
#include <cstdint>

namespace frugal::moe {

namespace detail {
// combine_kernel over `tokens` tokens whose rows `slots` lists: a block per token, grid-stride.
template <class T, class OutT, class Slots>
status launch_combine(const T* y, std::int64_t ld_y, int hidden, std::int64_t tokens, const Slots& slots, const OutT* residual, OutT* out,
                      std::int64_t ld_out, cudaStream_t stream) {
  dim3 grid;
  FRUGAL_TRY(row_grid(tokens, grid));
  return launch(combine_kernel<T, OutT, dispatch_vector<T>, Slots>, launch_config{grid, dim3(dispatch_threads), 0, stream}, y, ld_y,
                hidden, tokens, slots, residual, out, ld_out);
}

template <class W>
inline constexpr bool is_weight_v = is_io_float_v<W>;

// out [T, hidden] (stride ld_out, residual's too) against everything combine reads (y: stride
// ld_y); residual == out exactly is the in-place add.
template <class T, class W, class OutT, class Index>
bool combine_overlaps(const T* y, std::int64_t y_rows, std::int64_t ld_y, const Index* map, std::int64_t map_count, const W* weights,
                      std::int64_t weight_count, const OutT* residual, const OutT* out, std::int64_t tokens, int hidden,
                      std::int64_t ld_out) {
  using frugal::detail::byte_range;
  const byte_range out_range(out, tokens, hidden, ld_out);
  return frugal::detail::any_overlap(frugal::detail::ranges(out_range),
                                     frugal::detail::ranges(byte_range(y, y_rows, hidden, ld_y), byte_range(map, map_count),
                                                            byte_range(weights, weights ? weight_count : 0))) ||
         (static_cast<const void*>(residual) != static_cast<const void*>(out) &&
          out_range.overlaps(byte_range(residual, tokens, hidden, ld_out)));
}
}  // namespace detail

//! out[t] = residual[t] + sum_{j=0..k-1} w[t, j] * y[slot_to_row[t*k + j]] over the slots that
//! have a row (dropped and not-routed slots contribute nothing; rows outside [0, rows), or at or
//! past maps.total_rows, are ignored). Accumulation in fp32 with fused multiply-adds in slot
//! order, then one rounding to OutT: bitwise deterministic. weights [T, k] float, __half or
//! __nv_bfloat16, or nullptr (an unweighted sum); residual [T, hidden] OutT or nullptr, and may be
//! `out` itself (an in-place residual add: each element is read before the same thread writes
//! it); no other overlap with out is allowed. y: float, __half, __nv_bfloat16; OutT: any of the
//! three. hidden a multiple of 16 / sizeof(T); y, residual and out 16-byte aligned. One launch.
template <class T, class W, class OutT, class Index>
status combine(const T* y, const dispatch_maps_of<Index>& maps, const W* weights, const identity_t<OutT>* residual, OutT* out,
               const dispatch_shape& shape, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T> && is_io_float_v<OutT>, "frugal::moe::combine: element types must be float, __half or __nv_bfloat16");
  static_assert(detail::is_weight_v<W>, "frugal::moe::combine: weights must be float, __half or __nv_bfloat16");
  FRUGAL_TRY(detail::check_shape("frugal::moe::combine: tokens and rows must be >= 0, k in [1, 32], tokens * k and rows at most INT32_MAX",
                                 shape));
  FRUGAL_TRY(detail::check_rows<T>("frugal::moe::combine: hidden must be a positive multiple of 16 / sizeof(T)",
                                   "frugal::moe::combine: y, residual and out must be 16-byte aligned", shape.hidden, {y, residual, out}));
  FRUGAL_TRY((detail::check_strides<OutT, T>("frugal::moe::combine: ld_tokens and ld_rows must be 0 or at least hidden, in whole 16-byte vectors", shape)));
  if (shape.tokens == 0) return status{};
  if (!maps.slot_to_row || !out || (!y && shape.rows > 0)) return status::invalid("frugal::moe::combine: null pointer");
  const std::int64_t slots = shape.tokens * shape.k;
  if (detail::combine_overlaps(y, shape.rows, row_stride(shape), maps.slot_to_row, slots, weights, slots, residual, out, shape.tokens,
                               shape.hidden, token_stride(shape)))
    return status::invalid("frugal::moe::combine: out must not overlap y, the map or the weights (residual may be out itself, exactly)");
  return detail::launch_combine(y, row_stride(shape), shape.hidden, shape.tokens,
                                detail::token_choice_slots<W, Index>{maps.slot_to_row, weights, maps.total_rows, shape.rows, shape.k}, residual, out,
                                token_stride(shape), stream);
}

//! combine() without weights: an unweighted sum.
template <class T, class OutT, class Index>
status combine(const T* y, const dispatch_maps_of<Index>& maps, std::nullptr_t, const identity_t<OutT>* residual, OutT* out, const dispatch_shape& shape,
               cudaStream_t stream = nullptr) {
  return combine(y, maps, static_cast<const float*>(nullptr), residual, out, shape, stream);
}

//! Backward of permute: d x[t] = sum_j d_permuted[slot_to_row[t*k + j]] (a combine without
//! weights), fp32 accumulation in slot order.
template <class T, class Index>
status permute_backward(const T* d_permuted, const dispatch_maps_of<Index>& maps, T* d_x, const dispatch_shape& shape, cudaStream_t stream = nullptr) {
  return combine(d_permuted, maps, nullptr, nullptr, d_x, shape, stream);
}

//! Backward of combine, given d out [T, hidden]:
//!  - d_y [rows, hidden] = w[slot(r)] * d_out[token(r)], zeros for padding rows of the used range
//!    (maps.row_to_slot; with maps.slot_to_row each d_out row is read once); nullptr to skip;
//!  - d_weights [T, k] = <d_out[t], y[slot_to_row[t*k + j]]> (0 for slots without a row), fp32,
//!    a fixed-order butterfly sum; nullptr to skip.
//! The residual's gradient is d_out itself. weights: float, __half or __nv_bfloat16.
template <class T, class W, class Index>
status combine_backward(const T* d_out, const identity_t<T>* y, const dispatch_maps_of<Index>& maps, const W* weights, identity_t<T>* d_y,
                        float* d_weights, const dispatch_shape& shape, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::moe::combine_backward: T must be float, __half or __nv_bfloat16");
  static_assert(detail::is_weight_v<W>, "frugal::moe::combine_backward: weights must be float, __half or __nv_bfloat16");
  FRUGAL_TRY(detail::check_shape(
      "frugal::moe::combine_backward: tokens and rows must be >= 0, k in [1, 32], tokens * k and rows at most INT32_MAX", shape));
  FRUGAL_TRY(detail::check_rows<T>("frugal::moe::combine_backward: hidden must be a positive multiple of 16 / sizeof(T)",
                                   "frugal::moe::combine_backward: d_out, y and d_y must be 16-byte aligned", shape.hidden, {d_out, y, d_y}));
  FRUGAL_TRY(detail::check_strides<T>("frugal::moe::combine_backward: ld_tokens and ld_rows must be 0 or at least hidden, in whole 16-byte vectors", shape));
  const std::int64_t tokens = shape.tokens, rows = shape.rows, slots = tokens * shape.k;
  const int hidden = shape.hidden;
  const std::int64_t ld_tokens = token_stride(shape), ld_rows = row_stride(shape);
  {
    using frugal::detail::byte_range;
    if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(d_y, rows, hidden, ld_rows), byte_range(d_weights, slots)),
                                    frugal::detail::ranges(byte_range(d_out, tokens, hidden, ld_tokens), byte_range(y, rows, hidden, ld_rows),
                                                           byte_range(maps.slot_to_row, slots), byte_range(maps.row_to_slot, rows),
                                                           byte_range(weights, slots))))
      return status::invalid("frugal::moe::combine_backward: d_y and d_weights must not overlap the inputs or each other");
  }
  if (d_y) {
    if (!maps.row_to_slot || !weights || (!d_out && tokens > 0))
      return status::invalid("frugal::moe::combine_backward: d_y needs d_out, row_to_slot and weights");
    if (rows > 0) {
      // With slot_to_row each d_out row is read once and written, scaled, to its k rows.
      dim3 grid;
      FRUGAL_TRY(detail::source_grid(tokens, rows, maps.slot_to_row, grid));
      FRUGAL_TRY(launch(detail::permute_kernel<T, detail::dispatch_vector<T>, W, Index>,
                        launch_config{grid, dim3(detail::dispatch_threads), 0, stream}, d_out, detail::move_problem_of(shape, maps, true),
                        weights, d_y));
    }
  }
  if (d_weights && tokens > 0) {
    if (!maps.slot_to_row || !d_out || (!y && rows > 0))
      return status::invalid("frugal::moe::combine_backward: d_weights needs d_out, y and slot_to_row");
    dim3 grid;
    FRUGAL_TRY(detail::row_grid((slots + 3) / 4, grid));
    FRUGAL_TRY(launch(detail::combine_weight_grad_kernel<T, T, detail::dispatch_vector<T>, Index>,
                      launch_config{grid, dim3(detail::dispatch_threads), 0, stream}, d_out, ld_tokens, y, ld_rows, rows, hidden, shape.k, tokens,
                      maps.slot_to_row,
                      maps.total_rows, d_weights));
  }
  return status{};
}

//! combine_backward() without weights: d_weights only (d_y needs the weights).
template <class T, class Index>
status combine_backward(const T* d_out, const identity_t<T>* y, const dispatch_maps_of<Index>& maps, std::nullptr_t, identity_t<T>* d_y,
                        float* d_weights, const dispatch_shape& shape, cudaStream_t stream = nullptr) {
  return combine_backward(d_out, y, maps, static_cast<const float*>(nullptr), d_y, d_weights, shape, stream);
}

//! The way back from expert choice (route_expert_choice): out[t] = residual[t] + sum over the
//! experts e that chose t, in increasing e, of weights[e C + j] * y[e C + j] (fp32 fused
//! multiply-adds in that order, one rounding to OutT: bitwise deterministic). y [E C, hidden] in
//! the expert-major order of token_ids [E C] (each expert's tokens increasing, then -1 for
//! empty places; an id outside [0, T) is an empty place); weights [E C] (float, __half or
//! __nv_bfloat16) or nullptr (an unweighted sum: the backward of the k = 1 permute that gathered
//! y's rows). experts in [1, 4096]. Types, alignment and residual as for combine. One launch;
//! each token finds its rows by a binary search in every expert's list.
template <class T, class W, class OutT>
status combine_expert_choice(const T* y, const std::int32_t* token_ids, const W* weights, const identity_t<OutT>* residual, OutT* out,
                             const expert_choice_shape& shape, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T> && is_io_float_v<OutT>,
                "frugal::moe::combine_expert_choice: element types must be float, __half or __nv_bfloat16");
  static_assert(detail::is_weight_v<W>, "frugal::moe::combine_expert_choice: weights must be float, __half or __nv_bfloat16");
  const std::int64_t tokens = shape.tokens, places = std::int64_t(shape.experts) * shape.capacity;
  if (shape.experts < 1 || shape.experts > detail::expert_choice_slots<W>::max_slots || shape.capacity < 1 || tokens < 0 ||
      places > INT32_MAX || tokens > INT32_MAX)
    return status::invalid("frugal::moe::combine_expert_choice: experts must be in [1, 4096], capacity >= 1, tokens >= 0, experts * capacity and tokens at most INT32_MAX");
  FRUGAL_TRY(detail::check_rows<T>("frugal::moe::combine_expert_choice: hidden must be a positive multiple of 16 / sizeof(T)",
                                   "frugal::moe::combine_expert_choice: y, residual and out must be 16-byte aligned", shape.hidden,
                                   {y, residual, out}));
  if (tokens == 0) return status{};
  if (!token_ids || !out || !y) return status::invalid("frugal::moe::combine_expert_choice: null pointer");
  if (detail::combine_overlaps(y, places, std::int64_t(shape.hidden), token_ids, places, weights, places, residual, out, tokens, shape.hidden,
                               std::int64_t(shape.hidden)))
    return status::invalid("frugal::moe::combine_expert_choice: out must not overlap y, the ids or the weights (residual may be out itself, exactly)");
  return detail::launch_combine(y, std::int64_t(shape.hidden), shape.hidden, tokens,
                                detail::expert_choice_slots<W>{token_ids, weights, shape.experts, shape.capacity}, residual, out,
                                std::int64_t(shape.hidden), stream);
}

//! combine_expert_choice() without weights.
template <class T, class OutT>
status combine_expert_choice(const T* y, const std::int32_t* token_ids, std::nullptr_t, const identity_t<OutT>* residual, OutT* out,
                             const expert_choice_shape& shape, cudaStream_t stream = nullptr) {
  return combine_expert_choice(y, token_ids, static_cast<const float*>(nullptr), residual, out, shape, stream);
}

//! Backward of combine_expert_choice, given d out [T, hidden]: d_y [E C, hidden] = w[r] *
//! d_out[token_ids[r]] (zeros for empty places; nullptr to skip) and d_weights [E C] =
//! <d_out[token_ids[r]], y[r]> (fp32, a fixed-order butterfly sum; 0 for empty places; nullptr
//! to skip). A place whose token id is outside [0, tokens) is treated as empty (never read).
//! The residual's gradient is d_out itself; the permute's (a gather of x) is
//! combine_expert_choice of d_y-like rows without weights.
template <class T, class W>
status combine_expert_choice_backward(const T* d_out, const identity_t<T>* y, const std::int32_t* token_ids, const W* weights,
                                      identity_t<T>* d_y, float* d_weights, const expert_choice_shape& shape, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::moe::combine_expert_choice_backward: T must be float, __half or __nv_bfloat16");
  static_assert(detail::is_weight_v<W>, "frugal::moe::combine_expert_choice_backward: weights must be float, __half or __nv_bfloat16");
  const std::int64_t tokens = shape.tokens, rows = std::int64_t(shape.experts) * shape.capacity;
  const int hidden = shape.hidden;
  if (shape.experts < 1 || shape.capacity < 1 || tokens < 0 || rows > INT32_MAX || tokens > INT32_MAX)
    return status::invalid("frugal::moe::combine_expert_choice_backward: experts and capacity must be >= 1, tokens >= 0, experts * capacity and tokens at most INT32_MAX");
  FRUGAL_TRY(detail::check_rows<T>("frugal::moe::combine_expert_choice_backward: hidden must be a positive multiple of 16 / sizeof(T)",
                                   "frugal::moe::combine_expert_choice_backward: d_out, y and d_y must be 16-byte aligned", hidden,
                                   {d_out, y, d_y}));
  if (!d_y && !d_weights) return status{};
  if (!token_ids || !d_out || (d_weights && !y)) return status::invalid("frugal::moe::combine_expert_choice_backward: null pointer");
  {
    using frugal::detail::byte_range;
    if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(d_y, rows * hidden), byte_range(d_weights, rows)),
                                    frugal::detail::ranges(byte_range(d_out, tokens * hidden), byte_range(y, rows * hidden),
                                                           byte_range(token_ids, rows), byte_range(weights, weights ? rows : 0))))
      return status::invalid("frugal::moe::combine_expert_choice_backward: d_y and d_weights must not overlap the inputs or each other");
  }
  dim3 grid;
  FRUGAL_TRY(detail::row_grid((rows + 3) / 4, grid));
  return launch(detail::expert_choice_combine_backward_kernel<T, T, detail::dispatch_vector<T>, W>,
                launch_config{grid, dim3(detail::dispatch_threads), 0, stream}, d_out, y, rows, hidden, tokens, token_ids, weights, d_y,
                d_weights);
}

//! combine_expert_choice_backward() without weights (d_y = d_out[token], unscaled).
template <class T>
status combine_expert_choice_backward(const T* d_out, const identity_t<T>* y, const std::int32_t* token_ids, std::nullptr_t,
                                      identity_t<T>* d_y, float* d_weights, const expert_choice_shape& shape, cudaStream_t stream = nullptr) {
  return combine_expert_choice_backward(d_out, y, token_ids, static_cast<const float*>(nullptr), d_y, d_weights, shape, stream);
}

}  // namespace frugal::moe

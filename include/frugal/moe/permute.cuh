// SPDX-License-Identifier: Apache-2.0
//! @file
//! Permute: gather token rows into the expert-major buffer a plan laid out, as they are or
//! quantised to fp8 e4m3 in the same pass; and its backward.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/permute.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/launch.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/moe/detail/dispatch_checks.cuh>
#include <frugal/moe/detail/dispatch_kernels.cuh>
#include <frugal/moe/dispatch_config.cuh>

#include <cuda_fp8.h>

#include <cstdint>

namespace frugal::moe {

//! out[row] = x[token(row)] for every row of the expert-major buffer [shape.rows, hidden] that
//! the plan used, where token(row) = row_to_slot[row] / k; padding rows inside the used range
//! (a slot outside [0, T*k)) are written as zeros, or left alone with padding_rows::untouched;
//! rows at or past maps.total_rows (when given) are not touched at all. T = float, __half or
//! __nv_bfloat16; hidden a multiple of 16 / sizeof(T); x and out 16-byte aligned, not
//! overlapping; rows of x and out may be slices of wider buffers (shape.ld_tokens, ld_rows; the
//! elements between are not touched). For a GEMM that gathers its own rows, skip this and use
//! plan_outputs::row_to_token.
//! One launch; bandwidth-bound.
//!
//! maps.slot_to_row (the inverse map) is optional and makes it faster: each token row is then
//! read once and written to its k rows (HBM traffic T*H + rows*H instead of up to 2*rows*H when
//! the k re-reads of a token miss L2). Without it every row gathers its token. Same bits.
template <class T, class Index>
status permute(const T* x, const dispatch_maps_of<Index>& maps, T* out, const dispatch_shape& shape, padding_rows padding = padding_rows::zeros,
               cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::moe::permute: T must be float, __half or __nv_bfloat16");
  FRUGAL_TRY(detail::check_shape("frugal::moe::permute: tokens and rows must be >= 0, k in [1, 32], tokens * k and rows at most INT32_MAX", shape));
  FRUGAL_TRY(detail::check_rows<T>("frugal::moe::permute: hidden must be a positive multiple of 16 / sizeof(T)",
                                   "frugal::moe::permute: x and out must be 16-byte aligned", shape.hidden, {x, out}));
  FRUGAL_TRY(detail::check_strides<T>("frugal::moe::permute: ld_tokens and ld_rows must be 0 or at least hidden, in whole 16-byte vectors", shape));
  if (shape.rows == 0) return status{};
  if (!maps.row_to_slot || !out || (!x && shape.tokens > 0)) return status::invalid("frugal::moe::permute: null pointer");
  if (detail::moved_rows_overlap(shape, x, out, maps))
    return status::invalid("frugal::moe::permute: out must not overlap x or the maps (no in-place permute)");
  dim3 grid;
  FRUGAL_TRY(detail::source_grid(shape.tokens, shape.rows, maps.slot_to_row, grid));
  return launch(detail::permute_kernel<T, detail::dispatch_vector<T>, float, Index>, launch_config{grid, dim3(detail::dispatch_threads), 0, stream},
                x, detail::move_problem_of(shape, maps, padding == padding_rows::zeros), static_cast<const float*>(nullptr), out);
}

//! How permute_fp8 scales, and where its scales go (G = hidden / 128 groups per row).
enum class fp8_scaling {
  per_token,         //!< scales [rows]: amax of the row / 448
  per_128,           //!< scales [rows, G], row-major: amax of each 128 elements / 448 (row r, group g at r G + g)
  per_128_mn_major,  //!< the same scales transposed within blocks of B rows: [rows / B, G, B], row r, group g
                     //!< at (r / B) G B + g B + r % B. DeepGEMM's scale layout for its fp8 grouped GEMMs
                     //!< (B = rows for the contiguous layout; B = the capacity for the masked layout
                     //!< [E, capacity, hidden], as DeepEP's low-latency dispatch writes it)
};

//! The scales of permute_fp8: their layout, and B for per_128_mn_major (0: all rows).
struct fp8_scales {
  fp8_scaling layout = fp8_scaling::per_token;
  std::int64_t block_rows = 0;
};

//! permute() with fp8 e4m3 output in the same pass: q = x * (1 / s) saturated to +-448, rounded
//! to nearest even, s = amax / 448 (1 for an all-zero group); padding rows are zeros with scale 1
//! (or untouched, rows and scales, with padding_rows::untouched). scales: float [rows]
//! (per_token), [rows, hidden / 128] (per_128) or [rows / B, hidden / 128, B] (per_128_mn_major,
//! rows a multiple of B); per-128 scaling needs hidden to be a multiple of 128. scales 4-byte
//! aligned. maps.slot_to_row is optional, as for permute (then each token is read and quantised once).
template <class T, class Index>
status permute_fp8(const T* x, const dispatch_maps_of<Index>& maps, __nv_fp8_e4m3* out, float* scales, const dispatch_shape& shape,
                   const fp8_scales& scaling = {}, padding_rows padding = padding_rows::zeros, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::moe::permute_fp8: T must be float, __half or __nv_bfloat16");
  FRUGAL_TRY(detail::check_shape("frugal::moe::permute_fp8: tokens and rows must be >= 0, k in [1, 32], tokens * k and rows at most INT32_MAX", shape));
  FRUGAL_TRY(detail::check_rows<T>("frugal::moe::permute_fp8: hidden must be a positive multiple of 16 / sizeof(T)",
                                   "frugal::moe::permute_fp8: x and out must be 16-byte aligned", shape.hidden, {x, out}));
  FRUGAL_TRY(detail::check_strides<T>("frugal::moe::permute_fp8: ld_tokens and ld_rows must be 0 or at least hidden, in whole 16-byte vectors of x", shape));
  const std::int64_t rows = shape.rows;
  const bool per_128 = scaling.layout != fp8_scaling::per_token;
  if (per_128 && shape.hidden % 128 != 0)
    return status::invalid("frugal::moe::permute_fp8: per_128 scaling needs hidden to be a multiple of 128");
  if (scaling.layout == fp8_scaling::per_128_mn_major && (scaling.block_rows < 0 || (scaling.block_rows > 0 && rows % scaling.block_rows != 0)))
    return status::invalid("frugal::moe::permute_fp8: scale_block_rows must be 0 (all rows) or a positive divisor of rows");
  if (rows == 0) return status{};
  if (!maps.row_to_slot || !out || !scales || (!x && shape.tokens > 0)) return status::invalid("frugal::moe::permute_fp8: null pointer");
  if (!is_aligned(scales, alignof(float))) return status::misaligned("frugal::moe::permute_fp8: scales must be 4-byte aligned");
  const std::int64_t scale_count = per_128 ? rows * (shape.hidden / 128) : rows;
  if (detail::moved_rows_overlap(shape, x, out, maps) ||
      frugal::detail::any_overlap(frugal::detail::ranges(frugal::detail::byte_range(scales, scale_count)),
                                  frugal::detail::ranges(frugal::detail::byte_range(x, shape.tokens, shape.hidden, token_stride(shape)),
                                                         frugal::detail::byte_range(out, rows, shape.hidden, row_stride(shape)),
                                                         frugal::detail::byte_range(maps.row_to_slot, rows))))
    return status::invalid("frugal::moe::permute_fp8: out and scales must not overlap x, the maps or each other");
  dim3 grid;
  FRUGAL_TRY(detail::source_grid(shape.tokens, rows, maps.slot_to_row, grid));
  constexpr int V = detail::dispatch_vector<T>;
  const launch_config config{grid, dim3(detail::dispatch_threads), 0, stream};
  const auto problem = detail::move_problem_of(shape, maps, padding == padding_rows::zeros);
  // Block rows of the scale layout: 0 for row-major.
  const std::int64_t block_rows =
      scaling.layout == fp8_scaling::per_128_mn_major ? (scaling.block_rows > 0 ? scaling.block_rows : rows) : 0;
  if (per_128) return launch(detail::permute_fp8_kernel<T, V, 128, Index>, config, x, problem, out, scales, block_rows);
  return launch(detail::permute_fp8_kernel<T, V, 0, Index>, config, x, problem, out, scales, std::int64_t(0));
}

}  // namespace frugal::moe

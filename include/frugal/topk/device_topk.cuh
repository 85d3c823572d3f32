// SPDX-License-Identifier: Apache-2.0
//! @file
//! Device-wide top-k over the rows of a row-major [rows, cols] matrix.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/topk/device_topk.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/topk/detail/topk_rows_kernel.cuh>
#include <frugal/topk/warp_topk.cuh>

#include <cstddef>
#include <cstdint>

namespace frugal {

//! Largest number of columns frugal::topk accepts.
inline constexpr int topk_max_cols = warp_topk_max_items;

//! For every row of `in` ([rows, cols], row-major, contiguous), writes the k largest values in
//! descending order to `out_values` ([rows, k]) and their column indices to `out_indices`.
//!
//! Order and ties: larger values first; equal values by lower index; NaN is smaller than every
//! number (a NaN is selected only when fewer than k numbers exist); -0.0 equals +0.0 and is
//! written as found. Indices in a row are distinct. The result is bitwise deterministic.
//!
//! Needs no workspace, so it takes none (entry points that need one use CUB's two-phase shape).
//! Stream-ordered; never allocates or synchronizes.
//!
//! @param[in] in            [rows, cols] input, T = float, __half or __nv_bfloat16
//! @param[out] out_values   [rows, k] values, or nullptr if not wanted
//! @param[out] out_indices  [rows, k] int32 column indices, or nullptr if not wanted
//! @param rows              number of rows, >= 0
//! @param cols              number of columns, in [1, topk_max_cols]
//! @param k                 values per row, in [1, min(cols, 32)]
template <class T>
status topk(const T* in, T* out_values,
            std::int32_t* out_indices, std::int64_t rows, int cols, int k, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::topk: T must be float, __half or __nv_bfloat16");
  if (rows < 0) return status::invalid("frugal::topk: rows must be >= 0");
  if (cols < 1 || cols > topk_max_cols) return status::invalid("frugal::topk: cols must be in [1, 1024]");
  if (k < 1 || k > warp_topk_max_k || k > cols)
    return status::invalid("frugal::topk: k must be in [1, min(cols, 32)]");
  if (rows == 0) return status{};
  if (in == nullptr) return status::invalid("frugal::topk: in is null");
  if (out_values == nullptr && out_indices == nullptr)
    return status::invalid("frugal::topk: out_values and out_indices are both null");
  if (frugal::detail::any_overlap(frugal::detail::ranges(frugal::detail::byte_range(out_values, rows * k), frugal::detail::byte_range(out_indices, rows * k)),
                          frugal::detail::ranges(frugal::detail::byte_range(in, rows * cols))))
    return status::invalid("frugal::topk: out_values and out_indices must not overlap in or each other (no in-place top-k)");

  constexpr int warps_per_block = 4;
  int sms = 0;
  FRUGAL_TRY(multiprocessor_count(sms));
  // Enough resident warps to fill every SM (16 blocks x 4 warps = 64 warps per SM), then stride.
  const std::int64_t blocks_needed = (rows + warps_per_block - 1) / warps_per_block;
  const std::int64_t blocks = blocks_needed < std::int64_t(sms) * 16 ? blocks_needed : std::int64_t(sms) * 16;
  launch_config config{dim3(unsigned(blocks)), dim3(warps_per_block * 32), 0, stream};

  const int items = (cols + 31) / 32;
  auto run = [&](auto kernel) { return launch(kernel, config, in, out_values, out_indices, rows, cols, k); };
  if (items <= 1) return run(detail::topk_rows_kernel<T, 1, warps_per_block>);
  if (items <= 2) return run(detail::topk_rows_kernel<T, 2, warps_per_block>);
  if (items <= 4) return run(detail::topk_rows_kernel<T, 4, warps_per_block>);
  if (items <= 8) return run(detail::topk_rows_kernel<T, 8, warps_per_block>);
  if (items <= 16) return run(detail::topk_rows_kernel<T, 16, warps_per_block>);
  return run(detail::topk_rows_kernel<T, 32, warps_per_block>);
}

}  // namespace frugal

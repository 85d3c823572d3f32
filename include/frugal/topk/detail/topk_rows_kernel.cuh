// SPDX-License-Identifier: Apache-2.0
// The kernel behind frugal::topk: one warp per row, rows distributed grid-stride.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/topk/detail/topk_rows_kernel.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/numeric.cuh>
#include <frugal/core/ordered_key.cuh>
#include <frugal/topk/warp_topk.cuh>

#include <cstdint>

namespace frugal::detail {

template <class T, int ItemsPerLane, int WarpsPerBlock>
__global__ void __launch_bounds__(WarpsPerBlock * 32, 1)
    topk_rows_kernel(const T* __restrict__ in, T* __restrict__ out_values,
                     std::int32_t* __restrict__ out_indices, std::int64_t rows, int cols, int k) {
  const int lane = int(threadIdx.x % 32);
  const std::int64_t first = std::int64_t(blockIdx.x) * WarpsPerBlock + threadIdx.x / 32;
  const std::int64_t stride = std::int64_t(gridDim.x) * WarpsPerBlock;
  for (std::int64_t row = first; row < rows; row += stride) {
    const T* r = in + row * cols;
    // Striped: lane l holds columns l, l + 32, ..., so each load instruction is coalesced.
    float values[ItemsPerLane];
    std::uint32_t columns[ItemsPerLane];
    unsigned valid = 0;
    FRUGAL_UNROLL
    for (int i = 0; i < ItemsPerLane; ++i) {
      const int col = i * 32 + lane;
      values[i] = col < cols ? to_float(r[col]) : 0.0f;
      columns[i] = std::uint32_t(col);
      valid |= col < cols ? 1u << i : 0u;
    }
    // 16-bit values and a column (cols <= 1024) fit a 32-bit key: half the selection work.
    const std::uint32_t index = warp_topk_index<exact_float_trailing_zeros<T>>(values, columns, valid, k);
    if (lane < k) {
      // The value is re-read rather than decoded from the key, so -0.0 and NaN payloads survive.
      if (out_values) out_values[row * k + lane] = r[index];
      if (out_indices) out_indices[row * k + lane] = std::int32_t(index);
    }
  }
}


}  // namespace frugal::detail

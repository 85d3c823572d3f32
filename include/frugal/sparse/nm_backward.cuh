// SPDX-License-Identifier: Apache-2.0
//! @file
//! The backward of an N:M sparse linear layer Y = X W^T. dX = dY W is nm_linear itself with W^T
//! compressed as the weight (a transposable mask makes W^T N:M too; srste_step_transposable
//! writes it) and dY as the input. dW = dY^T X is dense: nm_weight_gradient, a transpose of dY
//! into the workspace and frugal::gemm, optionally masked to the weight's pattern. docs/sparse.md.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/sparse/nm_backward.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/launch.cuh>
#include <frugal/gemm/device_gemm.cuh>

#include <cstdint>
#include <type_traits>

namespace frugal::sparse {

//! The gradient epilogue: dW[o, k] = acc, or 0 where mask[o, k] is 0 (mask null: everything kept).
struct masked_gradient_epilogue {
  const std::uint8_t* mask = nullptr;
  std::int64_t ld_mask = 0;
  FRUGAL_HOST_DEVICE float operator()(float acc, std::int64_t row, std::int64_t col, int) const {
    return mask == nullptr || mask[row * ld_mask + col] ? acc : 0.0f;
  }
};

namespace detail {
// out[c, r] = in[r, c] through a 32 x 33 shared tile (coalesced both ways, no bank conflicts).
template <class T>
__global__ void transpose_kernel(const T* in, std::int64_t ld_in, std::int64_t rows, std::int64_t cols, T* out, std::int64_t ld_out) {
  __shared__ T tile[32][33];
  const std::int64_t r0 = std::int64_t(blockIdx.y) * 32, c0 = std::int64_t(blockIdx.x) * 32;
  for (int i = int(threadIdx.y); i < 32; i += int(blockDim.y)) {
    const std::int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = in[r * ld_in + c];
  }
  __syncthreads();
  for (int i = int(threadIdx.y); i < 32; i += int(blockDim.y)) {
    const std::int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) out[c * ld_out + r] = tile[threadIdx.x][i];
  }
}
}  // namespace detail

//! dW = dY^T X for Y = X W^T: dY [tokens, out] and X [tokens, K] row-major (__half or
//! __nv_bfloat16), dW [out, K] row-major (float, __half, __nv_bfloat16), fp32 accumulation on the
//! tensor cores. With a mask (uint8 [out, ld_mask], e.g. nm_prune's) the pruned positions get 0
//! (the gradient of a fixed-pattern layer); without, the dense gradient (what SR-STE's step takes).
//! Two-phase workspace (dY transposed, out x tokens rounded up to 8). Deterministic.
template <class T, class Out>
status nm_weight_gradient(void* workspace, std::size_t& workspace_bytes, matrix_ref<const T> dy, matrix_ref<const T> x, const std::uint8_t* mask,
                          std::int64_t ld_mask, matrix_ref<Out> dw, std::int64_t tokens, std::int64_t out, std::int64_t k,
                          cudaStream_t stream = nullptr) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "frugal::sparse::nm_weight_gradient: dY and X must be __half or __nv_bfloat16");
  if (tokens < 0 || out < 0 || k < 0) return status::invalid("frugal::sparse::nm_weight_gradient: tokens, out and K must be >= 0");
  const std::int64_t ld_t = (tokens + 7) / 8 * 8;  // 16-byte rows: the GEMM loads dY^T by cp.async
  const std::size_t needed = std::size_t(out) * std::size_t(ld_t) * sizeof(T) + 16;
  if (workspace == nullptr) {
    workspace_bytes = needed;
    return status{};
  }
  if (workspace_bytes < needed) return status::invalid("frugal::sparse::nm_weight_gradient: workspace_bytes is smaller than the size query returned");
  if (!is_aligned(workspace, 16)) return status::misaligned("frugal::sparse::nm_weight_gradient: the workspace must be 16-byte aligned");
  if (dy.order != matrix_order::row_major || x.order != matrix_order::row_major)
    return status::invalid("frugal::sparse::nm_weight_gradient: dY and X must be row-major");
  if (mask && ld_mask < k) return status::invalid("frugal::sparse::nm_weight_gradient: ld_mask must be >= K");
  if (out == 0 || k == 0) return status{};
  if (tokens > 0 && (!dy.data || dy.ld < out)) return status::invalid("frugal::sparse::nm_weight_gradient: dY is null or ld_dy < out");
  T* dy_t = static_cast<T*>(workspace);
  if (tokens > 0) {
    if ((tokens + 31) / 32 > 65535 || (out + 31) / 32 > INT32_MAX)
      return status::invalid("frugal::sparse::nm_weight_gradient: tokens must be < 2^21 and out < 2^36");
    const dim3 grid(unsigned((out + 31) / 32), unsigned((tokens + 31) / 32));
    FRUGAL_TRY(launch(detail::transpose_kernel<T>, launch_config{grid, dim3(32, 8), 0, stream}, dy.data, dy.ld, tokens, out, dy_t, ld_t));
  }
  // dW [out, K] = dY^T [out, tokens] (row-major) x X [tokens, K] (B row-major).
  return frugal::gemm(row_major<const T>(dy_t, ld_t), x, dw, out, k, tokens, masked_gradient_epilogue{mask, ld_mask}, stream);
}

}  // namespace frugal::sparse

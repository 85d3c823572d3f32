// SPDX-License-Identifier: Apache-2.0
//! @file
//! InfoNCE forward, fused (docs/contrastive.md): rows X [N, D] against columns Y [M, D], the
//! logits Z = s X Y^T computed in 64 x 64 tiles on the tensor cores (block_gemm) and consumed in
//! registers: never stored. Each row's log-sum-exp, loss and first maximum come from one pass
//! over the column tiles with an online log-sum-exp, reduced across lanes and warps in a fixed
//! order: O(N) memory, bitwise reproducible. The backward and the other losses are not built yet.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/contrast/infonce.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/contrast/contrast_config.cuh>
#include <frugal/core/block.cuh>
#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/shared_memory.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/gemm/block_gemm.cuh>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace frugal::contrast {

//! The sizes of a contrastive loss: N rows, M columns, D elements per embedding (rows of both
//! matrices contiguous, D apart).
struct contrast_shape {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  int dim = 0;
};

//! What infonce_forward writes: the mean loss (one float, required), and optionally each row's
//! log-sum-exp [N] (what the backward needs), each row's loss [N] and the top-1 accuracy (one
//! float: the fraction of rows whose first largest logit is their positive).
struct infonce_outputs {
  float* loss = nullptr;
  float* row_lse = nullptr;
  float* row_loss = nullptr;
  float* accuracy = nullptr;
};

namespace detail {

template <class T>
using similarity_tile = gemm_tile<T, matrix_order::col_major, 64, 64, int(64 / sizeof(T)), 2, 2, 3>;

// One row's running statistics over the columns seen so far.
struct row_stats {
  float max, sum, sum_z, positive, best;
  std::int64_t best_col;
  int has_positive;

  FRUGAL_DEVICE static row_stats empty() {
    return {-INFINITY, 0.0f, 0.0f, 0.0f, -INFINITY, INT64_MAX, 0};
  }
  // The next logit z of column `col` (columns arrive in increasing order per thread).
  FRUGAL_DEVICE void add(float z, std::int64_t col, bool is_positive) {
    if (z > max) {
      sum = sum * expf(max - z) + 1.0f;
      max = z;
    } else {
      sum += expf(z - max);
    }
    sum_z += z;
    if (is_positive) positive = z, has_positive = 1;
    if (z > best) best = z, best_col = col;
  }
  // Statistics of another set of columns (the formula is symmetric, so the order of two
  // partners does not change the bits).
  FRUGAL_DEVICE void merge(const row_stats& o) {
    const float m = fmaxf(max, o.max);
    const float a = max == -INFINITY ? 0.0f : sum * expf(max - m), b = o.max == -INFINITY ? 0.0f : o.sum * expf(o.max - m);
    sum = a + b;
    max = m;
    sum_z += o.sum_z;
    if (o.has_positive) positive = o.positive, has_positive = 1;
    if (o.best > best || (o.best == best && o.best_col < best_col)) best = o.best, best_col = o.best_col;
  }
  FRUGAL_DEVICE row_stats from_lane(int lane_mask) const {
    row_stats o;
    o.max = shfl_xor(max, lane_mask);
    o.sum = shfl_xor(sum, lane_mask);
    o.sum_z = shfl_xor(sum_z, lane_mask);
    o.positive = shfl_xor(positive, lane_mask);
    o.best = shfl_xor(best, lane_mask);
    o.best_col = shfl_xor(best_col, lane_mask);
    o.has_positive = shfl_xor(has_positive, lane_mask);
    return o;
  }
};

struct infonce_problem {
  std::int64_t rows, cols, row_offset;
  int dim;
  float scale, smoothing;
  bool vector_loads;
};

// A block per 64 rows, over every 64-column tile: logits in registers, statistics per row.
template <class T>
__global__ void __launch_bounds__(similarity_tile<T>::threads)
    infonce_rows_kernel(const T* __restrict__ x, const T* __restrict__ y, infonce_problem p, float* __restrict__ row_lse,
                        float* __restrict__ row_loss, float* __restrict__ row_correct) {
  using Tile = similarity_tile<T>;
  using gemm = block_gemm<Tile>;
  __shared__ row_stats across_warps[Tile::warps_n][Tile::block_m];
  gemm block(*dynamic_shared<typename gemm::TempStorage>());
  const int lane = int(lane_index()), warp = int(linear_thread_index() / 32);
  const int g = lane / 4, t = lane % 4, wm = warp / Tile::warps_n, wn = warp % Tile::warps_n;
  const std::int64_t row0 = std::int64_t(blockIdx.x) * Tile::block_m;
  const int rows = int(p.rows - row0 < Tile::block_m ? p.rows - row0 : Tile::block_m);
  row_stats stats[Tile::mma_m][2];
  FRUGAL_UNROLL
  for (int mi = 0; mi < Tile::mma_m; ++mi) stats[mi][0] = stats[mi][1] = row_stats::empty();
  typename gemm::accumulators acc;
  for (std::int64_t col0 = 0; col0 < p.cols; col0 += Tile::block_n) {
    const int cols = int(p.cols - col0 < Tile::block_n ? p.cols - col0 : Tile::block_n);
    acc.clear();
    const typename gemm::operands op{x + row0 * p.dim, p.dim, rows, y + col0 * p.dim, p.dim, cols, p.dim, p.vector_loads};
    block.multiply(op, acc);
    FRUGAL_UNROLL
    for (int mi = 0; mi < Tile::mma_m; ++mi)
      FRUGAL_UNROLL
      for (int h = 0; h < 2; ++h) {
        const std::int64_t positive = p.row_offset + row0 + wm * Tile::warp_m + mi * 16 + g + 8 * h;
        FRUGAL_UNROLL
        for (int ni = 0; ni < Tile::mma_n; ++ni)
          FRUGAL_UNROLL
          for (int e = 0; e < 2; ++e) {
            const int c = wn * Tile::warp_n + ni * 8 + 2 * t + e;
            if (c < cols) stats[mi][h].add(p.scale * acc.f[mi][ni].x[2 * h + e], col0 + c, col0 + c == positive);
          }
      }
  }
  // The four lanes of a quad hold the same rows: butterflies over lanes 1 and 2 apart.
  FRUGAL_UNROLL
  for (int mi = 0; mi < Tile::mma_m; ++mi)
    FRUGAL_UNROLL
    for (int h = 0; h < 2; ++h)
      FRUGAL_UNROLL
      for (int m = 1; m <= 2; m *= 2) stats[mi][h].merge(stats[mi][h].from_lane(m));
  if (t == 0)
    FRUGAL_UNROLL
    for (int mi = 0; mi < Tile::mma_m; ++mi)
      FRUGAL_UNROLL
      for (int h = 0; h < 2; ++h) across_warps[wn][wm * Tile::warp_m + mi * 16 + g + 8 * h] = stats[mi][h];
  __syncthreads();
  // The warps sharing rows, merged in warp order; one thread per row writes.
  for (int r = int(threadIdx.x); r < rows; r += Tile::threads) {
    row_stats s = across_warps[0][r];
    FRUGAL_UNROLL
    for (int w = 1; w < Tile::warps_n; ++w) s.merge(across_warps[w][r]);
    const std::int64_t row = row0 + r;
    const float lse = s.max + logf(s.sum);
    if (row_lse) row_lse[row] = lse;
    row_loss[row] = lse - (1.0f - p.smoothing) * s.positive - p.smoothing * (s.sum_z / float(p.cols));
    row_correct[row] = s.best_col == p.row_offset + row ? 1.0f : 0.0f;
  }
}

inline constexpr int infonce_finish_threads = 256;

// The means, in a fixed order: each thread sums a strided share, then the block reduces.
template <int = 0>
__global__ void __launch_bounds__(infonce_finish_threads)
    infonce_finish_kernel(const float* __restrict__ row_loss, const float* __restrict__ row_correct, std::int64_t rows,
                          float* __restrict__ loss, float* __restrict__ accuracy) {
  __shared__ typename block_reduce<float, infonce_finish_threads>::TempStorage storage;
  float l = 0.0f, c = 0.0f;
  for (std::int64_t r = threadIdx.x; r < rows; r += infonce_finish_threads) l += row_loss[r], c += row_correct[r];
  l = block_reduce<float, infonce_finish_threads>(storage).sum(l);
  c = block_reduce<float, infonce_finish_threads>(storage).sum(c);
  if (threadIdx.x == 0) {
    *loss = rows > 0 ? l / float(rows) : 0.0f;
    if (accuracy) *accuracy = rows > 0 ? c / float(rows) : 0.0f;
  }
}

}  // namespace detail

//! InfoNCE forward, one direction: row i of X against every column of Y, its positive being
//! column so.row_offset + i (the rank offset of distributed training; row_offset + N <= M).
//! L = (1/N) sum_i [ LSE_j Z_ij - (1 - eps) Z_i,p(i) - (eps/M) sum_j Z_ij ],
//! Z = exp(clamped log_scale) X Y^T. bf16 or fp16 inputs with fp32 accumulation; fp32 inputs on
//! the tensor cores as tf32 (rounded to nearest). Two-phase workspace (2N floats). Two launches:
//! one pass over the N x M logits in 64 x 64 tiles, then the means. Bitwise reproducible.
//! Not built yet: fused normalisation (normalise the rows first; o.normalize is refused) and
//! the SigLIP bias (o.bias must be 0).
template <class T>
status infonce_forward(void* workspace, std::size_t& workspace_bytes, const T* rows, const T* cols, const infonce_outputs& out,
                       const contrast_shape& shape, const logit_options& o = {}, const softmax_options& so = {},
                       cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::contrast::infonce_forward: T must be float, __half or __nv_bfloat16");
  const std::int64_t n = shape.rows, m = shape.cols;
  if (n < 0 || m < 0 || shape.dim < 1 || (n > 0 && m < 1) || n > (std::int64_t(1) << 40) || m > (std::int64_t(1) << 40))
    return status::invalid("frugal::contrast::infonce_forward: rows >= 0, cols >= 1 (when rows > 0), dim >= 1");
  const std::size_t needed = std::size_t(2 * (n > 0 ? n : 1)) * sizeof(float) + 15;
  if (workspace == nullptr) {
    workspace_bytes = needed;
    return status{};
  }
  if (workspace_bytes < needed) return status::invalid("frugal::contrast::infonce_forward: workspace_bytes is smaller than the size query returned");
  if (so.row_offset < 0 || so.row_offset + n > m)
    return status::invalid("frugal::contrast::infonce_forward: the positives row_offset + i must be columns (0 <= row_offset, row_offset + rows <= cols)");
  if (!(so.label_smoothing >= 0.0f && so.label_smoothing < 1.0f))
    return status::invalid("frugal::contrast::infonce_forward: label_smoothing must be in [0, 1)");
  if (!std::isfinite(o.log_scale) || !std::isfinite(o.min_log_scale) || !std::isfinite(o.max_log_scale) || o.min_log_scale > o.max_log_scale)
    return status::invalid("frugal::contrast::infonce_forward: log_scale and its bounds must be finite, min <= max");
  if (o.normalize) return status::unsupported("frugal::contrast::infonce_forward: fused normalisation is not built yet (normalise the rows first)");
  if (o.bias != 0.0f) return status::invalid("frugal::contrast::infonce_forward: the bias is SigLIP's; InfoNCE takes none");
  if (!out.loss || (n > 0 && (!rows || !cols))) return status::invalid("frugal::contrast::infonce_forward: loss, rows and cols must not be null");
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(out.loss, 1), byte_range(out.row_lse, n), byte_range(out.row_loss, n),
                                                         byte_range(out.accuracy, 1)),
                                  frugal::detail::ranges(byte_range(rows, n * shape.dim), byte_range(cols, m * shape.dim),
                                                         byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(needed)))))
    return status::invalid("frugal::contrast::infonce_forward: the outputs must not overlap each other, the inputs or the workspace");
  auto* scratch = reinterpret_cast<float*>(static_cast<unsigned char*>(workspace) + (16 - reinterpret_cast<std::uintptr_t>(workspace) % 16) % 16);
  float* row_loss = out.row_loss ? out.row_loss : scratch;
  float* row_correct = scratch + (n > 0 ? n : 1);
  using Tile = detail::similarity_tile<T>;
  if (n > 0) {
    detail::infonce_problem p;
    p.rows = n;
    p.cols = m;
    p.row_offset = so.row_offset;
    p.dim = shape.dim;
    p.scale = std::exp(clamp_log_scale(o).value);
    p.smoothing = so.label_smoothing;
    p.vector_loads = shape.dim % Tile::chunk_elements == 0 && is_aligned(rows, 16) && is_aligned(cols, 16);
    const auto kernel = detail::infonce_rows_kernel<T>;
    FRUGAL_TRY(allow_dynamic_shared(kernel, Tile::shared_bytes));
    const std::int64_t blocks = (n + Tile::block_m - 1) / Tile::block_m;
    if (blocks > INT32_MAX) return status::invalid("frugal::contrast::infonce_forward: too many rows");
    FRUGAL_TRY(launch(kernel, launch_config{dim3(unsigned(blocks)), dim3(Tile::threads), std::size_t(Tile::shared_bytes), stream}, rows,
                      cols, p, out.row_lse, row_loss, row_correct));
  }
  return launch(detail::infonce_finish_kernel<>, launch_config{dim3(1), dim3(detail::infonce_finish_threads), 0, stream},
                static_cast<const float*>(row_loss), static_cast<const float*>(row_correct), n, out.loss, out.accuracy);
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

namespace detail {
template <int = 0>
__global__ void mean_of_two_kernel(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out) {
  *out = 0.5f * (*a + *b);
}
}  // namespace detail

//! CLIP's symmetric loss: the mean of InfoNCE from X to Y (rows of Z = s X Y^T) and from Y to X
//! (its columns), X and Y [N, D] paired row by row. Two passes over the logits (infonce_forward
//! each way: the column statistics of Z are the row statistics of Z^T), O(N) memory, then the
//! mean. Same options, types and rules as infonce_forward; the rank offset does not apply (each
//! direction of a distributed CLIP is its own infonce_forward call). Two-phase workspace.
template <class T>
status clip_forward(void* workspace, std::size_t& workspace_bytes, const T* x, const T* y, const clip_outputs& out, std::int64_t n, int dim,
                    const logit_options& o = {}, const softmax_options& so = {}, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::contrast::clip_forward: T must be float, __half or __nv_bfloat16");
  if (so.row_offset != 0) return status::invalid("frugal::contrast::clip_forward: row_offset does not apply (use infonce_forward per direction)");
  const contrast_shape shape{n, n, dim};
  std::size_t one = 0;
  FRUGAL_TRY(infonce_forward(nullptr, one, x, y, infonce_outputs{}, shape, o, so, stream));
  one = (one + 15) / 16 * 16;
  const std::size_t needed = one + 2 * 16 + 15;  // the direction's workspace, then its two losses
  if (workspace == nullptr) {
    workspace_bytes = needed;
    return status{};
  }
  if (workspace_bytes < needed) return status::invalid("frugal::contrast::clip_forward: workspace_bytes is smaller than the size query returned");
  if (!out.loss) return status::invalid("frugal::contrast::clip_forward: loss must not be null");
  using frugal::detail::byte_range;
  if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(out.loss, 1), byte_range(out.row_lse, n), byte_range(out.col_lse, n),
                                                         byte_range(out.row_accuracy, 1), byte_range(out.col_accuracy, 1)),
                                  frugal::detail::ranges(byte_range(static_cast<const unsigned char*>(workspace), std::int64_t(needed)))))
    return status::invalid("frugal::contrast::clip_forward: the outputs must not overlap the workspace");
  auto* base = static_cast<unsigned char*>(workspace) + (16 - reinterpret_cast<std::uintptr_t>(workspace) % 16) % 16;
  auto* losses = reinterpret_cast<float*>(base + one);  // [0]: X to Y, [4]: Y to X (16 bytes apart)
  std::size_t bytes = one;
  FRUGAL_TRY(infonce_forward(base, bytes, x, y, infonce_outputs{losses, out.row_lse, nullptr, out.row_accuracy}, shape, o, so, stream));
  FRUGAL_TRY(infonce_forward(base, bytes, y, x, infonce_outputs{losses + 4, out.col_lse, nullptr, out.col_accuracy}, shape, o, so, stream));
  return launch(detail::mean_of_two_kernel<>, launch_config{dim3(1), dim3(1), 0, stream}, static_cast<const float*>(losses),
                static_cast<const float*>(losses + 4), out.loss);
}

}  // namespace frugal::contrast

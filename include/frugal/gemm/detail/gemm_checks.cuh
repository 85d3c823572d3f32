// SPDX-License-Identifier: Apache-2.0
// Argument checks shared by frugal::gemm and frugal::grouped_gemm, and the launch of a GEMM
// kernel with the tile the problem asks for. Host code.
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/byte_range.cuh>
#include <frugal/core/vector_io.cuh>
#include <frugal/gemm/gemm_config.cuh>

#include <cstdint>
#include <type_traits>

// A static message with the entry point's name in front.
#define FRUGAL_GEMM_MESSAGE(grouped, text) ((grouped) ? "frugal::grouped_gemm: " text : "frugal::gemm: " text)

namespace frugal::detail {

// Checks the operands of D[rows x out_cols] = epilogue(A[rows x k] B[k x n]) where B repeats
// `b_groups` times `b_stride` elements apart. Returns ok, or why not.
template <class T, class Out, class Epilogue>
status check_gemm_operands(bool grouped, const matrix_ref<const T>& a, const matrix_ref<const T>& b, const matrix_ref<Out>& d,
                           std::int64_t rows, std::int64_t n, std::int64_t k, int b_groups, std::int64_t b_stride,
                           const Epilogue& epilogue) {
  if (rows < 0 || n < 0 || k < 0) return status::invalid(FRUGAL_GEMM_MESSAGE(grouped, "M (rows), N and K must be >= 0"));
  if (rows > INT32_MAX || n > INT32_MAX) return status::invalid(FRUGAL_GEMM_MESSAGE(grouped, "M (rows) and N must fit in int32"));
  if (a.order != matrix_order::row_major) return status::invalid(FRUGAL_GEMM_MESSAGE(grouped, "A must be row-major"));
  if (d.order != matrix_order::row_major) return status::invalid(FRUGAL_GEMM_MESSAGE(grouped, "D must be row-major"));
  if (const char* why = epilogue_invalid(epilogue, rows, n, 0)) return status::invalid(why);
  const std::int64_t out_cols = epilogue_output_columns<Epilogue>(n);
  const bool b_col = b.order == matrix_order::col_major;
  if (rows == 0 || n == 0) return status{};
  if (d.data == nullptr) return status::invalid(FRUGAL_GEMM_MESSAGE(grouped, "D is null"));
  if (d.ld < out_cols) return status::invalid(FRUGAL_GEMM_MESSAGE(grouped, "ldd must be >= the columns of D"));
  if (!is_aligned(d.data, sizeof(Out))) return status::misaligned(FRUGAL_GEMM_MESSAGE(grouped, "D is not aligned to its element size"));
  if (k > 0) {
    if (a.data == nullptr || b.data == nullptr) return status::invalid(FRUGAL_GEMM_MESSAGE(grouped, "A or B is null"));
    if (a.ld < k) return status::invalid(FRUGAL_GEMM_MESSAGE(grouped, "lda must be >= K"));
    if (b.ld < (b_col ? k : n)) return status::invalid(FRUGAL_GEMM_MESSAGE(grouped, "ldb must be >= K (col-major B) or N (row-major B)"));
    if (!is_aligned(a.data, sizeof(T)) || !is_aligned(b.data, sizeof(T)))
      return status::misaligned(FRUGAL_GEMM_MESSAGE(grouped, "A or B is not aligned to its element size"));
  }
  if (b_stride < 0) return status::invalid(FRUGAL_GEMM_MESSAGE(grouped, "b_stride must be >= 0"));
  // D written over A or B would change operands other blocks still read.
  const byte_range d_range(d.data, rows, out_cols, d.ld);
  const byte_range a_range(a.data, rows, k, a.ld);
  const std::int64_t b_rows = b_col ? n : k, b_cols = b_col ? k : n;
  const std::int64_t stride = b_stride > 0 ? b_stride : n * k;
  byte_range b_range(b.data, b_rows, b_cols, b.ld);
  if (b_range.first < b_range.last) b_range.last += std::uintptr_t((b_groups - 1) * stride * std::int64_t(sizeof(T)));
  if (d_range.overlaps(a_range) || d_range.overlaps(b_range))
    return status::invalid(FRUGAL_GEMM_MESSAGE(grouped, "D overlaps A or B (the product cannot be written in place)"));
  return status{};
}

// cp.async moves whole 16-byte chunks: both operands 16-byte aligned, every row a multiple of 16 bytes.
template <class T>
bool gemm_vector_loads(const matrix_ref<const T>& a, const matrix_ref<const T>& b) {
  return is_aligned(a.data, 16) && is_aligned(b.data, 16) && (a.ld * std::int64_t(sizeof(T))) % 16 == 0 &&
         (b.ld * std::int64_t(sizeof(T))) % 16 == 0;
}

}  // namespace frugal::detail

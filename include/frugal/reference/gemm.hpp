// SPDX-License-Identifier: Apache-2.0
//! @file
//! Host references for frugal::gemm and frugal::grouped_gemm, written for clarity: every output
//! is a dot product in double of the operands as the tensor cores see them (fp32 operands rounded
//! to tf32 by to_tf32), rounded to fp32, passed through the same epilogue, rounded to D's type.
//! Exact where the fp32 sums are (small integers); otherwise the GPU's fp32 accumulation differs
//! by at most a few units of K * 2^-24 * sum |a b|.
#pragma once

#include <frugal/core/numeric.cuh>
#include <frugal/gemm/gemm_config.cuh>
#include <frugal/tensor_core/fragment.cuh>

#include <cstdint>
#include <type_traits>

namespace frugal::reference {

namespace detail {
template <class T>
double gemm_operand(T x) {
  if constexpr (std::is_same_v<T, float>) return double(to_tf32(x));
  else return double(to_float(x));
}
template <class T>
T at(const matrix_ref<const T>& m, std::int64_t r, std::int64_t c) {
  return m.order == matrix_order::row_major ? m.data[r * m.ld + c] : m.data[c * m.ld + r];
}
// Writes row `row` of D from row `row` of A and B, through the epilogue (group `group`).
template <class T, class Out, class Epilogue>
void gemm_row(const matrix_ref<const T>& a, const matrix_ref<const T>& b, const matrix_ref<Out>& d, std::int64_t row, std::int64_t n,
              std::int64_t k, const Epilogue& epilogue, int group) {
  auto dot = [&](std::int64_t col) {
    double s = 0.0;
    for (std::int64_t i = 0; i < k; ++i) s += gemm_operand(at(a, row, i)) * gemm_operand(at(b, i, col));
    return float(s);
  };
  for (std::int64_t col = 0; col < n; ++col) {
    if constexpr (is_gated_epilogue_v<Epilogue>) {
      if (col % 2 == 0) d.data[row * d.ld + col / 2] = from_float<Out>(epilogue(dot(col), dot(col + 1), col, group));
    } else {
      d.data[row * d.ld + col] = from_float<Out>(epilogue(dot(col), row, col, group));
    }
  }
}
}  // namespace detail

//! D = epilogue(A B) for A [m, k] (row-major), B [k, n] (either order), D [m, n] row-major.
template <class T, class Out, class Epilogue>
void gemm(matrix_ref<const T> a, matrix_ref<const T> b, matrix_ref<Out> d, std::int64_t m, std::int64_t n, std::int64_t k,
          const Epilogue& epilogue) {
  for (std::int64_t row = 0; row < m; ++row) detail::gemm_row(a, b, d, row, n, k, epilogue, 0);
}

//! The grouped product over host copies of the groups' offsets / counts (gemm_groups' rules,
//! clipping included): rows no group covers are left as they are.
template <class T, class Out, class OffsetT, class Epilogue>
void grouped_gemm(matrix_ref<const T> a, matrix_ref<const T> b, const OffsetT* offsets, const std::int32_t* counts,
                  std::int64_t capacity, int groups, std::int64_t rows, std::int64_t b_stride, matrix_ref<Out> d, std::int64_t n,
                  std::int64_t k, const Epilogue& epilogue) {
  const std::int64_t stride = b_stride > 0 ? b_stride : n * k;
  for (int g = 0; g < groups; ++g) {
    std::int64_t start, count;
    if (offsets) {
      start = std::int64_t(offsets[g]);
      count = std::int64_t(offsets[g + 1]) - start;
      if (counts && counts[g] < count) count = counts[g];
    } else {
      start = g * capacity;
      count = counts[g] < capacity ? counts[g] : capacity;
    }
    if (start < 0 || start >= rows || count < 0) count = 0;
    else if (count > rows - start) count = rows - start;
    const matrix_ref<const T> bg{b.data + g * stride, b.ld, b.order};
    for (std::int64_t row = start; row < start + count; ++row) detail::gemm_row(a, bg, d, row, n, k, epilogue, g);
  }
}

}  // namespace frugal::reference

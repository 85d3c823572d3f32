// SPDX-License-Identifier: Apache-2.0
//! @file
//! Transposable N:4 masks at thread level (plain C++, compiles everywhere): a 4 x 4 block keeps
//! N in every row and every column, so that W and W^T are both N:4 (the backward dX = dY W can
//! then run sparse too). The best block pattern is found by trying every valid one.
#pragma once

#include <frugal/config.cuh>

#include <cmath>
#include <cstdint>

namespace frugal::sparse {

namespace detail {
FRUGAL_HOST_DEVICE constexpr int bits4(unsigned m) { return int((m & 1u) + ((m >> 1) & 1u) + ((m >> 2) & 1u) + ((m >> 3) & 1u)); }
//! The k-th 4-bit mask with N bits set, in ascending numeric order.
template <int N>
FRUGAL_HOST_DEVICE constexpr unsigned choice4(int k) {
  int seen = 0;
  for (unsigned m = 0; m < 16; ++m)
    if (bits4(m) == N) {
      if (seen == k) return m;
      ++seen;
    }
  return 0;
}
template <int N>
inline constexpr int choices4 = N == 2 ? 6 : 4;
//! A 4-bit mask spread to four 4-bit counters (column j's counter in bits 4j .. 4j + 3).
FRUGAL_HOST_DEVICE constexpr unsigned spread4(unsigned m) { return (m & 1u) | ((m >> 1) & 1u) << 4 | ((m >> 2) & 1u) << 8 | ((m >> 3) & 1u) << 12; }
// The last row of a block whose first three rows are a, b, c: the columns still one short of N,
// or 16 (none) if the columns cannot all reach N.
template <int N>
FRUGAL_HOST_DEVICE constexpr unsigned last_row4(unsigned a, unsigned b, unsigned c) {
  const unsigned counts = spread4(a) + spread4(b) + spread4(c);
  unsigned last = 0;
  for (int j = 0; j < 4; ++j) {
    const unsigned n = (counts >> (4 * j)) & 15u;
    if (n + 1 == unsigned(N)) last |= 1u << j;
    else if (n != unsigned(N)) return 16u;
  }
  return bits4(last) == N ? last : 16u;
}
}  // namespace detail

//! The transposable N:4 pattern of a 4 x 4 block (score[4 r + c], row-major) that keeps the
//! largest sum of scores: a 16-bit mask, bit 4 r + c. Every pattern with N per row and column is
//! tried (24 for N = 1 or 3, 90 for N = 2); a pattern's sum adds its rows in order, each row's
//! kept scores by column; ties keep the first pattern in the order (row 0's choice, row 1's,
//! row 2's), a row's choices ordered as 4-bit numbers. The loops unroll into straight code over
//! the valid patterns only. Scores must not be NaN (callers report it).
template <int N>
FRUGAL_HOST_DEVICE unsigned select_block4(const float (&score)[16]) {
  static_assert(N >= 1 && N <= 3, "frugal::sparse::select_block4: N must be 1, 2 or 3");
  constexpr int C = detail::choices4<N>;
  float row_sum[4][C];
  FRUGAL_UNROLL
  for (int r = 0; r < 4; ++r)
    FRUGAL_UNROLL
    for (int k = 0; k < C; ++k) {
      float s = 0.0f;
      bool first = true;
      FRUGAL_UNROLL
      for (int j = 0; j < 4; ++j)
        if ((detail::choice4<N>(k) >> j) & 1u) {
          s = first ? score[4 * r + j] : s + score[4 * r + j];
          first = false;
        }
      row_sum[r][k] = s;
    }
  float best = -INFINITY;
  unsigned best_mask = 0;
  FRUGAL_UNROLL
  for (int a = 0; a < C; ++a)
    FRUGAL_UNROLL
    for (int b = 0; b < C; ++b)
      FRUGAL_UNROLL
      for (int c = 0; c < C; ++c) {
        const unsigned ma = detail::choice4<N>(a), mb = detail::choice4<N>(b), mc = detail::choice4<N>(c);
        const unsigned md = detail::last_row4<N>(ma, mb, mc);
        if (md == 16u) continue;
        int d = 0;
        FRUGAL_UNROLL
        for (int k = 0; k < C; ++k) d = detail::choice4<N>(k) == md ? k : d;
        const float total = ((row_sum[0][a] + row_sum[1][b]) + row_sum[2][c]) + row_sum[3][d];
        if (total > best) {
          best = total;
          best_mask = ma | mb << 4 | mc << 8 | md << 12;
        }
      }
  return best_mask;
}

}  // namespace frugal::sparse

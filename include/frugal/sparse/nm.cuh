// SPDX-License-Identifier: Apache-2.0
//! @file
//! N:M structured sparsity at thread level (plain C++, compiles everywhere): the pattern
//! nm<N, M>, the canonical compressed format's sizes and bit packing, and the selection of the
//! kept positions of one window. docs/sparse.md states the format byte by byte.
//!
//! The sparse axis is the reduction dimension K of a weight W [rows, K] (a linear layer's
//! weight): every window of M consecutive elements of a row keeps N. K is padded with zeros to a
//! multiple of M.
#pragma once

#include <frugal/config.cuh>

#include <cmath>
#include <cstdint>

namespace frugal::sparse {

//! Which way the windows of a mask run in a [rows, cols] matrix: along each row (the K of a
//! W [rows, K]) or down each column (a weight stored [K, rows]).
enum class nm_axis { rows, columns };

//! The pattern: N kept of every M consecutive elements along K.
template <int N, int M>
struct nm {
  static_assert(M == 4 || M == 8 || M == 16, "frugal::sparse::nm: M must be 4, 8 or 16");
  static_assert(N >= 1 && N < M, "frugal::sparse::nm: N must be in [1, M)");
  static constexpr int n = N;
  static constexpr int m = M;
  //! Bits of one kept value's index in its window: ceil(log2 M).
  static constexpr int index_bits = M == 4 ? 2 : M == 8 ? 3 : 4;
  static constexpr int window_bits = N * index_bits;

  //! Windows of a row of K elements (K padded with zeros to a multiple of M).
  FRUGAL_HOST_DEVICE static constexpr std::int64_t windows(std::int64_t k) { return (k + M - 1) / M; }
  //! Kept values of a row: the values matrix is [rows, values_per_row(K)].
  FRUGAL_HOST_DEVICE static constexpr std::int64_t values_per_row(std::int64_t k) { return windows(k) * N; }
  //! 32-bit words of a row's packed indices: the index matrix is [rows, index_words_per_row(K)].
  FRUGAL_HOST_DEVICE static constexpr std::int64_t index_words_per_row(std::int64_t k) {
    return (values_per_row(k) * index_bits + 31) / 32;
  }
};

template <class T>
inline constexpr bool is_nm_v = false;
template <int N, int M>
inline constexpr bool is_nm_v<nm<N, M>> = true;

//! Reads kept value j's index (0 .. M-1 within its window) from a row's packed indices: bits
//! [j b, j b + b) of the row's little-endian bit stream (bit i of the stream is bit i % 32 of
//! word i / 32), b = Pattern::index_bits. For 2:4 a window's two indices form the nibble
//! idx0 | idx1 << 2 of the sparse tensor cores, window w at bits [4w, 4w + 4).
template <class Pattern>
FRUGAL_HOST_DEVICE unsigned packed_index(const std::uint32_t* row_words, std::int64_t j) {
  constexpr int b = Pattern::index_bits;
  const std::int64_t bit = j * b;
  const std::int64_t word = bit / 32;
  const int shift = int(bit % 32);
  std::uint64_t two = row_words[word];
  if (shift + b > 32) two |= std::uint64_t(row_words[word + 1]) << 32;  // straddles a word (3-bit indices)
  return unsigned(two >> shift) & ((1u << b) - 1u);
}

//! Writes kept value j's index into a row's packed indices (the other bits are kept).
template <class Pattern>
FRUGAL_HOST_DEVICE void set_packed_index(std::uint32_t* row_words, std::int64_t j, unsigned index) {
  constexpr int b = Pattern::index_bits;
  const std::int64_t bit = j * b;
  const std::int64_t word = bit / 32;
  const int shift = int(bit % 32);
  const std::uint64_t mask = ((std::uint64_t(1) << b) - 1u) << shift;
  const std::uint64_t value = std::uint64_t(index) << shift;
  row_words[word] = std::uint32_t((row_words[word] & ~mask) | (value & mask));
  if (shift + b > 32)
    row_words[word + 1] = std::uint32_t((row_words[word + 1] & ~(mask >> 32)) | ((value & mask) >> 32));
}

//! The N positions of a window of M scores to keep, as a bit mask: the N largest scores, ties to
//! the lower position. Position i is kept when fewer than N positions beat it (a larger score, or
//! an equal one at a lower position): M x M compares, no branches, the same on every device.
//! Callers pass magnitudes |w| (fabsf makes -0.0 a zero) or a user score; NaN must be handled
//! before (it compares false both ways: the caller reports it).
template <int N, int M>
FRUGAL_HOST_DEVICE unsigned select_window(const float (&score)[M]) {
  unsigned kept = 0;
  FRUGAL_UNROLL
  for (int i = 0; i < M; ++i) {
    int beaten_by = 0;
    FRUGAL_UNROLL
    for (int j = 0; j < M; ++j) beaten_by += (score[j] > score[i]) || (score[j] == score[i] && j < i);
    kept |= unsigned(beaten_by < N) << i;
  }
  return kept;
}

//! Whether any of a window's scores is NaN, and the first such position (or -1).
template <int M>
FRUGAL_HOST_DEVICE int first_nan(const float (&score)[M]) {
  int first = -1;
  FRUGAL_UNROLL
  for (int i = M - 1; i >= 0; --i) first = score[i] != score[i] ? i : first;
  return first;
}

//! Keeps exactly N positions given `nonzero` (a bit mask of the window's non-zero elements, at
//! most N of them): the non-zeros and then the lowest zero positions, so that a window with
//! fewer non-zeros still names N distinct positions (never an equal-index nibble for 2:4).
template <int N, int M>
FRUGAL_HOST_DEVICE unsigned fill_window(unsigned nonzero) {
  unsigned kept = nonzero;
  int count = 0;
  FRUGAL_UNROLL
  for (int i = 0; i < M; ++i) count += int((nonzero >> i) & 1u);
  FRUGAL_UNROLL
  for (int i = 0; i < M; ++i) {
    const bool take = !((kept >> i) & 1u) && count < N;
    kept |= unsigned(take) << i;
    count += take;
  }
  return kept;
}

//! Where metadata element (r, c) of a [rows, K / 16] int16 matrix (element (r, c) = the four 2:4
//! nibbles of row r, columns 16c .. 16c + 15, chunk 0 in the low bits: canonical 2:4 indices
//! viewed as 16-bit words) goes in CUTLASS's reordered layout (host_reorder.h's reorder_meta:
//! rows interleaved in groups of 32, 2 x 2 blocks swapped, then ColumnMajorInterleaved<2>), as
//! PyTorch's semi-structured tensors store it. rows a multiple of 32, K a multiple of 32.
FRUGAL_HOST_DEVICE std::int64_t cutlass_meta_offset(std::int64_t r, std::int64_t c, std::int64_t rows) {
  std::int64_t dr = r / 32 * 32 + (r % 8) * 4 + (r % 32) / 8, dc = c;
  if (dr % 2 == 0 && dc % 2 == 1) ++dr, --dc;  // the 2 x 2 blocks: top right <-> bottom left
  else if (dr % 2 == 1 && dc % 2 == 0) --dr, ++dc;
  return (dc / 2) * rows * 2 + dr * 2 + dc % 2;  // column-major, columns interleaved by 2
}

//! Puts `value` at the front of a register queue (the rest move back one, the last falls off)
//! when `push`. Every index is a compile-time constant, so the queue stays in registers (a
//! select on "i == runtime position" would let the compiler index the array at run time, in
//! local memory).
template <int N, class T>
FRUGAL_HOST_DEVICE void push_front(T (&queue)[N], T value, bool push) {
  FRUGAL_UNROLL
  for (int j = N - 1; j > 0; --j) queue[j] = push ? queue[j - 1] : queue[j];
  queue[0] = push ? value : queue[0];
}
//! Takes the front of a register queue off (the rest move forward) when `pop`.
template <int N, class T>
FRUGAL_HOST_DEVICE void pop_front(T (&queue)[N], bool pop) {
  FRUGAL_UNROLL
  for (int j = 0; j + 1 < N; ++j) queue[j] = pop ? queue[j + 1] : queue[j];
}

//! The kept positions of a window mask in ascending order: positions[n] = the n-th set bit.
template <int N, int M>
FRUGAL_HOST_DEVICE void kept_positions(unsigned kept, int (&positions)[N]) {
  FRUGAL_UNROLL
  for (int n = 0; n < N; ++n) positions[n] = 0;
  FRUGAL_UNROLL
  for (int i = M - 1; i >= 0; --i) push_front(positions, i, ((kept >> i) & 1u) != 0u);
}

//! The values at the kept positions, ascending; `real` (a subset of `kept`) says which hold a
//! value of the window, the others give 0 (fill positions, padding).
template <int N, int M>
FRUGAL_HOST_DEVICE void kept_values(unsigned kept, unsigned real, const float (&window)[M], float (&values)[N]) {
  FRUGAL_UNROLL
  for (int n = 0; n < N; ++n) values[n] = 0.0f;
  FRUGAL_UNROLL
  for (int i = M - 1; i >= 0; --i) push_front(values, ((real >> i) & 1u) ? window[i] : 0.0f, ((kept >> i) & 1u) != 0u);
}

//! The dense window from its N values at the positions of `kept` (ascending), zeros elsewhere.
template <int N, int M>
FRUGAL_HOST_DEVICE void expand_window(unsigned kept, const float (&values)[N], float (&window)[M]) {
  float queue[N];
  FRUGAL_UNROLL
  for (int n = 0; n < N; ++n) queue[n] = values[n];
  FRUGAL_UNROLL
  for (int i = 0; i < M; ++i) {
    const bool here = ((kept >> i) & 1u) != 0u;
    window[i] = here ? queue[0] : 0.0f;
    pop_front(queue, here);
  }
}

//! What a mask, compression or decompression pass found wrong, written by the device
//! (atomically: counts add, first positions take the minimum) and by the references; a valid
//! input leaves every count 0 and every position `none`. Positions are flat: row * cols + col of
//! the input matrix (for a window, its first element).
struct nm_report {
  static constexpr unsigned long long none = ~0ull;
  unsigned long long nan_count = 0;          //!< NaN scores: their windows keep nothing (an error)
  unsigned long long first_nan = none;
  unsigned long long overfull_windows = 0;   //!< windows with more than N non-zeros (compress without a mask)
  unsigned long long first_overfull = none;
  unsigned long long most_nonzeros = 0;      //!< the largest non-zero count of an overfull window
  unsigned long long invalid_windows = 0;    //!< a given mask or indices that do not name N distinct positions
  unsigned long long first_invalid = none;
  FRUGAL_HOST_DEVICE bool ok() const { return nan_count == 0 && overfull_windows == 0 && invalid_windows == 0; }
};

}  // namespace frugal::sparse

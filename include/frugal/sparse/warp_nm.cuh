// SPDX-License-Identifier: Apache-2.0
//! @file
//! Warp level N:M pieces for your own kernels: a warp owns 32 consecutive windows of a row (one
//! per lane), loads them, chooses what to keep (sparse/nm.cuh), writes the kept values and
//! assembles the packed indices of its 32 windows with one OR-reduction per 32-bit word; the
//! report of what was wrong goes through atomics. Host SIMT runs them.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/sparse/warp_nm.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/vector_io.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/sparse/nm.cuh>

#include <cstdint>

namespace frugal::sparse {

//! Loads `count` (<= M) elements p[0], p[stride], ... as fp32, `pad` for the rest; one vector
//! access per 16 bytes when `vector` (stride 1, count M, p aligned to the access).
template <int M, class T>
FRUGAL_DEVICE void load_window(const T* p, std::int64_t stride, int count, bool vector, float pad, float (&out)[M]) {
  if (vector) {
    load_floats<M>(p, out);
    return;
  }
  FRUGAL_UNROLL
  for (int i = 0; i < M; ++i) out[i] = i < count ? to_float(p[i * stride]) : pad;
}

//! Each lane holds the kept positions (a bit mask, N set) of window first_window + lane of a row
//! whose packed indices are `row_words` (`words` of them); the warp writes the indices of its 32
//! windows. first_window is a multiple of 32, so the warp's bits start on a word boundary. Lanes
//! past the row pass 0 (zero bits: the row's last word then holds zeros after its windows).
//! Every lane of the warp must call it.
template <class Pattern>
FRUGAL_DEVICE void warp_store_indices(unsigned kept, std::uint32_t* row_words, std::int64_t first_window, std::int64_t words) {
  constexpr int M = Pattern::m, B = Pattern::index_bits, WB = Pattern::window_bits;
  // This window's N indices, WB <= 60 bits, the lowest position in the lowest bits: push from
  // the highest position down.
  std::uint64_t bits = 0;
  FRUGAL_UNROLL
  for (int i = M - 1; i >= 0; --i) bits = ((kept >> i) & 1u) ? (bits << B) | unsigned(i) : bits;
  const int lane = int(lane_index());
  const std::int64_t first_word = first_window / 32 * WB;
  // Not unrolled: nothing in the body is indexed by j, and 15:16 has 60 words.
  for (int j = 0; j < WB; ++j) {  // the warp's 32 * WB bits are WB whole words
    const int d = lane * WB - 32 * j;  // where this lane's bit 0 falls in word j
    const std::uint32_t piece = d >= 32 || d <= -64 ? 0u : d >= 0 ? std::uint32_t(bits << d) : std::uint32_t(bits >> -d);
    const std::uint32_t word = warp_or(piece);
    if (lane == j % 32 && first_word + j < words) row_words[first_word + j] = word;
  }
}

namespace detail {
// A 64-bit key that orders (score descending, then flat position ascending): the largest key
// is the greedy's next pick. 0 never occurs for a real entry.
FRUGAL_DEVICE std::uint64_t greedy_key(float score, int flat) {
  const unsigned u = __float_as_uint(score);
  const unsigned ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return std::uint64_t(ordered) << 32 | (0xffffffffu - unsigned(flat));
}
FRUGAL_DEVICE int nibble(std::uint64_t packed, int i) { return int((packed >> (4 * i)) & 15u); }
}  // namespace detail

//! A transposable N:M mask of one M x M block (M = 8 or 16), by a warp: lane l holds the scores
//! of entries flat = l E .. l E + E - 1 (E = M * M / 32; row flat / M, column flat % M) and gets
//! back which of them are kept (bit e of the result). The greedy algorithm of docs/sparse.md:
//! take entries from the largest score down (ties: lower flat position) while their row and
//! column hold fewer than N; if that stalls with rows short, complete by augmenting paths (a
//! breadth-first search from the lowest short row over untaken then taken entries, lowest
//! indices first, to a short column; the path's entries flip). Every row and column ends with N.
//! Every lane of the warp must call it; scores must not be NaN.
template <int N, int M>
FRUGAL_DEVICE unsigned warp_transposable_greedy(const float (&score)[M * M / 32]) {
  static_assert(M == 8 || M == 16, "frugal::sparse::warp_transposable_greedy: M must be 8 or 16");
  constexpr int E = M * M / 32;
  const int lane = int(lane_index());
  unsigned taken = 0;
  std::uint64_t row_count = 0, col_count = 0;  // a 4-bit counter per row / column
  for (int pick = 0; pick < N * M; ++pick) {
    std::uint64_t best = 0;
    FRUGAL_UNROLL
    for (int e = 0; e < E; ++e) {
      const int flat = lane * E + e, r = flat / M, c = flat % M;
      const bool open = !((taken >> e) & 1u) && detail::nibble(row_count, r) < N && detail::nibble(col_count, c) < N;
      const std::uint64_t key = open ? detail::greedy_key(score[e], flat) : 0u;
      best = key > best ? key : best;
    }
    best = warp_max(best);
    if (best == 0u) break;  // stalled: no entry fits
    const int flat = int(0xffffffffu - unsigned(best & 0xffffffffu)), r = flat / M, c = flat % M;
    if (flat / E == lane) taken |= 1u << (flat % E);
    row_count += std::uint64_t(1) << (4 * r);
    col_count += std::uint64_t(1) << (4 * c);
  }
  auto short_lines = [](std::uint64_t count) {
    unsigned s = 0;
    for (int i = 0; i < M; ++i) s |= unsigned(detail::nibble(count, i) < N) << i;
    return s;
  };
  // Completion: each augmenting path adds one entry to a short row and a short column.
  for (unsigned short_rows = short_lines(row_count); short_rows != 0u; short_rows = short_lines(row_count)) {
    const int start = __ffs(int(short_rows)) - 1;
    const unsigned short_cols = short_lines(col_count);
    unsigned visited_rows = 1u << start, visited_cols = 0, frontier = 1u << start;
    std::uint64_t parent_of_col = 0, parent_of_row = 0;
    int end = -1;
    while (frontier != 0u && end < 0) {
      unsigned reach = 0;  // columns one untaken entry away from the frontier
      FRUGAL_UNROLL
      for (int e = 0; e < E; ++e) {
        const int flat = lane * E + e, r = flat / M, c = flat % M;
        if (!((taken >> e) & 1u) && ((frontier >> r) & 1u) && !((visited_cols >> c) & 1u)) reach |= 1u << c;
      }
      const unsigned new_cols = warp_or(reach);
      for (unsigned rest = new_cols; rest != 0u; rest &= rest - 1u) {
        const int c = __ffs(int(rest)) - 1;
        int lowest = 15;
        FRUGAL_UNROLL
        for (int e = 0; e < E; ++e) {
          const int flat = lane * E + e, r = flat / M;
          if (flat % M == c && !((taken >> e) & 1u) && ((frontier >> r) & 1u)) lowest = r < lowest ? r : lowest;
        }
        parent_of_col |= std::uint64_t(warp_min(lowest)) << (4 * c);
      }
      visited_cols |= new_cols;
      if (new_cols & short_cols) {
        end = __ffs(int(new_cols & short_cols)) - 1;
        break;
      }
      unsigned reach_rows = 0;  // rows one taken entry away from the new columns
      FRUGAL_UNROLL
      for (int e = 0; e < E; ++e) {
        const int flat = lane * E + e, r = flat / M, c = flat % M;
        if (((taken >> e) & 1u) && ((new_cols >> c) & 1u) && !((visited_rows >> r) & 1u)) reach_rows |= 1u << r;
      }
      const unsigned new_rows = warp_or(reach_rows);
      for (unsigned rest = new_rows; rest != 0u; rest &= rest - 1u) {
        const int r = __ffs(int(rest)) - 1;
        int lowest = 15;
        FRUGAL_UNROLL
        for (int e = 0; e < E; ++e) {
          const int flat = lane * E + e, c = flat % M;
          if (flat / M == r && ((taken >> e) & 1u) && ((new_cols >> c) & 1u)) lowest = c < lowest ? c : lowest;
        }
        parent_of_row |= std::uint64_t(warp_min(lowest)) << (4 * r);
      }
      visited_rows |= new_rows;
      frontier = new_rows;
    }
    if (end < 0) break;  // cannot happen for a complete bipartite block (a regular completion exists)
    // Flip the path back from the end column: untaken entries become taken and vice versa.
    for (int c = end;;) {
      const int r = detail::nibble(parent_of_col, c);
      if ((r * M + c) / E == lane) taken ^= 1u << ((r * M + c) % E);
      if (r == start) break;
      const int c2 = detail::nibble(parent_of_row, r);
      if ((r * M + c2) / E == lane) taken ^= 1u << ((r * M + c2) % E);
      c = c2;
    }
    row_count += std::uint64_t(1) << (4 * start);
    col_count += std::uint64_t(1) << (4 * end);
  }
  return taken;
}

//! Notes a problem in the report: one more, and the lowest position seen.
FRUGAL_DEVICE void report_problem(unsigned long long* count, unsigned long long* first, std::int64_t position) {
  atomicAdd(count, 1ull);
  atomicMin(first, static_cast<unsigned long long>(position));
}

}  // namespace frugal::sparse

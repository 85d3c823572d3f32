// SPDX-License-Identifier: Apache-2.0
//! @file
//! Host references for N:M sparsity, written for clarity: masks (magnitude or a user score,
//! along rows or columns), the canonical compressed format (compress with or without a mask,
//! decompress), the CUTLASS / PyTorch reordered 2:4 metadata, and transposable masks (2:4 by
//! trying every pattern, larger M by the greedy algorithm the device runs, and the exact optimum
//! by a min-cost flow, to measure the greedy). docs/sparse.md.
#pragma once

#include <frugal/core/numeric.cuh>
#include <frugal/sparse/nm.cuh>
#include <frugal/sparse/srste_math.cuh>
#include <frugal/sparse/transposable.cuh>

#include <algorithm>
#include <bitset>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace frugal::reference {

namespace detail {
inline void note(unsigned long long& count, unsigned long long& first, std::int64_t position) {
  ++count;
  first = std::min(first, static_cast<unsigned long long>(position));
}
}  // namespace detail

//! mask[r, c] = 1 where the N:M mask keeps (r, c). Windows of M run along each row (axis rows)
//! or down each column (axis columns); a line's last window is padded (padding never wins over
//! a real element). The score is |x| (magnitude) or x itself; ties keep the lower position; a
//! window holding a NaN is reported and left all zero.
template <class Pattern, class T>
void nm_mask(const T* x, std::int64_t ld, std::int64_t rows, std::int64_t cols, sparse::nm_axis axis, bool magnitude,
             std::uint8_t* mask, std::int64_t ld_mask, sparse::nm_report& report) {
  constexpr int N = Pattern::n, M = Pattern::m;
  const bool along_rows = axis == sparse::nm_axis::rows;
  const std::int64_t lines = along_rows ? rows : cols, length = along_rows ? cols : rows;
  for (std::int64_t line = 0; line < lines; ++line)
    for (std::int64_t w = 0; w < Pattern::windows(length); ++w) {
      float score[M];
      bool has_nan = false;
      for (int i = 0; i < M; ++i) {
        const std::int64_t p = w * M + i, r = along_rows ? line : p, c = along_rows ? p : line;
        if (p >= length) {
          score[i] = magnitude ? 0.0f : -INFINITY;  // padding: a zero weight, never ahead of a real tie
          continue;
        }
        const float v = to_float(x[r * ld + c]);
        score[i] = magnitude ? std::fabs(v) : v;
        if (std::isnan(v)) {
          has_nan = true;
          detail::note(report.nan_count, report.first_nan, r * cols + c);
        }
      }
      const unsigned kept = has_nan ? 0u : sparse::select_window<N, M>(score);
      for (int i = 0; i < M; ++i) {
        const std::int64_t p = w * M + i;
        if (p >= length) continue;
        mask[(along_rows ? line : p) * ld_mask + (along_rows ? p : line)] = std::uint8_t((kept >> i) & 1u);
      }
    }
}

//! The canonical compressed form of W [rows, K] (docs/sparse.md): values [rows, ld_values] (the N
//! kept values of each window, ascending position, as TV) and indices [rows, ld_indices] 32-bit
//! words (each kept value's position in its window, Pattern::index_bits bits, LSB first).
//! With a mask: exactly its positions (a window must keep min(N, its real positions); padding
//! fills the rest), else the window is reported invalid and written as zeros at positions
//! 0..N-1. Without a mask: the window's non-zeros (-0.0 is zero), then its lowest zero positions;
//! more than N non-zeros is reported (overfull, with the count) and written as zeros too.
template <class Pattern, class T, class TV>
void nm_compress(const T* w, std::int64_t ld, std::int64_t rows, std::int64_t k, const std::uint8_t* mask, std::int64_t ld_mask,
                 TV* values, std::int64_t ld_values, std::uint32_t* indices, std::int64_t ld_indices, sparse::nm_report& report) {
  constexpr int N = Pattern::n, M = Pattern::m;
  for (std::int64_t r = 0; r < rows; ++r) {
    std::uint32_t* row_words = indices + r * ld_indices;
    for (std::int64_t i = 0; i < Pattern::index_words_per_row(k); ++i) row_words[i] = 0u;
    for (std::int64_t win = 0; win < Pattern::windows(k); ++win) {
      unsigned chosen = 0, real = 0;
      int chosen_count = 0, real_count = 0;
      for (int i = 0; i < M; ++i) {
        const std::int64_t c = win * M + i;
        if (c >= k) continue;
        real |= 1u << i;
        ++real_count;
        const bool take = mask ? mask[r * ld_mask + c] != 0 : to_float(w[r * ld + c]) != 0.0f;
        chosen |= unsigned(take) << i;
        chosen_count += take;
      }
      const std::int64_t first = r * k + win * M;
      unsigned kept;
      if (mask && chosen_count != std::min(N, real_count)) {
        detail::note(report.invalid_windows, report.first_invalid, first);
        kept = (1u << N) - 1u;
        chosen = 0;  // written as zeros
      } else if (!mask && chosen_count > N) {
        detail::note(report.overfull_windows, report.first_overfull, first);
        report.most_nonzeros = std::max<unsigned long long>(report.most_nonzeros, unsigned(chosen_count));
        kept = (1u << N) - 1u;
        chosen = 0;
      } else {
        kept = sparse::fill_window<N, M>(chosen);
      }
      int positions[N];
      sparse::kept_positions<N, M>(kept, positions);
      for (int j = 0; j < N; ++j) {
        const std::int64_t c = win * M + positions[j];
        const bool real_value = ((chosen >> positions[j]) & 1u) && c < k;
        values[r * ld_values + win * N + j] = from_float<TV>(real_value ? to_float(w[r * ld + c]) : 0.0f);
        sparse::set_packed_index<Pattern>(row_words, win * N + j, unsigned(positions[j]));
      }
    }
  }
}

//! Magnitude pruning straight to the canonical form: each window keeps its N largest |w| (ties
//! to the lower position, -0.0 a zero) and `mask` (optional) records them. A window holding a
//! NaN is reported and written as zeros at positions 0..N-1 (its mask all zero).
template <class Pattern, class T, class TV>
void nm_prune(const T* w, std::int64_t ld, std::int64_t rows, std::int64_t k, TV* values, std::int64_t ld_values, std::uint32_t* indices,
              std::int64_t ld_indices, std::uint8_t* mask, std::int64_t ld_mask, sparse::nm_report& report) {
  std::vector<std::uint8_t> chosen(static_cast<std::size_t>(rows * k));
  nm_mask<Pattern>(w, ld, rows, k, sparse::nm_axis::rows, true, chosen.data(), k, report);
  sparse::nm_report ignored;  // a NaN window's empty mask is not a second error
  nm_compress<Pattern>(w, ld, rows, k, chosen.data(), k, values, ld_values, indices, ld_indices, ignored);
  if (mask)
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < k; ++c) mask[r * ld_mask + c] = chosen[std::size_t(r * k + c)];
}

//! The masked dense W [rows, K] from its canonical form. Windows whose indices are not strictly
//! ascending, or that hold a non-zero value at a padding position past K, are reported invalid
//! and left zero.
template <class Pattern, class TV, class T>
void nm_decompress(const TV* values, std::int64_t ld_values, const std::uint32_t* indices, std::int64_t ld_indices, std::int64_t rows,
                   std::int64_t k, T* dense, std::int64_t ld, sparse::nm_report& report) {
  constexpr int N = Pattern::n, M = Pattern::m;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < k; ++c) dense[r * ld + c] = from_float<T>(0.0f);
    for (std::int64_t win = 0; win < Pattern::windows(k); ++win) {
      int previous = -1;
      bool ascending = true;
      for (int j = 0; j < N; ++j) {
        const int p = int(sparse::packed_index<Pattern>(indices + r * ld_indices, win * N + j));
        const bool past_k = win * M + p >= k;
        ascending = ascending && p > previous && (!past_k || to_float(values[r * ld_values + win * N + j]) == 0.0f);
        previous = p;
      }
      if (!ascending) {
        detail::note(report.invalid_windows, report.first_invalid, r * k + win * M);
        continue;
      }
      for (int j = 0; j < N; ++j) {
        const std::int64_t c = win * M + sparse::packed_index<Pattern>(indices + r * ld_indices, win * N + j);
        if (c < k) dense[r * ld + c] = from_float<T>(to_float(values[r * ld_values + win * N + j]));
      }
    }
  }
}

// ---- transposable masks ---------------------------------------------------------------------------

//! The transposable N:4 mask of x [rows, cols] (sparse::nm_transposable_mask's rules: every
//! 4 x 4 block by select_block4, positions outside the matrix scoring -1, NaN blocks zero).
template <int N, class T>
void nm_transposable_mask4(const T* x, std::int64_t ld, std::int64_t rows, std::int64_t cols, std::uint8_t* mask, std::int64_t ld_mask,
                           sparse::nm_report& report) {
  for (std::int64_t r0 = 0; r0 < rows; r0 += 4)
    for (std::int64_t c0 = 0; c0 < cols; c0 += 4) {
      float score[16];
      bool nan = false;
      for (int i = 0; i < 16; ++i) {
        const std::int64_t r = r0 + i / 4, c = c0 + i % 4;
        const bool real = r < rows && c < cols;
        const float v = real ? to_float(x[r * ld + c]) : 0.0f;
        score[i] = real ? std::fabs(v) : -1.0f;
        if (real && std::isnan(v)) {
          nan = true;
          detail::note(report.nan_count, report.first_nan, r * cols + c);
        }
      }
      const unsigned kept = nan ? 0u : sparse::select_block4<N>(score);
      for (int i = 0; i < 16; ++i) {
        const std::int64_t r = r0 + i / 4, c = c0 + i % 4;
        if (r < rows && c < cols) mask[r * ld_mask + c] = std::uint8_t((kept >> i) & 1u);
      }
    }
}

//! The greedy transposable N:M pattern of one M x M block of scores (row-major), with the
//! rules of sparse::warp_transposable_greedy (largest score first, ties to the lower position,
//! completed by augmenting paths found breadth-first, lowest indices first). kept[r * M + c].
template <int N, int M>
std::vector<std::uint8_t> transposable_greedy_block(const float* score) {
  std::vector<std::uint8_t> kept(M * M, 0);
  int row[M] = {}, col[M] = {};
  for (int pick = 0; pick < N * M; ++pick) {
    int best = -1;
    for (int flat = 0; flat < M * M; ++flat)
      if (!kept[flat] && row[flat / M] < N && col[flat % M] < N && (best < 0 || score[flat] > score[best])) best = flat;
    if (best < 0) break;
    kept[best] = 1;
    ++row[best / M], ++col[best % M];
  }
  for (;;) {
    int start = -1;
    for (int r = 0; r < M && start < 0; ++r)
      if (row[r] < N) start = r;
    if (start < 0) break;
    std::vector<bool> short_col(M), visited_row(M), visited_col(M);
    for (int c = 0; c < M; ++c) short_col[c] = col[c] < N;
    std::vector<int> parent_of_col(M, -1), parent_of_row(M, -1), frontier = {start};
    visited_row[start] = true;
    int end = -1;
    while (!frontier.empty() && end < 0) {
      std::vector<int> new_cols;
      for (int c = 0; c < M; ++c) {
        if (visited_col[c]) continue;
        for (int r : frontier)  // frontier is ascending: the first hit is the lowest row
          if (!kept[r * M + c] && (parent_of_col[c] < 0 || r < parent_of_col[c])) parent_of_col[c] = r;
        if (parent_of_col[c] >= 0) new_cols.push_back(c);
      }
      for (int c : new_cols) visited_col[c] = true;
      for (int c : new_cols)
        if (short_col[c]) {
          end = c;
          break;
        }
      if (end >= 0) break;
      std::vector<int> new_rows;
      for (int r = 0; r < M; ++r) {
        if (visited_row[r]) continue;
        for (int c : new_cols)
          if (kept[r * M + c] && (parent_of_row[r] < 0 || c < parent_of_row[r])) parent_of_row[r] = c;
        if (parent_of_row[r] >= 0) new_rows.push_back(r);
      }
      for (int r : new_rows) visited_row[r] = true;
      frontier = new_rows;
    }
    if (end < 0) break;
    for (int c = end;;) {
      const int r = parent_of_col[c];
      kept[r * M + c] ^= 1;
      if (r == start) break;
      const int c2 = parent_of_row[r];
      kept[r * M + c2] ^= 1;
      c = c2;
    }
    ++row[start], ++col[end];
  }
  return kept;
}

//! The largest sum of scores any transposable N:M pattern of one M x M block can keep: a
//! min-cost flow (source -> row, capacity N; row -> column, capacity 1, cost -score; column ->
//! sink, capacity N), by successive shortest paths. For measuring the greedy.
inline double transposable_optimum(const float* score, int n, int m) {
  const int nodes = 2 * m + 2, source = 2 * m, sink = 2 * m + 1;
  struct edge {
    int to, rev, cap;
    double cost;
  };
  std::vector<std::vector<edge>> graph(static_cast<std::size_t>(nodes));
  auto add = [&](int a, int b, int cap, double cost) {
    graph[a].push_back({b, int(graph[b].size()), cap, cost});
    graph[b].push_back({a, int(graph[a].size()) - 1, 0, -cost});
  };
  for (int r = 0; r < m; ++r) add(source, r, n, 0.0);
  for (int c = 0; c < m; ++c) add(m + c, sink, n, 0.0);
  for (int r = 0; r < m; ++r)
    for (int c = 0; c < m; ++c) add(r, m + c, 1, -double(score[r * m + c]));
  double total = 0.0;
  for (int flow = 0; flow < n * m; ++flow) {
    std::vector<double> dist(static_cast<std::size_t>(nodes), std::numeric_limits<double>::infinity());
    std::vector<int> prev_node(static_cast<std::size_t>(nodes), -1), prev_edge(static_cast<std::size_t>(nodes), -1);
    dist[source] = 0.0;
    for (int round = 0; round < nodes; ++round) {  // Bellman-Ford: the residual costs can be negative
      bool changed = false;
      for (int a = 0; a < nodes; ++a) {
        if (dist[a] == std::numeric_limits<double>::infinity()) continue;
        for (int i = 0; i < int(graph[a].size()); ++i) {
          const edge& e = graph[a][i];
          if (e.cap > 0 && dist[a] + e.cost < dist[e.to] - 1e-12) {
            dist[e.to] = dist[a] + e.cost;
            prev_node[e.to] = a;
            prev_edge[e.to] = i;
            changed = true;
          }
        }
      }
      if (!changed) break;
    }
    if (prev_node[sink] < 0) break;
    for (int v = sink; v != source; v = prev_node[v]) {
      edge& e = graph[prev_node[v]][prev_edge[v]];
      --e.cap;
      ++graph[v][e.rev].cap;
    }
    total -= dist[sink];
  }
  return total;
}

//! The transposable N:M mask of x [rows, cols] for M = 8, 16 (sparse::nm_transposable_mask):
//! each block by transposable_greedy_block, positions outside the matrix scoring -1, NaN blocks
//! zero.
template <int N, int M, class T>
void nm_transposable_mask_greedy(const T* x, std::int64_t ld, std::int64_t rows, std::int64_t cols, std::uint8_t* mask,
                                 std::int64_t ld_mask, sparse::nm_report& report) {
  for (std::int64_t r0 = 0; r0 < rows; r0 += M)
    for (std::int64_t c0 = 0; c0 < cols; c0 += M) {
      float score[M * M];
      bool nan = false;
      for (int i = 0; i < M * M; ++i) {
        const std::int64_t r = r0 + i / M, c = c0 + i % M;
        const bool real = r < rows && c < cols;
        const float v = real ? to_float(x[r * ld + c]) : 0.0f;
        score[i] = real ? std::fabs(v) : -1.0f;
        if (real && std::isnan(v)) {
          nan = true;
          detail::note(report.nan_count, report.first_nan, r * cols + c);
        }
      }
      const auto kept = nan ? std::vector<std::uint8_t>(M * M, 0) : transposable_greedy_block<N, M>(score);
      for (int i = 0; i < M * M; ++i) {
        const std::int64_t r = r0 + i / M, c = c0 + i % M;
        if (r < rows && c < cols) mask[r * ld_mask + c] = kept[std::size_t(i)];
      }
    }
}

// ---- SR-STE -----------------------------------------------------------------------------------

//! One SR-STE step (sparse/srste.cuh) on host arrays, in the same operations: the mask of the
//! current weight, the refined gradient, the optimizer update, the new mask, the compressed
//! weight. Returns the flips (positions whose mask changed).
template <class Pattern, class Optimizer, class G, class TV>
unsigned long long srste_step(float* w, const G* grad, float* state0, float* state1, std::int64_t ld, std::int64_t rows, std::int64_t k,
                              TV* values, std::int64_t ld_values, std::uint32_t* indices, std::int64_t ld_indices,
                              const Optimizer& optimizer, const sparse::srste_params& params, sparse::nm_report& report) {
  constexpr int N = Pattern::n, M = Pattern::m;
  const sparse::optimizer_constants constants = sparse::constants_of(optimizer);
  unsigned long long flips = 0;
  // A NaN weight is counted once per step: after the update only if it was not NaN before.
  auto mask_of = [&](const float* x, int count, std::int64_t first, unsigned reported, unsigned& nan_positions) {
    float score[M];
    nan_positions = 0;
    for (int i = 0; i < M; ++i) {
      score[i] = i < count ? std::fabs(x[i]) : 0.0f;
      if (i < count && std::isnan(x[i])) {
        nan_positions |= 1u << i;
        if (!((reported >> i) & 1u)) detail::note(report.nan_count, report.first_nan, first + i);
      }
    }
    return nan_positions ? 0u : sparse::select_window<N, M>(score) & ((1u << count) - 1u);
  };
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t i = 0; i < Pattern::index_words_per_row(k); ++i) indices[r * ld_indices + i] = 0u;
    for (std::int64_t win = 0; win < Pattern::windows(k); ++win) {
      const std::int64_t c0 = win * M;
      const int count = int(std::min<std::int64_t>(M, k - c0));
      float x[M] = {};
      for (int i = 0; i < count; ++i) x[i] = w[r * ld + c0 + i];
      unsigned nan_before = 0, nan_after = 0;
      const unsigned before = mask_of(x, count, r * k + c0, 0u, nan_before);
      for (int i = 0; i < count; ++i) {
        const std::int64_t at = r * ld + c0 + i;
        float second = state1 ? state1[at] : 0.0f;
        const float refined = sparse::srste_gradient(to_float(grad[at]), x[i], (before >> i) & 1u, params);
        sparse::optimizer_update(optimizer, constants, refined, x[i], state0[at], second);
        if (state1) state1[at] = second;
        w[at] = x[i];
      }
      const unsigned after = mask_of(x, count, r * k + c0, nan_before, nan_after);
      flips += std::bitset<32>(before ^ after).count();
      const unsigned kept = after == 0u ? (1u << N) - 1u : sparse::fill_window<N, M>(after);
      float kept_value[N];
      sparse::kept_values<N, M>(kept, after, x, kept_value);
      int positions[N];
      sparse::kept_positions<N, M>(kept, positions);
      for (int j = 0; j < N; ++j) {
        values[r * ld_values + win * N + j] = from_float<TV>(kept_value[j]);
        sparse::set_packed_index<Pattern>(indices + r * ld_indices, win * N + j, unsigned(positions[j]));
      }
    }
  }
  return flips;
}

//! One transposable SR-STE step for N:4 (sparse::srste_step_transposable): every 4 x 4 block's
//! pattern by select_block4 before and after the update; W compressed along its rows and W^T
//! ([K, rows]) along W's columns. Returns the flips.
template <int N, class Optimizer, class G, class TV>
unsigned long long srste_step_transposable4(float* w, const G* grad, float* state0, float* state1, std::int64_t ld, std::int64_t rows,
                                            std::int64_t k, TV* values, std::int64_t ld_values, std::uint32_t* indices,
                                            std::int64_t ld_indices, TV* values_t, std::int64_t ld_values_t, std::uint32_t* indices_t,
                                            std::int64_t ld_indices_t, const Optimizer& optimizer, const sparse::srste_params& params,
                                            sparse::nm_report& report) {
  using P = sparse::nm<N, 4>;
  const sparse::optimizer_constants constants = sparse::constants_of(optimizer);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t i = 0; i < P::index_words_per_row(k); ++i) indices[r * ld_indices + i] = 0u;
  for (std::int64_t c = 0; c < k; ++c)
    for (std::int64_t i = 0; i < P::index_words_per_row(rows); ++i) indices_t[c * ld_indices_t + i] = 0u;
  unsigned long long flips = 0;
  auto write = [&](unsigned kept, unsigned real, const float (&window)[4], TV* row_values, std::uint32_t* row_words, std::int64_t index) {
    float kept_value[N];
    sparse::kept_values<N, 4>(kept, real, window, kept_value);
    int positions[N];
    sparse::kept_positions<N, 4>(kept, positions);
    for (int j = 0; j < N; ++j) {
      row_values[index * N + j] = from_float<TV>(kept_value[j]);
      sparse::set_packed_index<P>(row_words, index * N + j, unsigned(positions[j]));
    }
  };
  for (std::int64_t r0 = 0; r0 < rows; r0 += 4)
    for (std::int64_t c0 = 0; c0 < k; c0 += 4) {
      float x[16], score[16], s0[16], s1[16], g[16];
      unsigned real = 0;
      bool nan = false;
      for (int i = 0; i < 16; ++i) {
        const std::int64_t r = r0 + i / 4, c = c0 + i % 4;
        const bool is_real = r < rows && c < k;
        real |= unsigned(is_real) << i;
        x[i] = is_real ? w[r * ld + c] : 0.0f;
        g[i] = is_real ? to_float(grad[r * ld + c]) : 0.0f;
        s0[i] = is_real ? state0[r * ld + c] : 0.0f;
        s1[i] = is_real && state1 ? state1[r * ld + c] : 0.0f;
        score[i] = is_real ? std::fabs(x[i]) : -1.0f;
        if (is_real && std::isnan(x[i])) {
          nan = true;
          detail::note(report.nan_count, report.first_nan, r * k + c);
        }
      }
      const unsigned before = nan ? 0u : sparse::select_block4<N>(score);
      unsigned nan_before = 0;
      for (int i = 0; i < 16; ++i) nan_before |= unsigned(((real >> i) & 1u) && std::isnan(x[i])) << i;
      for (int i = 0; i < 16; ++i) {
        sparse::optimizer_update(optimizer, constants, sparse::srste_gradient(g[i], x[i], (before >> i) & 1u, params), x[i], s0[i], s1[i]);
        score[i] = ((real >> i) & 1u) ? std::fabs(x[i]) : -1.0f;
        if (((real >> i) & 1u) && std::isnan(x[i])) {
          nan = true;
          if (!((nan_before >> i) & 1u)) detail::note(report.nan_count, report.first_nan, (r0 + i / 4) * k + c0 + i % 4);
        }
      }
      const unsigned after = nan ? 0u : sparse::select_block4<N>(score);
      flips += std::bitset<32>((before ^ after) & real).count();
      for (int i = 0; i < 16; ++i) {
        if (!((real >> i) & 1u)) continue;
        const std::int64_t at = (r0 + i / 4) * ld + c0 + i % 4;
        w[at] = x[i];
        state0[at] = s0[i];
        if (state1) state1[at] = s1[i];
      }
      for (int i = 0; i < 4; ++i) {
        unsigned col_kept = 0, col_real = 0;
        for (int j = 0; j < 4; ++j) {
          col_kept |= ((after >> (4 * j + i)) & 1u) << j;
          col_real |= (((after & real) >> (4 * j + i)) & 1u) << j;
        }
        const float row_window[4] = {x[4 * i], x[4 * i + 1], x[4 * i + 2], x[4 * i + 3]};
        const float col_window[4] = {x[i], x[4 + i], x[8 + i], x[12 + i]};
        if (r0 + i < rows)
          write(after ? (after >> (4 * i)) & 15u : (1u << N) - 1u, ((after & real) >> (4 * i)) & 15u, row_window,
                values + (r0 + i) * ld_values, indices + (r0 + i) * ld_indices, c0 / 4);
        if (c0 + i < k)
          write(after ? col_kept : (1u << N) - 1u, col_real, col_window, values_t + (c0 + i) * ld_values_t,
                indices_t + (c0 + i) * ld_indices_t, r0 / 4);
      }
    }
  return flips;
}

//! The transposable SR-STE step for N:8 and N:16 (sparse::srste_step_transposable): each M x M
//! block's pattern by transposable_greedy_block before and after the update. Returns the flips.
template <int N, int M, class Optimizer, class G, class TV>
unsigned long long srste_step_transposable_greedy(float* w, const G* grad, float* state0, float* state1, std::int64_t ld, std::int64_t rows,
                                                  std::int64_t k, TV* values, std::int64_t ld_values, std::uint32_t* indices,
                                                  std::int64_t ld_indices, TV* values_t, std::int64_t ld_values_t, std::uint32_t* indices_t,
                                                  std::int64_t ld_indices_t, const Optimizer& optimizer, const sparse::srste_params& params,
                                                  sparse::nm_report& report) {
  using P = sparse::nm<N, M>;
  const sparse::optimizer_constants constants = sparse::constants_of(optimizer);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t i = 0; i < P::index_words_per_row(k); ++i) indices[r * ld_indices + i] = 0u;
  for (std::int64_t c = 0; c < k; ++c)
    for (std::int64_t i = 0; i < P::index_words_per_row(rows); ++i) indices_t[c * ld_indices_t + i] = 0u;
  unsigned long long flips = 0;
  auto write = [&](unsigned kept, unsigned real, const float (&window)[M], TV* row_values, std::uint32_t* row_words, std::int64_t index) {
    float kept_value[N];
    sparse::kept_values<N, M>(kept, real, window, kept_value);
    int positions[N];
    sparse::kept_positions<N, M>(kept, positions);
    for (int j = 0; j < N; ++j) {
      row_values[index * N + j] = from_float<TV>(kept_value[j]);
      sparse::set_packed_index<P>(row_words, index * N + j, unsigned(positions[j]));
    }
  };
  for (std::int64_t r0 = 0; r0 < rows; r0 += M)
    for (std::int64_t c0 = 0; c0 < k; c0 += M) {
      float x[M * M], score[M * M], s0[M * M], s1[M * M], g[M * M];
      bool real[M * M];
      bool nan = false;
      for (int i = 0; i < M * M; ++i) {
        const std::int64_t r = r0 + i / M, c = c0 + i % M;
        real[i] = r < rows && c < k;
        x[i] = real[i] ? w[r * ld + c] : 0.0f;
        g[i] = real[i] ? to_float(grad[r * ld + c]) : 0.0f;
        s0[i] = real[i] ? state0[r * ld + c] : 0.0f;
        s1[i] = real[i] && state1 ? state1[r * ld + c] : 0.0f;
        score[i] = real[i] ? std::fabs(x[i]) : -1.0f;
        if (real[i] && std::isnan(x[i])) {
          nan = true;
          detail::note(report.nan_count, report.first_nan, r * k + c);
        }
      }
      const auto before = nan ? std::vector<std::uint8_t>(M * M, 0) : transposable_greedy_block<N, M>(score);
      bool nan_before[M * M];
      for (int i = 0; i < M * M; ++i) nan_before[i] = real[i] && std::isnan(x[i]);
      nan = false;
      for (int i = 0; i < M * M; ++i) {
        sparse::optimizer_update(optimizer, constants, sparse::srste_gradient(g[i], x[i], before[std::size_t(i)] != 0, params), x[i], s0[i],
                                 s1[i]);
        score[i] = real[i] ? std::fabs(x[i]) : -1.0f;
        if (real[i] && std::isnan(x[i])) {
          nan = true;
          if (!nan_before[i]) detail::note(report.nan_count, report.first_nan, (r0 + i / M) * k + c0 + i % M);
        }
      }
      const auto after = nan ? std::vector<std::uint8_t>(M * M, 0) : transposable_greedy_block<N, M>(score);
      for (int i = 0; i < M * M; ++i) {
        if (!real[i]) continue;
        flips += before[std::size_t(i)] != after[std::size_t(i)];
        const std::int64_t at = (r0 + i / M) * ld + c0 + i % M;
        w[at] = x[i];
        state0[at] = s0[i];
        if (state1) state1[at] = s1[i];
      }
      for (int h = 0; h < M; ++h) {
        unsigned row_kept = 0, row_real = 0, col_kept = 0, col_real = 0;
        float row_window[M], col_window[M];
        for (int i = 0; i < M; ++i) {
          row_kept |= unsigned(after[std::size_t(h * M + i)]) << i;
          row_real |= unsigned(after[std::size_t(h * M + i)] && real[h * M + i]) << i;
          col_kept |= unsigned(after[std::size_t(i * M + h)]) << i;
          col_real |= unsigned(after[std::size_t(i * M + h)] && real[i * M + h]) << i;
          row_window[i] = x[h * M + i];
          col_window[i] = x[i * M + h];
        }
        if (nan) row_kept = col_kept = (1u << N) - 1u, row_real = col_real = 0;
        if (r0 + h < rows) write(row_kept, row_real, row_window, values + (r0 + h) * ld_values, indices + (r0 + h) * ld_indices, c0 / M);
        if (c0 + h < k) write(col_kept, col_real, col_window, values_t + (c0 + h) * ld_values_t, indices_t + (c0 + h) * ld_indices_t, r0 / M);
      }
    }
  return flips;
}

// ---- CUTLASS / PyTorch reordered 2:4 metadata -----------------------------------------------------

//! Canonical 2:4 indices [rows, ld_indices words] -> the reordered int16 metadata [rows, K / 16].
inline void nm24_to_cutlass_meta(const std::uint32_t* indices, std::int64_t ld_indices, std::int64_t rows, std::int64_t k,
                                 std::int16_t* meta) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < k / 16; ++c) {
      const std::uint32_t word = indices[r * ld_indices + c / 2];
      meta[sparse::cutlass_meta_offset(r, c, rows)] = std::int16_t(std::uint16_t(word >> (16 * (c % 2))));
    }
}

//! The reordered int16 metadata [rows, K / 16] -> canonical 2:4 indices [rows, ld_indices words].
inline void nm24_from_cutlass_meta(const std::int16_t* meta, std::int64_t rows, std::int64_t k, std::uint32_t* indices,
                                   std::int64_t ld_indices) {
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t w = 0; w < (k + 31) / 32; ++w) indices[r * ld_indices + w] = 0u;
    for (std::int64_t c = 0; c < k / 16; ++c)
      indices[r * ld_indices + c / 2] |= std::uint32_t(std::uint16_t(meta[sparse::cutlass_meta_offset(r, c, rows)])) << (16 * (c % 2));
  }
}

}  // namespace frugal::reference

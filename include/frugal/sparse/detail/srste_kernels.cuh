// SPDX-License-Identifier: Apache-2.0
// The fused SR-STE step, row-wise N:M: a warp owns 32 consecutive windows of a row (one per
// lane) and does the whole step for them in registers: the old mask from |w|, the refined
// gradient, the optimizer update, the new mask, the flips, the compressed weight.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/sparse/detail/srste_kernels.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/vector_io.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/sparse/detail/nm_kernels.cuh>
#include <frugal/sparse/srste_math.cuh>

#include <cstdint>

namespace frugal::sparse::detail {

template <class G, class TV>
struct srste_problem {
  float* weight;
  const G* grad;
  float* state0;
  float* state1;
  std::int64_t ld;
  TV* values;
  std::int64_t ld_values;
  std::uint32_t* indices;
  std::int64_t ld_indices;
  unsigned long long* flips;
  nm_report* report;
  std::int64_t rows, k;
  bool vector;  // windows of weight, grad and states start on vector boundaries
};

// The kept positions of a window of weights (magnitude, ties to the lower position, padding
// never ahead of a real element); a window holding a NaN keeps nothing. NaN positions go to
// *nan_positions; those not in `reported` are counted in the report (a NaN weight that survives
// the update is counted once per step).
template <int N, int M>
FRUGAL_DEVICE unsigned mask_of_weights(const float (&w)[M], int count, nm_report* report, std::int64_t first_position, unsigned reported,
                                       unsigned* nan_positions) {
  float score[M];
  unsigned nan = 0;
  FRUGAL_UNROLL
  for (int i = 0; i < M; ++i) {
    nan |= unsigned(i < count && w[i] != w[i]) << i;
    score[i] = i < count ? fabsf(w[i]) : 0.0f;
  }
  *nan_positions = nan;
  if (nan) {
    FRUGAL_UNROLL
    for (int i = 0; i < M; ++i)
      if (((nan & ~reported) >> i) & 1u) report_problem(&report->nan_count, &report->first_nan, first_position + i);
    return 0u;
  }
  return select_window<N, M>(score) & ((1u << count) - 1u);
}

template <int M, class T>
FRUGAL_DEVICE void store_window(T* p, int count, bool vector, const float (&v)[M]) {
  if (vector && count == M) {
    store_floats<M>(p, v);
    return;
  }
  FRUGAL_UNROLL
  for (int i = 0; i < M; ++i)
    if (i < count) p[i] = from_float<T>(v[i]);
}

template <class Pattern, class Optimizer, class G, class TV>
__global__ void __launch_bounds__(nm_threads)
    srste_kernel(srste_problem<G, TV> p, Optimizer opt, optimizer_constants constants, srste_params sr) {
  constexpr int N = Pattern::n, M = Pattern::m;
  constexpr bool second = has_second_moment<Optimizer>;
  const std::int64_t windows = Pattern::windows(p.k), chunks = (windows + 31) / 32;
  const std::int64_t words = Pattern::index_words_per_row(p.k);
  for (std::int64_t unit = warp_unit(); unit < p.rows * chunks; unit += warp_units_in_grid()) {
    const std::int64_t r = unit / chunks, window = unit % chunks * 32 + lane_index(), c0 = window * M;
    const bool live = window < windows;
    const int count = !live ? 0 : p.k - c0 >= M ? M : int(p.k - c0);
    const std::int64_t at = r * p.ld + c0;
    float w[M], g[M], s0[M], s1[M];
    load_window<M>(p.weight + at, 1, count, p.vector && count == M, 0.0f, w);
    load_window<M>(p.grad + at, 1, count, p.vector && count == M, 0.0f, g);
    load_window<M>(p.state0 + at, 1, count, p.vector && count == M, 0.0f, s0);
    if constexpr (second) load_window<M>(p.state1 + at, 1, count, p.vector && count == M, 0.0f, s1);
    const std::int64_t first_position = r * p.k + c0;
    unsigned nan_before = 0, nan_after = 0;
    const unsigned before = live ? mask_of_weights<N, M>(w, count, p.report, first_position, 0u, &nan_before) : 0u;
    FRUGAL_UNROLL
    for (int i = 0; i < M; ++i) {
      const float refined = srste_gradient(g[i], w[i], (before >> i) & 1u, sr);
      optimizer_update(opt, constants, refined, w[i], s0[i], s1[i]);
    }
    const unsigned after = live ? mask_of_weights<N, M>(w, count, p.report, first_position, nan_before, &nan_after) : 0u;
    const unsigned flips = __popc(before ^ after);
    const unsigned warp_flips = warp_sum(flips);
    if (lane_index() == 0 && warp_flips) atomicAdd(p.flips, static_cast<unsigned long long>(warp_flips));
    if (live) {
      store_window<M>(p.weight + at, count, p.vector, w);
      store_window<M>(p.state0 + at, count, p.vector, s0);
      if constexpr (second) store_window<M>(p.state1 + at, count, p.vector, s1);
    }
    // A NaN window keeps nothing: written as zeros at positions 0 .. N-1, as nm_prune does.
    const unsigned kept = after == 0u ? (1u << N) - 1u : fill_window<N, M>(after);
    if (live) {
      float kept_value[N];
      kept_values<N, M>(kept, after, w, kept_value);
      FRUGAL_UNROLL
      for (int j = 0; j < N; ++j) p.values[r * p.ld_values + window * N + j] = from_float<TV>(kept_value[j]);
    }
    warp_store_indices<Pattern>(live ? kept : 0u, p.indices + r * p.ld_indices, unit % chunks * 32, words);
  }
}

// Sets `count` (<= 64) bits at bit `offset` of a row's packed words (atomically: several
// threads fill one word). The words must have been zeroed.
FRUGAL_DEVICE void atomic_or_bits(std::uint32_t* row_words, std::int64_t offset, std::uint64_t bits, int count) {
  for (int done = 0; done < count;) {
    const std::int64_t at = offset + done;
    const int shift = int(at % 32), take = 32 - shift < count - done ? 32 - shift : count - done;
    const std::uint32_t piece = std::uint32_t((bits >> done) & ((std::uint64_t(1) << take) - 1u)) << shift;
    if (piece) atomicOr(row_words + at / 32, piece);
    done += take;
  }
}

template <int Unused = 0>
__global__ void zero_words_kernel(std::uint32_t* words, std::int64_t ld, std::int64_t rows, std::int64_t count) {
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * count; i += std::int64_t(gridDim.x) * blockDim.x)
    words[i / count * ld + i % count] = 0u;
}

// One window (4 positions, `kept` holding N of them) of a compressed row: values and indices.
template <int N, class TV>
FRUGAL_DEVICE void store_window4(unsigned kept, unsigned real, const float (&window)[4], TV* values, std::uint32_t* row_words,
                                 std::int64_t window_index) {
  float kept_value[N];
  kept_values<N, 4>(kept, real, window, kept_value);
  std::uint64_t bits = 0;
  FRUGAL_UNROLL
  for (int i = 3; i >= 0; --i) bits = ((kept >> i) & 1u) ? (bits << 2) | unsigned(i) : bits;
  FRUGAL_UNROLL
  for (int j = 0; j < N; ++j) values[window_index * N + j] = from_float<TV>(kept_value[j]);
  atomic_or_bits(row_words, window_index * 2 * N, bits, 2 * N);
}

// The transposable SR-STE step for N:4: a thread owns a 4 x 4 block (block4_of), finds the
// block's pattern before and after the update (select_block4), and writes both W and W^T
// compressed (index words zeroed beforehand, filled with atomic ORs).
// (A minimum of one block per SM: the step keeps five 16-float blocks of a thread in registers,
// and without it ptxas held the kernel to 128 registers and spilled.)
template <int N, class Optimizer, class G, class TV>
__global__ void __launch_bounds__(nm_threads, 1)
    srste_transposable4_kernel(srste_problem<G, TV> p, TV* values_t, std::int64_t ld_values_t, std::uint32_t* indices_t,
                               std::int64_t ld_indices_t, Optimizer opt, optimizer_constants constants, srste_params sr) {
  constexpr bool second = has_second_moment<Optimizer>;
  const std::int64_t block_rows = (p.rows + 3) / 4, block_cols = (p.k + 3) / 4;
  for (std::int64_t unit = warp_unit(); unit < block4_units(block_rows, block_cols); unit += warp_units_in_grid()) {
    const block4_place b = block4_of(unit, block_rows, block_cols);
    unsigned flips = 0;
    if (b.live) {
      const std::int64_t r0 = 4 * b.br, c0 = 4 * b.bc;
      float w[16], score[16], g[16], s0[16], s1[16];
      unsigned real = 0;
      bool nan = load_block4(p.weight, p.ld, p.rows, p.k, r0, c0, w, score, p.report);
      FRUGAL_UNROLL
      for (int i = 0; i < 16; ++i) {
        const std::int64_t r = r0 + i / 4, c = c0 + i % 4;
        const bool is_real = r < p.rows && c < p.k;
        real |= unsigned(is_real) << i;
        g[i] = is_real ? to_float(p.grad[r * p.ld + c]) : 0.0f;
        s0[i] = is_real ? p.state0[r * p.ld + c] : 0.0f;
        s1[i] = second && is_real ? p.state1[r * p.ld + c] : 0.0f;
      }
      const unsigned before = nan ? 0u : select_block4<N>(score);
      unsigned nan_before = 0;
      FRUGAL_UNROLL
      for (int i = 0; i < 16; ++i) nan_before |= unsigned(((real >> i) & 1u) && w[i] != w[i]) << i;
      FRUGAL_UNROLL
      for (int i = 0; i < 16; ++i) {
        optimizer_update(opt, constants, srste_gradient(g[i], w[i], (before >> i) & 1u, sr), w[i], s0[i], s1[i]);
        score[i] = ((real >> i) & 1u) ? fabsf(w[i]) : -1.0f;
        if (((real >> i) & 1u) && w[i] != w[i]) {
          nan = true;
          if (!((nan_before >> i) & 1u)) report_problem(&p.report->nan_count, &p.report->first_nan, (r0 + i / 4) * p.k + c0 + i % 4);
        }
      }
      const unsigned after = nan ? 0u : select_block4<N>(score);
      flips = unsigned(__popc((before ^ after) & real));
      FRUGAL_UNROLL
      for (int i = 0; i < 16; ++i) {
        if (!((real >> i) & 1u)) continue;
        const std::int64_t at = (r0 + i / 4) * p.ld + c0 + i % 4;
        p.weight[at] = w[i];
        p.state0[at] = s0[i];
        if constexpr (second) p.state1[at] = s1[i];
      }
      // W: row r0 + i keeps the block row's pattern as its window bc; W^T: column c0 + j keeps
      // the block column's as its window br. A NaN block: zeros at positions 0 .. N-1.
      FRUGAL_UNROLL
      for (int i = 0; i < 4; ++i) {
        const unsigned row_kept = after ? (after >> (4 * i)) & 15u : (1u << N) - 1u, row_real = ((after & real) >> (4 * i)) & 15u;
        const unsigned col_kept_bits = ((after >> i) & 1u) | ((after >> (i + 3)) & 2u) | ((after >> (i + 6)) & 4u) | ((after >> (i + 9)) & 8u);
        const unsigned col_real_bits = (((after & real) >> i) & 1u) | (((after & real) >> (i + 3)) & 2u) |
                                       (((after & real) >> (i + 6)) & 4u) | (((after & real) >> (i + 9)) & 8u);
        const unsigned col_kept = after ? col_kept_bits : (1u << N) - 1u;
        const float row_window[4] = {w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]};
        const float col_window[4] = {w[i], w[4 + i], w[8 + i], w[12 + i]};
        if (r0 + i < p.rows)
          store_window4<N>(row_kept, row_real, row_window, p.values + (r0 + i) * p.ld_values, p.indices + (r0 + i) * p.ld_indices, b.bc);
        if (c0 + i < p.k)
          store_window4<N>(col_kept, col_real_bits, col_window, values_t + (c0 + i) * ld_values_t, indices_t + (c0 + i) * ld_indices_t,
                           b.br);
      }
    }
    const unsigned warp_flips = warp_sum(flips);
    if (lane_index() == 0 && warp_flips) atomicAdd(p.flips, static_cast<unsigned long long>(warp_flips));
  }
}

// The transposable SR-STE step for N:8 and N:16: a warp owns an M x M block (lane l: entries
// l E .. l E + E - 1, row-major), runs warp_transposable_greedy before and after the update, and
// writes W (lanes 0 .. M-1: one row each) and W^T (lanes M .. 2M-1: one column each) compressed,
// gathering each window's kept values by shuffles.
template <int N, int M, class Optimizer, class G, class TV>
__global__ void __launch_bounds__(nm_threads)
    srste_transposable_greedy_kernel(srste_problem<G, TV> p, TV* values_t, std::int64_t ld_values_t, std::uint32_t* indices_t,
                                     std::int64_t ld_indices_t, Optimizer opt, optimizer_constants constants, srste_params sr) {
  constexpr int E = M * M / 32, B = nm<N, M>::index_bits;
  constexpr bool second = has_second_moment<Optimizer>;
  const std::int64_t block_rows = (p.rows + M - 1) / M, block_cols = (p.k + M - 1) / M;
  const int lane = int(lane_index());
  for (std::int64_t unit = warp_unit(); unit < block_rows * block_cols; unit += warp_units_in_grid()) {
    const std::int64_t br = unit / block_cols, bc = unit % block_cols, r0 = br * M, c0 = bc * M;
    float w[E], g[E], s0[E], s1[E], score[E];
    unsigned real = 0;
    bool nan = false;
    FRUGAL_UNROLL
    for (int e = 0; e < E; ++e) {
      const int flat = lane * E + e;
      const std::int64_t r = r0 + flat / M, c = c0 + flat % M, at = r * p.ld + c;
      const bool is_real = r < p.rows && c < p.k;
      real |= unsigned(is_real) << e;
      w[e] = is_real ? p.weight[at] : 0.0f;
      g[e] = is_real ? to_float(p.grad[at]) : 0.0f;
      s0[e] = is_real ? p.state0[at] : 0.0f;
      s1[e] = second && is_real ? p.state1[at] : 0.0f;
      score[e] = is_real ? fabsf(w[e]) : -1.0f;
      if (is_real && w[e] != w[e]) {
        nan = true;
        report_problem(&p.report->nan_count, &p.report->first_nan, r * p.k + c);
      }
    }
    const unsigned before = warp_any(nan) ? 0u : warp_transposable_greedy<N, M>(score);
    unsigned nan_before = 0;
    FRUGAL_UNROLL
    for (int e = 0; e < E; ++e) nan_before |= unsigned(((real >> e) & 1u) && w[e] != w[e]) << e;
    nan = false;
    FRUGAL_UNROLL
    for (int e = 0; e < E; ++e) {
      optimizer_update(opt, constants, srste_gradient(g[e], w[e], (before >> e) & 1u, sr), w[e], s0[e], s1[e]);
      const bool is_real = (real >> e) & 1u;
      score[e] = is_real ? fabsf(w[e]) : -1.0f;
      if (is_real && w[e] != w[e]) {
        nan = true;
        const int flat = lane * E + e;
        if (!((nan_before >> e) & 1u)) report_problem(&p.report->nan_count, &p.report->first_nan, (r0 + flat / M) * p.k + c0 + flat % M);
      }
    }
    const bool nan_block = warp_any(nan);
    const unsigned after = nan_block ? 0u : warp_transposable_greedy<N, M>(score);
    const unsigned warp_flips = warp_sum(unsigned(__popc((before ^ after) & real)));
    if (lane == 0 && warp_flips) atomicAdd(p.flips, static_cast<unsigned long long>(warp_flips));
    FRUGAL_UNROLL
    for (int e = 0; e < E; ++e) {
      if (!((real >> e) & 1u)) continue;
      const int flat = lane * E + e;
      const std::int64_t at = (r0 + flat / M) * p.ld + c0 + flat % M;
      p.weight[at] = w[e];
      p.state0[at] = s0[e];
      if constexpr (second) p.state1[at] = s1[e];
    }
    // Lane h < M handles row h of the block, lane M + h column h. A row's M entries sit in lanes
    // h M / E .. + M / E - 1 (E consecutive bits each); a column's in one lane per row.
    const bool is_row = lane < M, is_col = lane >= M && lane < 2 * M;
    const int h = is_row ? lane : (lane - M) % M;
    const unsigned kept_here = after & real;
    unsigned row_kept = 0, row_real = 0, col_kept = 0, col_real = 0;
    FRUGAL_UNROLL
    for (int q = 0; q < M / E; ++q) {
      const int source = h * M / E + q;
      row_kept |= __shfl_sync(full_warp_mask, after, source) << (q * E);
      row_real |= __shfl_sync(full_warp_mask, kept_here, source) << (q * E);
    }
    FRUGAL_UNROLL
    for (int i = 0; i < M; ++i) {
      const int flat = i * M + h, source = flat / E, element = flat % E;
      col_kept |= ((__shfl_sync(full_warp_mask, after, source) >> element) & 1u) << i;
      col_real |= ((__shfl_sync(full_warp_mask, kept_here, source) >> element) & 1u) << i;
    }
    unsigned kept = is_row ? row_kept : col_kept, kept_real = is_row ? row_real : col_real;
    if (nan_block) kept = (1u << N) - 1u, kept_real = 0;
    int positions[N];
    kept_positions<N, M>(kept, positions);
    float window_values[N];
    std::uint64_t bits = 0;
    FRUGAL_UNROLL
    for (int j = 0; j < N; ++j) {
      const int flat = is_row ? h * M + positions[j] : positions[j] * M + h;
      const int source = flat / E, element = flat % E;
      float got = 0.0f;
      FRUGAL_UNROLL
      for (int e = 0; e < E; ++e) {
        const float offered = __shfl_sync(full_warp_mask, w[e], source);
        got = element == e ? offered : got;
      }
      window_values[j] = ((kept_real >> positions[j]) & 1u) ? got : 0.0f;
      bits |= std::uint64_t(positions[j]) << (j * B);
    }
    if (is_row && r0 + h < p.rows) {
      TV* out = p.values + (r0 + h) * p.ld_values + bc * N;
      FRUGAL_UNROLL
      for (int j = 0; j < N; ++j) out[j] = from_float<TV>(window_values[j]);
      atomic_or_bits(p.indices + (r0 + h) * p.ld_indices, bc * N * B, bits, N * B);
    }
    if (is_col && c0 + h < p.k) {
      TV* out = values_t + (c0 + h) * ld_values_t + br * N;
      FRUGAL_UNROLL
      for (int j = 0; j < N; ++j) out[j] = from_float<TV>(window_values[j]);
      atomic_or_bits(indices_t + (c0 + h) * ld_indices_t, br * N * B, bits, N * B);
    }
  }
}

}  // namespace frugal::sparse::detail

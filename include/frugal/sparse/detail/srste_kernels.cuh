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
// never ahead of a real element); a NaN is reported and keeps nothing.
template <int N, int M>
FRUGAL_DEVICE unsigned mask_of_weights(const float (&w)[M], int count, nm_report* report, std::int64_t first_position) {
  float score[M];
  bool nan = false;
  FRUGAL_UNROLL
  for (int i = 0; i < M; ++i) {
    nan = nan || (i < count && w[i] != w[i]);
    score[i] = i < count ? fabsf(w[i]) : 0.0f;
  }
  if (nan) {
    FRUGAL_UNROLL
    for (int i = 0; i < M; ++i)
      if (i < count && w[i] != w[i]) report_problem(&report->nan_count, &report->first_nan, first_position + i);
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
    const unsigned before = live ? mask_of_weights<N, M>(w, count, p.report, first_position) : 0u;
    FRUGAL_UNROLL
    for (int i = 0; i < M; ++i) {
      const float refined = srste_gradient(g[i], w[i], (before >> i) & 1u, sr);
      optimizer_update(opt, constants, refined, w[i], s0[i], s1[i]);
    }
    const unsigned after = live ? mask_of_weights<N, M>(w, count, p.report, first_position) : 0u;
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

}  // namespace frugal::sparse::detail

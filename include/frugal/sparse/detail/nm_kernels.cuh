// SPDX-License-Identifier: Apache-2.0
// The N:M kernels. A warp owns a unit of 32 windows: along a row (32 consecutive windows of one
// row, lane = window) or, for masks down columns, one window-row of 32 consecutive columns (lane =
// column). Grid-stride over units; every lane of a warp stays in the loop together, so the
// packed-index reductions see a full warp.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/sparse/detail/nm_kernels.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/launch.cuh>
#include <frugal/core/vector_io.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/sparse/nm.cuh>
#include <frugal/sparse/transposable.cuh>
#include <frugal/sparse/warp_nm.cuh>

#include <cstdint>

namespace frugal::sparse::detail {

inline constexpr int nm_threads = 256;

template <int Unused = 0>  // a template: defined in a header, one instantiation for the program
__global__ void nm_report_reset_kernel(nm_report* report) {
  *report = nm_report{};
}

// A rectangle of elements and how its windows are read.
template <class T>
struct nm_source {
  const T* data;
  std::int64_t ld;
  std::int64_t rows, cols;
  bool vector;  // rows-axis windows may be read with vector accesses
};

FRUGAL_DEVICE std::int64_t warp_unit() { return (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; }
FRUGAL_DEVICE std::int64_t warp_units_in_grid() { return std::int64_t(gridDim.x) * blockDim.x / 32; }

template <class Pattern, class T>
__global__ void __launch_bounds__(nm_threads)
    nm_mask_kernel(nm_source<T> x, bool along_rows, bool magnitude, std::uint8_t* mask, std::int64_t ld_mask, bool vector_mask,
                   nm_report* report) {
  constexpr int N = Pattern::n, M = Pattern::m;
  const std::int64_t lines = along_rows ? x.rows : Pattern::windows(x.rows);
  const std::int64_t across = along_rows ? (Pattern::windows(x.cols) + 31) / 32 : (x.cols + 31) / 32;
  const int lane = int(lane_index());
  for (std::int64_t unit = warp_unit(); unit < lines * across; unit += warp_units_in_grid()) {
    const std::int64_t line = unit / across, chunk = unit % across;
    // (r0, c0): the window's first element; it runs along the row or down the column.
    const std::int64_t r0 = along_rows ? line : line * M, c0 = along_rows ? (chunk * 32 + lane) * M : chunk * 32 + lane;
    const bool live = c0 < x.cols;
    const std::int64_t length = along_rows ? x.cols - c0 : x.rows - r0;
    const int count = !live ? 0 : length >= M ? M : int(length);
    const std::int64_t stride = along_rows ? 1 : x.ld;
    float score[M];
    load_window<M>(x.data + r0 * x.ld + c0, stride, count, along_rows && x.vector && count == M, 0.0f, score);
    bool nan = false;
    FRUGAL_UNROLL
    for (int i = 0; i < M; ++i) {
      const bool real = i < count;
      if (real && score[i] != score[i]) {
        nan = true;
        report_problem(&report->nan_count, &report->first_nan, (r0 + (along_rows ? 0 : i)) * x.cols + c0 + (along_rows ? i : 0));
      }
      // Padding: a zero weight (magnitude) or -inf (a score): it sits at the highest positions,
      // so a real element wins every tie against it.
      score[i] = !real ? (magnitude ? 0.0f : -INFINITY) : magnitude ? fabsf(score[i]) : score[i];
    }
    const unsigned kept = nan ? 0u : select_window<N, M>(score);
    if (!live) continue;
    std::uint8_t* out = mask + r0 * ld_mask + c0;
    if (along_rows && vector_mask && count == M) {
      vector<std::uint8_t, M> bytes;
      FRUGAL_UNROLL
      for (int i = 0; i < M; ++i) bytes[i] = std::uint8_t((kept >> i) & 1u);
      store_vector(out, bytes);
    } else {
      FRUGAL_UNROLL
      for (int i = 0; i < M; ++i)
        if (i < count) out[i * (along_rows ? 1 : ld_mask)] = std::uint8_t((kept >> i) & 1u);
    }
  }
}

// Compress rows of W: keep the mask's positions, or the non-zeros, or (prune) the N largest
// magnitudes; write values and packed indices, optionally the mask of what was kept.
enum class nm_keep { mask, nonzeros, magnitude };

template <class Pattern, nm_keep keep, class T, class TV>
__global__ void __launch_bounds__(nm_threads)
    nm_compress_kernel(nm_source<T> w, const std::uint8_t* mask_in, std::int64_t ld_mask_in, TV* values,
                       std::int64_t ld_values, std::uint32_t* indices, std::int64_t ld_indices, std::uint8_t* mask_out,
                       std::int64_t ld_mask_out, nm_report* report) {
  constexpr int N = Pattern::n, M = Pattern::m;
  const std::int64_t windows = Pattern::windows(w.cols), chunks = (windows + 31) / 32;
  const std::int64_t words = Pattern::index_words_per_row(w.cols);
  const int lane = int(lane_index());
  for (std::int64_t unit = warp_unit(); unit < w.rows * chunks; unit += warp_units_in_grid()) {
    const std::int64_t r = unit / chunks, window = unit % chunks * 32 + lane, c0 = window * M;
    const bool live = window < windows;
    const int count = !live ? 0 : w.cols - c0 >= M ? M : int(w.cols - c0);
    float v[M];
    load_window<M>(w.data + r * w.ld + c0, 1, count, w.vector && count == M, 0.0f, v);
    unsigned real = 0, chosen = 0;
    int chosen_count = 0;
    bool nan = false;
    FRUGAL_UNROLL
    for (int i = 0; i < M; ++i) {
      const bool is_real = i < count;
      real |= unsigned(is_real) << i;
      bool take = false;
      if constexpr (keep == nm_keep::magnitude) nan = nan || (is_real && v[i] != v[i]);
      if constexpr (keep == nm_keep::mask) take = is_real && mask_in[r * ld_mask_in + c0 + i] != 0;
      if constexpr (keep == nm_keep::nonzeros) take = is_real && v[i] != 0.0f;  // -0.0 is a zero; NaN is a value
      chosen |= unsigned(take) << i;
      chosen_count += take;
    }
    const int wanted = count < N ? count : N;
    bool written_as_zeros = false;
    if constexpr (keep == nm_keep::magnitude) {
      if (live && nan) {
        FRUGAL_UNROLL
        for (int i = 0; i < M; ++i)
          if (i < count && v[i] != v[i]) report_problem(&report->nan_count, &report->first_nan, r * w.cols + c0 + i);
        written_as_zeros = true;
      } else {
        float score[M];
        FRUGAL_UNROLL
        for (int i = 0; i < M; ++i) score[i] = i < count ? fabsf(v[i]) : 0.0f;
        chosen = select_window<N, M>(score) & real;
      }
    } else if (live && keep == nm_keep::mask && chosen_count != wanted) {
      report_problem(&report->invalid_windows, &report->first_invalid, r * w.cols + c0);
      written_as_zeros = true;
    } else if (live && keep == nm_keep::nonzeros && chosen_count > N) {
      report_problem(&report->overfull_windows, &report->first_overfull, r * w.cols + c0);
      atomicMax(&report->most_nonzeros, static_cast<unsigned long long>(chosen_count));
      written_as_zeros = true;
    }
    if (written_as_zeros) chosen = 0;
    const unsigned kept = written_as_zeros ? (1u << N) - 1u : fill_window<N, M>(chosen);
    if (live) {
      float kept_value[N];
      kept_values<N, M>(kept, chosen, v, kept_value);
      TV* out = values + r * ld_values + window * N;
      FRUGAL_UNROLL
      for (int j = 0; j < N; ++j) out[j] = from_float<TV>(kept_value[j]);
      if (mask_out) {
        FRUGAL_UNROLL
        for (int i = 0; i < M; ++i)
          if (i < count) mask_out[r * ld_mask_out + c0 + i] = std::uint8_t((chosen >> i) & 1u);
      }
    }
    warp_store_indices<Pattern>(live ? kept : 0u, indices + r * ld_indices, unit % chunks * 32, words);
  }
}

template <class Pattern, class TV, class T>
__global__ void __launch_bounds__(nm_threads)
    nm_decompress_kernel(const TV* values, std::int64_t ld_values, const std::uint32_t* indices, std::int64_t ld_indices,
                         std::int64_t rows, std::int64_t k, T* dense, std::int64_t ld, nm_report* report) {
  constexpr int N = Pattern::n, M = Pattern::m;
  const std::int64_t windows = Pattern::windows(k), chunks = (windows + 31) / 32;
  for (std::int64_t unit = warp_unit(); unit < rows * chunks; unit += warp_units_in_grid()) {
    const std::int64_t r = unit / chunks, window = unit % chunks * 32 + lane_index(), c0 = window * M;
    if (window >= windows) continue;
    float kept_value[N];
    unsigned kept = 0;
    int previous = -1;
    bool ascending = true;
    FRUGAL_UNROLL
    for (int j = 0; j < N; ++j) {
      const int p = int(packed_index<Pattern>(indices + r * ld_indices, window * N + j));
      kept_value[j] = to_float(values[r * ld_values + window * N + j]);
      // Ascending, and a value past K (padding) must be zero.
      ascending = ascending && p > previous && (c0 + p < k || kept_value[j] == 0.0f);
      previous = p;
      kept |= 1u << p;
    }
    if (!ascending) {
      report_problem(&report->invalid_windows, &report->first_invalid, r * k + c0);
      kept = 0;
    }
    float out[M];
    expand_window<N, M>(kept, kept_value, out);
    FRUGAL_UNROLL
    for (int i = 0; i < M; ++i)
      if (c0 + i < k) dense[r * ld + c0 + i] = from_float<T>(out[i]);
  }
}

// 4 x 4 blocks: which block a thread owns. A warp covers 8 block-rows x 4 block-columns, so its
// loads of each row touch 64 contiguous bytes and its W^T writes of each column 8 windows.
struct block4_place {
  std::int64_t br, bc;
  bool live;
};
FRUGAL_DEVICE block4_place block4_of(std::int64_t unit, std::int64_t block_rows, std::int64_t block_cols) {
  const std::int64_t bands = (block_cols + 3) / 4;
  const std::int64_t band_row = unit / bands, band_col = unit % bands;
  const int lane = int(lane_index());
  const std::int64_t br = band_row * 8 + lane / 4, bc = band_col * 4 + lane % 4;
  return {br, bc, br < block_rows && bc < block_cols};
}
FRUGAL_HOST_DEVICE std::int64_t block4_units(std::int64_t block_rows, std::int64_t block_cols) {
  return (block_rows + 7) / 8 * ((block_cols + 3) / 4);
}

// Loads a 4 x 4 block of magnitudes; positions outside the matrix score -1 (below every real
// magnitude, so patterns keep real elements where the structure allows). NaN is reported.
template <class T>
FRUGAL_DEVICE bool load_block4(const T* x, std::int64_t ld, std::int64_t rows, std::int64_t cols, std::int64_t r0, std::int64_t c0,
                               float (&value)[16], float (&score)[16], nm_report* report) {
  bool nan = false;
  FRUGAL_UNROLL
  for (int i = 0; i < 16; ++i) {
    const std::int64_t r = r0 + i / 4, c = c0 + i % 4;
    const bool real = r < rows && c < cols;
    value[i] = real ? to_float(x[r * ld + c]) : 0.0f;
    score[i] = real ? fabsf(value[i]) : -1.0f;
    if (real && value[i] != value[i]) {
      nan = true;
      report_problem(&report->nan_count, &report->first_nan, r * cols + c);
    }
  }
  return nan;
}

template <int N, class T>
__global__ void __launch_bounds__(nm_threads)
    nm_transposable_mask4_kernel(nm_source<T> x, std::uint8_t* mask, std::int64_t ld_mask, nm_report* report) {
  const std::int64_t block_rows = (x.rows + 3) / 4, block_cols = (x.cols + 3) / 4;
  for (std::int64_t unit = warp_unit(); unit < block4_units(block_rows, block_cols); unit += warp_units_in_grid()) {
    const block4_place b = block4_of(unit, block_rows, block_cols);
    if (!b.live) continue;
    float value[16], score[16];
    const bool nan = load_block4(x.data, x.ld, x.rows, x.cols, 4 * b.br, 4 * b.bc, value, score, report);
    const unsigned kept = nan ? 0u : select_block4<N>(score);
    FRUGAL_UNROLL
    for (int i = 0; i < 16; ++i) {
      const std::int64_t r = 4 * b.br + i / 4, c = 4 * b.bc + i % 4;
      if (r < x.rows && c < x.cols) mask[r * ld_mask + c] = std::uint8_t((kept >> i) & 1u);
    }
  }
}

// M = 8, 16: a warp owns an M x M block (lane l: entries l E .. l E + E - 1 row-major) and runs
// the greedy with completion. Positions outside the matrix score -1.
template <int N, int M, class T>
__global__ void __launch_bounds__(nm_threads)
    nm_transposable_mask_greedy_kernel(nm_source<T> x, std::uint8_t* mask, std::int64_t ld_mask, nm_report* report) {
  constexpr int E = M * M / 32;
  const std::int64_t block_rows = (x.rows + M - 1) / M, block_cols = (x.cols + M - 1) / M;
  const int lane = int(lane_index());
  for (std::int64_t unit = warp_unit(); unit < block_rows * block_cols; unit += warp_units_in_grid()) {
    const std::int64_t r0 = unit / block_cols * M, c0 = unit % block_cols * M;
    float score[E];
    bool nan = false;
    FRUGAL_UNROLL
    for (int e = 0; e < E; ++e) {
      const int flat = lane * E + e;
      const std::int64_t r = r0 + flat / M, c = c0 + flat % M;
      const bool real = r < x.rows && c < x.cols;
      const float v = real ? to_float(x.data[r * x.ld + c]) : 0.0f;
      score[e] = real ? fabsf(v) : -1.0f;
      if (real && v != v) {
        nan = true;
        report_problem(&report->nan_count, &report->first_nan, r * x.cols + c);
      }
    }
    const bool any_nan = warp_any(nan);
    const unsigned taken = any_nan ? 0u : warp_transposable_greedy<N, M>(score);
    FRUGAL_UNROLL
    for (int e = 0; e < E; ++e) {
      const int flat = lane * E + e;
      const std::int64_t r = r0 + flat / M, c = c0 + flat % M;
      if (r < x.rows && c < x.cols) mask[r * ld_mask + c] = std::uint8_t((taken >> e) & 1u);
    }
  }
}

// Canonical 2:4 indices <-> CUTLASS / PyTorch reordered int16 metadata: a permutation of 16-bit
// words; one thread per 32-bit index word (metadata columns 2w and 2w + 1, its two halves).
template <bool ToCutlass>
__global__ void nm24_meta_kernel(std::uint32_t* indices, std::int64_t ld_indices, std::int16_t* meta, std::int64_t rows, std::int64_t k) {
  const std::int64_t words = k / 32;
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * words; i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / words, w = i % words;
    std::int16_t& low = meta[cutlass_meta_offset(r, 2 * w, rows)];
    std::int16_t& high = meta[cutlass_meta_offset(r, 2 * w + 1, rows)];
    if constexpr (ToCutlass) {
      const std::uint32_t word = indices[r * ld_indices + w];
      low = std::int16_t(std::uint16_t(word));
      high = std::int16_t(std::uint16_t(word >> 16));
    } else {
      indices[r * ld_indices + w] = std::uint32_t(std::uint16_t(low)) | std::uint32_t(std::uint16_t(high)) << 16;
    }
  }
}

}  // namespace frugal::sparse::detail

// SPDX-License-Identifier: Apache-2.0
//! @file
//! N:M sparsity, device-wide: masks (magnitude or a user score, along rows or columns), the
//! canonical compressed format (prune, compress, decompress). Memory-bound, one pass each,
//! stream-ordered, no allocation. What was wrong with the input (NaN, overfull windows, a mask
//! that keeps other than N) is written to a device nm_report: nothing is dropped silently, and
//! report_status turns the report into a message once you have copied it back. docs/sparse.md.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/sparse/device_nm.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/launch.cuh>
#include <frugal/sparse/detail/nm_kernels.cuh>
#include <frugal/sparse/nm.cuh>

#include <cstdint>
#include <type_traits>

namespace frugal::sparse {

//! What a mask is made from: the magnitude |x| of a weight, or a score as it is (larger is kept).
enum class nm_score { magnitude, value };

//! The first problem a report holds, as a status (ok when there is none).
inline status report_status(const nm_report& r) {
  if (r.nan_count) return status::invalid("frugal::sparse: a score is NaN (nm_report::first_nan holds the first position)");
  if (r.overfull_windows)
    return status::invalid("frugal::sparse: a window holds more than N non-zeros (nm_report::first_overfull, most_nonzeros)");
  if (r.invalid_windows)
    return status::invalid("frugal::sparse: a mask or index window does not name N distinct positions (nm_report::first_invalid)");
  return status{};
}

namespace detail {

template <class T>
status check_matrix(const T* p, std::int64_t ld, std::int64_t rows, std::int64_t cols, const char* null_message, const char* ld_message) {
  if (rows > 0 && cols > 0 && p == nullptr) return status::invalid(null_message);
  if (rows > 0 && cols > 0 && ld < cols) return status::invalid(ld_message);
  if (!is_aligned(p, alignof(T))) return status::misaligned("frugal::sparse: a matrix is not aligned to its element size");
  return status{};
}

// Whether windows of M elements of each row start on a boundary of the vector access load_floats
// makes (min(16 bytes, M elements)).
template <int M, class T>
bool windows_vectorizable(const T* p, std::int64_t ld) {
  const std::size_t access = std::size_t(M) * sizeof(T) < 16 ? std::size_t(M) * sizeof(T) : 16;
  return is_aligned(p, access) && (std::size_t(ld) * sizeof(T)) % access == 0;
}

inline status launch_units(std::int64_t units, dim3& grid) {
  if (units < 0) return status::invalid("frugal::sparse: sizes must be >= 0");
  const std::int64_t blocks = (units * 32 + nm_threads - 1) / nm_threads;
  grid = dim3(unsigned(blocks < 65536 * 16 ? blocks : 65536 * 16));  // grid-stride beyond
  return status{};
}

inline status reset_report(nm_report* report, cudaStream_t stream) {
  if (!report) return status::invalid("frugal::sparse: the report is null (errors are written there)");
  return launch(nm_report_reset_kernel<>, launch_config{dim3(1), dim3(1), 0, stream}, report);
}

}  // namespace detail

//! mask[r, c] = 1 where the N:M pattern keeps (r, c) of x [rows, cols]: the N largest scores of
//! every window of M, windows along each row (nm_axis::rows: a weight [rows, K]) or down each
//! column (nm_axis::columns: a weight stored [K, rows]); ties keep the lower position; -0.0 is a
//! zero magnitude; a line's last window is padded (a real element wins ties against padding).
//! A NaN is counted in *report with its position and its window is left all zero. x: float,
//! __half or __nv_bfloat16; mask uint8 [rows, ld_mask].
template <class Pattern, class T>
status nm_mask(const T* x, std::int64_t ld, std::uint8_t* mask, std::int64_t ld_mask, nm_report* report, std::int64_t rows,
               std::int64_t cols, nm_axis axis = nm_axis::rows, nm_score score = nm_score::magnitude, cudaStream_t stream = nullptr) {
  static_assert(is_nm_v<Pattern>, "frugal::sparse::nm_mask: Pattern must be frugal::sparse::nm<N, M>");
  static_assert(is_io_float_v<T>, "frugal::sparse::nm_mask: x must be float, __half or __nv_bfloat16");
  if (rows < 0 || cols < 0) return status::invalid("frugal::sparse::nm_mask: rows and cols must be >= 0");
  FRUGAL_TRY(detail::check_matrix(x, ld, rows, cols, "frugal::sparse::nm_mask: x is null", "frugal::sparse::nm_mask: ld must be >= cols"));
  FRUGAL_TRY(detail::check_matrix(mask, ld_mask, rows, cols, "frugal::sparse::nm_mask: mask is null",
                                  "frugal::sparse::nm_mask: ld_mask must be >= cols"));
  FRUGAL_TRY(detail::reset_report(report, stream));
  const bool along_rows = axis == nm_axis::rows;
  const std::int64_t units = along_rows ? rows * ((Pattern::windows(cols) + 31) / 32) : Pattern::windows(rows) * ((cols + 31) / 32);
  dim3 grid;
  FRUGAL_TRY(detail::launch_units(units, grid));
  const detail::nm_source<T> source{x, ld, rows, cols, detail::windows_vectorizable<Pattern::m>(x, ld)};
  const bool vector_mask = is_aligned(mask, Pattern::m) && ld_mask % Pattern::m == 0;
  return launch(detail::nm_mask_kernel<Pattern, T>, launch_config{grid, dim3(detail::nm_threads), 0, stream}, source, along_rows,
                score == nm_score::magnitude, mask, ld_mask, vector_mask, report);
}

//! A transposable N:M mask of x [rows, cols]: every M x M block keeps N in each row and each
//! column (W and W^T both N:M). M = 4: the pattern with the largest sum of |x| among all valid
//! ones (select_block4: ties to the first in its order). M = 8, 16: the greedy of
//! warp_transposable_greedy (largest |x| first, completed by augmenting paths; its quality against
//! the exact optimum is measured in docs/sparse.md). At the edges (rows or cols not multiples of
//! M) positions outside the matrix count below any real element, yet the block structure can
//! still leave an edge row or column fewer than N real kept positions. A NaN is reported and its
//! block left all zero.
template <class Pattern, class T>
status nm_transposable_mask(const T* x, std::int64_t ld, std::uint8_t* mask, std::int64_t ld_mask, nm_report* report, std::int64_t rows,
                            std::int64_t cols, cudaStream_t stream = nullptr) {
  static_assert(is_nm_v<Pattern>, "frugal::sparse::nm_transposable_mask: Pattern must be frugal::sparse::nm<N, M>");

  static_assert(is_io_float_v<T>, "frugal::sparse::nm_transposable_mask: x must be float, __half or __nv_bfloat16");
  if (rows < 0 || cols < 0) return status::invalid("frugal::sparse::nm_transposable_mask: rows and cols must be >= 0");
  FRUGAL_TRY(detail::check_matrix(x, ld, rows, cols, "frugal::sparse::nm_transposable_mask: x is null",
                                  "frugal::sparse::nm_transposable_mask: ld must be >= cols"));
  FRUGAL_TRY(detail::check_matrix(mask, ld_mask, rows, cols, "frugal::sparse::nm_transposable_mask: mask is null",
                                  "frugal::sparse::nm_transposable_mask: ld_mask must be >= cols"));
  FRUGAL_TRY(detail::reset_report(report, stream));
  dim3 grid;
  constexpr int M = Pattern::m;
  if constexpr (M == 4) {
    FRUGAL_TRY(detail::launch_units(detail::block4_units((rows + 3) / 4, (cols + 3) / 4), grid));
    return launch(detail::nm_transposable_mask4_kernel<Pattern::n, T>, launch_config{grid, dim3(detail::nm_threads), 0, stream},
                  detail::nm_source<T>{x, ld, rows, cols, false}, mask, ld_mask, report);
  } else {
    FRUGAL_TRY(detail::launch_units(((rows + M - 1) / M) * ((cols + M - 1) / M), grid));
    return launch(detail::nm_transposable_mask_greedy_kernel<Pattern::n, M, T>, launch_config{grid, dim3(detail::nm_threads), 0, stream},
                  detail::nm_source<T>{x, ld, rows, cols, false}, mask, ld_mask, report);
  }
}

namespace detail {
template <class Pattern, nm_keep keep, class T, class TV>
status launch_compress(const char* name_null, const T* w, std::int64_t ld, const std::uint8_t* mask_in,
                       std::int64_t ld_mask_in, TV* values, std::int64_t ld_values, std::uint32_t* indices, std::int64_t ld_indices,
                       std::uint8_t* mask_out, std::int64_t ld_mask_out, nm_report* report, std::int64_t rows, std::int64_t k,
                       cudaStream_t stream) {
  if (rows < 0 || k < 0) return status::invalid("frugal::sparse: rows and K must be >= 0");
  if (rows > 0 && k > 0 && (!w || !values || !indices)) return status::invalid(name_null);
  FRUGAL_TRY(check_matrix(w, ld, rows, k, name_null, "frugal::sparse: ld must be >= K"));
  FRUGAL_TRY(check_matrix(values, ld_values, rows, Pattern::values_per_row(k), name_null,
                          "frugal::sparse: ld_values must be >= nm<N, M>::values_per_row(K)"));
  FRUGAL_TRY(check_matrix(indices, ld_indices, rows, Pattern::index_words_per_row(k), name_null,
                          "frugal::sparse: ld_indices must be >= nm<N, M>::index_words_per_row(K)"));
  if (mask_in) FRUGAL_TRY(check_matrix(mask_in, ld_mask_in, rows, k, name_null, "frugal::sparse: ld_mask must be >= K"));
  if (mask_out) FRUGAL_TRY(check_matrix(mask_out, ld_mask_out, rows, k, name_null, "frugal::sparse: ld_mask must be >= K"));
  FRUGAL_TRY(reset_report(report, stream));
  dim3 grid;
  FRUGAL_TRY(launch_units(rows * ((Pattern::windows(k) + 31) / 32), grid));
  const nm_source<T> source{w, ld, rows, k, windows_vectorizable<Pattern::m>(w, ld)};
  return launch(nm_compress_kernel<Pattern, keep, T, TV>, launch_config{grid, dim3(nm_threads), 0, stream}, source, mask_in,
                ld_mask_in, values, ld_values, indices, ld_indices, mask_out, ld_mask_out, report);
}
}  // namespace detail

//! The canonical compressed form of W [rows, K] (docs/sparse.md): values [rows, ld_values] (the N
//! kept values of each window, ascending position, rounded to TV) and indices [rows, ld_indices]
//! 32-bit words (each kept value's position in its window, ceil(log2 M) bits, LSB first; for 2:4
//! the hardware's nibbles). With a mask (uint8 [rows, ld_mask]): exactly its positions; a window
//! whose mask keeps other than min(N, its elements) is reported invalid and written as zeros.
//! Without: the window's non-zeros (-0.0 is a zero), then its lowest zero positions; more than N
//! non-zeros is reported (overfull, with the largest count) and written as zeros: prune first.
template <class Pattern, class T, class TV>
status nm_compress(const T* w, std::int64_t ld, const std::uint8_t* mask, std::int64_t ld_mask, TV* values, std::int64_t ld_values,
                   std::uint32_t* indices, std::int64_t ld_indices, nm_report* report, std::int64_t rows, std::int64_t k,
                   cudaStream_t stream = nullptr) {
  static_assert(is_nm_v<Pattern>, "frugal::sparse::nm_compress: Pattern must be frugal::sparse::nm<N, M>");
  static_assert(is_io_float_v<T> && is_io_float_v<TV>, "frugal::sparse::nm_compress: W and values must be float, __half or __nv_bfloat16");
  if (mask)
    return detail::launch_compress<Pattern, detail::nm_keep::mask>("frugal::sparse::nm_compress: a pointer is null", w, ld, mask,
                                                                    ld_mask, values, ld_values, indices, ld_indices,
                                                                    static_cast<std::uint8_t*>(nullptr), 0, report, rows, k, stream);
  return detail::launch_compress<Pattern, detail::nm_keep::nonzeros>("frugal::sparse::nm_compress: a pointer is null", w, ld, mask,
                                                                      ld_mask, values, ld_values, indices, ld_indices,
                                                                      static_cast<std::uint8_t*>(nullptr), 0, report, rows, k, stream);
}

//! Magnitude pruning straight to the canonical form, in one pass: each window keeps its N
//! largest |w| (ties to the lower position); `mask` (optional, uint8 [rows, ld_mask]) records
//! them. A window holding a NaN is reported with its position and written as zeros.
template <class Pattern, class T, class TV>
status nm_prune(const T* w, std::int64_t ld, TV* values, std::int64_t ld_values, std::uint32_t* indices, std::int64_t ld_indices,
                std::uint8_t* mask, std::int64_t ld_mask, nm_report* report, std::int64_t rows, std::int64_t k, cudaStream_t stream = nullptr) {
  static_assert(is_nm_v<Pattern>, "frugal::sparse::nm_prune: Pattern must be frugal::sparse::nm<N, M>");
  static_assert(is_io_float_v<T> && is_io_float_v<TV>, "frugal::sparse::nm_prune: W and values must be float, __half or __nv_bfloat16");
  return detail::launch_compress<Pattern, detail::nm_keep::magnitude>("frugal::sparse::nm_prune: a pointer is null", w, ld,
                                                                       static_cast<const std::uint8_t*>(nullptr), 0, values, ld_values,
                                                                       indices, ld_indices, mask, ld_mask, report, rows, k, stream);
}

//! The masked dense W [rows, K] from its canonical form (every element written: zeros where
//! pruned). A window whose indices are not strictly ascending, or that holds a non-zero value at
//! a padding position past K, is reported invalid and left zero.
template <class Pattern, class TV, class T>
status nm_decompress(const TV* values, std::int64_t ld_values, const std::uint32_t* indices, std::int64_t ld_indices, T* dense,
                     std::int64_t ld, nm_report* report, std::int64_t rows, std::int64_t k, cudaStream_t stream = nullptr) {
  static_assert(is_nm_v<Pattern>, "frugal::sparse::nm_decompress: Pattern must be frugal::sparse::nm<N, M>");
  static_assert(is_io_float_v<T> && is_io_float_v<TV>, "frugal::sparse::nm_decompress: values and W must be float, __half or __nv_bfloat16");
  if (rows < 0 || k < 0) return status::invalid("frugal::sparse::nm_decompress: rows and K must be >= 0");
  FRUGAL_TRY(detail::check_matrix(values, ld_values, rows, Pattern::values_per_row(k), "frugal::sparse::nm_decompress: a pointer is null",
                                  "frugal::sparse::nm_decompress: ld_values must be >= nm<N, M>::values_per_row(K)"));
  FRUGAL_TRY(detail::check_matrix(indices, ld_indices, rows, Pattern::index_words_per_row(k), "frugal::sparse::nm_decompress: a pointer is null",
                                  "frugal::sparse::nm_decompress: ld_indices must be >= nm<N, M>::index_words_per_row(K)"));
  FRUGAL_TRY(detail::check_matrix(dense, ld, rows, k, "frugal::sparse::nm_decompress: a pointer is null",
                                  "frugal::sparse::nm_decompress: ld must be >= K"));
  FRUGAL_TRY(detail::reset_report(report, stream));
  dim3 grid;
  FRUGAL_TRY(detail::launch_units(rows * ((Pattern::windows(k) + 31) / 32), grid));
  return launch(detail::nm_decompress_kernel<Pattern, TV, T>, launch_config{grid, dim3(detail::nm_threads), 0, stream}, values,
                ld_values, indices, ld_indices, rows, k, dense, ld, report);
}

namespace detail {
inline status check_nm24_meta(const void* indices, std::int64_t ld_indices, const void* meta, std::int64_t rows, std::int64_t k) {
  if (rows < 0 || k < 0 || rows % 32 != 0 || k % 32 != 0)
    return status::invalid("frugal::sparse::nm24 metadata: rows and K must be multiples of 32 (CUTLASS's reordering)");
  if (rows > 0 && k > 0 && (!indices || !meta)) return status::invalid("frugal::sparse::nm24 metadata: a pointer is null");
  if (rows > 0 && ld_indices < k / 32) return status::invalid("frugal::sparse::nm24 metadata: ld_indices must be >= K / 32");
  if (!is_aligned(indices, 4) || !is_aligned(meta, 2)) return status::misaligned("frugal::sparse::nm24 metadata: misaligned pointer");
  return status{};
}
}  // namespace detail

//! Canonical 2:4 indices [rows, ld_indices words] -> the reordered int16 metadata [rows, K / 16]
//! of CUTLASS's sparse GEMMs and PyTorch's semi-structured tensors (cutlass_meta_offset), so
//! weights compressed by frugal run in them; values need no conversion (both keep the two values
//! of each chunk in ascending position). rows and K multiples of 32 (PyTorch also needs K % 64
//! for 16-bit values). Checked against PyTorch's own conversion (tests/data).
inline status nm24_to_cutlass_meta(const std::uint32_t* indices, std::int64_t ld_indices, std::int16_t* meta, std::int64_t rows,
                                   std::int64_t k, cudaStream_t stream = nullptr) {
  FRUGAL_TRY(detail::check_nm24_meta(indices, ld_indices, meta, rows, k));
  const std::int64_t n = rows * (k / 32);
  return launch(detail::nm24_meta_kernel<true>, launch_config{dim3(unsigned((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096)), dim3(256), 0, stream},
                const_cast<std::uint32_t*>(indices), ld_indices, meta, rows, k);
}

//! The reordered int16 metadata [rows, K / 16] (CUTLASS, PyTorch) -> canonical 2:4 indices.
inline status nm24_from_cutlass_meta(const std::int16_t* meta, std::uint32_t* indices, std::int64_t ld_indices, std::int64_t rows,
                                     std::int64_t k, cudaStream_t stream = nullptr) {
  FRUGAL_TRY(detail::check_nm24_meta(indices, ld_indices, meta, rows, k));
  const std::int64_t n = rows * (k / 32);
  return launch(detail::nm24_meta_kernel<false>, launch_config{dim3(unsigned((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096)), dim3(256), 0, stream},
                indices, ld_indices, const_cast<std::int16_t*>(meta), rows, k);
}

}  // namespace frugal::sparse

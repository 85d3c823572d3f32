// SPDX-License-Identifier: Apache-2.0
// Argument checks shared by permute and combine: sizes, the 16-byte vector rule, alignment.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/detail/dispatch_checks.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/vector_io.cuh>
#include <frugal/moe/detail/dispatch_kernels.cuh>
#include <frugal/moe/dispatch_config.cuh>

#include <climits>
#include <cstdint>

namespace frugal::moe::detail {

// Elements of T in one 16-byte access: hidden must be a multiple, rows 16-byte aligned.
template <class T>
inline constexpr int dispatch_vector = vector_width_16B<T>;

template <class T>
status check_rows(const char* who_hidden, const char* who_aligned, int hidden, std::initializer_list<const void*> pointers) {
  if (hidden < 1 || hidden % dispatch_vector<T> != 0) return status::invalid(who_hidden);
  for (const void* p : pointers)
    if (p && !is_aligned(p, 16)) return status::misaligned(who_aligned);
  return status{};
}

// Sizes: slots t*k and rows must fit in int32 (the plan's maps; int64 maps hold the same values),
// checked without overflow.
inline status check_counts(const char* message, std::int64_t tokens, std::int64_t rows, int k) {
  if (tokens < 0 || rows < 0 || k < 1 || k > 32 || tokens > INT32_MAX / k || rows > INT32_MAX) return status::invalid(message);
  return status{};
}

// The sizes of a permute or combine (check_counts' rule); message: the entry point's own.
inline status check_shape(const char* message, const dispatch_shape& s) { return check_counts(message, s.tokens, s.rows, s.k); }

// Row strides: 0 (hidden), or at least hidden and whole 16-byte vectors of the rows' element type
// (TokenT for the token-side arrays, RowT for the expert-major buffer), so rows stay aligned.
template <class TokenT, class RowT = TokenT>
status check_strides(const char* message, const dispatch_shape& s) {
  auto fits = [&](std::int64_t ld, int vector) { return ld == 0 || (ld >= s.hidden && ld % vector == 0 && ld <= (std::int64_t(1) << 40)); };
  if (!fits(s.ld_tokens, dispatch_vector<TokenT>) || !fits(s.ld_rows, dispatch_vector<RowT>)) return status::invalid(message);
  return status{};
}

// The kernels' view of the problem.
template <class Index>
move_problem<Index> move_problem_of(const dispatch_shape& s, const dispatch_maps_of<Index>& maps, bool pad) {
  return {s.tokens, s.hidden, s.k, maps.row_to_slot, maps.slot_to_row, maps.total_rows, s.rows, pad, token_stride(s), row_stride(s)};
}

// Whether the expert-major buffer `out` [rows, hidden] (stride ld_rows) overlaps the token rows
// x [T, hidden] (stride ld_tokens) or the maps (a permute-like call that writes rows from tokens).
template <class T, class U, class Index>
bool moved_rows_overlap(const dispatch_shape& s, const T* x, const U* out, const dispatch_maps_of<Index>& maps) {
  using frugal::detail::byte_range;
  return frugal::detail::any_overlap(
      frugal::detail::ranges(byte_range(out, s.rows, s.hidden, row_stride(s))),
      frugal::detail::ranges(byte_range(x, s.tokens, s.hidden, token_stride(s)), byte_range(maps.row_to_slot, s.rows),
                             byte_range(maps.slot_to_row, s.tokens * s.k), byte_range(maps.total_rows, 1)));
}

// Blocks for a grid-stride loop over `items` rows: enough to fill the device, no more.
inline status row_grid(std::int64_t items, dim3& grid) {
  int sms = 0;
  FRUGAL_TRY(multiprocessor_count(sms));
  const std::int64_t cap = std::int64_t(sms) * 16;
  grid = dim3(unsigned(items < cap ? (items > 0 ? items : 1) : cap));
  return status{};
}

// Blocks for a kernel built on for_each_source: it loops over tokens (with the forward map) and
// over rows.
inline status source_grid(std::int64_t tokens, std::int64_t rows, const void* slot_to_row, dim3& grid) {
  return row_grid(slot_to_row && tokens > rows ? tokens : rows, grid);
}

}  // namespace frugal::moe::detail

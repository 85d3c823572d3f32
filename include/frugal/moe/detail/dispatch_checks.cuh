// SPDX-License-Identifier: Apache-2.0
// Argument checks shared by permute and combine: sizes, the 16-byte vector rule, alignment.
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/vector_io.cuh>

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

// Sizes: slots t*k and rows are int32 in the maps, so both must fit (checked without overflow).
inline status check_counts(const char* message, std::int64_t tokens, std::int64_t rows, int k) {
  if (tokens < 0 || rows < 0 || k < 1 || k > 32 || tokens > INT32_MAX / k || rows > INT32_MAX) return status::invalid(message);
  return status{};
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
inline status source_grid(std::int64_t tokens, std::int64_t rows, const std::int32_t* slot_to_row, dim3& grid) {
  return row_grid(slot_to_row && tokens > rows ? tokens : rows, grid);
}

}  // namespace frugal::moe::detail

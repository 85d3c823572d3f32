// SPDX-License-Identifier: Apache-2.0
//! @file
//! Host reference for frugal::topk, written for clarity: a stable sort of each row's indices by
//! the documented order. Independent of the key encoding the device code uses.
#pragma once

#include <frugal/core/numeric.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace frugal::reference {

//! True if (a, ia) is selected before (b, ib): larger first, NaN smallest, equal values by index.
inline bool selected_before(float a, std::int64_t ia, float b, std::int64_t ib) {
  const bool na = std::isnan(a), nb = std::isnan(b);
  if (na || nb) return na == nb ? ia < ib : nb;
  if (a != b) return a > b;  // -0.0 == +0.0 falls through to the index
  return ia < ib;
}

//! Top-k of each row of `in` ([rows, cols]); writes [rows, k] values and indices.
template <class T>
void topk(const T* in, T* out_values, std::int32_t* out_indices, std::int64_t rows, int cols, int k) {
  std::vector<std::int32_t> order(static_cast<std::size_t>(cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* row = in + r * cols;
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
      return selected_before(to_float(row[a]), a, to_float(row[b]), b);
    });
    for (int j = 0; j < k; ++j) {
      if (out_values) out_values[r * k + j] = row[order[std::size_t(j)]];
      if (out_indices) out_indices[r * k + j] = order[std::size_t(j)];
    }
  }
}

}  // namespace frugal::reference

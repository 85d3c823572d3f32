// SPDX-License-Identifier: Apache-2.0
// What the contrastive-loss tests share: random embeddings and the error of a gradient relative
// to its scale.
#pragma once

#include <frugal/core/numeric.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace frugal::test {

// Rows of independent N(0, spread^2) elements, rounded to T.
template <class T>
std::vector<T> random_rows(std::int64_t rows, int dim, float spread, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<T> v(std::size_t(rows * dim));
  for (auto& e : v) e = from_float<T>(normal(rng));
  return v;
}

// Largest |got - want| over the largest |want| in elements [begin, end) (all when end is 0): the
// gradient's error relative to its scale. A NaN, or a size mismatch, is infinitely wrong.
template <class G>
double relative_error(const std::vector<G>& got, const std::vector<double>& want, std::size_t begin = 0, std::size_t end = 0) {
  if (got.size() != want.size()) return INFINITY;
  double err = 0.0, scale = 1e-30;
  for (std::size_t i = begin; i < (end ? end : want.size()); ++i) {
    const double e = std::abs(double(to_float(got[i])) - want[i]);
    if (!(e <= err)) err = std::isnan(e) ? INFINITY : e;
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / scale;
}

}  // namespace frugal::test

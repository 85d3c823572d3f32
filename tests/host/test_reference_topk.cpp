// SPDX-License-Identifier: Apache-2.0
// frugal::reference::topk against a brute-force selection that repeatedly takes the best
// remaining element by the documented rules.
#include <frugal/reference/topk.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace {

std::vector<std::int32_t> brute_force(const std::vector<float>& row, int k) {
  std::vector<bool> taken(row.size(), false);
  std::vector<std::int32_t> out;
  for (int j = 0; j < k; ++j) {
    int best = -1;
    for (int i = 0; i < int(row.size()); ++i) {
      if (taken[i]) continue;
      if (best < 0) { best = i; continue; }
      const float a = row[i], b = row[best];
      bool better;
      if (std::isnan(b)) better = !std::isnan(a);  // any number beats NaN; equal NaNs keep the lower index
      else if (std::isnan(a)) better = false;
      else better = a > b;                          // equal numbers keep the lower index
      if (better) best = i;
    }
    taken[best] = true;
    out.push_back(best);
  }
  return out;
}

}  // namespace

TEST_CASE("reference topk equals brute force on tie-heavy rows with NaN and signed zeros") {
  std::mt19937_64 rng(7);
  for (int t = 0; t < 2000; ++t) {
    const int cols = 1 + int(rng() % 70), k = 1 + int(rng() % cols);
    std::vector<float> row(cols);
    for (auto& v : row) {
      const unsigned r = unsigned(rng() % 12);
      v = r == 0 ? std::numeric_limits<float>::quiet_NaN() : r == 1 ? -0.0f : r == 2 ? 0.0f
                                                              : float(int(rng() % 7) - 3);
    }
    std::vector<float> values(k);
    std::vector<std::int32_t> indices(k);
    frugal::reference::topk(row.data(), values.data(), indices.data(), 1, cols, k);
    INFO("trial " << t);
    REQUIRE(indices == brute_force(row, k));
    for (int j = 0; j < k; ++j) REQUIRE(std::memcmp(&values[j], &row[indices[j]], sizeof(float)) == 0);
  }
}

TEST_CASE("reference topk: ties go to the lower index, NaN last, -0.0 equals +0.0") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> row = {nan, 0.0f, -0.0f, 3.0f, 3.0f, nan, -5.0f};
  std::vector<float> v(7);
  std::vector<std::int32_t> i(7);
  frugal::reference::topk(row.data(), v.data(), i.data(), 1, 7, 7);
  CHECK(i == std::vector<std::int32_t>{3, 4, 1, 2, 6, 0, 5});
  CHECK(std::signbit(v[3]));  // the -0.0 at index 2 is reported as found
}

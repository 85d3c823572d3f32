// SPDX-License-Identifier: Apache-2.0
// The dispatch reference on the CPU: a hand-checked plan in every layout, capacity arithmetic,
// and the combine gradients against finite differences in fp64.
#include <frugal/reference/moe_dispatch.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

using namespace frugal;

TEST_CASE("capacity arithmetic: factor, minimum, multiple, absolute, dropless") {
  moe::plan_params p;
  CHECK(moe::plan_capacity(100, 2, 8, p) == 0);  // dropless
  p.policy = moe::drop_policy::token_order;
  p.capacity_factor = 1.0f;
  CHECK(moe::plan_capacity(100, 2, 8, p) == 25);
  p.capacity_factor = 1.25f;
  CHECK(moe::plan_capacity(100, 2, 8, p) == 32);  // ceil(31.25)
  p.capacity_multiple = 8;
  CHECK(moe::plan_capacity(100, 2, 8, p) == 32);
  p.capacity_factor = 0.01f;
  p.min_capacity = 5;
  CHECK(moe::plan_capacity(100, 2, 8, p) == 8);  // min 5, rounded to 8
  p.capacity = 3;
  CHECK(moe::plan_capacity(100, 2, 8, p) == 3);
  p.layout = moe::placement::masked;
  CHECK(moe::plan_max_rows(100, 2, 8, p) == 24);
  p = {};
  p.block_size = 16;
  CHECK(moe::plan_max_rows(100, 2, 8, p) == 200 + 8 * 15);
}

TEST_CASE("reference plan: a hand-checked example in the packed and masked layouts") {
  // T = 4 tokens, k = 2, E = 3.  slots: t0 -> (2, 0), t1 -> (0, -1), t2 -> (0, 2), t3 -> (0, 1)
  const std::vector<std::int32_t> ids = {2, 0, 0, -1, 0, 2, 0, 1};
  const std::vector<float> weights = {0.9f, 0.1f, 0.2f, 0.0f, 0.7f, 0.3f, 0.5f, 0.5f};
  moe::plan_params p;
  p.block_size = 2;
  auto r = reference::plan(ids.data(), weights.data(), 4, 2, 3, p);
  // expert 0: slots 1, 2, 4, 6 (4 rows); expert 1: slot 7 (pad to 2); expert 2: slots 0, 5
  CHECK(r.counts == std::vector<std::int32_t>{4, 1, 2});
  CHECK(r.offsets == std::vector<std::int32_t>{0, 4, 6, 8});
  CHECK(std::vector<std::int32_t>(r.row_to_slot.begin(), r.row_to_slot.begin() + 8) ==
        std::vector<std::int32_t>{1, 2, 4, 6, 7, 8, 0, 5});  // 8 = T*k pads row 5
  CHECK(r.slot_to_row == std::vector<std::int32_t>{6, 0, 1, -1, 2, 7, 3, 4});
  CHECK(r.tile_experts[0] == 0);
  CHECK(r.tile_experts[1] == 0);
  CHECK(r.tile_experts[2] == 1);
  CHECK(r.tile_experts[3] == 2);
  CHECK(r.total_rows == 8);
  // capacity 2, weight priority: expert 0 keeps slots 4 (0.7) and 6 (0.5), in token order
  p = {};
  p.policy = moe::drop_policy::weight_priority;
  p.capacity = 2;
  r = reference::plan(ids.data(), weights.data(), 4, 2, 3, p);
  CHECK(r.counts == std::vector<std::int32_t>{2, 1, 2});
  CHECK(r.dropped == std::vector<std::int32_t>{2, 0, 0});
  CHECK(r.row_to_slot[0] == 4);
  CHECK(r.row_to_slot[1] == 6);
  // slot-major: first choices (slots 0, 2, 4, 6 -> j = 0) come first: expert 0 keeps slots 2 and 4
  p.policy = moe::drop_policy::slot_major;
  r = reference::plan(ids.data(), weights.data(), 4, 2, 3, p);
  CHECK(r.row_to_slot[0] == 2);
  CHECK(r.row_to_slot[1] == 4);
  // masked [E, 2]: expert 1 owns rows 2..3 with one entry
  p.layout = moe::placement::masked;
  r = reference::plan(ids.data(), weights.data(), 4, 2, 3, p);
  CHECK(r.offsets == std::vector<std::int32_t>{0, 2, 4, 6});
  CHECK(r.row_to_slot[2] == 7);
  CHECK(r.row_to_slot[3] == 8);
  CHECK(r.expanded_to_row[1 * 4 + 3] == 2);  // slot 7 = (t 3, j 1) -> expanded row j*T + t = 7
}

TEST_CASE("combine gradients equal finite differences in fp64") {
  const std::int64_t tokens = 5;
  const int k = 3, hidden = 16, rows = 15;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> y(std::size_t(rows) * hidden), g(std::size_t(tokens) * hidden), w(std::size_t(tokens) * k);
  std::vector<std::int32_t> slot_to_row(std::size_t(tokens) * k);
  for (auto& v : y) v = normal(rng);
  for (auto& v : g) v = normal(rng);
  for (auto& v : w) v = normal(rng);
  for (std::size_t s = 0; s < slot_to_row.size(); ++s) slot_to_row[s] = s % 4 == 3 ? -1 : std::int32_t(s);
  // L(w, y) = <g, combine(y, w)> in fp64
  auto loss = [&](const std::vector<double>& wd, const std::vector<double>& yd) {
    double l = 0;
    for (std::int64_t t = 0; t < tokens; ++t)
      for (int j = 0; j < k; ++j) {
        const std::int32_t r = slot_to_row[std::size_t(t * k + j)];
        if (r < 0) continue;
        for (int h = 0; h < hidden; ++h) l += g[std::size_t(t * hidden + h)] * wd[std::size_t(t * k + j)] * yd[std::size_t(r * hidden + h)];
      }
    return l;
  };
  std::vector<double> wd(w.begin(), w.end()), yd(y.begin(), y.end());
  const auto dw = reference::combine_weight_grad(g.data(), y.data(), rows, hidden, k, tokens, slot_to_row.data());
  const double h = 1e-6;
  for (std::size_t s = 0; s < wd.size(); ++s) {
    auto up = wd, down = wd;
    up[s] += h;
    down[s] -= h;
    CHECK(dw[s] == doctest::Approx((loss(up, yd) - loss(down, yd)) / (2 * h)).epsilon(1e-5));
  }
  // d y[r] = w[slot(r)] * g[token(r)]
  for (std::int32_t r = 0; r < rows; ++r)
    for (int hh = 0; hh < hidden; hh += 5) {
      auto up = yd, down = yd;
      up[std::size_t(r * hidden + hh)] += h;
      down[std::size_t(r * hidden + hh)] -= h;
      const double numeric = (loss(wd, up) - loss(wd, down)) / (2 * h);
      std::int64_t slot = -1;
      for (std::size_t s = 0; s < slot_to_row.size(); ++s)
        if (slot_to_row[s] == r) slot = std::int64_t(s);
      const double analytic = slot < 0 ? 0.0 : double(w[std::size_t(slot)]) * g[std::size_t((slot / k) * hidden + hh)];
      CHECK(analytic == doctest::Approx(numeric).epsilon(1e-5).scale(1e-6));
    }
}

// SPDX-License-Identifier: Apache-2.0
// frugal::moe::sample_route and sample_route_backward against the reference (the same draw, bit
// for bit under host SIMT; log P, weights and the gradient in fp64 within fp32 rounding), masked
// experts, too few drawable experts, degenerate and padding rows, a row stride; reproducibility
// from the seed; and the draw's distribution against Plackett-Luce (sampling without replacement
// from the softmax).
#include <frugal/moe/sampled_route.cuh>
#include <frugal/reference/moe_sampled_route.hpp>

#include <cmath>
#include <cstring>
#include <map>
#include <utility>

#include "moe_route_support.hpp"

using namespace frugal;
using frugal::test::logits_pattern;

namespace {

template <int E, int K, class T = float>
void check_sampled(logits_pattern pattern, moe::sample_params p, std::int64_t tokens, unsigned long long seed, bool mask_some = false) {
  using config = moe::sampled_route_config<E, K>;
  FRUGAL_SEEDED_RNG(rng, seed);
  INFO("E " << E << " k " << K << " " << std::string(type_name<T>()) << " pattern " << std::string(test::pattern_name(pattern))
            << " temperature " << p.temperature);
  auto logits = test::make_logits<T>(pattern, tokens, E, rng);
  if (mask_some)  // masked experts (-inf): row t keeps only t % (E + 1) of them drawable
    for (std::int64_t t = 0; t < tokens; ++t)
      for (int e = int(t % (E + 1)); e < E; ++e) logits[std::size_t(t * E + e)] = from_float<T>(-INFINITY);
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(tokens));
  for (std::int64_t t = 0; t < tokens; ++t) mask[std::size_t(t)] = t % 7 != 3;
  test::device_buffer<std::uint8_t> d_mask(mask);
  moe::sample_params host_p = p, device_p = p;
  if (p.row_mask) {
    host_p.row_mask = mask.data();
    device_p.row_mask = d_mask.data();
  }
  const auto ref = reference::sample_route<E, K>(logits.data(), tokens, host_p);
  test::device_buffer<T> d_logits(logits);
  test::device_buffer<std::int32_t> ids(std::size_t(tokens) * K);
  test::device_buffer<float> log_prob(static_cast<std::size_t>(tokens)), weights(std::size_t(tokens) * K);
  FRUGAL_REQUIRE_OK((moe::sample_route<config>(moe::route_inputs<T>{d_logits.data()}, {ids.data(), log_prob.data(), weights.data()}, tokens,
                                               device_p)));
  // The gradient of log P scaled per token (an advantage of either sign).
  std::vector<float> scale(static_cast<std::size_t>(tokens));
  for (std::int64_t t = 0; t < tokens; ++t) scale[std::size_t(t)] = float(t % 5) - 2.0f;
  test::device_buffer<float> d_scale(scale), grad(std::size_t(tokens) * E);
  FRUGAL_REQUIRE_OK((moe::sample_route_backward<config>(moe::route_inputs<T>{d_logits.data()}, ids.data(), d_scale.data(), grad.data(), tokens,
                                                        device_p)));
  test::synchronize();
  const auto got_ids = ids.download();
  const auto got_lp = log_prob.download();
  const auto got_w = weights.download();
  const auto got_g = grad.download();
  const auto ref_g = reference::sample_route_backward<E, K>(logits.data(), ref.ids.data(), scale.data(), tokens, host_p);
  for (std::int64_t t = 0; t < tokens; ++t) {
    INFO("token " << t);
    for (int r = 0; r < K; ++r) {
      REQUIRE(got_ids[std::size_t(t * K + r)] == ref.ids[std::size_t(t * K + r)]);
      CHECK(std::fabs(got_w[std::size_t(t * K + r)] - ref.weights[std::size_t(t * K + r)]) <= 2e-6 + 2e-5 * ref.weights[std::size_t(t * K + r)]);
    }
    const double lp = ref.log_prob[std::size_t(t)];
    if (std::isnan(lp)) CHECK(std::isnan(got_lp[std::size_t(t)]));
    else CHECK(std::fabs(got_lp[std::size_t(t)] - lp) <= 1e-4 + 2e-5 * std::fabs(lp));
    for (int e = 0; e < E; ++e) {
      const double want = ref_g[std::size_t(t * E + e)];
      CHECK(std::fabs(got_g[std::size_t(t * E + e)] - want) <= 1e-5 + 1e-4 * std::fabs(want));
    }
  }
}

}  // namespace

TEST_CASE("sample_route: the reference's draw, log P, weights and gradient; every pattern, E and k") {
  moe::sample_params p;
  p.seed = 0x5eedull;
  for (auto pattern : {logits_pattern::random, logits_pattern::ties, logits_pattern::one_hot, logits_pattern::all_equal}) {
    check_sampled<8, 2>(pattern, p, 61, 10);
    check_sampled<64, 6>(pattern, p, 40, 11);
    check_sampled<160, 8, __nv_bfloat16>(pattern, p, 33, 12);
    check_sampled<1024, 32>(pattern, p, 5, 13);
  }
  p.temperature = 0.5f;
  p.offset = 3;
  check_sampled<64, 8, __half>(logits_pattern::random, p, 50, 14);
  p.temperature = 3.0f;
  check_sampled<32, 4>(logits_pattern::random, p, 50, 15);
}

TEST_CASE("sample_route: masked experts, too few drawable ones, degenerate and padding rows") {
  moe::sample_params p;
  p.seed = 42;
  check_sampled<16, 4>(logits_pattern::random, p, 40, 20, true);  // 0 .. 16 drawable experts per row
  check_sampled<64, 8>(logits_pattern::specials, p, 60, 21);        // NaN / inf logits: degenerate rows
  check_sampled<64, 8>(logits_pattern::nan_rows, p, 30, 22);
  check_sampled<64, 8>(logits_pattern::neg_inf_rows, p, 30, 23);    // nothing drawable: ids -1, log P 0
  std::uint8_t placeholder = 1;
  p.row_mask = &placeholder;  // (replaced by the real mask: every seventh row is padding)
  check_sampled<32, 3>(logits_pattern::random, p, 50, 24);
}

TEST_CASE("sample_route: reproducible from the seed, fresh with another offset; accumulate; a row stride") {
  using config = moe::sampled_route_config<64, 4>;
  const std::int64_t tokens = 100;
  FRUGAL_SEEDED_RNG(rng, 30);
  const auto logits = test::make_logits<float>(logits_pattern::random, tokens, 64, rng);
  test::device_buffer<float> d_logits(logits), lp(static_cast<std::size_t>(tokens) * 3), g1(std::size_t(tokens) * 64),
      g2(std::vector<float>(std::size_t(tokens) * 64, 0.5f)), scale(std::vector<float>(static_cast<std::size_t>(tokens), 1.0f));
  test::device_buffer<std::int32_t> a(std::size_t(tokens) * 4), b(a.size()), c(a.size()), d(a.size());
  moe::sample_params p;
  p.seed = 7;
  FRUGAL_REQUIRE_OK((moe::sample_route<config>(moe::route_inputs<float>{d_logits.data()}, {a.data(), lp.data()}, tokens, p)));
  FRUGAL_REQUIRE_OK((moe::sample_route<config>(moe::route_inputs<float>{d_logits.data()}, {b.data(), lp.data() + tokens}, tokens, p)));
  moe::sample_params q = p;
  q.offset = 1;
  FRUGAL_REQUIRE_OK((moe::sample_route<config>(moe::route_inputs<float>{d_logits.data()}, {c.data(), lp.data() + 2 * tokens}, tokens, q)));
  FRUGAL_REQUIRE_OK((moe::sample_route_backward<config>(moe::route_inputs<float>{d_logits.data()}, a.data(), scale.data(), g1.data(), tokens, p)));
  FRUGAL_REQUIRE_OK(
      (moe::sample_route_backward<config>(moe::route_inputs<float>{d_logits.data()}, a.data(), scale.data(), g2.data(), tokens, p, true)));
  // Rows of a wider buffer: the same draw.
  std::vector<float> wide(std::size_t(tokens) * 72, NAN);
  for (std::int64_t t = 0; t < tokens; ++t)
    for (int e = 0; e < 64; ++e) wide[std::size_t(t * 72 + e)] = logits[std::size_t(t * 64 + e)];
  test::device_buffer<float> d_wide(wide), lp_wide(static_cast<std::size_t>(tokens));
  FRUGAL_REQUIRE_OK((moe::sample_route<config>(moe::route_inputs<float>{d_wide.data(), nullptr, 72}, {d.data(), lp_wide.data()}, tokens, p)));
  test::synchronize();
  CHECK(a.download() == b.download());
  CHECK(a.download() != c.download());
  CHECK(a.download() == d.download());
  const auto x = g1.download(), y = g2.download();
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(y[i] == x[i] + 0.5f);
  // Arguments.
  auto message = [](frugal::status s) { return std::string(s.message()); };
  moe::sample_params bad = p;
  bad.temperature = 0.0f;
  CHECK(message(moe::sample_route<config>(moe::route_inputs<float>{d_logits.data()}, {a.data(), lp.data()}, tokens, bad)).find("temperature") !=
        std::string::npos);
  CHECK(message(moe::sample_route<config>(moe::route_inputs<float>{d_logits.data()}, {a.data(), nullptr}, tokens, p)).find("null") !=
        std::string::npos);
  CHECK(message(moe::sample_route<config>(moe::route_inputs<float>{d_logits.data()}, {reinterpret_cast<std::int32_t*>(d_logits.data()), lp.data()},
                                          tokens, p))
            .find("overlap") != std::string::npos);
  CHECK(message(moe::sample_route<config>(moe::route_inputs<float>{d_logits.data(), nullptr, 0, 32}, {a.data(), lp.data()}, tokens, p))
            .find("columns") != std::string::npos);
  FRUGAL_REQUIRE_OK((moe::sample_route<config>(moe::route_inputs<float>{}, {}, 0, p)));  // T = 0: nothing to do
}

// The draw is sampling without replacement from softmax(x): ordered pairs (a, b) appear with the
// Plackett-Luce probability p_a p_b / (1 - p_a). 24000 draws of one 4-expert row (each token is
// the same row with its own noise); every pair within 5 standard deviations.
TEST_CASE("sample_route: draws follow Plackett-Luce (sampling without replacement from the softmax)") {
  using config = moe::sampled_route_config<4, 2>;
  const std::int64_t tokens = 24000;
  const float row[4] = {0.0f, 1.0f, -0.5f, 0.7f};
  std::vector<float> logits(std::size_t(tokens) * 4);
  for (std::int64_t t = 0; t < tokens; ++t) std::memcpy(&logits[std::size_t(t * 4)], row, sizeof(row));
  test::device_buffer<float> d_logits(logits), lp(static_cast<std::size_t>(tokens));
  test::device_buffer<std::int32_t> ids(std::size_t(tokens) * 2);
  moe::sample_params p;
  p.seed = 2026;
  FRUGAL_REQUIRE_OK((moe::sample_route<config>(moe::route_inputs<float>{d_logits.data()}, {ids.data(), lp.data()}, tokens, p)));
  test::synchronize();
  const auto got = ids.download();
  std::map<std::pair<int, int>, int> count;
  for (std::int64_t t = 0; t < tokens; ++t) ++count[{got[std::size_t(2 * t)], got[std::size_t(2 * t + 1)]}];
  double z = 0.0, prob[4];
  for (float v : row) z += std::exp(double(v));
  for (int e = 0; e < 4; ++e) prob[e] = std::exp(double(row[e])) / z;
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b) {
      if (a == b) {
        CHECK(count[{a, b}] == 0);
        continue;
      }
      const double pab = prob[a] * prob[b] / (1.0 - prob[a]), expected = pab * double(tokens);
      const double sigma = std::sqrt(double(tokens) * pab * (1.0 - pab));
      INFO("pair " << a << ", " << b << ": " << count[{a, b}] << " draws, expected " << expected);
      CHECK(std::fabs(double(count[{a, b}]) - expected) <= 5.0 * sigma);
    }
}

// SPDX-License-Identifier: Apache-2.0
// frugal::moe::route_backward (fp32) against frugal::reference::route_backward (fp64) for every
// scoring mode, renormalisation, scaling, soft-capping, groups with bias, padding, clipping and
// accumulation. The reference itself is checked against finite differences in the host tier.
#include <frugal/moe/route_backward.cuh>

#include <algorithm>
#include <cstring>

#include "moe_route_support.hpp"

using namespace frugal;
using frugal::test::logits_pattern;

namespace {


template <class Config, class T = float>
void check_backward(logits_pattern pattern, moe::route_params params, unsigned long long seed, std::int64_t tokens = 48,
                    float clip = 0.0f, bool with_noise_logits = false, bool non_finite_upstream = false) {
  FRUGAL_SEEDED_RNG(rng, seed);
  constexpr int E = Config::experts, K = Config::k;
  INFO("E " << E << " k " << K << " scoring " << std::string(Config::scoring::name) << " pattern "
            << std::string(test::pattern_name(pattern)) << " renorm " << params.renormalize << " softcap "
            << params.softcap << " clip " << clip);
  const auto logits = test::make_logits<T>(pattern, tokens, E, rng);
  std::vector<float> d_weights(std::size_t(tokens) * K);
  std::normal_distribution<float> normal;
  for (auto& v : d_weights) v = normal(rng);
  if (non_finite_upstream)  // every fifth token gets a NaN, +inf or -inf upstream gradient in one slot
    for (std::int64_t t = 0; t < tokens; t += 5)
      d_weights[std::size_t(t * K + t % K)] = t % 3 == 0 ? NAN : t % 3 == 1 ? INFINITY : -INFINITY;
  const auto noise = with_noise_logits ? test::make_logits<T>(logits_pattern::random, tokens, E, rng) : std::vector<T>{};
  const T* noise_ptr = with_noise_logits ? noise.data() : nullptr;
  const auto fwd = reference::route<Config, float>(logits.data(), noise_ptr, tokens, params);
  const auto ref = reference::route_backward<Config, double>(logits.data(), fwd.global_ids.data(), d_weights.data(),
                                                             tokens, params, clip, noise_ptr);
  test::device_buffer<T> d_logits_in(logits), d_noise(noise);
  test::device_buffer<std::int32_t> d_ids(fwd.global_ids);
  test::device_buffer<float> d_dw(d_weights), d_grad(std::size_t(tokens) * E);
  test::device_buffer<std::uint8_t> d_mask(params.row_mask ? std::vector<std::uint8_t>(params.row_mask, params.row_mask + tokens)
                                                           : std::vector<std::uint8_t>{});
  test::device_buffer<float> d_bias(params.selection_bias ? std::vector<float>(params.selection_bias, params.selection_bias + E)
                                                          : std::vector<float>{});
  moe::route_params p = params;
  if (p.row_mask) p.row_mask = d_mask.data();
  if (p.selection_bias) p.selection_bias = d_bias.data();
  d_grad.fill_bytes(0x7f);
  FRUGAL_REQUIRE_OK(moe::route_backward<Config>(moe::route_inputs<T>{d_logits_in.data(), with_noise_logits ? d_noise.data() : nullptr},
                                                d_ids.data(), d_dw.data(), d_grad.data(), tokens, p, clip));
  test::synchronize();
  const auto grad = d_grad.download();
  for (std::int64_t t = 0; t < tokens; ++t) {
    double row_max = 0;
    for (int e = 0; e < E; ++e) row_max = std::max(row_max, std::fabs(ref[std::size_t(t * E + e)]));
    for (int e = 0; e < E; ++e) {
      const double g = grad[std::size_t(t * E + e)], r = ref[std::size_t(t * E + e)];
      if (std::isnan(r) && std::isnan(g)) continue;  // a poisoned row: NaN in both, at the same places
      // fp32 against fp64: a few ulps of the row's largest term.
      if (!(std::fabs(g - r) <= 1e-4 * std::fabs(r) + 2e-5 * row_max + 1e-7))
        FAIL("d logit " << g << " vs reference " << r << " (token " << t << ", expert " << e << ")");
    }
  }
}

template <class Config, class T = float>
void all_patterns_backward(moe::route_params p, unsigned long long seed, float clip = 0.0f) {
  for (auto pattern : {logits_pattern::random, logits_pattern::ties, logits_pattern::specials, logits_pattern::one_hot,
                       logits_pattern::nan_rows, logits_pattern::neg_inf_rows})
    check_backward<Config, T>(pattern, p, seed++, 48, clip);
}

}  // namespace

TEST_CASE("route backward: every scoring mode") {
  moe::route_params p;
  all_patterns_backward<moe::route_config<64, 6>>(p, 100);
  all_patterns_backward<moe::route_config<64, 6, moe::sigmoid_scoring>>(p, 200);
  all_patterns_backward<moe::route_config<64, 6, moe::sqrt_softplus_scoring>>(p, 300);
  all_patterns_backward<moe::route_config<64, 6, moe::identity_scoring>>(p, 400);
  all_patterns_backward<moe::route_config<8, 2, moe::topk_softmax_scoring>>(p, 500);
  all_patterns_backward<moe::route_config<60, 4, test::half_tanh_scoring>>(p, 600);
}

TEST_CASE("route backward: renormalisation, scaling and soft-capping") {
  moe::route_params p;
  p.renormalize = true;
  p.renormalize_epsilon = 1e-6f;
  p.routed_scaling = 2.5f;
  all_patterns_backward<moe::route_config<64, 6>>(p, 700);
  all_patterns_backward<moe::route_config<160, 8, moe::sigmoid_scoring>>(p, 800);
  all_patterns_backward<moe::route_config<32, 4, moe::topk_softmax_scoring>>(p, 900);
  p.softcap = 4.0f;
  all_patterns_backward<moe::route_config<64, 6>>(p, 1000);
  all_patterns_backward<moe::route_config<96, 8, moe::sqrt_softplus_scoring>>(p, 1100);
}

TEST_CASE("route backward: renormalisation with epsilon 0") {
  // The forward leaves the weights of a row whose chosen weights sum to 0 (all -inf sigmoid
  // logits, degenerate rows) at 0 instead of 0 / 0, and the backward gives such rows a zero
  // gradient: against the reference on every pattern, nan_rows and neg_inf_rows included.
  moe::route_params p;
  p.renormalize = true;
  p.renormalize_epsilon = 0.0f;
  all_patterns_backward<moe::route_config<64, 6>>(p, 1150);
  all_patterns_backward<moe::route_config<64, 6, moe::sigmoid_scoring>>(p, 1160);
}

TEST_CASE("route backward: DeepSeek-V3 gate with bias and groups, bf16 logits") {
  std::vector<float> bias(256);
  for (int e = 0; e < 256; ++e) bias[std::size_t(e)] = 0.001f * float((e * 37) % 101) - 0.05f;
  moe::route_params p;
  p.selection_bias = bias.data();
  p.renormalize = true;
  p.routed_scaling = 2.5f;
  all_patterns_backward<moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>, __nv_bfloat16>(p, 1200);
}

TEST_CASE("route backward: large E (warp and block paths), padding rows, clip") {
  moe::route_params p;
  all_patterns_backward<moe::route_config<1024, 32>>(p, 1300);
  all_patterns_backward<moe::route_config<2048, 8, moe::sigmoid_scoring>>(p, 1400);
  std::vector<std::uint8_t> mask(48);
  for (int t = 0; t < 48; ++t) mask[std::size_t(t)] = t % 5 != 2;
  p.row_mask = mask.data();
  all_patterns_backward<moe::route_config<64, 6>>(p, 1500, 0.01f);
}

TEST_CASE("route backward: noisy top-k with and without noise logits (the noise is a constant)") {
  moe::route_params p;
  p.noise_std = 0.7f;
  p.noise_seed = 1234;
  p.renormalize = true;
  for (auto pattern : {logits_pattern::random, logits_pattern::ties}) {
    check_backward<moe::route_config<64, 6>>(pattern, p, 1700 + int(pattern));
    check_backward<moe::route_config<64, 6, moe::sigmoid_scoring>>(pattern, p, 1710 + int(pattern), 48, 0.0f, true);
    check_backward<moe::route_config<64, 6>>(pattern, p, 1720 + int(pattern), 48, 0.0f, true);
  }
}

TEST_CASE("route backward: a NaN or infinite upstream gradient is not hidden (NaN where a weight depends on the logit)") {
  moe::route_params renorm;
  renorm.renormalize = true;
  for (auto pattern : {logits_pattern::random, logits_pattern::specials}) {
    check_backward<moe::route_config<32, 4>>(pattern, {}, 1700, 40, 0.0f, false, true);
    check_backward<moe::route_config<64, 6, moe::sigmoid_scoring>>(pattern, renorm, 1701, 40, 0.0f, false, true);
    check_backward<moe::route_config<16, 2, moe::topk_softmax_scoring>>(pattern, {}, 1702, 40, 0.5f, false, true);
  }
  // The poisoned rows really are NaN (not zero) where the row softmax makes every logit count.
  using config = moe::route_config<8, 2>;
  FRUGAL_SEEDED_RNG(rng, 1703);
  const auto logits = test::make_logits<float>(logits_pattern::random, 1, 8, rng);
  const auto fwd = reference::route<config, float>(logits.data(), (const float*)nullptr, 1, {});
  for (float upstream : {NAN, INFINITY}) {
    test::device_buffer<float> d_x(logits), d_dw(std::vector<float>{upstream, 1.0f}), d_g(8);
    test::device_buffer<std::int32_t> d_ids(fwd.global_ids);
    FRUGAL_REQUIRE_OK(moe::route_backward<config>(d_x.data(), d_ids.data(), d_dw.data(), d_g.data(), 1));
    test::synchronize();
    for (float g : d_g.download()) REQUIRE(std::isnan(g));
  }
}

TEST_CASE("route backward: accumulate adds to the existing gradient") {
  using config = moe::route_config<32, 4>;
  const std::int64_t tokens = 20;
  FRUGAL_SEEDED_RNG(rng, 1600);
  const auto logits = test::make_logits<float>(logits_pattern::random, tokens, 32, rng);
  const auto fwd = reference::route<config, float>(logits.data(), (const float*)nullptr, tokens, {});
  std::vector<float> dw(std::size_t(tokens) * 4, 1.0f);
  test::device_buffer<float> d_x(logits), d_dw(dw), fresh(std::size_t(tokens) * 32), accumulated(std::vector<float>(std::size_t(tokens) * 32, 0.5f));
  test::device_buffer<std::int32_t> d_ids(fwd.global_ids);
  FRUGAL_REQUIRE_OK(moe::route_backward<config>(d_x.data(), d_ids.data(), d_dw.data(), fresh.data(), tokens));
  FRUGAL_REQUIRE_OK(moe::route_backward<config>(d_x.data(), d_ids.data(), d_dw.data(), accumulated.data(), tokens, {}, 0.0f, true));
  test::synchronize();
  const auto a = fresh.download(), b = accumulated.download();
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(b[i] == a[i] + 0.5f);
}

TEST_CASE("route backward: invalid arguments are refused") {
  using config = moe::route_config<32, 4>;
  test::device_buffer<float> x(32), dw(4), g(32);
  test::device_buffer<std::int32_t> ids(4);
  CHECK(moe::route_backward<config>(x.data(), ids.data(), dw.data(), g.data(), -1).code() == errc::invalid_argument);
  CHECK(moe::route_backward<config>(x.data(), (const std::int32_t*)nullptr, dw.data(), g.data(), 1).code() == errc::invalid_argument);
  const auto s = moe::route_backward<config>(x.data(), ids.data(), dw.data(), g.data(), 1, {}, -1.0f);
  CHECK(s.code() == errc::invalid_argument);
  CHECK(std::strstr(s.message(), "clip") != nullptr);
  // What route refuses, route_backward refuses (one check of route_params).
  auto refused = [&](const moe::route_params& p, const char* field) {
    const auto b = moe::route_backward<config>(x.data(), ids.data(), dw.data(), g.data(), 1, p);
    INFO(b.message());
    CHECK(b.code() == errc::invalid_argument);
    CHECK(std::strstr(b.message(), field) != nullptr);
    const moe::route_outputs<> out{ids.data(), dw.data()};
    CHECK(std::strstr(moe::route<config>(x.data(), out, 1, p).message(), field) != nullptr);
  };
  moe::route_params p;
  p.noise_std = NAN;
  refused(p, "noise_std");
  p = {};
  p.noise_std = INFINITY;
  refused(p, "noise_std");
  p = {};
  p.softcap = INFINITY;
  refused(p, "softcap");
  p = {};
  p.renormalize_epsilon = NAN;
  refused(p, "renormalize_epsilon");
  p = {};
  p.local_expert_begin = 3;
  p.local_expert_end = 2;
  refused(p, "local expert range");
  // d_logits over the logits: refused.
  const auto in_place = moe::route_backward<config>(x.data(), ids.data(), dw.data(), x.data(), 1);
  CHECK(std::strstr(in_place.message(), "must not overlap") != nullptr);
}

namespace {

// Degenerate rows weigh 0 in the forward whatever their logits: their gradient is 0 in every
// element, by the forward's rule (rows of -inf or NaN logits; all selection values NaN).
template <class Config>
void check_dead_rows_backward(const std::vector<float>& bias) {
  constexpr int E = Config::experts, K = Config::k;
  INFO("E " << E << " k " << K << " scoring " << std::string(Config::scoring::name) << " bias " << !bias.empty());
  std::vector<float> x;
  auto row = [&](auto value) {
    for (int e = 0; e < E; ++e) x.push_back(value(e));
  };
  row([](int) { return -INFINITY; });
  row([](int e) { return e % 2 ? NAN : -INFINITY; });
  row([](int e) { return 0.125f * float(e % 5) - 0.25f; });  // live unless the bias is NaN
  const std::int64_t tokens = 3;
  moe::route_params p;
  p.renormalize = true;
  std::vector<float> dw(std::size_t(tokens) * K);
  for (std::size_t i = 0; i < dw.size(); ++i) dw[i] = float(i % 3) - 0.5f;  // unequal: renormalisation does not cancel them
  test::device_buffer<float> d_x(x), d_bias(bias), d_weights(std::size_t(tokens) * K), d_dw(dw);
  test::device_buffer<float> d_grad(std::size_t(tokens) * E);
  test::device_buffer<std::int32_t> d_ids(std::size_t(tokens) * K), d_degenerate(1);
  d_degenerate.fill_bytes(0);
  if (!bias.empty()) p.selection_bias = d_bias.data();
  FRUGAL_REQUIRE_OK(moe::route<Config>(moe::route_inputs<float>{d_x.data(), nullptr},
                                       moe::route_outputs<std::int32_t, float>{d_ids.data(), d_weights.data(), nullptr, d_degenerate.data()},
                                       tokens, p));
  FRUGAL_REQUIRE_OK(moe::route_backward<Config>(d_x.data(), d_ids.data(), d_dw.data(), d_grad.data(), tokens, p));
  test::synchronize();
  const int dead = bias.empty() ? 2 : 3;
  CHECK(d_degenerate.download()[0] == dead);
  const auto grad = d_grad.download();
  for (int t = 0; t < dead; ++t)
    for (int e = 0; e < E; ++e) CHECK(grad[std::size_t(t * E + e)] == 0.0f);
  if (bias.empty()) CHECK(std::any_of(grad.begin() + 2 * E, grad.end(), [](float g) { return g != 0.0f; }));
  // The reference agrees.
  moe::route_params host_p = p;
  host_p.selection_bias = bias.empty() ? nullptr : bias.data();
  const auto fwd = reference::route<Config, float>(x.data(), static_cast<const float*>(nullptr), tokens, host_p);
  const auto ref = reference::route_backward<Config, double>(x.data(), fwd.global_ids.data(), dw.data(), tokens, host_p);
  for (int t = 0; t < dead; ++t)
    for (int e = 0; e < E; ++e) CHECK(ref[std::size_t(t * E + e)] == 0.0);
}

}  // namespace

TEST_CASE("route backward: degenerate rows (-inf or NaN logits, all selection values NaN) get no gradient") {
  check_dead_rows_backward<moe::route_config<64, 4, moe::identity_scoring>>({});
  check_dead_rows_backward<moe::route_config<64, 4, moe::sigmoid_scoring>>({});
  check_dead_rows_backward<moe::route_config<64, 4, moe::sigmoid_scoring>>(std::vector<float>(64, NAN));
  check_dead_rows_backward<moe::route_config<64, 4, test::half_tanh_scoring>>(std::vector<float>(64, NAN));
  check_dead_rows_backward<moe::route_config<8, 2, moe::topk_softmax_scoring>>({});
  check_dead_rows_backward<moe::route_config<2048, 4, moe::sigmoid_scoring>>(std::vector<float>(2048, NAN));  // block path
}

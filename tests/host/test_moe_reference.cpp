// SPDX-License-Identifier: Apache-2.0
// Thread-level routing math and the routing reference, on the CPU: Philox known answers, the
// scoring functions and their derivatives, the softmax rules, and the reference backward
// against central finite differences in fp64 for every scoring mode; the Gumbel noise and the
// sampled-routing gradient against finite differences.
#include <frugal/core/philox.cuh>
#include <frugal/moe/route_math.cuh>
#include <frugal/reference/moe_route.hpp>
#include <frugal/reference/moe_sampled_route.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace frugal;

TEST_CASE("philox4x32-10 known-answer vectors (Random123)") {
  const auto a = philox4x32_10(philox_words{{0, 0, 0, 0}}, 0, 0);
  CHECK(a.v[0] == 0x6627e8d5u);
  CHECK(a.v[1] == 0xe169c58du);
  CHECK(a.v[2] == 0xbc57ac4cu);
  CHECK(a.v[3] == 0x9b00dbd8u);
  const auto b = philox4x32_10(philox_words{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu);
  CHECK(b.v[0] == 0x408f276du);
  CHECK(b.v[1] == 0x41c83b0eu);
  CHECK(b.v[2] == 0xa20bc7c6u);
  CHECK(b.v[3] == 0x6d5451fdu);
  const auto c = philox4x32_10(philox_words{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u);
  CHECK(c.v[0] == 0xd16cfe09u);
  CHECK(c.v[1] == 0x94fdcceBu);
  CHECK(c.v[2] == 0x5001e420u);
  CHECK(c.v[3] == 0x24126ea1u);
}

TEST_CASE("routing noise: standard normal moments, reproducible, distinct per (token, expert, offset)") {
  moe::route_params p;
  p.noise_seed = 99;
  double sum = 0, sum2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const float z = moe::routing_noise(p, i / 64, i % 64);
    REQUIRE(std::isfinite(z));
    sum += z;
    sum2 += double(z) * z;
  }
  CHECK(std::fabs(sum / n) < 0.01);
  CHECK(std::fabs(sum2 / n - 1.0) < 0.02);
  CHECK(moe::routing_noise(p, 5, 7) == moe::routing_noise(p, 5, 7));
  CHECK(moe::routing_noise(p, 5, 7) != moe::routing_noise(p, 7, 5));
  moe::route_params q = p;
  q.noise_offset = 1;
  CHECK(moe::routing_noise(p, 5, 7) != moe::routing_noise(q, 5, 7));
}

TEST_CASE("scoring functions match their definitions, derivatives match finite differences") {
  for (double x = -30; x <= 30; x += 0.37) {
    CHECK(moe::sigmoid_scoring{}(x) == doctest::Approx(1.0 / (1.0 + std::exp(-x))).epsilon(1e-14));
    CHECK(moe::sqrt_softplus_scoring{}(x) == doctest::Approx(std::sqrt(std::log1p(std::exp(x)))).epsilon(1e-12));
    const double h = 1e-6;
    for (int mode = 0; mode < 3; ++mode) {
      auto f = [&](double v) {
        return mode == 0 ? moe::sigmoid_scoring{}(v) : mode == 1 ? moe::sqrt_softplus_scoring{}(v) : moe::softcap(v, 5.0);
      };
      const double numeric = (f(x + h) - f(x - h)) / (2 * h);
      const double analytic = mode == 0   ? moe::sigmoid_scoring{}.derivative(x, f(x))
                              : mode == 1 ? moe::sqrt_softplus_scoring{}.derivative(x, f(x))
                                          : moe::softcap_derivative(x, 5.0);
      CHECK(analytic == doctest::Approx(numeric).epsilon(1e-6).scale(1e-2));
    }
  }
  // fp32 stays finite and exact at the extremes.
  CHECK(moe::sigmoid_scoring{}(-100.0f) >= 0.0f);
  CHECK(moe::sigmoid_scoring{}(100.0f) == 1.0f);
  CHECK(moe::sqrt_softplus_scoring{}(100.0f) == std::sqrt(100.0f));
  CHECK(moe::softcap(7.0f, 0.0f) == 7.0f);
}

TEST_CASE("softmax rules: NaN takes nothing, +inf shares, all -inf is degenerate") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  bool degenerate = false;
  auto p = reference::detail::softmax<float>({1.0f, nan, 1.0f}, degenerate);
  CHECK(!degenerate);
  CHECK(p[0] == 0.5f);
  CHECK(p[1] == 0.0f);
  p = reference::detail::softmax<float>({inf, 3.0f, inf, nan}, degenerate);
  CHECK(p == std::vector<float>{0.5f, 0.0f, 0.5f, 0.0f});
  p = reference::detail::softmax<float>({-inf, nan}, degenerate);
  CHECK(degenerate);
  CHECK(p == std::vector<float>{0.0f, 0.0f});
  // The device-side statistics give the same probabilities.
  moe::softmax_stats s;
  s.max = 2.0f;
  s.sum = moe::softmax_term(2.0f, 2.0f) + moe::softmax_term(0.0f, 2.0f) + moe::softmax_term(nan, 2.0f);
  CHECK(s.probability(nan) == 0.0f);
  CHECK(s.probability(2.0f) == doctest::Approx(1.0 / (1.0 + std::exp(-2.0))));
}

TEST_CASE("normaliser_term is e^d within 3 ulp on [-104, 0], and its sum within the rounding of the sum") {
  // On the GPU an ex2 of d * log2 e (2 ulp, plus the rounding of the product), here exp2f:
  // both against double exp. The terms near the max carry the sum, and there the product's
  // rounding is small.
  for (float d = -104.0f; d <= 0.0f; d += 0.001953125f) {
    const double exact = std::exp(double(d));
    const float term = moe::normaliser_term(d);
    if (exact < 1e-30) continue;  // subnormal results (flushed on the GPU) never move a sum >= 1
    const double ulp = std::ldexp(1.0, std::ilogb(float(exact)) - 23);
    REQUIRE(std::fabs(double(term) - exact) <= (3.0 + std::fabs(double(d)) * 1.2) * ulp);
  }
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int row = 0; row < 200; ++row) {
    std::vector<float> x(256);
    for (auto& v : x) v = normal(rng);
    const float max = *std::max_element(x.begin(), x.end());
    float fast = 0.0f, exact = 0.0f;
    double truth = 0.0;
    for (float v : x) {
      fast += moe::softmax_term(v, max);
      exact += std::exp(v - max);
      truth += std::exp(double(v) - double(max));
    }
    REQUIRE(std::fabs(fast - truth) <= 4.0 * std::fabs(exact - truth) + 4e-7 * truth);
  }
}

TEST_CASE("insert_top2 and merge_top2 keep the two largest; a NaN counts as -inf") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> pick(0, 7);
  const float pool[8] = {-inf, -2.0f, -0.0f, 0.0f, 1.0f, 1.0f, 3.5f, nan};
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<float> values(1 + trial % 9);
    for (auto& v : values) v = pool[pick(rng)];
    float a1 = -inf, a2 = -inf;
    for (float v : values) moe::insert_top2(a1, a2, v);
    std::vector<float> numbers;
    for (float v : values) numbers.push_back(std::isnan(v) ? -inf : v);
    std::sort(numbers.begin(), numbers.end(), std::greater<float>());
    numbers.push_back(-inf);
    INFO("trial " << trial);
    REQUIRE(a1 == numbers[0]);  // == : a zero's sign is free (group keys canonicalise it)
    REQUIRE(a2 == numbers[1]);
    // Two halves merged give the same pair.
    float b1 = -inf, b2 = -inf, c1 = -inf, c2 = -inf;
    for (std::size_t i = 0; i < values.size(); ++i) moe::insert_top2(i % 2 ? b1 : c1, i % 2 ? b2 : c2, values[i]);
    moe::merge_top2(b1, b2, c1, c2);
    REQUIRE(b1 == numbers[0]);
    REQUIRE(b2 == numbers[1]);
  }
}

namespace {

// Central differences of sum_j dw_j * w_j(x) with the chosen experts held fixed.
template <class Config>
void check_gradient(const moe::route_params& p, unsigned long long seed, double spread = 2.0) {
  constexpr int E = Config::experts, K = Config::k;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, spread);
  const std::int64_t tokens = 5;
  std::vector<double> x(std::size_t(tokens) * E), dw(std::size_t(tokens) * K);
  for (auto& v : x) v = normal(rng);
  for (auto& v : dw) v = normal(rng);
  const auto fwd = reference::route<Config, double>(x.data(), (const double*)nullptr, tokens, p);
  const auto analytic = reference::route_backward<Config, double>(x.data(), fwd.global_ids.data(), dw.data(), tokens, p);
  INFO("E " << E << " k " << K << " scoring " << std::string(Config::scoring::name) << " renorm " << p.renormalize
            << " softcap " << p.softcap << " seed " << seed);
  for (std::int64_t t = 0; t < tokens; ++t) {
    const std::vector<int> ids(fwd.global_ids.begin() + t * K, fwd.global_ids.begin() + (t + 1) * K);
    for (int e = 0; e < E; ++e) {
      auto loss = [&](double delta) {
        std::vector<double> row(x.begin() + t * E, x.begin() + (t + 1) * E);
        row[std::size_t(e)] += delta;
        const auto w = reference::route_weights_of<Config, double>(row, ids, p, t);
        double l = 0;
        for (int j = 0; j < K; ++j) l += dw[std::size_t(t * K + j)] * w[std::size_t(j)];
        return l;
      };
      const double h = 1e-5, numeric = (loss(h) - loss(-h)) / (2 * h);
      REQUIRE(analytic[std::size_t(t * E + e)] == doctest::Approx(numeric).epsilon(1e-6).scale(1e-3));
    }
  }
}

struct cubic_scoring {  // a user functor: s = x^3 / 3 + x, strictly increasing
  static constexpr const char* name = "user:cubic";
  template <class R> R operator()(R x) const { return x * x * x / R(3) + x; }
  template <class R> R derivative(R x, R) const { return x * x + R(1); }
};

}  // namespace

TEST_CASE("reference backward equals finite differences in fp64 for every scoring mode") {
  for (int variant = 0; variant < 4; ++variant) {
    moe::route_params p;
    p.renormalize = variant & 1;
    p.renormalize_epsilon = 1e-3f;
    p.routed_scaling = variant & 2 ? 2.5f : 1.0f;
    p.softcap = variant == 3 ? 3.0f : 0.0f;
    check_gradient<moe::route_config<16, 4>>(p, 10 + variant);
    check_gradient<moe::route_config<16, 4, moe::sigmoid_scoring>>(p, 20 + variant);
    check_gradient<moe::route_config<16, 4, moe::sqrt_softplus_scoring>>(p, 30 + variant);
    check_gradient<moe::route_config<16, 4, moe::identity_scoring>>(p, 40 + variant, 0.5);
    check_gradient<moe::route_config<16, 4, moe::topk_softmax_scoring>>(p, 50 + variant);
    check_gradient<moe::route_config<16, 4, cubic_scoring>>(p, 60 + variant, 0.5);
    check_gradient<moe::route_config<32, 6, moe::sigmoid_scoring, 4, 2>>(p, 70 + variant);
  }
}

TEST_CASE("reference route: hand-checked DeepSeek-style example") {
  // 8 experts, 4 groups of 2, keep 2 groups, top-2, sigmoid, bias on expert 6.
  using config = moe::route_config<8, 2, moe::sigmoid_scoring, 4, 2>;
  const std::vector<float> x = {0.0f, 1.0f, 3.0f, -3.0f, 2.0f, 2.0f, -1.0f, -2.0f};
  const std::vector<float> bias = {0, 0, 0, 0, 0, 0, 0.99f, 0};
  moe::route_params p;
  p.selection_bias = bias.data();
  // selection values s+b: groups {0,1}: .5+.73=1.23, {2,3}: .95+.05=1.0, {4,5}: .88+.88=1.76,
  // {6,7}: (.27+.99)+.12=1.38 -> keep groups 2 and 3 -> experts 4,5 (0.88) vs 6 (1.26): 6 then 4.
  const auto r = reference::route<config, float>(x.data(), (const float*)nullptr, 1, p);
  CHECK(r.ids == std::vector<int>{6, 4});
  CHECK(r.weights[0] == doctest::Approx(1.0 / (1.0 + std::exp(1.0))));  // the weight ignores the bias
  CHECK(r.weights[1] == doctest::Approx(1.0 / (1.0 + std::exp(-2.0))));
}

#include <frugal/reference/moe_balance.hpp>

namespace {

template <class Config>
void check_loss_gradients(float softcap, unsigned long long seed) {
  constexpr int E = Config::experts;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.5);
  const std::int64_t tokens = 6;
  std::vector<double> x(std::size_t(tokens) * E);
  for (auto& v : x) v = normal(rng);
  moe::route_params p;
  p.softcap = softcap;
  const auto fwd = reference::route<Config, double>(x.data(), (const double*)nullptr, tokens, p);
  const auto lb = reference::load_balancing_loss<Config, double>(x.data(), fwd.ids.data(), tokens, 0.1f, p);
  const auto lb_grad = reference::load_balancing_loss_backward<Config, double>(x.data(), lb.counts.data(), tokens, 0.1f, p);
  const auto z_grad = reference::router_z_loss_backward<Config, double>(x.data(), tokens, 0.01f, p);
  INFO("E " << E << " scoring " << std::string(Config::scoring::name) << " softcap " << softcap);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double h = 1e-5;
    auto at = [&](double delta, bool z) {
      std::vector<double> y = x;
      y[i] += delta;
      // the counts (which experts were chosen) are held fixed, as the gradient assumes
      return z ? reference::router_z_loss<Config, double>(y.data(), tokens, 0.01f, p)
               : reference::load_balancing_loss<Config, double>(y.data(), fwd.ids.data(), tokens, 0.1f, p).loss;
    };
    REQUIRE(lb_grad[i] == doctest::Approx((at(h, false) - at(-h, false)) / (2 * h)).epsilon(1e-6).scale(1e-4));
    REQUIRE(z_grad[i] == doctest::Approx((at(h, true) - at(-h, true)) / (2 * h)).epsilon(1e-6).scale(1e-4));
  }
}

}  // namespace

TEST_CASE("reference load-balancing and z-loss gradients equal finite differences in fp64") {
  for (float softcap : {0.0f, 4.0f}) {
    check_loss_gradients<moe::route_config<12, 3>>(softcap, 1);
    check_loss_gradients<moe::route_config<12, 3, moe::sigmoid_scoring>>(softcap, 2);
    check_loss_gradients<moe::route_config<12, 3, moe::sqrt_softplus_scoring>>(softcap, 3);
    check_loss_gradients<moe::route_config<12, 3, moe::topk_softmax_scoring>>(softcap, 4);
  }
}

TEST_CASE("reference bias update: sign of (mean load - load)") {
  const std::int32_t counts[4] = {10, 2, 4, 0};  // mean 4
  float bias[4] = {0, 0, 0, 0};
  reference::update_selection_bias(counts, 4, 0.5f, bias);
  CHECK(bias[0] == -0.5f);
  CHECK(bias[1] == 0.5f);
  CHECK(bias[2] == 0.0f);
  CHECK(bias[3] == 0.5f);
}

#include <frugal/moe/thread_route.cuh>

namespace {

// thread_route on the CPU (it is FRUGAL_HOST_DEVICE) against the reference: the same ids and
// degenerate rows; weights within the fp32 rounding of their sums.
template <class Config>
void check_thread_route_on_host(frugal::moe::route_params p, unsigned long long seed) {
  constexpr int E = Config::experts, K = Config::k;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  const std::int64_t tokens = 200;
  std::vector<float> x(std::size_t(tokens) * E);
  for (auto& v : x) v = normal(rng);
  for (int e = 0; e < E; ++e) x[std::size_t(e)] = -std::numeric_limits<float>::infinity();  // a dead row
  for (int e = 0; e < E; e += 3) x[std::size_t(E + e)] = x[std::size_t(E + 1)];             // ties
  const auto ref = frugal::reference::route<Config, float>(x.data(), static_cast<const float*>(nullptr), tokens, p);
  int degenerate_rows = 0;
  for (std::int64_t t = 0; t < tokens; ++t) {
    frugal::moe::route_slot slots[K];
    bool degenerate = false;
    frugal::moe::thread_route<Config>(x.data() + t * E, static_cast<const float*>(nullptr), t, p, slots, degenerate);
    degenerate_rows += degenerate;
    for (int j = 0; j < K; ++j) {
      const std::size_t o = std::size_t(t * K + j);
      INFO("token " << t << " slot " << j);
      REQUIRE(slots[j].expert == ref.global_ids[o]);
      REQUIRE(std::fabs(slots[j].weight - ref.weights[o]) <= 3e-6f * std::fabs(ref.weights[o]) + 1e-30f);
    }
  }
  CHECK(degenerate_rows == ref.degenerate_rows);
}

}  // namespace

TEST_CASE("thread_route on the host equals the reference (softmax, sigmoid with groups and bias, top-k-then-softmax)") {
  frugal::moe::route_params p;
  check_thread_route_on_host<frugal::moe::route_config<16, 4, frugal::moe::softmax_scoring>>(p, 1);
  check_thread_route_on_host<frugal::moe::route_config<8, 2, frugal::moe::topk_softmax_scoring>>(p, 2);
  std::vector<float> bias(64);
  for (int e = 0; e < 64; ++e) bias[std::size_t(e)] = 0.01f * float((e * 37) % 11) - 0.05f;
  p.selection_bias = bias.data();
  p.renormalize = true;
  p.routed_scaling = 2.5f;
  check_thread_route_on_host<frugal::moe::route_config<64, 6, frugal::moe::sigmoid_scoring, 8, 3>>(p, 3);
}

// ---- sampled routing ------------------------------------------------------------------------

TEST_CASE("sampled routing reference: the gradient of log P equals central finite differences (fp64)") {
  std::mt19937_64 rng(77);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (float temperature : {1.0f, 0.5f, 2.0f}) {
    constexpr int E = 12, K = 4;
    std::vector<float> logits(E);
    for (auto& v : logits) v = normal(rng);
    logits[5] = -std::numeric_limits<float>::infinity();  // a masked expert: never drawn, no gradient
    moe::sample_params p;
    p.seed = 1234;
    p.temperature = temperature;
    const auto draw = reference::sample_route<E, K>(logits.data(), 1, p);
    const std::vector<std::int32_t> ids(draw.ids.begin(), draw.ids.end());
    for (std::int32_t e : ids) CHECK(e != 5);
    const float scale = 1.0f;
    const auto grad = reference::sample_route_backward<E, K>(logits.data(), ids.data(), &scale, 1, p);
    auto log_prob = [&](const std::vector<double>& l) {
      std::vector<double> x(l.size());
      for (std::size_t j = 0; j < l.size(); ++j) x[j] = l[j] / temperature;
      return reference::sampled_log_prob(x, ids);
    };
    std::vector<double> l(logits.begin(), logits.end());
    CHECK(std::abs(log_prob(l) - draw.log_prob[0]) < 1e-6);
    for (int j = 0; j < E; ++j) {
      if (j == 5) {
        CHECK(grad[std::size_t(j)] == 0.0);
        continue;
      }
      const double h = 1e-5;
      auto up = l, down = l;
      up[std::size_t(j)] += h;
      down[std::size_t(j)] -= h;
      const double fd = (log_prob(up) - log_prob(down)) / (2 * h);
      INFO("temperature " << temperature << " expert " << j);
      CHECK(std::abs(grad[std::size_t(j)] - fd) < 1e-6 * (1.0 + std::abs(fd)));
    }
  }
}

TEST_CASE("gumbel_noise: reproducible, distinct per (token, expert, offset), Gumbel-distributed") {
  moe::sample_params p;
  p.seed = 99;
  CHECK(moe::gumbel_noise(p, 3, 4) == moe::gumbel_noise(p, 3, 4));
  CHECK(moe::gumbel_noise(p, 3, 4) != moe::gumbel_noise(p, 4, 3));
  moe::sample_params q = p;
  q.offset = 1;
  CHECK(moe::gumbel_noise(p, 3, 4) != moe::gumbel_noise(q, 3, 4));
  // Mean of the standard Gumbel: the Euler-Mascheroni constant; variance pi^2 / 6.
  double sum = 0.0, sq = 0.0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double g = moe::gumbel_noise(p, i, 7);
    CHECK(std::isfinite(g));
    sum += g;
    sq += g * g;
  }
  const double mean = sum / n, var = sq / n - mean * mean;
  CHECK(std::abs(mean - 0.5772156649) < 0.01);
  CHECK(std::abs(var - 1.6449340668) < 0.03);
}

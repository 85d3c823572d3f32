// SPDX-License-Identifier: Apache-2.0
// The training side of routing against the reference: expert counts, the Switch
// load-balancing loss and the router z-loss with their gradients, the selection-bias update.
#include <frugal/moe/balance.cuh>
#include <frugal/reference/moe_balance.hpp>

#include <cstring>

#include "moe_route_support.hpp"

using namespace frugal;
using frugal::test::logits_pattern;

namespace {

bool close(double got, double want, double rel = 2e-5, double abs = 1e-7) {
  return got == want || std::fabs(got - want) <= rel * std::fabs(want) + abs;
}

template <class Config, class T = float>
void check_losses(logits_pattern pattern, std::int64_t tokens, unsigned long long seed, bool with_mask = false) {
  FRUGAL_SEEDED_RNG(rng, seed);
  constexpr int E = Config::experts, K = Config::k;
  INFO("E " << E << " k " << K << " scoring " << std::string(Config::scoring::name) << " pattern "
            << std::string(test::pattern_name(pattern)) << " tokens " << tokens << " mask " << with_mask);
  const auto logits = test::make_logits<T>(pattern, tokens, E, rng);
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(tokens));
  for (std::int64_t t = 0; t < tokens; ++t) mask[std::size_t(t)] = (t % 7) != 3;
  moe::route_params params;
  params.softcap = pattern == logits_pattern::random ? 6.0f : 0.0f;
  if (with_mask) params.row_mask = mask.data();
  const auto fwd = reference::route<Config, float>(logits.data(), (const T*)nullptr, tokens, params);
  const float coefficient = 0.01f;
  const auto ref = reference::load_balancing_loss<Config, double>(logits.data(), fwd.ids.data(), tokens, coefficient, params);
  const auto ref_grad = reference::load_balancing_loss_backward<Config, double>(logits.data(), ref.counts.data(), tokens,
                                                                                coefficient, params);
  const double ref_z = reference::router_z_loss<Config, double>(logits.data(), tokens, 1e-3f, params);
  const auto ref_z_grad = reference::router_z_loss_backward<Config, double>(logits.data(), tokens, 1e-3f, params);

  test::device_buffer<T> d_logits(logits);
  test::device_buffer<std::int32_t> d_ids(fwd.ids), d_counts(E);
  test::device_buffer<float> d_mean(E), d_loss(2), d_grad(std::size_t(tokens) * E), d_zgrad(std::size_t(tokens) * E);
  test::device_buffer<std::uint8_t> d_mask(with_mask ? mask : std::vector<std::uint8_t>{});
  moe::route_params p = params;
  if (with_mask) p.row_mask = d_mask.data();

  std::size_t bytes = 0, z_bytes = 0;
  FRUGAL_REQUIRE_OK(moe::load_balancing_loss<Config>(nullptr, bytes, d_logits.data(), d_ids.data(), {}, tokens, coefficient, p));
  FRUGAL_REQUIRE_OK(moe::router_z_loss<Config>(nullptr, z_bytes, d_logits.data(), nullptr, tokens, 1e-3f, p));
  test::device_buffer<unsigned char> workspace(bytes), z_workspace(z_bytes);
  FRUGAL_REQUIRE_OK(moe::load_balancing_loss<Config>(workspace.data(), bytes, d_logits.data(), d_ids.data(),
                                                     moe::balance_outputs{d_counts.data(), d_mean.data(), d_loss.data()}, tokens, coefficient, p));
  FRUGAL_REQUIRE_OK(moe::router_z_loss<Config>(z_workspace.data(), z_bytes, d_logits.data(), d_loss.data() + 1, tokens, 1e-3f, p));
  FRUGAL_REQUIRE_OK(moe::load_balancing_loss_backward<Config>(d_logits.data(), d_counts.data(), d_grad.data(), tokens, coefficient,
                                                              p));
  FRUGAL_REQUIRE_OK(moe::router_z_loss_backward<Config>(d_logits.data(), d_zgrad.data(), tokens, 1e-3f, p));
  test::synchronize();

  CHECK(d_counts.download() == ref.counts);
  const auto mean = d_mean.download();
  for (int e = 0; e < E; ++e)
    if (!close(mean[std::size_t(e)], ref.mean_probability[std::size_t(e)]))
      FAIL("P[" << e << "] " << mean[std::size_t(e)] << " vs " << ref.mean_probability[std::size_t(e)]);
  const auto loss = d_loss.download();
  CHECK(close(loss[0], ref.loss));
  if (std::isinf(ref_z)) CHECK(loss[1] == ref_z);
  else CHECK(close(loss[1], ref_z, 1e-4));
  const auto grad = d_grad.download(), zgrad = d_zgrad.download();
  for (std::size_t i = 0; i < grad.size(); ++i) {
    const std::size_t t = i / E;
    double row_max = 0, zrow_max = 0;
    for (int e = 0; e < E; ++e) {
      row_max = std::max(row_max, std::fabs(ref_grad[t * E + std::size_t(e)]));
      zrow_max = std::max(zrow_max, std::fabs(ref_z_grad[t * E + std::size_t(e)]));
    }
    if (!close(grad[i], ref_grad[i], 1e-4, 2e-5 * row_max + 1e-10))
      FAIL("d logit (load balancing) " << grad[i] << " vs " << ref_grad[i] << " at " << i);
    if (!close(zgrad[i], ref_z_grad[i], 1e-4, 2e-5 * zrow_max + 1e-10))
      FAIL("d logit (z-loss) " << zgrad[i] << " vs " << ref_z_grad[i] << " at " << i);
  }
}

}  // namespace

TEST_CASE("expert counts: int32 and int64 ids, padding and non-local slots not counted") {
  using config = moe::route_config<160, 6>;
  const std::int64_t tokens = 3001;
  FRUGAL_SEEDED_RNG(rng, 1);
  std::vector<std::int32_t> ids(std::size_t(tokens) * 6);
  std::vector<long long> ids64(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = i % 11 == 0 ? -1 : i % 13 == 0 ? 5 : int(rng() % 160);  // a hot expert and empty slots
    ids64[i] = ids[i];
  }
  test::device_buffer<std::int32_t> d_ids(ids), counts(160), counts64(160);
  test::device_buffer<std::int64_t> d_ids64(std::vector<std::int64_t>(ids64.begin(), ids64.end()));
  counts.fill_bytes(0x55);  // the entry point zeroes it
  FRUGAL_REQUIRE_OK(moe::expert_counts<config>(d_ids.data(), counts.data(), tokens));
  FRUGAL_REQUIRE_OK(moe::expert_counts<config>(d_ids64.data(), counts64.data(), tokens));
  test::synchronize();
  const auto ref = reference::expert_counts<config>(ids.data(), tokens);
  CHECK(counts.download() == ref);
  CHECK(counts64.download() == ref);
}

TEST_CASE("load-balancing and z-loss, forward and backward: softmax") {
  for (auto p : {logits_pattern::random, logits_pattern::ties, logits_pattern::specials, logits_pattern::one_hot,
                 logits_pattern::nan_rows, logits_pattern::neg_inf_rows})
    check_losses<moe::route_config<64, 6>>(p, 200, 100 + int(p));
  check_losses<moe::route_config<8, 2>>(logits_pattern::random, 1000, 110, true);
  check_losses<moe::route_config<256, 8>, __nv_bfloat16>(logits_pattern::random, 300, 120, true);
}

TEST_CASE("load-balancing and z-loss, forward and backward: sigmoid, sqrt-softplus, top-k-then-softmax") {
  for (auto p : {logits_pattern::random, logits_pattern::ties, logits_pattern::one_hot, logits_pattern::nan_rows})
    check_losses<moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>>(p, 150, 200 + int(p));
  check_losses<moe::route_config<96, 6, moe::sqrt_softplus_scoring>>(logits_pattern::random, 150, 210, true);
  check_losses<moe::route_config<32, 4, moe::topk_softmax_scoring>>(logits_pattern::random, 150, 220);
}

TEST_CASE("load-balancing and z-loss: large E (2048) and a single token") {
  check_losses<moe::route_config<2048, 8>>(logits_pattern::random, 40, 300);
  check_losses<moe::route_config<64, 6>>(logits_pattern::random, 1, 310);
}

TEST_CASE("losses are bitwise deterministic; workspace protocol and arguments checked") {
  using config = moe::route_config<64, 6>;
  const std::int64_t tokens = 999;
  FRUGAL_SEEDED_RNG(rng, 400);
  const auto logits = test::make_logits<float>(logits_pattern::random, tokens, 64, rng);
  const auto fwd = reference::route<config, float>(logits.data(), (const float*)nullptr, tokens, {});
  test::device_buffer<float> d_logits(logits), loss(2);
  test::device_buffer<std::int32_t> ids(fwd.ids), counts(64);
  std::size_t bytes = 0;
  FRUGAL_REQUIRE_OK(moe::load_balancing_loss<config>(nullptr, bytes, d_logits.data(), ids.data(), {}, tokens, 1.0f));
  CHECK(bytes == std::size_t((tokens + 31) / 32) * 64 * sizeof(float));
  test::device_buffer<unsigned char> workspace(bytes);
  for (int run = 0; run < 2; ++run)
    FRUGAL_REQUIRE_OK(moe::load_balancing_loss<config>(workspace.data(), bytes, d_logits.data(), ids.data(),
                                                       moe::balance_outputs{counts.data(), nullptr, loss.data() + run}, tokens, 1.0f));
  test::synchronize();
  const auto l = loss.download();
  CHECK(std::memcmp(&l[0], &l[1], sizeof(float)) == 0);
  std::size_t small = bytes - 4;
  auto s = moe::load_balancing_loss<config>(workspace.data(), small, d_logits.data(), ids.data(),
                                            moe::balance_outputs{counts.data(), nullptr, loss.data()}, tokens, 1.0f);
  CHECK(s.code() == errc::invalid_argument);
  s = moe::load_balancing_loss<config>(workspace.data(), bytes, d_logits.data(), ids.data(), moe::balance_outputs{}, tokens, 1.0f);
  CHECK(std::strstr(s.message(), "must not be null") != nullptr);
  s = moe::router_z_loss<config>(workspace.data(), bytes, d_logits.data(), loss.data(), -1, 1.0f);
  CHECK(std::strstr(s.message(), "tokens must be >= 0") != nullptr);
  CHECK(moe::update_selection_bias(counts.data(), loss.data(), 0, 0.1f).code() == errc::invalid_argument);
  moe::route_params p;
  p.softcap = INFINITY;  // the one route_params check: refused here as by route
  s = moe::router_z_loss<config>(workspace.data(), bytes, d_logits.data(), loss.data(), tokens, 1.0f, p);
  CHECK(std::strstr(s.message(), "softcap") != nullptr);
}

TEST_CASE("losses: an empty batch (T = 0) is valid: counts, P and the losses 0, backwards write nothing") {
  using config = moe::route_config<16, 2>;
  test::device_buffer<float> loss(std::vector<float>{7.0f, 7.0f}), mean(std::vector<float>(16, 7.0f)), grad(std::vector<float>{7.0f});
  test::device_buffer<std::int32_t> counts(std::vector<std::int32_t>(16, 7));
  std::size_t bytes = 0;
  FRUGAL_REQUIRE_OK(moe::load_balancing_loss<config>(nullptr, bytes, (const float*)nullptr, (const std::int32_t*)nullptr, {}, 0, 1.0f));
  test::device_buffer<unsigned char> workspace(bytes);
  FRUGAL_REQUIRE_OK(moe::load_balancing_loss<config>(workspace.data(), bytes, (const float*)nullptr, (const std::int32_t*)nullptr,
                                                     moe::balance_outputs{counts.data(), mean.data(), loss.data()}, 0, 1.0f));
  std::size_t z_bytes = 0;
  FRUGAL_REQUIRE_OK(moe::router_z_loss<config>(nullptr, z_bytes, (const float*)nullptr, loss.data() + 1, 0, 1.0f));
  test::device_buffer<unsigned char> z_workspace(z_bytes);
  FRUGAL_REQUIRE_OK(moe::router_z_loss<config>(z_workspace.data(), z_bytes, (const float*)nullptr, loss.data() + 1, 0, 1.0f));
  FRUGAL_REQUIRE_OK(moe::load_balancing_loss_backward<config>((const float*)nullptr, counts.data(), grad.data(), 0, 1.0f));
  FRUGAL_REQUIRE_OK(moe::router_z_loss_backward<config>((const float*)nullptr, grad.data(), 0, 1.0f));
  test::synchronize();
  CHECK(loss.download() == std::vector<float>{0.0f, 0.0f});
  CHECK(mean.download() == std::vector<float>(16, 0.0f));
  CHECK(counts.download() == std::vector<std::int32_t>(16, 0));
  CHECK(grad.download() == std::vector<float>{7.0f});
}

TEST_CASE("aux-loss-free balancing: the bias update moves load from hot to cold experts") {
  using config = moe::route_config<64, 6, moe::sigmoid_scoring>;
  const std::int64_t tokens = 512;
  FRUGAL_SEEDED_RNG(rng, 500);
  const auto logits = test::make_logits<float>(logits_pattern::one_hot, tokens, 64, rng);
  std::vector<float> bias(64, 0.0f);
  test::device_buffer<float> d_logits(logits), d_bias(bias), weights(tokens * 6);
  test::device_buffer<std::int32_t> ids(tokens * 6), counts(64);
  moe::route_params p;
  p.selection_bias = d_bias.data();
  std::vector<std::int32_t> first;
  for (int step = 0; step < 40; ++step) {
    FRUGAL_REQUIRE_OK(moe::route<config>(d_logits.data(), moe::route_outputs<>{ids.data(), weights.data()}, tokens, p));
    FRUGAL_REQUIRE_OK(moe::expert_counts<config>(ids.data(), counts.data(), tokens));
    const auto c = counts.download();
    if (step == 0) first = c;
    std::vector<float> b = d_bias.download();
    FRUGAL_REQUIRE_OK(moe::update_selection_bias(counts.data(), d_bias.data(), 64, 0.05f));
    reference::update_selection_bias(c.data(), 64, 0.05f, b.data());
    test::synchronize();
    REQUIRE(d_bias.download() == b);  // exact: the same fp32 additions
  }
  FRUGAL_REQUIRE_OK(moe::route<config>(d_logits.data(), moe::route_outputs<>{ids.data(), weights.data()}, tokens, p));
  FRUGAL_REQUIRE_OK(moe::expert_counts<config>(ids.data(), counts.data(), tokens));
  test::synchronize();
  const auto last = counts.download();
  CHECK(first[3] == tokens);        // the hot expert takes every token at first
  CHECK(last[3] < first[3] / 2);    // after 40 updates it takes far fewer
}

// SPDX-License-Identifier: Apache-2.0
// frugal::moe::route: every scoring mode, selection bias, group-limited routing, renormalisation,
// scaling, soft-capping, expert parallelism, padding rows, noisy top-k, element types, the block
// path (E > 1024), determinism and argument checking, each against the reference.
#include <cstring>
#include <string>
#include <utility>

#include <frugal/moe/block_route.cuh>
#include <frugal/moe/route_backward.cuh>
#include <frugal/moe/route_table.cuh>
#include <frugal/moe/thread_route.cuh>

#include "moe_route_support.hpp"

using namespace frugal;
using frugal::test::logits_pattern;

namespace {


const logits_pattern all_patterns[] = {logits_pattern::random, logits_pattern::ties, logits_pattern::specials,
                                       logits_pattern::all_equal, logits_pattern::one_hot, logits_pattern::nan_rows,
                                       logits_pattern::neg_inf_rows};

template <class Config, class T = float, class IdT = std::int32_t, class W = float>
void all_patterns_with(test::route_case c, unsigned long long seed) {
  for (auto p : all_patterns) {
    c.pattern = p;
    test::check_route<Config, T, IdT, W>(c, seed++);
  }
}

}  // namespace

TEST_CASE("route scoring: sigmoid, sqrt-softplus, none, top-k-then-softmax, a user functor") {
  test::route_case c;
  all_patterns_with<moe::route_config<64, 4, moe::sigmoid_scoring>>(c, 100);
  all_patterns_with<moe::route_config<160, 6, moe::sqrt_softplus_scoring>>(c, 200);
  all_patterns_with<moe::route_config<96, 8, moe::identity_scoring>>(c, 300);
  all_patterns_with<moe::route_config<8, 2, moe::topk_softmax_scoring>>(c, 400);  // Mixtral
  all_patterns_with<moe::route_config<128, 4, moe::topk_softmax_scoring>>(c, 500);  // gpt-oss-120b
  all_patterns_with<moe::route_config<60, 4, test::half_tanh_scoring>>(c, 600);
}

namespace {

struct routed_rows {
  std::vector<std::int32_t> ids;
  std::vector<float> weights;
  int degenerate = 0;
};

// route() over fp32 rows given on the host; `bias` (E values) is copied to the device.
template <class Config>
routed_rows route_rows(const std::vector<float>& logits, moe::route_params params, const std::vector<float>& bias = {}) {
  constexpr int E = Config::experts, K = Config::k;
  const std::int64_t tokens = std::int64_t(logits.size()) / E;
  test::device_buffer<float> d_logits(logits), d_bias(bias), d_weights(std::size_t(tokens) * K);
  test::device_buffer<std::int32_t> d_ids(std::size_t(tokens) * K), d_degenerate(1);
  d_degenerate.fill_bytes(0);
  if (!bias.empty()) params.selection_bias = d_bias.data();
  moe::route_outputs<std::int32_t, float> out{d_ids.data(), d_weights.data(), nullptr, d_degenerate.data()};
  FRUGAL_REQUIRE_OK(moe::route<Config>(moe::route_inputs<float>{d_logits.data(), nullptr}, out, tokens, params));
  test::synchronize();
  return {d_ids.download(), d_weights.download(), d_degenerate.download()[0]};
}

// The degenerate-row rule itself, not only agreement with the reference: rows of -inf and NaN
// logits are degenerate for every scoring (ids 0..k-1, weight 0, counted); a row with one live
// logit and rows with +inf logits are not; every weight is finite (an infinite score weighs 0).
template <class Config>
void check_dead_rows(moe::route_params params) {
  constexpr int E = Config::experts, K = Config::k;
  INFO("E " << E << " k " << K << " scoring " << std::string(Config::scoring::name) << " renormalize " << params.renormalize);
  std::vector<float> x;
  auto row = [&](auto value) {
    for (int e = 0; e < E; ++e) x.push_back(value(e));
  };
  row([](int) { return -INFINITY; });
  row([](int) { return NAN; });
  row([](int e) { return e % 2 ? NAN : -INFINITY; });
  row([](int e) { return e == E / 2 ? 1.5f : -INFINITY; });              // one live logit
  row([](int e) { return e % 3 == 0 ? INFINITY : 0.25f * float(e % 7); });  // +inf logits
  const routed_rows r = route_rows<Config>(x, params);
  CHECK(r.degenerate == 3);
  for (int t = 0; t < 3; ++t)
    for (int j = 0; j < K; ++j) {
      CHECK(r.ids[std::size_t(t * K + j)] == j);
      CHECK(r.weights[std::size_t(t * K + j)] == 0.0f);
    }
  CHECK(r.ids[std::size_t(3 * K)] == E / 2);
  for (float w : r.weights) CHECK(std::isfinite(w));
  const auto ref = reference::route<Config, float>(x.data(), static_cast<const float*>(nullptr), 5, params);
  CHECK(ref.degenerate_rows == 3);
}

}  // namespace

TEST_CASE("route: rows of -inf or NaN logits are degenerate and counted for every scoring; weights stay finite") {
  moe::route_params plain, renormalized;
  renormalized.renormalize = true;
  for (const auto& p : {plain, renormalized}) {
    check_dead_rows<moe::route_config<64, 4, moe::softmax_scoring>>(p);
    check_dead_rows<moe::route_config<64, 4, moe::sigmoid_scoring>>(p);
    check_dead_rows<moe::route_config<160, 6, moe::sqrt_softplus_scoring>>(p);
    check_dead_rows<moe::route_config<96, 8, moe::identity_scoring>>(p);
    check_dead_rows<moe::route_config<8, 2, moe::topk_softmax_scoring>>(p);
    check_dead_rows<moe::route_config<60, 4, test::half_tanh_scoring>>(p);
    check_dead_rows<moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>>(p);
    check_dead_rows<moe::route_config<2048, 4, moe::sigmoid_scoring>>(p);  // block path
  }
  // Finite logits whose selection values are all NaN (a NaN bias everywhere): degenerate too.
  using gate = moe::route_config<64, 4, moe::sigmoid_scoring>;
  std::vector<float> x(64 * 2);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.01f * float(i % 64);
  const routed_rows r = route_rows<gate>(x, {}, std::vector<float>(64, NAN));
  CHECK(r.degenerate == 2);
  for (float w : r.weights) CHECK(w == 0.0f);
}

TEST_CASE("route: an explicit top-2-sum group score adds scores, also where selection is on the logits") {
  // Groups of 4: group 0 holds logits (3, 3), group 1 (10, -1), the rest -5. Sigmoid scores sum to
  // 1.905 and 1.269: group 0 is kept, though its logits sum to less (6 against 9).
  auto rows = [](int experts_per_group, float a0, float a1, float b0, float b1, float rest = -5.0f) {
    std::vector<float> x(std::size_t(2 * experts_per_group), rest);
    x[0] = a0;
    x[1] = a1;
    x[std::size_t(experts_per_group)] = b0;
    x[std::size_t(experts_per_group + 1)] = b1;
    return x;
  };
  {
    using config = moe::route_config<8, 2, moe::sigmoid_scoring, 2, 1, moe::group_score::top2_sum>;
    const routed_rows r = route_rows<config>(rows(4, 3.0f, 3.0f, 10.0f, -1.0f), {});
    CHECK(r.ids == std::vector<std::int32_t>{0, 1});
  }
  {
    using config = moe::route_config<2048, 2, moe::sigmoid_scoring, 2, 1, moe::group_score::top2_sum>;  // block path
    const routed_rows r = route_rows<config>(rows(1024, 3.0f, 3.0f, 10.0f, -1.0f), {});
    CHECK(r.ids == std::vector<std::int32_t>{0, 1});
  }
  {
    // Softmax: logits (2, 2) against (3.5, -10), the rest -20: probabilities sum to more in
    // group 1, logits to more in group 0.
    using config = moe::route_config<64, 2, moe::softmax_scoring, 2, 1, moe::group_score::top2_sum>;
    const auto x = rows(32, 2.0f, 2.0f, 3.5f, -10.0f, -20.0f);
    const routed_rows r = route_rows<config>(x, {});
    CHECK(r.ids == std::vector<std::int32_t>{32, 33});
    const auto ref = reference::route<config, float>(x.data(), static_cast<const float*>(nullptr), 1, moe::route_params{});
    CHECK(ref.global_ids == std::vector<int>{32, 33});
  }
}

TEST_CASE("route: selection bias changes which experts win, not their weights") {
  const auto bias = test::random_bias(256, 1);
  test::route_case c;
  c.params.selection_bias = bias.data();
  all_patterns_with<moe::route_config<256, 8, moe::softmax_scoring>>(c, 700);
  all_patterns_with<moe::route_config<256, 8, moe::sigmoid_scoring>>(c, 800);
  all_patterns_with<moe::route_config<256, 8, moe::topk_softmax_scoring>>(c, 900);
}

TEST_CASE("route: DeepSeek-V3 gate (sigmoid, bias, 8 groups, top-4 groups by top-2 sum, top-8, renorm, x2.5)") {
  const auto bias = test::random_bias(256, 2);
  test::route_case c;
  c.params.selection_bias = bias.data();
  c.params.renormalize = true;
  c.params.routed_scaling = 2.5f;
  c.tokens = 200;
  // fp32 logits: 2 chunks of 4 experts per lane, a group spans 8 lanes; bf16: 1 chunk of 8, 4 lanes.
  all_patterns_with<moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>>(c, 1000);
  all_patterns_with<moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>, __nv_bfloat16>(c, 1050);
  // Without the bias the automatic group score is the group max.
  c.params.selection_bias = nullptr;
  all_patterns_with<moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>>(c, 1100);
  all_patterns_with<moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>, __nv_bfloat16>(c, 1150);
}

TEST_CASE("route: group-limited shapes (non-power-of-two groups, 32 groups, small E, explicit rules)") {
  const auto bias = test::random_bias(1024, 3);
  test::route_case c;
  all_patterns_with<moe::route_config<160, 6, moe::softmax_scoring, 8, 3>>(c, 1200);  // 20 experts per group
  all_patterns_with<moe::route_config<64, 8, moe::softmax_scoring, 32, 4>>(c, 1300);  // 2 experts per group
  all_patterns_with<moe::route_config<8, 2, moe::softmax_scoring, 4, 2>>(c, 1400);    // logical warps of 8 lanes
  all_patterns_with<moe::route_config<384, 22, moe::softmax_scoring, 32, 32>>(c, 1500);
  all_patterns_with<moe::route_config<96, 4, moe::sigmoid_scoring, 6, 2, moe::group_score::top2_sum>>(c, 1600);
  c.params.selection_bias = bias.data();
  all_patterns_with<moe::route_config<96, 4, moe::sigmoid_scoring, 6, 2, moe::group_score::max>>(c, 1700);
  all_patterns_with<moe::route_config<1024, 32, moe::sigmoid_scoring, 16, 4>>(c, 1800);
}

TEST_CASE("route: renormalisation with epsilon, routed scaling, soft-capping") {
  test::route_case c;
  c.params.renormalize = true;
  c.params.renormalize_epsilon = 1e-6f;
  c.params.routed_scaling = 16.0f;
  all_patterns_with<moe::route_config<32, 4, moe::softmax_scoring>>(c, 1900);
  all_patterns_with<moe::route_config<64, 6, moe::sigmoid_scoring>>(c, 2000);
  c.params = {};
  c.params.softcap = 3.0f;
  all_patterns_with<moe::route_config<64, 6, moe::softmax_scoring>>(c, 2100);
  c.params.renormalize = true;
  all_patterns_with<moe::route_config<128, 8, moe::sigmoid_scoring, 4, 2>>(c, 2200);
}

TEST_CASE("route: expert parallelism by range and by map, non-local experts written as not_routed") {
  test::route_case c;
  c.params.local_expert_begin = 64;
  c.params.local_expert_end = 128;
  all_patterns_with<moe::route_config<256, 8>>(c, 2300);
  std::vector<std::int32_t> map(160);
  for (int e = 0; e < 160; ++e) map[std::size_t(e)] = e % 3 == 0 ? e / 3 : -1;
  c.params = {};
  c.params.expert_map = map.data();
  all_patterns_with<moe::route_config<160, 6, moe::sigmoid_scoring>>(c, 2400);
  // A malformed map (entries below -1 or at least E) writes not_routed there, never a stray id.
  for (int e = 0; e < 160; ++e) map[std::size_t(e)] = e % 4 == 0 ? e / 4 : e % 4 == 1 ? -7 : e % 4 == 2 ? 160 + e : -1;
  all_patterns_with<moe::route_config<160, 6, moe::sigmoid_scoring>>(c, 2450);
  moe::route_params host_map;
  host_map.expert_map = map.data();
  CHECK(moe::local_expert_id(4, host_map, 160) == 1);
  CHECK(moe::local_expert_id(5, host_map, 160) == moe::not_routed);
  CHECK(moe::local_expert_id(6, host_map, 160) == moe::not_routed);
}

TEST_CASE("route: padding rows produce no routing") {
  test::route_case c;
  c.tokens = 97;
  std::vector<std::uint8_t> mask(97);
  for (int t = 0; t < 97; ++t) mask[std::size_t(t)] = t % 4 != 1;
  c.params.row_mask = mask.data();
  all_patterns_with<moe::route_config<256, 8>>(c, 2500);
  all_patterns_with<moe::route_config<8, 2, moe::topk_softmax_scoring>>(c, 2600);
  all_patterns_with<moe::route_config<2048, 8>>(c, 2700);
}

TEST_CASE("route: noisy top-k is reproducible from the seed") {
  test::route_case c;
  c.params.noise_std = 1.0f;
  c.params.noise_seed = 0x1234567890abcdefull;
  c.params.noise_offset = 7;
  all_patterns_with<moe::route_config<64, 2>>(c, 2800);
  c.with_noise_logits = true;  // Shazeer et al.: std = softplus(noise logits)
  all_patterns_with<moe::route_config<64, 2>>(c, 2900);
  // Same seed and offset: bitwise the same; another offset: different choices.
  FRUGAL_SEEDED_RNG(rng, 3000);
  const std::int64_t tokens = 256;
  const auto logits = test::make_logits<float>(logits_pattern::ties, tokens, 64, rng);
  test::device_buffer<float> d_logits(logits), w1(tokens * 2), w2(tokens * 2), w3(tokens * 2);
  test::device_buffer<std::int32_t> i1(tokens * 2), i2(tokens * 2), i3(tokens * 2);
  moe::route_params p;
  p.noise_std = 0.5f;
  p.noise_seed = 42;
  using config = moe::route_config<64, 2>;
  FRUGAL_REQUIRE_OK(moe::route<config>(d_logits.data(), moe::route_outputs<>{i1.data(), w1.data()}, tokens, p));
  FRUGAL_REQUIRE_OK(moe::route<config>(d_logits.data(), moe::route_outputs<>{i2.data(), w2.data()}, tokens, p));
  p.noise_offset = 1;
  FRUGAL_REQUIRE_OK(moe::route<config>(d_logits.data(), moe::route_outputs<>{i3.data(), w3.data()}, tokens, p));
  test::synchronize();
  CHECK(i1.download() == i2.download());
  const auto a = w1.download(), b = w2.download();
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  CHECK(i1.download() != i3.download());
}

namespace {
// Without a bias (and without groups) row softmax selects on the logits, takes the row max from
// the first chosen logit and the chosen logits from their selection keys. A bias of zeros forces
// the other order: statistics first, selection on the probabilities, chosen logits re-read from
// the row. On distinct random logits both select the same experts, so the weights must agree to
// the bit (the same max and the same terms summed in the same order).
template <class Config, class T>
void check_statistics_orders_agree(bool renormalize, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  constexpr int E = Config::experts, K = Config::k;
  const std::int64_t tokens = 96;
  const auto logits = test::make_logits<T>(logits_pattern::random, tokens, E, rng);
  test::device_buffer<T> d_logits(logits);
  test::device_buffer<float> zeros(std::vector<float>(E, 0.0f)), w1(tokens * K), w2(tokens * K);
  test::device_buffer<std::int32_t> i1(tokens * K), i2(tokens * K);
  moe::route_params p;
  p.renormalize = renormalize;
  // An epsilon that counts: with the default one, renormalised routing without a bias skips the
  // row sum (it cancels), which rounds differently from the statistics taken before the selection.
  p.renormalize_epsilon = 1e-3f;
  FRUGAL_REQUIRE_OK(moe::route<Config>(d_logits.data(), moe::route_outputs<>{i1.data(), w1.data()}, tokens, p));
  p.selection_bias = zeros.data();
  FRUGAL_REQUIRE_OK(moe::route<Config>(d_logits.data(), moe::route_outputs<>{i2.data(), w2.data()}, tokens, p));
  test::synchronize();
  REQUIRE(i1.download() == i2.download());
  const auto a = w1.download(), b = w2.download();
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}
}  // namespace

TEST_CASE("route: softmax statistics after the selection equal those before it, bit for bit") {
  check_statistics_orders_agree<moe::route_config<256, 8>, __nv_bfloat16>(false, 3050);  // compact keys
  check_statistics_orders_agree<moe::route_config<256, 8>, __nv_bfloat16>(true, 3051);
  check_statistics_orders_agree<moe::route_config<160, 6>, float>(false, 3052);  // 64-bit keys
  check_statistics_orders_agree<moe::route_config<8, 2>, __half>(true, 3053);    // 4 tokens per warp
}

namespace {
// Tokens for which route() takes the batched kernel on this device (16 batches per SM), and 3
// more: not a multiple of the batch.
template <class Config>
std::int64_t batched_tokens() {
  int sms = 0;
  FRUGAL_REQUIRE_OK(multiprocessor_count(sms));
  return std::int64_t(moe::detail::route_batch<Config>()) * 16 * sms + 3;
}

// Routes `tokens` rows at once (at large T the device-wide route selects a few tokens per warp
// and finishes them together) and again in slices of 100 (one token per warp): ids, weights and
// degenerate counts must agree bit for bit. Every third row is padding.
template <class Config, class T = __nv_bfloat16>
void check_batches_agree(logits_pattern pattern, moe::route_params p, unsigned long long seed) {
  static_assert(moe::detail::route_batch<Config>() > 1, "a configuration routed in batches");
  const std::int64_t tokens = batched_tokens<Config>();
  FRUGAL_SEEDED_RNG(rng, seed);
  constexpr int E = Config::experts, K = Config::k;
  INFO("E " << E << " k " << K << " pattern " << std::string(test::pattern_name(pattern)) << " tokens " << tokens);
  const auto logits = test::make_logits<T>(pattern, tokens, E, rng);
  std::vector<std::uint8_t> mask(std::size_t(tokens), 1);
  for (std::size_t t = 0; t < mask.size(); t += 3) mask[t] = 0;
  test::device_buffer<T> d_logits(logits);
  test::device_buffer<std::uint8_t> d_mask(mask);
  test::device_buffer<float> d_bias(p.selection_bias ? std::vector<float>(p.selection_bias, p.selection_bias + E) : std::vector<float>{});
  if (p.selection_bias) p.selection_bias = d_bias.data();
  test::device_buffer<float> w1(std::size_t(tokens) * K), w2(std::size_t(tokens) * K);
  test::device_buffer<std::int32_t> i1(std::size_t(tokens) * K), i2(std::size_t(tokens) * K), deg(2);
  deg.fill_bytes(0);
  p.row_mask = d_mask.data();
  FRUGAL_REQUIRE_OK(moe::route<Config>(d_logits.data(), moe::route_outputs<>{i1.data(), w1.data(), nullptr, deg.data()}, tokens, p));
  for (std::int64_t t0 = 0; t0 < tokens; t0 += 100) {
    const std::int64_t n = std::min<std::int64_t>(100, tokens - t0);
    p.row_mask = d_mask.data() + t0;
    FRUGAL_REQUIRE_OK(moe::route<Config>(d_logits.data() + t0 * E,
                                         moe::route_outputs<>{i2.data() + t0 * K, w2.data() + t0 * K, nullptr, deg.data() + 1}, n, p));
  }
  test::synchronize();
  REQUIRE(i1.download() == i2.download());
  const auto a = w1.download(), b = w2.download();
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  const auto counts = deg.download();
  CHECK(counts[0] == counts[1]);
}

}  // namespace

TEST_CASE("route: tokens finished in batches at large T equal tokens finished one by one, bit for bit") {
  // Large enough for the batched kernel on this device (batched_tokens), and not a multiple of
  // the batch. Compact keys, 64-bit keys with bias and groups, k = 6 on 8 lanes,
  // k = 2 on 4 lanes (8 tokens per batch), top-k-then-softmax, k = 1.
  const auto bias = test::random_bias(256, 6);
  moe::route_params plain, renorm;
  renorm.renormalize = true;
  renorm.routed_scaling = 2.5f;
  moe::route_params biased = renorm;
  biased.selection_bias = bias.data();
  for (auto pattern : {logits_pattern::random, logits_pattern::specials, logits_pattern::nan_rows}) {
    const unsigned long long seed = 3060 + 10 * unsigned(pattern);
    check_batches_agree<moe::route_config<256, 8>>(pattern, plain, seed);
    check_batches_agree<moe::route_config<256, 8>>(pattern, renorm, seed + 1);
    check_batches_agree<moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>>(pattern, biased, seed + 2);
    check_batches_agree<moe::route_config<160, 6>, float>(pattern, renorm, seed + 3);
    check_batches_agree<moe::route_config<64, 2, moe::topk_softmax_scoring>, __half>(pattern, plain, seed + 4);
    check_batches_agree<moe::route_config<64, 1, moe::sigmoid_scoring>>(pattern, renorm, seed + 5);
  }
}

TEST_CASE("route: at large T every pattern equals the reference (the batched kernel)") {
  const auto bias = test::random_bias(256, 7);
  test::route_case c;
  c.tokens = batched_tokens<moe::route_config<256, 8>>();
  all_patterns_with<moe::route_config<256, 8>, __nv_bfloat16>(c, 3070);
  c.params.selection_bias = bias.data();
  c.params.renormalize = true;
  c.params.routed_scaling = 2.5f;
  all_patterns_with<moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>, __nv_bfloat16>(c, 3080);
}

TEST_CASE("route tests: the GPU's near-tie rule accepts swaps within a few ulps, nothing else") {
  // Selection values 1 + 2^-23 and 1 (one ulp apart), then 0.5: the reference picks 1 then 0.
  using config = moe::route_config<8, 2, moe::identity_scoring>;
  const std::vector<float> bias(8, 0.0f);
  moe::route_params p;
  p.selection_bias = bias.data();
  const std::vector<float> row = {1.0f, 1.0f + 0x1p-23f, 0.5f, 0.25f, 0.0f, -1.0f, -2.0f, -3.0f};
  const int reference_ids[2] = {1, 0};
  const int swapped[2] = {0, 1}, other[2] = {1, 2}, twice[2] = {1, 1}, out_of_range[2] = {1, 8}, repeat[2] = {0, 0};
  CHECK(test::ids_differ_by_near_ties<config>(row.data(), (const float*)nullptr, 0, p, reference_ids, reference_ids));
  CHECK(test::ids_differ_by_near_ties<config>(row.data(), (const float*)nullptr, 0, p, swapped, reference_ids));
  CHECK_FALSE(test::ids_differ_by_near_ties<config>(row.data(), (const float*)nullptr, 0, p, other, reference_ids));
  CHECK_FALSE(test::ids_differ_by_near_ties<config>(row.data(), (const float*)nullptr, 0, p, twice, reference_ids));
  CHECK_FALSE(test::ids_differ_by_near_ties<config>(row.data(), (const float*)nullptr, 0, p, out_of_range, reference_ids));
  const int reference_ids2[2] = {0, 1};  // a device repeat where the reference has the same id
  CHECK_FALSE(test::ids_differ_by_near_ties<config>(row.data(), (const float*)nullptr, 0, p, repeat, reference_ids2));
  // Without a bias the selection is on the logits: exact, no tie excused.
  p.selection_bias = nullptr;
  CHECK_FALSE(test::ids_differ_by_near_ties<config>(row.data(), (const float*)nullptr, 0, p, swapped, reference_ids));
}

TEST_CASE("route: renormalised softmax skips the row sum only where it cancels") {
  // The default epsilon cancels (eps E < 2^-24): the weights come from e_r / sum_j e_j. A large
  // one does not: p_r / (sum_j p_j + eps) needs the row's sum, and skipping it would miss the
  // reference by far more than the tolerance. With a bias the max may not be chosen: the full
  // statistics again.
  const auto bias = test::random_bias(256, 5);
  test::route_case c;
  c.params.renormalize = true;
  all_patterns_with<moe::route_config<256, 8>, __nv_bfloat16>(c, 3090);
  all_patterns_with<moe::route_config<8, 2>, float>(c, 3091);
  c.params.renormalize_epsilon = 1e-3f;
  all_patterns_with<moe::route_config<256, 8>, __nv_bfloat16>(c, 3092);
  c.params.renormalize_epsilon = 2.5e-10f;  // 256 eps just above 2^-24
  all_patterns_with<moe::route_config<256, 8>, __nv_bfloat16>(c, 3093);
  c.params.renormalize_epsilon = 0.0f;
  c.params.selection_bias = bias.data();
  all_patterns_with<moe::route_config<256, 8>, __nv_bfloat16>(c, 3094);
}

TEST_CASE("route: bf16 and fp16 logits, int64 ids, bf16 and fp16 weights") {
  test::route_case c;
  c.params.renormalize = true;
  all_patterns_with<moe::route_config<256, 8>, __nv_bfloat16>(c, 3100);
  all_patterns_with<moe::route_config<160, 6, moe::sigmoid_scoring>, __half>(c, 3200);
  all_patterns_with<moe::route_config<256, 8>, float, std::int64_t, __nv_bfloat16>(c, 3300);
  all_patterns_with<moe::route_config<64, 8, moe::sigmoid_scoring, 8, 2>, __nv_bfloat16, std::int64_t, __half>(c, 3400);
  // 16-bit logits without bias select on compact 32-bit keys: top-k-then-softmax on a logical
  // warp of 8 lanes, and the sorted path with many keys per lane.
  all_patterns_with<moe::route_config<8, 2, moe::topk_softmax_scoring>, __half>(c, 3410);
  all_patterns_with<moe::route_config<896, 22>, __nv_bfloat16>(c, 3420);
  all_patterns_with<moe::route_config<1024, 32, moe::sigmoid_scoring>, __half>(c, 3430);
}

TEST_CASE("route: logits that are not 16-byte aligned load one element at a time") {
  test::route_case c;
  c.misalign_elements = 1;
  all_patterns_with<moe::route_config<256, 8>, __nv_bfloat16>(c, 3450);
  all_patterns_with<moe::route_config<384, 8, moe::sigmoid_scoring, 8, 4>, float>(c, 3460);
  c.misalign_elements = 2;
  all_patterns_with<moe::route_config<64, 4>, __half>(c, 3470);
}

TEST_CASE("route block path: E = 2048 and 4096") {
  const auto bias = test::random_bias(4096, 4);
  test::route_case c;
  c.tokens = 12;
  all_patterns_with<moe::route_config<2048, 8>>(c, 3500);
  all_patterns_with<moe::route_config<4096, 32, moe::sigmoid_scoring>>(c, 3600);
  c.params.selection_bias = bias.data();
  c.params.renormalize = true;
  all_patterns_with<moe::route_config<4096, 16, moe::sigmoid_scoring, 32, 4>, __nv_bfloat16>(c, 3700);
  all_patterns_with<moe::route_config<3072, 6, moe::topk_softmax_scoring, 8, 2>>(c, 3800);
}

namespace {

// Routes `logits` twice: with a user kernel (launch_user(logits, tokens, params, ids, weights,
// degenerate_rows) launches it) and with route(). Checks that the ids and the degenerate counts
// are equal and returns both weight vectors (user kernel first) for the caller's tolerance.
template <class Config, class T, class LaunchUser>
std::pair<std::vector<float>, std::vector<float>> route_both_ways(const std::vector<T>& logits, std::int64_t tokens,
                                                                  moe::route_params params, const std::vector<float>& bias,
                                                                  LaunchUser&& launch_user) {
  constexpr int K = Config::k;
  test::device_buffer<T> d_logits(logits);
  test::device_buffer<float> d_bias(bias), d_w(std::size_t(tokens) * K), d_w_route(std::size_t(tokens) * K);
  test::device_buffer<std::int32_t> d_ids(std::size_t(tokens) * K), d_ids_route(std::size_t(tokens) * K), d_deg(1), d_deg_route(1);
  d_deg.fill_bytes(0);
  d_deg_route.fill_bytes(0);
  if (!bias.empty()) params.selection_bias = d_bias.data();
  FRUGAL_REQUIRE_OK(launch_user(static_cast<const T*>(d_logits.data()), tokens, params, d_ids.data(), d_w.data(), d_deg.data()));
  moe::route_outputs<std::int32_t, float> out{d_ids_route.data(), d_w_route.data(), nullptr, d_deg_route.data()};
  FRUGAL_REQUIRE_OK(moe::route<Config>(moe::route_inputs<T>{d_logits.data(), nullptr}, out, tokens, params));
  test::synchronize();
  CHECK(d_ids.download() == d_ids_route.download());
  CHECK(d_deg.download() == d_deg_route.download());
  return {d_w.download(), d_w_route.download()};
}

// A user kernel routing with moe::block_route at a block size of its own.
template <class Config, int Threads>
__global__ void __launch_bounds__(Threads) user_block_route_kernel(const float* logits, std::int64_t tokens, moe::route_params params, std::int32_t* ids,
                                        float* weights, std::int32_t* degenerate_rows) {
  using router_t = moe::block_route<Config, Threads>;
  __shared__ typename router_t::TempStorage storage;
  router_t router(storage);
  for (std::int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    bool degenerate = false;
    const moe::route_slot slot = router.route(logits + t * Config::experts, static_cast<const float*>(nullptr), t, params, degenerate);
    if (int(threadIdx.x) < Config::k) {
      ids[t * Config::k + threadIdx.x] = slot.expert;
      weights[t * Config::k + threadIdx.x] = slot.weight;
    }
    if (threadIdx.x == 0 && degenerate) atomicAdd(degenerate_rows, 1);
  }
}

// block_route in a user kernel of `Threads` threads equals route() (whose block path runs 128):
// the same ids and count; the same weights bit for bit where no block-wide sum enters them
// (elementwise scorings), within 2 ulps for row softmax (whose sum runs over another tree).
template <class Config, int Threads>
void check_user_block_route(logits_pattern pattern, moe::route_params params, const std::vector<float>& bias, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  constexpr int E = Config::experts, K = Config::k;
  INFO("E " << E << " k " << K << " threads " << Threads << " scoring " << std::string(Config::scoring::name) << " pattern "
            << std::string(test::pattern_name(pattern)));
  const std::int64_t tokens = 40;
  const auto logits = test::make_logits<float>(pattern, tokens, E, rng);
  const auto [w, w_route] = route_both_ways<Config>(logits, tokens, params, bias, [&](auto... args) {
    return launch(user_block_route_kernel<Config, Threads>, launch_config{dim3(7), dim3(Threads)}, args...);
  });
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (Config::kind == moe::scoring_kind::row_softmax) CHECK(std::fabs(w[i] - w_route[i]) <= 2.4e-7f * std::fabs(w_route[i]));
    else CHECK(float_bits(w[i]) == float_bits(w_route[i]));
  }
}

}  // namespace

TEST_CASE("block_route: a user kernel's own block size routes as route() does (E = 2048)") {
  moe::route_params p;
  p.renormalize = true;
  p.routed_scaling = 2.5f;
  const auto bias = test::random_bias(2048, 9);
  for (auto pattern : all_patterns) {
    check_user_block_route<moe::route_config<2048, 8, moe::sigmoid_scoring, 16, 4>, 256>(pattern, p, bias, 2000 + int(pattern));
    check_user_block_route<moe::route_config<2048, 8, moe::sigmoid_scoring, 16, 4>, 64>(pattern, p, {}, 2100 + int(pattern));
    check_user_block_route<moe::route_config<2048, 6, moe::softmax_scoring>, 512>(pattern, p, {}, 2200 + int(pattern));
  }
}

namespace {

// A user kernel routing one token per thread with moe::thread_route.
template <class Config, class T>
__global__ void user_thread_route_kernel(const T* logits, std::int64_t tokens, moe::route_params params, std::int32_t* ids,
                                         float* weights, std::int32_t* degenerate_rows) {
  for (std::int64_t t = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; t < tokens; t += std::int64_t(gridDim.x) * blockDim.x) {
    moe::route_slot slots[Config::k];
    bool degenerate = false;
    moe::thread_route<Config>(logits + t * Config::experts, static_cast<const T*>(nullptr), t, params, slots, degenerate);
    for (int j = 0; j < Config::k; ++j) {
      ids[t * Config::k + j] = slots[j].expert;
      weights[t * Config::k + j] = slots[j].weight;
    }
    if (degenerate) atomicAdd(degenerate_rows, 1);
  }
}

// thread_route equals route(): the same ids and degenerate count; the same weights where no sum
// enters them (elementwise scorings, not renormalised; a zero weight may differ in sign: route()
// reads a chosen logit from its key, which holds -0.0 as +0.0), else within 1e-6 relative (the
// softmax and renormalisation sums run sequentially here, as butterflies there: a few ulps).
template <class Config, class T = float>
void check_thread_route(logits_pattern pattern, moe::route_params params, const std::vector<float>& bias, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  constexpr int E = Config::experts, K = Config::k;
  INFO("E " << E << " k " << K << " groups " << Config::groups << " scoring " << std::string(Config::scoring::name) << " logits "
            << std::string(type_name<T>()) << " pattern " << std::string(test::pattern_name(pattern)) << " renormalize "
            << params.renormalize << " bias " << !bias.empty());
  const std::int64_t tokens = 300;
  const auto logits = test::make_logits<T>(pattern, tokens, E, rng);
  const auto [w, w_route] = route_both_ways<Config>(logits, tokens, params, bias, [&](auto... args) {
    return launch(user_thread_route_kernel<Config, T>, launch_config{dim3(3), dim3(64)}, args...);
  });
  const bool exact = Config::kind == moe::scoring_kind::elementwise && !params.renormalize;
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (exact) CHECK(w[i] == w_route[i]);
    else CHECK(std::fabs(w[i] - w_route[i]) <= 1e-6f * std::fabs(w_route[i]));
  }
}

template <class Config, class T = float>
void thread_route_all_patterns(moe::route_params params, const std::vector<float>& bias, unsigned long long seed) {
  for (auto pattern : all_patterns) check_thread_route<Config, T>(pattern, params, bias, seed++);
}

}  // namespace

TEST_CASE("thread_route: one token per thread routes as route() does (E <= 64, every scoring, groups, bias)") {
  moe::route_params plain, renormalized;
  renormalized.renormalize = true;
  renormalized.routed_scaling = 2.5f;
  for (const auto& p : {plain, renormalized}) {
    thread_route_all_patterns<moe::route_config<8, 2, moe::topk_softmax_scoring>>(p, {}, 3000);  // Mixtral
    thread_route_all_patterns<moe::route_config<8, 2, moe::topk_softmax_scoring>, __nv_bfloat16>(p, {}, 3010);
    thread_route_all_patterns<moe::route_config<16, 4, moe::softmax_scoring>>(p, {}, 3020);
    thread_route_all_patterns<moe::route_config<7, 1, moe::softmax_scoring>, __half>(p, {}, 3030);
    thread_route_all_patterns<moe::route_config<32, 8, moe::identity_scoring>>(p, {}, 3040);
    thread_route_all_patterns<moe::route_config<60, 4, test::half_tanh_scoring>>(p, {}, 3050);
    thread_route_all_patterns<moe::route_config<64, 6, moe::sigmoid_scoring, 8, 3>>(p, test::random_bias(64, 4), 3060);
    thread_route_all_patterns<moe::route_config<64, 6, moe::sigmoid_scoring, 8, 3>>(p, {}, 3070);
    thread_route_all_patterns<moe::route_config<48, 4, moe::softmax_scoring, 4, 2, moe::group_score::top2_sum>>(p, {}, 3080);
  }
}

TEST_CASE("route: bitwise deterministic across runs") {
  FRUGAL_SEEDED_RNG(rng, 3900);
  const std::int64_t tokens = 1000;
  const auto logits = test::make_logits<__nv_bfloat16>(logits_pattern::ties, tokens, 256, rng);
  const auto bias = test::random_bias(256, 5);
  test::device_buffer<__nv_bfloat16> d_logits(logits);
  test::device_buffer<float> d_bias(bias), w1(tokens * 8), w2(tokens * 8);
  test::device_buffer<std::int32_t> i1(tokens * 8), i2(tokens * 8);
  moe::route_params p;
  p.selection_bias = d_bias.data();
  p.renormalize = true;
  p.routed_scaling = 2.5f;
  using config = moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>;
  FRUGAL_REQUIRE_OK(moe::route<config>(d_logits.data(), moe::route_outputs<>{i1.data(), w1.data()}, tokens, p));
  FRUGAL_REQUIRE_OK(moe::route<config>(d_logits.data(), moe::route_outputs<>{i2.data(), w2.data()}, tokens, p));
  test::synchronize();
  CHECK(i1.download() == i2.download());
  const auto a = w1.download(), b = w2.download();
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

TEST_CASE("route: invalid arguments are refused with a message") {
  using config = moe::route_config<64, 4>;
  test::device_buffer<float> x(64), w(4);
  test::device_buffer<std::int32_t> ids(4);
  const moe::route_outputs<> out{ids.data(), w.data()};
  auto expect = [](frugal::status s, const char* fragment) {
    INFO(s.message());
    CHECK(s.code() == frugal::errc::invalid_argument);
    CHECK(std::strstr(s.message(), fragment) != nullptr);
  };
  expect(moe::route<config>(x.data(), out, -1), "tokens must be in [0, 2^40]");
  expect(moe::route<config>((const float*)nullptr, out, 1), "logits is null");
  expect(moe::route<config>(x.data(), moe::route_outputs<>{nullptr, w.data()}, 1), "ids and weights must not be null");
  moe::route_params p;
  p.renormalize_epsilon = -1.0f;
  expect(moe::route<config>(x.data(), out, 1, p), "renormalize_epsilon");
  p = {};
  p.routed_scaling = INFINITY;
  expect(moe::route<config>(x.data(), out, 1, p), "routed_scaling");
  p = {};
  p.softcap = -2.0f;
  expect(moe::route<config>(x.data(), out, 1, p), "softcap");
  p = {};
  p.noise_std = NAN;
  expect(moe::route<config>(x.data(), out, 1, p), "noise_std");
  p = {};
  p.local_expert_begin = 10;
  p.local_expert_end = 70;
  expect(moe::route<config>(x.data(), out, 1, p), "local expert range");
  FRUGAL_REQUIRE_OK(moe::route<config>((const float*)nullptr, moe::route_outputs<>{}, 0));  // T = 0: nothing to do
  // Aliasing: ids and weights sharing a buffer, weights over the logits.
  expect(moe::route<config>(x.data(), moe::route_outputs<>{reinterpret_cast<std::int32_t*>(w.data()), w.data()}, 1), "must not overlap");
  expect(moe::route<config>(x.data(), moe::route_outputs<>{ids.data(), x.data() + 8}, 1), "must not overlap");
  // A malformed expert_map is not an argument error (the host cannot read it): see the EP test case.
}

// Logits as rows of a wider buffer (route_inputs::ld), aligned (vector loads) and not (scalar
// loads): the same bits as the contiguous rows. route_inputs::columns is checked against E.
TEST_CASE("route: a row stride for the logits (ld), and their width checked (columns)") {
  using config = moe::route_config<64, 6, moe::sigmoid_scoring, 8, 4>;
  const std::int64_t tokens = 77;
  FRUGAL_SEEDED_RNG(rng, 5100);
  const auto logits = test::make_logits<float>(logits_pattern::random, tokens, 64, rng);
  test::device_buffer<float> d_dense(logits);
  test::device_buffer<std::int32_t> ids_dense(tokens * 6);
  test::device_buffer<float> w_dense(tokens * 6);
  FRUGAL_REQUIRE_OK(moe::route<config>(d_dense.data(), moe::route_outputs<>{ids_dense.data(), w_dense.data()}, tokens));
  std::vector<float> g_dense_host(std::size_t(tokens) * 64);
  test::device_buffer<float> dw(std::vector<float>(std::size_t(tokens) * 6, 0.25f)), g_dense(g_dense_host.size());
  FRUGAL_REQUIRE_OK(moe::route_backward<config>(d_dense.data(), ids_dense.data(), dw.data(), g_dense.data(), tokens));
  for (std::int64_t ld : {72, 67}) {  // 72: rows stay 16-byte aligned; 67: they do not (one logit at a time)
    std::vector<float> wide(std::size_t(tokens * ld), NAN);
    for (std::int64_t t = 0; t < tokens; ++t)
      for (int e = 0; e < 64; ++e) wide[std::size_t(t * ld + e)] = logits[std::size_t(t * 64 + e)];
    test::device_buffer<float> d_wide(wide), w(tokens * 6), g(std::size_t(tokens) * 64);
    test::device_buffer<std::int32_t> ids(tokens * 6);
    moe::route_inputs<float> in{d_wide.data(), nullptr, ld, 64};
    FRUGAL_REQUIRE_OK(moe::route<config>(in, moe::route_outputs<>{ids.data(), w.data()}, tokens));
    FRUGAL_REQUIRE_OK(moe::route_backward<config>(in, ids_dense.data(), dw.data(), g.data(), tokens));
    test::synchronize();
    INFO("ld " << ld);
    CHECK(ids.download() == ids_dense.download());
    CHECK(w.download() == w_dense.download());
    CHECK(g.download() == g_dense.download());
  }
  const moe::route_outputs<> out{ids_dense.data(), w_dense.data()};
  auto message = [](frugal::status s) { return std::string(s.message()); };
  CHECK(message(moe::route<config>(moe::route_inputs<float>{d_dense.data(), nullptr, 0, 60}, out, tokens)).find("columns") != std::string::npos);
  CHECK(message(moe::route<config>(moe::route_inputs<float>{d_dense.data(), nullptr, 32}, out, tokens)).find("ld") != std::string::npos);
  CHECK(message(moe::route_backward<config>(moe::route_inputs<float>{d_dense.data(), nullptr, 0, 128}, ids_dense.data(), dw.data(),
                                            g_dense.data(), tokens))
            .find("columns") != std::string::npos);
}

// A runtime shape routed to the compiled configuration that matches it, or refused.
TEST_CASE("route_table: a runtime (E, k, scoring, groups) picks its compiled configuration") {
  using deepseek = moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>;
  using routers = moe::route_table<moe::route_config<8, 2>, moe::route_config<64, 4, moe::topk_softmax_scoring>, deepseek>;
  const std::int64_t tokens = 40;
  FRUGAL_SEEDED_RNG(rng, 5200);
  const auto logits = test::make_logits<float>(logits_pattern::random, tokens, 256, rng);
  test::device_buffer<float> d_x(logits), w1(tokens * 8), w2(tokens * 8), g1(std::size_t(tokens) * 256), g2(std::size_t(tokens) * 256),
      dw(std::vector<float>(std::size_t(tokens) * 8, 1.0f));
  test::device_buffer<std::int32_t> i1(tokens * 8), i2(tokens * 8);
  const moe::route_shape shape{256, 8, "sigmoid", 8, 4};
  CHECK(routers::contains(shape));
  FRUGAL_REQUIRE_OK(routers::route(moe::route_inputs<float>{d_x.data()}, moe::route_outputs<>{i1.data(), w1.data()}, tokens, shape));
  FRUGAL_REQUIRE_OK(moe::route<deepseek>(d_x.data(), moe::route_outputs<>{i2.data(), w2.data()}, tokens));
  FRUGAL_REQUIRE_OK(routers::route_backward(moe::route_inputs<float>{d_x.data()}, i2.data(), dw.data(), g1.data(), tokens, shape));
  FRUGAL_REQUIRE_OK(moe::route_backward<deepseek>(d_x.data(), i2.data(), dw.data(), g2.data(), tokens));
  test::synchronize();
  CHECK(i1.download() == i2.download());
  CHECK(w1.download() == w2.download());
  CHECK(g1.download() == g2.download());
  for (const moe::route_shape other : {moe::route_shape{256, 8, "softmax", 8, 4}, moe::route_shape{256, 6, "sigmoid", 8, 4},
                                       moe::route_shape{256, 8, "sigmoid", 8, 2}, moe::route_shape{128, 8, "sigmoid"}}) {
    CHECK(!routers::contains(other));
    const auto s = routers::route(moe::route_inputs<float>{d_x.data()}, moe::route_outputs<>{i1.data(), w1.data()}, tokens, other);
    CHECK(s.code() == frugal::errc::unsupported);
    CHECK(std::strstr(s.message(), "no compiled route_config") != nullptr);
  }
  CHECK(routers::contains(moe::route_shape{64, 4, "topk_softmax"}));
}

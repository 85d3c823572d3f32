// SPDX-License-Identifier: Apache-2.0
// frugal::moe::bf16_score_table and routing that reads its scores from it: every bf16 logit the
// table holds scores bit for bit as the scoring itself does on this device, and routes with the
// table equal routes without it, bit for bit, on every kind of row (each of the 65536 bf16
// values included), in every kernel of the warp path.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "moe_route_support.hpp"

using namespace frugal;
using frugal::test::logits_pattern;

namespace {

constexpr int bf16_values = 65536;
using gate = moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>;  // DeepSeek-V3

// The widened bf16 logit of bit pattern u.
float bf16_logit(std::uint32_t u) { return bit_cast<float>(u << 16); }

// Scores of all 65536 bf16 logits from a block's table (NaN where it does not hold them) and
// from the scoring itself; and whether the byte-offset lookup (score_of_bf16) reads the entry's
// score for every bf16 value, held or not.
template <class S>
__global__ void score_every_bf16(float* tabulated, float* computed, int* offset_mismatch) {
  __shared__ typename moe::bf16_score_table<S>::TempStorage storage;
  const moe::bf16_score_table<S> table(storage);
  table.fill();
  for (int u = int(threadIdx.x + blockIdx.x * blockDim.x); u < bf16_values; u += int(blockDim.x * gridDim.x)) {
    const float x = bit_cast<float>(std::uint32_t(u) << 16);
    const float by_entry = table.at(moe::score_table_entry(x));
    tabulated[u] = moe::score_table_holds(x) ? by_entry : NAN;
    computed[u] = S{}(x);
    offset_mismatch[u] = float_bits(table.score_of_bf16(x)) != float_bits(by_entry);
  }
}

template <class S>
void check_table_scores() {
  INFO("scoring " << std::string(S::name));
  test::device_buffer<float> tabulated(bf16_values), computed(bf16_values);
  test::device_buffer<int> offset_mismatch(bf16_values);
  FRUGAL_REQUIRE_OK(launch(score_every_bf16<S>, launch_config{dim3(4), dim3(256)}, tabulated.data(), computed.data(),
                           offset_mismatch.data()));
  test::synchronize();
  const auto t = tabulated.download(), c = computed.download();
  const auto mismatch = offset_mismatch.download();
  CHECK(std::count(mismatch.begin(), mismatch.end(), 1) == 0);
  int held = 0;
  for (std::uint32_t u = 0; u < bf16_values; ++u) {
    if (!moe::score_table_holds(bf16_logit(u))) continue;
    ++held;
    if (float_bits(t[u]) != float_bits(c[u])) {
      INFO("bf16 bits " << u << " logit " << bf16_logit(u) << " table " << t[u] << " scoring " << c[u]);
      CHECK(float_bits(t[u]) == float_bits(c[u]));
    }
  }
  CHECK(held == 2 * moe::score_table_entries_per_sign);
}

// Bit patterns spread over every bf16 value: token t, expert e gets pattern (t E + e) * 40503
// mod 65536 (40503 is odd, so T E >= 65536 consecutive slots hold every pattern once), so each
// row mixes magnitudes, signs, zeros, subnormals, infinities and NaNs.
std::vector<__nv_bfloat16> every_bf16_logits(std::int64_t tokens, int experts) {
  std::vector<__nv_bfloat16> x(std::size_t(tokens) * experts);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = __float2bfloat16_rn(bf16_logit(std::uint32_t(i * 40503u) & 0xffffu));
  return x;
}

using moe::detail::route_warp_path;

// Routes the same rows by every kernel of the warp path that applies (one token per warp or in
// batches, with and without the table) and by route()'s own choice: ids, weights and degenerate
// counts agree bit for bit. With `padding`, every fifth row is padding.
template <class Config>
void check_table_paths_agree(const std::vector<__nv_bfloat16>& logits, std::int64_t tokens, moe::route_params p,
                             const char* what, bool padding = true) {
  constexpr int E = Config::experts, K = Config::k;
  INFO("E " << E << " k " << K << " scoring " << std::string(Config::scoring::name) << " rows " << std::string(what)
            << " tokens " << tokens << " padding " << padding);
  std::vector<std::uint8_t> mask(std::size_t(tokens), 1);
  for (std::size_t t = 0; padding && t < mask.size(); t += 5) mask[t] = 0;
  test::device_buffer<__nv_bfloat16> d_logits(logits);
  test::device_buffer<std::uint8_t> d_mask(mask);
  test::device_buffer<float> d_bias(p.selection_bias ? std::vector<float>(p.selection_bias, p.selection_bias + E) : std::vector<float>{});
  if (p.selection_bias) p.selection_bias = d_bias.data();
  p.row_mask = d_mask.data();
  std::vector<route_warp_path> paths = {route_warp_path::one_by_one, route_warp_path::one_by_one_tabulated,
                                        route_warp_path::automatic};
  if (moe::detail::route_batch<Config>() > 1) {
    paths.push_back(route_warp_path::batched);
    paths.push_back(route_warp_path::batched_tabulated);
  }
  std::vector<std::int32_t> first_ids, first_degenerate;
  std::vector<float> first_weights;
  for (auto path : paths) {
    INFO("path " << int(path));
    test::device_buffer<std::int32_t> ids(std::size_t(tokens) * K), degenerate(1);
    test::device_buffer<float> weights(std::size_t(tokens) * K);
    degenerate.fill_bytes(0);
    FRUGAL_REQUIRE_OK((moe::detail::launch_route_warp_path<Config>(
        moe::route_inputs<__nv_bfloat16>{d_logits.data(), nullptr},
        moe::route_outputs<>{ids.data(), weights.data(), nullptr, degenerate.data()}, tokens, p, nullptr, path)));
    test::synchronize();
    if (path == paths.front()) {
      first_ids = ids.download();
      first_weights = weights.download();
      first_degenerate = degenerate.download();
      continue;
    }
    REQUIRE(ids.download() == first_ids);
    const auto w = weights.download();
    CHECK(std::memcmp(w.data(), first_weights.data(), w.size() * sizeof(float)) == 0);
    CHECK(degenerate.download() == first_degenerate);
  }
}

template <class Config>
void check_table_paths_agree_on_all_rows(moe::route_params p, unsigned long long seed) {
  constexpr int E = Config::experts;
  // Without padding rows, so that every bf16 value is scored.
  const std::int64_t tokens = std::max<std::int64_t>(300, bf16_values / E + 1);
  check_table_paths_agree<Config>(every_bf16_logits(tokens, E), tokens, p, "every bf16 value", false);
  for (auto pattern : {logits_pattern::random, logits_pattern::ties, logits_pattern::specials, logits_pattern::nan_rows,
                       logits_pattern::neg_inf_rows}) {
    FRUGAL_SEEDED_RNG(rng, seed++);
    check_table_paths_agree<Config>(test::make_logits<__nv_bfloat16>(pattern, 300, E, rng), 300, p,
                                    test::pattern_name(pattern));
  }
}

}  // namespace

TEST_CASE("score table: every bf16 logit it holds scores bit for bit as the scoring does") {
  check_table_scores<moe::sigmoid_scoring>();
  check_table_scores<moe::sqrt_softplus_scoring>();
  check_table_scores<test::half_tanh_scoring>();
}

TEST_CASE("score table: entries are one-to-one with the logits held, 2^-27 <= |x| < 32") {
  std::vector<int> seen(2 * moe::score_table_entries_per_sign, 0);
  for (std::uint32_t u = 0; u < bf16_values; ++u) {
    const float x = bf16_logit(u), magnitude = std::fabs(x);
    const bool in_range = magnitude >= 0x1p-27f && magnitude < 32.0f;  // false for NaN
    REQUIRE(moe::score_table_holds(x) == in_range);
    const int entry = moe::score_table_entry(x);
    REQUIRE(entry >= 0);  // also where it is not held: lookups take no branch
    REQUIRE(entry < 2 * moe::score_table_entries_per_sign);
    REQUIRE(moe::score_table_offset_of_bf16(x) == 4u * std::uint32_t(entry));  // held or not
    if (!in_range) continue;
    ++seen[std::size_t(entry)];
    REQUIRE(float_bits(moe::score_table_logit(entry)) == float_bits(x));
  }
  for (int n : seen) REQUIRE(n == 1);
  // Any fp32 bits at all map into the table (lookups never leave its 32 KB).
  std::mt19937_64 rng(5);
  for (int i = 0; i < 100000; ++i) {
    const int entry = moe::score_table_entry(bit_cast<float>(std::uint32_t(rng())));
    REQUIRE(entry >= 0);
    REQUIRE(entry < 2 * moe::score_table_entries_per_sign);
  }
}

TEST_CASE("route: scores from the table equal scores computed, bit for bit, in every warp-path kernel") {
  const auto bias = test::random_bias(384, 11);
  moe::route_params biased;
  biased.selection_bias = bias.data();
  biased.renormalize = true;
  biased.routed_scaling = 2.5f;
  // DeepSeek-V3 gate; sigmoid with a bias and no groups; sqrt-softplus, E = 384, k = 6;
  // k = 16 (no batches); a user scoring not declared monotone, without a bias (every score
  // needed), E = 64.
  check_table_paths_agree_on_all_rows<gate>(biased, 4000);
  check_table_paths_agree_on_all_rows<moe::route_config<256, 8, moe::sigmoid_scoring>>(biased, 4010);
  check_table_paths_agree_on_all_rows<moe::route_config<384, 6, moe::sqrt_softplus_scoring>>(biased, 4020);
  check_table_paths_agree_on_all_rows<moe::route_config<256, 16, moe::sigmoid_scoring, 8, 4>>(biased, 4030);
  check_table_paths_agree_on_all_rows<moe::route_config<64, 2, test::half_tanh_scoring>>(moe::route_params{}, 4040);
  // Soft-capped logits are not the bf16 values the table holds: the kernel scores them itself.
  moe::route_params capped = biased;
  capped.softcap = 8.0f;
  check_table_paths_agree_on_all_rows<gate>(capped, 4050);
}

TEST_CASE("route: a score table needs bf16 logits in aligned rows and an elementwise scoring") {
  test::device_buffer<__nv_bfloat16> logits(std::size_t(257) * 256);
  test::device_buffer<float> weights(64);
  test::device_buffer<std::int32_t> ids(64);
  const moe::route_outputs<> out{ids.data(), weights.data()};
  const auto path = route_warp_path::batched_tabulated;
  CHECK((moe::detail::launch_route_warp_path<gate>(moe::route_inputs<__nv_bfloat16>{logits.data() + 1, nullptr}, out, 8,
                                                   moe::route_params{}, nullptr, path)
             .code() == errc::misaligned));
  CHECK((moe::detail::launch_route_warp_path<moe::route_config<256, 8>>(moe::route_inputs<__nv_bfloat16>{logits.data(), nullptr},
                                                                        out, 8, moe::route_params{}, nullptr, path)
             .code() == errc::invalid_argument));
  CHECK((moe::detail::launch_route_warp_path<moe::route_config<256, 16>>(moe::route_inputs<__nv_bfloat16>{logits.data(), nullptr},
                                                                         out, 4, moe::route_params{}, nullptr, route_warp_path::batched)
             .code() == errc::invalid_argument));
}

namespace {
// The fewest tokens for which route() reads the gate's scores from the table on this device:
// 64 per resident block of the batched table kernel.
std::int64_t tabulated_tokens() {
  int sms = 0;
  FRUGAL_REQUIRE_OK(multiprocessor_count(sms));
  std::int64_t resident = 0;
  FRUGAL_REQUIRE_OK((moe::detail::route_warp_launch<gate, __nv_bfloat16, std::int32_t, float, moe::route_vector_width<gate, __nv_bfloat16>(),
                                                    moe::detail::route_batch<gate>(), true>::max_blocks(sms, resident)));
  return resident * 64;
}
}  // namespace

TEST_CASE("route: route() reads scores from the table where each resident block routes 64 tokens, bit for bit") {
  const std::int64_t tokens = tabulated_tokens();
  int sms = 0;
  FRUGAL_REQUIRE_OK(multiprocessor_count(sms));
  const auto bias = test::random_bias(256, 13);
  test::device_buffer<__nv_bfloat16> logits(std::size_t(tokens + 3) * 256 + 1);
  moe::route_params p;
  p.selection_bias = bias.data();  // (only compared with nullptr here)
  auto chosen = [&](const auto* rows, std::int64_t t, const moe::route_params& params) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(rows)>>;
    route_warp_path path = route_warp_path::automatic;
    FRUGAL_REQUIRE_OK((moe::detail::choose_route_warp_path<gate, T>(moe::route_inputs<T>{rows, nullptr}, t, params, sms, path)));
    return path;
  };
  CHECK(chosen(logits.data(), tokens, p) == route_warp_path::batched_tabulated);
  CHECK(chosen(logits.data(), tokens - 1, p) == route_warp_path::batched);
  CHECK(chosen(logits.data() + 1, tokens, p) == route_warp_path::batched);  // rows not 16-byte aligned
  moe::route_params unbiased, capped = p, noisy = p;
  capped.softcap = 30.0f;
  noisy.noise_std = 1.0f;
  CHECK(chosen(logits.data(), tokens, unbiased) == route_warp_path::batched);  // selects on the logits
  CHECK(chosen(logits.data(), tokens, capped) == route_warp_path::batched);
  CHECK(chosen(logits.data(), tokens, noisy) == route_warp_path::batched);
  CHECK(chosen(static_cast<const float*>(nullptr), tokens, p) == route_warp_path::batched);  // fp32 logits
  CHECK(chosen(logits.data(), 1, p) == route_warp_path::one_by_one);

  moe::route_params biased;
  biased.selection_bias = bias.data();
  biased.renormalize = true;
  FRUGAL_SEEDED_RNG(rng, 4200);
  check_table_paths_agree<gate>(test::make_logits<__nv_bfloat16>(logits_pattern::random, tokens + 3, 256, rng), tokens + 3,
                                biased, "random, at route()'s table threshold");
}

TEST_CASE("route: at T where route() reads scores from the table, every pattern equals the reference") {
  const auto bias = test::random_bias(256, 12);
  test::route_case c;
  c.tokens = tabulated_tokens() + 3;
  c.params.selection_bias = bias.data();
  c.params.renormalize = true;
  c.params.routed_scaling = 2.5f;
  unsigned long long seed = 4100;
  for (auto pattern : {logits_pattern::random, logits_pattern::specials, logits_pattern::one_hot}) {
    c.pattern = pattern;
    test::check_route<gate, __nv_bfloat16>(c, seed++);
  }
}

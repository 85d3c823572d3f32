// SPDX-License-Identifier: Apache-2.0
// Shared by the routing tests: input patterns, and running frugal::moe::route against
// frugal::reference::route with the comparison rules of docs/moe_routing.md.
#pragma once

#include <frugal/moe/device_route.cuh>
#include <frugal/reference/moe_route.hpp>

#include <cmath>
#include <limits>
#include <string>

#include "support/test_support.hpp"

namespace frugal::test {

//! A user's scoring functor: s = 1 + tanh(x) / 2 (positive, not declared monotone, so frugal
//! selects on the scores themselves), with its derivative for the backward.
struct half_tanh_scoring {
  static constexpr const char* name = "user:half_tanh";
  template <class R>
  FRUGAL_HOST_DEVICE R operator()(R x) const {
    using std::tanh;
    return R(1) + tanh(x) / R(2);
  }
  template <class R>
  FRUGAL_HOST_DEVICE R derivative(R x, R) const {
    using std::tanh;
    const R t = tanh(x);
    return (R(1) - t * t) / R(2);
  }
};

enum class logits_pattern { random, ties, specials, all_equal, one_hot, nan_rows, neg_inf_rows };

// A selection bias of `experts` values uniform in [-0.05, 0.05].
inline std::vector<float> random_bias(int experts, unsigned long long seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-0.05f, 0.05f);
  std::vector<float> b(static_cast<std::size_t>(experts));
  for (auto& v : b) v = u(rng);
  return b;
}

inline const char* pattern_name(logits_pattern p) {
  switch (p) {
    case logits_pattern::random: return "random";
    case logits_pattern::ties: return "ties";
    case logits_pattern::specials: return "specials";
    case logits_pattern::all_equal: return "all_equal";
    case logits_pattern::one_hot: return "one_hot";
    case logits_pattern::nan_rows: return "nan_rows";
    case logits_pattern::neg_inf_rows: return "neg_inf_rows";
  }
  return "?";
}

//! [tokens, experts] logits. `ties`: 6 distinct values; `specials`: NaN, +-inf, -0.0 sprinkled;
//! `one_hot`: expert 3 % E is far ahead in every row (every token wants it); `nan_rows` and
//! `neg_inf_rows`: every third row entirely NaN / -inf, the rest random.
template <class T>
std::vector<T> make_logits(logits_pattern p, std::int64_t tokens, int experts, std::mt19937_64& rng) {
  std::vector<T> x(std::size_t(tokens) * experts);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (std::int64_t t = 0; t < tokens; ++t)
    for (int e = 0; e < experts; ++e) {
      float f = normal(rng);
      switch (p) {
        case logits_pattern::random: break;
        case logits_pattern::ties: f = float(int(rng() % 6)) * 0.5f - 1.0f; break;
        case logits_pattern::specials: {
          const unsigned r = unsigned(rng() % 16);
          f = r == 0 ? nan : r == 1 ? inf : r == 2 ? -inf : r == 3 ? -0.0f : f;
          break;
        }
        case logits_pattern::all_equal: f = 0.75f; break;
        case logits_pattern::one_hot: f = e == 3 % experts ? 8.0f + f * 0.01f : f; break;
        case logits_pattern::nan_rows: f = t % 3 == 0 ? nan : f; break;
        case logits_pattern::neg_inf_rows: f = t % 3 == 0 ? -inf : f; break;
      }
      x[std::size_t(t) * experts + e] = from_float<T>(f);
    }
  return x;
}

struct route_case {
  logits_pattern pattern = logits_pattern::random;
  std::int64_t tokens = 64;
  moe::route_params params;
  bool with_noise_logits = false;
  bool with_source_rows = true;
  int misalign_elements = 0;  //!< logits start this many elements past an aligned address
};

template <class W>
float weight_tolerance(float reference) {
  // fp32: butterfly vs sequential sums and the GPU's expf differ by a few ulps of each term.
  // bf16/fp16 outputs: one rounding of the result.
  const float rel = std::is_same_v<W, float> ? 3e-5f : std::is_same_v<W, __half> ? 1e-3f : 8e-3f;
  return rel * std::fabs(reference) + 1e-6f;
}

//! Whether a token's device ids differ from the reference's only where two experts' selection
//! values (as the reference computes them) lie within a few ulps: on the GPU, expf and the
//! other fp32 transcendental functions differ from the host library's by an ulp or two, so
//! such experts may come out in either order when selection runs on computed scores (a bias, a
//! score that is not the logit). Selection on the logits themselves must be exact everywhere, and
//! host SIMT runs the very functions of the reference: there the ids must be equal, and this is
//! never asked.
template <class Config, class T>
bool ids_differ_by_near_ties(const T* row, const T* noise_row, std::int64_t token, const moe::route_params& p,
                             const int* device_ids, const int* reference_ids) {
  constexpr int E = Config::experts, K = Config::k;
  for (int j = 0; j < K; ++j) {
    if (device_ids[j] < 0 || device_ids[j] >= E) return false;
    for (int i = 0; i < j; ++i)
      if (device_ids[i] == device_ids[j]) return false;  // ids stay distinct
  }
  // Selection on the logits themselves (a monotone scoring without bias) computes nothing: exact.
  if (moe::scoring_is_monotone<typename Config::scoring> && !p.selection_bias) return false;
  const auto x = reference::detail::transformed_row<T, float>(row, noise_row, token, E, p);
  bool degenerate = false;
  const auto s = reference::detail::scores<Config>(x, degenerate);
  const auto v = reference::detail::selection_values<Config>(x, s, p);
  for (int j = 0; j < K; ++j) {
    const int a = device_ids[j], b = reference_ids[j];
    if (a == b) continue;
    if (b < 0 || b >= E) return false;
    const float va = v[std::size_t(a)], vb = v[std::size_t(b)];
    if (!(std::fabs(va - vb) <= 2e-6f * std::fmax(std::fabs(va), std::fabs(vb)) + 1e-9f)) return false;
  }
  return true;
}

//! Runs route<Config> on a case and requires ids, source rows and degenerate counts to equal the
//! reference exactly and weights within weight_tolerance. On the GPU a token whose ids differ
//! only by near ties (ids_differ_by_near_ties, global ids only) is accepted and its weights not
//! compared; at most 1% of the tokens may be.
template <class Config, class T = float, class IdT = std::int32_t, class W = float>
void check_route(const route_case& c, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  constexpr int E = Config::experts, K = Config::k;
  INFO("E " << E << " k " << K << " groups " << Config::groups << "/" << Config::topk_groups << " scoring "
            << std::string(Config::scoring::name) << " logits " << std::string(type_name<T>()) << " pattern "
            << std::string(pattern_name(c.pattern)) << " tokens " << c.tokens);
  const auto logits = make_logits<T>(c.pattern, c.tokens, E, rng);
  std::vector<T> noise_logits;
  if (c.with_noise_logits) noise_logits = make_logits<T>(logits_pattern::random, c.tokens, E, rng);
  const auto ref = reference::route<Config, float>(logits.data(), c.with_noise_logits ? noise_logits.data() : nullptr,
                                                   c.tokens, c.params);

  std::vector<T> shifted(std::size_t(c.misalign_elements), from_float<T>(0.0f));
  shifted.insert(shifted.end(), logits.begin(), logits.end());
  device_buffer<T> d_logits(shifted), d_noise(noise_logits);
  device_buffer<IdT> d_ids(std::size_t(c.tokens) * K), d_global_ids(std::size_t(c.tokens) * K);
  device_buffer<W> d_weights(std::size_t(c.tokens) * K);
  device_buffer<std::int32_t> d_rows(std::size_t(c.tokens) * K), d_degenerate(1);
  d_ids.fill_bytes(0x7f);  // poison: every slot must be written
  d_weights.fill_bytes(0x7f);
  d_degenerate.fill_bytes(0);
  // Parameter arrays live on the device too.
  moe::route_params p = c.params;
  device_buffer<float> d_bias(p.selection_bias ? std::vector<float>(p.selection_bias, p.selection_bias + E) : std::vector<float>{});
  device_buffer<std::int32_t> d_map(p.expert_map ? std::vector<std::int32_t>(p.expert_map, p.expert_map + E) : std::vector<std::int32_t>{});
  device_buffer<std::uint8_t> d_mask(p.row_mask ? std::vector<std::uint8_t>(p.row_mask, p.row_mask + c.tokens) : std::vector<std::uint8_t>{});
  if (p.selection_bias) p.selection_bias = d_bias.data();
  if (p.expert_map) p.expert_map = d_map.data();
  if (p.row_mask) p.row_mask = d_mask.data();

  moe::route_outputs<IdT, W> out{d_ids.data(), d_weights.data(), c.with_source_rows ? d_rows.data() : nullptr,
                                 d_degenerate.data(), d_global_ids.data()};
  FRUGAL_REQUIRE_OK(moe::route<Config>(moe::route_inputs<T>{d_logits.data() + c.misalign_elements,
                                                              c.with_noise_logits ? d_noise.data() : nullptr},
                                       out, c.tokens, p));
  synchronize();
  const auto ids = d_ids.download();
  const auto global = d_global_ids.download();
  const auto weights = d_weights.download();
  const auto rows = d_rows.download();
  CHECK(d_degenerate.download()[0] == ref.degenerate_rows);
  std::vector<bool> near_tie_tokens(std::size_t(c.tokens), false);
#if !defined(FRUGAL_HOST_SIMT)
  const bool global_ids = c.params.local_expert_end < 0 && !c.params.expert_map;
  int near_ties = 0;
  for (std::int64_t t = 0; global_ids && t < c.tokens; ++t) {
    int device_ids[K];
    bool same = true;
    for (int j = 0; j < K; ++j) {
      device_ids[j] = int(ids[std::size_t(t * K + j)]);
      same = same && device_ids[j] == ref.ids[std::size_t(t * K + j)];
    }
    if (same) continue;
    const T* noise_row = c.with_noise_logits ? noise_logits.data() + t * E : nullptr;
    if (ids_differ_by_near_ties<Config>(logits.data() + t * E, noise_row, t, c.params, device_ids, ref.ids.data() + t * K)) {
      near_tie_tokens[std::size_t(t)] = true;
      ++near_ties;
    }
  }
  CHECK(near_ties * 100 <= c.tokens);
#endif
  for (std::size_t i = 0; i < ids.size(); ++i) {
    INFO("token " << i / K << " slot " << i % K);
    if (c.with_source_rows) REQUIRE(rows[i] == ref.source_rows[i]);
    if (near_tie_tokens[i / K]) continue;
    if (std::int64_t(ids[i]) != ref.ids[i])
      FAIL("expert " << ids[i] << " vs reference " << ref.ids[i] << " (token " << i / K << " slot " << i % K << ")");
    if (std::int64_t(global[i]) != ref.global_ids[i])
      FAIL("global expert " << global[i] << " vs reference " << ref.global_ids[i] << " (token " << i / K << " slot " << i % K << ")");
    const float w = to_float(weights[i]), rw = ref.weights[i];
    if (!(w == rw || std::fabs(w - rw) <= weight_tolerance<W>(rw)))
      FAIL("weight " << w << " vs reference " << rw << " (token " << i / K << " slot " << i % K << ", expert "
                     << ids[i] << ")");
  }
}

}  // namespace frugal::test

// SPDX-License-Identifier: Apache-2.0
//! @file
//! Host reference of expert-choice routing (frugal/moe/expert_choice.cuh): for each expert, a
//! stable sort of the tokens by score, the first `capacity`, put back in token order.
#pragma once

#include <frugal/moe/route_config.cuh>
#include <frugal/reference/moe_route.hpp>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace frugal::reference {

struct expert_choice_result {
  std::vector<std::int32_t> token_ids;          //!< [E * capacity], -1 when empty
  std::vector<float> weights;                   //!< [E * capacity]
  std::vector<std::int32_t> experts_per_token;  //!< [T]
};

template <class Config, class T>
expert_choice_result expert_choice(const T* logits, std::int64_t tokens, int capacity, const moe::route_params& params) {
  constexpr int E = Config::experts;
  // scores[t][e] as the device computes them (fp32)
  std::vector<std::vector<float>> scores(static_cast<std::size_t>(tokens));
  std::vector<bool> padding(std::size_t(tokens), false);
  for (std::int64_t t = 0; t < tokens; ++t) {
    padding[std::size_t(t)] = params.row_mask && params.row_mask[t] == 0;
    moe::route_params no_noise = params;  // expert choice scores the soft-capped logits only
    no_noise.noise_std = 0.0f;
    const auto x = detail::transformed_row<T, float>(logits + t * E, nullptr, t, E, no_noise);
    bool degenerate = false;
    auto s = detail::scores<Config, float>(x, degenerate);
    scores[std::size_t(t)] = s;
  }
  expert_choice_result out;
  out.token_ids.assign(std::size_t(E) * capacity, -1);
  out.weights.assign(std::size_t(E) * capacity, 0.0f);
  out.experts_per_token.assign(std::size_t(tokens), 0);
  for (int e = 0; e < E; ++e) {
    std::vector<std::int32_t> order;
    for (std::int64_t t = 0; t < tokens; ++t)
      if (!padding[std::size_t(t)]) order.push_back(std::int32_t(t));
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
      return selected_before(scores[std::size_t(a)][std::size_t(e)], a, scores[std::size_t(b)][std::size_t(e)], b);
    });
    order.resize(std::min<std::size_t>(order.size(), std::size_t(capacity)));
    std::sort(order.begin(), order.end());
    for (std::size_t j = 0; j < order.size(); ++j) {
      const float w = scores[std::size_t(order[j])][std::size_t(e)];
      out.token_ids[std::size_t(e) * capacity + j] = order[j];
      out.weights[std::size_t(e) * capacity + j] = std::isnan(w) ? 0.0f : w;
      ++out.experts_per_token[std::size_t(order[j])];
    }
  }
  return out;
}

}  // namespace frugal::reference

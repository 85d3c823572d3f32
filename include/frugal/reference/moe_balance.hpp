// SPDX-License-Identifier: Apache-2.0
//! @file
//! Host reference of the training side of routing (frugal/moe/balance.cuh): counts, the Switch
//! load-balancing loss, the router z-loss, their gradients, and the selection-bias update.
#pragma once

#include <frugal/moe/route_config.cuh>
#include <frugal/reference/moe_route.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace frugal::reference {

template <class Config, class IdT>
std::vector<std::int32_t> expert_counts(const IdT* ids, std::int64_t tokens) {
  std::vector<std::int32_t> counts(std::size_t(Config::experts), 0);
  for (std::int64_t i = 0; i < tokens * Config::k; ++i)
    if (ids[i] >= 0 && ids[i] < Config::experts) ++counts[std::size_t(ids[i])];
  return counts;
}

namespace detail {

// Router probabilities of one token, as the losses define them: the row softmax, or for
// elementwise scorings the scores normalised to sum 1 (empty if the sum is not positive and
// finite). Also the pieces the gradients need.
template <class Config, class R>
struct loss_token {
  std::vector<R> raw, x, s, p;
  R score_sum = 0;
  bool degenerate = false;

  template <class T>
  loss_token(const T* row, std::int64_t, const moe::route_params& params) {
    constexpr int E = Config::experts;
    raw.resize(std::size_t(E));
    x.resize(std::size_t(E));
    for (int e = 0; e < E; ++e) {
      raw[std::size_t(e)] = real_of<R>(row[e]);
      x[std::size_t(e)] = moe::softcap<R>(raw[std::size_t(e)], R(params.softcap));  // no routing noise
    }
    if constexpr (Config::kind == moe::scoring_kind::elementwise) {
      s.resize(std::size_t(E));
      for (int e = 0; e < E; ++e) {
        const R v = R(typename Config::scoring{}(x[std::size_t(e)]));
        s[std::size_t(e)] = std::isnan(v) ? R(0) : v;
        score_sum += s[std::size_t(e)];
      }
      degenerate = !(score_sum > 0) || !std::isfinite(score_sum);
      p.resize(std::size_t(E));
      for (int e = 0; e < E; ++e) p[std::size_t(e)] = degenerate ? R(0) : s[std::size_t(e)] / score_sum;
    } else {
      p = softmax(x, degenerate);
    }
  }

  R log_sum_exp() const {
    R max = -std::numeric_limits<R>::infinity();
    for (R v : x)
      if (!std::isnan(v)) max = std::max(max, v);
    if (!(max > -std::numeric_limits<R>::infinity())) return 0;
    if (std::isinf(max)) return max;
    R sum = 0;
    for (R v : x) sum += std::isnan(v) ? R(0) : std::exp(v - max);
    return max + std::log(sum);
  }
};

}  // namespace detail

template <class R>
struct load_balancing_result {
  std::vector<std::int32_t> counts;
  std::vector<R> mean_probability;
  R loss = 0;
};

//! L = coefficient * E * sum_e (c_e / C) * P_e, P_e = (k / C) * sum_t p_te (padding rows left out).
template <class Config, class R = double, class T, class IdT>
load_balancing_result<R> load_balancing_loss(const T* logits, const IdT* ids, std::int64_t tokens, float coefficient,
                                             const moe::route_params& params) {
  constexpr int E = Config::experts;
  load_balancing_result<R> out;
  out.counts = expert_counts<Config>(ids, tokens);
  long long total = 0;
  for (auto c : out.counts) total += c;
  std::vector<R> sum(std::size_t(E), R(0));
  for (std::int64_t t = 0; t < tokens; ++t) {
    if (params.row_mask && params.row_mask[t] == 0) continue;
    const detail::loss_token<Config, R> token(logits + t * E, t, params);
    for (int e = 0; e < E; ++e) sum[std::size_t(e)] += token.p[std::size_t(e)];
  }
  out.mean_probability.resize(std::size_t(E));
  R l = 0;
  for (int e = 0; e < E; ++e) {
    out.mean_probability[std::size_t(e)] = total > 0 ? sum[std::size_t(e)] * R(Config::k) / R(total) : R(0);
    l += total > 0 ? R(out.counts[std::size_t(e)]) / R(total) * out.mean_probability[std::size_t(e)] : R(0);
  }
  out.loss = R(coefficient) * R(E) * l;
  return out;
}

//! d logits of load_balancing_loss with the counts held constant.
template <class Config, class R = double, class T>
std::vector<R> load_balancing_loss_backward(const T* logits, const std::int32_t* counts, std::int64_t tokens,
                                            float coefficient, const moe::route_params& params) {
  using S = typename Config::scoring;
  constexpr int E = Config::experts;
  long long total = 0;
  for (int e = 0; e < E; ++e) total += counts[e];
  std::vector<R> dx(std::size_t(tokens) * E, R(0));
  if (total == 0) return dx;
  // dL/dp_te = coefficient * E * k * c_e / C^2 =: g_e
  std::vector<R> g(static_cast<std::size_t>(E));
  for (int e = 0; e < E; ++e) g[std::size_t(e)] = R(coefficient) * R(E) * R(Config::k) * R(counts[e]) / (R(total) * R(total));
  for (std::int64_t t = 0; t < tokens; ++t) {
    if (params.row_mask && params.row_mask[t] == 0) continue;
    const detail::loss_token<Config, R> token(logits + t * E, t, params);
    if (token.degenerate) continue;
    R dot = 0;
    for (int e = 0; e < E; ++e) dot += g[std::size_t(e)] * token.p[std::size_t(e)];
    for (int j = 0; j < E; ++j) {
      R d;
      if constexpr (Config::kind == moe::scoring_kind::elementwise)
        d = (g[std::size_t(j)] - dot) / token.score_sum * R(S{}.derivative(token.x[std::size_t(j)], token.s[std::size_t(j)]));
      else
        d = token.p[std::size_t(j)] * (g[std::size_t(j)] - dot);
      d *= moe::softcap_derivative<R>(token.raw[std::size_t(j)], R(params.softcap));
      dx[std::size_t(t) * E + std::size_t(j)] = std::isnan(d) ? R(0) : d;
    }
  }
  return dx;
}

//! L = coefficient / T * sum_t logsumexp(x_t)^2.
template <class Config, class R = double, class T>
R router_z_loss(const T* logits, std::int64_t tokens, float coefficient, const moe::route_params& params) {
  R sum = 0;
  for (std::int64_t t = 0; t < tokens; ++t) {
    if (params.row_mask && params.row_mask[t] == 0) continue;
    const detail::loss_token<Config, R> token(logits + t * Config::experts, t, params);
    const R lse = token.log_sum_exp();
    sum += lse * lse;
  }
  return R(coefficient) * sum / R(tokens);
}

template <class Config, class R = double, class T>
std::vector<R> router_z_loss_backward(const T* logits, std::int64_t tokens, float coefficient,
                                      const moe::route_params& params) {
  constexpr int E = Config::experts;
  std::vector<R> dx(std::size_t(tokens) * E, R(0));
  for (std::int64_t t = 0; t < tokens; ++t) {
    if (params.row_mask && params.row_mask[t] == 0) continue;
    const detail::loss_token<Config, R> token(logits + t * E, t, params);
    bool degenerate = false;
    const auto softmax_x = detail::softmax(token.x, degenerate);
    if (degenerate) continue;
    const R lse = token.log_sum_exp();
    for (int e = 0; e < E; ++e) {
      const R d = R(coefficient) * R(2) * lse / R(tokens) * softmax_x[std::size_t(e)] *
                  moe::softcap_derivative<R>(token.raw[std::size_t(e)], R(params.softcap));
      dx[std::size_t(t) * E + std::size_t(e)] = std::isnan(d) ? R(0) : d;
    }
  }
  return dx;
}

//! bias[e] += rate * sign(mean - counts[e]).
inline void update_selection_bias(const std::int32_t* counts, int experts, float rate, float* bias) {
  long long total = 0;
  for (int e = 0; e < experts; ++e) total += counts[e];
  const double mean = double(total) / double(experts);
  for (int e = 0; e < experts; ++e) bias[e] += rate * (mean > counts[e] ? 1.0f : mean < counts[e] ? -1.0f : 0.0f);
}

}  // namespace frugal::reference

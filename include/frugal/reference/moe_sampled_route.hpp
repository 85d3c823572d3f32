// SPDX-License-Identifier: Apache-2.0
//! @file
//! Host reference of sampled routing (frugal::moe::sample_route) and its gradient, written for
//! clarity: the same fp32 keys as the kernel (so the same draw), the log-probability and the
//! gradient in double. Plain C++.
#pragma once

#include <frugal/core/numeric.cuh>
#include <frugal/moe/route_config.cuh>
#include <frugal/moe/sampling.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

namespace frugal::reference {

struct sampled_route_result {
  std::vector<std::int32_t> ids;  //!< [T, k], drawing order, -1 past the draw
  std::vector<double> log_prob;   //!< [T]
  std::vector<double> weights;    //!< [T, k]: softmax(x) of each drawn expert, 0 past the draw
};

namespace detail {
// x = logit * (1 / temperature) in fp32 (as the kernel), -inf for NaN; `degenerate` for NaN or +inf.
template <class T>
std::vector<float> scaled_row(const T* row, int experts, float inverse_temperature, bool& degenerate) {
  std::vector<float> x(static_cast<std::size_t>(experts));
  degenerate = false;
  for (int e = 0; e < experts; ++e) {
    const float v = to_float(row[e]) * inverse_temperature;
    degenerate = degenerate || std::isnan(v) || v == std::numeric_limits<float>::infinity();
    x[std::size_t(e)] = std::isnan(v) ? -std::numeric_limits<float>::infinity() : v;
  }
  return x;
}
}  // namespace detail

//! log P of drawing `ids` (in order; the draw ends at the first -1) from softmax(x), in double:
//! sum over r of x_{e_r} - log sum over experts not drawn before r of exp(x).
inline double sampled_log_prob(const std::vector<double>& x, const std::vector<std::int32_t>& ids) {
  std::vector<bool> drawn(x.size(), false);
  double max = -std::numeric_limits<double>::infinity(), lp = 0.0;
  for (double v : x) max = std::max(max, v);
  for (std::int32_t e : ids) {
    if (e < 0) break;
    double z = 0.0;
    for (std::size_t j = 0; j < x.size(); ++j)
      if (!drawn[j] && x[j] > -std::numeric_limits<double>::infinity()) z += std::exp(x[j] - max);
    lp += (x[std::size_t(e)] - max) - std::log(z);
    drawn[std::size_t(e)] = true;
  }
  return lp;
}

//! The draw of sample_route: the k largest fp32 keys x_e + gumbel_noise(p, t, e) (ties to the
//! lower expert), over the experts with finite x.
template <int E, int K, class T>
sampled_route_result sample_route(const T* logits, std::int64_t tokens, const moe::sample_params& p) {
  sampled_route_result out;
  out.ids.assign(std::size_t(tokens) * K, moe::not_routed);
  out.log_prob.assign(static_cast<std::size_t>(tokens), 0.0);
  out.weights.assign(std::size_t(tokens) * K, 0.0);
  for (std::int64_t t = 0; t < tokens; ++t) {
    if (p.row_mask && p.row_mask[t] == 0) continue;
    bool degenerate = false;
    const auto x = detail::scaled_row(logits + t * E, E, moe::inverse_temperature(p), degenerate);
    if (degenerate) {
      out.log_prob[std::size_t(t)] = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    std::vector<int> order;
    std::vector<float> key(static_cast<std::size_t>(E));
    for (int e = 0; e < E; ++e) {
      if (!(x[std::size_t(e)] > -std::numeric_limits<float>::infinity())) continue;
      key[std::size_t(e)] = x[std::size_t(e)] + moe::gumbel_noise(p, t, e);
      order.push_back(e);
    }
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return key[std::size_t(a)] > key[std::size_t(b)]; });
    const int n = std::min<int>(K, int(order.size()));
    std::vector<std::int32_t> ids(order.begin(), order.begin() + n);
    std::vector<double> xd(x.begin(), x.end());
    out.log_prob[std::size_t(t)] = sampled_log_prob(xd, ids);
    double max = -std::numeric_limits<double>::infinity(), z = 0.0;
    for (double v : xd) max = std::max(max, v);
    for (double v : xd) z += v > -std::numeric_limits<double>::infinity() ? std::exp(v - max) : 0.0;
    for (int r = 0; r < n; ++r) {
      out.ids[std::size_t(t * K + r)] = ids[std::size_t(r)];
      out.weights[std::size_t(t * K + r)] = std::exp(xd[std::size_t(ids[std::size_t(r)])] - max) / z;
    }
  }
  return out;
}

//! d logits [T, E] = scale[t] * d log P / d logits: ([j drawn] - sum_r softmax over the experts not
//! drawn before r, at j) / temperature; 0 at -inf logits, padding and degenerate rows.
template <int E, int K, class T>
std::vector<double> sample_route_backward(const T* logits, const std::int32_t* ids, const float* scale, std::int64_t tokens,
                                          const moe::sample_params& p) {
  std::vector<double> d(std::size_t(tokens) * E, 0.0);
  for (std::int64_t t = 0; t < tokens; ++t) {
    if (p.row_mask && p.row_mask[t] == 0) continue;
    bool degenerate = false;
    const auto xf = detail::scaled_row(logits + t * E, E, moe::inverse_temperature(p), degenerate);
    if (degenerate) continue;
    const std::vector<double> x(xf.begin(), xf.end());
    double max = -std::numeric_limits<double>::infinity();
    for (double v : x) max = std::max(max, v);
    std::vector<bool> drawn(static_cast<std::size_t>(E), false);
    std::vector<double> g(static_cast<std::size_t>(E), 0.0);
    for (int r = 0; r < K; ++r) {
      const std::int32_t e = ids[t * K + r];
      if (e < 0 || e >= E || !(x[std::size_t(e)] > -std::numeric_limits<double>::infinity()) || drawn[std::size_t(e)]) break;
      double z = 0.0;
      for (int j = 0; j < E; ++j)
        if (!drawn[std::size_t(j)] && x[std::size_t(j)] > -std::numeric_limits<double>::infinity()) z += std::exp(x[std::size_t(j)] - max);
      for (int j = 0; j < E; ++j)
        if (!drawn[std::size_t(j)] && x[std::size_t(j)] > -std::numeric_limits<double>::infinity())
          g[std::size_t(j)] -= std::exp(x[std::size_t(j)] - max) / z;
      g[std::size_t(e)] += 1.0;
      drawn[std::size_t(e)] = true;
    }
    for (int j = 0; j < E; ++j)
      if (x[std::size_t(j)] > -std::numeric_limits<double>::infinity())
        d[std::size_t(t * E + j)] = double(scale[t]) * g[std::size_t(j)] * double(moe::inverse_temperature(p));
  }
  return d;
}

}  // namespace frugal::reference

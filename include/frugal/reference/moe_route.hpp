// SPDX-License-Identifier: Apache-2.0
//! @file
//! Host reference of Top-k routing and its backward, written for clarity: one token at a time,
//! sorting with the documented order. The arithmetic type R is float (to compare with the device)
//! or double (for gradient checks by finite differences).
#pragma once

#include <frugal/core/numeric.cuh>
#include <frugal/moe/route_config.cuh>
#include <frugal/moe/route_math.cuh>
#include <frugal/moe/scoring.cuh>
#include <frugal/reference/topk.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

namespace frugal::reference {

template <class R>
struct route_result {
  std::vector<int> ids;               //!< [T, k], after expert-parallel mapping
  std::vector<int> global_ids;        //!< [T, k], global expert ids (what the backward takes)
  std::vector<R> weights;             //!< [T, k]
  std::vector<std::int32_t> source_rows;  //!< [T, k]
  int degenerate_rows = 0;
};

namespace detail {

// An element as R: float and double directly, __half and __nv_bfloat16 through fp32.
template <class R, class T>
R real_of(T v) {
  if constexpr (std::is_floating_point_v<T>) return R(v);
  else return R(to_float(v));
}

// Transformed logits of one token, in R (noise is a constant drawn in fp32, as on the device).
template <class T, class R>
std::vector<R> transformed_row(const T* row, const T* noise_row, std::int64_t token, int E,
                               const moe::route_params& p) {
  std::vector<R> x(static_cast<std::size_t>(E));
  for (int e = 0; e < E; ++e) {
    R v = moe::softcap<R>(real_of<R>(row[e]), R(p.softcap));
    if (p.noise_std != 0.0f) {
      const float scale = noise_row ? moe::sqrt_softplus_scoring::softplus(real_of<float>(noise_row[e])) : 1.0f;
      v += R(p.noise_std * scale * moe::routing_noise(p, token, e));
    }
    x[std::size_t(e)] = v;
  }
  return x;
}

// Softmax with frugal's rules: NaN -> 0; +inf logits share the mass; all -inf/NaN -> empty.
template <class R>
std::vector<R> softmax(const std::vector<R>& x, bool& degenerate) {
  R max = -std::numeric_limits<R>::infinity();
  for (R v : x)
    if (!std::isnan(v)) max = std::max(max, v);
  std::vector<R> p(x.size(), R(0));
  degenerate = !(max > -std::numeric_limits<R>::infinity());
  if (degenerate) return p;
  if (std::isinf(max)) {
    const R n = R(std::count(x.begin(), x.end(), max));
    for (std::size_t i = 0; i < x.size(); ++i) p[i] = x[i] == max ? R(1) / n : R(0);
    return p;
  }
  R sum = 0;
  for (R v : x) sum += std::isnan(v) ? R(0) : std::exp(v - max);
  for (std::size_t i = 0; i < x.size(); ++i) p[i] = std::isnan(x[i]) ? R(0) : std::exp(x[i] - max) / sum;
  return p;
}

// Scores of every expert of one token (row softmax, or the elementwise function, or the logits
// themselves for selected softmax).
template <class Config, class R>
std::vector<R> scores(const std::vector<R>& x, bool& degenerate) {
  using S = typename Config::scoring;
  degenerate = false;
  if constexpr (Config::kind == moe::scoring_kind::row_softmax) return softmax(x, degenerate);
  std::vector<R> s(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    if constexpr (Config::kind == moe::scoring_kind::elementwise) s[i] = R(S{}(x[i]));
    else s[i] = x[i];
  }
  return s;
}

// The values one token's experts are selected by (fp32): the logit, the score, or score + bias.
template <class Config, class R>
std::vector<float> selection_values(const std::vector<R>& x, const std::vector<R>& s, const moe::route_params& p) {
  using S = typename Config::scoring;
  std::vector<float> v(x.size());
  for (std::size_t e = 0; e < x.size(); ++e) {
    const R xe = x[e], se = s[e];
    R value;
    if (std::isnan(xe)) value = xe;
    else if (p.selection_bias) value = se + R(p.selection_bias[e]);
    else if (moe::scoring_is_monotone<S>) value = xe;
    else value = se;
    v[e] = float(value);
  }
  return v;
}

// Whether a row is degenerate by the rule of every kind but row softmax (whose statistics tell):
// no expert has both a logit above -inf and a selection value that is a number.
template <class Config, class R>
bool dead_row(const std::vector<R>& x, const std::vector<R>& s, const moe::route_params& p) {
  if constexpr (Config::kind == moe::scoring_kind::row_softmax) return false;
  const std::vector<float> v = selection_values<Config>(x, s, p);
  for (std::size_t e = 0; e < x.size(); ++e)
    if (!std::isnan(v[e]) && x[e] > -std::numeric_limits<R>::infinity()) return false;
  return true;
}

// The k chosen experts of one token (global ids), by the documented selection rules.
template <class Config, class R>
std::vector<int> select(const std::vector<R>& x, const std::vector<R>& s, const moe::route_params& p, bool& degenerate) {
  constexpr int E = Config::experts, K = Config::k, G = Config::groups, EPG = Config::experts_per_group;
  const std::vector<float> v = selection_values<Config>(x, s, p);
  degenerate = degenerate || dead_row<Config>(x, s, p);

  std::vector<bool> allowed(std::size_t(E), true);
  if constexpr (G > 1) {
    const bool top2 = (Config::group_rule == moe::group_score::top2_sum ||
                       (Config::group_rule == moe::group_score::automatic && p.selection_bias)) && EPG >= 2;
    // A top-2 sum adds scores (+ bias): the scores themselves where the selection values are the
    // logits (a monotone scoring without a bias; top-k-then-softmax has no scores yet).
    const bool sum_scores = top2 && moe::scoring_is_monotone<typename Config::scoring> && !p.selection_bias &&
                            Config::kind != moe::scoring_kind::selected_softmax;
    std::vector<float> group_scores(static_cast<std::size_t>(G));
    for (int g = 0; g < G; ++g) {
      std::vector<float> members(v.begin() + g * EPG, v.begin() + (g + 1) * EPG);
      if (sum_scores)
        for (int j = 0; j < EPG; ++j)
          members[std::size_t(j)] = std::isnan(v[std::size_t(g * EPG + j)]) ? NAN : float(s[std::size_t(g * EPG + j)]);
      for (auto& m : members) m = std::isnan(m) ? -std::numeric_limits<float>::infinity() : m;
      std::sort(members.begin(), members.end(), std::greater<float>());
      group_scores[std::size_t(g)] = top2 ? members[0] + members[1] : members[0];
    }
    std::vector<int> order(static_cast<std::size_t>(G));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return selected_before(group_scores[std::size_t(a)], a, group_scores[std::size_t(b)], b);
    });
    std::fill(allowed.begin(), allowed.end(), false);
    for (int j = 0; j < Config::topk_groups; ++j)
      for (int e = order[std::size_t(j)] * EPG; e < (order[std::size_t(j)] + 1) * EPG; ++e) allowed[std::size_t(e)] = true;
  }
  std::vector<int> candidates;
  for (int e = 0; e < E; ++e)
    if (allowed[std::size_t(e)]) candidates.push_back(e);
  std::stable_sort(candidates.begin(), candidates.end(), [&](int a, int b) {
    return selected_before(v[std::size_t(a)], a, v[std::size_t(b)], b);
  });
  candidates.resize(std::size_t(K));
  return candidates;
}

// The final weights of the chosen experts `ids` of one token (degenerate rows weigh 0).
template <class Config, class R>
std::vector<R> weights(const std::vector<R>& x, const std::vector<R>& s, const std::vector<int>& ids,
                       const moe::route_params& p, bool& degenerate) {
  constexpr int K = Config::k;
  std::vector<R> w(std::size_t(K), R(0));
  if constexpr (Config::kind == moe::scoring_kind::selected_softmax) {
    std::vector<R> chosen(static_cast<std::size_t>(K));
    for (int j = 0; j < K; ++j) chosen[std::size_t(j)] = x[std::size_t(ids[std::size_t(j)])];
    bool none = false;
    w = softmax(chosen, none);
    degenerate = degenerate || none;
  } else {
    for (int j = 0; j < K; ++j) w[std::size_t(j)] = s[std::size_t(ids[std::size_t(j)])];
  }
  for (auto& wj : w) wj = !std::isfinite(wj) || degenerate ? R(0) : wj;  // NaN or infinite scores weigh 0
  if (p.renormalize) {
    R total = 0;
    for (R wj : w) total += wj;
    const R denominator = total + R(p.renormalize_epsilon);
    for (auto& wj : w) wj = denominator != R(0) ? wj / denominator : R(0);  // 0 / 0: weights stay 0
  }
  for (auto& wj : w) wj *= R(p.routed_scaling);
  return w;
}

}  // namespace detail

//! Routes `tokens` rows of `logits` ([T, E]) as frugal::moe::route<Config> does.
template <class Config, class R = float, class T>
route_result<R> route(const T* logits, const T* noise_logits, std::int64_t tokens, const moe::route_params& p) {
  constexpr int E = Config::experts, K = Config::k;
  route_result<R> out;
  out.ids.assign(std::size_t(tokens) * K, moe::not_routed);
  out.global_ids.assign(std::size_t(tokens) * K, moe::not_routed);
  out.weights.assign(std::size_t(tokens) * K, R(0));
  out.source_rows.assign(std::size_t(tokens) * K, -1);
  for (std::int64_t t = 0; t < tokens; ++t) {
    if (p.row_mask && p.row_mask[t] == 0) continue;
    const auto x = detail::transformed_row<T, R>(logits + t * E, noise_logits ? noise_logits + t * E : nullptr, t, E, p);
    bool degenerate = false;
    const auto s = detail::scores<Config>(x, degenerate);
    std::vector<int> ids = detail::select<Config>(x, s, p, degenerate);
    auto w = detail::weights<Config>(x, s, ids, p, degenerate);
    if (degenerate) std::iota(ids.begin(), ids.end(), 0);
    out.degenerate_rows += degenerate;
    for (int j = 0; j < K; ++j) {
      const std::size_t o = std::size_t(t) * K + std::size_t(j);
      out.global_ids[o] = ids[std::size_t(j)];
      out.ids[o] = moe::local_expert_id(ids[std::size_t(j)], p, Config::experts);
      out.weights[o] = w[std::size_t(j)];
      out.source_rows[o] = std::int32_t(j * tokens + t);
    }
  }
  return out;
}

//! The weights of one token for fixed chosen experts, in R: the differentiable part of routing
//! (what finite differences of the backward perturb).
template <class Config, class R>
std::vector<R> route_weights_of(const std::vector<R>& x_raw, const std::vector<int>& ids, const moe::route_params& p,
                                std::int64_t token = 0) {
  std::vector<R> x(x_raw.size());
  for (std::size_t e = 0; e < x.size(); ++e) {
    x[e] = moe::softcap<R>(x_raw[e], R(p.softcap));
    if (p.noise_std != 0.0f) x[e] += R(p.noise_std * moe::routing_noise(p, token, int(e)));
  }
  bool degenerate = false;
  const auto s = detail::scores<Config>(x, degenerate);
  degenerate = degenerate || detail::dead_row<Config>(x, s, p);
  return detail::weights<Config>(x, s, ids, p, degenerate);
}

//! d logits [T, E] of routing given d weights [T, k] and the forward's global ids, in R.
//! The selection (ids) is piecewise constant and has no gradient; the bias and the noise are
//! constants. clip > 0 clamps every element of the result to [-clip, clip].
template <class Config, class R = double, class T, class G>
std::vector<R> route_backward(const T* logits, const std::int32_t* global_ids, const G* d_weights, std::int64_t tokens,
                              const moe::route_params& p, float clip = 0.0f, const T* noise_logits = nullptr) {
  using S = typename Config::scoring;
  constexpr int E = Config::experts, K = Config::k;
  std::vector<R> dx(std::size_t(tokens) * E, R(0));
  for (std::int64_t t = 0; t < tokens; ++t) {
    if (p.row_mask && p.row_mask[t] == 0) continue;
    std::vector<R> raw(static_cast<std::size_t>(E));
    for (int e = 0; e < E; ++e) raw[std::size_t(e)] = detail::real_of<R>(logits[t * E + e]);
    std::vector<R> x(static_cast<std::size_t>(E));
    for (int e = 0; e < E; ++e) {
      x[std::size_t(e)] = moe::softcap<R>(raw[std::size_t(e)], R(p.softcap));
      if (p.noise_std != 0.0f) {
        const float scale = noise_logits ? moe::sqrt_softplus_scoring::softplus(detail::real_of<float>(noise_logits[t * E + e])) : 1.0f;
        x[std::size_t(e)] += R(p.noise_std * scale * moe::routing_noise(p, t, e));
      }
    }
    bool degenerate = false;
    const auto s = detail::scores<Config>(x, degenerate);
    degenerate = degenerate || detail::dead_row<Config>(x, s, p);
    std::vector<int> ids(global_ids + t * K, global_ids + (t + 1) * K);
    // Forward weights before renormalisation and scaling: r_j.
    std::vector<R> r(static_cast<std::size_t>(K));
    if constexpr (Config::kind == moe::scoring_kind::selected_softmax) {
      std::vector<R> chosen(static_cast<std::size_t>(K));
      for (int j = 0; j < K; ++j) chosen[std::size_t(j)] = x[std::size_t(ids[std::size_t(j)])];
      bool none = false;
      r = detail::softmax(chosen, none);
      degenerate = degenerate || none;
    } else {
      for (int j = 0; j < K; ++j) r[std::size_t(j)] = s[std::size_t(ids[std::size_t(j)])];
    }
    if (degenerate) continue;  // weights are constants (0)
    std::vector<bool> zeroed(static_cast<std::size_t>(K));
    for (int j = 0; j < K; ++j) {
      zeroed[std::size_t(j)] = !std::isfinite(r[std::size_t(j)]);  // NaN or infinite scores weigh 0
      if (zeroed[std::size_t(j)]) r[std::size_t(j)] = 0;
    }
    // d r_j from d w_j: scaling, then renormalisation w = r / (sum r + eps). A non-finite
    // upstream gradient of a weight that is not a constant poisons the token's row (NaN).
    std::vector<R> dr(static_cast<std::size_t>(K));
    bool poisoned = false;
    std::vector<bool> depends(std::size_t(E), Config::kind == moe::scoring_kind::row_softmax);
    for (int j = 0; j < K; ++j) {
      const float upstream = detail::real_of<float>(d_weights[t * K + j]) * p.routed_scaling;  // in fp32, as the kernel
      dr[std::size_t(j)] = detail::real_of<R>(d_weights[t * K + j]) * R(p.routed_scaling);
      poisoned = poisoned || (!zeroed[std::size_t(j)] && !std::isfinite(upstream));
      if (!zeroed[std::size_t(j)]) depends[std::size_t(ids[std::size_t(j)])] = true;
    }
    if (p.renormalize) {
      R sum = 0, dot = 0;
      for (int j = 0; j < K; ++j) sum += r[std::size_t(j)];
      const R denom = sum + R(p.renormalize_epsilon);
      for (int j = 0; j < K; ++j) dot += dr[std::size_t(j)] * r[std::size_t(j)];
      // A zero denominator left the weights 0 whatever r is: no gradient flows.
      for (int j = 0; j < K; ++j)
        dr[std::size_t(j)] = denom != R(0) ? dr[std::size_t(j)] / denom - dot / (denom * denom) : R(0);
    }
    for (int j = 0; j < K; ++j)
      if (zeroed[std::size_t(j)]) dr[std::size_t(j)] = 0;
    // d x (after soft-cap and noise) from d r.
    std::vector<R> dxt(std::size_t(E), R(0));
    if constexpr (Config::kind == moe::scoring_kind::selected_softmax) {
      R dot = 0;
      for (int j = 0; j < K; ++j) dot += dr[std::size_t(j)] * r[std::size_t(j)];
      for (int j = 0; j < K; ++j) dxt[std::size_t(ids[std::size_t(j)])] += r[std::size_t(j)] * (dr[std::size_t(j)] - dot);
    } else if constexpr (Config::kind == moe::scoring_kind::row_softmax) {
      std::vector<R> ds(std::size_t(E), R(0));
      for (int j = 0; j < K; ++j) ds[std::size_t(ids[std::size_t(j)])] += dr[std::size_t(j)];
      R dot = 0;
      for (int e = 0; e < E; ++e) dot += ds[std::size_t(e)] * s[std::size_t(e)];
      for (int e = 0; e < E; ++e) dxt[std::size_t(e)] = s[std::size_t(e)] * (ds[std::size_t(e)] - dot);
    } else {
      for (int j = 0; j < K; ++j) {
        const int e = ids[std::size_t(j)];
        dxt[std::size_t(e)] += dr[std::size_t(j)] * R(S{}.derivative(x[std::size_t(e)], s[std::size_t(e)]));
      }
    }
    for (int e = 0; e < E; ++e) {
      R g = dxt[std::size_t(e)] * moe::softcap_derivative<R>(raw[std::size_t(e)], R(p.softcap));
      const bool differentiable = std::isfinite(x[std::size_t(e)]) && depends[std::size_t(e)];
      if (std::isnan(g) || !differentiable) g = 0;
      if (clip > 0.0f) g = std::clamp(g, R(-clip), R(clip));
      if (poisoned && differentiable) g = std::numeric_limits<R>::quiet_NaN();
      dx[std::size_t(t) * E + std::size_t(e)] = g;
    }
  }
  return dx;
}

}  // namespace frugal::reference

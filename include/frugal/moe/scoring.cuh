// SPDX-License-Identifier: Apache-2.0
//! @file
//! Thread level: how router logits become expert scores. All arithmetic in fp32 (the templates
//! also run in double for the host reference's gradient checks).
//!
//! A scoring policy is a type with `static constexpr scoring_kind kind`:
//!  - `row_softmax`: s = softmax(x) over the row's experts (softmax_scoring);
//!  - `selected_softmax`: select on x, then softmax over the k selected logits (Mixtral, gpt-oss);
//!  - `elementwise`: s_e = f(x_e) with `operator()(x)` and, for the backward, `derivative(x, s)`
//!    (sigmoid_scoring, sqrt_softplus_scoring, identity_scoring, or your own functor).
//! `monotone = true` says f is strictly increasing, so selection may use x itself (exact, and
//! free of the ties that rounding or saturation of f would create).
#pragma once

#include <frugal/config.cuh>

#include <cmath>
#include <type_traits>

namespace frugal::moe {

enum class scoring_kind { row_softmax, selected_softmax, elementwise };

//! softmax over all experts of the row.
struct softmax_scoring {
  static constexpr scoring_kind kind = scoring_kind::row_softmax;
  static constexpr bool monotone = true;
  static constexpr const char* name = "softmax";
};

//! Top-k on the logits first, then softmax over the k selected logits.
struct topk_softmax_scoring {
  static constexpr scoring_kind kind = scoring_kind::selected_softmax;
  static constexpr bool monotone = true;
  static constexpr const char* name = "topk_softmax";
};

//! s = 1 / (1 + exp(-x)) (DeepSeek-V3).
struct sigmoid_scoring {
  static constexpr scoring_kind kind = scoring_kind::elementwise;
  static constexpr bool monotone = true;
  static constexpr const char* name = "sigmoid";
  template <class R>
  FRUGAL_HOST_DEVICE R operator()(R x) const {
    using std::exp;
    using std::fabs;
    // 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) below (no overflow, no cancellation), with
    // one exp and one division for both: a warp's logits have both signs, so two branches
    // would run both.
    const R e = exp(-fabs(x));
    return (x >= R(0) ? R(1) : e) / (R(1) + e);
  }
  template <class R>
  FRUGAL_HOST_DEVICE R derivative(R, R s) const { return s * (R(1) - s); }
};

//! s = sqrt(softplus(x)) = sqrt(log(1 + exp(x))) (DeepSeek-V4).
struct sqrt_softplus_scoring {
  static constexpr scoring_kind kind = scoring_kind::elementwise;
  static constexpr bool monotone = true;
  static constexpr const char* name = "sqrt_softplus";
  template <class R>
  FRUGAL_HOST_DEVICE static R softplus(R x) {
    using std::exp;
    using std::log1p;
    // log1p(e^x) = x + log1p(e^-x), and log1p(e^-x) = e^-x in fp32 beyond 20. One exp for both
    // sides, no branch (a warp runs both sides of a branch on its logits).
    const bool large = x > R(20);
    const R e = exp(large ? -x : x);
    return large ? x + e : log1p(e);
  }
  template <class R>
  FRUGAL_HOST_DEVICE R operator()(R x) const {
    using std::sqrt;
    return sqrt(softplus(x));
  }
  //! d/dx sqrt(softplus(x)) = sigmoid(x) / (2 sqrt(softplus(x))); tends to 0 as x -> -inf.
  template <class R>
  FRUGAL_HOST_DEVICE R derivative(R x, R s) const {
    return s > R(0) ? sigmoid_scoring{}(x) / (R(2) * s) : R(0);
  }
};

//! The logits are already scores ("none").
struct identity_scoring {
  static constexpr scoring_kind kind = scoring_kind::elementwise;
  static constexpr bool monotone = true;
  static constexpr const char* name = "none";
  template <class R>
  FRUGAL_HOST_DEVICE R operator()(R x) const { return x; }
  template <class R>
  FRUGAL_HOST_DEVICE R derivative(R, R) const { return R(1); }
};

namespace detail {
template <class S, class = void>
struct kind_of {
  static constexpr scoring_kind value = scoring_kind::elementwise;  // a user's functor
};
template <class S>
struct kind_of<S, std::void_t<decltype(S::kind)>> {
  static constexpr scoring_kind value = S::kind;
};
template <class S, class = void>
struct monotone_of : std::false_type {};
template <class S>
struct monotone_of<S, std::void_t<decltype(S::monotone)>> : std::bool_constant<S::monotone> {};
template <class S, class = void>
struct has_derivative : std::false_type {};
template <class S>
struct has_derivative<S, std::void_t<decltype(S{}.derivative(0.0f, 0.0f))>> : std::true_type {};

}  // namespace detail

template <class S>
inline constexpr scoring_kind scoring_kind_of = detail::kind_of<S>::value;
//! Whether an elementwise scoring provides derivative(x, s), which backward passes need.
template <class S>
inline constexpr bool scoring_has_derivative = detail::has_derivative<S>::value;
template <class S>
inline constexpr bool scoring_is_monotone = detail::monotone_of<S>::value;

//! Logit soft-capping (Gemma 2, Grok): cap * tanh(x / cap); cap <= 0 means off.
template <class R>
FRUGAL_HOST_DEVICE R softcap(R x, R cap) {
  using std::tanh;
  return cap > R(0) ? cap * tanh(x / cap) : x;
}
//! d softcap(x) / dx = 1 - tanh(x / cap)^2.
template <class R>
FRUGAL_HOST_DEVICE R softcap_derivative(R x, R cap) {
  using std::tanh;
  if (!(cap > R(0))) return R(1);
  const R t = tanh(x / cap);
  return R(1) - t * t;
}

}  // namespace frugal::moe

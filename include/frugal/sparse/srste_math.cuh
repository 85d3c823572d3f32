// SPDX-License-Identifier: Apache-2.0
//! @file
//! The arithmetic of one dynamic-sparse-training step in the style of SR-STE (Zhou et al., ICLR
//! 2021, "Learning N:M fine-grained structured sparse neural networks from scratch"), at thread
//! level: the sparse-refined gradient and the optimizer updates (SGD with momentum, AdamW), each
//! operation rounded exactly once in a fixed order (explicit _rn intrinsics on the GPU, so
//! --use_fast_math does not change them), so the device, host SIMT and the reference agree bit
//! for bit. Flushing subnormals (-ftz=true, part of --use_fast_math) can still change results
//! that pass through subnormals. docs/sparse.md has the math.
#pragma once

#include <frugal/config.cuh>

#include <cmath>

namespace frugal::sparse {

//! SGD with momentum (PyTorch's form, dampening 0, coupled weight decay):
//!   g += weight_decay w;  buf = momentum buf + g;  w -= lr buf.
struct sgd_momentum {
  float lr = 0.01f;
  float momentum = 0.9f;
  float weight_decay = 0.0f;
};

//! AdamW (decoupled weight decay, bias-corrected moments; `step` is the 1-based step number):
//!   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  w -= lr weight_decay w;
//!   w -= lr (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps).
struct adamw {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;
  int step = 1;
};

//! SR-STE's knob: the pruned weights' gradient gains decay * w, pulling them towards zero so
//! the mask settles (the paper's lambda_W; 2e-4 there).
struct srste_params {
  float decay = 2e-4f;
};

namespace detail {
// One rounding per operation, whatever the compiler would contract.
FRUGAL_HOST_DEVICE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
FRUGAL_HOST_DEVICE float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
FRUGAL_HOST_DEVICE float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);  // correctly rounded even under -prec-div=false / --use_fast_math
#else
  return a / b;
#endif
}
FRUGAL_HOST_DEVICE float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
FRUGAL_HOST_DEVICE float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
}  // namespace detail

//! The sparse-refined straight-through gradient: g + decay (1 - mask) w (mask 1 where kept).
FRUGAL_HOST_DEVICE float srste_gradient(float g, float w, bool kept, const srste_params& p) {
  return kept ? g : detail::fma_rn(p.decay, w, g);
}

//! The per-step constants of an optimizer (bias corrections), computed once on the host.
struct optimizer_constants {
  float inv_bias1 = 1.0f;  // 1 / (1 - b1^step)
  float inv_bias2 = 1.0f;  // 1 / (1 - b2^step)
};
inline optimizer_constants constants_of(const sgd_momentum&) { return {}; }
inline optimizer_constants constants_of(const adamw& o) {
  const double b1 = std::pow(double(o.beta1), o.step), b2 = std::pow(double(o.beta2), o.step);
  return {float(1.0 / (1.0 - b1)), float(1.0 / (1.0 - b2))};
}

//! One element of an SGD step: updates w and the momentum buffer, given the refined gradient.
FRUGAL_HOST_DEVICE void optimizer_update(const sgd_momentum& o, const optimizer_constants&, float g, float& w, float& buf, float&) {
  const float gd = detail::fma_rn(o.weight_decay, w, g);
  buf = detail::fma_rn(o.momentum, buf, gd);
  w = detail::fma_rn(-o.lr, buf, w);
}

//! One element of an AdamW step: updates w and both moments, given the refined gradient.
FRUGAL_HOST_DEVICE void optimizer_update(const adamw& o, const optimizer_constants& c, float g, float& w, float& m, float& v) {
  m = detail::fma_rn(o.beta1, m, detail::mul_rn(1.0f - o.beta1, g));
  v = detail::fma_rn(o.beta2, v, detail::mul_rn(1.0f - o.beta2, detail::mul_rn(g, g)));
  w = detail::fma_rn(-detail::mul_rn(o.lr, o.weight_decay), w, w);
  const float m_hat = detail::mul_rn(m, c.inv_bias1), v_hat = detail::mul_rn(v, c.inv_bias2);
  w = detail::fma_rn(-o.lr, detail::div_rn(m_hat, detail::add_rn(detail::sqrt_rn(v_hat), o.eps)), w);
}

//! Whether an optimizer keeps a second state (AdamW's second moment).
template <class Optimizer>
inline constexpr bool has_second_moment = false;
template <>
inline constexpr bool has_second_moment<adamw> = true;

}  // namespace frugal::sparse

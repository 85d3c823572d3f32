// SPDX-License-Identifier: Apache-2.0
//! @file
//! frugal::sparse::srste_step: one fused, memory-bound pass of dynamic N:M sparse training in the
//! style of SR-STE over a dense fp32 master weight. For every element, in registers: the mask of
//! the current weight (the one the forward pass used), the sparse-refined gradient
//! g + decay (1 - mask) w, the optimizer update (SGD with momentum or AdamW, weight decay
//! included), the N:M mask of the updated weight, the number of positions whose mask changed
//! (the flips people plot), and the compressed weight in the canonical format for the next
//! forward pass. Deterministic. docs/sparse.md.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/sparse/srste.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/sparse/detail/srste_kernels.cuh>
#include <frugal/sparse/device_nm.cuh>
#include <frugal/sparse/srste_math.cuh>

#include <cstdint>
#include <type_traits>

namespace frugal::sparse {

//! The buffers of one SR-STE step. weight, grad and the optimizer states share the leading
//! dimension ld ([rows, ld], K used). grad is the gradient of the loss with respect to the
//! sparse weight the forward pass used (float, __half or __nv_bfloat16). state0: SGD's momentum
//! buffer or AdamW's first moment; state1: AdamW's second moment (null for SGD). values /
//! indices: the compressed weight written (canonical format, values rounded to TV). flips [1]:
//! set to the number of positions whose mask changed. report: NaN weights, with their position.
template <class G, class TV>
struct srste_buffers {
  float* weight = nullptr;
  const G* grad = nullptr;
  float* state0 = nullptr;
  float* state1 = nullptr;
  std::int64_t ld = 0;
  TV* values = nullptr;
  std::int64_t ld_values = 0;
  std::uint32_t* indices = nullptr;
  std::int64_t ld_indices = 0;
  unsigned long long* flips = nullptr;
  nm_report* report = nullptr;
  //! srste_step_transposable only: the compressed W^T [K, rows] (windows down W's columns).
  TV* values_t = nullptr;
  std::int64_t ld_values_t = 0;
  std::uint32_t* indices_t = nullptr;
  std::int64_t ld_indices_t = 0;
};

namespace detail {
template <class Pattern, class Optimizer, class G, class TV>
status check_srste(const srste_buffers<G, TV>& b, std::int64_t rows, std::int64_t k, const Optimizer& optimizer,
                   const srste_params& params) {
  static_assert(std::is_same_v<Optimizer, sgd_momentum> || std::is_same_v<Optimizer, adamw>,
                "frugal::sparse::srste_step: the optimizer must be sgd_momentum or adamw");
  static_assert(is_io_float_v<G> && is_io_float_v<TV>, "frugal::sparse::srste_step: grad and values must be float, __half or __nv_bfloat16");
  if (rows < 0 || k < 0) return status::invalid("frugal::sparse::srste_step: rows and K must be >= 0");
  if (!b.flips) return status::invalid("frugal::sparse::srste_step: flips is null");
  if (rows > 0 && k > 0 && (!b.weight || !b.grad || !b.state0 || !b.values || !b.indices || (has_second_moment<Optimizer> && !b.state1)))
    return status::invalid("frugal::sparse::srste_step: a buffer is null (AdamW needs state1)");
  if (rows > 0 && k > 0 && b.ld < k) return status::invalid("frugal::sparse::srste_step: ld must be >= K");
  FRUGAL_TRY(check_matrix(b.values, b.ld_values, rows, Pattern::values_per_row(k), "frugal::sparse::srste_step: values is null",
                                  "frugal::sparse::srste_step: ld_values must be >= nm<N, M>::values_per_row(K)"));
  FRUGAL_TRY(check_matrix(b.indices, b.ld_indices, rows, Pattern::index_words_per_row(k),
                                  "frugal::sparse::srste_step: indices is null",
                                  "frugal::sparse::srste_step: ld_indices must be >= nm<N, M>::index_words_per_row(K)"));
  if (!is_aligned(b.weight, 4) || !is_aligned(b.state0, 4) || !is_aligned(b.state1, 4) || !is_aligned(b.grad, sizeof(G)))
    return status::misaligned("frugal::sparse::srste_step: weight, grad and states must be aligned to their element size");
  if (!(optimizer.lr >= 0.0f) || !std::isfinite(optimizer.lr) || !std::isfinite(optimizer.weight_decay) || !std::isfinite(params.decay))
    return status::invalid("frugal::sparse::srste_step: lr, weight_decay and decay must be finite (lr >= 0)");
  if constexpr (std::is_same_v<Optimizer, adamw>) {
    if (optimizer.step < 1) return status::invalid("frugal::sparse::srste_step: adamw::step is 1-based");
    if (!(optimizer.beta1 >= 0.0f && optimizer.beta1 < 1.0f && optimizer.beta2 >= 0.0f && optimizer.beta2 < 1.0f && optimizer.eps > 0.0f))
      return status::invalid("frugal::sparse::srste_step: adamw needs beta1, beta2 in [0, 1) and eps > 0");
  }
  return status{};
}
}  // namespace detail

//! One SR-STE step of a W [rows, K] under the row-wise pattern nm<N, M> (windows along K).
template <class Pattern, class Optimizer, class G, class TV>
status srste_step(const srste_buffers<G, TV>& b, std::int64_t rows, std::int64_t k, const Optimizer& optimizer,
                  const srste_params& params = {}, cudaStream_t stream = nullptr) {
  static_assert(is_nm_v<Pattern>, "frugal::sparse::srste_step: Pattern must be frugal::sparse::nm<N, M>");
  FRUGAL_TRY(detail::check_srste<Pattern>(b, rows, k, optimizer, params));
  FRUGAL_TRY(detail::reset_report(b.report, stream));
  FRUGAL_TRY(status::from_cuda(cudaMemsetAsync(b.flips, 0, sizeof(unsigned long long), stream)));
  dim3 grid;
  FRUGAL_TRY(detail::launch_units(rows * ((Pattern::windows(k) + 31) / 32), grid));
  constexpr int M = Pattern::m;
  const bool vector = detail::windows_vectorizable<M>(b.weight, b.ld) && detail::windows_vectorizable<M>(b.grad, b.ld) &&
                      detail::windows_vectorizable<M>(b.state0, b.ld) &&
                      (!has_second_moment<Optimizer> || detail::windows_vectorizable<M>(b.state1, b.ld));
  const detail::srste_problem<G, TV> p{b.weight,  b.grad,      b.state0,  b.state1,  b.ld,   b.values, b.ld_values,
                                       b.indices, b.ld_indices, b.flips,  b.report,  rows,   k,        vector};
  return launch(detail::srste_kernel<Pattern, Optimizer, G, TV>, launch_config{grid, dim3(detail::nm_threads), 0, stream}, p, optimizer,
                constants_of(optimizer), params);
}

//! One SR-STE step under a transposable N:M mask: every M x M block of W keeps N per row and per
//! column (nm_transposable_mask's pattern, before and after the update: every pattern tried for
//! M = 4, the warp greedy for M = 8, 16), and the step writes both W compressed (windows along K:
//! values / indices) and W^T [K, rows] compressed (windows down W's columns: values_t /
//! indices_t), the operand of the backward dX = dY W.
template <class Pattern, class Optimizer, class G, class TV>
status srste_step_transposable(const srste_buffers<G, TV>& b, std::int64_t rows, std::int64_t k, const Optimizer& optimizer,
                               const srste_params& params = {}, cudaStream_t stream = nullptr) {
  static_assert(is_nm_v<Pattern>, "frugal::sparse::srste_step_transposable: Pattern must be frugal::sparse::nm<N, M>");
  FRUGAL_TRY(detail::check_srste<Pattern>(b, rows, k, optimizer, params));
  FRUGAL_TRY(detail::check_matrix(b.values_t, b.ld_values_t, k, Pattern::values_per_row(rows),
                                  "frugal::sparse::srste_step_transposable: values_t is null",
                                  "frugal::sparse::srste_step_transposable: ld_values_t must be >= nm<N, M>::values_per_row(rows)"));
  FRUGAL_TRY(detail::check_matrix(b.indices_t, b.ld_indices_t, k, Pattern::index_words_per_row(rows),
                                  "frugal::sparse::srste_step_transposable: indices_t is null",
                                  "frugal::sparse::srste_step_transposable: ld_indices_t must be >= nm<N, M>::index_words_per_row(rows)"));
  FRUGAL_TRY(detail::reset_report(b.report, stream));
  FRUGAL_TRY(status::from_cuda(cudaMemsetAsync(b.flips, 0, sizeof(unsigned long long), stream)));
  if (rows == 0 || k == 0) return status{};
  const auto zero = [&](std::uint32_t* words, std::int64_t ld, std::int64_t lines, std::int64_t count) {
    return launch(detail::zero_words_kernel<>, launch_config{dim3(unsigned((lines * count + 255) / 256 < 4096 ? (lines * count + 255) / 256 : 4096)),
                                                              dim3(256), 0, stream},
                  words, ld, lines, count);
  };
  FRUGAL_TRY(zero(b.indices, b.ld_indices, rows, Pattern::index_words_per_row(k)));
  FRUGAL_TRY(zero(b.indices_t, b.ld_indices_t, k, Pattern::index_words_per_row(rows)));
  dim3 grid;
  constexpr int M = Pattern::m;
  const detail::srste_problem<G, TV> p{b.weight,  b.grad,       b.state0, b.state1, b.ld, b.values, b.ld_values,
                                       b.indices, b.ld_indices, b.flips,  b.report,  rows, k,        false};
  if constexpr (M == 4) {
    FRUGAL_TRY(detail::launch_units(detail::block4_units((rows + 3) / 4, (k + 3) / 4), grid));
    return launch(detail::srste_transposable4_kernel<Pattern::n, Optimizer, G, TV>, launch_config{grid, dim3(detail::nm_threads), 0, stream},
                  p, b.values_t, b.ld_values_t, b.indices_t, b.ld_indices_t, optimizer, constants_of(optimizer), params);
  } else {
    FRUGAL_TRY(detail::launch_units(((rows + M - 1) / M) * ((k + M - 1) / M), grid));
    return launch(detail::srste_transposable_greedy_kernel<Pattern::n, M, Optimizer, G, TV>,
                  launch_config{grid, dim3(detail::nm_threads), 0, stream}, p, b.values_t, b.ld_values_t, b.indices_t, b.ld_indices_t,
                  optimizer, constants_of(optimizer), params);
  }
}

}  // namespace frugal::sparse

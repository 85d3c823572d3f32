// SPDX-License-Identifier: Apache-2.0
//! @file
//! Backward of the whole gate: d logits [T, E] from d weights [T, k], for every scoring mode,
//! with renormalisation, scaling and soft-capping, and an optional clip.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/route_backward.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/block.cuh>
#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/moe/route_config.cuh>
#include <frugal/moe/route_math.cuh>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace frugal::moe {

namespace detail {

template <class Reducer, class Storage>
FRUGAL_DEVICE Reducer make_reducer(Storage& storage) {
  if constexpr (std::is_constructible_v<Reducer, Storage&>) return Reducer(storage);
  else return Reducer{};
}

// Threads per token: a warp up to 1024 experts, a block of 128 beyond.
template <class Config>
inline constexpr int backward_threads = Config::experts > 1024 ? 128 : 32;

template <class Config, class T, class IdT, class G, class D>
__global__ void __launch_bounds__(128, 1)
    route_backward_kernel(const T* __restrict__ logits, const T* __restrict__ noise_logits, std::int64_t ld, const IdT* __restrict__ ids,
                          const G* __restrict__ d_weights,
                          std::int64_t tokens, route_params params, float clip, bool accumulate,
                          D* __restrict__ d_logits) {
  using S = typename Config::scoring;
  constexpr int E = Config::experts, K = Config::k, TPT = backward_threads<Config>, Items = (E + TPT - 1) / TPT;
  constexpr int tokens_per_block = 128 / TPT;
  // A warp per token (warp_reducer), or the whole block for one token (block_reduce).
  using reducer_t = std::conditional_t<TPT == 32, warp_reducer<32>, block_reduce<float, 128>>;
  __shared__ typename block_reduce<float, 128>::TempStorage storage;
  const int local = int(threadIdx.x) % TPT, slot_in_block = int(threadIdx.x) / TPT;
  reducer_t reduce = make_reducer<reducer_t>(storage);

  const std::int64_t stride = std::int64_t(gridDim.x) * tokens_per_block;
  for (std::int64_t base = std::int64_t(blockIdx.x) * tokens_per_block; base < tokens; base += stride) {
    const std::int64_t t = base + slot_in_block;
    const bool exists = t < tokens;
    const bool active = exists && !(params.row_mask && params.row_mask[t] == 0);
    const T* row = logits + (active ? t : 0) * ld;
    const T* noise_row = noise_logits ? noise_logits + (active ? t : 0) * ld : nullptr;
    auto noise_of = [&](int e) { return noise_row ? to_float(noise_row[e]) : NAN; };

    float raw[Items], x[Items];
    FRUGAL_UNROLL
    for (int i = 0; i < Items; ++i) {
      const int e = i * TPT + local;
      raw[i] = active && e < E ? to_float(row[e]) : NAN;
      x[i] = transformed_logit(raw[i], params, t, e, active && e < E ? noise_of(e) : NAN);
    }
    softmax_stats stats;
    bool live = true;  // the forward's degenerate-row rule (warp_route_select), the other kinds
    if constexpr (Config::kind == scoring_kind::row_softmax) {
      stats = softmax_stats_of(x, reduce);
    } else {
      live = false;
      FRUGAL_UNROLL
      for (int i = 0; i < Items; ++i) {
        const int e = i * TPT + local;
        const float v = e < E ? selection_value<S>(x[i], elementwise_score<S>(x[i]), params.selection_bias, e) : NAN;
        live = live || (v == v && x[i] > -INFINITY);
      }
      live = reduce.any(live);
    }
    if (!exists) continue;  // after the last reduction: the rest needs no other thread

    // The k chosen experts' forward weights before renormalisation (r), then d r.
    int id[K];
    float r[K], dr[K];
    bool degenerate = (Config::kind == scoring_kind::row_softmax && stats.degenerate()) || !live;
    FRUGAL_UNROLL
    for (int j = 0; j < K; ++j) {
      const std::int64_t e = active ? std::int64_t(ids[t * K + j]) : -1;
      id[j] = (e >= 0 && e < E) ? int(e) : -1;  // out-of-range ids carry no gradient
      const float xj = id[j] >= 0 ? transformed_logit(to_float(row[id[j]]), params, t, id[j], noise_of(id[j])) : NAN;
      if constexpr (Config::kind == scoring_kind::row_softmax) r[j] = stats.probability(xj);
      else if constexpr (Config::kind == scoring_kind::elementwise) r[j] = S{}(xj);
      else r[j] = xj;  // selected softmax: logits for now, probabilities below
      dr[j] = id[j] >= 0 ? to_float(d_weights[t * K + j]) * params.routed_scaling : 0.0f;
    }
    if constexpr (Config::kind == scoring_kind::selected_softmax) {
      softmax_stats selected;
      FRUGAL_UNROLL
      for (int j = 0; j < K; ++j) selected.max = fmaxf(selected.max, r[j]);
      FRUGAL_UNROLL
      for (int j = 0; j < K; ++j) {
        selected.sum += softmax_term(r[j], selected.max);
        selected.inf_count += r[j] == INFINITY ? 1.0f : 0.0f;
      }
      FRUGAL_UNROLL
      for (int j = 0; j < K; ++j) r[j] = selected.probability(r[j]);
      degenerate = degenerate || selected.degenerate();
    }
    bool constant[K];  // NaN or infinite scores weighed 0 in the forward: constants here
    bool poisoned = false;  // a non-finite upstream gradient of a differentiable weight
    FRUGAL_UNROLL
    for (int j = 0; j < K; ++j) {
      constant[j] = !(fabsf(r[j]) < INFINITY) || id[j] < 0;
      r[j] = constant[j] ? 0.0f : r[j];
      poisoned = poisoned || (!constant[j] && !(fabsf(dr[j]) < INFINITY));
    }
    if (params.renormalize) {
      float sum = 0.0f, dot = 0.0f;
      FRUGAL_UNROLL
      for (int j = 0; j < K; ++j) {
        sum += r[j];
        dot += dr[j] * r[j];
      }
      const float denom = sum + params.renormalize_epsilon;
      FRUGAL_UNROLL
      // A zero denominator left the weights 0 whatever r is (forward): no gradient flows.
      for (int j = 0; j < K; ++j) dr[j] = denom != 0.0f ? dr[j] / denom - dot / (denom * denom) : 0.0f;
    }
    FRUGAL_UNROLL
    for (int j = 0; j < K; ++j) dr[j] = constant[j] ? 0.0f : dr[j];
    float dot = 0.0f;
    FRUGAL_UNROLL
    for (int j = 0; j < K; ++j) dot += dr[j] * r[j];

    FRUGAL_UNROLL
    for (int i = 0; i < Items; ++i) {
      const int e = i * TPT + local;
      if (e >= E) continue;
      float ds = 0.0f, own_r = 0.0f;
      bool depends = Config::kind == scoring_kind::row_softmax;  // does a weight depend on this logit?
      FRUGAL_UNROLL
      for (int j = 0; j < K; ++j)
        if (id[j] == e) {
          ds += dr[j];
          own_r = r[j];
          depends = depends || !constant[j];
        }
      float g;
      if constexpr (Config::kind == scoring_kind::row_softmax) g = stats.probability(x[i]) * (ds - dot);
      else if constexpr (Config::kind == scoring_kind::selected_softmax) g = own_r * (ds - dot);
      else g = ds == 0.0f ? 0.0f : ds * S{}.derivative(x[i], S{}(x[i]));
      g *= softcap_derivative(raw[i], params.softcap);
      const bool differentiable = active && !degenerate && fabsf(x[i]) < INFINITY && depends;
      if (g != g || !differentiable) g = 0.0f;
      if (clip > 0.0f) g = fminf(fmaxf(g, -clip), clip);
      if (poisoned && differentiable) g = NAN;  // not hidden, as autograd would not hide it (docs/moe_routing.md)
      D* out = d_logits + t * E + e;
      *out = from_float<D>(accumulate ? to_float(*out) + g : g);
    }
  }
}

}  // namespace detail

//! d logits of routing: given the forward's **global** expert ids [T, k] (route's ids with no
//! expert-parallel mapping, or its route_outputs::global_ids with one) and d weights [T, k], writes d logits [T, E] (float, __half or
//! __nv_bfloat16), or adds to them when `accumulate` is true (to sum with auxiliary-loss
//! gradients). `params` must be the forward's. The selection is piecewise constant and has no
//! gradient; the bias and the noise are constants; padding rows and degenerate rows get 0; slots
//! whose id is outside [0, E) contribute nothing. clip > 0 clamps every element to [-clip, clip].
//! A NaN or infinite d_weights entry of a differentiable weight is not hidden: the token's
//! gradient is NaN wherever a weight depends on the logit (NaN arising inside is 0, as before).
//! Elementwise scorings need `derivative(x, s)`. One launch, deterministic.
//! `in` must be the forward's inputs (its noise logits included).
template <class Config, class T, class IdT, class G, class D>
status route_backward(route_inputs<T> in, const IdT* ids, const G* d_weights, D* d_logits, std::int64_t tokens,
                      const route_params& params = {}, float clip = 0.0f, bool accumulate = false,
                      cudaStream_t stream = nullptr) {
  const T* logits = in.logits;
  using S = typename Config::scoring;
  static_assert(Config::kind != scoring_kind::elementwise || scoring_has_derivative<S>,
                "frugal::moe::route_backward: the scoring functor needs derivative(x, s) for the backward");
  static_assert(is_io_float_v<T> && is_io_float_v<G> && is_io_float_v<D>,
                "frugal::moe::route_backward: logits, d_weights and d_logits must be float, __half or __nv_bfloat16");
  static_assert(std::is_same_v<IdT, std::int32_t> || std::is_same_v<IdT, std::int64_t>,
                "frugal::moe::route_backward: ids must be int32 or int64");
  if (tokens < 0 || tokens > (std::int64_t(1) << 40)) return status::invalid("frugal::moe::route_backward: tokens must be in [0, 2^40]");
  if (tokens == 0) return status{};
  if (!logits || !ids || !d_weights || !d_logits)
    return status::invalid("frugal::moe::route_backward: logits, ids, d_weights and d_logits must not be null");
  if (!(clip >= 0.0f)) return status::invalid("frugal::moe::route_backward: clip must be >= 0 (0 = off)");
  FRUGAL_TRY(detail::check_route_params<Config>(params));
  if (in.columns != 0 && in.columns != Config::experts)
    return status::invalid("frugal::moe::route_backward: the logits have `columns` columns, not NumExperts (route_inputs::columns)");
  if (in.ld != 0 && in.ld < Config::experts)
    return status::invalid("frugal::moe::route_backward: route_inputs::ld must be 0 (E) or >= NumExperts");
  const std::int64_t ld = in.ld > 0 ? in.ld : Config::experts;
  const std::int64_t logits_count = tokens * Config::experts, slots = tokens * Config::k;
  if (frugal::detail::any_overlap(frugal::detail::ranges(frugal::detail::byte_range(d_logits, logits_count)),
                          frugal::detail::ranges(frugal::detail::byte_range(logits, tokens, Config::experts, ld),
                                                 frugal::detail::byte_range(in.noise_logits, tokens, Config::experts, ld),
                           frugal::detail::byte_range(ids, slots), frugal::detail::byte_range(d_weights, slots))))
    return status::invalid("frugal::moe::route_backward: d_logits must not overlap the logits, the ids or d_weights");
  int sms = 0;
  FRUGAL_TRY(multiprocessor_count(sms));
  constexpr int tokens_per_block = 128 / detail::backward_threads<Config>;
  const std::int64_t needed = (tokens + tokens_per_block - 1) / tokens_per_block;
  const std::int64_t blocks = needed < std::int64_t(sms) * 16 ? needed : std::int64_t(sms) * 16;
  return launch(detail::route_backward_kernel<Config, T, IdT, G, D>, launch_config{dim3(unsigned(blocks)), dim3(128), 0, stream},
                logits, in.noise_logits, ld, ids, d_weights, tokens, params, clip, accumulate, d_logits);
}

//! route_backward() without noise logits.
template <class Config, class T, class IdT, class G, class D>
status route_backward(const T* logits, const IdT* ids, const G* d_weights, D* d_logits, std::int64_t tokens,
                      const route_params& params = {}, float clip = 0.0f, bool accumulate = false,
                      cudaStream_t stream = nullptr) {
  return route_backward<Config>(route_inputs<T>{logits, nullptr}, ids, d_weights, d_logits, tokens, params, clip, accumulate, stream);
}

}  // namespace frugal::moe

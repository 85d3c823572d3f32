// SPDX-License-Identifier: Apache-2.0
//! @file
//! Device-wide Top-k routing: router logits [T, E] -> expert ids [T, k] and weights [T, k].
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/device_route.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/moe/detail/route_kernels.cuh>
#include <frugal/moe/route_config.cuh>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace frugal::moe {

namespace detail {

template <class Config, class T, class IdT, class WeightT>
status check_route_arguments(const route_inputs<T>& in, const route_outputs<IdT, WeightT>& out, std::int64_t tokens,
                             const route_params& p) {
  const T* logits = in.logits;
  if (tokens < 0 || tokens > (std::int64_t(1) << 40)) return status::invalid("frugal::moe::route: tokens must be in [0, 2^40]");
  if (tokens == 0) return status{};
  if (!logits) return status::invalid("frugal::moe::route: logits is null");
  if (!out.ids || !out.weights) return status::invalid("frugal::moe::route: ids and weights must not be null");
  FRUGAL_TRY(check_route_params<Config>(p));
  if (in.columns != 0 && in.columns != Config::experts)
    return status::invalid("frugal::moe::route: the logits have `columns` columns, not NumExperts (route_inputs::columns)");
  if (in.ld != 0 && in.ld < Config::experts) return status::invalid("frugal::moe::route: route_inputs::ld must be 0 (E) or >= NumExperts");
  using frugal::detail::any_overlap;
  using frugal::detail::ranges;
  using frugal::detail::byte_range;
  const std::int64_t slots = tokens * Config::k, ld = in.ld > 0 ? in.ld : Config::experts;
  if (any_overlap(ranges(byte_range(out.ids, slots), byte_range(out.weights, slots), byte_range(out.source_rows, slots),
                   byte_range(out.global_ids, slots), byte_range(out.degenerate_rows, 1)),
                  ranges(byte_range(in.logits, tokens, Config::experts, ld), byte_range(in.noise_logits, tokens, Config::experts, ld))))
    return status::invalid("frugal::moe::route: the outputs must not overlap each other or the logits");
  if (out.source_rows && tokens > std::int64_t(INT32_MAX) / Config::k)
    return status::invalid("frugal::moe::route: tokens * k must fit in int32 when source_rows are written");
  return status{};
}

// One kernel of the warp path: Width logits per load, Batch tokens per warp in turn (1: none),
// scores from a bf16_score_table or not.
template <class Config, class T, class IdT, class WeightT, int Width, int Batch, bool Table>
struct route_warp_launch {
  // A table block fills 32 KB with 8192 scores: 8 warps share each fill.
  static constexpr int warps_per_block = Table ? 8 : 4;
  static constexpr int tokens_per_warp = Batch > 1 ? Batch : 32 / Config::lanes;
  static constexpr auto kernel() {
    if constexpr (Batch > 1) return route_warp_batch_kernel<Config, Width, T, IdT, WeightT, warps_per_block, Batch, Table>;
    else return route_warp_kernel<Config, Width, T, IdT, WeightT, warps_per_block, Table>;
  }
  // The most blocks worth launching: 16 per SM, or with a table those resident at once (one
  // fill each).
  static status max_blocks(int sms, std::int64_t& blocks) {
    blocks = std::int64_t(sms) * 16;
    if constexpr (Table) {
      int resident = 0;
      FRUGAL_TRY(cooperative_grid_blocks(kernel(), warps_per_block * 32, 0, resident));
      blocks = resident;
    }
    return status{};
  }
  static status run(route_inputs<T> in, route_outputs<IdT, WeightT> out, std::int64_t tokens, const route_params& params,
                    cudaStream_t stream, int sms) {
    const std::int64_t ld = in.ld > 0 ? in.ld : Config::experts;
    std::int64_t blocks = 0;
    FRUGAL_TRY(max_blocks(sms, blocks));
    const std::int64_t tokens_per_block = std::int64_t(warps_per_block) * tokens_per_warp;
    const std::int64_t needed = (tokens + tokens_per_block - 1) / tokens_per_block;
    if (needed < blocks) blocks = needed;
    return launch(kernel(), launch_config{dim3(unsigned(blocks)), dim3(warps_per_block * 32), 0, stream}, in.logits,
                  in.noise_logits, ld, tokens, params, out);
  }
};

// How the warp path runs. `automatic` decides by T and the options; tests ask for each kernel.
enum class route_warp_path { automatic, one_by_one, batched, one_by_one_tabulated, batched_tabulated };

// Whether every row of the logits (and noise logits) starts on the vector width: the bases
// aligned and the row stride a multiple of it. Otherwise the logits load one at a time.
template <class Config, class T>
bool vector_rows(const route_inputs<T>& in) {
  constexpr int V = route_vector_width<Config, T>();
  const std::int64_t ld = in.ld > 0 ? in.ld : Config::experts;
  return is_aligned(in.logits, V * sizeof(T)) && (!in.noise_logits || is_aligned(in.noise_logits, V * sizeof(T))) && ld % V == 0;
}

// The warp-path kernel route() runs for these arguments (never `automatic`).
template <class Config, class T, class IdT = std::int32_t, class WeightT = float>
status choose_route_warp_path(const route_inputs<T>& in, std::int64_t tokens, const route_params& params, int sms,
                              route_warp_path& path) {
  using S = typename Config::scoring;
  constexpr int V = route_vector_width<Config, T>(), batch = route_batch<Config>();
  constexpr bool may_tabulate = route_may_tabulate<Config, T>();
  // Batches trade parallelism (one warp per `batch` tokens) for instructions: only where every
  // SM still gets 16 warps of whole batches. Below, latency matters more than issue.
  const bool batched = batch > 1 && tokens >= std::int64_t(batch) * 16 * sms;
  // A table pays where every logit is scored, as loaded (no soft-cap, no noise), and each
  // resident block routes 64 tokens or more: its fill (8192 sigmoids, about 5600
  // warp-instructions) costs what the table saves on about 36 rows of the DeepSeek-V3 gate
  // (about 156 each); 64 leaves a margin for the fill's latency until a GPU times both sides.
  // At least one block is resident per SM, so below 64 tokens per SM no occupancy is asked.
  bool tabulated = may_tabulate && vector_rows<Config>(in) &&
                   (params.selection_bias != nullptr || !scoring_is_monotone<S>) && !(params.softcap > 0.0f) &&
                   params.noise_std == 0.0f && tokens >= std::int64_t(sms) * 64;
  if constexpr (may_tabulate) {
    if (tabulated) {
      std::int64_t resident = 0;
      if (batched) FRUGAL_TRY((route_warp_launch<Config, T, IdT, WeightT, V, batch, true>::max_blocks(sms, resident)));
      else FRUGAL_TRY((route_warp_launch<Config, T, IdT, WeightT, V, 1, true>::max_blocks(sms, resident)));
      tabulated = tokens >= resident * 64;
    }
  }
  path = batched ? (tabulated ? route_warp_path::batched_tabulated : route_warp_path::batched)
                 : (tabulated ? route_warp_path::one_by_one_tabulated : route_warp_path::one_by_one);
  return status{};
}

template <class Config, class T, class IdT, class WeightT>
status launch_route_warp_path(route_inputs<T> in, route_outputs<IdT, WeightT> out, std::int64_t tokens,
                              const route_params& params, cudaStream_t stream, route_warp_path path) {
  constexpr int V = route_vector_width<Config, T>(), batch = route_batch<Config>();
  constexpr bool may_tabulate = route_may_tabulate<Config, T>();
  int sms = 0;
  FRUGAL_TRY(multiprocessor_count(sms));
  if (path == route_warp_path::automatic)
    FRUGAL_TRY((choose_route_warp_path<Config, T, IdT, WeightT>(in, tokens, params, sms, path)));
  const bool vectors = V > 1 && vector_rows<Config>(in);
  const bool batched = path == route_warp_path::batched || path == route_warp_path::batched_tabulated;
  const bool tabulated = path == route_warp_path::one_by_one_tabulated || path == route_warp_path::batched_tabulated;
  if (batched && batch == 1) return status::invalid("frugal::moe::route: this configuration has no batched path");
  if (tabulated && !may_tabulate)
    return status::invalid("frugal::moe::route: a score table needs bf16 logits and an elementwise scoring");
  if (tabulated && !vectors)
    return status::misaligned("frugal::moe::route: a score table needs rows aligned to the logits' vector width");
  auto run = [&](auto launcher) { return decltype(launcher)::run(in, out, tokens, params, stream, sms); };
  if constexpr (may_tabulate) {
    if (tabulated) {
      if (batched) return run(route_warp_launch<Config, T, IdT, WeightT, V, batch, true>{});
      return run(route_warp_launch<Config, T, IdT, WeightT, V, 1, true>{});
    }
  }
  if (batched) {
    if (vectors) return run(route_warp_launch<Config, T, IdT, WeightT, V, batch, false>{});
    return run(route_warp_launch<Config, T, IdT, WeightT, 1, batch, false>{});
  }
  if (vectors) return run(route_warp_launch<Config, T, IdT, WeightT, V, 1, false>{});
  return run(route_warp_launch<Config, T, IdT, WeightT, 1, 1, false>{});
}

}  // namespace detail

//! Routes every token: scores its E logits (Config::scoring), selects k experts (selection bias,
//! group limit), and writes ids, weights and the optional outputs of `out`.
//! Semantics, tie and NaN rules: docs/moe_routing.md. One launch, no workspace, no allocation,
//! no synchronization; bitwise deterministic.
//!
//! @tparam Config  route_config<E, k, Scoring, NumGroups, TopKGroups, GroupScore>
//! @param in       logits [T, E] (float, __half or __nv_bfloat16, row-major), noise logits or nullptr
//! @param out      ids [T, k] (int32/int64), weights [T, k] (float/__nv_bfloat16/__half), optional extras
//! @param tokens   T >= 0
template <class Config, class T, class IdT, class WeightT>
status route(route_inputs<T> in, route_outputs<IdT, WeightT> out, std::int64_t tokens,
             const route_params& params = {}, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::moe::route: logits must be float, __half or __nv_bfloat16");
  static_assert(std::is_same_v<IdT, std::int32_t> || std::is_same_v<IdT, std::int64_t>,
                "frugal::moe::route: ids must be int32 or int64");
  static_assert(is_io_float_v<WeightT>, "frugal::moe::route: weights must be float, __half or __nv_bfloat16");
  FRUGAL_TRY(detail::check_route_arguments<Config>(in, out, tokens, params));
  if (tokens == 0) return status{};
  if constexpr (Config::block_path) {
    int sms = 0;
    FRUGAL_TRY(multiprocessor_count(sms));
    const std::int64_t blocks = tokens < std::int64_t(sms) * 8 ? tokens : std::int64_t(sms) * 8;
    return launch(detail::route_block_kernel<Config, T, IdT, WeightT>, launch_config{dim3(unsigned(blocks)), dim3(detail::route_block_threads), 0, stream},
                  in.logits, in.noise_logits, in.ld > 0 ? in.ld : std::int64_t(Config::experts), tokens, params, out);
  } else {
    return detail::launch_route_warp_path<Config>(in, out, tokens, params, stream, detail::route_warp_path::automatic);
  }
}

//! route() without noise logits.
template <class Config, class T, class IdT, class WeightT>
status route(const T* logits, route_outputs<IdT, WeightT> out, std::int64_t tokens, const route_params& params = {},
             cudaStream_t stream = nullptr) {
  return route<Config>(route_inputs<T>{logits, nullptr}, out, tokens, params, stream);
}

}  // namespace frugal::moe

// SPDX-License-Identifier: Apache-2.0
// Dispatch: the plan (latency at T*k <= 64K, the regime of vLLM/SGLang moe_align_block_size),
// permute and combine (bandwidth at 64 MB and more). Floors: permute reads T*H and writes
// T*k*H elements; combine reads T*k*H and writes T*H (bf16). Peers: torch.sort-based planning,
// index_select and index_add_ in bench/peers/torch_dispatch.py, same device-check run.
#include <frugal/moe/combine.cuh>
#include <frugal/moe/permute.cuh>
#include <frugal/moe/plan.cuh>
#include <frugal/reference/moe_dispatch.hpp>

#include <random>
#include <set>
#include <vector>

#include "support/bench_support.cuh"

namespace {

std::vector<std::int32_t> routing_ids(std::int64_t tokens, int k, int experts) {
  std::mt19937 rng(11);
  std::vector<std::int32_t> ids(std::size_t(tokens) * k);
  for (std::int64_t t = 0; t < tokens; ++t) {
    std::set<int> used;
    for (int j = 0; j < k; ++j) {
      int e;
      do e = int(rng() % experts); while (used.count(e));
      used.insert(e);
      ids[std::size_t(t * k + j)] = e;
    }
  }
  return ids;
}

// The plans timed: dropless and packed (vLLM's moe_align_block_size layout); capacity-limited
// by routing weight (batch prioritized routing: a radix select per expert and more grid
// barriers); the masked [E, capacity] layout (DeepEP low latency) with token-order drops.
enum class plan_kind { dropless, weight_priority, masked };

template <plan_kind Kind>
void BM_plan(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  const std::int64_t tokens = state.range(0);
  const int k = int(state.range(1)), experts = int(state.range(2));
  frugal::moe::plan_params params;
  params.block_size = 64;
  if (Kind != plan_kind::dropless) {
    params.capacity_factor = 1.25f;
    params.policy = Kind == plan_kind::weight_priority ? frugal::moe::drop_policy::weight_priority : frugal::moe::drop_policy::token_order;
  }
  if (Kind == plan_kind::masked) params.layout = frugal::moe::placement::masked;
  const auto ids = routing_ids(tokens, k, experts);
  std::vector<float> host_weights(ids.size());
  std::mt19937 rng(12);
  for (auto& w : host_weights) w = float(rng() % 1000) * 1e-3f;
  frugal::bench::device_vector<float> weights(host_weights.size());
  cudaMemcpy(weights.ptr, host_weights.data(), host_weights.size() * 4, cudaMemcpyHostToDevice);
  const float* plan_weights = Kind == plan_kind::weight_priority ? weights.ptr : nullptr;
  const std::int64_t rows = frugal::moe::plan_max_rows(tokens, k, experts, params);
  frugal::bench::device_vector<std::int32_t> d_ids(ids.size()), counts(experts), offsets(experts + 1), slot_to_row(ids.size()),
      row_to_slot(static_cast<std::size_t>(rows)), tiles(static_cast<std::size_t>(rows / 64)), total(1);
  cudaMemcpy(d_ids.ptr, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice);
  std::size_t bytes = 0;
  const frugal::moe::plan_shape shape{tokens, k, experts};
  (void)frugal::moe::plan(nullptr, bytes, d_ids.ptr, plan_weights, {}, shape, params);
  frugal::bench::device_vector<unsigned char> workspace(bytes);
  frugal::moe::plan_outputs out;
  out.counts = counts.ptr;
  out.offsets = offsets.ptr;
  out.slot_to_row = slot_to_row.ptr;
  out.row_to_slot = row_to_slot.ptr;
  if (Kind != plan_kind::masked) out.tile_experts = tiles.ptr;
  out.total_rows = total.ptr;
  // the same outputs as moe_align_block_size: sorted ids, expert per tile, rows used
  const double moved = double(ids.size()) * 4 * 3 + double(rows) * 4;
  frugal::bench::time_launches(state, nullptr, moved, [&](int) {
    return frugal::moe::plan(workspace.ptr, bytes, d_ids.ptr, plan_weights, out, shape, params).ok();
  });
  state.SetLabel("one cooperative launch");
}

// permute with fp8 e4m3 output and per-128 scales (DeepSeek-V3), scattering each token once.
void BM_permute_fp8(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  const std::int64_t tokens = state.range(0);
  const int k = int(state.range(1)), hidden = int(state.range(2)), experts = 64;
  const auto ids = routing_ids(tokens, k, experts);
  const auto plan = frugal::reference::plan(ids.data(), nullptr, tokens, k, experts, frugal::moe::plan_params{});
  const std::int64_t rows = tokens * k;
  frugal::bench::device_vector<__nv_bfloat16> x(std::size_t(tokens) * hidden);
  frugal::bench::device_vector<__nv_fp8_e4m3> q(std::size_t(rows) * hidden);
  frugal::bench::device_vector<float> scales(std::size_t(rows) * (hidden / 128));
  frugal::bench::device_vector<std::int32_t> row_to_slot(plan.row_to_slot.size()), slot_to_row(plan.slot_to_row.size());
  cudaMemcpy(row_to_slot.ptr, plan.row_to_slot.data(), plan.row_to_slot.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(slot_to_row.ptr, plan.slot_to_row.data(), plan.slot_to_row.size() * 4, cudaMemcpyHostToDevice);
  cudaMemset(x.ptr, 0x3c, std::size_t(tokens) * hidden * 2);
  const double moved = double(tokens) * hidden * 2 + double(rows) * hidden + double(rows) * (hidden / 128) * 4;
  frugal::bench::time_launches(state, nullptr, moved, [&](int) {
    return frugal::moe::permute_fp8(x.ptr, frugal::moe::dispatch_maps{row_to_slot.ptr, slot_to_row.ptr}, q.ptr, scales.ptr,
                                    frugal::moe::dispatch_shape{tokens, k, hidden, rows}, {frugal::moe::fp8_scaling::per_128})
        .ok();
  });
}

enum class move_kind { permute_scatter, permute_gather, combine };

template <move_kind Kind>
void BM_move(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  const std::int64_t tokens = state.range(0);
  const int k = int(state.range(1)), hidden = int(state.range(2)), experts = 64;
  frugal::moe::plan_params params;
  const auto ids = routing_ids(tokens, k, experts);
  const auto plan = frugal::reference::plan(ids.data(), nullptr, tokens, k, experts, params);
  const std::int64_t rows = tokens * k;
  frugal::bench::device_vector<__nv_bfloat16> x(std::size_t(tokens) * hidden), permuted(std::size_t(rows) * hidden);
  frugal::bench::device_vector<std::int32_t> row_to_slot(plan.row_to_slot.size()), slot_to_row(plan.slot_to_row.size());
  frugal::bench::device_vector<float> weights(static_cast<std::size_t>(rows));
  cudaMemcpy(row_to_slot.ptr, plan.row_to_slot.data(), plan.row_to_slot.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(slot_to_row.ptr, plan.slot_to_row.data(), plan.slot_to_row.size() * 4, cudaMemcpyHostToDevice);
  cudaMemset(x.ptr, 0x3c, std::size_t(tokens) * hidden * 2);  // 1.18 in bf16: not zeros
  cudaMemset(permuted.ptr, 0x3c, std::size_t(rows) * hidden * 2);
  cudaMemset(weights.ptr, 0x3e, std::size_t(rows) * 4);
  const double moved = double(tokens) * hidden * 2 + double(rows) * hidden * 2;
  const frugal::moe::dispatch_shape shape{tokens, k, hidden, rows};
  frugal::bench::time_launches(state, nullptr, moved, [&](int) {
    if (Kind == move_kind::combine)
      return frugal::moe::combine(permuted.ptr, frugal::moe::dispatch_maps{row_to_slot.ptr, slot_to_row.ptr}, weights.ptr, nullptr, x.ptr, shape)
          .ok();
    // scatter: each token row read once (the inverse map); gather: each row reads its token
    const std::int32_t* forward = Kind == move_kind::permute_scatter ? slot_to_row.ptr : nullptr;
    return frugal::moe::permute(x.ptr, frugal::moe::dispatch_maps{row_to_slot.ptr, forward}, permuted.ptr, shape).ok();
  });
}

// Decode: a plan padded to the GEMM's M-tile (block 64) sizes its buffer for the worst case,
// T k + E (64 - 1) rows (8072 rows, 33 MB of bf16 at T = 1, E = 128, H = 2048), of which a
// decode step uses a few. With the plan's device-side total the permute touches only those;
// `worst_case` times the same call without it (every row written, padding as zeros), as
// before the total existed. Bytes: what the call needs (the used rows).
template <bool WithTotal>
void BM_permute_decode(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  const std::int64_t tokens = state.range(0);
  const int k = 8, experts = int(state.range(1)), hidden = int(state.range(2));
  frugal::moe::plan_params params;
  params.block_size = 64;
  const auto ids = routing_ids(tokens, k, experts);
  const auto plan = frugal::reference::plan(ids.data(), nullptr, tokens, k, experts, params);
  const std::int64_t rows = frugal::moe::plan_max_rows(tokens, k, experts, params);
  frugal::bench::device_vector<__nv_bfloat16> x(std::size_t(tokens) * hidden), permuted(std::size_t(rows) * hidden);
  frugal::bench::device_vector<std::int32_t> row_to_slot(plan.row_to_slot.size()), slot_to_row(plan.slot_to_row.size()), total(1);
  cudaMemcpy(row_to_slot.ptr, plan.row_to_slot.data(), plan.row_to_slot.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(slot_to_row.ptr, plan.slot_to_row.data(), plan.slot_to_row.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(total.ptr, &plan.total_rows, 4, cudaMemcpyHostToDevice);
  cudaMemset(x.ptr, 0x3c, std::size_t(tokens) * hidden * 2);
  const double used = double(plan.total_rows);
  const double moved = double(tokens) * hidden * 2 + used * hidden * 2;
  const frugal::moe::dispatch_maps maps{row_to_slot.ptr, slot_to_row.ptr, WithTotal ? total.ptr : nullptr};
  frugal::bench::time_launches(state, nullptr, moved, [&](int) {
    return frugal::moe::permute(x.ptr, maps, permuted.ptr, frugal::moe::dispatch_shape{tokens, k, hidden, rows}).ok();
  });
  state.counters["rows_used"] = used;
  state.counters["rows_bound"] = double(rows);
  state.SetLabel(WithTotal ? "rows past the plan's total untouched" : "worst case: every row of the bound written");
}

void plan_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"tokens", "k", "experts"});
  for (std::int64_t t : {1, 64, 1024, 8192}) b->Args({t, 8, 256});
  b->Args({16384, 8, 8});     // few experts, heavy contention for atomics-based peers
  b->Args({16384, 8, 256});   // beyond 64K entries: several sub-tiles per block once the grid is full
  b->Args({4096, 22, 512});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

// Decode batches (tokens, experts, hidden): Mixtral-like E 128 at one token, DeepSeek-V3 shapes.
void decode_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"tokens", "experts", "hidden"});
  b->Args({1, 128, 2048});
  b->Args({8, 256, 7168});
  b->Args({64, 256, 7168});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

void move_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"tokens", "k", "hidden"});
  b->Args({4096, 8, 7168});  // 528 MB moved (DeepSeek-V3 hidden)
  b->Args({2048, 2, 4096});  // Mixtral-like, 50 MB (below the 64 MB of the target: L2 holds part of it)
  b->Args({4096, 2, 4096});  // Mixtral-like, 101 MB
  b->Args({16384, 2, 4096}); // 403 MB
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_plan<plan_kind::dropless>)->Name("dispatch/plan")->Apply(plan_shapes);
BENCHMARK(BM_plan<plan_kind::weight_priority>)->Name("dispatch/plan_weight_priority")->Apply(plan_shapes);
BENCHMARK(BM_plan<plan_kind::masked>)->Name("dispatch/plan_masked")->Apply(plan_shapes);
BENCHMARK(BM_permute_fp8)->Name("dispatch/permute_fp8_per128")->Apply(move_shapes);
BENCHMARK(BM_move<move_kind::permute_scatter>)->Name("dispatch/permute_bf16")->Apply(move_shapes);
BENCHMARK(BM_move<move_kind::permute_gather>)->Name("dispatch/permute_gather_bf16")->Apply(move_shapes);
BENCHMARK(BM_move<move_kind::combine>)->Name("dispatch/combine_bf16")->Apply(move_shapes);
BENCHMARK(BM_permute_decode<true>)->Name("dispatch/permute_decode_bf16")->Apply(decode_shapes);
BENCHMARK(BM_permute_decode<false>)->Name("dispatch/permute_decode_bf16_worst_case")->Apply(decode_shapes);

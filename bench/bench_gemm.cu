// SPDX-License-Identifier: Apache-2.0
// frugal::gemm against cuBLASLt (linked by this benchmark only), timed in the same run on the
// same buffers: square products 1024^3 .. 8192^3 and LLM layer shapes (Llama-3-8B projections at
// prefill and decode sizes), bf16 / f16 with fp32 accumulation and fp32 via tf32. A is [M, K]
// row-major, B the layer's weight [N, K] (col-major B, "TN"), D [M, N] in A's type. Counters:
// TFLOP/s, the fraction of the device's dense tensor-core peak (SMs x clock x FLOP per SM per
// clock: 4096 bf16 / f16 and 2048 tf32 on sm_90, half that on sm_80), and cuBLASLt's TFLOP/s and
// frugal's fraction of it. Also the grouped GEMM of an MoE layer's expert FFNs.
#include <frugal/gemm/device_gemm.cuh>
#include <frugal/gemm/grouped_gemm.cuh>

#include <cublasLt.h>

#include <string>
#include <vector>

#include "support/bench_support.cuh"
#include "support/cublas_peer.cuh"

namespace {

template <class T>
void BM_gemm(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  const std::int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  frugal::bench::device_vector<T> a(std::size_t(m * k)), b(std::size_t(n * k)), d(std::size_t(m * n));
  frugal::bench::fill_normal(a.ptr, a.count, 1);
  frugal::bench::fill_normal(b.ptr, b.count, 2, 0.05f);
  const double flops = 2.0 * double(m) * double(n) * double(k);
  const auto frugal_gemm = [&] {
    return frugal::gemm(frugal::row_major<const T>(a.ptr, k), frugal::col_major<const T>(b.ptr, k), frugal::row_major(d.ptr, n), m, n, k)
        .ok();
  };
  const double bytes = double(m * k + n * k + m * n) * sizeof(T);  // each operand once: the memory floor
  frugal::bench::time_launches(state, nullptr, bytes, [&](int) { return frugal_gemm(); });
  // The peer on the same buffers, right after.
  frugal::bench::cublas_tn<T> peer(m, n, k);
  const int repeats = flops > 1e12 ? 10 : 50;
  const double frugal_ms = frugal::bench::mean_ms(frugal_gemm, repeats);
  const double peer_ms = peer.ok ? frugal::bench::mean_ms([&] { return peer.run(a.ptr, b.ptr, d.ptr); }, repeats) : 0.0;
  using benchmark::Counter;
  state.counters["TFLOP/s"] = Counter(flops / 1e12, Counter::kIsIterationInvariantRate);
  state.counters["peak_fraction"] = Counter(flops / frugal::bench::tensor_peak_flops(std::is_same_v<T, float>), Counter::kIsIterationInvariantRate);
  state.counters["frugal_TFLOPs_mean"] = flops / (frugal_ms * 1e-3) / 1e12;
  state.counters["cublas_TFLOPs_mean"] = peer.ok ? flops / (peer_ms * 1e-3) / 1e12 : 0.0;
  state.counters["fraction_of_cublas"] = peer.ok ? peer_ms / frugal_ms : 0.0;
  state.SetLabel(std::string(frugal::type_name<T>()) + " TN, cuBLASLt " + (peer.ok ? "timed" : "unavailable"));
}

void square_and_llm_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "n", "k"});
  for (std::int64_t s : {1024, 2048, 4096, 8192}) b->Args({s, s, s});
  // Llama-3-8B at 4096 tokens (prefill) and 16 tokens (decode): QKV, O, gate/up (2 x 14336), down.
  for (std::int64_t tokens : {4096, 16}) {
    b->Args({tokens, 6144, 4096});
    b->Args({tokens, 4096, 4096});
    b->Args({tokens, 28672, 4096});
    b->Args({tokens, 4096, 14336});
  }
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

// An MoE layer's gate/up projection over a plan: E experts, tokens * k rows spread unevenly
// (expert e gets a share proportional to e + 1), each padded to 64 rows.
void BM_grouped_gemm(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  using T = __nv_bfloat16;
  const int experts = int(state.range(0)), top_k = int(state.range(1));
  const std::int64_t tokens = state.range(2), n = state.range(3), k = state.range(4);
  std::vector<std::int32_t> counts(static_cast<std::size_t>(experts)), offsets(static_cast<std::size_t>(experts) + 1, 0);
  const std::int64_t slots = tokens * top_k;
  std::int64_t assigned = 0;
  for (int e = 0; e < experts; ++e) {
    counts[std::size_t(e)] = std::int32_t(e + 1 == experts ? slots - assigned : slots * 2 * (e + 1) / (std::int64_t(experts) * (experts + 1)));
    assigned += counts[std::size_t(e)];
    offsets[std::size_t(e) + 1] = offsets[std::size_t(e)] + (counts[std::size_t(e)] + 63) / 64 * 64;
  }
  const std::int64_t rows = offsets.back();
  frugal::bench::device_vector<T> a(std::size_t(rows * k)), b(std::size_t(experts) * std::size_t(n * k)), d(std::size_t(rows * n));
  frugal::bench::device_vector<std::int32_t> d_counts(counts.size()), d_offsets(offsets.size());
  cudaMemcpy(d_counts.ptr, counts.data(), counts.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(d_offsets.ptr, offsets.data(), offsets.size() * 4, cudaMemcpyHostToDevice);
  frugal::bench::fill_normal(a.ptr, a.count, 3);
  frugal::bench::fill_normal(b.ptr, b.count, 4, 0.05f);
  frugal::gemm_groups<std::int32_t> groups;
  groups.offsets = d_offsets.ptr;
  groups.counts = d_counts.ptr;
  groups.groups = experts;
  groups.rows = rows;
  const double flops = 2.0 * double(slots) * double(n) * double(k);
  const double bytes = double(slots * k + std::int64_t(experts) * n * k + slots * n) * sizeof(T);
  frugal::bench::time_launches(state, nullptr, bytes, [&](int) {
    return frugal::grouped_gemm(frugal::row_major<const T>(a.ptr, k), frugal::col_major<const T>(b.ptr, k), groups,
                                frugal::row_major(d.ptr, n), n, k)
        .ok();
  });
  using benchmark::Counter;
  state.counters["TFLOP/s"] = Counter(flops / 1e12, Counter::kIsIterationInvariantRate);
  state.counters["peak_fraction"] = Counter(flops / frugal::bench::tensor_peak_flops(false), Counter::kIsIterationInvariantRate);
  state.SetLabel("bf16 grouped over plan segments (useful FLOPs only)");
}

void moe_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"experts", "k", "tokens", "n", "hidden"});
  b->Args({8, 2, 4096, 2 * 14336, 4096});  // Mixtral-8x7B gate/up, prefill
  b->Args({64, 6, 4096, 2 * 1408, 2048});  // DeepSeek-V2-Lite-like routed experts, prefill
  b->Args({64, 6, 16, 2 * 1408, 2048});    // the same at decode
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_gemm<__nv_bfloat16>)->Name("gemm/bf16_tn")->Apply(square_and_llm_shapes);
BENCHMARK(BM_gemm<__half>)->Name("gemm/f16_tn")->Args({4096, 4096, 4096})->ArgNames({"m", "n", "k"})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_gemm<float>)->Name("gemm/tf32_tn")->Args({4096, 4096, 4096})->ArgNames({"m", "n", "k"})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_grouped_gemm)->Name("gemm/grouped_bf16")->Apply(moe_shapes);

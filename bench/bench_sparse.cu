// SPDX-License-Identifier: Apache-2.0
// N:M sparsity, memory-bound: magnitude prune + compress (nm_prune) and the fused SR-STE step
// (srste_step, SGD with momentum and AdamW) on LLM layer shapes, 4096 x 4096 to 14336 x 4096.
// Bytes counted for the floor: prune reads W (fp32 master) once and writes N/M of it as bf16
// plus the packed indices; the SR-STE step reads and writes W and the optimizer states (fp32),
// reads the bf16 gradient, writes the compressed W. Peer: the same math in PyTorch eager, in
// bench/peers/torch_nm.py, same device-check run.
#include <frugal/sparse/device_nm.cuh>
#include <frugal/sparse/srste.cuh>

#include <string>

#include "support/bench_support.cuh"

namespace {

using frugal::sparse::nm;

template <class P>
double compressed_bytes(std::int64_t rows, std::int64_t k) {
  return double(rows) * (double(P::values_per_row(k)) * 2.0 + double(P::index_words_per_row(k)) * 4.0);
}

template <class P>
void BM_prune(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  const std::int64_t rows = state.range(0), k = state.range(1);
  const int copies = frugal::bench::rotation_count(std::size_t(rows * k) * 4);
  frugal::bench::device_vector<float> w(std::size_t(rows * k) * std::size_t(copies));
  frugal::bench::device_vector<__nv_bfloat16> values(std::size_t(rows * P::values_per_row(k)));
  frugal::bench::device_vector<std::uint32_t> indices(std::size_t(rows * P::index_words_per_row(k)));
  frugal::bench::device_vector<frugal::sparse::nm_report> report(1);
  frugal::bench::fill_normal(w.ptr, w.count, 7);
  const double bytes = double(rows * k) * 4.0 + compressed_bytes<P>(rows, k);
  frugal::bench::time_launches(state, nullptr, bytes, [&](int it) {
    return frugal::sparse::nm_prune<P>(w.ptr + std::size_t(it % copies) * std::size_t(rows * k), k, values.ptr, P::values_per_row(k),
                                       indices.ptr, P::index_words_per_row(k), static_cast<std::uint8_t*>(nullptr), 0, report.ptr, rows, k)
        .ok();
  });
  state.SetLabel("fp32 -> bf16 nm<" + std::to_string(P::n) + "," + std::to_string(P::m) + "> prune + compress");
}

template <class P, class Optimizer>
void BM_srste(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  constexpr bool adam = std::is_same_v<Optimizer, frugal::sparse::adamw>;
  const std::int64_t rows = state.range(0), k = state.range(1);
  const std::size_t n = std::size_t(rows * k);
  frugal::bench::device_vector<float> w(n), s0(n), s1(adam ? n : 1);
  frugal::bench::device_vector<__nv_bfloat16> g(n), values(std::size_t(rows * P::values_per_row(k)));
  frugal::bench::device_vector<std::uint32_t> indices(std::size_t(rows * P::index_words_per_row(k)));
  frugal::bench::device_vector<unsigned long long> flips(1);
  frugal::bench::device_vector<frugal::sparse::nm_report> report(1);
  frugal::bench::fill_normal(w.ptr, n, 8, 0.02f);
  frugal::bench::fill_normal(g.ptr, n, 9, 0.001f);
  cudaMemset(s0.ptr, 0, n * 4);
  cudaMemset(s1.ptr, 0, s1.count * 4);
  frugal::sparse::srste_buffers<__nv_bfloat16, __nv_bfloat16> b;
  b.weight = w.ptr, b.grad = g.ptr, b.state0 = s0.ptr, b.state1 = adam ? s1.ptr : nullptr, b.ld = k;
  b.values = values.ptr, b.ld_values = P::values_per_row(k), b.indices = indices.ptr, b.ld_indices = P::index_words_per_row(k);
  b.flips = flips.ptr, b.report = report.ptr;
  Optimizer opt;
  // Each element: w read + written (8 B), gradient read (2 B), states read + written (8 or 16 B).
  const double bytes = double(n) * (8.0 + 2.0 + (adam ? 16.0 : 8.0)) + compressed_bytes<P>(rows, k);
  frugal::bench::time_launches(state, nullptr, bytes, [&](int it) {
    if constexpr (adam) opt.step = it + 1;
    return frugal::sparse::srste_step<P>(b, rows, k, opt).ok();
  });
  state.SetLabel(std::string(adam ? "AdamW" : "SGD momentum") + " nm<" + std::to_string(P::n) + "," + std::to_string(P::m) +
                 ">: fp32 master, bf16 grad, bf16 compressed out");
}

void layer_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "k"});
  for (auto shape : {std::pair<std::int64_t, std::int64_t>{4096, 4096}, {6144, 4096}, {14336, 4096}, {4096, 14336}})
    b->Args({shape.first, shape.second});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_prune<nm<2, 4>>)->Name("sparse/prune_2of4")->Apply(layer_shapes);
BENCHMARK(BM_prune<nm<2, 8>>)->Name("sparse/prune_2of8")->Apply(layer_shapes);
BENCHMARK(BM_srste<nm<2, 4>, frugal::sparse::sgd_momentum>)->Name("sparse/srste_sgd_2of4")->Apply(layer_shapes);
BENCHMARK(BM_srste<nm<2, 8>, frugal::sparse::adamw>)->Name("sparse/srste_adamw_2of8")->Apply(layer_shapes);

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

// ---- the sparse linear layer against cuBLAS dense ---------------------------------------------------
// Y [tokens, out] = X [tokens, K] W^T with W 2:4 or 2:8 (compact) against cuBLASLt's dense product of
// the same shape, same run. Bytes: W compressed (values + indices), X and Y once. Counters: the
// dense-equivalent TFLOP/s (2 tokens out K), GB/s and HBM floor fraction, cuBLAS's time and the
// speedup over it (targets on an H200: decode 2:4 >= 1.6x, 2:8 >= 2.5x; prefill 2:4 >= 1.1x).
#include <frugal/sparse/nm_linear.cuh>

#include "support/cublas_peer.cuh"

namespace {

template <class P>
void BM_nm_linear(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  using T = __nv_bfloat16;
  const std::int64_t tokens = state.range(0), out = state.range(1), k = state.range(2);
  const std::int64_t ldv = P::values_per_row(k), ldi = P::index_words_per_row(k);
  frugal::bench::device_vector<float> w(std::size_t(out * k));
  frugal::bench::device_vector<T> x(std::size_t(tokens * k)), y(std::size_t(tokens * out)), values(std::size_t(out * ldv)),
      dense_w(std::size_t(out * k));
  frugal::bench::device_vector<std::uint32_t> indices(std::size_t(out * ldi));
  frugal::bench::device_vector<frugal::sparse::nm_report> report(1);
  frugal::bench::fill_normal(w.ptr, w.count, 10, 0.02f);
  frugal::bench::fill_normal(x.ptr, x.count, 11);
  frugal::bench::fill_normal(dense_w.ptr, dense_w.count, 12, 0.02f);
  if (!frugal::sparse::nm_prune<P>(w.ptr, k, values.ptr, ldv, indices.ptr, ldi, static_cast<std::uint8_t*>(nullptr), 0, report.ptr, out, k).ok()) {
    state.SkipWithError("nm_prune failed");
    return;
  }
  const frugal::sparse::nm_weight<T> weight{values.ptr, ldv, indices.ptr, ldi, 0, 0};
  std::size_t bytes = 0;
  (void)frugal::sparse::nm_linear<P>(nullptr, bytes, frugal::row_major<const T>(x.ptr, k), weight, frugal::row_major(y.ptr, out), tokens, out, k);
  frugal::bench::device_vector<unsigned char> workspace(bytes);
  auto sparse_linear = [&] {
    return frugal::sparse::nm_linear<P>(workspace.ptr, bytes, frugal::row_major<const T>(x.ptr, k), weight, frugal::row_major(y.ptr, out),
                                        tokens, out, k)
        .ok();
  };
  const double moved = double(out) * (double(ldv) * 2 + double(ldi) * 4) + double(tokens * k + tokens * out) * 2;
  frugal::bench::time_launches(state, nullptr, moved, [&](int) { return sparse_linear(); });
  const double flops = 2.0 * double(tokens) * double(out) * double(k);
  frugal::bench::cublas_tn<T> dense(tokens, out, k);
  const int repeats = flops > 1e11 ? 20 : 100;
  const double sparse_ms = frugal::bench::mean_ms(sparse_linear, repeats);
  const double dense_ms = dense.ok ? frugal::bench::mean_ms([&] { return dense.run(x.ptr, dense_w.ptr, y.ptr); }, repeats) : 0.0;
  using benchmark::Counter;
  state.counters["dense_equivalent_TFLOP/s"] = Counter(flops / 1e12, Counter::kIsIterationInvariantRate);
  state.counters["cublas_dense_us"] = dense_ms * 1e3;
  state.counters["speedup_over_cublas_dense"] = dense.ok ? dense_ms / sparse_ms : 0.0;
  state.SetLabel("bf16 nm<" + std::to_string(P::n) + "," + std::to_string(P::m) + "> sparse linear vs cuBLASLt dense");
}

void linear_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"tokens", "out", "k"});
  for (std::int64_t tokens : {1, 8, 16, 128, 4096})
    for (auto shape : {std::pair<std::int64_t, std::int64_t>{4096, 4096}, {14336, 4096}, {4096, 14336}, {8192, 8192}})
      b->Args({tokens, shape.first, shape.second});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_nm_linear<nm<2, 4>>)->Name("sparse/linear_2of4")->Apply(linear_shapes);
BENCHMARK(BM_nm_linear<nm<2, 8>>)->Name("sparse/linear_2of8")->Apply(linear_shapes);

// SPDX-License-Identifier: Apache-2.0
// Example 5: a complete MoE layer from frugal's pieces, every stage frugal's own:
//   route -> plan -> permute -> grouped GEMM (gate/up + SwiGLU) -> grouped GEMM (down) -> combine
// for a Mixtral-like layer (8 experts, top-2 then softmax) and a DeepSeek-like one (64 experts,
// sigmoid with 8 groups keep 3, top-6, renormalised, x2.5), checked against a host reference of
// the whole layer. The expert FFN is y = W2 (silu(W1 x) * W3 x) in bf16 on the tensor cores
// (fp32 accumulation): W1 and W3 are stored interleaved row by row, so one grouped GEMM with the
// gated epilogue gives silu(W1 x) * W3 x directly. The grouped GEMMs read the plan's offsets and
// counts, so the plan needs no padding. Then the same layers with N:M-sparse experts (2:4 and
// 2:8, pruned by magnitude on the device): each projection is a sparse grouped GEMM on the sparse
// tensor cores (nm_grouped_linear), gate and up as two of them joined by a small epilogue of the
// example's own. On a GPU it also prints the time of each stage.
#include <frugal/core/launch.cuh>
#include <frugal/gemm/grouped_gemm.cuh>
#include <frugal/moe/combine.cuh>
#include <frugal/moe/device_route.cuh>
#include <frugal/moe/permute.cuh>
#include <frugal/moe/plan.cuh>
#include <frugal/reference/moe_route.hpp>
#include <frugal/reference/sparse_nm.hpp>
#include <frugal/sparse/device_nm.cuh>
#include <frugal/sparse/nm_linear.cuh>

#include <cmath>
#include <cstdio>
#include <optional>
#include <random>
#include <vector>

#include "example_support.hpp"

namespace {

using bf16 = __nv_bfloat16;

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = __float2bfloat16_rn(v[i]);
  return r;
}
float round_bf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// A user epilogue for the sparse experts: up = acc * gate[row, col] (gate: silu(x W1^T), bf16).
struct times_gate {
  const bf16* gate;
  std::int64_t ld;
  FRUGAL_HOST_DEVICE float operator()(float acc, std::int64_t row, std::int64_t col, int) const {
    return acc * frugal::to_float(gate[row * ld + col]);
  }
};

// W [rows, k] (host fp32 bf16 values) pruned to Pattern: the compressed form on the device and the
// masked dense weight on the host (the reference's).
template <class Pattern>
struct sparse_weights {
  examples::device_array<bf16> values;
  examples::device_array<std::uint32_t> indices;
  std::vector<float> masked;
  std::int64_t ld_values, ld_indices;
  sparse_weights(const std::vector<float>& w, std::int64_t rows, std::int64_t k)
      : values(std::size_t(rows * Pattern::values_per_row(k))), indices(std::size_t(rows * Pattern::index_words_per_row(k))),
        masked(w.size()), ld_values(Pattern::values_per_row(k)), ld_indices(Pattern::index_words_per_row(k)) {
    examples::device_array<float> d_w(w);
    examples::device_array<frugal::sparse::nm_report> report(1);
    if (!frugal::sparse::nm_prune<Pattern>(d_w.data(), k, values.data(), ld_values, indices.data(), ld_indices,
                                           static_cast<std::uint8_t*>(nullptr), 0, report.data(), rows, k)
             .ok())
      std::exit(1);
    examples::check(cudaDeviceSynchronize(), "nm_prune");
    const auto v = values.download();
    const auto i = indices.download();
    frugal::sparse::nm_report host_report;
    frugal::reference::nm_decompress<Pattern>(v.data(), ld_values, i.data(), ld_indices, rows, k, masked.data(), k, host_report);
  }
  frugal::sparse::nm_weight<bf16> weight() const { return {values.data(), ld_values, indices.data(), ld_indices, 0, 0}; }
};

struct timer {
  cudaEvent_t start{}, stop{};
  bool on_gpu;
  explicit timer(bool gpu) : on_gpu(gpu) {
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
  }
  ~timer() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  // Runs a stage once for its result (on the GPU also a warm-up: module load, first touch of the
  // pages), then on the GPU times the mean of `repeats` more runs (every stage is idempotent).
  template <class F>
  void run(const char* stage, F&& f) {
    f();
    if (!on_gpu) return;
    constexpr int repeats = 20;
    cudaEventRecord(start);
    for (int i = 0; i < repeats; ++i) f();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    std::printf("    %-8s %8.1f us (mean of %d warm runs)\n", stage, double(ms) * 1e3 / repeats, repeats);
  }
};

// Pattern void: dense experts; nm<N, M>: N:M-sparse experts.
template <class Gate, class Pattern = void>
bool run_layer(const char* name, int tokens, int hidden, int ffn, const frugal::moe::route_params& route_params, bool on_gpu) {
  constexpr bool sparse = !std::is_void_v<Pattern>;
  constexpr int E = Gate::experts, K = Gate::k;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // Inputs and weights as bf16 values (the reference uses exactly these).
  std::vector<float> x(std::size_t(tokens) * hidden), router(std::size_t(E) * hidden), w13(std::size_t(E) * 2 * ffn * hidden),
      w2(std::size_t(E) * hidden * ffn);
  for (auto& v : x) v = round_bf16(normal(rng));
  for (auto& v : router) v = normal(rng) / std::sqrt(float(hidden));
  for (auto& v : w13) v = round_bf16(normal(rng) / std::sqrt(float(hidden)));  // row 2f: W1 (gate) f, row 2f + 1: W3 (up) f
  for (auto& v : w2) v = round_bf16(normal(rng) / std::sqrt(float(ffn)));
  // Router logits on the host (the router GEMM is not the point here).
  std::vector<float> logits(std::size_t(tokens) * E);
  for (int t = 0; t < tokens; ++t)
    for (int e = 0; e < E; ++e) {
      double s = 0;
      for (int h = 0; h < hidden; ++h) s += double(x[std::size_t(t) * hidden + h]) * router[std::size_t(e) * hidden + h];
      logits[std::size_t(t) * E + e] = float(s);
    }

  frugal::moe::plan_params plan_params;  // dropless; the grouped GEMM reads counts, so no padding is needed
  const std::int64_t rows = frugal::moe::plan_max_rows(tokens, K, E, plan_params);
  examples::device_array<bf16> d_x(to_bf16(x)), d_w13(to_bf16(w13)), d_w2(to_bf16(w2)), d_permuted(std::size_t(rows) * hidden),
      d_hidden(std::size_t(rows) * ffn), d_expert_out(std::size_t(rows) * hidden);
  examples::device_array<float> d_x32(x), d_logits(logits), d_weights(std::size_t(tokens) * K), d_out(std::size_t(tokens) * hidden);
  examples::device_array<std::int32_t> d_ids(std::size_t(tokens) * K), d_counts(E), d_offsets(E + 1), d_slot_to_row(std::size_t(tokens) * K),
      d_row_to_slot(static_cast<std::size_t>(rows)), d_total_rows(1);
  std::size_t bytes = 0;
  using examples::check;
  const frugal::moe::plan_shape plan_shape{tokens, K, E};
  check(frugal::moe::plan(nullptr, bytes, d_ids.data(), d_weights.data(), {}, plan_shape, plan_params), "plan size");
  examples::device_array<unsigned char> workspace(bytes);
  frugal::moe::plan_outputs plan_out;
  plan_out.counts = d_counts.data();
  plan_out.offsets = d_offsets.data();
  plan_out.slot_to_row = d_slot_to_row.data();
  plan_out.row_to_slot = d_row_to_slot.data();
  plan_out.total_rows = d_total_rows.data();  // permute and combine touch only the rows the plan used
  const frugal::moe::dispatch_shape dispatch{tokens, K, hidden, rows};
  // The experts' segments of the expert-major buffer, straight from the plan.
  frugal::gemm_groups<std::int32_t> experts;
  experts.offsets = d_offsets.data();
  experts.counts = d_counts.data();
  experts.groups = E;
  experts.rows = rows;

  // Sparse experts: W1 (the gate rows 2f of w13), W3 (the up rows 2f + 1) and W2 pruned on the device.
  std::vector<float> w1(std::size_t(E) * ffn * hidden), w3(w1.size());
  for (std::size_t r = 0; r < std::size_t(E) * ffn; ++r)
    for (int h = 0; h < hidden; ++h) {
      w1[r * hidden + h] = w13[(2 * r) * hidden + h];
      w3[r * hidden + h] = w13[(2 * r + 1) * hidden + h];
    }
  using pattern = std::conditional_t<sparse, Pattern, frugal::sparse::nm<2, 4>>;
  std::optional<sparse_weights<pattern>> s1, s3, s2;
  std::optional<examples::device_array<bf16>> d_gate;
  if constexpr (sparse) {
    s1.emplace(w1, std::int64_t(E) * ffn, hidden);
    s3.emplace(w3, std::int64_t(E) * ffn, hidden);
    s2.emplace(w2, std::int64_t(E) * hidden, ffn);
    d_gate.emplace(std::size_t(rows) * ffn);
    // The reference multiplies the masked weights.
    for (std::size_t r = 0; r < std::size_t(E) * ffn; ++r)
      for (int h = 0; h < hidden; ++h) {
        w13[(2 * r) * hidden + h] = s1->masked[r * hidden + h];
        w13[(2 * r + 1) * hidden + h] = s3->masked[r * hidden + h];
      }
    w2 = s2->masked;
  }

  std::printf("  %s: %d tokens, hidden %d, ffn %d, %d experts, top-%d\n", name, tokens, hidden, ffn, E, K);
  timer time(on_gpu);
  time.run("route", [&] {
    check(frugal::moe::route<Gate>(d_logits.data(), frugal::moe::route_outputs<>{d_ids.data(), d_weights.data()}, tokens, route_params),
          "route");
  });
  time.run("plan", [&] {
    check(frugal::moe::plan(workspace.data(), bytes, d_ids.data(), d_weights.data(), plan_out, plan_shape, plan_params), "plan");
  });
  time.run("permute", [&] {
    check(frugal::moe::permute(d_x.data(), frugal::moe::plan_maps(plan_out), d_permuted.data(), dispatch), "permute");
  });
  if constexpr (!sparse) {
    time.run("gate/up", [&] {  // hidden = silu(x W1^T) * (x W3^T), per expert
      check(frugal::grouped_gemm(frugal::row_major<const bf16>(d_permuted.data(), hidden), frugal::col_major<const bf16>(d_w13.data(), hidden),
                                 experts, frugal::row_major(d_hidden.data(), ffn), 2 * ffn, hidden, frugal::gated_epilogue<>{}),
            "gate/up grouped GEMM");
    });
    time.run("down", [&] {  // expert_out = hidden W2^T, per expert
      check(frugal::grouped_gemm(frugal::row_major<const bf16>(d_hidden.data(), ffn), frugal::col_major<const bf16>(d_w2.data(), ffn),
                                 experts, frugal::row_major(d_expert_out.data(), hidden), hidden, ffn),
            "down grouped GEMM");
    });
  } else {
    time.run("gate", [&] {  // gate = silu(x W1^T), per expert, on the sparse tensor cores
      frugal::linear_epilogue<> silu;
      silu.act = frugal::activation::silu;
      check(frugal::sparse::nm_grouped_linear<Pattern>(frugal::row_major<const bf16>(d_permuted.data(), hidden), s1->weight(), experts,
                                                       frugal::row_major(d_gate->data(), ffn), ffn, hidden, silu),
            "gate sparse grouped GEMM");
    });
    time.run("up", [&] {  // hidden = (x W3^T) * gate
      check(frugal::sparse::nm_grouped_linear<Pattern>(frugal::row_major<const bf16>(d_permuted.data(), hidden), s3->weight(), experts,
                                                       frugal::row_major(d_hidden.data(), ffn), ffn, hidden,
                                                       times_gate{d_gate->data(), ffn}),
            "up sparse grouped GEMM");
    });
    time.run("down", [&] {
      check(frugal::sparse::nm_grouped_linear<Pattern>(frugal::row_major<const bf16>(d_hidden.data(), ffn), s2->weight(), experts,
                                                       frugal::row_major(d_expert_out.data(), hidden), hidden, ffn),
            "down sparse grouped GEMM");
    });
  }
  time.run("combine", [&] {
    check(frugal::moe::combine(d_expert_out.data(), frugal::moe::plan_maps(plan_out), d_weights.data(), d_x32.data(), d_out.data(), dispatch),
          "combine");
  });
  examples::check(cudaDeviceSynchronize(), name);
  const auto out = d_out.download();

  // Host reference of the whole layer in double, rounding where the device stores bf16 (the
  // SwiGLU output and the expert output): out = x + sum_j w_j * W2_e (silu(W1_e x) * W3_e x).
  const auto ref = frugal::reference::route<Gate, float>(logits.data(), (const float*)nullptr, tokens, route_params);
  double worst = 0, scale = 0;
  std::vector<double> acc(static_cast<std::size_t>(hidden));
  std::vector<float> h(static_cast<std::size_t>(ffn));
  for (int t = 0; t < tokens; ++t) {
    const float* xt = &x[std::size_t(t) * hidden];
    for (int i = 0; i < hidden; ++i) acc[std::size_t(i)] = xt[i];
    for (int j = 0; j < K; ++j) {
      const int e = ref.ids[std::size_t(t) * K + j];
      const double w = ref.weights[std::size_t(t) * K + j];
      for (int f = 0; f < ffn; ++f) {
        double gate = 0, up = 0;
        for (int i = 0; i < hidden; ++i) {
          gate += double(w13[(std::size_t(e) * 2 * ffn + 2 * f) * hidden + i]) * xt[i];
          up += double(w13[(std::size_t(e) * 2 * ffn + 2 * f + 1) * hidden + i]) * xt[i];
        }
        // Sparse experts store the gate (bf16) and multiply it by up in the up GEMM's epilogue.
        h[std::size_t(f)] = sparse ? round_bf16(float(up) * round_bf16(float(gate / (1.0 + std::exp(-gate)))))
                                   : round_bf16(float(gate / (1.0 + std::exp(-gate)) * up));
      }
      for (int i = 0; i < hidden; ++i) {
        double y = 0;
        for (int f = 0; f < ffn; ++f) y += double(w2[(std::size_t(e) * hidden + i) * ffn + f]) * h[std::size_t(f)];
        acc[std::size_t(i)] += w * round_bf16(float(y));
      }
    }
    for (int i = 0; i < hidden; ++i) {
      worst = std::fmax(worst, std::fabs(out[std::size_t(t) * hidden + i] - acc[std::size_t(i)]));
      scale = std::fmax(scale, std::fabs(acc[std::size_t(i)]));
    }
  }
  // bf16 intermediates: the device's fp32 sums may round a value to the neighbouring bf16.
  const bool ok = worst <= 1e-2 * scale;
  std::printf("  %s: largest |out - reference| = %.2e of a largest |out| %.2f (tolerance 1e-2 relative)\n",
              ok ? "verified" : "MISMATCH", worst, scale);
  return ok;
}

}  // namespace

int main() {
  const bool gpu = examples::announce_mode("05_moe_layer");
#if defined(FRUGAL_HOST_SIMT)
  const bool on_gpu = false;
#else
  if (!gpu) return 77;
  const bool on_gpu = true;
#endif
  (void)gpu;
  using mixtral = frugal::moe::route_config<8, 2, frugal::moe::topk_softmax_scoring>;
  using deepseek = frugal::moe::route_config<64, 6, frugal::moe::sigmoid_scoring, 8, 3>;
  frugal::moe::route_params deepseek_params;
  deepseek_params.renormalize = true;
  deepseek_params.routed_scaling = 2.5f;
  bool ok = run_layer<mixtral>("Mixtral-like", 128, 64, 128, {}, on_gpu);
  ok = run_layer<deepseek>("DeepSeek-like", 128, 64, 32, deepseek_params, on_gpu) && ok;
  ok = run_layer<mixtral, frugal::sparse::nm<2, 4>>("Mixtral-like, 2:4 experts", 128, 64, 128, {}, on_gpu) && ok;
  ok = run_layer<deepseek, frugal::sparse::nm<2, 8>>("DeepSeek-like, 2:8 experts", 128, 64, 32, deepseek_params, on_gpu) && ok;
  std::printf("%s: four MoE layers (route, plan, permute, grouped GEMMs on tensor cores, dense and 2:4 / 2:8 sparse, combine) equal the "
              "host reference of the layer\n",
              ok ? "verified" : "MISMATCH");
  return ok ? 0 : 1;
}

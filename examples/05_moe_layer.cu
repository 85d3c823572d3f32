// SPDX-License-Identifier: Apache-2.0
// Example 5: a complete MoE layer from frugal's pieces, every stage frugal's own:
//   route -> plan -> permute -> grouped GEMM (gate/up + SwiGLU) -> grouped GEMM (down) -> combine
// for a Mixtral-like layer (8 experts, top-2 then softmax) and a DeepSeek-like one (64 experts,
// sigmoid with 8 groups keep 3, top-6, renormalised, x2.5), checked against a host reference of
// the whole layer. The expert FFN is y = W2 (silu(W1 x) * W3 x) in bf16 on the tensor cores
// (fp32 accumulation): W1 and W3 are stored interleaved row by row, so one grouped GEMM with the
// gated epilogue gives silu(W1 x) * W3 x directly. The grouped GEMMs read the plan's offsets and
// counts, so the plan needs no padding. On a GPU it also prints the time of each stage.
#include <frugal/core/launch.cuh>
#include <frugal/gemm/grouped_gemm.cuh>
#include <frugal/moe/combine.cuh>
#include <frugal/moe/device_route.cuh>
#include <frugal/moe/permute.cuh>
#include <frugal/moe/plan.cuh>
#include <frugal/reference/moe_route.hpp>

#include <cmath>
#include <cstdio>
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

template <class Gate>
bool run_layer(const char* name, int tokens, int hidden, int ffn, const frugal::moe::route_params& route_params, bool on_gpu) {
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
      d_row_to_slot(static_cast<std::size_t>(rows));
  std::size_t bytes = 0;
  auto check = [](frugal::status s, const char* what) {
    if (!s.ok()) {
      std::printf("%s failed: %s\n", what, s.message());
      std::exit(1);
    }
  };
  check(frugal::moe::plan(nullptr, bytes, d_ids.data(), d_weights.data(), tokens, K, E, plan_params, {}), "plan size");
  examples::device_array<unsigned char> workspace(bytes);
  frugal::moe::plan_outputs plan_out;
  plan_out.counts = d_counts.data();
  plan_out.offsets = d_offsets.data();
  plan_out.slot_to_row = d_slot_to_row.data();
  plan_out.row_to_slot = d_row_to_slot.data();
  // The experts' segments of the expert-major buffer, straight from the plan.
  frugal::gemm_groups<std::int32_t> experts;
  experts.offsets = d_offsets.data();
  experts.counts = d_counts.data();
  experts.groups = E;
  experts.rows = rows;

  std::printf("  %s: %d tokens, hidden %d, ffn %d, %d experts, top-%d\n", name, tokens, hidden, ffn, E, K);
  timer time(on_gpu);
  time.run("route", [&] {
    check(frugal::moe::route<Gate>(d_logits.data(), frugal::moe::route_outputs<>{d_ids.data(), d_weights.data()}, tokens, route_params),
          "route");
  });
  time.run("plan", [&] {
    check(frugal::moe::plan(workspace.data(), bytes, d_ids.data(), d_weights.data(), tokens, K, E, plan_params, plan_out), "plan");
  });
  time.run("permute", [&] {
    check(frugal::moe::permute(d_x.data(), tokens, hidden, K, d_row_to_slot.data(), d_slot_to_row.data(), rows, d_permuted.data()),
          "permute");
  });
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
  time.run("combine", [&] {
    check(frugal::moe::combine(d_expert_out.data(), rows, hidden, K, tokens, d_slot_to_row.data(), d_weights.data(),
                               (const float*)d_x32.data(), d_out.data()),
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
        h[std::size_t(f)] = round_bf16(float(gate / (1.0 + std::exp(-gate)) * up));
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
  std::printf("%s: two MoE layers (route, plan, permute, grouped GEMMs on tensor cores, combine) equal the host reference of the layer\n",
              ok ? "verified" : "MISMATCH");
  return ok ? 0 : 1;
}

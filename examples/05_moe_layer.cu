// SPDX-License-Identifier: Apache-2.0
// Example 5: a complete MoE layer from frugal's pieces:
//   route -> plan -> permute -> per-expert FFN -> combine (+ residual)
// for a Mixtral-like layer (8 experts, top-2 then softmax) and a DeepSeek-like one (64 experts,
// sigmoid with 8 groups keep 3, top-6, renormalised, x2.5), checked against a host reference of
// the whole layer. The FFN (y = W2 silu(W1 x)) is a plain per-expert linear kernel written here, one
// expert per segment of the plan's expert-major buffer (one thread per output: simple, not fast). On a GPU it also prints the time of
// each stage.
#include <frugal/core/launch.cuh>
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

constexpr int tile = 16;  // the M-tile the plan pads each expert's segment to

// out[row, n] = act(sum_h a[row, h] * w[e, n, h]) where e owns `row` in the plan (segments are
// contiguous, in expert order); padding rows give 0. One thread per output element: simple, not fast.
template <bool Silu>
__global__ void expert_linear(const float* a, const float* w, const int* offsets, const int* counts, int experts, int rows,
                              int in_features, int out_features, float* out) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= std::int64_t(rows) * out_features) return;
  const int row = int(i / out_features), col = int(i % out_features);
  int e = 0;
  while (e + 1 < experts && offsets[e + 1] <= row) ++e;
  float acc = 0.0f;
  if (row < offsets[e] + counts[e])
    for (int h = 0; h < in_features; ++h) acc += a[std::int64_t(row) * in_features + h] * w[(std::int64_t(e) * out_features + col) * in_features + h];
  out[i] = Silu ? acc / (1.0f + expf(-acc)) : acc;
}

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
  std::vector<float> x(std::size_t(tokens) * hidden), router(std::size_t(E) * hidden), w1(std::size_t(E) * ffn * hidden),
      w2(std::size_t(E) * hidden * ffn);
  for (auto& v : x) v = normal(rng);
  for (auto& v : router) v = normal(rng) / std::sqrt(float(hidden));
  for (auto& v : w1) v = normal(rng) / std::sqrt(float(hidden));
  for (auto& v : w2) v = normal(rng) / std::sqrt(float(ffn));
  // Router logits on the host (the router GEMM is not the point here).
  std::vector<float> logits(std::size_t(tokens) * E);
  for (int t = 0; t < tokens; ++t)
    for (int e = 0; e < E; ++e) {
      double s = 0;
      for (int h = 0; h < hidden; ++h) s += double(x[std::size_t(t) * hidden + h]) * router[std::size_t(e) * hidden + h];
      logits[std::size_t(t) * E + e] = float(s);
    }

  frugal::moe::plan_params plan_params;  // dropless, segments padded to the GEMM tile
  plan_params.block_size = tile;
  const std::int64_t rows = frugal::moe::plan_max_rows(tokens, K, E, plan_params);
  examples::device_array<float> d_x(x), d_logits(logits), d_w1(w1), d_w2(w2), d_weights(std::size_t(tokens) * K),
      d_permuted(std::size_t(rows) * hidden), d_hidden(std::size_t(rows) * ffn), d_expert_out(std::size_t(rows) * hidden),
      d_out(std::size_t(tokens) * hidden);
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
  auto grid_of = [](std::int64_t n) { return dim3(unsigned((n + 255) / 256)); };
  time.run("ffn", [&] {
    check(frugal::launch(expert_linear<true>, frugal::launch_config{grid_of(rows * ffn), dim3(256)}, (const float*)d_permuted.data(),
                         (const float*)d_w1.data(), (const int*)d_offsets.data(), (const int*)d_counts.data(), E, int(rows), hidden,
                         ffn, d_hidden.data()),
          "ffn up");
    check(frugal::launch(expert_linear<false>, frugal::launch_config{grid_of(rows * hidden), dim3(256)}, (const float*)d_hidden.data(),
                         (const float*)d_w2.data(), (const int*)d_offsets.data(), (const int*)d_counts.data(), E, int(rows), ffn,
                         hidden, d_expert_out.data()),
          "ffn down");
  });
  time.run("combine", [&] {
    check(frugal::moe::combine(d_expert_out.data(), rows, hidden, K, tokens, d_slot_to_row.data(), d_weights.data(),
                               (const float*)d_x.data(), d_out.data()),
          "combine");
  });
  examples::check(cudaDeviceSynchronize(), name);
  const auto out = d_out.download();

  // Host reference of the whole layer, in double: out = x + sum_j w_j * W2_e silu(W1_e x).
  const auto ref = frugal::reference::route<Gate, float>(logits.data(), (const float*)nullptr, tokens, route_params);
  double worst = 0, scale = 0;
  std::vector<double> acc(static_cast<std::size_t>(hidden));
  for (int t = 0; t < tokens; ++t) {
    const float* xt = &x[std::size_t(t) * hidden];
    for (int h = 0; h < hidden; ++h) acc[std::size_t(h)] = xt[h];
    for (int j = 0; j < K; ++j) {
      const int e = ref.ids[std::size_t(t) * K + j];
      const double w = ref.weights[std::size_t(t) * K + j];
      for (int f = 0; f < ffn; ++f) {
        double z = 0;
        for (int i = 0; i < hidden; ++i) z += double(w1[(std::size_t(e) * ffn + f) * hidden + i]) * xt[i];
        const double silu = z / (1.0 + std::exp(-z));
        for (int h = 0; h < hidden; ++h) acc[std::size_t(h)] += w * double(w2[(std::size_t(e) * hidden + h) * ffn + f]) * silu;
      }
    }
    for (int h = 0; h < hidden; ++h) {
      worst = std::fmax(worst, std::fabs(out[std::size_t(t) * hidden + h] - acc[std::size_t(h)]));
      scale = std::fmax(scale, std::fabs(acc[std::size_t(h)]));
    }
  }
  const bool ok = worst <= 1e-4 * scale;
  std::printf("  %s: largest |out - reference| = %.2e of a largest |out| %.2f (tolerance 1e-4 relative)\n",
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
  std::printf("%s: two MoE layers (route, plan, permute, FFN, combine) equal the host reference of the layer\n",
              ok ? "verified" : "MISMATCH");
  return ok ? 0 : 1;
}

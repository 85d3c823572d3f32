// SPDX-License-Identifier: Apache-2.0
// Example 3: routing composed inside your own kernel, with your own scoring function.
//
// A router layer as one kernel: each warp computes its token's 64 router logits (x . W_e) into
// shared memory, then frugal::moe::warp_route scores them with a user-defined functor
// (a tempered sigmoid), picks the top 4 and renormalises the weights. The logits never go to
// global memory. Checked against frugal::reference::route on the same logits.
#include <frugal/core/launch.cuh>
#include <frugal/moe/warp_route.cuh>
#include <frugal/reference/moe_route.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "example_support.hpp"

// Your scoring function: s = sigmoid(x / 2). `monotone` lets frugal select on the logits
// directly; `derivative` is what frugal::moe::route_backward would use.
struct tempered_sigmoid {
  static constexpr bool monotone = true;
  static constexpr const char* name = "tempered_sigmoid";
  template <class R>
  FRUGAL_HOST_DEVICE R operator()(R x) const {
    return frugal::moe::sigmoid_scoring{}(x / R(2));
  }
  template <class R>
  FRUGAL_HOST_DEVICE R derivative(R, R s) const {
    return s * (R(1) - s) / R(2);
  }
};

constexpr int hidden = 64, experts = 64, top_k = 4, warps_per_block = 4;
using router = frugal::moe::route_config<experts, top_k, tempered_sigmoid>;

__global__ void router_layer(const float* x, const float* w, int tokens, int* ids, float* weights) {
  __shared__ __align__(16) float logits[warps_per_block][experts];  // warp_route loads 16 bytes at a time
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  const int token = int(blockIdx.x) * warps_per_block + warp;
  const bool active = token < tokens;  // every lane still joins the warp collectives
  for (int e = lane; e < experts; e += 32) {
    float acc = 0.0f;
    for (int h = 0; active && h < hidden; ++h) acc += x[token * hidden + h] * w[e * hidden + h];
    logits[warp][e] = acc;
  }
  __syncwarp();
  frugal::moe::route_params params;
  params.renormalize = true;
  bool degenerate = false;
  const frugal::moe::route_slot slot =
      frugal::moe::warp_route<router>(&logits[warp][0], nullptr, token, active, params, degenerate);
  if (active && lane < top_k) {
    ids[token * top_k + lane] = slot.expert;
    weights[token * top_k + lane] = slot.weight;
  }
}

int main() {
  if (!examples::announce_mode("03_fused_router")) return 77;
  const int tokens = 500;
  // Small multiples of 1/4: every product and sum is exact in fp32, so the host logits equal the
  // kernel's bit for bit and the ids can be compared exactly.
  std::mt19937 rng(3);
  std::vector<float> x(std::size_t(tokens) * hidden), w(std::size_t(experts) * hidden);
  for (auto& v : x) v = float(int(rng() % 9) - 4) * 0.25f;
  for (auto& v : w) v = float(int(rng() % 5) - 2) * 0.25f;

  examples::device_array<float> d_x(x), d_w(w), d_weights(std::size_t(tokens) * top_k);
  examples::device_array<int> d_ids(std::size_t(tokens) * top_k);
  const frugal::launch_config config{dim3((tokens + warps_per_block - 1) / warps_per_block), dim3(32 * warps_per_block)};
  examples::check(frugal::launch(router_layer, config, d_x.data(), d_w.data(), tokens, d_ids.data(), d_weights.data()).cuda_error(),
                  "router_layer launch");
  examples::check(cudaDeviceSynchronize(), "router_layer");
  const auto ids = d_ids.download();
  const auto weights = d_weights.download();

  std::vector<float> logits(std::size_t(tokens) * experts);
  for (int t = 0; t < tokens; ++t)
    for (int e = 0; e < experts; ++e) {
      float acc = 0.0f;
      for (int h = 0; h < hidden; ++h) acc += x[std::size_t(t) * hidden + h] * w[std::size_t(e) * hidden + h];
      logits[std::size_t(t) * experts + e] = acc;
    }
  frugal::moe::route_params params;
  params.renormalize = true;
  const auto ref = frugal::reference::route<router, float>(logits.data(), (const float*)nullptr, tokens, params);
  int wrong = 0;
  double worst = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    wrong += ids[i] != ref.ids[i];
    worst = std::fmax(worst, std::fabs(weights[i] - ref.weights[i]));
  }
  const bool ok = wrong == 0 && worst < 1e-5;
  std::printf("token 0: experts %d %d %d %d, weights %.4f %.4f %.4f %.4f\n", ids[0], ids[1], ids[2], ids[3], weights[0],
              weights[1], weights[2], weights[3]);
  std::printf("%s: %d tokens routed inside a user kernel; ids equal the reference, weights within %.1e (tolerance 1e-5)\n",
              ok ? "verified" : "MISMATCH", tokens, worst);
  return ok ? 0 : 1;
}

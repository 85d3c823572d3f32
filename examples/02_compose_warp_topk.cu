// SPDX-License-Identifier: Apache-2.0
// Example 2: composing frugal's device functions inside your own kernel.
//
// A Mixtral-style gate written by a user: per token (one warp), softmax over 64 expert logits
// with frugal::warp_max / warp_sum, top-2 with frugal::warp_topk on frugal's ordered keys, then
// the two probabilities renormalised to sum to 1. Checked against a plain C++ version.
#include <frugal/core/launch.cuh>
#include <frugal/core/ordered_key.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/topk/warp_topk.cuh>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "example_support.hpp"

constexpr int experts = 64, top_k = 2, items_per_lane = experts / 32;

__global__ void my_gate(const float* logits, int tokens, int* ids, float* weights) {
  const int token = int(blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32);
  const int lane = int(threadIdx.x % 32);
  if (token >= tokens) return;  // whole warps leave together
  float x[items_per_lane];
  float row_max = -INFINITY;
  for (int i = 0; i < items_per_lane; ++i) {
    x[i] = logits[token * experts + i * 32 + lane];
    row_max = fmaxf(row_max, x[i]);
  }
  row_max = frugal::warp_max(row_max);
  float sum = 0.0f;
  for (int i = 0; i < items_per_lane; ++i) sum += expf(x[i] - row_max);
  sum = frugal::warp_sum(sum);

  frugal::topk_key keys[items_per_lane];
  for (int i = 0; i < items_per_lane; ++i) keys[i] = frugal::make_topk_key(x[i], std::uint32_t(i * 32 + lane));
  const frugal::topk_key mine = frugal::warp_topk(keys, top_k);  // lane r holds the r-th best

  // Softmax is monotone, so the top-2 logits are the top-2 probabilities.
  const float p = lane < top_k ? expf(frugal::topk_key_value(mine) - row_max) / sum : 0.0f;
  const float kept = frugal::warp_sum(p);
  if (lane < top_k) {
    ids[token * top_k + lane] = int(frugal::topk_key_index(mine));
    weights[token * top_k + lane] = p / kept;
  }
}

int main() {
  if (!examples::announce_mode("02_compose_warp_topk")) return 77;
  const int tokens = 1000;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(std::size_t(tokens) * experts);
  for (auto& v : logits) v = normal(rng);

  examples::device_array<float> d_logits(logits), d_weights(std::size_t(tokens) * top_k);
  examples::device_array<int> d_ids(std::size_t(tokens) * top_k);
  const int warps_per_block = 4;
  const frugal::status s = frugal::launch(my_gate, frugal::launch_config{dim3((tokens + warps_per_block - 1) / warps_per_block),
                                                                         dim3(32 * warps_per_block)},
                                          d_logits.data(), tokens, d_ids.data(), d_weights.data());
  examples::check(s.cuda_error(), "my_gate launch");
  examples::check(cudaDeviceSynchronize(), "my_gate");
  const auto ids = d_ids.download();
  const auto weights = d_weights.download();

  int wrong = 0;
  double worst = 0;
  for (int t = 0; t < tokens; ++t) {
    const float* row = &logits[std::size_t(t) * experts];
    int a = 0;
    for (int e = 1; e < experts; ++e) a = row[e] > row[a] ? e : a;
    int b = a == 0 ? 1 : 0;
    for (int e = 0; e < experts; ++e) b = e != a && row[e] > row[b] ? e : b;
    const double wa = 1.0 / (1.0 + std::exp(double(row[b]) - row[a]));
    wrong += ids[t * 2] != a || ids[t * 2 + 1] != b;
    worst = std::fmax(worst, std::fabs(weights[t * 2] - wa));
    worst = std::fmax(worst, std::fabs(weights[t * 2 + 1] - (1.0 - wa)));
  }
  const bool ok = wrong == 0 && worst < 1e-5;
  std::printf("token 0: experts %d, %d with weights %.5f, %.5f\n", ids[0], ids[1], weights[0], weights[1]);
  std::printf("%s: %d tokens, ids exact, weights within %.1e of the fp64 reference (tolerance 1e-5)\n",
              ok ? "verified" : "MISMATCH", tokens, worst);
  return ok ? 0 : 1;
}

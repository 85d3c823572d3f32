// SPDX-License-Identifier: Apache-2.0
// Example 6: a DeepSeek-V3 gate inside your own kernel, its sigmoid scores read from a table.
//
// With a selection bias every logit's score is needed, and the exact sigmoid (an expf and a
// division) is most of a token's work. A bf16 logit has few enough values that a block can keep
// the sigmoid of nearly all of them: frugal::moe::bf16_score_table holds 8192 of them (32 KB of
// shared memory), filled once by the block with the sigmoid itself, so a lookup gives the same
// bits. This kernel fills one table per block, then each warp routes one token after another
// through warp_route with it. Rows include zeros, infinities and a NaN, which lie outside the
// table and are scored by the formula. The result must equal frugal::moe::route bit for bit.
#include <frugal/core/launch.cuh>
#include <frugal/moe/device_route.cuh>
#include <frugal/moe/warp_route.cuh>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "example_support.hpp"

using gate = frugal::moe::route_config<256, 8, frugal::moe::sigmoid_scoring, /*groups*/ 8, /*kept groups*/ 4>;
constexpr int warps_per_block = 8;

__global__ void gate_kernel(const __nv_bfloat16* logits, int tokens, frugal::moe::route_params params, int* ids,
                            float* weights) {
  using table_t = frugal::moe::bf16_score_table<gate::scoring>;
  __shared__ table_t::TempStorage storage;
  const table_t table(storage);
  table.fill();  // every thread of the block, once; then any warp may read it
  constexpr int V = frugal::moe::route_vector_width<gate, __nv_bfloat16>();  // 8 bf16: 16-byte loads
  const int lane = int(threadIdx.x % 32);
  // One token per warp at a time; `token` is the same in every lane, as warp_route requires.
  for (int token = int(blockIdx.x) * warps_per_block + int(threadIdx.x / 32); token < tokens;
       token += int(gridDim.x) * warps_per_block) {
    bool degenerate = false;
    const frugal::moe::route_slot slot = frugal::moe::warp_route<gate, V>(
        logits + std::size_t(token) * gate::experts, (const __nv_bfloat16*)nullptr, token, true, params, degenerate, table);
    if (lane < gate::k) {
      ids[token * gate::k + lane] = slot.expert;
      weights[token * gate::k + lane] = slot.weight;
    }
  }
}

int main() {
  if (!examples::announce_mode("06_gate_score_table")) return 77;
  const int tokens = 3000;
  constexpr int E = gate::experts, K = gate::k;
  std::mt19937 rng(6);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<__nv_bfloat16> logits(std::size_t(tokens) * E);
  for (auto& x : logits) x = __float2bfloat16(normal(rng));
  logits[5] = __float2bfloat16(0.0f);  // outside the table: |x| < 2^-27
  logits[E + 9] = __float2bfloat16(INFINITY);
  logits[2 * E + 100] = __float2bfloat16(NAN);
  logits[3 * E + 7] = __float2bfloat16(-40.0f);  // outside the table: |x| >= 32
  std::vector<float> bias(E);
  for (auto& b : bias) b = 0.01f * normal(rng);

  examples::device_array<__nv_bfloat16> d_logits(logits);
  examples::device_array<float> d_bias(bias), d_weights(std::size_t(tokens) * K), d_route_weights(std::size_t(tokens) * K);
  examples::device_array<int> d_ids(std::size_t(tokens) * K), d_route_ids(std::size_t(tokens) * K);
  frugal::moe::route_params params;
  params.selection_bias = d_bias.data();
  params.renormalize = true;
  params.routed_scaling = 2.5f;

  const frugal::launch_config config{dim3(16), dim3(32 * warps_per_block)};
  examples::check(frugal::launch(gate_kernel, config, d_logits.data(), tokens, params, d_ids.data(), d_weights.data()).cuda_error(),
                  "gate_kernel launch");
  // route() at this T takes a kernel without the table on a large GPU (it uses one only where
  // each resident block routes 64 tokens): the comparison is with scores computed.
  const frugal::moe::route_outputs<> out{d_route_ids.data(), d_route_weights.data()};
  examples::check(frugal::moe::route<gate>(d_logits.data(), out, tokens, params).cuda_error(), "route");
  examples::check(cudaDeviceSynchronize(), "gate_kernel and route");

  const auto ids = d_ids.download(), route_ids = d_route_ids.download();
  const auto weights = d_weights.download(), route_weights = d_route_weights.download();
  const bool same_ids = ids == route_ids;
  const bool same_weights = std::memcmp(weights.data(), route_weights.data(), weights.size() * sizeof(float)) == 0;
  std::printf("token 0: experts %d %d %d %d %d %d %d %d, weights sum %.4f (renormalised, x2.5)\n", ids[0], ids[1], ids[2],
              ids[3], ids[4], ids[5], ids[6], ids[7],
              weights[0] + weights[1] + weights[2] + weights[3] + weights[4] + weights[5] + weights[6] + weights[7]);
  const bool ok = same_ids && same_weights;
  std::printf("%s: %d tokens routed in a user kernel with scores from the block's table; ids %s and weights %s "
              "frugal::moe::route, bit for bit\n",
              ok ? "verified" : "MISMATCH", tokens, same_ids ? "equal" : "differ from", same_weights ? "equal" : "differ from");
  return ok ? 0 : 1;
}

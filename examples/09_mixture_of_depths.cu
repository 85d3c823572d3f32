// SPDX-License-Identifier: Apache-2.0
// Example 9: mixture-of-depths (Raposo et al. 2024), conditional computation beyond MoE.
//
// A block that only some tokens pass through: a router gives each token one logit, expert
// choice with a single expert takes the top-capacity tokens (12.5% of them here), permute
// gathers their rows, the block (an MLP, two GEMMs on the tensor cores) runs on those rows only,
// and combine scatters w * block(x) back onto the residual stream; every other token passes
// through unchanged. All frugal: gemm, route_expert_choice, permute, combine_expert_choice.
// Verified against a host reference of the whole layer; the compute saved is printed.
#include <frugal/gemm/device_gemm.cuh>
#include <frugal/moe/combine.cuh>
#include <frugal/moe/expert_choice.cuh>
#include <frugal/moe/permute.cuh>
#include <frugal/reference/moe_expert_choice.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "example_support.hpp"

using bf16 = __nv_bfloat16;

namespace {

constexpr int tokens = 512, hidden = 64, ffn = 256, capacity = tokens / 8;  // 12.5% of the tokens
using depth_router = frugal::moe::expert_choice_config<1, frugal::moe::sigmoid_scoring>;  // one "expert": the block

float round_bf16(double v) { return frugal::to_float(frugal::from_float<bf16>(float(v))); }

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = frugal::from_float<bf16>(v[i]);
  return out;
}

using examples::check;

}  // namespace

int main() {
  if (!examples::announce_mode("09_mixture_of_depths")) return 77;
  // Values on small grids (multiples of 1/4 and 1/16), exact in bf16, so the router logits are
  // exact in fp32 whatever the order of the sums, and the chosen tokens match the reference.
  std::mt19937 rng(9);
  std::vector<float> x(std::size_t(tokens) * hidden), w_router(hidden), w1(std::size_t(ffn) * hidden), w2(std::size_t(hidden) * ffn);
  for (auto& v : x) v = float(int(rng() % 9) - 4) * 0.25f;
  for (auto& v : w_router) v = float(int(rng() % 9) - 4) * 0.0625f;
  for (auto& v : w1) v = float(int(rng() % 9) - 4) * 0.0625f;
  for (auto& v : w2) v = float(int(rng() % 9) - 4) * 0.0625f;

  examples::device_array<bf16> d_x(to_bf16(x)), d_router(to_bf16(w_router)), d_w1(to_bf16(w1)), d_w2(to_bf16(w2)),
      d_gathered(std::size_t(capacity) * hidden), d_hidden(std::size_t(capacity) * ffn), d_block(std::size_t(capacity) * hidden),
      d_out(std::size_t(tokens) * hidden);
  examples::device_array<float> d_logits(tokens), d_weights(capacity);
  examples::device_array<std::int32_t> d_token_ids(capacity);

  // 1. Router: one logit per token, logits [T, 1] = x [T, H] w_router^T.
  check(frugal::gemm(frugal::row_major<const bf16>(d_x.data(), hidden), frugal::col_major<const bf16>(d_router.data(), hidden),
                     frugal::row_major(d_logits.data(), 1), tokens, 1, hidden),
        "router GEMM");
  // 2. The block takes the top-`capacity` tokens by sigmoid(logit), in token order. One shape
  //    serves the expert-choice way there and back.
  const frugal::moe::expert_choice_shape shape{tokens, 1, capacity, hidden};
  std::size_t bytes = 0;
  check(frugal::moe::route_expert_choice<depth_router>(nullptr, bytes, d_logits.data(), {}, shape), "expert choice size");
  examples::device_array<unsigned char> workspace(bytes);
  check(frugal::moe::route_expert_choice<depth_router>(workspace.data(), bytes, d_logits.data(),
                                                       frugal::moe::expert_choice_outputs{d_token_ids.data(), d_weights.data()}, shape),
        "expert choice");
  // 3. Gather the chosen rows (k = 1: a slot is a token).
  check(frugal::moe::permute(d_x.data(), frugal::moe::dispatch_maps{d_token_ids.data(), nullptr}, d_gathered.data(),
                             frugal::moe::dispatch_shape{tokens, 1, hidden, capacity}),
        "permute");
  // 4. The block on `capacity` rows: h = relu(g W1^T), b = h W2^T.
  frugal::linear_epilogue<> relu;
  relu.act = frugal::activation::relu;
  check(frugal::gemm(frugal::row_major<const bf16>(d_gathered.data(), hidden), frugal::col_major<const bf16>(d_w1.data(), hidden),
                     frugal::row_major(d_hidden.data(), ffn), capacity, ffn, hidden, relu),
        "block GEMM 1");
  check(frugal::gemm(frugal::row_major<const bf16>(d_hidden.data(), ffn), frugal::col_major<const bf16>(d_w2.data(), ffn),
                     frugal::row_major(d_block.data(), hidden), capacity, hidden, ffn),
        "block GEMM 2");
  // 5. out[t] = x[t] + w_t * block(x[t]) for the chosen tokens, x[t] for the others.
  check(frugal::moe::combine_expert_choice(d_block.data(), d_token_ids.data(), d_weights.data(), d_x.data(), d_out.data(), shape),
        "combine");
  examples::check(cudaDeviceSynchronize(), "mixture-of-depths layer");
  const auto out = d_out.download();
  const auto chosen = d_token_ids.download();

  // Host reference: the same logits (exact), the same choice (frugal::reference::expert_choice),
  // the block in double rounded to bf16 where the device stores bf16.
  std::vector<float> logits(tokens);
  for (int t = 0; t < tokens; ++t) {
    double s = 0.0;
    for (int h = 0; h < hidden; ++h) s += double(x[std::size_t(t) * hidden + h]) * w_router[std::size_t(h)];
    logits[std::size_t(t)] = float(s);
  }
  const auto ref = frugal::reference::expert_choice<depth_router>(logits.data(), tokens, capacity, frugal::moe::route_params{});
  int wrong_choice = 0;
  for (int j = 0; j < capacity; ++j) wrong_choice += chosen[std::size_t(j)] != ref.token_ids[std::size_t(j)];
  std::vector<double> want(x.begin(), x.end());
  for (int j = 0; j < capacity; ++j) {
    const int t = ref.token_ids[std::size_t(j)];
    std::vector<double> h(ffn);
    for (int f = 0; f < ffn; ++f) {
      double s = 0.0;
      for (int i = 0; i < hidden; ++i) s += double(x[std::size_t(t) * hidden + i]) * w1[std::size_t(f) * hidden + i];
      h[std::size_t(f)] = round_bf16(s > 0.0 ? s : 0.0);
    }
    for (int i = 0; i < hidden; ++i) {
      double s = 0.0;
      for (int f = 0; f < ffn; ++f) s += h[std::size_t(f)] * w2[std::size_t(i) * ffn + f];
      want[std::size_t(t) * hidden + i] += double(ref.weights[std::size_t(j)]) * round_bf16(s);
    }
  }
  double worst = 0.0;
  int unchanged = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double got = frugal::to_float(out[i]);
    worst = std::fmax(worst, std::fabs(got - want[i]) / (std::fabs(want[i]) + 1.0));
  }
  for (int t = 0; t < tokens; ++t) {
    bool same = true;
    for (int i = 0; i < hidden; ++i) same = same && frugal::to_float(out[std::size_t(t) * hidden + i]) == x[std::size_t(t) * hidden + i];
    unchanged += same;
  }
  const double block_flops = 2.0 * 2.0 * double(hidden) * ffn;  // per token: two GEMMs
  std::printf("the block ran on %d of %d tokens: %.1f of %.1f MFLOP (%.1f%% of a dense layer's block compute); %d tokens passed through unchanged\n",
              capacity, tokens, block_flops * capacity * 1e-6, block_flops * tokens * 1e-6, 100.0 * capacity / tokens, unchanged);
  const bool ok = wrong_choice == 0 && worst < 1e-2 && unchanged >= tokens - capacity;
  std::printf("%s: chosen tokens equal the reference (%d differ); outputs within %.1e relative of the reference (tolerance 1e-2, bf16)\n",
              ok ? "verified" : "MISMATCH", wrong_choice, worst);
  return ok ? 0 : 1;
}

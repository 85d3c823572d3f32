// SPDX-License-Identifier: Apache-2.0
// Example 4: a DeepSeek-V3 gate through the device-wide entry points, forward and training side.
//
// 256 experts, sigmoid scores, a selection bias, 8 groups of which the best 4 (by the sum of
// their top-2 biased scores) are kept, top-8, renormalised and scaled by 2.5. Then the training
// side: expert loads, the aux-loss-free bias update, the router z-loss and the gate's backward
// with the z-loss gradient accumulated into the same buffer. Ids are checked against the host
// reference, the gradient against the fp64 reference backward.
#include <frugal/moe/balance.cuh>
#include <frugal/moe/device_route.cuh>
#include <frugal/moe/route_backward.cuh>
#include <frugal/reference/moe_balance.hpp>
#include <frugal/reference/moe_route.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "example_support.hpp"

using gate = frugal::moe::route_config<256, 8, frugal::moe::sigmoid_scoring, /*groups*/ 8, /*kept groups*/ 4>;

int main() {
  if (!examples::announce_mode("04_deepseek_gate")) return 77;
  const std::int64_t tokens = 2048;
  constexpr int E = gate::experts, K = gate::k;
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<__nv_bfloat16> logits(std::size_t(tokens) * E);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = __float2bfloat16(normal(rng) + (i % E == 17 ? 1.5f : 0.0f));
  std::vector<float> bias(E, 0.0f);

  examples::device_array<__nv_bfloat16> d_logits(logits);
  examples::device_array<float> d_bias(bias), d_weights(std::size_t(tokens) * K), d_loss(1), d_grad(std::size_t(tokens) * E);
  examples::device_array<std::int32_t> d_ids(std::size_t(tokens) * K), d_counts(E);

  frugal::moe::route_params params;
  params.selection_bias = d_bias.data();
  params.renormalize = true;
  params.routed_scaling = 2.5f;
  using examples::check;
  const frugal::moe::route_outputs<> out{d_ids.data(), d_weights.data()};
  check(frugal::moe::route<gate>(d_logits.data(), out, tokens, params), "route");
  check(frugal::moe::expert_counts<gate>(d_ids.data(), d_counts.data(), tokens), "expert_counts");
  const auto before = d_counts.download();
  check(frugal::moe::update_selection_bias(d_counts.data(), d_bias.data(), E, 1e-3f), "update_selection_bias");
  check(frugal::moe::route<gate>(d_logits.data(), out, tokens, params), "route after the update");
  check(frugal::moe::expert_counts<gate>(d_ids.data(), d_counts.data(), tokens), "expert_counts");
  const auto after = d_counts.download();

  // Training: d weights as an upstream layer would give them, then the z-loss on top.
  std::vector<float> dweights(std::size_t(tokens) * K);
  for (auto& v : dweights) v = normal(rng);
  examples::device_array<float> d_dweights(dweights);
  check(frugal::moe::route_backward<gate>(d_logits.data(), d_ids.data(), d_dweights.data(), d_grad.data(), tokens, params),
        "route_backward");
  check(frugal::moe::router_z_loss_backward<gate>(d_logits.data(), d_grad.data(), tokens, 1e-3f, {}, /*accumulate=*/true),
        "router_z_loss_backward");
  std::size_t bytes = 0;
  check(frugal::moe::router_z_loss<gate>(nullptr, bytes, d_logits.data(), d_loss.data(), tokens, 1e-3f), "z-loss size");
  examples::device_array<unsigned char> workspace(bytes);
  check(frugal::moe::router_z_loss<gate>(workspace.data(), bytes, d_logits.data(), d_loss.data(), tokens, 1e-3f), "router_z_loss");
  examples::check(cudaDeviceSynchronize(), "gate");

  // Host reference with the updated bias.
  const auto host_bias = d_bias.download();
  frugal::moe::route_params host_params = params;
  host_params.selection_bias = host_bias.data();
  const auto ref = frugal::reference::route<gate, float>(logits.data(), (const __nv_bfloat16*)nullptr, tokens, host_params);
  const auto ids = d_ids.download();
  auto ref_grad = frugal::reference::route_backward<gate, double>(logits.data(), ids.data(), dweights.data(), tokens, host_params);
  const auto z_grad = frugal::reference::router_z_loss_backward<gate, double>(logits.data(), tokens, 1e-3f, {});
  const auto grad = d_grad.download();
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < grad.size(); ++i) {
    ref_grad[i] += z_grad[i];
    worst = std::fmax(worst, std::fabs(grad[i] - ref_grad[i]));
    scale = std::fmax(scale, std::fabs(ref_grad[i]));
  }
  const bool ids_ok = ids == ref.ids;
  const bool grad_ok = worst <= 1e-5 * scale;
  std::printf("expert 17 (a favoured expert) took %d slots before the bias update and %d after\n", before[17], after[17]);
  std::printf("z-loss %.6f; largest |d logit| %.4f\n", double(d_loss.download()[0]), scale);
  std::printf("%s: ids equal the reference; d logits within %.1e of the fp64 reference (tolerance 1e-5 of the largest)\n",
              ids_ok && grad_ok ? "verified" : "MISMATCH", scale > 0 ? worst / scale : worst);
  return ids_ok && grad_ok ? 0 : 1;
}

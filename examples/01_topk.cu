// SPDX-License-Identifier: Apache-2.0
// Example 1: the device-wide entry point. Top-8 of 256 router logits for 4096 tokens with
// frugal::topk, checked element for element against frugal::reference::topk.
//
// The same source builds with nvcc (runs on a GPU) and with the host compiler in host SIMT mode
// (runs on the CPU); the program says which.
#include <frugal/reference/topk.hpp>
#include <frugal/topk/device_topk.cuh>

#include <cstdio>
#include <random>
#include <vector>

#include "example_support.hpp"

int main() {
  if (!examples::announce_mode("01_topk")) return 77;
  const std::int64_t tokens = 4096;
  const int experts = 256, k = 8;

  // bf16 logits, as a router GEMM produces them; ties are likely and resolved to the lower index.
  std::mt19937 rng(2026);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<__nv_bfloat16> logits(std::size_t(tokens) * experts);
  for (auto& x : logits) x = __float2bfloat16(normal(rng));

  examples::device_array<__nv_bfloat16> d_logits(logits);
  examples::device_array<__nv_bfloat16> d_values(std::size_t(tokens) * k);
  examples::device_array<std::int32_t> d_ids(std::size_t(tokens) * k);

  const frugal::status s = frugal::topk(d_logits.data(), d_values.data(), d_ids.data(), tokens, experts, k);
  if (!s.ok()) {
    std::printf("frugal::topk failed: %s\n", s.message());
    return 1;
  }
  const auto ids = d_ids.download();
  const auto values = d_values.download();

  std::vector<__nv_bfloat16> ref_values(values.size());
  std::vector<std::int32_t> ref_ids(ids.size());
  frugal::reference::topk(logits.data(), ref_values.data(), ref_ids.data(), tokens, experts, k);

  std::printf("token 0: experts");
  for (int j = 0; j < k; ++j) std::printf(" %d(%.3f)", ids[j], __bfloat162float(values[j]));
  std::printf("\n");
  const bool ok = ids == ref_ids && examples::same_bits(values, ref_values);
  std::printf("%s: %lld tokens x %d experts, top-%d ids and values %s the host reference\n",
              ok ? "verified" : "MISMATCH", (long long)tokens, experts, k, ok ? "equal" : "differ from");
  return ok ? 0 : 1;
}

// SPDX-License-Identifier: Apache-2.0
// frugal::moe::route on the shapes of the routing targets: softmax top-8 of 256 experts, the
// DeepSeek-V3 gate (sigmoid, bias, 8 groups keep 4, top-8, renorm, x2.5), Mixtral (8 experts,
// top-2 then softmax) and 160 experts top-6; bf16 logits. Bytes for the floor: logits read once,
// int32 ids and fp32 weights written once. Peers: PyTorch eager and torch.compile on the same
// shapes (bench/peers/torch_route.py, same device-check run). route/deepseek_v3_each_kernel times
// each kernel of the warp path (batches, score table) on the gate, whichever route() would pick.
#include <frugal/moe/device_route.cuh>

#include "support/bench_support.cuh"

namespace {

template <class Config>
void BM_route(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  constexpr int E = Config::experts, K = Config::k;
  const std::int64_t tokens = state.range(0);
  const bool deepseek = state.range(1) != 0;
  // 0: route() chooses; otherwise the warp-path kernel to time (one by one, batched, each with
  // the score table), to check route()'s thresholds.
  const auto path = static_cast<frugal::moe::detail::route_warp_path>(state.range(2));
  const std::size_t logits_bytes = std::size_t(tokens) * E * sizeof(__nv_bfloat16);
  const int copies = frugal::bench::rotation_count(logits_bytes);
  frugal::bench::device_vector<__nv_bfloat16> logits(std::size_t(tokens) * E * copies);
  frugal::bench::device_vector<std::int32_t> ids(std::size_t(tokens) * K);
  frugal::bench::device_vector<float> weights(std::size_t(tokens) * K), bias(E);
  frugal::bench::fill_normal(logits.ptr, logits.count, 7);
  frugal::bench::fill_normal(bias.ptr, std::size_t(E), 8, 0.01f);
  frugal::moe::route_params params;
  if (deepseek) {
    params.selection_bias = bias.ptr;
    params.renormalize = true;
    params.routed_scaling = 2.5f;
  }
  const frugal::moe::route_outputs<> out{ids.ptr, weights.ptr};
  const double bytes = double(logits_bytes) + double(tokens) * K * 8.0;
  frugal::bench::time_launches(state, nullptr, bytes, [&](int it) {
    const __nv_bfloat16* in = logits.ptr + std::size_t(it % copies) * tokens * E;
    if (path == frugal::moe::detail::route_warp_path::automatic) return frugal::moe::route<Config>(in, out, tokens, params).ok();
    return frugal::moe::detail::launch_route_warp_path<Config>(frugal::moe::route_inputs<__nv_bfloat16>{in, nullptr}, out, tokens,
                                                             params, nullptr, path)
        .ok();
  });
}

void token_counts(benchmark::internal::Benchmark* b, int deepseek) {
  b->ArgNames({"tokens", "deepseek", "path"});
  for (std::int64_t t : {1, 64, 256, 4096, 16384, 65536, 262144}) b->Args({t, deepseek, 0});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

// Each warp-path kernel of the DeepSeek-V3 gate around route()'s thresholds (batches from 8448
// tokens on an H200, the score table where each resident block gets 64 tokens).
void each_path(benchmark::internal::Benchmark* b) {
  b->ArgNames({"tokens", "deepseek", "path"});
  using frugal::moe::detail::route_warp_path;
  for (std::int64_t t : {4096, 16384, 65536, 262144})
    for (auto p : {route_warp_path::one_by_one, route_warp_path::batched, route_warp_path::one_by_one_tabulated,
                   route_warp_path::batched_tabulated})
      b->Args({t, 1, std::int64_t(p)});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

using softmax_top8_of_256 = frugal::moe::route_config<256, 8>;
using deepseek_v3 = frugal::moe::route_config<256, 8, frugal::moe::sigmoid_scoring, 8, 4>;
using mixtral = frugal::moe::route_config<8, 2, frugal::moe::topk_softmax_scoring>;
using e160_top6 = frugal::moe::route_config<160, 6>;

}  // namespace

BENCHMARK(BM_route<softmax_top8_of_256>)->Name("route/softmax_top8_of_256")->Apply([](auto* b) { token_counts(b, 0); });
BENCHMARK(BM_route<deepseek_v3>)->Name("route/deepseek_v3_grouped_sigmoid")->Apply([](auto* b) { token_counts(b, 1); });
BENCHMARK(BM_route<deepseek_v3>)->Name("route/deepseek_v3_each_kernel")->Apply(each_path);
BENCHMARK(BM_route<mixtral>)->Name("route/mixtral_top2_of_8")->Apply([](auto* b) { token_counts(b, 0); });
BENCHMARK(BM_route<e160_top6>)->Name("route/softmax_top6_of_160")->Apply([](auto* b) { token_counts(b, 0); });

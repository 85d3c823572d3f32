// SPDX-License-Identifier: Apache-2.0
// The momentum encoder's update (contrast/momentum.cuh) over the parameter list of a ViT
// (ViT-B/16: 12 blocks of width 768; ViT-L/16: 24 blocks of width 1024): every weight matrix,
// bias and norm as its own tensor, as an optimizer sees them. Floor: each element's key read and
// written, query read, copy written. Peer: torch._foreach_lerp_ over the same list
// (bench/peers/torch_momentum.py), same device-check run.
#include <frugal/contrast/momentum.cuh>

#include <memory>
#include <vector>

#include "support/bench_support.cuh"

namespace {

// The sizes of a ViT's parameter tensors: per block qkv weight and bias, projection, two norms,
// the MLP's two layers (4x width).
std::vector<std::int64_t> vit_tensor_sizes(int blocks, std::int64_t width) {
  std::vector<std::int64_t> sizes{width * 3 * 16 * 16, width, width, width};  // patch embedding, its bias, cls, final norm
  for (int b = 0; b < blocks; ++b)
    for (std::int64_t s : {3 * width * width, 3 * width, width * width, width, width, width, 4 * width * width, 4 * width,
                           4 * width * width, width, width, width})
      sizes.push_back(s);
  return sizes;
}

enum class momentum_kind { fp32, fp32_master_bf16_copy, bf16 };

template <momentum_kind Kind>
void BM_momentum(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  const int blocks = int(state.range(0));
  const std::int64_t width = state.range(1);
  using key_t = std::conditional_t<Kind == momentum_kind::bf16, __nv_bfloat16, float>;
  using query_t = std::conditional_t<Kind == momentum_kind::fp32, float, __nv_bfloat16>;
  const auto sizes = vit_tensor_sizes(blocks, width);
  std::vector<std::unique_ptr<frugal::bench::device_vector<key_t>>> keys;
  std::vector<std::unique_ptr<frugal::bench::device_vector<query_t>>> queries;
  std::vector<std::unique_ptr<frugal::bench::device_vector<__nv_bfloat16>>> copies;
  std::vector<frugal::contrast::momentum_tensor> list;
  double elements = 0;
  for (std::int64_t n : sizes) {
    keys.push_back(std::make_unique<frugal::bench::device_vector<key_t>>(std::size_t(n)));
    queries.push_back(std::make_unique<frugal::bench::device_vector<query_t>>(std::size_t(n)));
    frugal::bench::fill_normal(keys.back()->ptr, std::size_t(n), 1);
    frugal::bench::fill_normal(queries.back()->ptr, std::size_t(n), 2);
    if (Kind == momentum_kind::fp32_master_bf16_copy) {
      copies.push_back(std::make_unique<frugal::bench::device_vector<__nv_bfloat16>>(std::size_t(n)));
      list.push_back(frugal::contrast::momentum_pair(keys.back()->ptr, static_cast<const query_t*>(queries.back()->ptr), copies.back()->ptr, n));
    } else {
      list.push_back(frugal::contrast::momentum_pair(keys.back()->ptr, static_cast<const query_t*>(queries.back()->ptr), n));
    }
    elements += double(n);
  }
  const double per_element = 2.0 * sizeof(key_t) + sizeof(query_t) + (Kind == momentum_kind::fp32_master_bf16_copy ? 2.0 : 0.0);
  // (hundreds of MB per call: far past L2, no rotation needed)
  frugal::bench::time_launches(state, nullptr, elements * per_element, [&](int) {
    return frugal::contrast::momentum_update(list.data(), int(list.size()), 0.999f).ok();
  });
  state.counters["tensors"] = double(list.size());
  state.counters["parameters"] = elements;
}

void vit_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"blocks", "width"});
  b->Args({12, 768});   // ViT-B/16, 86M parameters in 148 tensors
  b->Args({24, 1024});  // ViT-L/16, 303M parameters in 292 tensors (two launches)
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_momentum<momentum_kind::fp32>)->Name("contrast/momentum_fp32")->Apply(vit_shapes);
BENCHMARK(BM_momentum<momentum_kind::fp32_master_bf16_copy>)->Name("contrast/momentum_fp32_master_bf16_copy")->Apply(vit_shapes);
BENCHMARK(BM_momentum<momentum_kind::bf16>)->Name("contrast/momentum_bf16")->Apply(vit_shapes);

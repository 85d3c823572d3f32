// SPDX-License-Identifier: Apache-2.0
// The momentum encoder's update (contrast/momentum.cuh) over the parameter list of a ViT
// (ViT-B/16: 12 blocks of width 768; ViT-L/16: 24 blocks of width 1024): every weight matrix,
// bias and norm as its own tensor, as an optimizer sees them. Floor: each element's key read and
// written, query read, copy written. Peer: torch._foreach_lerp_ over the same list
// (bench/peers/torch_momentum.py), same device-check run. And the fused InfoNCE forward (one pass
// over the N x M logits on the tensor cores, nothing N^2 stored) against cuBLASLt computing the
// same logits as a plain GEMM (and storing them) in the same run. And a training step of the CLIP
// and SigLIP losses (forward and backward, fused), against the same GEMM; the PyTorch peers
// (open_clip's formulation, eager and torch.compile) are bench/peers/torch_contrastive.py.
#include <frugal/contrast/infonce.cuh>
#include <frugal/contrast/momentum.cuh>
#include <frugal/contrast/siglip.cuh>

#include <memory>
#include <vector>

#include "support/bench_support.cuh"
#include "support/cublas_peer.cuh"

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

void BM_infonce_forward(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  using T = __nv_bfloat16;
  const std::int64_t n = state.range(0);
  const int dim = int(state.range(1));
  frugal::bench::device_vector<T> x(std::size_t(n) * dim), y(std::size_t(n) * dim);
  frugal::bench::fill_normal(x.ptr, x.count, 21, 0.03f);
  frugal::bench::fill_normal(y.ptr, y.count, 22, 0.03f);
  frugal::bench::device_vector<float> loss(1), lse(static_cast<std::size_t>(n));
  const frugal::contrast::infonce_outputs out{loss.ptr, lse.ptr};
  const frugal::contrast::contrast_shape shape{n, n, dim};
  std::size_t bytes = 0;
  (void)frugal::contrast::infonce_forward(nullptr, bytes, x.ptr, y.ptr, out, shape);
  frugal::bench::device_vector<unsigned char> workspace(bytes);
  auto fused = [&] { return frugal::contrast::infonce_forward(workspace.ptr, bytes, x.ptr, y.ptr, out, shape).ok(); };
  frugal::bench::time_launches(state, nullptr, double(2 * n * dim) * 2, [&](int) { return fused(); });
  const double flops = 2.0 * double(n) * double(n) * double(dim);
  const int repeats = flops > 1e12 ? 5 : 20;
  const double fused_ms = frugal::bench::mean_ms(fused, repeats);
  frugal::bench::cublas_tn<T> logits(n, n, dim);  // Z = X Y^T stored: what an unfused loss starts with
  frugal::bench::device_vector<T> z(logits.ok ? std::size_t(n) * std::size_t(n) : 1);
  const double gemm_ms = logits.ok ? frugal::bench::mean_ms([&] { return logits.run(x.ptr, y.ptr, z.ptr); }, repeats) : 0.0;
  using benchmark::Counter;
  state.counters["TFLOP/s"] = Counter(flops / 1e12, Counter::kIsIterationInvariantRate);
  state.counters["peak_fraction"] = Counter(flops / frugal::bench::tensor_peak_flops(false), Counter::kIsIterationInvariantRate);
  state.counters["cublas_gemm_us"] = gemm_ms * 1e3;
  state.counters["fraction_of_cublas_gemm"] = logits.ok && fused_ms > 0 ? gemm_ms / fused_ms : 0.0;
  state.SetLabel("bf16 fused InfoNCE forward vs cuBLASLt computing the logits alone");
}

void infonce_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "dim"});
  for (std::int64_t n : {4096, 16384, 65536})
    for (std::int64_t d : {512, 1024}) b->Args({n, d});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

// Passes over the N x N logits a training step executes (docs/contrastive.md): CLIP: 2 forward,
// then per gradient one recompute per 256-wide slice of D and one product; SigLIP: no forward.
double executed_gemms(bool siglip, int dim) {
  const int slices = (dim + 255) / 256;
  return (siglip ? 0.0 : 2.0) + 2.0 * (slices + 1);
}

// One training step of the loss: forward (its statistics), then every gradient. Useful work is
// counted as 3 GEMMs of N x N x D (the logits once, dX, dY): what an unfused implementation that
// stores the N^2 matrix does; the fraction of cuBLAS compares with 3 such GEMMs timed here.
template <bool Siglip>
void BM_train_step(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  using T = __nv_bfloat16;
  const std::int64_t n = state.range(0);
  const int dim = int(state.range(1));
  namespace fc = frugal::contrast;
  frugal::bench::device_vector<T> x(std::size_t(n) * dim), y(std::size_t(n) * dim), dx(x.count), dy(y.count);
  frugal::bench::fill_normal(x.ptr, x.count, 31, 1.0f);
  frugal::bench::fill_normal(y.ptr, y.count, 32, 1.0f);
  frugal::bench::device_vector<float> loss(1), row_lse(static_cast<std::size_t>(n)), col_lse(static_cast<std::size_t>(n)), d_scale(1), d_bias(1);
  fc::logit_options o;
  o.normalize = true;
  if (Siglip) o.log_scale = 2.3025851f, o.bias = -10.0f;
  const fc::contrast_gradients<T> grads{dx.ptr, dy.ptr, d_scale.ptr, Siglip ? d_bias.ptr : nullptr};
  std::size_t forward_bytes = 0, backward_bytes = 0;
  if constexpr (Siglip) {
    (void)fc::siglip_backward(nullptr, backward_bytes, x.ptr, y.ptr, nullptr, grads, fc::siglip_outputs{loss.ptr}, fc::contrast_shape{n, n, dim}, o);
  } else {
    (void)fc::clip_forward(nullptr, forward_bytes, x.ptr, y.ptr, fc::clip_outputs{loss.ptr, row_lse.ptr, col_lse.ptr}, n, dim, o);
    (void)fc::clip_backward(nullptr, backward_bytes, x.ptr, y.ptr, row_lse.ptr, col_lse.ptr, nullptr, grads, n, dim, o);
  }
  frugal::bench::device_vector<unsigned char> workspace(std::max(forward_bytes, backward_bytes));
  auto step = [&] {
    if constexpr (Siglip) {
      return fc::siglip_backward(workspace.ptr, backward_bytes, x.ptr, y.ptr, nullptr, grads, fc::siglip_outputs{loss.ptr}, fc::contrast_shape{n, n, dim}, o)
          .ok();
    } else {
      return fc::clip_forward(workspace.ptr, forward_bytes, x.ptr, y.ptr, fc::clip_outputs{loss.ptr, row_lse.ptr, col_lse.ptr}, n, dim, o).ok() &&
             fc::clip_backward(workspace.ptr, backward_bytes, x.ptr, y.ptr, row_lse.ptr, col_lse.ptr, nullptr, grads, n, dim, o).ok();
    }
  };
  const double gemm_flops = 2.0 * double(n) * double(n) * double(dim);
  frugal::bench::time_launches(state, nullptr, double(4 * n * dim) * sizeof(T), [&](int) { return step(); }, 1);
  const int repeats = gemm_flops > 1e13 ? 1 : gemm_flops > 1e12 ? 3 : 10;
  const double step_ms = frugal::bench::mean_ms(step, repeats);
  frugal::bench::cublas_tn<T> logits(n, n, dim);
  const bool fits = logits.ok && double(n) * double(n) * sizeof(T) < 40e9;  // the N^2 matrix an unfused loss stores
  frugal::bench::device_vector<T> z(fits ? std::size_t(n) * std::size_t(n) : 1);
  const double gemm_ms = fits ? frugal::bench::mean_ms([&] { return logits.run(x.ptr, y.ptr, z.ptr); }, repeats) : 0.0;
  using benchmark::Counter;
  state.counters["useful_TFLOP/s"] = Counter(3.0 * gemm_flops / 1e12, Counter::kIsIterationInvariantRate);
  state.counters["executed_gemms"] = executed_gemms(Siglip, dim);
  state.counters["peak_fraction"] =
      Counter(executed_gemms(Siglip, dim) * gemm_flops / frugal::bench::tensor_peak_flops(false), Counter::kIsIterationInvariantRate);
  state.counters["workspace_bytes"] = double(std::max(forward_bytes, backward_bytes));
  state.counters["cublas_gemm_us"] = gemm_ms * 1e3;
  state.counters["fraction_of_cublas_3_gemms"] = fits && step_ms > 0 ? 3.0 * gemm_ms / step_ms : 0.0;
  state.SetLabel(Siglip ? "bf16 SigLIP training step (backward with the forward riding along), normalised"
                        : "bf16 CLIP training step (forward + backward), normalised");
}

void train_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "dim"});
  for (std::int64_t n : {4096, 16384, 65536})
    for (std::int64_t d : {512, 1024}) b->Args({n, d});
  b->Args({262144, 512});  // 256K rows: an unfused loss's 256K^2 logits do not fit
  b->Iterations(2)->UseManualTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK(BM_train_step<false>)->Name("contrast/clip_train_step_bf16")->Apply(train_shapes);
BENCHMARK(BM_train_step<true>)->Name("contrast/siglip_train_step_bf16")->Apply(train_shapes);
BENCHMARK(BM_momentum<momentum_kind::fp32>)->Name("contrast/momentum_fp32")->Apply(vit_shapes);
BENCHMARK(BM_momentum<momentum_kind::fp32_master_bf16_copy>)->Name("contrast/momentum_fp32_master_bf16_copy")->Apply(vit_shapes);
BENCHMARK(BM_momentum<momentum_kind::bf16>)->Name("contrast/momentum_bf16")->Apply(vit_shapes);
BENCHMARK(BM_infonce_forward)->Name("contrast/infonce_forward_bf16")->Apply(infonce_shapes);

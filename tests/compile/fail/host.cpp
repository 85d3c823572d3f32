// SPDX-License-Identifier: Apache-2.0
// Configurations that cannot work must not compile; each case is selected by one
// FRUGAL_FAIL_CASE_<name> definition (tests/compile/CMakeLists.txt names the expected message).
#include <frugal/core/numeric.cuh>
#include <frugal/core/vector_io.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/topk/thread_topk.cuh>
#include <frugal/topk/warp_topk.cuh>
#include <frugal/moe/route_config.cuh>
#include <frugal/sparse/nm.cuh>
#if FRUGAL_KERNEL_CODE
#include <frugal/moe/device_route.cuh>
#include <frugal/moe/expert_choice.cuh>
#include <frugal/moe/route_backward.cuh>
#endif
#if defined(FRUGAL_FAIL_CASE_kernel_header_in_gxx)
#include <frugal/topk/device_topk.cuh>
#endif

struct twelve_bytes {
  int a, b, c;
};
struct nine_bytes {
  char c[9];
};
struct no_derivative_scoring {  // a user functor without derivative(x, s)
  float operator()(float x) const { return x * x; }
};

#if FRUGAL_KERNEL_CODE
__global__ void kernel(float* out) {
#if defined(FRUGAL_FAIL_CASE_simt_warp_topk_items)
  frugal::topk_key items[33] = {};
  out[0] = float(frugal::warp_topk(items, 1));
#elif defined(FRUGAL_FAIL_CASE_simt_warp_topk_key_type)
  float items[8] = {};
  out[0] = float(frugal::warp_topk(items, 1));
#elif defined(FRUGAL_FAIL_CASE_simt_logical_warp_width)
  out[0] = frugal::warp_sum<3>(out[0]);
#elif defined(FRUGAL_FAIL_CASE_simt_shuffle_size)
  nine_bytes v{};
  v = __shfl_sync(0xffffffffu, v, 0);
  out[0] = float(v.c[0]);
#endif
}
#endif

int main() {
#if defined(FRUGAL_FAIL_CASE_thread_topk_k_zero)
  frugal::thread_topk<0> t;
#elif defined(FRUGAL_FAIL_CASE_thread_topk_k_large)
  frugal::thread_topk<65> t;
#elif defined(FRUGAL_FAIL_CASE_compact_key_bits)
  const auto t = frugal::make_compact_topk_key<20>(1.0f, 0u);
#elif defined(FRUGAL_FAIL_CASE_nm_m)
  auto t = frugal::sparse::nm<2, 6>::windows(12);
#elif defined(FRUGAL_FAIL_CASE_nm_n)
  auto t = frugal::sparse::nm<4, 4>::windows(12);
#elif defined(FRUGAL_FAIL_CASE_vector_width)
  frugal::vector<float, 3> t;
#elif defined(FRUGAL_FAIL_CASE_vector_bytes)
  frugal::vector<double, 4> t;
#elif defined(FRUGAL_FAIL_CASE_from_float_type)
  auto t = frugal::from_float<twelve_bytes>(1.0f);
#elif defined(FRUGAL_FAIL_CASE_route_k_exceeds_e)
  frugal::moe::route_config<8, 9> t;
#elif defined(FRUGAL_FAIL_CASE_route_k_range)
  frugal::moe::route_config<256, 33> t;
#elif defined(FRUGAL_FAIL_CASE_route_e_range)
  frugal::moe::route_config<5000, 8> t;
#elif defined(FRUGAL_FAIL_CASE_route_groups_divide)
  frugal::moe::route_config<160, 8, frugal::moe::softmax_scoring, 7, 2> t;
#elif defined(FRUGAL_FAIL_CASE_route_groups_range)
  frugal::moe::route_config<256, 8, frugal::moe::softmax_scoring, 64, 2> t;
#elif defined(FRUGAL_FAIL_CASE_route_topk_groups)
  frugal::moe::route_config<256, 8, frugal::moe::softmax_scoring, 8, 9> t;
#elif defined(FRUGAL_FAIL_CASE_route_k_exceeds_kept_groups)
  frugal::moe::route_config<256, 9, frugal::moe::softmax_scoring, 32, 1> t;  // keeps 1 group of 8 experts
#elif defined(FRUGAL_FAIL_CASE_simt_expert_choice_topk_softmax)
  frugal::moe::expert_choice_config<16, frugal::moe::topk_softmax_scoring> t;
#elif defined(FRUGAL_FAIL_CASE_simt_route_backward_derivative)
  using config = frugal::moe::route_config<16, 2, no_derivative_scoring>;
  auto t = frugal::moe::route_backward<config>((const float*)nullptr, (const int*)nullptr, (const float*)nullptr,
                                               (float*)nullptr, 1);
#elif defined(FRUGAL_FAIL_CASE_simt_route_weight_type)
  using config = frugal::moe::route_config<16, 2>;
  auto t = frugal::moe::route<config>((const float*)nullptr, frugal::moe::route_outputs<int, int>{}, 1);
#else
  int t = 0;
#endif
  (void)t;
  return 0;
}

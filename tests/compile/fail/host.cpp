// SPDX-License-Identifier: Apache-2.0
// Configurations that cannot work must not compile; each case is selected by one
// FRUGAL_FAIL_CASE_<name> definition (tests/compile/CMakeLists.txt names the expected message).
#include <frugal/core/numeric.cuh>
#include <frugal/core/vector_io.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/topk/thread_topk.cuh>
#include <frugal/topk/warp_topk.cuh>
#if defined(FRUGAL_FAIL_CASE_kernel_header_in_gxx)
#include <frugal/topk/device_topk.cuh>
#endif

struct twelve_bytes {
  int a, b, c;
};
struct nine_bytes {
  char c[9];
};

#if FRUGAL_KERNEL_CODE
__global__ void kernel(float* out) {
#if defined(FRUGAL_FAIL_CASE_simt_warp_topk_items)
  frugal::topk_key items[33] = {};
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
#elif defined(FRUGAL_FAIL_CASE_vector_width)
  frugal::vector<float, 3> t;
#elif defined(FRUGAL_FAIL_CASE_vector_bytes)
  frugal::vector<double, 4> t;
#elif defined(FRUGAL_FAIL_CASE_from_float_type)
  auto t = frugal::from_float<twelve_bytes>(1.0f);
#else
  int t = 0;
#endif
  (void)t;
  return 0;
}

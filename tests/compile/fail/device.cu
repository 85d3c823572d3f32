// SPDX-License-Identifier: Apache-2.0
// nvcc cases of the compile-fail tests (see host.cpp).
#include <frugal/core/launch.cuh>
#include <frugal/topk/device_topk.cuh>
#include <frugal/topk/warp_topk.cuh>

__global__ void two_args(float* a, int n) {
#if defined(FRUGAL_FAIL_CASE_warp_topk_items)
  frugal::topk_key items[40] = {};
  a[n] = float(frugal::warp_topk(items, 1));
#else
  a[n] = 0.0f;
#endif
}

#if defined(FRUGAL_FAIL_CASE_cooperative_reference)
__global__ void by_reference(const int& n, float* a) { a[0] = float(n); }
#endif

int main() {
#if defined(FRUGAL_FAIL_CASE_topk_type)
  int* x = nullptr;
  (void)frugal::topk(x, x, nullptr, 1, 8, 2);
#elif defined(FRUGAL_FAIL_CASE_launch_arity)
  (void)frugal::launch(two_args, frugal::launch_config{}, (float*)nullptr);
#elif defined(FRUGAL_FAIL_CASE_cooperative_reference)
  (void)frugal::launch_cooperative(by_reference, frugal::launch_config{}, 1, (float*)nullptr);
#endif
  return 0;
}

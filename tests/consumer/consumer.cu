// SPDX-License-Identifier: Apache-2.0
// A user's program: top-2 of 5 per row with frugal::topk, checked against the reference.
#include <frugal/reference/topk.hpp>
#include <frugal/topk/device_topk.cuh>

#include <cstdio>
#include <vector>

int run_consumer() {
  const std::vector<float> x = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 9.0f, 8.0f, 7.0f, 6.0f, 5.0f};
  float *d_x = nullptr, *d_v = nullptr;
  std::int32_t* d_i = nullptr;
  cudaMalloc(&d_x, x.size() * sizeof(float));
  cudaMalloc(&d_v, 4 * sizeof(float));
  cudaMalloc(&d_i, 4 * sizeof(std::int32_t));
  cudaMemcpy(d_x, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice);
  const frugal::status s = frugal::topk(d_x, d_v, d_i, 2, 5, 2);
  std::vector<std::int32_t> got(4), want(4);
  std::vector<float> values(4);
  cudaMemcpy(got.data(), d_i, 4 * sizeof(std::int32_t), cudaMemcpyDeviceToHost);
  frugal::reference::topk(x.data(), values.data(), want.data(), 2, 5, 2);
  cudaFree(d_x);
  cudaFree(d_v);
  cudaFree(d_i);
  if (!s.ok()) {
    std::printf("consumer: frugal::topk failed: %s\n", s.message());
    return 1;
  }
  if (got != want) {
    std::printf("consumer: wrong indices\n");
    return 1;
  }
  std::printf("consumer: topk indices %d %d | %d %d verified\n", got[0], got[1], got[2], got[3]);
  return 0;
}

#if !defined(FRUGAL_CONSUMER_NO_MAIN)
int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("consumer: built for the GPU; no GPU here, not run\n");
    return 0;
  }
  return run_consumer();
}
#endif

// SPDX-License-Identifier: Apache-2.0
// Small helpers the examples share: where they run, and GPU (or host SIMT) arrays.
#pragma once

#include <frugal/config.cuh>

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace examples {

// Prints where the example runs. A GPU build without a usable GPU returns false (the demo
// script then runs the host SIMT build instead).
inline bool announce_mode(const char* name) {
#if defined(FRUGAL_HOST_SIMT)
  std::printf("[%s] running in host SIMT mode (kernels emulated on the CPU)\n", name);
  return true;
#else
  int devices = 0;
  cudaDeviceProp prop{};
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0 || cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    std::printf("[%s] no usable GPU for the nvcc build\n", name);
    return false;
  }
  std::printf("[%s] running on the GPU: %s\n", name, prop.name);
  return true;
#endif
}

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::printf("%s failed: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// A frugal call's status: on an error, print its message and exit.
inline void check(const frugal::status& s, const char* what) {
  if (!s.ok()) {
    std::printf("%s failed: %s\n", what, s.message());
    std::exit(1);
  }
}

template <class T>
class device_array {
 public:
  explicit device_array(std::size_t n) : n_(n) { check(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T) + 1), "cudaMalloc"); }
  explicit device_array(const std::vector<T>& h) : device_array(h.size()) {
    check(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  ~device_array() { cudaFree(p_); }
  device_array(const device_array&) = delete;
  device_array& operator=(const device_array&) = delete;
  T* data() const { return p_; }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    check(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
    return h;
  }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

}  // namespace examples

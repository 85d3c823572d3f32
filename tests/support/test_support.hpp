// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the kernel tests, which build twice from one source: for host SIMT mode
// (g++) and for the device tier (nvcc). Everything here works in both.
#pragma once

#include <frugal/config.cuh>

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#define FRUGAL_REQUIRE_OK(expr)                    \
  do {                                             \
    const ::frugal::status frugal_s_ = (expr);     \
    INFO("frugal status: " << std::string(frugal_s_.message())); \
    REQUIRE(frugal_s_.ok());                       \
  } while (0)

#define CUDA_REQUIRE(expr)                                    \
  do {                                                        \
    const cudaError_t frugal_e_ = (expr);                     \
    INFO("CUDA error: " << std::string(cudaGetErrorString(frugal_e_)));    \
    REQUIRE(frugal_e_ == cudaSuccess);                        \
  } while (0)

namespace frugal::test {

//! GPU (or host SIMT) memory holding n elements of T; copies to and from std::vector.
template <class T>
class device_buffer {
 public:
  explicit device_buffer(std::size_t n) : n_(n) {
    if (n) CUDA_REQUIRE(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
  }
  explicit device_buffer(const std::vector<T>& host) : device_buffer(host.size()) { upload(host); }
  ~device_buffer() { cudaFree(p_); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;

  void upload(const std::vector<T>& host) {
    REQUIRE(host.size() == n_);
    if (n_) CUDA_REQUIRE(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    if (n_) CUDA_REQUIRE(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  void fill_bytes(int byte) {
    if (n_) CUDA_REQUIRE(cudaMemset(p_, byte, n_ * sizeof(T)));
  }
  T* data() const { return p_; }
  std::size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

//! Waits for the device and requires that nothing failed.
inline void synchronize() {
  CUDA_REQUIRE(cudaDeviceSynchronize());
  CUDA_REQUIRE(cudaGetLastError());
}

//! A generator with a fixed seed, reported by doctest if the test fails.
#define FRUGAL_SEEDED_RNG(name, seed)        \
  const unsigned long long name##_seed = (seed); \
  INFO("seed = " << name##_seed);            \
  std::mt19937_64 name(name##_seed)

//! Whether two vectors hold the same bytes (bit for bit: -0.0 differs from 0.0, NaN payloads count).
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

}  // namespace frugal::test

// SPDX-License-Identifier: Apache-2.0
// Timing helper for frugal's benchmarks (Google Benchmark, manual time from CUDA events):
// warm-up, inputs rotated through enough copies to defeat L2, and counters for bytes moved,
// GB/s and the fraction of the device's HBM bandwidth (the memory floor).
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>
#include <frugal/core/launch.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/philox.cuh>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace frugal::bench {

struct device_info {
  bool present = false;
  std::string name;
  double peak_bytes_per_second = 0;  // 2 (DDR) x memory clock x bus width
  std::size_t l2_bytes = 0;
  int multiprocessors = 0;
};

inline const device_info& device() {
  static const device_info info = [] {
    device_info d;
    int count = 0, dev = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) return d;
    cudaGetDevice(&dev);
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, dev);
    int clock_khz = 0, bus_bits = 0, l2 = 0;
    // CUDA 13 removed cudaDeviceProp::memoryClockRate; the attribute remains.
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, dev);
    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
    cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev);
    d.present = true;
    d.name = prop.name;
    d.peak_bytes_per_second = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0);
    d.l2_bytes = std::size_t(l2);
    d.multiprocessors = prop.multiProcessorCount;
    return d;
  }();
  return info;
}

//! Skips the benchmark (with a reason) when no GPU is usable; returns true if it may run.
inline bool require_device(benchmark::State& state) {
  if (device().present) return true;
  state.SkipWithError("no CUDA device");
  return false;
}

//! How many copies of a `bytes`-sized input to rotate through so that together they exceed 2x L2.
inline int rotation_count(std::size_t bytes) {
  const std::size_t target = 2 * device().l2_bytes + 1;
  std::size_t n = (target + bytes - 1) / (bytes ? bytes : 1);
  return int(n < 1 ? 1 : n > 64 ? 64 : n);
}

//! A device allocation freed on scope exit (benchmarks only; the library never allocates).
template <class T>
struct device_vector {
  T* ptr = nullptr;
  std::size_t count = 0;
  explicit device_vector(std::size_t n) : count(n) { cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(T) + 16); }
  ~device_vector() { cudaFree(ptr); }
  device_vector(const device_vector&) = delete;
  device_vector& operator=(const device_vector&) = delete;
};

#if defined(__CUDACC__)
template <class T>
__global__ void fill_normal_kernel(T* out, std::size_t n, unsigned long long seed, float scale) {
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const philox_words r = philox4x32_10(philox_words{{std::uint32_t(i), std::uint32_t(i >> 32), 0u, 0u}},
                                         std::uint32_t(seed), std::uint32_t(seed >> 32));
    out[i] = from_float<T>(scale * normal_from_words(r.v[0], r.v[1]));
  }
}

//! Fills `n` elements on the device with `scale` * N(0, 1) samples (Philox under `seed`): the
//! inputs of the large shapes (hundreds of MB) take milliseconds, where a host generator took
//! seconds for every repetition of a benchmark.
template <class T>
void fill_normal(T* out, std::size_t n, unsigned long long seed, float scale = 1.0f) {
  if (n == 0) return;
  (void)launch(fill_normal_kernel<T>, launch_config{dim3(4096), dim3(256)}, out, n, seed, scale);
  cudaDeviceSynchronize();
}
#endif

//! Times `launch(iteration)` with CUDA events on `stream`, one sample per benchmark iteration,
//! after `warmup` untimed calls, and sets bytes / GB/s / floor-fraction counters.
//! `launch` returns false on failure (which stops the benchmark with an error).
template <class Launch>
void time_launches(benchmark::State& state, cudaStream_t stream, double bytes_per_launch, Launch&& launch,
                   int warmup = 3) {
  for (int i = 0; i < warmup; ++i)
    if (!launch(i)) {
      state.SkipWithError("launch failed during warm-up");
      return;
    }
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  int iteration = warmup;
  for (auto _ : state) {
    cudaEventRecord(start, stream);
    const bool ok = launch(iteration++);
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    if (!ok) {
      state.SkipWithError("launch failed");
      break;
    }
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(ms / 1e3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (cudaGetLastError() != cudaSuccess) state.SkipWithError("CUDA error");
  using benchmark::Counter;
  state.counters["bytes"] = Counter(bytes_per_launch);
  state.counters["GB/s"] = Counter(bytes_per_launch / 1e9, Counter::kIsIterationInvariantRate);
  state.counters["floor_fraction"] =
      Counter(bytes_per_launch / device().peak_bytes_per_second, Counter::kIsIterationInvariantRate);
}

//! Adds the GPU's name and peak bandwidth to the benchmark context (shown once, saved in JSON).
inline void add_device_context() {
  const auto& d = device();
  benchmark::AddCustomContext("gpu", d.present ? d.name : "none");
  benchmark::AddCustomContext("hbm_peak_GBps", std::to_string(d.peak_bytes_per_second / 1e9));
  benchmark::AddCustomContext("l2_bytes", std::to_string(d.l2_bytes));
}

}  // namespace frugal::bench

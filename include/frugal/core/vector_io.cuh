// SPDX-License-Identifier: Apache-2.0
//! @file
//! The one way frugal loads and stores vectors: `vector<T, N>` moved as a single aligned access
//! (16 bytes = one LDG.128/STG.128 on the GPU).
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/numeric.cuh>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace frugal {

//! N elements of T stored together and aligned to their total size.
template <class T, int N>
struct alignas(sizeof(T) * N) vector {
  static_assert(N > 0 && (N & (N - 1)) == 0, "frugal::vector: N must be a power of two");
  static_assert(sizeof(T) * N <= 16, "frugal::vector: at most 16 bytes move in one access");
  T v[N];
  FRUGAL_HOST_DEVICE T& operator[](int i) { return v[i]; }
  FRUGAL_HOST_DEVICE const T& operator[](int i) const { return v[i]; }
};

//! Elements of T in one 16-byte access.
template <class T>
inline constexpr int vector_width_16B = int(16 / sizeof(T));

//! True if `p` is aligned to `bytes` (a power of two).
FRUGAL_HOST_DEVICE bool is_aligned(const void* p, std::size_t bytes) {
  return (reinterpret_cast<std::uintptr_t>(p) & (bytes - 1)) == 0;
}

//! Loads N consecutive elements starting at `p`, which must be aligned to sizeof(T) * N.
template <int N, class T>
FRUGAL_HOST_DEVICE vector<T, N> load_vector(const T* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const vector<T, N>*>(p);
#else
  vector<T, N> r;
  std::memcpy(static_cast<void*>(&r), p, sizeof(r));  // folded into one move, without aliasing UB
  return r;
#endif
}

//! Stores N consecutive elements starting at `p`, which must be aligned to sizeof(T) * N.
template <int N, class T>
FRUGAL_HOST_DEVICE void store_vector(T* p, const vector<T, N>& v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<vector<T, N>*>(p) = v;
#else
  std::memcpy(static_cast<void*>(p), &v, sizeof(v));
#endif
}

//! Loads N elements of T starting at `p` as fp32, in accesses of at most 16 bytes (p aligned to
//! the access size).
template <int N, class T>
FRUGAL_HOST_DEVICE void load_floats(const T* p, float (&out)[N]) {
  constexpr int per = int(16 / sizeof(T)) < N ? int(16 / sizeof(T)) : N;
  static_assert(N % per == 0, "frugal::load_floats: N must be a multiple of the elements per access");
  FRUGAL_UNROLL
  for (int part = 0; part < N / per; ++part) {
    const vector<T, per> v = load_vector<per>(p + part * per);
    FRUGAL_UNROLL
    for (int j = 0; j < per; ++j) out[part * per + j] = to_float(v[j]);
  }
}

//! Stores N fp32 values as T (rounded to nearest even) starting at `p`, in accesses of at most 16 bytes.
template <int N, class T>
FRUGAL_HOST_DEVICE void store_floats(T* p, const float (&in)[N]) {
  constexpr int per = int(16 / sizeof(T)) < N ? int(16 / sizeof(T)) : N;
  static_assert(N % per == 0, "frugal::store_floats: N must be a multiple of the elements per access");
  FRUGAL_UNROLL
  for (int part = 0; part < N / per; ++part) {
    vector<T, per> v;
    FRUGAL_UNROLL
    for (int j = 0; j < per; ++j) v[j] = from_float<T>(in[part * per + j]);
    store_vector(p + part * per, v);
  }
}

}  // namespace frugal

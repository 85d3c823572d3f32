// SPDX-License-Identifier: Apache-2.0
//! @file
//! The one way frugal loads and stores vectors: `vector<T, N>` moved as a single aligned access
//! (16 bytes = one LDG.128/STG.128 on the GPU).
#pragma once

#include <frugal/config.cuh>

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
  std::memcpy(&r, p, sizeof(r));  // the host compiler folds this into one move, without aliasing UB
  return r;
#endif
}

//! Stores N consecutive elements starting at `p`, which must be aligned to sizeof(T) * N.
template <int N, class T>
FRUGAL_HOST_DEVICE void store_vector(T* p, const vector<T, N>& v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<vector<T, N>*>(p) = v;
#else
  std::memcpy(p, &v, sizeof(v));
#endif
}

}  // namespace frugal

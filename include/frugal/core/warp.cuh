// SPDX-License-Identifier: Apache-2.0
//! @file
//! Warp level: reductions, scans and broadcasts over a full warp or over aligned power-of-two
//! sub-warps ("logical warps" of Width lanes), built on the shuffle intrinsics so that host SIMT
//! mode runs them. Every lane of the warp must call them (the mask is the full warp).
#pragma once

#include <frugal/config.cuh>

#include <type_traits>

namespace frugal {

inline constexpr unsigned full_warp_mask = 0xffffffffu;
inline constexpr int warp_threads = 32;

struct plus {
  template <class T> FRUGAL_HOST_DEVICE T operator()(const T& a, const T& b) const { return a + b; }
};
struct maximum {
  template <class T> FRUGAL_HOST_DEVICE T operator()(const T& a, const T& b) const { return a < b ? b : a; }
};
struct minimum {
  template <class T> FRUGAL_HOST_DEVICE T operator()(const T& a, const T& b) const { return b < a ? b : a; }
};
struct bit_or {
  template <class T> FRUGAL_HOST_DEVICE T operator()(const T& a, const T& b) const { return a | b; }
};

#if FRUGAL_KERNEL_CODE

//! Linear index of the calling thread within its block.
FRUGAL_DEVICE unsigned linear_thread_index() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

//! Lane of the calling thread within its warp.
FRUGAL_DEVICE unsigned lane_index() { return linear_thread_index() % warp_threads; }

template <int Width>
inline constexpr bool is_logical_warp_width = Width >= 1 && Width <= 32 && (Width & (Width - 1)) == 0;
#define FRUGAL_CHECK_LOGICAL_WARP(Width) \
  static_assert(::frugal::is_logical_warp_width<Width>, "frugal: logical warp Width must be a power of two in [1, 32]")

//! `__shfl_xor_sync` over the full warp for 4- and 8-byte values. On the GPU it is one
//! `shfl.sync.bfly.b32` per 32 bits without the predicate output: nvcc's intrinsic asks for the
//! predicate, and ptxas then sometimes outlines it into a call (__cuda_sm70_shflsync_bfly_p) that
//! spills. Host SIMT uses the intrinsic, which it emulates.
template <int Width = 32, class T>
FRUGAL_DEVICE T shfl_xor(T value, int lane_mask) {
  FRUGAL_CHECK_LOGICAL_WARP(Width);
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "frugal::shfl_xor: T must have 4 or 8 bytes");
#if defined(__CUDA_ARCH__)
  constexpr int clamp = ((32 - Width) << 8) | 0x1f;
  unsigned words[sizeof(T) / 4];
  memcpy(words, &value, sizeof(T));
  FRUGAL_UNROLL
  for (int i = 0; i < int(sizeof(T) / 4); ++i)
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, %3, 0xffffffff;"
                 : "=r"(words[i]) : "r"(words[i]), "r"(lane_mask), "n"(clamp));
  memcpy(&value, words, sizeof(T));
  return value;
#else
  return __shfl_xor_sync(full_warp_mask, value, lane_mask, Width);
#endif
}

//! Reduces `value` over each logical warp of Width lanes with `op`; every lane gets the result.
//! For an associative and commutative op on exact values (sums of integers, max of integers or
//! keys) every lane gets the same bits; a float sum or max is reproducible run to run, but lanes
//! may differ in the last bit of a sum, or in the sign of a zero max (-0.0 against +0.0).
template <int Width = 32, class T, class Op>
FRUGAL_DEVICE T warp_allreduce(T value, Op op) {
  FRUGAL_CHECK_LOGICAL_WARP(Width);
  FRUGAL_UNROLL
  for (int offset = Width / 2; offset > 0; offset /= 2)
    value = op(value, shfl_xor<Width>(value, offset));
  return value;
}

//! Sum over each logical warp; for 32-bit integers on a full warp one redux.sync from sm_80 (and
//! in host SIMT), a butterfly otherwise.
template <int Width = 32, class T>
FRUGAL_DEVICE T warp_sum(T value) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  if constexpr (Width == 32 && (std::is_same_v<T, unsigned> || std::is_same_v<T, int>)) {
    FRUGAL_CHECK_LOGICAL_WARP(Width);
    return __reduce_add_sync(full_warp_mask, value);
  }
#endif
  return warp_allreduce<Width>(value, plus{});
}
template <int Width = 32, class T>
FRUGAL_DEVICE T warp_max(T value) { return warp_allreduce<Width>(value, maximum{}); }
template <int Width = 32, class T>
FRUGAL_DEVICE T warp_min(T value) { return warp_allreduce<Width>(value, minimum{}); }

//! Bitwise OR over each logical warp: one redux.sync on a full warp from sm_80 (and in host
//! SIMT), a butterfly otherwise.
template <int Width = 32>
FRUGAL_DEVICE unsigned warp_or(unsigned value) {
  FRUGAL_CHECK_LOGICAL_WARP(Width);
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  if constexpr (Width == 32) return __reduce_or_sync(full_warp_mask, value);
#endif
  return warp_allreduce<Width>(value, bit_or{});
}

//! Whether `p` holds in any lane of the calling logical warp (one ballot).
template <int Width = 32>
FRUGAL_DEVICE bool warp_any(bool p) {
  FRUGAL_CHECK_LOGICAL_WARP(Width);
  const unsigned votes = __ballot_sync(full_warp_mask, p);
  if constexpr (Width == 32) return votes != 0u;
  else {
    const unsigned first = lane_index() / Width * Width;
    return ((votes >> first) & ((1u << Width) - 1u)) != 0u;
  }
}

//! Inclusive scan within each logical warp of Width lanes (Hillis-Steele, log2(Width) steps).
template <int Width = 32, class T, class Op>
FRUGAL_DEVICE T warp_inclusive_scan(T value, Op op) {
  FRUGAL_CHECK_LOGICAL_WARP(Width);
  const int lane = int(lane_index()) % Width;
  FRUGAL_UNROLL
  for (int offset = 1; offset < Width; offset *= 2) {
    T other = __shfl_up_sync(full_warp_mask, value, offset, Width);
    if (lane >= offset) value = op(other, value);
  }
  return value;
}

//! Exclusive sum within each logical warp; `total` receives the logical warp's sum.
template <int Width = 32, class T>
FRUGAL_DEVICE T warp_exclusive_sum(T value, T& total) {
  T inclusive = warp_inclusive_scan<Width>(value, plus{});
  total = __shfl_sync(full_warp_mask, inclusive, Width - 1, Width);
  return inclusive - value;
}

//! The value held by lane `src` of the calling logical warp.
template <int Width = 32, class T>
FRUGAL_DEVICE T warp_broadcast(T value, int src) {
  FRUGAL_CHECK_LOGICAL_WARP(Width);
  return __shfl_sync(full_warp_mask, value, src, Width);
}

//! Sum and max over a logical warp as an object, so code written against a "reducer" (this, or
//! frugal::block_reduce) serves warps and blocks alike.
template <int Width = 32>
struct warp_reducer {
  template <class T> FRUGAL_DEVICE T sum(T v) const { return warp_sum<Width>(v); }
  template <class T> FRUGAL_DEVICE T max(T v) const { return warp_max<Width>(v); }
  //! Whether `p` holds in any lane of the whole warp, so that a branch on it keeps every logical
  //! warp of the warp converged for the shuffles inside.
  FRUGAL_DEVICE bool any(bool p) const { return __any_sync(full_warp_mask, p) != 0; }
};

#endif  // FRUGAL_KERNEL_CODE

}  // namespace frugal

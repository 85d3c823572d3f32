// SPDX-License-Identifier: Apache-2.0
//! @file
//! Element types frugal reads and writes (float, __half, __nv_bfloat16) and their exact
//! conversion to and from the fp32 in which all arithmetic happens.
#pragma once

#include <frugal/config.cuh>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace frugal {

template <class T>
inline constexpr bool is_io_float_v = std::is_same_v<T, float> || std::is_same_v<T, __half> ||
                                      std::is_same_v<T, __nv_bfloat16>;

//! T itself, in a context that does not deduce it: `const identity_t<OutT>* residual` takes a
//! plain nullptr while OutT comes from another argument (std::type_identity_t before C++20).
template <class T>
struct identity {
  using type = T;
};
template <class T>
using identity_t = typename identity<T>::type;

//! How many low bits are zero in the fp32 form of every T value (bf16: 16; fp16: 13, a 10-bit
//! mantissa, subnormals included; float: 0). Keys for such values fit in 32 bits with an index of
//! that many bits (compact_topk_key).
template <class T>
inline constexpr int exact_float_trailing_zeros = std::is_same_v<T, __nv_bfloat16> ? 16 : std::is_same_v<T, __half> ? 13 : 0;

//! Widens an element to fp32 (exact for all three types).
FRUGAL_HOST_DEVICE float to_float(float x) { return x; }
FRUGAL_HOST_DEVICE float to_float(__half x) { return __half2float(x); }
FRUGAL_HOST_DEVICE float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

//! Narrows fp32 to T, rounding to nearest even.
template <class T>
FRUGAL_HOST_DEVICE T from_float(float x) {
  static_assert(is_io_float_v<T>, "frugal::from_float: T must be float, __half or __nv_bfloat16");
  if constexpr (std::is_same_v<T, float>) return x;
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(x);
  else return __float2bfloat16_rn(x);
}

//! Short names used in messages and benchmark labels.
template <class T>
constexpr const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "f32";
  else if constexpr (std::is_same_v<T, __half>) return "f16";
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return "bf16";
  else if constexpr (std::is_same_v<T, int>) return "i32";
  else if constexpr (std::is_same_v<T, long long> || std::is_same_v<T, long>) return "i64";
  else return "?";
}

}  // namespace frugal

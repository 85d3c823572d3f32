// SPDX-License-Identifier: Apache-2.0
//! @file
//! Register fragments of the warp-level tensor-core instructions: what each lane holds of an
//! operand (A, B) or of the fp32 accumulator, for the shapes frugal uses. The type says the
//! operand, the shape and the element type; `position(lane, i)` says which matrix element
//! element i of `lane` is (tensor_core/layout.cuh). Thread level: plain C++, compiles everywhere.
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/tensor_core/layout.cuh>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace frugal {

//! Instruction shapes (M x N x K of one warp-level MMA).
struct m16n8k16 {  //!< dense, f16 / bf16 operands
  static constexpr int m = 16, n = 8, k = 16;
};
struct m16n8k8 {  //!< dense, tf32 operands (fp32 data rounded with to_tf32)
  static constexpr int m = 16, n = 8, k = 8;
};
struct m16n8k32_sparse {  //!< 2:4-sparse A (16 x 32, two kept values per 4), f16 / bf16
  static constexpr int m = 16, n = 8, k = 32;
};

enum class mma_operand { a, b };

namespace detail {
template <mma_operand Op, class Shape, class T>
struct fragment_traits {
  static constexpr int registers = 0;  // no such fragment
};
template <class T>
inline constexpr bool is_mma_16bit_v = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;
template <class T>
struct fragment_traits<mma_operand::a, std::enable_if_t<is_mma_16bit_v<T>, m16n8k16>, T> {
  static constexpr int registers = 4, elements = 8;
  FRUGAL_HOST_DEVICE static constexpr tensor_core_layout::position position(int lane, int i) {
    return tensor_core_layout::m16n8k16_a(lane, i);
  }
};
template <class T>
struct fragment_traits<mma_operand::b, std::enable_if_t<is_mma_16bit_v<T>, m16n8k16>, T> {
  static constexpr int registers = 2, elements = 4;
  FRUGAL_HOST_DEVICE static constexpr tensor_core_layout::position position(int lane, int i) {
    return tensor_core_layout::m16n8k16_b(lane, i);
  }
};
template <>
struct fragment_traits<mma_operand::a, m16n8k8, float> {
  static constexpr int registers = 4, elements = 4;
  FRUGAL_HOST_DEVICE static constexpr tensor_core_layout::position position(int lane, int i) {
    return tensor_core_layout::m16n8k8_a(lane, i);
  }
};
template <>
struct fragment_traits<mma_operand::b, m16n8k8, float> {
  static constexpr int registers = 2, elements = 2;
  FRUGAL_HOST_DEVICE static constexpr tensor_core_layout::position position(int lane, int i) {
    return tensor_core_layout::m16n8k8_b(lane, i);
  }
};
template <class T>
struct fragment_traits<mma_operand::a, std::enable_if_t<is_mma_16bit_v<T>, m16n8k32_sparse>, T> {
  static constexpr int registers = 4, elements = 8;
  //! In compressed coordinates (16 x 16); the logical column comes from the metadata.
  FRUGAL_HOST_DEVICE static constexpr tensor_core_layout::position position(int lane, int i) {
    return tensor_core_layout::m16n8k32_sp_a(lane, i);
  }
};
template <class T>
struct fragment_traits<mma_operand::b, std::enable_if_t<is_mma_16bit_v<T>, m16n8k32_sparse>, T> {
  static constexpr int registers = 4, elements = 8;
  FRUGAL_HOST_DEVICE static constexpr tensor_core_layout::position position(int lane, int i) {
    return tensor_core_layout::m16n8k32_sp_b(lane, i);
  }
};
}  // namespace detail

//! Rounds the fp32 value with bit pattern `bits` to tf32 (10 mantissa bits, to nearest, ties away
//! from zero: cvt.rna.tf32.f32), the low 13 bits zero. NaN stays NaN, infinities stay; a value
//! beyond the largest tf32 rounds to infinity. The same bit arithmetic on the host and the GPU,
//! so references match exactly.
FRUGAL_HOST_DEVICE std::uint32_t to_tf32_bits(std::uint32_t bits) {
  if ((bits & 0x7f800000u) == 0x7f800000u) bits = (bits & 0x007fffffu) ? (bits | 0x00400000u) : bits;  // NaN keeps a payload bit
  else bits += 0x1000u;
  return bits & 0xffffe000u;
}
FRUGAL_HOST_DEVICE float to_tf32(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits = to_tf32_bits(bits);
  float r;
  std::memcpy(&r, &bits, 4);
  return r;
}

//! Two 16-bit elements in one register: `low` in bits 0..15 (element 2r), `high` in 16..31.
template <class T>
FRUGAL_HOST_DEVICE std::uint32_t pack_pair(T low, T high) {
  static_assert(detail::is_mma_16bit_v<T>, "frugal::pack_pair: T must be __half or __nv_bfloat16");
  std::uint16_t l, h;
  std::memcpy(&l, &low, 2);
  std::memcpy(&h, &high, 2);
  return std::uint32_t(l) | std::uint32_t(h) << 16;
}

//! A lane's registers of operand Op (A or B) of an MMA of shape Shape with elements T
//! (__half / __nv_bfloat16 for m16n8k16 and m16n8k32_sparse; float, used as tf32, for m16n8k8).
template <mma_operand Op, class Shape, class T>
struct mma_fragment {
  using traits = detail::fragment_traits<Op, Shape, T>;
  static_assert(traits::registers > 0,
                "frugal::mma_fragment: no such fragment: m16n8k16 and m16n8k32_sparse take __half or __nv_bfloat16, "
                "m16n8k8 takes float (tf32)");
  using element_type = T;
  using shape = Shape;
  static constexpr mma_operand operand = Op;
  static constexpr int registers = traits::registers;
  static constexpr int elements = traits::elements;

  std::uint32_t x[registers];

  //! Where element i of `lane` sits in the operand's tile (row, col).
  FRUGAL_HOST_DEVICE static constexpr tensor_core_layout::position position(int lane, int i) {
    return traits::position(lane, i);
  }
  //! Sets element i to `value` (rounded to T to nearest even; to tf32 by to_tf32 for float).
  FRUGAL_HOST_DEVICE void set(int i, float value) {
    if constexpr (std::is_same_v<T, float>) {
      const float v = to_tf32(value);
      std::memcpy(&x[i], &v, 4);
    } else {
      const T v = from_float<T>(value);
      std::uint16_t bits;
      std::memcpy(&bits, &v, 2);
      const int shift = 16 * (i & 1);
      x[i >> 1] = (x[i >> 1] & ~(0xffffu << shift)) | std::uint32_t(bits) << shift;
    }
  }
  //! Element i as fp32 (the tf32 value for float operands: the low 13 bits ignored).
  FRUGAL_HOST_DEVICE float get(int i) const {
    if constexpr (std::is_same_v<T, float>) {
      const std::uint32_t bits = x[i] & 0xffffe000u;
      float v;
      std::memcpy(&v, &bits, 4);
      return v;
    } else {
      const auto bits = std::uint16_t(x[i >> 1] >> (16 * (i & 1)));
      T v;
      std::memcpy(static_cast<void*>(&v), &bits, 2);
      return to_float(v);
    }
  }
};

//! The fp32 accumulator (C and D) of every m16n8 shape: four registers per lane.
struct mma_accumulator {
  float x[4];
  FRUGAL_HOST_DEVICE static constexpr tensor_core_layout::position position(int lane, int i) {
    return tensor_core_layout::m16n8_c(lane, i);
  }
  FRUGAL_HOST_DEVICE void fill(float v) {
    FRUGAL_UNROLL
    for (int i = 0; i < 4; ++i) x[i] = v;
  }
};

}  // namespace frugal

// SPDX-License-Identifier: Apache-2.0
//! @file
//! Exact host emulation of the warp-level tensor-core instructions frugal uses, as plain
//! functions over the registers of the 32 lanes of a warp. Host SIMT mode runs them when a warp
//! executes frugal::mma, mma_sp or ldmatrix; a device test runs the real instruction and compares
//! its result with these functions on the same fragments. Every layout comes from
//! tensor_core/layout.cuh.
//!
//! Arithmetic (PTX leaves the order, rounding and subnormal handling of an MMA unspecified):
//! operands are widened exactly to fp32 (tf32 operands keep their top 19 bits: the low 13 bits
//! of the register are ignored, as the tensor cores do); then for every output
//! d[m][n] = c[m][n], and for k in increasing order d = fma(a[m][k], b[k][n], d), one fp32
//! rounding per step (round to nearest even). mma.sp multiplies only the kept values of A (a
//! pruned position never meets its B value, so an infinite B there makes no NaN). Results are
//! exact wherever every partial sum is representable in fp32 (small integers), and otherwise
//! within a few ulp of the hardware, whose internal order is not this one.
#pragma once

#include <frugal/config.cuh>
#include <frugal/tensor_core/layout.cuh>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace frugal::tensor_core_emulation {

//! Why an instruction cannot run: a message naming the instruction and the rule, the lane that
//! broke it and the offending value (a metadata nibble, an address's low bits, a selector).
//! A default-constructed error means success.
struct error {
  const char* what = nullptr;
  int lane = -1;
  unsigned value = 0;
  explicit operator bool() const { return what != nullptr; }
};

//! fp32 value of a bf16 / fp16 bit pattern (exact).
inline float bf16_bits_to_float(std::uint16_t bits) {
  const std::uint32_t w = std::uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}
inline float half_bits_to_float(std::uint16_t bits) {
  const float sign = (bits & 0x8000u) ? -1.0f : 1.0f;
  const int exponent = (bits >> 10) & 0x1f, mantissa = bits & 0x3ff;
  if (exponent == 0x1f) return mantissa ? std::nanf("") : sign * INFINITY;
  if (exponent == 0) return sign * std::ldexp(float(mantissa), -24);  // subnormal (or zero)
  return sign * std::ldexp(float(mantissa | 0x400), exponent - 25);
}
//! The tf32 operand a 32-bit register holds: its top 19 bits (sign, 8-bit exponent, 10-bit mantissa).
inline float tf32_operand(std::uint32_t bits) {
  const std::uint32_t w = bits & 0xffffe000u;
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}

//! Element i (16-bit, low half first) of a fragment's registers, as fp32.
template <class T>
float fragment_element(const std::uint32_t* registers, int i) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
                "frugal::tensor_core_emulation: 16-bit operands are __half or __nv_bfloat16");
  const auto bits = std::uint16_t(registers[i >> 1] >> (16 * (i & 1)));
  return std::is_same_v<T, __half> ? half_bits_to_float(bits) : bf16_bits_to_float(bits);
}

namespace detail {
// d[m][n] = fma chain over k of a[m][k] * b[k][n], starting from c, k increasing.
template <int M, int N, int K>
void multiply_accumulate(const float (&a)[M][K], const float (&b)[K][N], float (&c)[M][N]) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      float acc = c[m][n];
      for (int k = 0; k < K; ++k) acc = std::fma(a[m][k], b[k][n], acc);
      c[m][n] = acc;
    }
}
inline void gather_c(const float (&c)[32][4], float (&tile)[16][8]) {
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      const auto p = tensor_core_layout::m16n8_c(lane, i);
      tile[p.row][p.col] = c[lane][i];
    }
}
inline void scatter_d(const float (&tile)[16][8], float (&d)[32][4]) {
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      const auto p = tensor_core_layout::m16n8_c(lane, i);
      d[lane][i] = tile[p.row][p.col];
    }
}
}  // namespace detail

//! mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32: d = a b + c.
//! a[lane][0..3], b[lane][0..1]: the lanes' operand registers; c, d: the accumulators (d may be c).
template <class T>
error mma_m16n8k16(const std::uint32_t (&a)[32][4], const std::uint32_t (&b)[32][2], const float (&c)[32][4],
                   float (&d)[32][4]) {
  float ta[16][16], tb[16][8], tc[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 8; ++i) {
      const auto p = tensor_core_layout::m16n8k16_a(lane, i);
      ta[p.row][p.col] = fragment_element<T>(a[lane], i);
    }
    for (int i = 0; i < 4; ++i) {
      const auto p = tensor_core_layout::m16n8k16_b(lane, i);
      tb[p.row][p.col] = fragment_element<T>(b[lane], i);
    }
  }
  detail::gather_c(c, tc);
  detail::multiply_accumulate(ta, tb, tc);
  detail::scatter_d(tc, d);
  return {};
}

//! mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: d = a b + c (operands: top 19 bits).
inline error mma_m16n8k8_tf32(const std::uint32_t (&a)[32][4], const std::uint32_t (&b)[32][2], const float (&c)[32][4],
                              float (&d)[32][4]) {
  float ta[16][8], tb[8][8], tc[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 4; ++i) {
      const auto p = tensor_core_layout::m16n8k8_a(lane, i);
      ta[p.row][p.col] = tf32_operand(a[lane][i]);
    }
    for (int i = 0; i < 2; ++i) {
      const auto p = tensor_core_layout::m16n8k8_b(lane, i);
      tb[p.row][p.col] = tf32_operand(b[lane][i]);
    }
  }
  detail::gather_c(c, tc);
  detail::multiply_accumulate(ta, tb, tc);
  detail::scatter_d(tc, d);
  return {};
}

//! mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{f16,bf16}.{f16,bf16}.f32:
//! d = A b + c, A 16 x 32 given by its kept values `a` (compressed 16 x 16) and the metadata
//! registers `e` of the lanes that `selector` names. Stops at the first invalid nibble
//! (idx0 >= idx1: undefined on the hardware) or a selector other than 0 and 1.
template <class T>
error mma_sp_m16n8k32(const std::uint32_t (&a)[32][4], const std::uint32_t (&b)[32][4], const float (&c)[32][4],
                      const std::uint32_t (&e)[32], int selector, float (&d)[32][4]) {
  if (selector != 0 && selector != 1)
    return {"mma.sp::ordered_metadata.m16n8k32: the sparsity selector must be 0 or 1", 0, unsigned(selector)};
  float kept[16][16], tb[32][8], tc[16][8];
  int column[16][16];  // logical column of each kept value
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 8; ++i) {
      const auto p = tensor_core_layout::m16n8k32_sp_a(lane, i);
      kept[p.row][p.col] = fragment_element<T>(a[lane], i);
    }
    for (int i = 0; i < 8; ++i) {
      const auto p = tensor_core_layout::m16n8k32_sp_b(lane, i);
      tb[p.row][p.col] = fragment_element<T>(b[lane], i);
    }
  }
  for (int row = 0; row < 16; ++row)
    for (int chunk = 0; chunk < 8; ++chunk) {
      const auto where = tensor_core_layout::m16n8k32_sp_metadata(row, chunk, selector);
      const unsigned nibble = (e[where.lane] >> where.bit) & 0xfu;
      if (!tensor_core_layout::is_ordered_metadata_nibble(nibble))
        return {"mma.sp::ordered_metadata.m16n8k32: a metadata nibble must hold idx0 < idx1 (0x4 0x8 0xC 0x9 0xD 0xE)",
                where.lane, nibble};
      column[row][2 * chunk] = 4 * chunk + int(nibble & 3u);
      column[row][2 * chunk + 1] = 4 * chunk + int(nibble >> 2);
    }
  detail::gather_c(c, tc);
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      float acc = tc[m][n];
      for (int j = 0; j < 16; ++j) acc = std::fma(kept[m][j], tb[column[m][j]][n], acc);  // logical k increasing
      tc[m][n] = acc;
    }
  detail::scatter_d(tc, d);
  return {};
}

//! ldmatrix.sync.aligned.m8n8.x{Matrices}{.trans}.shared.b16: rows[lane] is the row address lane
//! gives (used for lanes 0 .. 8 Matrices - 1); out[lane][j] receives its register j.
//! Stops at the first row address that is null or not 16-byte aligned.
inline error ldmatrix(int matrices, bool trans, const void* const (&rows)[32], std::uint32_t (&out)[32][4]) {
  if (matrices != 1 && matrices != 2 && matrices != 4)
    return {"ldmatrix: the number of matrices must be 1, 2 or 4", 0, unsigned(matrices)};
  for (int lane = 0; lane < 8 * matrices; ++lane) {
    const auto address = reinterpret_cast<std::uintptr_t>(rows[lane]);
    if (address == 0) return {"ldmatrix: a row address is null", lane, 0};
    if (address % 16 != 0) return {"ldmatrix: a row address is not 16-byte aligned", lane, unsigned(address % 16)};
  }
  for (int lane = 0; lane < 32; ++lane)
    for (int j = 0; j < matrices; ++j) {
      std::uint32_t reg = 0;
      for (int h = 0; h < 2; ++h) {
        const auto p = tensor_core_layout::ldmatrix_element(lane, h, trans);
        std::uint16_t element;
        std::memcpy(&element, static_cast<const unsigned char*>(rows[tensor_core_layout::ldmatrix_address_lane(j, p.row)]) + 2 * p.col, 2);
        reg |= std::uint32_t(element) << (16 * h);
      }
      out[lane][j] = reg;
    }
  return {};
}

}  // namespace frugal::tensor_core_emulation

// SPDX-License-Identifier: Apache-2.0
//! @file
//! ldmatrix: a warp loads 1, 2 or 4 matrices of 8 x 8 16-bit elements from shared memory into
//! MMA fragment registers, optionally transposed. One instruction on sm_80+; in host SIMT mode
//! the exact emulation of tensor_core/emulation.hpp, which also refuses a null or misaligned row
//! address, naming the lane.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/tensor_core/ldmatrix.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/tensor_core/mma.cuh>

#include <cstdint>

namespace frugal {

namespace detail {
#if defined(FRUGAL_HOST_SIMT)
struct ldmatrix_record {
  const void* row;
  std::uint32_t* out;
};
template <int Matrices, bool Transpose>
const char* emulate_ldmatrix(void* const* records) {
  const void* rows[32];
  std::uint32_t out[32][4] = {};
  for (int lane = 0; lane < 32; ++lane) rows[lane] = static_cast<const ldmatrix_record*>(records[lane])->row;
  if (const auto error = tensor_core_emulation::ldmatrix(Matrices, Transpose, rows, out)) return describe_emulation_error(error);
  for (int lane = 0; lane < 32; ++lane)
    for (int j = 0; j < Matrices; ++j) static_cast<const ldmatrix_record*>(records[lane])->out[j] = out[lane][j];
  return nullptr;
}
#endif
}  // namespace detail

//! ldmatrix.sync.aligned.m8n8.x{Matrices}{.trans}.shared.b16. Lane 8 j + r passes the address of
//! row r of matrix j (16 bytes, 16-byte aligned, in shared memory; lanes >= 8 Matrices pass any
//! value); register j of every lane receives its part of matrix j: elements (g, 2t) and (g, 2t+1),
//! or with Transpose (2t, g) and (2t+1, g), low half first (tensor_core_layout::ldmatrix_element).
template <int Matrices, bool Transpose = false>
FRUGAL_DEVICE void ldmatrix(std::uint32_t (&dst)[Matrices], const void* row_address) {
  static_assert(Matrices == 1 || Matrices == 2 || Matrices == 4, "frugal::ldmatrix: Matrices must be 1, 2 or 4");
#if defined(__CUDA_ARCH__)
#if FRUGAL_TENSOR_CORES
  const auto address = static_cast<std::uint32_t>(__cvta_generic_to_shared(row_address));
  if constexpr (Matrices == 1 && !Transpose)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(dst[0]) : "r"(address) : "memory");
  else if constexpr (Matrices == 1)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];" : "=r"(dst[0]) : "r"(address) : "memory");
  else if constexpr (Matrices == 2 && !Transpose)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(dst[0]), "=r"(dst[1]) : "r"(address) : "memory");
  else if constexpr (Matrices == 2)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(dst[0]), "=r"(dst[1]) : "r"(address) : "memory");
  else if constexpr (!Transpose)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(dst[0]), "=r"(dst[1]), "=r"(dst[2]), "=r"(dst[3]) : "r"(address) : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(dst[0]), "=r"(dst[1]), "=r"(dst[2]), "=r"(dst[3]) : "r"(address) : "memory");
#else
  static_assert(detail::tensor_core_arch_error<decltype(dst)>,
                "frugal::ldmatrix: frugal's tensor-core pieces need sm_80 or newer; compile for compute capability 8.0+");
#endif
#elif defined(FRUGAL_HOST_SIMT)
  static constexpr const char* names[2][3] = {
      {"ldmatrix.sync.aligned.m8n8.x1.shared.b16", "ldmatrix.sync.aligned.m8n8.x2.shared.b16",
       "ldmatrix.sync.aligned.m8n8.x4.shared.b16"},
      {"ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16", "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16",
       "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"}};
  detail::ldmatrix_record r{row_address, dst};
  host_simt::detail::warp_compute(&r, detail::emulate_ldmatrix<Matrices, Transpose>,
                                  names[Transpose ? 1 : 0][Matrices == 1 ? 0 : Matrices == 2 ? 1 : 2]);
#else
  (void)dst, (void)row_address;
#endif
}

}  // namespace frugal

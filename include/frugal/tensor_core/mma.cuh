// SPDX-License-Identifier: Apache-2.0
//! @file
//! Warp-level matrix multiply-accumulate on the tensor cores: one inline PTX instruction each on
//! sm_80 and newer, the exact emulation of tensor_core/emulation.hpp in host SIMT mode. Every lane
//! of the warp must call them together (.sync.aligned), with its own fragments.
//!
//!   frugal::mma(d, a, b, c)                      dense m16n8k16 (f16 / bf16) or m16n8k8 (tf32)
//!   frugal::mma_sp<Selector>(d, a, b, c, meta)   2:4-sparse A, m16n8k32 (f16 / bf16)
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/tensor_core/mma.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/tensor_core/fragment.cuh>

#if defined(FRUGAL_HOST_SIMT)
#include <frugal/tensor_core/emulation.hpp>
#include <string>
#endif

#include <cstdint>
#include <type_traits>

//! 1 when this compilation may use the sm_80 tensor-core instructions: device code for
//! compute capability 8.0+, nvcc's host pass (which never runs them) and host SIMT mode.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define FRUGAL_TENSOR_CORES 0
#else
#define FRUGAL_TENSOR_CORES 1
#endif

namespace frugal {

namespace detail {
template <class...>
inline constexpr bool tensor_core_arch_error = false;

#if defined(FRUGAL_HOST_SIMT)
// A lane's operands of one emulated MMA; the last lane to arrive computes the whole warp's.
struct mma_record {
  const std::uint32_t* a;
  const std::uint32_t* b;
  const float* c;
  float* d;
  std::uint32_t metadata;
};

inline const char* describe_emulation_error(const tensor_core_emulation::error& e) {
  static thread_local std::string message;
  message = "lane " + std::to_string(e.lane) + ": " + e.what + " (value " + std::to_string(e.value) + ")";
  return message.c_str();
}

// Runs `Emulate` over the 32 lanes' records: gathers each operand into [32][registers] arrays.
template <int ARegisters, int BRegisters, class Emulate>
const char* run_mma_emulation(void* const* records, Emulate emulate) {
  std::uint32_t a[32][4] = {}, b[32][4] = {}, e[32] = {};
  float c[32][4], d[32][4];
  for (int lane = 0; lane < 32; ++lane) {
    const auto& r = *static_cast<const mma_record*>(records[lane]);
    for (int i = 0; i < ARegisters; ++i) a[lane][i] = r.a[i];
    for (int i = 0; i < BRegisters; ++i) b[lane][i] = r.b[i];
    for (int i = 0; i < 4; ++i) c[lane][i] = r.c[i];
    e[lane] = r.metadata;
  }
  if (const auto error = emulate(a, b, c, e, d)) return describe_emulation_error(error);
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) static_cast<const mma_record*>(records[lane])->d[i] = d[lane][i];
  return nullptr;
}

template <class T>
const char* emulate_m16n8k16(void* const* records) {
  return run_mma_emulation<4, 2>(records, [](auto& a, auto& b, auto& c, auto&, auto& d) {
    std::uint32_t b2[32][2];
    for (int lane = 0; lane < 32; ++lane) b2[lane][0] = b[lane][0], b2[lane][1] = b[lane][1];
    return tensor_core_emulation::mma_m16n8k16<T>(a, b2, c, d);
  });
}
inline const char* emulate_m16n8k8_tf32(void* const* records) {
  return run_mma_emulation<4, 2>(records, [](auto& a, auto& b, auto& c, auto&, auto& d) {
    std::uint32_t b2[32][2];
    for (int lane = 0; lane < 32; ++lane) b2[lane][0] = b[lane][0], b2[lane][1] = b[lane][1];
    return tensor_core_emulation::mma_m16n8k8_tf32(a, b2, c, d);
  });
}
template <class T, int Selector>
const char* emulate_m16n8k32_sparse(void* const* records) {
  return run_mma_emulation<4, 4>(records, [](auto& a, auto& b, auto& c, auto& e, auto& d) {
    return tensor_core_emulation::mma_sp_m16n8k32<T>(a, b, c, e, Selector, d);
  });
}
#endif
}  // namespace detail

//! d = a b + c, 16 x 8 x 16, f16 or bf16 operands, fp32 accumulate
//! (mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32). d may be c.
template <class T>
FRUGAL_DEVICE void mma(mma_accumulator& d, const mma_fragment<mma_operand::a, m16n8k16, T>& a,
                       const mma_fragment<mma_operand::b, m16n8k16, T>& b, const mma_accumulator& c) {
#if defined(__CUDA_ARCH__)
#if FRUGAL_TENSOR_CORES
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
        : "=f"(d.x[0]), "=f"(d.x[1]), "=f"(d.x[2]), "=f"(d.x[3])
        : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]),
          "f"(c.x[0]), "f"(c.x[1]), "f"(c.x[2]), "f"(c.x[3]));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
        : "=f"(d.x[0]), "=f"(d.x[1]), "=f"(d.x[2]), "=f"(d.x[3])
        : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]),
          "f"(c.x[0]), "f"(c.x[1]), "f"(c.x[2]), "f"(c.x[3]));
#else
  static_assert(detail::tensor_core_arch_error<T>,
                "frugal::mma: mma.sync.m16n8k16 needs sm_80 or newer; compile for compute capability 8.0+");
#endif
#elif defined(FRUGAL_HOST_SIMT)
  mma_accumulator in = c;
  detail::mma_record r{a.x, b.x, in.x, d.x, 0};
  host_simt::detail::warp_compute(&r, detail::emulate_m16n8k16<T>,
                                  std::is_same_v<T, __half> ? "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
                                                            : "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32");
#else
  (void)d, (void)a, (void)b, (void)c;
#endif
}

//! d = a b + c, 16 x 8 x 8, tf32 operands (fp32 registers; the low 13 bits ignored), fp32
//! accumulate (mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32). d may be c.
template <class T = float>
FRUGAL_DEVICE void mma(mma_accumulator& d, const mma_fragment<mma_operand::a, m16n8k8, T>& a,
                       const mma_fragment<mma_operand::b, m16n8k8, T>& b, const mma_accumulator& c) {
#if defined(__CUDA_ARCH__)
#if FRUGAL_TENSOR_CORES
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
      : "=f"(d.x[0]), "=f"(d.x[1]), "=f"(d.x[2]), "=f"(d.x[3])
      : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]),
        "f"(c.x[0]), "f"(c.x[1]), "f"(c.x[2]), "f"(c.x[3]));
#else
  static_assert(detail::tensor_core_arch_error<T>,
                "frugal::mma: mma.sync.m16n8k8 (tf32) needs sm_80 or newer; compile for compute capability 8.0+");
#endif
#elif defined(FRUGAL_HOST_SIMT)
  mma_accumulator in = c;
  detail::mma_record r{a.x, b.x, in.x, d.x, 0};
  host_simt::detail::warp_compute(&r, detail::emulate_m16n8k8_tf32, "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32");
#else
  (void)d, (void)a, (void)b, (void)c;
#endif
}

//! d = A b + c with A 2:4-sparse: 16 x 8 x 32, f16 or bf16, fp32 accumulate
//! (mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.T.T.f32). `a` holds A's kept
//! values (two of every four), `metadata` their positions (tensor_core_layout::m16n8k32_sp_metadata:
//! nibble idx0 | idx1 << 2 with idx0 < idx1); Selector (0 or 1) names which lane pair of each
//! group of four supplies the metadata. d may be c.
template <int Selector, class T>
FRUGAL_DEVICE void mma_sp(mma_accumulator& d, const mma_fragment<mma_operand::a, m16n8k32_sparse, T>& a,
                          const mma_fragment<mma_operand::b, m16n8k32_sparse, T>& b, const mma_accumulator& c,
                          std::uint32_t metadata) {
  static_assert(Selector == 0 || Selector == 1, "frugal::mma_sp: Selector must be 0 or 1 (m16n8k32 reads metadata from lane pairs)");
#if defined(__CUDACC_VER_MAJOR__) && (__CUDACC_VER_MAJOR__ < 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ < 5))
  static_assert(detail::tensor_core_arch_error<T>, "frugal::mma_sp: mma.sp::ordered_metadata needs CUDA 12.5 or newer (PTX ISA 8.5)");
#endif
#if defined(__CUDA_ARCH__)
#if FRUGAL_TENSOR_CORES
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    asm("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9,%10,%11}, {%12,%13,%14,%15}, %16, %17;"
        : "=f"(d.x[0]), "=f"(d.x[1]), "=f"(d.x[2]), "=f"(d.x[3])
        : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]), "r"(b.x[2]), "r"(b.x[3]),
          "f"(c.x[0]), "f"(c.x[1]), "f"(c.x[2]), "f"(c.x[3]), "r"(metadata), "n"(Selector));
  else
    asm("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9,%10,%11}, {%12,%13,%14,%15}, %16, %17;"
        : "=f"(d.x[0]), "=f"(d.x[1]), "=f"(d.x[2]), "=f"(d.x[3])
        : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]), "r"(b.x[2]), "r"(b.x[3]),
          "f"(c.x[0]), "f"(c.x[1]), "f"(c.x[2]), "f"(c.x[3]), "r"(metadata), "n"(Selector));
#else
  static_assert(detail::tensor_core_arch_error<T>,
                "frugal::mma_sp: mma.sp::ordered_metadata.m16n8k32 needs sm_80 or newer; compile for compute capability 8.0+");
#endif
#elif defined(FRUGAL_HOST_SIMT)
  mma_accumulator in = c;
  detail::mma_record r{a.x, b.x, in.x, d.x, metadata};
  host_simt::detail::warp_compute(&r, detail::emulate_m16n8k32_sparse<T, Selector>,
                                  std::is_same_v<T, __half>
                                      ? "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32"
                                      : "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32");
#else
  (void)d, (void)a, (void)b, (void)c, (void)metadata;
#endif
}

}  // namespace frugal

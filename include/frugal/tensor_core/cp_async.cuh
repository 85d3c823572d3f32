// SPDX-License-Identifier: Apache-2.0
//! @file
//! cp.async: 16-byte copies from global to shared memory that run in the background while the
//! thread goes on, grouped by commit and waited for by group. One instruction each on sm_80+. In
//! host SIMT mode a copy lands only when a wait covers its group (the latest moment the hardware
//! allows), so code that reads the destination too early reads stale bytes there too; a
//! misaligned address or a src-size above 16 stops the run with a message.
//!
//!   frugal::cp_async_16(dst, src, src_bytes)   reads src_bytes (0..16) and zero-fills the rest
//!   frugal::cp_async_commit()                  the thread's copies since the last commit form a group
//!   frugal::cp_async_wait<N>()                 waits until at most N of its groups are pending
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/tensor_core/cp_async.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/tensor_core/mma.cuh>

#include <cstdint>
#include <type_traits>

namespace frugal {

//! cp.async.cg.shared.global [dst], [src], 16, src_bytes: copies 16 bytes to shared memory
//! `dst`, the first `src_bytes` (0..16) from global `src` and zeros for the rest (src_bytes = 0
//! reads nothing: the predicated-off copy of a tile edge). Both addresses 16-byte aligned.
template <int Unused = 0>
FRUGAL_DEVICE void cp_async_16(void* dst, const void* src, int src_bytes = 16) {
#if defined(__CUDA_ARCH__)
#if FRUGAL_TENSOR_CORES
  const auto address = static_cast<std::uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(address), "l"(src), "r"(src_bytes) : "memory");
#else
  static_assert(detail::tensor_core_arch_error<std::integral_constant<int, Unused>>,
                "frugal::cp_async_16: cp.async needs sm_80 or newer; compile for compute capability 8.0+");
#endif
#elif defined(FRUGAL_HOST_SIMT)
  host_simt::detail::async_copy(dst, src, 16u, unsigned(src_bytes),
                                "cp.async.cg.shared.global");
#else
  (void)dst, (void)src, (void)src_bytes;
#endif
}

//! cp.async.commit_group.
template <int Unused = 0>
FRUGAL_DEVICE void cp_async_commit() {
#if defined(__CUDA_ARCH__)
#if FRUGAL_TENSOR_CORES
  asm volatile("cp.async.commit_group;" ::: "memory");
#else
  static_assert(detail::tensor_core_arch_error<std::integral_constant<int, Unused>>,
                "frugal::cp_async_commit: cp.async needs sm_80 or newer; compile for compute capability 8.0+");
#endif
#elif defined(FRUGAL_HOST_SIMT)
  host_simt::detail::async_commit();
#endif
}

//! cp.async.wait_group Pending: returns when at most `Pending` of the thread's committed groups
//! are still in flight (the newest ones). Other threads' copies need a __syncthreads() after.
template <int Pending>
FRUGAL_DEVICE void cp_async_wait() {
  static_assert(Pending >= 0 && Pending <= 7, "frugal::cp_async_wait: Pending must be in [0, 7]");
#if defined(__CUDA_ARCH__)
#if FRUGAL_TENSOR_CORES
  asm volatile("cp.async.wait_group %0;" ::"n"(Pending) : "memory");
#else
  static_assert(detail::tensor_core_arch_error<std::integral_constant<int, Pending>>,
                "frugal::cp_async_wait: cp.async needs sm_80 or newer; compile for compute capability 8.0+");
#endif
#elif defined(FRUGAL_HOST_SIMT)
  host_simt::detail::async_wait(Pending);
#endif
}

}  // namespace frugal

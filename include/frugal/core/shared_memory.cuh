// SPDX-License-Identifier: Apache-2.0
//! @file
//! Dynamic shared memory, the same way on the GPU and in host SIMT mode.
#pragma once

#include <frugal/config.cuh>

namespace frugal {

#if FRUGAL_KERNEL_CODE
//! The block's dynamic shared memory (launch_config::shared_bytes of it), 16-byte aligned, as T*.
//! Kernels use this instead of declaring `extern __shared__` arrays, which host SIMT cannot map.
template <class T>
FRUGAL_DEVICE T* dynamic_shared() {
#if defined(FRUGAL_HOST_SIMT)
  return static_cast<T*>(host_simt::detail::dynamic_shared_base());
#else
  extern __shared__ __align__(16) unsigned char frugal_dynamic_shared_bytes[];
  return reinterpret_cast<T*>(frugal_dynamic_shared_bytes);
#endif
}
#endif

}  // namespace frugal

// SPDX-License-Identifier: Apache-2.0
//! @file
//! A barrier of the whole grid, for kernels started with frugal::launch_cooperative.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/core/grid_sync.cuh holds device code; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#if !defined(FRUGAL_HOST_SIMT)
#include <cooperative_groups.h>
#endif

namespace frugal {

//! Every thread of the grid waits until all have arrived; writes before it are visible to every
//! thread after it. Only in cooperative launches (host SIMT refuses it elsewhere).
FRUGAL_DEVICE void grid_sync() {
#if defined(FRUGAL_HOST_SIMT)
  host_simt::detail::grid_barrier("frugal::grid_sync");
#else
  cooperative_groups::this_grid().sync();
#endif
}

}  // namespace frugal

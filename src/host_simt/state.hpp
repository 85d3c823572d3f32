// SPDX-License-Identifier: Apache-2.0
// State shared by the host SIMT scheduler and its CUDA runtime API emulation.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace frugal::host_simt::detail {

struct launch_state;

// Records `e` as the error cudaGetLastError/cudaPeekAtLastError report next; returns `e`.
cudaError_t note_error(cudaError_t e);
// Dynamic shared memory a launch of `kernel` may use (48 KiB unless raised by cudaFuncSetAttribute).
std::size_t dynamic_shared_limit(const void* kernel);

}  // namespace frugal::host_simt::detail

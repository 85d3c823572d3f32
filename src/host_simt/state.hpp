// SPDX-License-Identifier: Apache-2.0
// State shared by the host SIMT scheduler and its CUDA runtime API emulation.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <functional>
#include <vector>

// Work of a CUDA graph, in submission order (host SIMT graphs are linear: every node depends on
// the one before, which is what capturing a single stream produces).
struct CUgraph_st {
  std::vector<std::function<cudaError_t()>> work;
};
struct CUgraphExec_st {
  std::vector<std::function<cudaError_t()>> work;
};
struct CUstream_st {
  CUgraph_st* capture = nullptr;  // the graph being captured on this stream
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  bool invalidated = false;       // an illegal call during the capture: it ends in an error
};

namespace frugal::host_simt::detail {

struct launch_state;

// Records `e` as the error cudaGetLastError/cudaPeekAtLastError report next; returns `e`.
cudaError_t note_error(cudaError_t e);
// Dynamic shared memory a launch of `kernel` may use (48 KiB unless raised by cudaFuncSetAttribute).
std::size_t dynamic_shared_limit(const void* kernel);

// Stream capture (graph.cpp). Work for `stream` is recorded into the graph being captured on it
// (make() builds the recorded work; returns true), or must run now (returns false). `result`:
// cudaErrorStreamCaptureImplicit for work on the legacy stream while a capture is active (that
// capture is invalidated), cudaErrorStreamCaptureInvalidated for work on an invalidated capture.
bool record_if_capturing(cudaStream_t stream, const std::function<std::function<cudaError_t()>()>& make, cudaError_t& result);
// Runs `work` now, or records it when `stream` is capturing.
cudaError_t submit(cudaStream_t stream, std::function<cudaError_t()> work);
// A call that synchronises or allocates (cudaMemcpy, cudaMalloc, cudaStreamSynchronize...):
// illegal while a capture in global or thread-local mode is active; that capture is invalidated.
cudaError_t refuse_during_capture();

}  // namespace frugal::host_simt::detail

// SPDX-License-Identifier: Apache-2.0
// CUDA graphs by stream capture, emulated: a capturing stream records kernel launches and async
// copies and sets instead of running them; a graph launch runs them in order. The capture rules
// that matter to a library are enforced, so a test in host SIMT mode shows that an entry point is
// capture-safe: a synchronising or allocating call during a global or thread-local capture, or
// work on the legacy stream, invalidates the capture and returns CUDA's error.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <mutex>
#include <utility>
#include <vector>

#include "state.hpp"

namespace frugal::host_simt::detail {
namespace {
std::mutex capture_mutex;
std::vector<cudaStream_t> active;  // streams capturing now

void invalidate_active(bool strict_only) {
  for (cudaStream_t s : active)
    if (!strict_only || s->mode != cudaStreamCaptureModeRelaxed) s->invalidated = true;
}
}  // namespace

bool is_captured(cudaStream_t stream, cudaError_t& refusal) {
  refusal = cudaSuccess;
  std::lock_guard<std::mutex> lock(capture_mutex);
  if (stream && stream->capture) return true;
  if (!stream && !active.empty()) {
    invalidate_active(false);
    refusal = note_error(cudaErrorStreamCaptureImplicit);
  }
  return false;
}

cudaError_t capture(cudaStream_t stream, std::function<cudaError_t()> work) {
  std::lock_guard<std::mutex> lock(capture_mutex);
  if (stream->invalidated) return note_error(cudaErrorStreamCaptureInvalidated);
  stream->capture->work.push_back(std::move(work));
  return cudaSuccess;
}

cudaError_t submit(cudaStream_t stream, std::function<cudaError_t()> work) {
  cudaError_t refusal = cudaSuccess;
  if (is_captured(stream, refusal)) return capture(stream, std::move(work));
  return refusal ? refusal : work();
}

cudaError_t refuse_during_capture() {
  std::lock_guard<std::mutex> lock(capture_mutex);
  const bool strict = std::any_of(active.begin(), active.end(),
                                  [](cudaStream_t s) { return s->mode != cudaStreamCaptureModeRelaxed; });
  if (!strict) return cudaSuccess;
  invalidate_active(true);
  return note_error(cudaErrorStreamCaptureUnsupported);
}

}  // namespace frugal::host_simt::detail

using frugal::host_simt::detail::note_error;

extern "C" {

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
  using namespace frugal::host_simt::detail;
  if (!stream) return note_error(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot capture
  std::lock_guard<std::mutex> lock(capture_mutex);
  if (stream->capture) return note_error(cudaErrorIllegalState);
  stream->capture = new CUgraph_st{};
  stream->mode = mode;
  stream->invalidated = false;
  active.push_back(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  using namespace frugal::host_simt::detail;
  if (!stream || !graph) return note_error(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(capture_mutex);
  if (!stream->capture) return note_error(cudaErrorIllegalState);
  active.erase(std::find(active.begin(), active.end(), stream));
  CUgraph_st* captured = std::exchange(stream->capture, nullptr);
  if (stream->invalidated) {
    delete captured;
    *graph = nullptr;
    return note_error(cudaErrorStreamCaptureInvalidated);
  }
  *graph = captured;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* status) {
  using namespace frugal::host_simt::detail;
  if (!status) return note_error(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(capture_mutex);
  *status = !stream || !stream->capture ? cudaStreamCaptureStatusNone
            : stream->invalidated       ? cudaStreamCaptureStatusInvalidated
                                        : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!exec || !graph) return note_error(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->work};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  using namespace frugal::host_simt::detail;
  if (!exec) return note_error(cudaErrorInvalidValue);
  auto run = [exec] {
    for (const auto& work : exec->work)
      if (const cudaError_t e = work()) return note_error(e);
    return cudaSuccess;
  };
  return submit(stream, run);
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

}  // extern "C"

// SPDX-License-Identifier: Apache-2.0
// CUDA graphs by stream capture, emulated: a capturing stream records kernel launches and async
// copies and sets instead of running them; a graph launch runs them in order. The capture rules
// that matter to a library are enforced, so a test in host SIMT mode shows that an entry point is
// capture-safe: a synchronising or allocating call during a global or thread-local capture, or
// work on the legacy stream, invalidates the capture and returns CUDA's error.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
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

// cudaStreamLegacy (0x1) and cudaStreamPerThread (0x2) are handles, not objects: like the null
// stream, they are never captured here.
bool is_legacy(cudaStream_t s) { return reinterpret_cast<std::uintptr_t>(s) <= 2; }

void stop_capture(cudaStream_t s) {  // (the lock held)
  active.erase(std::remove(active.begin(), active.end(), s), active.end());
  delete std::exchange(s->capture, nullptr);
}
}  // namespace

bool record_if_capturing(cudaStream_t stream, const std::function<std::function<cudaError_t()>()>& make, cudaError_t& result) {
  result = cudaSuccess;
  std::lock_guard<std::mutex> lock(capture_mutex);
  if (is_legacy(stream)) {
    if (!active.empty()) {
      invalidate_active(false);
      result = note_error(cudaErrorStreamCaptureImplicit);
    }
    return false;
  }
  if (!stream->capture) return false;
  if (stream->invalidated) result = note_error(cudaErrorStreamCaptureInvalidated);
  else stream->capture->work.push_back(make());
  return true;
}

cudaError_t submit(cudaStream_t stream, std::function<cudaError_t()> work) {
  cudaError_t result = cudaSuccess;
  if (record_if_capturing(stream, [&] { return work; }, result) || result) return result;
  return work();
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
  if (is_legacy(stream)) return note_error(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot capture
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
  if (is_legacy(stream) || !graph) return note_error(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(capture_mutex);
  if (!stream->capture) return note_error(cudaErrorIllegalState);
  if (stream->invalidated) {
    stop_capture(stream);
    *graph = nullptr;
    return note_error(cudaErrorStreamCaptureInvalidated);
  }
  active.erase(std::remove(active.begin(), active.end(), stream), active.end());
  *graph = std::exchange(stream->capture, nullptr);
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* status) {
  using namespace frugal::host_simt::detail;
  if (!status) return note_error(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(capture_mutex);
  *status = is_legacy(stream) || !stream->capture ? cudaStreamCaptureStatusNone
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
  // A copy of the work: a graph launch captured into another graph outlives this exec.
  auto run = [work = exec->work] {
    for (const auto& w : work)
      if (const cudaError_t e = w()) return note_error(e);
    return cudaSuccess;
  };
  return submit(stream, run);
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  using namespace frugal::host_simt::detail;
  {
    std::lock_guard<std::mutex> lock(capture_mutex);
    if (!is_legacy(stream) && stream->capture) {
      stream->invalidated = true;
      return note_error(cudaErrorStreamCaptureUnsupported);
    }
  }
  return refuse_during_capture();
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  using namespace frugal::host_simt::detail;
  if (is_legacy(stream)) return note_error(cudaErrorInvalidResourceHandle);
  {
    std::lock_guard<std::mutex> lock(capture_mutex);
    if (stream->capture) stop_capture(stream);  // a capture never ended: dropped with its stream
  }
  delete stream;
  return cudaSuccess;
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

// SPDX-License-Identifier: Apache-2.0
// The part of the CUDA runtime API that programs using frugal call around kernels, emulated on
// the host: "device" memory is host memory, streams are synchronous, events read a steady clock.
// A program in host SIMT mode links this library instead of cudart; a function missing here is an
// undefined symbol at link time, never a silent no-op.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>

#include "state.hpp"

struct CUevent_st {
  std::chrono::steady_clock::time_point when;
};

namespace frugal::host_simt::detail {
namespace {
thread_local cudaError_t sticky = cudaSuccess;
std::mutex attributes_mutex;
std::map<const void*, std::size_t> shared_limits;
constexpr std::size_t default_shared_limit = 48 * 1024;
constexpr std::size_t max_shared_optin = 227 * 1024;
}  // namespace

cudaError_t note_error(cudaError_t e) {
  if (e != cudaSuccess) sticky = e;
  return e;
}

std::size_t dynamic_shared_limit(const void* kernel) {
  std::lock_guard<std::mutex> lock(attributes_mutex);
  auto it = shared_limits.find(kernel);
  return it == shared_limits.end() ? default_shared_limit : it->second;
}

}  // namespace frugal::host_simt::detail

using frugal::host_simt::detail::note_error;

extern "C" {

cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (!p) return note_error(cudaErrorInvalidValue);
  if (const cudaError_t e = frugal::host_simt::detail::refuse_during_capture()) return e;
  // 256-byte aligned as on a GPU, but exactly `bytes` long: a sanitizer build sees an overrun of
  // a device buffer at its first byte, which rounding the size up would hide.
  *p = nullptr;
  if (bytes && posix_memalign(p, 256, bytes) != 0) {
    *p = nullptr;
    return note_error(cudaErrorMemoryAllocation);
  }
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
cudaError_t cudaFree(void* p) {
  if (const cudaError_t e = frugal::host_simt::detail::refuse_during_capture()) return e;
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind) {
  if (bytes && (!dst || !src)) return note_error(cudaErrorInvalidValue);
  if (const cudaError_t e = frugal::host_simt::detail::refuse_during_capture()) return e;
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind,
                            cudaStream_t stream) {
  if (bytes && (!dst || !src)) return note_error(cudaErrorInvalidValue);
  auto copy = [=] {
    if (bytes) std::memmove(dst, src, bytes);
    return cudaSuccess;
  };
  return frugal::host_simt::detail::submit(stream, copy);
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (bytes && !dst) return note_error(cudaErrorInvalidValue);
  if (const cudaError_t e = frugal::host_simt::detail::refuse_during_capture()) return e;
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (bytes && !dst) return note_error(cudaErrorInvalidValue);
  auto set = [=] {
    if (bytes) std::memset(dst, value, bytes);
    return cudaSuccess;
  };
  return frugal::host_simt::detail::submit(stream, set);
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (free_bytes) *free_bytes = size_t(8) << 30;
  if (total_bytes) *total_bytes = size_t(8) << 30;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return frugal::host_simt::detail::refuse_during_capture(); }
cudaError_t cudaDeviceReset(void) { return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int* n) {
  if (n) *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  if (d) *d = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : note_error(cudaErrorInvalidDevice); }
cudaError_t cudaDriverGetVersion(int* v) {
  if (v) *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  if (v) *v = CUDART_VERSION;
  return cudaSuccess;
}

// The emulated device: a small sm_90-like part, so that code sizing grids by SM count stays small.
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (!value || device != 0) return note_error(cudaErrorInvalidValue);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = 4; break;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = 2048; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 227 * 1024; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = 228 * 1024; break;
    case cudaDevAttrL2CacheSize: *value = 1 << 20; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMemoryClockRate: *value = 1000000; break;
    case cudaDevAttrGlobalMemoryBusWidth: *value = 64; break;
    case cudaDevAttrMaxGridDimX: *value = 0x7fffffff; break;
    case cudaDevAttrMaxGridDimY:
    case cudaDevAttrMaxGridDimZ: *value = 65535; break;
    default: return note_error(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  using namespace frugal::host_simt::detail;
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;  // hints only
  if (value < 0 || std::size_t(value) > max_shared_optin) return note_error(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(attributes_mutex);
  shared_limits[func] = std::size_t(value);
  return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* blocks, const void*,
                                                                   int block_size, size_t smem,
                                                                   unsigned int) {
  if (!blocks || block_size <= 0) return note_error(cudaErrorInvalidValue);
  // An H100/H200 multiprocessor: 2048 threads, 228 KiB of shared memory with 1 KiB reserved per
  // block (a kernel's static shared memory is not known here and not counted).
  *blocks = block_size > 1024 ? 0 : 2048 / block_size;
  if (smem > frugal::host_simt::detail::max_shared_optin) *blocks = 0;
  else if (smem > 0) *blocks = std::min(*blocks, int(228 * 1024 / (smem + 1024)));
  return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* func,
                                                          int block_size, size_t smem) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(blocks, func, block_size, smem, 0);
}

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  if (!s) return note_error(cudaErrorInvalidValue);
  *s = new CUstream_st{};
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) { return cudaStreamCreate(s); }
cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  if (!e) return note_error(cudaErrorInvalidValue);
  *e = new CUevent_st{std::chrono::steady_clock::now()};
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream) {
  if (!e) return note_error(cudaErrorInvalidResourceHandle);
  auto record = [e] {
    e->when = std::chrono::steady_clock::now();
    return cudaSuccess;
  };
  return frugal::host_simt::detail::submit(stream, record);
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return frugal::host_simt::detail::refuse_during_capture(); }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms || !start || !end) return note_error(cudaErrorInvalidValue);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  cudaError_t e = frugal::host_simt::detail::sticky;
  frugal::host_simt::detail::sticky = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return frugal::host_simt::detail::sticky; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    default: return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure (host SIMT: see frugal::host_simt::last_error_message())";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorIllegalState: return "the operation is not permitted in the current state";
    default: return "unknown error (host SIMT)";
  }
}

}  // extern "C"

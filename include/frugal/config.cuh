// SPDX-License-Identifier: Apache-2.0
//! @file
//! Version, compilation-mode macros and the one way frugal reports errors.
#pragma once

#define FRUGAL_VERSION_MAJOR 0
#define FRUGAL_VERSION_MINOR 1
#define FRUGAL_VERSION_PATCH 0
#define FRUGAL_VERSION (FRUGAL_VERSION_MAJOR * 10000 + FRUGAL_VERSION_MINOR * 100 + FRUGAL_VERSION_PATCH)

#if defined(FRUGAL_HOST_SIMT)
#include <frugal/host_simt/host_simt.hpp>
#endif

#include <cuda_runtime_api.h>

#if __cplusplus < 201703L && !defined(_MSVC_LANG)
#error "frugal: the public headers need C++17 or newer"
#endif

//! FRUGAL_KERNEL_CODE: 1 where kernels and warp intrinsics can be compiled: the nvcc device pass,
//! nvcc's host pass (which sees kernel bodies but never runs them) and host SIMT mode.
#if defined(__CUDACC__) || defined(FRUGAL_HOST_SIMT)
#define FRUGAL_KERNEL_CODE 1
#else
#define FRUGAL_KERNEL_CODE 0
#endif

//! Thread-level functions: registers only, no intrinsics, so they also compile and run under g++.
#if defined(__CUDACC__)
#define FRUGAL_HOST_DEVICE __host__ __device__ __forceinline__
#define FRUGAL_DEVICE __device__ __forceinline__
#else
#define FRUGAL_HOST_DEVICE inline
#define FRUGAL_DEVICE inline
#endif

//! Unroll the next loop in device code; expands to nothing for the host compiler, which would
//! otherwise warn about an unknown pragma.
#if defined(__CUDA_ARCH__)
#define FRUGAL_UNROLL _Pragma("unroll")
#else
#define FRUGAL_UNROLL
#endif

namespace frugal {

//! What went wrong, coarsely; `status::message()` says exactly what.
enum class errc : int {
  success = 0,
  invalid_argument,  //!< a runtime argument is out of its documented range
  misaligned,        //!< a pointer or leading dimension breaks the documented alignment
  unsupported,       //!< a valid request this build or mode cannot serve (e.g. PTX in host SIMT)
  cuda,              //!< the CUDA runtime reported an error; `cuda_error()` holds it
};

//! The result of every device-wide entry point. Messages are static strings: building a status
//! never allocates, so entry points stay usable inside CUDA graph capture and error paths.
class [[nodiscard]] status {
 public:
  constexpr status() = default;

  static constexpr status invalid(const char* message) { return {errc::invalid_argument, message}; }
  static constexpr status misaligned(const char* message) { return {errc::misaligned, message}; }
  static constexpr status unsupported(const char* message) { return {errc::unsupported, message}; }
  static constexpr status from_cuda(cudaError_t e) {
    return e == cudaSuccess ? status{} : status{errc::cuda, nullptr, e};
  }

  constexpr bool ok() const { return code_ == errc::success; }
  constexpr errc code() const { return code_; }

  //! The CUDA error closest to this status (argument errors map to cudaErrorInvalidValue).
  constexpr cudaError_t cuda_error() const {
    switch (code_) {
      case errc::success: return cudaSuccess;
      case errc::cuda: return cuda_;
      case errc::unsupported: return cudaErrorNotSupported;
      case errc::misaligned: return cudaErrorMisalignedAddress;
      default: return cudaErrorInvalidValue;
    }
  }

  //! A human-readable message; for CUDA errors, the runtime's own string.
  const char* message() const {
    if (code_ == errc::success) return "success";
    if (code_ == errc::cuda) return cudaGetErrorString(cuda_);
    return message_;
  }

  friend constexpr bool operator==(const status& a, const status& b) {
    return a.code_ == b.code_ && a.cuda_ == b.cuda_;
  }
  friend constexpr bool operator!=(const status& a, const status& b) { return !(a == b); }

 private:
  constexpr status(errc c, const char* m, cudaError_t e = cudaSuccess) : code_(c), message_(m), cuda_(e) {}
  errc code_ = errc::success;
  const char* message_ = nullptr;
  cudaError_t cuda_ = cudaSuccess;
};

}  // namespace frugal

//! Returns from the enclosing function if `expr` (a frugal::status) is not ok.
#define FRUGAL_TRY(expr)                          \
  do {                                            \
    ::frugal::status frugal_try_status_ = (expr); \
    if (!frugal_try_status_.ok()) return frugal_try_status_; \
  } while (0)

// SPDX-License-Identifier: Apache-2.0
// The dense GEMM peer of frugal's benchmarks: cuBLASLt (linked by frugal_bench only) in the "TN"
// form of a linear layer, D[M, N] = A[M, K] B with B the [N, K] weight, and the device's dense
// tensor-core peak.
#pragma once

#include <cublasLt.h>

#include <type_traits>

#include "support/bench_support.cuh"

namespace frugal::bench {

// Dense tensor-core FLOP per multiprocessor per clock (FMA = 2), without sparsity.
inline double tensor_peak_flops(bool tf32) {
  int dev = 0, major = 0, clock_khz = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev);
  const double per_sm_clock = (major >= 9 ? 4096.0 : 2048.0) / (tf32 ? 2.0 : 1.0);
  return per_sm_clock * frugal::bench::device().multiprocessors * clock_khz * 1e3;
}

template <class T>
inline cudaDataType_t cuda_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, __half>) return CUDA_R_16F;
  else return CUDA_R_16BF;
}

// D[M, N] (row-major) = A[M, K] (row-major) B, B the [N, K] weight: in cuBLAS's column-major
// terms D^T (N x M) = op_T(B as K x N) op_N(A^T as K x M).
template <class T>
struct cublas_tn {
  cublasLtHandle_t handle{};
  cublasLtMatmulDesc_t op{};
  cublasLtMatrixLayout_t la{}, lb{}, ld{};
  cublasLtMatmulHeuristicResult_t algo{};
  device_vector<unsigned char> workspace{std::size_t(64) << 20};
  bool ok = false;
  cublas_tn(std::int64_t m, std::int64_t n, std::int64_t k) {
    if (cublasLtCreate(&handle) != CUBLAS_STATUS_SUCCESS) return;
    const cublasComputeType_t compute = std::is_same_v<T, float> ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cublasLtMatmulDescCreate(&op, compute, CUDA_R_32F);
    const cublasOperation_t t = CUBLAS_OP_T, nt = CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t));
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &nt, sizeof(nt));
    cublasLtMatrixLayoutCreate(&la, cuda_type<T>(), k, n, k);  // B: K x N column-major (the [N, K] weight)
    cublasLtMatrixLayoutCreate(&lb, cuda_type<T>(), k, m, k);  // A^T: K x M column-major
    cublasLtMatrixLayoutCreate(&ld, cuda_type<T>(), n, m, n);  // D^T: N x M column-major
    cublasLtMatmulPreference_t pref{};
    cublasLtMatmulPreferenceCreate(&pref);
    const std::size_t bytes = workspace.count;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &bytes, sizeof(bytes));
    int found = 0;
    ok = cublasLtMatmulAlgoGetHeuristic(handle, op, la, lb, ld, ld, pref, 1, &algo, &found) == CUBLAS_STATUS_SUCCESS && found > 0;
    cublasLtMatmulPreferenceDestroy(pref);
  }
  ~cublas_tn() {
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(op);
    cublasLtDestroy(handle);
  }
  bool run(const T* a, const T* b, T* d) {
    const float one = 1.0f, zero = 0.0f;
    return cublasLtMatmul(handle, op, &one, b, la, a, lb, &zero, d, ld, d, ld, &algo.algo, workspace.ptr, workspace.count, nullptr) ==
           CUBLAS_STATUS_SUCCESS;
  }
};

// Mean milliseconds of `launch` over enough repetitions (CUDA events, after warm-up).
template <class Launch>
inline double mean_ms(Launch&& launch, int repeats) {
  for (int i = 0; i < 3; ++i) launch();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start);
  for (int i = 0; i < repeats; ++i) launch();
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return double(ms) / repeats;
}

}  // namespace frugal::bench

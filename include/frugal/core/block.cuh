// SPDX-License-Identifier: Apache-2.0
//! @file
//! Block level collectives in CUB's shape: a class template sized at compile time, an opaque
//! TempStorage the caller places in shared memory, one object per use. Built on the warp
//! collectives and one barrier, so host SIMT mode runs them. Results are bitwise deterministic
//! (fixed association order). Reusing a TempStorage needs a __syncthreads() in between.
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/warp.cuh>

namespace frugal {

#if FRUGAL_KERNEL_CODE

//! Reduction over a 1D block of BlockThreads threads (a multiple of 32, at most 1024).
template <class T, int BlockThreads>
class block_reduce {
  static_assert(BlockThreads % 32 == 0 && BlockThreads >= 32 && BlockThreads <= 1024,
                "frugal::block_reduce: BlockThreads must be a multiple of 32 in [32, 1024]");
  static constexpr int warps = BlockThreads / 32;

 public:
  struct TempStorage {
    T warp_results[warps];
  };

  FRUGAL_DEVICE explicit block_reduce(TempStorage& storage) : storage_(storage) {}

  //! Every thread gets the reduction of all threads' values: warp butterflies, then every thread
  //! combines the warp results in warp order (the same order everywhere, so the same bits).
  template <class Op>
  FRUGAL_DEVICE T all_reduce(T value, Op op) {
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    value = warp_allreduce(value, op);
    if (lane == 0) storage_.warp_results[warp] = value;
    __syncthreads();
    T result = storage_.warp_results[0];
    FRUGAL_UNROLL
    for (int w = 1; w < warps; ++w) result = op(result, storage_.warp_results[w]);
    __syncthreads();  // storage may be reused right after
    return result;
  }

  FRUGAL_DEVICE T sum(T value) { return all_reduce(value, plus{}); }
  FRUGAL_DEVICE T max(T value) { return all_reduce(value, maximum{}); }
  //! Whether `p` holds in any thread of the block (a barrier): a branch on it is block-uniform.
  FRUGAL_DEVICE bool any(bool p) const { return __syncthreads_or(p) != 0; }

 private:
  TempStorage& storage_;
};

//! Exclusive prefix sum over a 1D block of BlockThreads threads, in thread order.
template <class T, int BlockThreads>
class block_scan {
  static_assert(BlockThreads % 32 == 0 && BlockThreads >= 32 && BlockThreads <= 1024,
                "frugal::block_scan: BlockThreads must be a multiple of 32 in [32, 1024]");
  static constexpr int warps = BlockThreads / 32;

 public:
  struct TempStorage {
    T warp_totals[warps];
  };

  FRUGAL_DEVICE explicit block_scan(TempStorage& storage) : storage_(storage) {}

  //! Returns the sum of the values of all lower-numbered threads; `total` gets the block's sum.
  FRUGAL_DEVICE T exclusive_sum(T value, T& total) {
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    T warp_total;
    const T in_warp = warp_exclusive_sum(value, warp_total);
    if (lane == 0) storage_.warp_totals[warp] = warp_total;
    __syncthreads();
    T before = T(0);
    total = T(0);
    FRUGAL_UNROLL
    for (int w = 0; w < warps; ++w) {
      const T t = storage_.warp_totals[w];
      before = w < warp ? before + t : before;
      total = total + t;
    }
    __syncthreads();  // storage may be reused right after
    return before + in_warp;
  }

 private:
  TempStorage& storage_;
};

#endif  // FRUGAL_KERNEL_CODE

}  // namespace frugal

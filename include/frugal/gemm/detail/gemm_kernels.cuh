// SPDX-License-Identifier: Apache-2.0
// The GEMM kernels: a tile scheduler around block_gemm for one matrix product (bands of 8
// M-tiles sweeping N, for L2 reuse) and for a grouped product over the segments of a dispatch
// plan (each block finds its group by a block-wide scan of the groups' tile counts), and the
// tile configurations the entry points choose from.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/gemm/detail/gemm_kernels.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/block.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/shared_memory.cuh>
#include <frugal/gemm/block_gemm.cuh>

#include <atomic>
#include <cstdint>

namespace frugal {

//! The groups of a grouped GEMM: group g multiplies rows [start_g, start_g + rows_g) of A by
//! its own B and writes the same rows of D. With `offsets` (a dispatch plan's offsets or
//! offsets64, [groups + 1]) start_g = offsets[g] and rows_g = offsets[g + 1] - offsets[g], or
//! counts[g] when `counts` is given and smaller (the plan's counts: padding rows are skipped).
//! Without offsets (the plan's masked layout) start_g = g * capacity and rows_g = counts[g], at
//! most capacity. A segment reaching outside [0, rows) is clipped to it: never an out-of-bounds
//! access. Segments must not overlap (offsets non-decreasing, as a plan's are): overlapping rows
//! would be written by two blocks.
template <class OffsetT = std::int32_t>
struct gemm_groups {
  const OffsetT* offsets = nullptr;
  const std::int32_t* counts = nullptr;
  std::int64_t capacity = 0;
  int groups = 0;
  std::int64_t rows = 0;      //!< rows of A and D (e.g. plan_max_rows)
  std::int64_t b_stride = 0;  //!< elements from one group's B to the next; 0: packed (N * K)
};

namespace detail {

template <class T>
struct gemm_problem {
  const T* a;
  std::int64_t lda;
  const T* b;
  std::int64_t ldb;
  std::int64_t m, n, k;
  bool vector_loads;
};

// The two tile shapes: 128 x 128 (2 x 2 warps of 64 x 64, 4 stages, 64 KiB) when the product has
// enough tiles to fill the device, 64 x 64 (2 x 2 warps of 32 x 32, 3 stages, 24 KiB) otherwise.
// K steps of 64 bytes: 32 bf16 / f16 or 16 fp32.
template <class T, matrix_order BLayout>
using gemm_tile_large = gemm_tile<T, BLayout, 128, 128, int(64 / sizeof(T)), 2, 2, 4>;
template <class T, matrix_order BLayout>
using gemm_tile_small = gemm_tile<T, BLayout, 64, 64, int(64 / sizeof(T)), 2, 2, 3>;

template <class Tile, class Out, class Epilogue>
__global__ void __launch_bounds__(Tile::threads)
    gemm_kernel(gemm_problem<typename Tile::element_type> p, Out* d, std::int64_t ldd, Epilogue epilogue) {
  using gemm = block_gemm<Tile>;
  const std::int64_t tiles_m = (p.m + Tile::block_m - 1) / Tile::block_m, tiles_n = (p.n + Tile::block_n - 1) / Tile::block_n;
  constexpr std::int64_t band = 8;  // M-tiles that sweep N together: their A rows and the B columns stay in L2
  const std::int64_t id = blockIdx.x, per_band = band * tiles_n, first_m = id / per_band * band;
  const std::int64_t band_rows = tiles_m - first_m < band ? tiles_m - first_m : band;
  const std::int64_t tm = first_m + (id % per_band) % band_rows, tn = (id % per_band) / band_rows;
  const std::int64_t row0 = tm * Tile::block_m, col0 = tn * Tile::block_n;
  const int rows = int(p.m - row0 < Tile::block_m ? p.m - row0 : Tile::block_m);
  const int cols = int(p.n - col0 < Tile::block_n ? p.n - col0 : Tile::block_n);
  const typename Tile::element_type* b =
      Tile::b_layout == matrix_order::col_major ? p.b + col0 * p.ldb : p.b + col0;
  gemm g(*dynamic_shared<typename gemm::TempStorage>());
  typename gemm::accumulators acc;
  acc.clear();
  g.multiply({p.a + row0 * p.lda, p.lda, rows, b, p.ldb, cols, p.k, p.vector_loads}, acc);
  g.store(acc, d, ldd, row0, col0, rows, cols, epilogue, 0);
}

// Segment of group g, clipped to [0, rows).
template <class OffsetT>
FRUGAL_DEVICE void group_segment(const gemm_groups<OffsetT>& groups, int g, std::int64_t& start, std::int64_t& rows) {
  std::int64_t s, r;
  if (groups.offsets) {
    s = std::int64_t(groups.offsets[g]);
    r = std::int64_t(groups.offsets[g + 1]) - s;
    if (groups.counts && groups.counts[g] < r) r = groups.counts[g];  // never past the segment
  } else {
    s = g * groups.capacity;
    r = groups.counts[g];
    r = r < groups.capacity ? r : groups.capacity;
  }
  if (s < 0 || s >= groups.rows || r < 0) r = 0;
  else if (r > groups.rows - s) r = groups.rows - s;
  start = s;
  rows = r;
}

// Which group's which row-tile is tile `t` of a grouped product whose groups are cut into tiles
// of BlockRows rows: each thread counts the tiles of a run of groups, a block scan places the
// runs, and the thread whose run holds t walks it. False (for every thread) when t lies past the
// groups' tiles. Every thread of the 1D block of Threads threads calls it.
template <int Threads, int BlockRows, class OffsetT>
FRUGAL_DEVICE bool find_group_tile(const gemm_groups<OffsetT>& groups, long long t, int& group, std::int64_t& row0, int& rows) {
  using scan = block_scan<long long, Threads>;
  __shared__ typename scan::TempStorage scan_storage;
  __shared__ long long found[3];  // group, first row, rows of tile t
  const int tid = int(threadIdx.x), per_thread = (groups.groups + Threads - 1) / Threads;
  const int first = tid * per_thread;
  long long mine = 0, total = 0;
  for (int g = first; g < first + per_thread && g < groups.groups; ++g) {
    std::int64_t start, count;
    group_segment(groups, g, start, count);
    mine += (count + BlockRows - 1) / BlockRows;
  }
  long long before = scan(scan_storage).exclusive_sum(mine, total);
  if (t >= total) return false;
  if (before <= t && t < before + mine) {
    for (int g = first; g < first + per_thread && g < groups.groups; ++g) {
      std::int64_t start, count;
      group_segment(groups, g, start, count);
      const long long tiles = (count + BlockRows - 1) / BlockRows;
      if (t < before + tiles) {
        const long long local = t - before;
        found[0] = g;
        found[1] = start + local * BlockRows;
        found[2] = count - local * BlockRows < BlockRows ? count - local * BlockRows : BlockRows;
        break;
      }
      before += tiles;
    }
  }
  __syncthreads();
  group = int(found[0]);
  row0 = found[1];
  rows = int(found[2]);
  return true;
}

template <class Tile, class OffsetT, class Out, class Epilogue>
__global__ void __launch_bounds__(Tile::threads)
    grouped_gemm_kernel(gemm_problem<typename Tile::element_type> p, gemm_groups<OffsetT> groups, Out* d, std::int64_t ldd,
                        Epilogue epilogue) {
  using gemm = block_gemm<Tile>;
  const std::int64_t tiles_n = (p.n + Tile::block_n - 1) / Tile::block_n;
  const long long tm = (long long)(blockIdx.x / tiles_n), tn = (long long)(blockIdx.x % tiles_n);
  int group, rows;
  std::int64_t row0;
  // Past the tiles the groups use: the whole block leaves after the scan.
  if (!find_group_tile<Tile::threads, Tile::block_m>(groups, tm, group, row0, rows)) return;
  const std::int64_t col0 = tn * Tile::block_n;
  const int cols = int(p.n - col0 < Tile::block_n ? p.n - col0 : Tile::block_n);
  const std::int64_t b_stride = groups.b_stride > 0 ? groups.b_stride : p.n * p.k;
  const typename Tile::element_type* b = p.b + group * b_stride + (Tile::b_layout == matrix_order::col_major ? col0 * p.ldb : col0);
  gemm g(*dynamic_shared<typename gemm::TempStorage>());
  typename gemm::accumulators acc;
  acc.clear();
  g.multiply({p.a + row0 * p.lda, p.lda, rows, b, p.ldb, cols, p.k, p.vector_loads}, acc);
  g.store(acc, d, ldd, row0, col0, rows, cols, epilogue, group);
}

// Multiprocessors of the current device, asked once per device (the query costs microseconds
// a small GEMM cannot spare).
inline status cached_multiprocessors(int& count) {
  static std::atomic<int> cached[64] = {};
  int device = 0;
  FRUGAL_TRY(status::from_cuda(cudaGetDevice(&device)));
  if (device >= 0 && device < 64 && (count = cached[device].load(std::memory_order_relaxed)) > 0) return status{};
  FRUGAL_TRY(multiprocessor_count(count));
  if (device >= 0 && device < 64) cached[device].store(count, std::memory_order_relaxed);
  return status{};
}

// Raises the dynamic shared memory limit of the kernel `Kernel` once per device (keyed by the
// kernel itself: instantiations with one signature share a function pointer type).
template <auto Kernel>
status allow_dynamic_shared_once(std::size_t bytes) {
  static std::atomic<bool> done[64] = {};
  int device = 0;
  FRUGAL_TRY(status::from_cuda(cudaGetDevice(&device)));
  if (device >= 0 && device < 64 && done[device].load(std::memory_order_relaxed)) return status{};
  FRUGAL_TRY(allow_dynamic_shared(Kernel, bytes));
  if (device >= 0 && device < 64) done[device].store(true, std::memory_order_relaxed);
  return status{};
}

}  // namespace detail
}  // namespace frugal

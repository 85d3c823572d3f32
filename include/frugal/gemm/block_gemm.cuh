// SPDX-License-Identifier: Apache-2.0
//! @file
//! Block level: one block computes one BlockM x BlockN tile of A B on the tensor cores, from a
//! multi-stage cp.async pipeline into swizzled shared memory, ldmatrix and mma, and stores it
//! through an epilogue. The reference pattern for frugal's tensor-core kernels, usable inside your
//! own kernel (CUB's shape: the block's TempStorage in shared memory, here dynamic: it is
//! Tile::shared_bytes, 64 KiB for the default large tile). docs/gemm.md.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/gemm/block_gemm.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/vector_io.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/gemm/gemm_config.cuh>
#include <frugal/tensor_core/cp_async.cuh>
#include <frugal/tensor_core/ldmatrix.cuh>
#include <frugal/tensor_core/mma.cuh>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace frugal {

//! A block's GEMM tile. Every thread of a 1D block of Tile::threads threads calls every member.
template <class Tile>
class block_gemm {
 public:
  using T = typename Tile::element_type;
  static constexpr bool is_tf32 = std::is_same_v<T, float>;
  using shape = std::conditional_t<is_tf32, m16n8k8, m16n8k16>;
  using fragment_a = mma_fragment<mma_operand::a, shape, T>;
  using fragment_b = mma_fragment<mma_operand::b, shape, T>;

  //! The pipeline's stages: Tile::shared_bytes, 16-byte aligned (frugal::dynamic_shared).
  struct TempStorage {
    unsigned char bytes[Tile::shared_bytes];
  };

  //! Each thread's part of the tile: Tile::mma_m x Tile::mma_n m16n8 accumulators.
  struct accumulators {
    mma_accumulator f[Tile::mma_m][Tile::mma_n];
    FRUGAL_DEVICE void clear() {
      FRUGAL_UNROLL
      for (int i = 0; i < Tile::mma_m; ++i)
        FRUGAL_UNROLL
        for (int j = 0; j < Tile::mma_n; ++j) f[i][j].fill(0.0f);
    }
  };

  //! One tile's operands. A: `rows` (<= BlockM) rows from `a` (row-major, lda), K columns.
  //! B: `cols` (<= BlockN) columns from `b`, K rows: b[col * ldb + k] (Tile::b_layout col_major)
  //! or b[k * ldb + col] (row_major). Rows, columns and K beyond these read as zeros.
  //! vector_loads: a and b 16-byte aligned and lda, ldb whole 16-byte multiples, so that every
  //! chunk is one cp.async; otherwise elements are loaded one by one (any alignment, slower).
  //! a_elementwise: A is loaded element by element whatever vector_loads says: for an A in
  //! shared memory (cp.async reads only global memory), such as a tile the block just computed.
  struct operands {
    const T* a;
    std::int64_t lda;
    int rows;
    const T* b;
    std::int64_t ldb;
    int cols;
    std::int64_t k;
    bool vector_loads;
    bool a_elementwise = false;
  };

  FRUGAL_DEVICE explicit block_gemm(TempStorage& storage) : smem_(storage.bytes) {}

  //! acc += A B over the whole K. Ends with every copy landed and a barrier, so the storage may
  //! be reused at once; it does not begin with one: if the block used the storage just before
  //! (a union with other TempStorage), __syncthreads() first, as with CUB's collectives.
  FRUGAL_DEVICE void multiply(const operands& op, accumulators& acc) {
    const std::int64_t k_tiles = (op.k + Tile::block_k - 1) / Tile::block_k;
    FRUGAL_UNROLL
    for (int s = 0; s < Tile::stages - 1; ++s) {
      if (s < k_tiles) load_stage(op, s, s);
      cp_async_commit();
    }
    for (std::int64_t kt = 0; kt < k_tiles; ++kt) {
      cp_async_wait<Tile::stages - 2>();  // this thread's copies of tile kt have landed
      __syncthreads();                     // everyone's have; and stage (kt - 1) is free again
      const std::int64_t next = kt + Tile::stages - 1;
      if (next < k_tiles) load_stage(op, next, int(next % Tile::stages));
      cp_async_commit();  // an empty group at the tail keeps the wait count right
      compute_stage(int(kt % Tile::stages), acc);
    }
    cp_async_wait<0>();
    __syncthreads();
  }

  //! Writes the tile through the epilogue: element (r, c) of the tile (r < rows, c < cols) is
  //! D[row0 + r, col0 + c] = epilogue(acc, row0 + r, col0 + c, group), rounded to Out; a gated
  //! epilogue writes D[row0 + r, (col0 + c) / 2] from the pair (c, c + 1). D is row-major (ldd).
  template <class Out, class Epilogue>
  FRUGAL_DEVICE void store(const accumulators& acc, Out* d, std::int64_t ldd, std::int64_t row0, std::int64_t col0, int rows,
                           int cols, const Epilogue& epilogue, int group) const {
    const int lane = int(lane_index()), warp = int(linear_thread_index() / 32);
    const int g = lane / 4, t = lane % 4;
    const int wm = warp / Tile::warps_n, wn = warp % Tile::warps_n;
    const bool pairs = ldd % 2 == 0 && is_aligned(d, 2 * sizeof(Out));
    FRUGAL_UNROLL
    for (int mi = 0; mi < Tile::mma_m; ++mi)
      FRUGAL_UNROLL
      for (int ni = 0; ni < Tile::mma_n; ++ni)
        FRUGAL_UNROLL
        for (int h = 0; h < 2; ++h) {
          const int r = wm * Tile::warp_m + mi * 16 + g + 8 * h, c = wn * Tile::warp_n + ni * 8 + 2 * t;
          if (r >= rows || c >= cols) continue;
          const float v0 = acc.f[mi][ni].x[2 * h], v1 = acc.f[mi][ni].x[2 * h + 1];
          const std::int64_t row = row0 + r, col = col0 + c;
          Out* out = d + row * ldd;
          if constexpr (is_gated_epilogue_v<Epilogue>) {
            out[col / 2] = from_float<Out>(epilogue(v0, v1, col, group));  // cols is even: c + 1 < cols
          } else if (pairs && c + 1 < cols) {
            vector<Out, 2> v;
            v[0] = from_float<Out>(epilogue(v0, row, col, group));
            v[1] = from_float<Out>(epilogue(v1, row, col + 1, group));
            store_vector(out + col, v);
          } else {
            out[col] = from_float<Out>(epilogue(v0, row, col, group));
            if (c + 1 < cols) out[col + 1] = from_float<Out>(epilogue(v1, row, col + 1, group));
          }
        }
  }

 private:
  static constexpr int chunk_elements = Tile::chunk_elements;

  // One 16-byte chunk of shared memory from `elements` (0..chunk_elements) elements at
  // base + offset, zeros after them. `base` is a valid aligned pointer even when nothing is read.
  FRUGAL_DEVICE static void copy_chunk(unsigned char* dst, const T* base, std::int64_t offset, int elements, bool vector_loads) {
    if (vector_loads) {
      cp_async_16(dst, elements > 0 ? base + offset : base, elements * int(sizeof(T)));
    } else {
      vector<T, chunk_elements> v;
      FRUGAL_UNROLL
      for (int e = 0; e < chunk_elements; ++e) v[e] = e < elements ? base[offset + e] : from_float<T>(0.0f);
      store_vector(reinterpret_cast<T*>(dst), v);
    }
  }
  FRUGAL_DEVICE static int clamp_elements(std::int64_t left) {
    return left <= 0 ? 0 : left >= chunk_elements ? chunk_elements : int(left);
  }

  FRUGAL_DEVICE void load_stage(const operands& op, std::int64_t kt, int stage) {
    unsigned char* sa = smem_ + stage * Tile::stage_bytes;
    unsigned char* sb = sa + Tile::a_chunks * 16;
    const int tid = int(linear_thread_index());
    const std::int64_t k0 = kt * Tile::block_k;
    FRUGAL_UNROLL
    for (int it = 0; it < Tile::a_chunks / Tile::threads; ++it) {
      const int id = it * Tile::threads + tid, row = id / Tile::k_chunks, c = id % Tile::k_chunks;
      const std::int64_t k = k0 + c * chunk_elements;
      const bool in = row < op.rows;
      copy_chunk(sa + swizzled_chunk(row, c, Tile::k_chunks) * 16, op.a, in ? row * op.lda + k : 0,
                 in ? clamp_elements(op.k - k) : 0, op.vector_loads && !op.a_elementwise);
    }
    FRUGAL_UNROLL
    for (int it = 0; it < Tile::b_chunks / Tile::threads; ++it) {
      const int id = it * Tile::threads + tid;
      if constexpr (Tile::b_layout == matrix_order::col_major) {  // BlockN rows (n) of K chunks
        const int n = id / Tile::k_chunks, c = id % Tile::k_chunks;
        const std::int64_t k = k0 + c * chunk_elements;
        const bool in = n < op.cols;
        copy_chunk(sb + swizzled_chunk(n, c, Tile::k_chunks) * 16, op.b, in ? n * op.ldb + k : 0,
                   in ? clamp_elements(op.k - k) : 0, op.vector_loads);
      } else {  // BlockK rows (k) of N chunks
        const int r = id / Tile::n_chunks, c = id % Tile::n_chunks;
        const std::int64_t k = k0 + r;
        const int n = c * chunk_elements;
        const bool in = k < op.k;
        copy_chunk(sb + swizzled_chunk(r, c, Tile::n_chunks) * 16, op.b, in ? k * op.ldb + n : 0,
                   in ? clamp_elements(op.cols - n) : 0, op.vector_loads);
      }
    }
  }

  FRUGAL_DEVICE void compute_stage(int stage, accumulators& acc) const {
    const unsigned char* sa = smem_ + stage * Tile::stage_bytes;
    const unsigned char* sb = sa + Tile::a_chunks * 16;
    const int lane = int(lane_index()), warp = int(linear_thread_index() / 32);
    const int wm = warp / Tile::warps_n, wn = warp % Tile::warps_n;
    FRUGAL_UNROLL
    for (int ks = 0; ks < Tile::k_steps; ++ks) {
      fragment_a a[Tile::mma_m];
      fragment_b b[Tile::mma_n];
      // A (and tf32 A alike): lane l points at row l % 16, chunk 2 ks + l / 16 of its m16 tile;
      // the four 8 x 8 matrices land in the m16n8k16 (m16n8k8) A registers in order.
      FRUGAL_UNROLL
      for (int mi = 0; mi < Tile::mma_m; ++mi) {
        const int row = wm * Tile::warp_m + mi * 16 + lane % 16;
        ldmatrix<4>(a[mi].x, sa + swizzled_chunk(row, 2 * ks + lane / 16, Tile::k_chunks) * 16);
      }
      FRUGAL_UNROLL
      for (int ni = 0; ni < Tile::mma_n; ni += 2) {
        const int n0 = wn * Tile::warp_n + ni * 8;
        if constexpr (Tile::b_layout == matrix_order::col_major) {
          // Matrices (n 0-7, chunk 2ks), (n 0-7, 2ks+1), (n 8-15, 2ks), (n 8-15, 2ks+1).
          std::uint32_t r[4];
          const int n = n0 + (lane / 16) * 8 + lane % 8;
          ldmatrix<4>(r, sb + swizzled_chunk(n, 2 * ks + (lane / 8) % 2, Tile::k_chunks) * 16);
          b[ni].x[0] = r[0], b[ni].x[1] = r[1], b[ni + 1].x[0] = r[2], b[ni + 1].x[1] = r[3];
        } else if constexpr (!is_tf32) {
          // Transposed: matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15).
          std::uint32_t r[4];
          const int k = ks * 16 + ((lane / 8) % 2) * 8 + lane % 8;
          ldmatrix<4, true>(r, sb + swizzled_chunk(k, n0 / 8 + lane / 16, Tile::n_chunks) * 16);
          b[ni].x[0] = r[0], b[ni].x[1] = r[1], b[ni + 1].x[0] = r[2], b[ni + 1].x[1] = r[3];
        } else {
          // tf32 from a row-major B: 32-bit elements cannot be transposed by ldmatrix; b0 = (k t, n g),
          // b1 = (k t + 4, n g) read one by one.
          FRUGAL_UNROLL
          for (int j = 0; j < 2; ++j) {
            const int n = n0 + j * 8 + lane / 4;
            FRUGAL_UNROLL
            for (int i = 0; i < 2; ++i) {
              const int k = ks * 8 + lane % 4 + 4 * i;
              b[ni + j].x[i] = *reinterpret_cast<const std::uint32_t*>(sb + swizzled_chunk(k, n / 4, Tile::n_chunks) * 16 + (n % 4) * 4);
            }
          }
        }
      }
      if constexpr (is_tf32) {  // fp32 data rounded to tf32 (nearest), not truncated by the tensor cores
        FRUGAL_UNROLL
        for (int mi = 0; mi < Tile::mma_m; ++mi)
          FRUGAL_UNROLL
          for (int i = 0; i < 4; ++i) a[mi].x[i] = to_tf32_bits(a[mi].x[i]);
        FRUGAL_UNROLL
        for (int ni = 0; ni < Tile::mma_n; ++ni)
          FRUGAL_UNROLL
          for (int i = 0; i < 2; ++i) b[ni].x[i] = to_tf32_bits(b[ni].x[i]);
      }
      FRUGAL_UNROLL
      for (int mi = 0; mi < Tile::mma_m; ++mi)
        FRUGAL_UNROLL
        for (int ni = 0; ni < Tile::mma_n; ++ni) mma(acc.f[mi][ni], a[mi], b[ni], acc.f[mi][ni]);
    }
  }

  unsigned char* smem_;
};

}  // namespace frugal

// SPDX-License-Identifier: Apache-2.0
//! @file
//! Block level: one block computes a BlockM x BlockN tile of W X^T on the sparse tensor cores,
//! W [out, K] 2:4-sparse in the canonical format (values [out, K / 2], packed indices) and X
//! [tokens, K] dense: mma.sp m16n8k32 with the compressed values loaded by ldmatrix and each
//! lane's metadata register assembled from the canonical index words. The multi-stage cp.async
//! pipeline of block_gemm, with the metadata loaded beside the values. docs/sparse.md.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/sparse/block_sparse_gemm.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/vector_io.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/gemm/gemm_config.cuh>
#include <frugal/sparse/nm.cuh>
#include <frugal/tensor_core/cp_async.cuh>
#include <frugal/tensor_core/ldmatrix.cuh>
#include <frugal/tensor_core/mma.cuh>

#include <cstdint>
#include <type_traits>

namespace frugal::sparse {

//! A BlockM x BlockN tile (BlockM rows of W: output features; BlockN rows of X: tokens) over K in
//! steps of 64, WarpsM x WarpsN warps each owning (BlockM / WarpsM) x (BlockN / WarpsN) of
//! m16n8k32 sparse MMAs, a Stages-deep pipeline. T: __half or __nv_bfloat16.
template <class T, int BlockM, int BlockN, int WarpsM, int WarpsN, int Stages, bool DenseA = false>
struct sparse_gemm_tile {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
                "frugal::sparse::sparse_gemm_tile: T must be __half or __nv_bfloat16 (2:4 sparse tensor cores)");
  using element_type = T;
  static constexpr int block_m = BlockM, block_n = BlockN, block_k = 64, warps_m = WarpsM, warps_n = WarpsN, stages = Stages;
  static constexpr int threads = 32 * WarpsM * WarpsN;
  static constexpr int warp_m = BlockM / WarpsM, warp_n = BlockN / WarpsN;
  static constexpr int mma_m = warp_m / 16, mma_n = warp_n / 8;
  //! DenseA: patterns denser than 2:4 (N > 2) are expanded to a dense A tile and run on the
  //! dense tensor cores (load sparse, compute dense).
  static constexpr bool dense_a = DenseA;
  static constexpr int a_chunks = BlockM * (DenseA ? 8 : 4);  // 64 columns dense, or their 32 kept values, per W row per stage
  static constexpr int b_chunks = BlockN * 8;                 // 64 elements (128 bytes) per X row per stage
  static constexpr int meta_words = DenseA ? 0 : BlockM * 2;  // two index words (32 columns each) per W row
  static constexpr int stage_bytes = (a_chunks + b_chunks) * 16 + (meta_words * 4 + 15) / 16 * 16;
  static constexpr int shared_bytes = Stages * stage_bytes;
  static_assert(threads <= 1024, "frugal::sparse::sparse_gemm_tile: at most 32 warps");
  static_assert(warp_m % 16 == 0 && warp_n % 8 == 0, "frugal::sparse::sparse_gemm_tile: warp tiles must be multiples of 16 x 8");
  static_assert(a_chunks % threads == 0 && b_chunks % threads == 0 && meta_words % threads == 0,
                "frugal::sparse::sparse_gemm_tile: every thread must load the same number of chunks and index words per stage");
  static_assert(Stages >= 2 && Stages <= 8, "frugal::sparse::sparse_gemm_tile: Stages must be in [2, 8]");
};

//! Each lane's metadata register for one m16 tile and one k32 step with selector 0: lanes
//! 4 g + h (h = 0, 1) give rows g (bits 0-15) and g + 8 (bits 16-31), chunks 4 h .. 4 h + 3 of
//! the step (tensor_core_layout::m16n8k32_sp_metadata): the h-th halves of the two rows' canonical
//! index words. Lanes with t = 2, 3 pass the same (the hardware reads only t = 0, 1 here).
FRUGAL_HOST_DEVICE std::uint32_t metadata_register(std::uint32_t word_row_g, std::uint32_t word_row_g8, int lane) {
  const int h = lane & 1;
  return ((word_row_g >> (16 * h)) & 0xffffu) | (((word_row_g8 >> (16 * h)) & 0xffffu) << 16);
}

//! A 2:4 index word with every nibble that is not ascending (idx0 >= idx1: never written by
//! frugal, but possible in a corrupted weight) replaced by 0x4 (positions 0, 1): the hardware then
//! never sees an invalid nibble, and a malformed weight gives defined (if meaningless) values.
//! Per nibble d = 4 + idx1 - idx0 lies in [1, 7] (no borrow between nibbles); valid iff d >= 5.
FRUGAL_HOST_DEVICE std::uint32_t sanitized_metadata(std::uint32_t word) {
  const std::uint32_t lo = word & 0x33333333u, hi = (word >> 2) & 0x33333333u;
  const std::uint32_t d = (hi | 0x44444444u) - lo;
  const std::uint32_t valid = (d >> 2) & (d | (d >> 1)) & 0x11111111u;
  const std::uint32_t mask = valid * 0xfu;
  return (word & mask) | (0x44444444u & ~mask);
}

//! A block's sparse GEMM tile. Every thread of a 1D block of Tile::threads threads calls every
//! member. Pattern is the weight's format: nm<2, 4> is copied as it is; any nm<N, M> with N <= 2
//! (1:4, 2:8, 1:8, 2:16, 1:16) is read compactly and expanded on the way into shared memory to
//! the 2:4 operand (a window of M with at most two kept values is M / 4 valid 2:4 chunks: each
//! chunk keeps its kept values and fills the rest of its pair with zeros).
template <class Tile, class Pattern = nm<2, 4>>
class block_sparse_gemm {
  static_assert(is_nm_v<Pattern>, "frugal::sparse::block_sparse_gemm: Pattern must be frugal::sparse::nm<N, M>");
  static_assert((Pattern::n <= 2) != Tile::dense_a,
                "frugal::sparse::block_sparse_gemm: patterns with N <= 2 run on the sparse tensor cores (DenseA false), denser ones dense (DenseA true)");
  static constexpr bool dense = Tile::dense_a;
  static constexpr bool expand = !dense && !std::is_same_v<Pattern, nm<2, 4>>;
  static_assert(!expand || (Tile::block_m * 2) % Tile::threads == 0,
                "frugal::sparse::block_sparse_gemm: expanding a compact pattern needs BlockM * 2 to be a multiple of the threads");
  static_assert(!dense || (Tile::block_m * 8) % Tile::threads == 0,
                "frugal::sparse::block_sparse_gemm: expanding to a dense tile needs BlockM * 8 to be a multiple of the threads");

 public:
  using T = typename Tile::element_type;
  using fragment_a = mma_fragment<mma_operand::a, m16n8k32_sparse, T>;
  using fragment_b = mma_fragment<mma_operand::b, m16n8k32_sparse, T>;

  struct TempStorage {
    unsigned char bytes[Tile::shared_bytes];
  };
  struct accumulators {
    mma_accumulator f[Tile::mma_m][Tile::mma_n];
    FRUGAL_DEVICE void clear() {
      FRUGAL_UNROLL
      for (int i = 0; i < Tile::mma_m; ++i)
        FRUGAL_UNROLL
        for (int j = 0; j < Tile::mma_n; ++j) f[i][j].fill(0.0f);
    }
  };

  //! One tile's operands: `rows` (<= BlockM) W rows from values (ld_values) and indices
  //! (ld_indices words), `cols` (<= BlockN) X rows from x (ld_x), K logical columns. vector_loads:
  //! values and x 16-byte aligned with rows of 16-byte multiples (cp.async), else element loads.
  struct operands {
    const T* values;
    std::int64_t ld_values;
    const std::uint32_t* indices;
    std::int64_t ld_indices;
    int rows;
    const T* x;
    std::int64_t ld_x;
    int cols;
    std::int64_t k;        //!< columns [k_begin, k) of W and X take part (K for the whole product)
    bool vector_loads;
    std::int64_t k_begin;  //!< a multiple of 64 (split-K: each split its own range)
  };

  FRUGAL_DEVICE explicit block_sparse_gemm(TempStorage& storage) : smem_(storage.bytes) {}

  //! acc(m, n) += sum_k W[m, k] X[n, k] over the whole K. Ends with every copy landed and a
  //! barrier; begins without one (see block_gemm::multiply).
  FRUGAL_DEVICE void multiply(const operands& op, accumulators& acc) {
    const std::int64_t first = op.k_begin / Tile::block_k;
    const std::int64_t k_tiles = (op.k + Tile::block_k - 1) / Tile::block_k - first;
    FRUGAL_UNROLL
    for (int s = 0; s < Tile::stages - 1; ++s) {
      if (s < k_tiles) {
        std::uint32_t words[meta_per_thread] = {};
        load_stage(op, first + s, s);
        load_metadata(op, first + s, words);
        store_metadata(s, words);
      }
      cp_async_commit();
    }
    for (std::int64_t kt = 0; kt < k_tiles; ++kt) {
      cp_async_wait<Tile::stages - 2>();
      __syncthreads();
      const std::int64_t next = kt + Tile::stages - 1;
      std::uint32_t words[meta_per_thread] = {};
      if (next < k_tiles) {
        load_stage(op, first + next, int(next % Tile::stages));
        load_metadata(op, first + next, words);
      }
      cp_async_commit();
      compute_stage(int(kt % Tile::stages), acc);
      // The index words' loads were issued before the MMAs and land in shared memory after them,
      // so their latency hides behind the math (the next barrier publishes them, as the copies).
      if (next < k_tiles) store_metadata(int(next % Tile::stages), words);
    }
    cp_async_wait<0>();
    __syncthreads();
  }

  //! Passes every accumulator to `visit(m, n, value)`: m the tile row (W row), n the tile column
  //! (X row), for m < rows, n < cols.
  template <class Visit>
  FRUGAL_DEVICE void for_each(const accumulators& acc, int rows, int cols, Visit&& visit) const {
    const int lane = int(lane_index()), warp = int(linear_thread_index() / 32);
    const int wm = warp / Tile::warps_n, wn = warp % Tile::warps_n;
    FRUGAL_UNROLL
    for (int mi = 0; mi < Tile::mma_m; ++mi)
      FRUGAL_UNROLL
      for (int ni = 0; ni < Tile::mma_n; ++ni)
        FRUGAL_UNROLL
        for (int i = 0; i < 4; ++i) {
          const auto p = mma_accumulator::position(lane, i);
          const int m = wm * Tile::warp_m + mi * 16 + p.row, n = wn * Tile::warp_n + ni * 8 + p.col;
          if (m < rows && n < cols) visit(m, n, acc.f[mi][ni].x[i]);
        }
  }

 private:
  static constexpr int chunk = 8;  // 16-bit elements per 16-byte chunk

  FRUGAL_DEVICE static void copy_chunk(unsigned char* dst, const T* base, std::int64_t offset, int elements, bool vector_loads) {
    if (vector_loads) {
      cp_async_16(dst, elements > 0 ? base + offset : base, elements * 2);
    } else {
      vector<T, chunk> v;
      FRUGAL_UNROLL
      for (int e = 0; e < chunk; ++e) v[e] = e < elements ? base[offset + e] : from_float<T>(0.0f);
      store_vector(reinterpret_cast<T*>(dst), v);
    }
  }
  FRUGAL_DEVICE static int clamp8(std::int64_t left) { return left <= 0 ? 0 : left >= chunk ? chunk : int(left); }

  // One 32-column word of a row from a compact N:M (N <= 2) row: 8 chunks of 4 columns, each
  // made a valid 2:4 chunk (its kept values ascending, the pair filled with zeros at the lowest
  // free position; an empty chunk is positions 0, 1 of zeros). Writes 16 values and the word.
  FRUGAL_DEVICE static void expand_word(const operands& op, int row, std::int64_t first_column, unsigned char* sa, int chunk_pair,
                                        std::uint32_t& word) {
    constexpr int N = Pattern::n, M = Pattern::m, W = M <= 32 ? 32 / M : 1;
    const std::int64_t windows = Pattern::windows(op.k), first_window = first_column / M;
    float kept_value[W][N];
    int kept_position[W][N];  // column within the 32, or -1
    FRUGAL_UNROLL
    for (int wi = 0; wi < W; ++wi)
      FRUGAL_UNROLL
      for (int j = 0; j < N; ++j) {
        const std::int64_t window = first_window + wi;
        const bool live = row < op.rows && window < windows;
        const int p = live ? int(packed_index<Pattern>(op.indices + row * op.ld_indices, window * N + j)) : 0;
        kept_position[wi][j] = live ? wi * M + p : -1;
        kept_value[wi][j] = live ? to_float(op.values[row * op.ld_values + window * N + j]) : 0.0f;
      }
    vector<T, 8> half[2];
    word = 0;
    FRUGAL_UNROLL
    for (int q = 0; q < 8; ++q) {
      // The (at most two) kept values of chunk q, ascending.
      int n = 0, pa = 0, pb = 0;
      float va = 0.0f, vb = 0.0f;
      FRUGAL_UNROLL
      for (int wi = 0; wi < W; ++wi)
        FRUGAL_UNROLL
        for (int j = 0; j < N; ++j) {
          const int c = kept_position[wi][j];
          const bool here = c >= 4 * q && c < 4 * q + 4;
          pb = here && n == 1 ? c - 4 * q : pb;
          vb = here && n == 1 ? kept_value[wi][j] : vb;
          pa = here && n == 0 ? c - 4 * q : pa;
          va = here && n == 0 ? kept_value[wi][j] : va;
          n += here;
        }
      if (n == 0) pa = 0, pb = 1, va = vb = 0.0f;
      if (n == 1) {  // fill the pair with a zero at the lowest other position
        const int fill = pa == 0 ? 1 : 0;
        if (fill < pa) pb = pa, vb = va, pa = fill, va = 0.0f;
        else pb = fill, vb = 0.0f;
      }
      word |= unsigned(pa | pb << 2) << (4 * q);
      half[q / 4][2 * (q % 4)] = from_float<T>(va);
      half[q / 4][2 * (q % 4) + 1] = from_float<T>(vb);
    }
    store_vector(reinterpret_cast<T*>(sa + swizzled_chunk(row, 2 * chunk_pair, 4) * 16), half[0]);
    store_vector(reinterpret_cast<T*>(sa + swizzled_chunk(row, 2 * chunk_pair + 1, 4) * 16), half[1]);
  }

  // Eight dense columns [first_column, first_column + 8) of a row from its compact N:M form: the
  // windows that cover them, each expanded through a register queue (no run-time array index).
  FRUGAL_DEVICE static void dense_chunk(const operands& op, int row, std::int64_t first_column, unsigned char* dst) {
    constexpr int N = Pattern::n, M = Pattern::m, W = M <= 8 ? 8 / M : 1;  // windows in the chunk
    const std::int64_t windows = Pattern::windows(op.k), first_window = first_column / M;
    const int skip = M > 8 ? int(first_column % M) : 0;  // M = 16: the chunk is half a window
    vector<T, 8> out;
    FRUGAL_UNROLL
    for (int wi = 0; wi < W; ++wi) {
      const std::int64_t window = first_window + wi;
      const bool live = row < op.rows && window < windows;
      unsigned kept = 0;
      float value[N];
      FRUGAL_UNROLL
      for (int j = 0; j < N; ++j) {
        const unsigned p = live ? packed_index<Pattern>(op.indices + row * op.ld_indices, window * N + j) : 0u;
        kept |= live ? 1u << p : 0u;
        value[j] = live ? to_float(op.values[row * op.ld_values + window * N + j]) : 0.0f;
      }
      float full[M];
      expand_window<N, M>(kept, value, full);
      FRUGAL_UNROLL
      for (int i = 0; i < (M < 8 ? M : 8); ++i) out[wi * M + i] = from_float<T>(M > 8 ? (skip ? full[8 + i] : full[i]) : full[i]);
    }
    store_vector(reinterpret_cast<T*>(dst), out);
  }

  FRUGAL_DEVICE void load_stage(const operands& op, std::int64_t kt, int stage) {
    unsigned char* sa = smem_ + stage * Tile::stage_bytes;
    unsigned char* sb = sa + Tile::a_chunks * 16;
    auto* smeta = reinterpret_cast<std::uint32_t*>(sb + Tile::b_chunks * 16);
    const int tid = int(linear_thread_index());
    const std::int64_t k0 = kt * Tile::block_k, kept = nm<2, 4>::values_per_row(op.k);
    if constexpr (dense) {
      FRUGAL_UNROLL
      for (int it = 0; it < Tile::block_m * 8 / Tile::threads; ++it) {
        const int id = it * Tile::threads + tid, row = id / 8, c = id % 8;
        dense_chunk(op, row, k0 + 8 * c, sa + swizzled_chunk(row, c, 8) * 16);
      }
    }
    if constexpr (expand) {
      FRUGAL_UNROLL
      for (int it = 0; it < Tile::block_m * 2 / Tile::threads; ++it) {
        const int id = it * Tile::threads + tid, row = id / 2, w = id % 2;
        std::uint32_t word;
        expand_word(op, row, k0 + 32 * w, sa, w, word);
        smeta[row * 2 + w] = sanitized_metadata(word);  // duplicate positions of a malformed weight
      }
    }
    FRUGAL_UNROLL
    for (int it = 0; it < (expand || dense ? 0 : Tile::a_chunks / Tile::threads); ++it) {
      const int id = it * Tile::threads + tid, row = id / 4, c = id % 4;
      const std::int64_t v0 = k0 / 2 + c * chunk;
      const bool in = row < op.rows;
      copy_chunk(sa + swizzled_chunk(row, c, 4) * 16, op.values, in ? row * op.ld_values + v0 : 0, in ? clamp8(kept - v0) : 0,
                 op.vector_loads);
    }
    FRUGAL_UNROLL
    for (int it = 0; it < Tile::b_chunks / Tile::threads; ++it) {
      const int id = it * Tile::threads + tid, n = id / 8, c = id % 8;
      const std::int64_t kk = k0 + c * chunk;
      const bool in = n < op.cols;
      copy_chunk(sb + swizzled_chunk(n, c, 8) * 16, op.x, in ? n * op.ld_x + kk : 0, in ? clamp8(op.k - kk) : 0, op.vector_loads);
    }
  }

  // The 2:4 index words of a stage (two per W row), read by this thread into registers. Windows
  // past K (or rows past the tile) become 0x4 nibbles (positions 0, 1 of zero values), and
  // malformed nibbles too: the hardware must never see an invalid nibble.
  static constexpr int meta_per_thread = expand || dense ? 1 : Tile::meta_words / Tile::threads;
  FRUGAL_DEVICE void load_metadata(const operands& op, std::int64_t kt, std::uint32_t (&words)[meta_per_thread]) const {
    if constexpr (!expand && !dense) {
      const int tid = int(linear_thread_index());
      const std::int64_t windows = nm<2, 4>::windows(op.k), k0 = kt * Tile::block_k;
      FRUGAL_UNROLL
      for (int it = 0; it < meta_per_thread; ++it) {
        const int id = it * Tile::threads + tid, row = id / 2, w = id % 2;
        const std::int64_t word = k0 / 32 + w, first_window = word * 8;
        const std::int64_t live = row < op.rows ? windows - first_window : 0;
        const int valid = live <= 0 ? 0 : live >= 8 ? 8 : int(live);
        const std::uint32_t keep = valid == 8 ? 0xffffffffu : (1u << (4 * valid)) - 1u;
        const std::uint32_t loaded = valid > 0 ? op.indices[row * op.ld_indices + word] : 0u;
        words[it] = sanitized_metadata((loaded & keep) | (0x44444444u & ~keep));
      }
    }
  }
  FRUGAL_DEVICE void store_metadata(int stage, const std::uint32_t (&words)[meta_per_thread]) {
    if constexpr (!expand && !dense) {
      const int tid = int(linear_thread_index());
      auto* smeta = reinterpret_cast<std::uint32_t*>(smem_ + stage * Tile::stage_bytes + (Tile::a_chunks + Tile::b_chunks) * 16);
      FRUGAL_UNROLL
      for (int it = 0; it < meta_per_thread; ++it) smeta[it * Tile::threads + tid] = words[it];
    }
  }

  FRUGAL_DEVICE void compute_stage(int stage, accumulators& acc) const {
    if constexpr (dense) {
      compute_stage_dense(stage, acc);
      return;
    }
    const unsigned char* sa = smem_ + stage * Tile::stage_bytes;
    const unsigned char* sb = sa + Tile::a_chunks * 16;
    const auto* smeta = reinterpret_cast<const std::uint32_t*>(sb + Tile::b_chunks * 16);
    const int lane = int(lane_index()), warp = int(linear_thread_index() / 32);
    const int wm = warp / Tile::warps_n, wn = warp % Tile::warps_n;
    FRUGAL_UNROLL
    for (int ks = 0; ks < 2; ++ks) {  // two k32 steps per stage
      fragment_a a[Tile::mma_m];
      std::uint32_t e[Tile::mma_m];
      fragment_b b[Tile::mma_n];
      FRUGAL_UNROLL
      for (int mi = 0; mi < Tile::mma_m; ++mi) {
        const int row = wm * Tile::warp_m + mi * 16;
        // The compressed 16 x 16 tile has the dense m16n8k16 A layout: rows l % 16, chunk 2 ks + l / 16.
        ldmatrix<4>(a[mi].x, sa + swizzled_chunk(row + lane % 16, 2 * ks + lane / 16, 4) * 16);
        const int g = lane / 4;
        e[mi] = metadata_register(smeta[(row + g) * 2 + ks], smeta[(row + g + 8) * 2 + ks], lane);
      }
      FRUGAL_UNROLL
      for (int ni = 0; ni < Tile::mma_n; ++ni) {
        // B (k 32 x n 8): matrices = k chunks 4 ks .. 4 ks + 3 of the n8 rows: registers b0 .. b3 in order.
        const int n = wn * Tile::warp_n + ni * 8 + lane % 8;
        ldmatrix<4>(b[ni].x, sb + swizzled_chunk(n, 4 * ks + lane / 8, 8) * 16);
      }
      FRUGAL_UNROLL
      for (int mi = 0; mi < Tile::mma_m; ++mi)
        FRUGAL_UNROLL
        for (int ni = 0; ni < Tile::mma_n; ++ni) mma_sp<0>(acc.f[mi][ni], a[mi], b[ni], acc.f[mi][ni], e[mi]);
    }
  }

  // Dense A (64 columns, 8 chunks per row) on m16n8k16: four k16 steps per stage.
  FRUGAL_DEVICE void compute_stage_dense(int stage, accumulators& acc) const {
    const unsigned char* sa = smem_ + stage * Tile::stage_bytes;
    const unsigned char* sb = sa + Tile::a_chunks * 16;
    const int lane = int(lane_index()), warp = int(linear_thread_index() / 32);
    const int wm = warp / Tile::warps_n, wn = warp % Tile::warps_n;
    FRUGAL_UNROLL
    for (int ks = 0; ks < 4; ++ks) {
      mma_fragment<mma_operand::a, m16n8k16, T> a[Tile::mma_m];
      mma_fragment<mma_operand::b, m16n8k16, T> b[Tile::mma_n];
      FRUGAL_UNROLL
      for (int mi = 0; mi < Tile::mma_m; ++mi)
        ldmatrix<4>(a[mi].x, sa + swizzled_chunk(wm * Tile::warp_m + mi * 16 + lane % 16, 2 * ks + lane / 16, 8) * 16);
      FRUGAL_UNROLL
      for (int ni = 0; ni < Tile::mma_n; ++ni)  // lanes 0-15 give the rows: k chunks 2 ks and 2 ks + 1
        ldmatrix<2>(b[ni].x, sb + swizzled_chunk(wn * Tile::warp_n + ni * 8 + lane % 8, 2 * ks + (lane / 8) % 2, 8) * 16);
      FRUGAL_UNROLL
      for (int mi = 0; mi < Tile::mma_m; ++mi)
        FRUGAL_UNROLL
        for (int ni = 0; ni < Tile::mma_n; ++ni) mma(acc.f[mi][ni], a[mi], b[ni], acc.f[mi][ni]);
    }
  }

  unsigned char* smem_;
};

}  // namespace frugal::sparse

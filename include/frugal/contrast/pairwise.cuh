// SPDX-License-Identifier: Apache-2.0
//! @file
//! The engine under every fused contrastive loss (docs/contrastive.md): anchors A [Na, D] scored
//! against partners B [Nb, D] in 64 x 64 tiles of Z = s (A B^T) / (|a| |b|) + bias on the tensor
//! cores (block_gemm), consumed in registers, never stored. Two block-level passes a loss
//! composes:
//! - the statistics pass (anchor_stats_kernel): each anchor's online log-sum-exp (or, for the
//!   sigmoid loss, its sum of softplus terms), positives, first maximum: O(Na) outputs;
//! - the gradient pass (anchor_gradient_kernel): each anchor block recomputes its tiles, forms
//!   G = dL/dZ from the saved statistics, rounds it to the input type and multiplies it by the
//!   partner tile: dA_hat = s G B_hat, a D-slice of 256 columns per block (wider D: more blocks,
//!   each recomputing Z). Who owns a gradient row sums it alone, in a fixed order: no atomics,
//!   the same bits run to run.
//! The pairing rule says which partners are an anchor's positives (keys that match) and whether
//! an anchor meets itself; G's two sides cover the softmax over rows (InfoNCE), over columns
//! (CLIP's second direction, dY of InfoNCE) and the symmetric sets of NT-Xent and SupCon.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/contrast/pairwise.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/contrast/contrast_config.cuh>
#include <frugal/core/block.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/shared_memory.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/gemm/block_gemm.cuh>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace frugal::contrast {

//! The sizes of a contrastive loss: N rows, M columns, D elements per embedding (rows of both
//! matrices contiguous, D apart).
struct contrast_shape {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  int dim = 0;
};

//! What a softmax loss's forward writes: the mean loss (one float, required), and optionally each
//! row's log-sum-exp [N] (what the backward needs), each row's loss [N] and the top-1 accuracy
//! (one float: the fraction of rows whose first largest logit is their positive).
struct infonce_outputs {
  float* loss = nullptr;
  float* row_lse = nullptr;
  float* row_loss = nullptr;
  float* accuracy = nullptr;
};

//! What a backward writes: dL/d rows [N, D] (required), dL/d cols [M, D] (optional where the
//! loss has columns), dL/d log_scale (one float, optional) and, for SigLIP, dL/d bias. G is
//! float, __half or __nv_bfloat16; the gradients are of the mean loss times the upstream
//! gradient (a device float, or 1 when null).
template <class G>
struct contrast_gradients {
  G* d_rows = nullptr;
  G* d_cols = nullptr;
  float* d_log_scale = nullptr;
  float* d_bias = nullptr;
};

//! Which partners are positives of an anchor. Row index i (the anchor of the softmax over a row
//! of Z) and column index j: positive when row_key(i) == col_key(j), and never i == j when
//! exclude_self (the rows are the columns: NT-Xent, SupCon), where the pair takes no part at all.
enum class pairing : int {
  diagonal,  //!< row i's positive is column offset + i (InfoNCE, CLIP, SigLIP, the local loss)
  views,     //!< 2H views: i and i + H (mod 2H) are positives (NT-Xent)
  labels,    //!< same label (SupCon)
  none,      //!< no positive among the partners (MoCo's queue; its positive key is apart)
};

struct pair_rule {
  pairing kind = pairing::diagonal;
  std::int64_t offset = 0;               //!< diagonal: the global index of row 0
  std::int64_t half = 0;                 //!< views: H
  const std::int32_t* labels = nullptr;  //!< labels: [N]
  bool exclude_self = false;

  FRUGAL_HOST_DEVICE std::int64_t row_key(std::int64_t i) const {
    return kind == pairing::diagonal ? offset + i
           : kind == pairing::views  ? (i < half ? i + half : i - half)
           : kind == pairing::labels ? std::int64_t(labels[i])
                                     : std::int64_t(-1);  // column keys are >= 0 or labels; none: never a match
  }
  FRUGAL_HOST_DEVICE std::int64_t col_key(std::int64_t j) const {
    return kind == pairing::labels ? std::int64_t(labels[j]) : kind == pairing::none ? INT64_MIN : j;
  }
};

namespace detail {

// ---- shared pieces ------------------------------------------------------------------------------

// The tile of Z a block holds: 64 anchors x 64 partners, from T inputs (tf32 for float).
template <class T, int WarpsM, int WarpsN>
using score_tile = gemm_tile<T, matrix_order::col_major, 64, 64, int(64 / sizeof(T)), WarpsM, WarpsN, 3>;

// The product G B of the gradient pass: 64 anchors x a 256-wide slice of D, K = 64 partners.
template <class T>
using gradient_tile = gemm_tile<T, matrix_order::row_major, 64, 256, int(64 / sizeof(T)), 2, 4, 2>;

inline constexpr int gradient_slice = 256;
// The most rows (anchors or partners) a loss takes: the row kernels' grids (8 rows a block) stay
// within 2^31 blocks.
inline constexpr std::int64_t max_rows = std::int64_t(1) << 34;
inline constexpr int gradient_g_ld = 64 + 8;  // G's row pitch in shared memory (elements)
template <class T>
inline constexpr int gradient_shared_bytes =
    (score_tile<T, 2, 4>::shared_bytes > gradient_tile<T>::shared_bytes ? score_tile<T, 2, 4>::shared_bytes : gradient_tile<T>::shared_bytes) +
    64 * gradient_g_ld * int(sizeof(T));
inline constexpr float norm_eps = 1e-12f;  // F.normalize's

// How the logits are formed (shared by both passes).
struct score_params {
  std::int64_t anchors, partners;
  int dim;
  float scale, bias;
  const float* anchor_inv_norm;   // 1 / max(|a|, eps) per anchor, or nullptr (not normalised)
  const float* partner_inv_norm;  // the same for partners
  pair_rule rule;
  bool transposed;    // anchors are the columns of Z (row rule roles exchanged); gradient pass only
  bool vector_loads;  // A and B 16-byte aligned with D a whole number of chunks
};

FRUGAL_DEVICE float inv_norm_at(const float* p, std::int64_t i) { return p ? p[i] : 1.0f; }

// One anchor's running statistics over the partners seen so far. Softmax losses: the online
// log-sum-exp (max, sum), the sum of all logits (label smoothing), the sum and count of positive
// logits; the sigmoid loss: the sum of softplus terms in `sum`. Both: the first largest logit.
template <bool Sigmoid>
struct anchor_stats {
  float max, sum, sum_z, sum_pos, count_pos, best;
  std::int64_t best_col;

  FRUGAL_DEVICE static anchor_stats empty() { return {-INFINITY, 0.0f, 0.0f, 0.0f, 0.0f, -INFINITY, INT64_MAX}; }
  FRUGAL_DEVICE void add(float z, std::int64_t col, bool is_positive) {
    if constexpr (Sigmoid) {
      const float v = is_positive ? -z : z;  // softplus(-label z)
      sum += fmaxf(v, 0.0f) + log1pf(expf(-fabsf(v)));
    } else {
      if (z > max) {
        sum = sum * expf(max - z) + 1.0f;
        max = z;
      } else {
        sum += expf(z - max);
      }
      sum_z += z;
    }
    if (is_positive) sum_pos += z, count_pos += 1.0f;
    if (z > best) best = z, best_col = col;
  }
  // The formula is symmetric in the two operands, so which partner comes first does not change
  // the bits.
  FRUGAL_DEVICE void merge(const anchor_stats& o) {
    if constexpr (Sigmoid) {
      sum += o.sum;
    } else {
      const float m = fmaxf(max, o.max);
      const float a = max == -INFINITY ? 0.0f : sum * expf(max - m), b = o.max == -INFINITY ? 0.0f : o.sum * expf(o.max - m);
      sum = a + b;
      max = m;
      sum_z += o.sum_z;
    }
    sum_pos += o.sum_pos;
    count_pos += o.count_pos;
    if (o.best > best || (o.best == best && o.best_col < best_col)) best = o.best, best_col = o.best_col;
  }
  FRUGAL_DEVICE anchor_stats from_lane(int lane_mask) const {
    anchor_stats o;
    o.max = shfl_xor(max, lane_mask);
    o.sum = shfl_xor(sum, lane_mask);
    o.sum_z = shfl_xor(sum_z, lane_mask);
    o.sum_pos = shfl_xor(sum_pos, lane_mask);
    o.count_pos = shfl_xor(count_pos, lane_mask);
    o.best = shfl_xor(best, lane_mask);
    o.best_col = shfl_xor(best_col, lane_mask);
    return o;
  }
};

// The four lanes of a quad hold the same rows: butterflies over lanes 1 and 2 apart, then lane 0
// of each quad leaves its rows' statistics in shared[warp column][row in the block] (the caller
// syncs before gather_warps).
template <class Tile, bool Sigmoid>
FRUGAL_DEVICE void publish_quads(anchor_stats<Sigmoid> (&stats)[Tile::mma_m][2], anchor_stats<Sigmoid> (&shared)[Tile::warps_n][Tile::block_m]) {
  const int lane = int(lane_index()), warp = int(linear_thread_index() / 32);
  const int g = lane / 4, wm = warp / Tile::warps_n, wn = warp % Tile::warps_n;
  FRUGAL_UNROLL
  for (int mi = 0; mi < Tile::mma_m; ++mi)
    FRUGAL_UNROLL
    for (int h = 0; h < 2; ++h) {
      FRUGAL_UNROLL
      for (int m = 1; m <= 2; m *= 2) stats[mi][h].merge(stats[mi][h].from_lane(m));
      if (lane % 4 == 0) shared[wn][wm * Tile::warp_m + mi * 16 + g + 8 * h] = stats[mi][h];
    }
}

// Row r's statistics from the warps that share it, merged into `s` in warp order.
template <class Tile, bool Sigmoid>
FRUGAL_DEVICE void gather_warps(anchor_stats<Sigmoid>& s, const anchor_stats<Sigmoid> (&shared)[Tile::warps_n][Tile::block_m], int r) {
  FRUGAL_UNROLL
  for (int w = 0; w < Tile::warps_n; ++w) s.merge(shared[w][r]);
}

// Whether a row's first largest logit is one of its positives.
template <bool Sigmoid>
FRUGAL_DEVICE float top1_right(const anchor_stats<Sigmoid>& s, const pair_rule& rule, std::int64_t row) {
  return s.best_col != INT64_MAX && rule.col_key(s.best_col) == rule.row_key(row) ? 1.0f : 0.0f;
}

// Adds one accumulator tile of raw dot products to each row's statistics (Tile's register
// layout: lane g + 8h of an m16n8 tile holds row g + 8h, columns 2t and 2t + 1).
template <class Tile, bool Sigmoid, class Acc>
FRUGAL_DEVICE void add_tile(anchor_stats<Sigmoid> (&stats)[Tile::mma_m][2], const Acc& acc, const score_params& p, std::int64_t row0,
                            std::int64_t col0, int cols, const float (&row_scale)[Tile::mma_m][2], const std::int64_t (&row_key)[Tile::mma_m][2]) {
  const int lane = int(lane_index()), warp = int(linear_thread_index() / 32);
  const int g = lane / 4, t = lane % 4, wm = warp / Tile::warps_n, wn = warp % Tile::warps_n;
  FRUGAL_UNROLL
  for (int ni = 0; ni < Tile::mma_n; ++ni)
    FRUGAL_UNROLL
    for (int e = 0; e < 2; ++e) {
      const int c = wn * Tile::warp_n + ni * 8 + 2 * t + e;
      if (c >= cols) continue;
      const std::int64_t col = col0 + c;
      const float col_scale = inv_norm_at(p.partner_inv_norm, col);
      const std::int64_t key = p.rule.col_key(col);
      FRUGAL_UNROLL
      for (int mi = 0; mi < Tile::mma_m; ++mi)
        FRUGAL_UNROLL
        for (int h = 0; h < 2; ++h) {
          const std::int64_t row = row0 + wm * Tile::warp_m + mi * 16 + g + 8 * h;
          if (p.rule.exclude_self && row == col) continue;
          const float z = acc.f[mi][ni].x[2 * h + e] * row_scale[mi][h] * col_scale + p.bias;
          stats[mi][h].add(z, col, key == row_key[mi][h]);
        }
    }
}

// ---- the statistics pass ------------------------------------------------------------------------

// What the statistics pass writes per anchor (each optional but row_loss): the log-sum-exp, the
// loss, whether the first largest logit is a positive, and the number of positives.
struct anchor_outputs {
  float* lse;
  float* loss;
  float* correct;
  float* positives;
  float smoothing;  // label smoothing eps (diagonal softmax losses only)
  // MoCo: each anchor's positive logit, computed apart (its key is not a partner), merged
  // first: ties go to it, and top-1 is right when it stays the first maximum. Or nullptr.
  const float* apart_positive = nullptr;
};

// A block per 64 anchors over every 64-partner tile; the four lanes of a quad and the warps that
// share an anchor merge in a fixed order.
template <class T, bool Sigmoid>
__global__ void __launch_bounds__(score_tile<T, 2, 4>::threads)
    anchor_stats_kernel(const T* __restrict__ a, const T* __restrict__ b, score_params p, anchor_outputs out) {
  using Tile = score_tile<T, 2, 4>;
  using gemm = block_gemm<Tile>;
  using stats_t = anchor_stats<Sigmoid>;
  __shared__ stats_t across_warps[Tile::warps_n][Tile::block_m];
  gemm block(*dynamic_shared<typename gemm::TempStorage>());
  const int lane = int(lane_index()), warp = int(linear_thread_index() / 32);
  const int g = lane / 4, wm = warp / Tile::warps_n;
  const std::int64_t row0 = std::int64_t(blockIdx.x) * Tile::block_m;
  const int rows = int(p.anchors - row0 < Tile::block_m ? p.anchors - row0 : Tile::block_m);
  stats_t stats[Tile::mma_m][2];
  float row_scale[Tile::mma_m][2];
  std::int64_t row_key[Tile::mma_m][2];
  FRUGAL_UNROLL
  for (int mi = 0; mi < Tile::mma_m; ++mi)
    FRUGAL_UNROLL
    for (int h = 0; h < 2; ++h) {
      const std::int64_t row = row0 + wm * Tile::warp_m + mi * 16 + g + 8 * h;
      const bool in = row < p.anchors;
      stats[mi][h] = stats_t::empty();
      row_scale[mi][h] = p.scale * (in ? inv_norm_at(p.anchor_inv_norm, row) : 1.0f);
      row_key[mi][h] = in ? p.rule.row_key(row) : -1;
    }
  typename gemm::accumulators acc;
  for (std::int64_t col0 = 0; col0 < p.partners; col0 += Tile::block_n) {
    const int cols = int(p.partners - col0 < Tile::block_n ? p.partners - col0 : Tile::block_n);
    acc.clear();
    block.multiply(typename gemm::operands{a + row0 * p.dim, p.dim, rows, b + col0 * p.dim, p.dim, cols, p.dim, p.vector_loads}, acc);
    add_tile<Tile>(stats, acc, p, row0, col0, cols, row_scale, row_key);
  }
  publish_quads<Tile>(stats, across_warps);
  __syncthreads();
  for (int r = int(threadIdx.x); r < rows; r += Tile::threads) {
    const std::int64_t row = row0 + r;
    stats_t s = stats_t::empty();
    if (out.apart_positive) s.add(out.apart_positive[row], -1, true);
    gather_warps<Tile>(s, across_warps, r);
    float loss;
    if constexpr (Sigmoid) {
      loss = s.sum;
    } else {
      const float lse = s.sum > 0.0f ? s.max + logf(s.sum) : -INFINITY;  // no partner at all: -inf
      if (out.lse) out.lse[row] = lse;
      loss = s.count_pos > 0.0f ? lse - (1.0f - out.smoothing) * (s.sum_pos / s.count_pos) : 0.0f;
      if (out.smoothing != 0.0f) loss -= out.smoothing * (s.sum_z / float(p.partners));  // (no partner: no smoothing)
    }
    out.loss[row] = loss;
    if (out.correct)
      out.correct[row] = out.apart_positive ? (s.best_col == -1 ? 1.0f : 0.0f) : top1_right(s, p.rule, row);
    if (out.positives) out.positives[row] = s.count_pos;
  }
}

// ---- the gradient pass --------------------------------------------------------------------------

// One side of G (docs/contrastive.md): for the softmax over rows of Z (the row side) or over its
// columns (the column side), index k contributes
//   W_k [ exp(z - lse_k) - [positive] keep / positives_k - smoothing_share ],
// W_k = weight * upstream / count (0 for an index without a positive when positives are given).
struct gradient_side {
  const float* lse = nullptr;        // nullptr: this side is off
  const float* positives = nullptr;  // per-index positive counts (SupCon), or nullptr: one each
  float weight = 0.0f;
  float keep = 1.0f;             // 1 - label smoothing
  float smoothing_share = 0.0f;  // eps / M: the target's share on every partner (label smoothing)
  const float* count = nullptr;  // a device count the weight is divided by (SupCon's anchors), or nullptr
};

struct gradient_params {
  score_params score;
  gradient_side row_side, col_side;
  const float* upstream;  // dL of the scalar loss, device, or nullptr (1)
};

// An index's part of G, cached per thread.
struct side_values {
  float lse, weight, keep;
};

FRUGAL_DEVICE side_values side_at(const gradient_side& s, std::int64_t k, float factor) {
  if (s.lse == nullptr) return {0.0f, 0.0f, 0.0f};
  const float positives = s.positives ? s.positives[k] : 1.0f;
  if (positives <= 0.0f) return {0.0f, 0.0f, 0.0f};
  return {s.lse[k], s.weight * factor, s.keep / positives};
}

FRUGAL_DEVICE float side_factor(const gradient_side& s, const float* upstream) {
  const float u = upstream ? *upstream : 1.0f;
  if (s.count == nullptr) return u;
  return *s.count > 0.0f ? u / *s.count : 0.0f;
}

FRUGAL_DEVICE float side_term(const side_values& v, float z, bool positive, float share) {
  if (v.weight == 0.0f) return 0.0f;  // also keeps exp(z - (-inf)) of an anchor without partners out
  return v.weight * (expf(z - v.lse) - (positive ? v.keep : 0.0f) - share);
}

// The partial outputs of one gradient block, besides its slice of dA_hat.
struct gradient_outputs_raw {
  float* dots;        // [slices][anchors]: <a_hat, dA_hat> over the slice (the log-scale gradient)
  float* g_sums;      // [anchor blocks]: sum of G over the block's rows (slice 0), or nullptr
  float* row_loss;    // sigmoid, riding along (slice 0): per-anchor loss, or nullptr
  float* row_correct; // ... and top-1
};

// A block per (64 anchors, 256-wide slice of D): over every partner tile, Z recomputed on the
// tensor cores, G formed in registers, rounded to T into shared memory, and
// dA_hat[:, slice] += s G B_hat[:, slice] on the tensor cores, G read from shared memory (its rows
// padded against bank conflicts). Out: dA_hat, the gradient with
// respect to the normalised anchors (the projection back through the norm is a later step).
// Sigmoid: G = W (sigmoid(z) - [positive]), W = row_side's weight, and the loss rides along.
template <class T, class Out, bool Sigmoid>
__global__ void __launch_bounds__(256)
    anchor_gradient_kernel(const T* __restrict__ a, const T* __restrict__ b, gradient_params p, Out* __restrict__ d_anchor,
                           gradient_outputs_raw out) {
  using STile = score_tile<T, 2, 4>;
  using PTile = gradient_tile<T>;
  static_assert(STile::threads == 256 && PTile::threads == 256, "both tiles run on the block's 256 threads");
  using score_gemm = block_gemm<STile>;
  using product_gemm = block_gemm<PTile>;
  union pipelines {
    typename score_gemm::TempStorage score;
    typename product_gemm::TempStorage product;
  };
  struct storage_t {
    pipelines gemm;
    T g[STile::block_m * gradient_g_ld];
  };
  static_assert(sizeof(storage_t) == gradient_shared_bytes<T>, "gradient_shared_bytes matches the kernel's storage");
  __shared__ float across_warps[PTile::warps_n][PTile::block_m];
  __shared__ anchor_stats<true> ride_along[STile::warps_n][STile::block_m];
  __shared__ typename block_reduce<float, 256>::TempStorage reduce_storage;
  storage_t& storage = *dynamic_shared<storage_t>();
  score_gemm scorer(storage.gemm.score);
  product_gemm product(storage.gemm.product);
  T* g_tile = storage.g;
  const score_params& sp = p.score;
  const int lane = int(lane_index()), warp = int(linear_thread_index() / 32);
  const int g = lane / 4, t = lane % 4;
  const int swm = warp / STile::warps_n, swn = warp % STile::warps_n;
  const std::int64_t row0 = std::int64_t(blockIdx.x) * STile::block_m;
  const int rows = int(sp.anchors - row0 < STile::block_m ? sp.anchors - row0 : STile::block_m);
  const int slice0 = int(blockIdx.y) * gradient_slice;
  const int slice_cols = sp.dim - slice0 < gradient_slice ? sp.dim - slice0 : gradient_slice;
  const bool first_slice = blockIdx.y == 0;
  // The anchor's own side of G (rows of Z, or its columns when transposed) and the other.
  const gradient_side& own = sp.transposed ? p.col_side : p.row_side;
  const gradient_side& other = sp.transposed ? p.row_side : p.col_side;
  const float own_factor = side_factor(own, p.upstream), other_factor = side_factor(other, p.upstream);
  const float sig_weight = p.row_side.weight * side_factor(p.row_side, p.upstream);
  // G goes into the product in units of its largest weight (W ~ u/N would push fp16 entries of
  // order 1/(N M) into subnormals), times 2^8 more for fp16 so that probabilities down to ~1/M
  // stay normal; the product is scaled back in fp32.
  const float weight_unit = fmaxf(fmaxf(fabsf(own.weight * own_factor), fabsf(other.weight * other_factor)), fabsf(Sigmoid ? sig_weight : 0.0f));
  const float g_scale = (std::is_same_v<T, __half> ? 256.0f : 1.0f) / (weight_unit > 0.0f ? weight_unit : 1.0f);
  float row_scale[STile::mma_m][2];
  std::int64_t row_key[STile::mma_m][2];
  side_values own_v[STile::mma_m][2];
  anchor_stats<true> stats[STile::mma_m][2];
  FRUGAL_UNROLL
  for (int mi = 0; mi < STile::mma_m; ++mi)
    FRUGAL_UNROLL
    for (int h = 0; h < 2; ++h) {
      const std::int64_t row = row0 + swm * STile::warp_m + mi * 16 + g + 8 * h;
      const bool in = row < sp.anchors;
      row_scale[mi][h] = sp.scale * (in ? inv_norm_at(sp.anchor_inv_norm, row) : 1.0f);
      // The positive test compares the Z-row's row key with the Z-column's column key.
      row_key[mi][h] = !in ? -1 : sp.transposed ? sp.rule.col_key(row) : sp.rule.row_key(row);
      own_v[mi][h] = in ? side_at(own, row, own_factor) : side_values{0.0f, 0.0f, 0.0f};
      stats[mi][h] = anchor_stats<true>::empty();
    }
  const float own_share = own.smoothing_share, other_share = other.smoothing_share;
  float g_sum = 0.0f;
  typename score_gemm::accumulators zacc;
  typename product_gemm::accumulators dacc;
  dacc.clear();
  for (std::int64_t col0 = 0; col0 < sp.partners; col0 += STile::block_n) {
    const int cols = int(sp.partners - col0 < STile::block_n ? sp.partners - col0 : STile::block_n);
    zacc.clear();
    scorer.multiply(typename score_gemm::operands{a + row0 * sp.dim, sp.dim, rows, b + col0 * sp.dim, sp.dim, cols, sp.dim, sp.vector_loads},
                    zacc);
    FRUGAL_UNROLL
    for (int ni = 0; ni < STile::mma_n; ++ni)
      FRUGAL_UNROLL
      for (int e = 0; e < 2; ++e) {
        const int c = swn * STile::warp_n + ni * 8 + 2 * t + e;
        const std::int64_t col = col0 + c;
        const bool col_in = c < cols;
        const float col_scale = col_in ? inv_norm_at(sp.partner_inv_norm, col) : 0.0f;
        const std::int64_t key = !col_in ? -2 : sp.transposed ? sp.rule.row_key(col) : sp.rule.col_key(col);
        const side_values other_v = col_in ? side_at(other, col, other_factor) : side_values{0.0f, 0.0f, 0.0f};
        FRUGAL_UNROLL
        for (int mi = 0; mi < STile::mma_m; ++mi)
          FRUGAL_UNROLL
          for (int h = 0; h < 2; ++h) {
            const int r = swm * STile::warp_m + mi * 16 + g + 8 * h;
            const std::int64_t row = row0 + r;
            float gz = 0.0f;
            if (col_in && r < rows && !(sp.rule.exclude_self && row == col)) {
              const float z = zacc.f[mi][ni].x[2 * h + e] * row_scale[mi][h] * col_scale + sp.bias;
              const bool positive = key == row_key[mi][h];
              if constexpr (Sigmoid) {
                const float sig = z >= 0.0f ? 1.0f / (1.0f + expf(-z)) : expf(z) / (1.0f + expf(z));
                gz = sig_weight * (sig - (positive ? 1.0f : 0.0f));
                if (first_slice) stats[mi][h].add(z, col, positive);
              } else {
                gz = side_term(own_v[mi][h], z, positive, own_share) + side_term(other_v, z, positive, other_share);
              }
              g_sum += gz;
            }
            // G B_hat = sum_j (G_ij / |b_j|) b_j: the partner's norm folds into G. fp16 saturates
            // rather than overflow (a zero row, 1 / eps, then still contributes 0, not inf * 0);
            // a NaN stays a NaN.
            float folded = gz * col_scale * g_scale;
            if constexpr (std::is_same_v<T, __half>)
              if (fabsf(folded) > 65504.0f) folded = copysignf(65504.0f, folded);
            g_tile[r * gradient_g_ld + c] = from_float<T>(folded);
          }
      }
    __syncthreads();  // the G tile is whole
    product.multiply(typename product_gemm::operands{g_tile, gradient_g_ld, rows, b + col0 * sp.dim + slice0, sp.dim, slice_cols,
                                                     std::int64_t(cols), sp.vector_loads, true},
                     dacc);  // ends with a barrier: G and the pipelines are free again
  }
  // dA_hat = s (G B_hat), and each row's <a_hat, dA_hat> over this slice.
  const int pwm = warp / PTile::warps_n, pwn = warp % PTile::warps_n;
  float dots[PTile::mma_m][2];
  FRUGAL_UNROLL
  for (int mi = 0; mi < PTile::mma_m; ++mi)
    FRUGAL_UNROLL
    for (int h = 0; h < 2; ++h) {
      const int r = pwm * PTile::warp_m + mi * 16 + g + 8 * h;
      const std::int64_t row = row0 + r;
      float dot = 0.0f;
      if (r < rows) {
        const float inv = inv_norm_at(sp.anchor_inv_norm, row);
        FRUGAL_UNROLL
        for (int ni = 0; ni < PTile::mma_n; ++ni)
          FRUGAL_UNROLL
          for (int e = 0; e < 2; ++e) {
            const int c = pwn * PTile::warp_n + ni * 8 + 2 * t + e;
            if (c >= slice_cols) continue;
            const float v = sp.scale * dacc.f[mi][ni].x[2 * h + e] / g_scale;
            d_anchor[row * sp.dim + slice0 + c] = from_float<Out>(v);
            dot += to_float(a[row * sp.dim + slice0 + c]) * inv * v;
          }
      }
      dot += shfl_xor(dot, 1);
      dot += shfl_xor(dot, 2);
      dots[mi][h] = dot;
    }
  if (t == 0)
    FRUGAL_UNROLL
    for (int mi = 0; mi < PTile::mma_m; ++mi)
      FRUGAL_UNROLL
      for (int h = 0; h < 2; ++h) across_warps[pwn][pwm * PTile::warp_m + mi * 16 + g + 8 * h] = dots[mi][h];
  // The sigmoid loss's forward rides along in slice 0: its per-anchor statistics.
  if (Sigmoid && first_slice && out.row_loss) publish_quads<STile>(stats, ride_along);
  __syncthreads();
  for (int r = int(threadIdx.x); r < rows; r += 256) {
    float dot = across_warps[0][r];
    FRUGAL_UNROLL
    for (int w = 1; w < PTile::warps_n; ++w) dot += across_warps[w][r];
    out.dots[std::int64_t(blockIdx.y) * sp.anchors + row0 + r] = dot;
    if (Sigmoid && first_slice && out.row_loss) {
      anchor_stats<true> s = anchor_stats<true>::empty();  // as the statistics pass does: the same bits
      gather_warps<STile>(s, ride_along, r);
      out.row_loss[row0 + r] = s.sum;
      if (out.row_correct) out.row_correct[row0 + r] = top1_right(s, sp.rule, row0 + r);
    }
  }
  if (out.g_sums && first_slice) {
    const float total = block_reduce<float, 256>(reduce_storage).sum(g_sum);
    if (threadIdx.x == 0) out.g_sums[blockIdx.x] = total;
  }
}

// ---- O(N D) steps around the passes --------------------------------------------------------------

inline constexpr int row_threads = 256;  // 8 warps, a warp per row

// The row this warp owns in the O(N D) kernels.
FRUGAL_DEVICE std::int64_t warp_row() { return std::int64_t(blockIdx.x) * (row_threads / 32) + threadIdx.x / 32; }

// <a_row, b_row> by one warp: lanes over D, then the butterfly, in a fixed order.
template <class T>
FRUGAL_DEVICE float warp_row_dot(const T* a, const T* b, std::int64_t row, int dim) {
  float s = 0.0f;
  for (int c = int(lane_index()); c < dim; c += 32) s += to_float(a[row * dim + c]) * to_float(b[row * dim + c]);
  return warp_sum(s);
}

// 1 / max(|x_i|, eps) per row: a warp per row, lanes over D in a fixed order.
template <class T>
__global__ void __launch_bounds__(row_threads) inverse_norms_kernel(const T* __restrict__ x, std::int64_t n, int dim, float* __restrict__ out) {
  const std::int64_t row = warp_row();
  if (row >= n) return;
  const float s = warp_row_dot(x, x, row, dim);
  if (lane_index() == 0) out[row] = 1.0f / fmaxf(sqrtf(s), norm_eps);
}

// Back through x_hat = x / max(|x|, eps): dx = (g - x_hat <x_hat, g>) / |x| (g / eps below eps),
// in place on the gradient rows; dot_i = <x_hat_i, g_i> summed over the slices in order.
template <class T, class Out>
__global__ void __launch_bounds__(row_threads)
    unnormalize_kernel(const T* __restrict__ x, const float* __restrict__ inv_norm, const float* __restrict__ dots, int slices,
                       std::int64_t n, int dim, Out* __restrict__ grad) {
  const std::int64_t row = warp_row();
  if (row >= n) return;
  float dot = dots[row];
  for (int s = 1; s < slices; ++s) dot += dots[std::int64_t(s) * n + row];
  const float inv = inv_norm[row];
  const bool projects = inv < 1.0f / norm_eps;  // |x| >= eps
  for (int c = int(lane_index()); c < dim; c += 32) {
    const float gx = to_float(grad[row * dim + c]);
    const float v = projects ? (gx - to_float(x[row * dim + c]) * inv * dot) * inv : gx * inv;
    grad[row * dim + c] = from_float<Out>(v);
  }
}

// MoCo's positive logits, apart from the partners: z0_i = s <q_i, k_i> / (|q_i| |k_i|), a warp
// per row in a fixed order.
template <class T>
__global__ void __launch_bounds__(row_threads)
    positive_logits_kernel(const T* __restrict__ q, const T* __restrict__ k, const float* __restrict__ inv_q, const float* __restrict__ inv_k,
                           std::int64_t n, int dim, float scale, float* __restrict__ out) {
  const std::int64_t row = warp_row();
  if (row >= n) return;
  const float s = warp_row_dot(q, k, row, dim);
  if (lane_index() == 0) out[row] = scale * s * inv_norm_at(inv_q, row) * inv_norm_at(inv_k, row);
}

// MoCo's positive term of dQ_hat: g_i += c_i k_hat_i, c_i = s w u (exp(z0_i - lse_i) - 1), and
// the anchor's row dot (slice 0's entry) gains c_i <q_hat_i, k_hat_i> = c_i z0_i / s.
template <class T, class Out>
__global__ void __launch_bounds__(row_threads)
    positive_term_kernel(const T* __restrict__ k, const float* __restrict__ inv_k, const float* __restrict__ z0, const float* __restrict__ lse,
                         const float* __restrict__ upstream, float weight, float scale, std::int64_t n, int dim, Out* __restrict__ grad,
                         float* __restrict__ dots) {
  const std::int64_t row = warp_row();
  if (row >= n) return;
  const float c = scale * weight * (upstream ? *upstream : 1.0f) * (expf(z0[row] - lse[row]) - 1.0f);
  const float inv = inv_norm_at(inv_k, row);
  for (int col = int(lane_index()); col < dim; col += 32)
    grad[row * dim + col] = from_float<Out>(to_float(grad[row * dim + col]) + c * to_float(k[row * dim + col]) * inv);
  if (lane_index() == 0) dots[row] += c * z0[row] / scale;
}

inline constexpr int sum_threads = 256;

// out = factor * (sum of values[0..n)) / divisor (a device float, when given; 0 when it is not
// positive), a strided share per thread then the block, in a fixed order. count_positive: the
// number of values > 0 instead of their sum (SupCon's anchors with a positive).
template <int = 0>
__global__ void __launch_bounds__(sum_threads) fixed_sum_kernel(const float* __restrict__ values, std::int64_t n, float factor, bool count_positive,
                                                                const float* __restrict__ divisor, float* __restrict__ out) {
  __shared__ typename block_reduce<float, sum_threads>::TempStorage storage;
  float s = 0.0f;
  for (std::int64_t i = threadIdx.x; i < n; i += sum_threads) s += count_positive ? (values[i] > 0.0f ? 1.0f : 0.0f) : values[i];
  s = block_reduce<float, sum_threads>(storage).sum(s);
  if (threadIdx.x == 0) *out = divisor == nullptr ? factor * s : *divisor > 0.0f ? factor * s / *divisor : 0.0f;
}

// ---- drivers the device-wide losses share ------------------------------------------------------

// Carves a two-phase workspace: sized with a null base (the size query), then laid out the same
// way over the caller's bytes, every piece 16-byte aligned.
struct workspace_carver {
  unsigned char* base;
  std::size_t used = 0;
  explicit workspace_carver(void* workspace)
      : base(workspace ? static_cast<unsigned char*>(workspace) + (16 - reinterpret_cast<std::uintptr_t>(workspace) % 16) % 16 : nullptr) {}
  template <class U>
  U* take(std::int64_t count) {
    used = (used + 15) / 16 * 16;
    U* p = base ? reinterpret_cast<U*>(base + used) : nullptr;
    used += std::size_t(count > 0 ? count : 0) * sizeof(U);
    return p;
  }
  std::size_t bytes() const { return used + 15; }
};

inline int gradient_slices(int dim) { return (dim + gradient_slice - 1) / gradient_slice; }

template <class T>
bool vector_loadable(const T* a, const T* b, int dim) {
  return dim % int(16 / sizeof(T)) == 0 && is_aligned(a, 16) && is_aligned(b, 16);
}

template <class T>
status launch_inverse_norms(const T* x, std::int64_t n, int dim, float* out, cudaStream_t stream) {
  if (n <= 0) return status{};
  return launch(inverse_norms_kernel<T>, launch_config{dim3(unsigned((n + row_threads / 32 - 1) / (row_threads / 32))), dim3(row_threads), 0, stream},
                x, n, dim, out);
}

// The inverse norms of the rows and of the columns, when normalising (the pointers are null
// otherwise).
template <class T>
status launch_inverse_norms(const T* rows, std::int64_t n, float* inv_rows, const T* cols, std::int64_t m, float* inv_cols, int dim,
                            cudaStream_t stream) {
  if (inv_rows) FRUGAL_TRY(launch_inverse_norms(rows, n, dim, inv_rows, stream));
  return inv_cols ? launch_inverse_norms(cols, m, dim, inv_cols, stream) : status{};
}

// The statistics pass over all anchors.
template <class T, bool Sigmoid>
status stats_pass(const T* a, const T* b, const score_params& p, const anchor_outputs& out, cudaStream_t stream) {
  if (p.anchors <= 0) return status{};
  using Tile = score_tile<T, 2, 4>;
  const auto kernel = anchor_stats_kernel<T, Sigmoid>;
  FRUGAL_TRY(allow_dynamic_shared(kernel, Tile::shared_bytes));
  const std::int64_t blocks = (p.anchors + Tile::block_m - 1) / Tile::block_m;
  return launch(kernel, launch_config{dim3(unsigned(blocks)), dim3(Tile::threads), std::size_t(Tile::shared_bytes), stream}, a, b, p, out);
}

inline dim3 row_grid(std::int64_t rows) { return dim3(unsigned((rows + row_threads / 32 - 1) / (row_threads / 32))); }

// Back through the normalisation of the anchors (when they are normalised).
template <class T, class Out>
status launch_unnormalize(const T* a, const score_params& sp, const float* dots, Out* d_anchor, cudaStream_t stream) {
  if (sp.anchor_inv_norm == nullptr || sp.anchors <= 0) return status{};
  return launch(unnormalize_kernel<T, Out>, launch_config{row_grid(sp.anchors), dim3(row_threads), 0, stream}, a, sp.anchor_inv_norm, dots,
                gradient_slices(sp.dim), sp.anchors, sp.dim, d_anchor);
}

// The gradient pass over all anchors: dA_hat into d_anchor, then (project) back through the norm
// when the anchors are normalised (p.score.anchor_inv_norm). dots: [slices][anchors] floats.
template <class T, class Out, bool Sigmoid>
status gradient_pass(const T* a, const T* b, const gradient_params& p, Out* d_anchor, const gradient_outputs_raw& out, cudaStream_t stream,
                     bool project = true) {
  const score_params& sp = p.score;
  if (sp.anchors <= 0) return status{};
  const auto kernel = anchor_gradient_kernel<T, Out, Sigmoid>;
  FRUGAL_TRY(allow_dynamic_shared(kernel, gradient_shared_bytes<T>));
  const std::int64_t blocks = (sp.anchors + 63) / 64;
  FRUGAL_TRY(launch(kernel,
                    launch_config{dim3(unsigned(blocks), unsigned(gradient_slices(sp.dim))), dim3(256), std::size_t(gradient_shared_bytes<T>), stream},
                    a, b, p, d_anchor, out));
  return project ? launch_unnormalize(a, sp, static_cast<const float*>(out.dots), d_anchor, stream) : status{};
}

// out = factor * (sum of n values) [/ *divisor], or 0 when n = 0; or the count of positive values.
inline status launch_fixed_sum(const float* values, std::int64_t n, float factor, float* out, cudaStream_t stream,
                               const float* divisor = nullptr, bool count_positive = false) {
  return launch(fixed_sum_kernel<>, launch_config{dim3(1), dim3(sum_threads), 0, stream}, values, n, factor, count_positive, divisor, out);
}

template <class T>
score_params make_score(const T* a, const T* b, std::int64_t anchors, std::int64_t partners, int dim, const logit_options& o,
                        const float* anchor_inv_norm, const float* partner_inv_norm, pair_rule rule, bool transposed) {
  score_params p;
  p.anchors = anchors;
  p.partners = partners;
  p.dim = dim;
  p.scale = std::exp(clamp_log_scale(o).value);
  p.bias = o.bias;
  p.anchor_inv_norm = anchor_inv_norm;
  p.partner_inv_norm = partner_inv_norm;
  p.rule = rule;
  p.transposed = transposed;
  p.vector_loads = vector_loadable(a, b, dim);
  return p;
}

// The softmax loss's gradient side for an index set of `count` anchors (weight 1 / count).
inline gradient_side softmax_side(const float* lse, float weight, float smoothing = 0.0f, std::int64_t partners = 1) {
  gradient_side s;
  s.lse = lse;
  s.weight = weight;
  s.keep = 1.0f - smoothing;
  s.smoothing_share = partners > 0 ? smoothing / float(partners) : 0.0f;
  return s;
}

// What every loss checks of its options.
inline const char* invalid_logit_options(const logit_options& o) {
  if (!std::isfinite(o.log_scale) || !std::isfinite(o.min_log_scale) || !std::isfinite(o.max_log_scale) || o.min_log_scale > o.max_log_scale)
    return "frugal::contrast: log_scale and its bounds must be finite, min <= max";
  if (clamp_log_scale(o).value > 80.0f) return "frugal::contrast: the clamped log_scale must be at most 80 (exp overflows fp32 beyond ~88)";
  if (!std::isfinite(o.bias)) return "frugal::contrast: the bias must be finite";
  return nullptr;
}

}  // namespace detail
}  // namespace frugal::contrast

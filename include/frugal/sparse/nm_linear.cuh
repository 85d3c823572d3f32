// SPDX-License-Identifier: Apache-2.0
//! @file
//! frugal::sparse::nm_linear: Y = epilogue(X W^T) for a linear layer whose weight W [out, K] is
//! 2:4-sparse along K in the canonical compressed format (part 1), on the sparse tensor cores
//! (mma.sp m16n8k32). X [tokens, K] dense row-major, Y [tokens, out] row-major; bf16 / f16 in,
//! fp32 accumulate, fp32 / bf16 / f16 out. The sparse operand is the instruction's A: the kernel
//! computes Y^T = W X^T and writes Y. docs/sparse.md.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/sparse/nm_linear.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/shared_memory.cuh>
#include <frugal/gemm/detail/gemm_checks.cuh>
#include <frugal/gemm/detail/gemm_kernels.cuh>
#include <frugal/gemm/gemm_config.cuh>
#include <frugal/gemm/grouped_gemm.cuh>
#include <frugal/sparse/block_sparse_gemm.cuh>
#include <frugal/sparse/nm.cuh>

#include <cstdint>
#include <type_traits>

namespace frugal::sparse {

//! A compressed N:M weight W [out, K] in the canonical format: values [out, ld_values] and
//! indices [out, ld_indices]. For a grouped product, expert g's weight starts values_stride and
//! indices_stride elements after expert g - 1's (0: packed, out * ld).
template <class T>
struct nm_weight {
  const T* values = nullptr;
  std::int64_t ld_values = 0;
  const std::uint32_t* indices = nullptr;
  std::int64_t ld_indices = 0;
  std::int64_t values_stride = 0;
  std::int64_t indices_stride = 0;
};

namespace detail {

template <class T>
struct sparse_linear_problem {
  const T* x;
  std::int64_t ld_x;
  const T* values;
  std::int64_t ld_values;
  const std::uint32_t* indices;
  std::int64_t ld_indices;
  std::int64_t tokens, out, k;
  bool vector_loads;
};

// Tiles: prefill (128 features x 128 tokens, 8 warps of 64 x 32: a 64 x 64 warp tile of k32 sparse
// MMAs would spill), medium (64 x 64), decode (64 features x 16 tokens).
// Patterns denser than two kept values per window expand to a dense A tile (DenseA).
template <class T, class P>
using sparse_tile_large = sparse_gemm_tile<T, 128, 128, 2, 4, 3, (P::n > 2)>;
template <class T, class P>
using sparse_tile_medium = sparse_gemm_tile<T, 64, 64, 2, 2, 3, (P::n > 2)>;
template <class T, class P>
using sparse_tile_decode = sparse_gemm_tile<T, 64, 16, 4, 1, 4, (P::n > 2)>;

// (A minimum of one block per SM: without it ptxas held the expanding kernels to 128 registers and spilled.)
template <class Tile, class Pattern, class Out, class Epilogue>
__global__ void __launch_bounds__(Tile::threads, 1)
    nm_linear_kernel(sparse_linear_problem<typename Tile::element_type> p, Out* y, std::int64_t ld_y, Epilogue epilogue, float* partial,
                     int splits) {
  using gemm = block_sparse_gemm<Tile, Pattern>;
  const std::int64_t tiles_m = (p.out + Tile::block_m - 1) / Tile::block_m, tiles_n = (p.tokens + Tile::block_n - 1) / Tile::block_n;
  constexpr std::int64_t band = 8;  // feature tiles that sweep the tokens together (their W rows stay in L2)
  const std::int64_t id = blockIdx.x, per_band = band * tiles_n, first_m = id / per_band * band;
  const std::int64_t band_rows = tiles_m - first_m < band ? tiles_m - first_m : band;
  const std::int64_t tm = first_m + (id % per_band) % band_rows, tn = (id % per_band) / band_rows;
  const std::int64_t row0 = tm * Tile::block_m, col0 = tn * Tile::block_n;
  const int rows = int(p.out - row0 < Tile::block_m ? p.out - row0 : Tile::block_m);
  const int cols = int(p.tokens - col0 < Tile::block_n ? p.tokens - col0 : Tile::block_n);
  // Split-K: split blockIdx.y takes an equal run of 64-column steps.
  const std::int64_t steps = (p.k + Tile::block_k - 1) / Tile::block_k, per_split = (steps + splits - 1) / splits;
  const std::int64_t k_begin = blockIdx.y * per_split * Tile::block_k;
  const std::int64_t k_end = (blockIdx.y + 1) * per_split * Tile::block_k < p.k ? (blockIdx.y + 1) * per_split * Tile::block_k : p.k;
  gemm g(*dynamic_shared<typename gemm::TempStorage>());
  typename gemm::accumulators acc;
  acc.clear();
  if (k_begin < k_end)
    g.multiply({p.values + row0 * p.ld_values, p.ld_values, p.indices + row0 * p.ld_indices, p.ld_indices, rows, p.x + col0 * p.ld_x, p.ld_x,
                cols, k_end, p.vector_loads, k_begin},
               acc);
  // Accumulator (feature m, token n) is Y[token, feature]; with splits, a partial sum to reduce.
  g.for_each(acc, rows, cols, [&](int m, int n, float v) {
    const std::int64_t token = col0 + n, feature = row0 + m;
    if (splits > 1) partial[(blockIdx.y * p.tokens + token) * p.out + feature] = v;
    else y[token * ld_y + feature] = from_float<Out>(epilogue(v, token, feature, 0));
  });
}

// The split-K reduction: each output sums its splits in order (deterministic), then the epilogue.
template <class Out, class Epilogue>
__global__ void split_k_reduce_kernel(const float* partial, int splits, std::int64_t tokens, std::int64_t out, Out* y, std::int64_t ld_y,
                                      Epilogue epilogue) {
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < tokens * out; i += std::int64_t(gridDim.x) * blockDim.x) {
    float sum = partial[i];
    for (int s = 1; s < splits; ++s) sum += partial[s * tokens * out + i];
    const std::int64_t token = i / out, feature = i % out;
    y[token * ld_y + feature] = from_float<Out>(epilogue(sum, token, feature, 0));
  }
}

// Grouped: token tiles per group (find_group_tile), feature tiles across; expert g's weight.
template <class Tile, class Pattern, class OffsetT, class Out, class Epilogue>
__global__ void __launch_bounds__(Tile::threads, 1)
    nm_grouped_linear_kernel(sparse_linear_problem<typename Tile::element_type> p, gemm_groups<OffsetT> groups, std::int64_t values_stride,
                             std::int64_t indices_stride, Out* y, std::int64_t ld_y, Epilogue epilogue) {
  using gemm = block_sparse_gemm<Tile, Pattern>;
  const std::int64_t tiles_m = (p.out + Tile::block_m - 1) / Tile::block_m;
  const long long tn = (long long)(blockIdx.x / tiles_m), tm = (long long)(blockIdx.x % tiles_m);
  int group, cols;
  std::int64_t col0;
  if (!frugal::detail::find_group_tile<Tile::threads, Tile::block_n>(groups, tn, group, col0, cols)) return;
  const std::int64_t row0 = tm * Tile::block_m;
  const int rows = int(p.out - row0 < Tile::block_m ? p.out - row0 : Tile::block_m);
  gemm g(*dynamic_shared<typename gemm::TempStorage>());
  typename gemm::accumulators acc;
  acc.clear();
  g.multiply({p.values + group * values_stride + row0 * p.ld_values, p.ld_values, p.indices + group * indices_stride + row0 * p.ld_indices,
              p.ld_indices, rows, p.x + col0 * p.ld_x, p.ld_x, cols, p.k, p.vector_loads, 0},
             acc);
  g.for_each(acc, rows, cols, [&](int m, int n, float v) {
    const std::int64_t token = col0 + n, feature = row0 + m;
    y[token * ld_y + feature] = from_float<Out>(epilogue(v, token, feature, group));
  });
}

template <class Tile, class Pattern, class Out, class Epilogue>
status launch_nm_linear(const sparse_linear_problem<typename Tile::element_type>& p, Out* y, std::int64_t ld_y, const Epilogue& epilogue,
                        float* partial, int splits, cudaStream_t stream) {
  FRUGAL_TRY((frugal::detail::allow_dynamic_shared_once<nm_linear_kernel<Tile, Pattern, Out, Epilogue>>(Tile::shared_bytes)));
  const std::int64_t tiles = ((p.out + Tile::block_m - 1) / Tile::block_m) * ((p.tokens + Tile::block_n - 1) / Tile::block_n);
  if (tiles > INT32_MAX) return status::invalid("frugal::sparse::nm_linear: more than 2^31 - 1 tiles");
  FRUGAL_TRY(launch(nm_linear_kernel<Tile, Pattern, Out, Epilogue>,
                    launch_config{dim3(unsigned(tiles), unsigned(splits)), dim3(Tile::threads), std::size_t(Tile::shared_bytes), stream}, p,
                    y, ld_y, epilogue, partial, splits));
  if (splits == 1) return status{};
  const std::int64_t n = p.tokens * p.out;
  return launch(split_k_reduce_kernel<Out, Epilogue>, launch_config{dim3(unsigned((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096)), dim3(256), 0, stream},
                static_cast<const float*>(partial), splits, p.tokens, p.out, y, ld_y, epilogue);
}

// Decoding (<= 16 tokens) with fewer feature tiles than multiprocessors splits K so that every
// multiprocessor streams weights: up to 2 blocks per multiprocessor, at least 4 steps of 64 per split.
inline int decode_splits(std::int64_t out, std::int64_t k, int sms) {
  const std::int64_t tiles = (out + 63) / 64, steps = (k + 63) / 64;
  if (tiles >= sms) return 1;
  std::int64_t splits = (2 * sms + tiles - 1) / tiles;
  splits = splits < steps / 4 ? splits : steps / 4;
  return int(splits < 1 ? 1 : splits > 32 ? 32 : splits);
}

}  // namespace detail

namespace detail {
template <class Pattern, class T, class Out, class Epilogue>
status check_nm_linear(bool grouped, const matrix_ref<const T>& x, const nm_weight<T>& w, const matrix_ref<Out>& y, std::int64_t tokens,
                       std::int64_t out, std::int64_t k, const Epilogue& epilogue) {
#define FRUGAL_NM_MESSAGE(text) (grouped ? "frugal::sparse::nm_grouped_linear: " text : "frugal::sparse::nm_linear: " text)
  if (tokens < 0 || out < 0 || k < 0) return status::invalid(FRUGAL_NM_MESSAGE("tokens, out and K must be >= 0"));
  if (tokens > INT32_MAX || out > INT32_MAX) return status::invalid(FRUGAL_NM_MESSAGE("tokens and out must fit in int32"));
  if (x.order != matrix_order::row_major || y.order != matrix_order::row_major)
    return status::invalid(FRUGAL_NM_MESSAGE("X and Y must be row-major"));
  if (const char* why = frugal::detail::epilogue_invalid(epilogue, tokens, out, 0)) return status::invalid(why);
  if (w.values_stride < 0 || w.indices_stride < 0) return status::invalid(FRUGAL_NM_MESSAGE("weight strides must be >= 0"));
  if (tokens == 0 || out == 0) return status{};
  if (!y.data || (k > 0 && (!x.data || !w.values || !w.indices))) return status::invalid(FRUGAL_NM_MESSAGE("a pointer is null"));
  if (k > 0 && x.ld < k) return status::invalid(FRUGAL_NM_MESSAGE("ld_x must be >= K"));
  if (k > 0 && w.ld_values < Pattern::values_per_row(k)) return status::invalid(FRUGAL_NM_MESSAGE("ld_values must be >= nm<N, M>::values_per_row(K)"));
  if (k > 0 && w.ld_indices < Pattern::index_words_per_row(k))
    return status::invalid(FRUGAL_NM_MESSAGE("ld_indices must be >= nm<N, M>::index_words_per_row(K)"));
  if (y.ld < epilogue_output_columns<Epilogue>(out)) return status::invalid(FRUGAL_NM_MESSAGE("ld_y must be >= out"));
  if (!is_aligned(x.data, sizeof(T)) || !is_aligned(w.values, sizeof(T)) || !is_aligned(w.indices, 4) || !is_aligned(y.data, sizeof(Out)))
    return status::misaligned(FRUGAL_NM_MESSAGE("a pointer is not aligned to its element size"));
  // Y over an operand would change what other blocks still read (the grouped weights: at least one expert's).
  using frugal::detail::byte_range;
  const std::int64_t y_cols = epilogue_output_columns<Epilogue>(out), kept = Pattern::values_per_row(k), words = Pattern::index_words_per_row(k);
  const byte_range y_range(y.data, tokens, y_cols, y.ld), x_range(x.data, tokens, k, x.ld), values_range(w.values, out, kept, w.ld_values),
      indices_range(w.indices, out, words, w.ld_indices);
  if (k > 0 && frugal::detail::any_overlap(frugal::detail::ranges(y_range), frugal::detail::ranges(x_range, values_range, indices_range)))
    return status::invalid(FRUGAL_NM_MESSAGE("Y must not overlap X or the weight"));
#undef FRUGAL_NM_MESSAGE
  return status{};
}

// cp.async for X, and for 2:4 values (compact patterns are read value by value and expanded).
template <class Pattern, class T>
sparse_linear_problem<T> nm_problem(const matrix_ref<const T>& x, const nm_weight<T>& w, std::int64_t tokens, std::int64_t out, std::int64_t k) {
  const bool x_vector = is_aligned(x.data, 16) && (x.ld * 2) % 16 == 0;
  const bool values_vector = !std::is_same_v<Pattern, nm<2, 4>> ||
                             (is_aligned(w.values, 16) && (w.ld_values * 2) % 16 == 0 && (w.values_stride * 2) % 16 == 0);
  return {x.data, x.ld, w.values, w.ld_values, w.indices, w.ld_indices, tokens, out, k, x_vector && values_vector};
}

template <class Pattern, class TX, class T, class Out>
void check_types() {
  static_assert(is_nm_v<Pattern>, "frugal::sparse::nm_linear: Pattern must be frugal::sparse::nm<N, M>");
  static_assert(std::is_same_v<std::remove_const_t<TX>, T>, "frugal::sparse::nm_linear: X and the values must have the same element type");
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "frugal::sparse::nm_linear: X and W must be __half or __nv_bfloat16");
  static_assert(is_io_float_v<Out>, "frugal::sparse::nm_linear: Y must be float, __half or __nv_bfloat16");
}
template <class Epilogue>
void check_epilogue() {
  static_assert(!is_gated_epilogue_v<Epilogue>,
                "frugal::sparse::nm_linear: gated_epilogue is not supported (the sparse tile visits one output at a time); join gate and up with a user epilogue, as example 05 does");
}
}  // namespace detail

//! Y = epilogue(X W^T): X [tokens, K] (row-major), W [out, K] N:M-sparse in the canonical format
//! (nm_prune / nm_compress / srste_step write it), Y [tokens, out] row-major. 2:4 runs as
//! stored; patterns with at most two kept values per window (1:4, 2:8, 1:8, 2:16, 1:16) are read
//! compactly (2:8: 0.28 of the dense bytes against 2:4's 0.56) and expanded to the 2:4 operand in
//! shared memory; denser patterns (3:4, 4:8, 8:16, ...) are read compactly and expanded to a dense
//! tile for the dense tensor cores (load sparse, compute dense). T: __half or __nv_bfloat16 (X and the values); Out: float, __half,
//! __nv_bfloat16. The epilogue sees (row = token, col = feature): linear_epilogue gives bias per
//! column (feature), activation, alpha, and beta C for a residual [tokens, out]. K any size
//! (padding contributes zeros); deterministic. The backward dX = dY W is the same call with W^T
//! compressed (srste_step_transposable writes it) and dY as X.
//! Two-phase, as CUB: called with a null workspace it sets workspace_bytes and returns; the
//! bytes hold the partial sums of a split-K decode (16 when the shape needs no split), the same
//! for the same shape on the same device. Splits are reduced in split order: deterministic.
template <class Pattern, class TX, class T, class Out, class Epilogue = linear_epilogue<>>
status nm_linear(void* workspace, std::size_t& workspace_bytes, matrix_ref<TX> x, const nm_weight<T>& w, matrix_ref<Out> y,
                 std::int64_t tokens, std::int64_t out, std::int64_t k, const Epilogue& epilogue = {}, cudaStream_t stream = nullptr) {
  detail::check_types<Pattern, TX, T, Out>();
  detail::check_epilogue<Epilogue>();
  const matrix_ref<const T> cx{x.data, x.ld, x.order};
  FRUGAL_TRY(detail::check_nm_linear<Pattern>(false, cx, w, y, tokens, out, k, epilogue));
  int sms = 0;
  FRUGAL_TRY(frugal::detail::cached_multiprocessors(sms));
  const int splits = tokens <= 16 ? detail::decode_splits(out, k, sms) : 1;
  // At least 16 bytes, so that a workspace is never null (null means "query").
  const std::size_t needed = splits > 1 ? std::size_t(splits) * std::size_t(tokens) * std::size_t(out) * sizeof(float) : 16;
  if (workspace == nullptr) {
    workspace_bytes = needed;
    return status{};
  }
  if (workspace_bytes < needed) return status::invalid("frugal::sparse::nm_linear: workspace_bytes is smaller than the size query returned");
  if (!is_aligned(workspace, 16)) return status::misaligned("frugal::sparse::nm_linear: the workspace must be 16-byte aligned");
  if (tokens == 0 || out == 0) return status{};
  const auto p = detail::nm_problem<Pattern>(cx, w, tokens, out, k);
  float* partial = static_cast<float*>(workspace);
  if (tokens <= 16)
    return detail::launch_nm_linear<detail::sparse_tile_decode<T, Pattern>, Pattern>(p, y.data, y.ld, epilogue, partial, splits, stream);
  using large = detail::sparse_tile_large<T, Pattern>;
  if (((out + large::block_m - 1) / large::block_m) * ((tokens + large::block_n - 1) / large::block_n) >= sms)
    return detail::launch_nm_linear<large, Pattern>(p, y.data, y.ld, epilogue, partial, 1, stream);
  return detail::launch_nm_linear<detail::sparse_tile_medium<T, Pattern>, Pattern>(p, y.data, y.ld, epilogue, partial, 1, stream);
}

namespace detail {
template <class Tile, class Pattern, class OffsetT, class Out, class Epilogue>
status launch_nm_grouped_linear(const sparse_linear_problem<typename Tile::element_type>& p, const gemm_groups<OffsetT>& groups,
                                std::int64_t values_stride, std::int64_t indices_stride, Out* y, std::int64_t ld_y, const Epilogue& epilogue,
                                cudaStream_t stream) {
  FRUGAL_TRY((frugal::detail::allow_dynamic_shared_once<nm_grouped_linear_kernel<Tile, Pattern, OffsetT, Out, Epilogue>>(Tile::shared_bytes)));
  const std::int64_t tiles_n = (groups.rows + Tile::block_n - 1) / Tile::block_n + groups.groups;  // every group's last tile may be partial
  const std::int64_t tiles = tiles_n * ((p.out + Tile::block_m - 1) / Tile::block_m);
  if (tiles > INT32_MAX) return status::invalid("frugal::sparse::nm_grouped_linear: more than 2^31 - 1 tiles");
  return launch(nm_grouped_linear_kernel<Tile, Pattern, OffsetT, Out, Epilogue>,
                launch_config{dim3(unsigned(tiles)), dim3(Tile::threads), std::size_t(Tile::shared_bytes), stream}, p, groups, values_stride,
                indices_stride, y, ld_y, epilogue);
}
}  // namespace detail

//! Per group g (an expert of a dispatch plan, gemm_groups' rules): Y[rows of g] = epilogue(X[rows
//! of g] W_g^T), W_g = expert g's compressed N:M weight (w.values + g * values_stride, w.indices +
//! g * indices_stride; strides 0: packed). X [groups.rows, K], Y [groups.rows, out]; rows no group
//! covers are not written; the epilogue gets the group (per-expert bias: bias_group_stride). The
//! sparse grouped GEMM of a Mixture-of-Experts layer with N:M experts; otherwise as nm_linear.
template <class Pattern, class TX, class T, class OffsetT, class Out, class Epilogue = linear_epilogue<>>
status nm_grouped_linear(matrix_ref<TX> x, const nm_weight<T>& w, const gemm_groups<OffsetT>& groups, matrix_ref<Out> y, std::int64_t out,
                         std::int64_t k, const Epilogue& epilogue = {}, cudaStream_t stream = nullptr) {
  detail::check_types<Pattern, TX, T, Out>();
  detail::check_epilogue<Epilogue>();
  static_assert(std::is_same_v<OffsetT, std::int32_t> || std::is_same_v<OffsetT, std::int64_t>,
                "frugal::sparse::nm_grouped_linear: offsets must be int32 or int64");
  if (groups.groups < 0 || groups.groups > 65536) return status::invalid("frugal::sparse::nm_grouped_linear: groups must be in [0, 65536]");
  if (groups.groups > 0 && groups.offsets == nullptr && (groups.counts == nullptr || groups.capacity < 1))
    return status::invalid("frugal::sparse::nm_grouped_linear: give offsets, or counts with a capacity >= 1 (the masked layout)");
  const matrix_ref<const T> cx{x.data, x.ld, x.order};
  FRUGAL_TRY(detail::check_nm_linear<Pattern>(true, cx, w, y, groups.rows, out, k, epilogue));
  if (groups.rows == 0 || out == 0 || groups.groups == 0) return status{};
  const auto p = detail::nm_problem<Pattern>(cx, w, groups.rows, out, k);
  const std::int64_t values_stride = w.values_stride > 0 ? w.values_stride : out * w.ld_values;
  const std::int64_t indices_stride = w.indices_stride > 0 ? w.indices_stride : out * w.ld_indices;
  // Few rows per expert (decoding): the 16-token tile; otherwise the 64-token one.
  if (groups.rows <= 16 * std::int64_t(groups.groups))
    return detail::launch_nm_grouped_linear<detail::sparse_tile_decode<T, Pattern>, Pattern>(p, groups, values_stride, indices_stride, y.data,
                                                                                             y.ld, epilogue, stream);
  return detail::launch_nm_grouped_linear<detail::sparse_tile_medium<T, Pattern>, Pattern>(p, groups, values_stride, indices_stride, y.data,
                                                                                           y.ld, epilogue, stream);
}

}  // namespace frugal::sparse

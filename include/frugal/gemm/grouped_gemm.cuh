// SPDX-License-Identifier: Apache-2.0
//! @file
//! frugal::grouped_gemm: one GEMM per group of rows, each with its own B, in one launch: the
//! expert FFNs of a Mixture-of-Experts layer over the expert-major buffer of a dispatch plan
//! (moe::plan's offsets and counts, or its masked [E, capacity] layout). docs/gemm.md.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/gemm/grouped_gemm.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/gemm/detail/gemm_checks.cuh>
#include <frugal/gemm/detail/gemm_kernels.cuh>

#include <cstdint>
#include <type_traits>

namespace frugal {

namespace detail {
template <class Tile, class OffsetT, class Out, class Epilogue>
status launch_grouped_gemm(const gemm_problem<typename Tile::element_type>& p, const gemm_groups<OffsetT>& groups, Out* d,
                           std::int64_t ldd, const Epilogue& epilogue, cudaStream_t stream) {
  const auto kernel = grouped_gemm_kernel<Tile, OffsetT, Out, Epilogue>;
  FRUGAL_TRY((allow_dynamic_shared_once<grouped_gemm_kernel<Tile, OffsetT, Out, Epilogue>>(Tile::shared_bytes)));
  // Every group's last tile may be partial: at most rows / BlockM + groups M-tiles. Blocks past
  // the tiles the groups use leave at once.
  const std::int64_t tiles_m = (groups.rows + Tile::block_m - 1) / Tile::block_m + groups.groups;
  const std::int64_t tiles = tiles_m * ((p.n + Tile::block_n - 1) / Tile::block_n);
  if (tiles > INT32_MAX) return status::invalid("frugal::grouped_gemm: the product has more than 2^31 - 1 tiles");
  return launch(kernel, launch_config{dim3(unsigned(tiles)), dim3(Tile::threads), std::size_t(Tile::shared_bytes), stream}, p,
                groups, d, ldd, epilogue);
}

template <class T, matrix_order BLayout, class OffsetT, class Out, class Epilogue>
status dispatch_grouped_gemm(const gemm_problem<T>& p, const gemm_groups<OffsetT>& groups, Out* d, std::int64_t ldd,
                             const Epilogue& epilogue, cudaStream_t stream) {
  using large = gemm_tile_large<T, BLayout>;
  // Large tiles when the groups average a full large M-tile (prefill); small ones for the few
  // rows per expert of decoding, where a 128-row tile would be mostly padding.
  if (groups.rows >= std::int64_t(large::block_m) * groups.groups)
    return launch_grouped_gemm<large>(p, groups, d, ldd, epilogue, stream);
  return launch_grouped_gemm<gemm_tile_small<T, BLayout>>(p, groups, d, ldd, epilogue, stream);
}
}  // namespace detail

//! For every group g: D[rows of g] = epilogue(A[rows of g] B_g), B_g = b.data + g * b_stride
//! (b_stride 0: the groups' B packed, n * k apart), with the rows of g as gemm_groups defines
//! them (a plan's offsets [+ counts], or its masked layout). A [groups.rows, k] row-major, B_g
//! [k, n] (row_major) or [n, k] (col_major), D [groups.rows, n] row-major (n / 2 columns with a
//! gated_epilogue); the epilogue gets the group (a per-expert bias: bias_group_stride). Rows
//! no group covers (padding, dropped capacity) are not written. Element types, errors and
//! determinism as frugal::gemm; also refused: groups < 0 or > 65536, no offsets and no counts
//! with a capacity.
template <class TA, class TB, class OffsetT, class Out, class Epilogue = linear_epilogue<>>
status grouped_gemm(matrix_ref<TA> a, matrix_ref<TB> b, const gemm_groups<OffsetT>& groups, matrix_ref<Out> d, std::int64_t n,
                    std::int64_t k, const Epilogue& epilogue = {}, cudaStream_t stream = nullptr) {
  using T = std::remove_const_t<TA>;
  static_assert(std::is_same_v<T, std::remove_const_t<TB>>, "frugal::grouped_gemm: A and B must have the same element type");
  static_assert(is_io_float_v<T>, "frugal::grouped_gemm: A and B must be __half, __nv_bfloat16 or float (tf32)");
  static_assert(is_io_float_v<Out>, "frugal::grouped_gemm: D must be float, __half or __nv_bfloat16");
  static_assert(std::is_same_v<OffsetT, std::int32_t> || std::is_same_v<OffsetT, std::int64_t>,
                "frugal::grouped_gemm: offsets must be int32 or int64");
  if (groups.groups < 0 || groups.groups > 65536) return status::invalid("frugal::grouped_gemm: groups must be in [0, 65536]");
  if (groups.groups > 0 && groups.offsets == nullptr && (groups.counts == nullptr || groups.capacity < 1))
    return status::invalid("frugal::grouped_gemm: give offsets, or counts with a capacity >= 1 (the masked layout)");
  const matrix_ref<const T> ca{a.data, a.ld, a.order}, cb{b.data, b.ld, b.order};
  FRUGAL_TRY(detail::check_gemm_operands(true, ca, cb, d, groups.rows, n, k, groups.groups > 0 ? groups.groups : 1, groups.b_stride,
                                         epilogue));
  if (groups.rows == 0 || n == 0 || groups.groups == 0) return status{};
  const std::int64_t b_stride = groups.b_stride > 0 ? groups.b_stride : n * k;
  const bool vector_loads = k > 0 && detail::gemm_vector_loads(ca, cb) && (b_stride * std::int64_t(sizeof(T))) % 16 == 0;
  const detail::gemm_problem<T> p{ca.data, ca.ld, cb.data, cb.ld, groups.rows, n, k, vector_loads};
  if (b.order == matrix_order::col_major)
    return detail::dispatch_grouped_gemm<T, matrix_order::col_major>(p, groups, d.data, d.ld, epilogue, stream);
  return detail::dispatch_grouped_gemm<T, matrix_order::row_major>(p, groups, d.data, d.ld, epilogue, stream);
}

}  // namespace frugal

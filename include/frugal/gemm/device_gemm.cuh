// SPDX-License-Identifier: Apache-2.0
//! @file
//! frugal::gemm: D = epilogue(A B) on the tensor cores, device-wide. A [M, K] row-major, B
//! [K, N] row-major or col-major ([N, K], a linear layer's weight), D [M, N] row-major; bf16 / f16
//! operands with fp32 accumulation (mma m16n8k16) or fp32 operands rounded to tf32 (m16n8k8).
//! Any M, N, K: edges are predicated and K tails zero-filled. Stream-ordered, no allocation, no
//! synchronisation. docs/gemm.md.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/gemm/device_gemm.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/gemm/detail/gemm_checks.cuh>
#include <frugal/gemm/detail/gemm_kernels.cuh>

#include <cstdint>
#include <type_traits>

namespace frugal {

namespace detail {
template <class Tile, class Out, class Epilogue>
status launch_gemm(const gemm_problem<typename Tile::element_type>& p, Out* d, std::int64_t ldd, const Epilogue& epilogue,
                   cudaStream_t stream) {
  const auto kernel = gemm_kernel<Tile, Out, Epilogue>;
  FRUGAL_TRY((allow_dynamic_shared_once<gemm_kernel<Tile, Out, Epilogue>>(Tile::shared_bytes)));
  const std::int64_t tiles = ((p.m + Tile::block_m - 1) / Tile::block_m) * ((p.n + Tile::block_n - 1) / Tile::block_n);
  if (tiles > INT32_MAX) return status::invalid("frugal::gemm: the product has more than 2^31 - 1 tiles");
  return launch(kernel, launch_config{dim3(unsigned(tiles)), dim3(Tile::threads), std::size_t(Tile::shared_bytes), stream}, p, d,
                ldd, epilogue);
}

template <class T, matrix_order BLayout, class Out, class Epilogue>
status dispatch_gemm(const gemm_problem<T>& p, Out* d, std::int64_t ldd, const Epilogue& epilogue, cudaStream_t stream) {
  using large = gemm_tile_large<T, BLayout>;
  int sms = 0;
  FRUGAL_TRY(cached_multiprocessors(sms));
  const std::int64_t large_tiles = ((p.m + large::block_m - 1) / large::block_m) * ((p.n + large::block_n - 1) / large::block_n);
  // Large tiles move the fewest bytes per FLOP, but only pay when they fill every multiprocessor.
  if (large_tiles >= sms) return launch_gemm<large>(p, d, ldd, epilogue, stream);
  return launch_gemm<gemm_tile_small<T, BLayout>>(p, d, ldd, epilogue, stream);
}
}  // namespace detail

//! D = epilogue(A B): A [m, k] row-major, B [k, n] (row_major) or its transpose [n, k]
//! (col_major), D [m, n] row-major (n / 2 columns with a gated_epilogue). T: __half,
//! __nv_bfloat16 (fp32 accumulation) or float (each operand rounded to tf32 by to_tf32, fp32
//! accumulation); D: float, __half or __nv_bfloat16. Rows beyond m, columns beyond n and K
//! beyond k are never read; the result is rounded to D's type once, after the epilogue.
//! Errors: negative sizes, A or D not row-major, null or misaligned (to the element size)
//! pointers, leading dimensions smaller than the rows they hold, D overlapping A or B, an
//! epilogue that cannot serve the shape. 16-byte aligned operands with 16-byte-multiple rows load
//! through cp.async; others element by element (correct, slower). Deterministic.
template <class TA, class TB, class Out, class Epilogue = linear_epilogue<>>
status gemm(matrix_ref<TA> a, matrix_ref<TB> b, matrix_ref<Out> d, std::int64_t m, std::int64_t n, std::int64_t k,
            const Epilogue& epilogue = {}, cudaStream_t stream = nullptr) {
  using T = std::remove_const_t<TA>;
  static_assert(std::is_same_v<T, std::remove_const_t<TB>>, "frugal::gemm: A and B must have the same element type");
  static_assert(is_io_float_v<T>, "frugal::gemm: A and B must be __half, __nv_bfloat16 or float (tf32)");
  static_assert(is_io_float_v<Out>, "frugal::gemm: D must be float, __half or __nv_bfloat16");
  const matrix_ref<const T> ca{a.data, a.ld, a.order}, cb{b.data, b.ld, b.order};
  FRUGAL_TRY(detail::check_gemm_operands(false, ca, cb, d, m, n, k, 1, 0, epilogue));
  if (m == 0 || n == 0) return status{};
  const detail::gemm_problem<T> p{ca.data, ca.ld, cb.data, cb.ld, m, n, k, k > 0 && detail::gemm_vector_loads(ca, cb)};
  if (b.order == matrix_order::col_major) return detail::dispatch_gemm<T, matrix_order::col_major>(p, d.data, d.ld, epilogue, stream);
  return detail::dispatch_gemm<T, matrix_order::row_major>(p, d.data, d.ld, epilogue, stream);
}

}  // namespace frugal

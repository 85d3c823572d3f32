// SPDX-License-Identifier: Apache-2.0
//! @file
//! What a frugal GEMM computes and how it tiles, at thread level (plain C++, compiles
//! everywhere): matrix views, the epilogues D = epilogue(A B), the tile configuration and its
//! shared-memory layout. docs/gemm.md.
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/numeric.cuh>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace frugal {

// ---- operands ---------------------------------------------------------------------------------

enum class matrix_order {
  row_major,  //!< element (r, c) at data[r * ld + c]
  col_major,  //!< element (r, c) at data[c * ld + r]: for B (K x N), the [N, K] weight of a linear layer
};

//! A matrix in memory: its first element, leading dimension (elements between rows, or columns
//! for col_major) and order. The sizes come from the call.
template <class T>
struct matrix_ref {
  T* data = nullptr;
  std::int64_t ld = 0;
  matrix_order order = matrix_order::row_major;
};
template <class T>
FRUGAL_HOST_DEVICE matrix_ref<T> row_major(T* data, std::int64_t ld) { return {data, ld, matrix_order::row_major}; }
template <class T>
FRUGAL_HOST_DEVICE matrix_ref<T> col_major(T* data, std::int64_t ld) { return {data, ld, matrix_order::col_major}; }

// ---- epilogues --------------------------------------------------------------------------------

enum class activation {
  identity,
  relu,       //!< max(x, 0)
  gelu,       //!< x Phi(x) = x (1 + erf(x / sqrt 2)) / 2
  gelu_tanh,  //!< x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2
  silu,       //!< x / (1 + exp(-x))
};

//! The activation in fp32 (the same expression on the host and the GPU, libm / CUDA math).
FRUGAL_HOST_DEVICE float apply_activation(activation a, float x) {
  switch (a) {
    case activation::relu: return x > 0.0f ? x : 0.0f;
    case activation::gelu: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case activation::gelu_tanh: return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case activation::silu: return x / (1.0f + expf(-x));
    default: return x;
  }
}

enum class bias_kind {
  none,
  per_row,     //!< bias[row]
  per_column,  //!< bias[col]
};

//! D = act(alpha A B + beta C + bias), in fp32, rounded once to D's type. C [M, N] row-major is
//! read only when beta != 0 (as in cuBLAS: a NaN in C with beta = 0 stays out). In a grouped
//! GEMM the bias of group g starts at bias + g * bias_group_stride.
template <class CT = float, class BiasT = float>
struct linear_epilogue {
  static_assert(is_io_float_v<CT> && is_io_float_v<BiasT>, "frugal::linear_epilogue: C and bias must be float, __half or __nv_bfloat16");
  float alpha = 1.0f;
  float beta = 0.0f;
  const CT* c = nullptr;
  std::int64_t ldc = 0;
  const BiasT* bias = nullptr;
  bias_kind bias_on = bias_kind::none;
  std::int64_t bias_group_stride = 0;
  activation act = activation::identity;

  FRUGAL_HOST_DEVICE float operator()(float acc, std::int64_t row, std::int64_t col, int group) const {
    float v = alpha * acc;
    if (beta != 0.0f) v += beta * to_float(c[row * ldc + col]);
    if (bias_on != bias_kind::none)
      v += to_float(bias[group * bias_group_stride + (bias_on == bias_kind::per_row ? row : col)]);
    return apply_activation(act, v);
  }
  //! Why these parameters cannot serve an M x N output, or nullptr.
  const char* invalid(std::int64_t m, std::int64_t n) const {
    (void)m;
    if (!std::isfinite(alpha) || !std::isfinite(beta)) return "frugal::linear_epilogue: alpha and beta must be finite";
    if (beta != 0.0f && (c == nullptr || ldc < n)) return "frugal::linear_epilogue: beta != 0 needs C with ldc >= N";
    if (bias_on != bias_kind::none && bias == nullptr) return "frugal::linear_epilogue: bias_on is set but bias is null";
    if (bias_group_stride < 0) return "frugal::linear_epilogue: bias_group_stride must be >= 0";
    return nullptr;
  }
};

//! A gated linear unit over interleaved columns: for even col,
//! D[row, col / 2] = act(alpha acc[row, col] + bias[col]) * (alpha acc[row, col + 1] + bias[col + 1]).
//! With B's columns 2j and 2j + 1 = the gate and up projections of unit j (W13 rows interleaved),
//! one GEMM gives SwiGLU (act = silu) or GeGLU; D has N / 2 columns. Bias optional, per column.
template <class BiasT = float>
struct gated_epilogue {
  static_assert(is_io_float_v<BiasT>, "frugal::gated_epilogue: bias must be float, __half or __nv_bfloat16");
  static constexpr bool gated = true;
  float alpha = 1.0f;
  const BiasT* bias = nullptr;
  std::int64_t bias_group_stride = 0;
  activation act = activation::silu;

  FRUGAL_HOST_DEVICE float operator()(float gate, float up, std::int64_t col, int group) const {
    float g = alpha * gate, u = alpha * up;
    if (bias) {
      g += to_float(bias[group * bias_group_stride + col]);
      u += to_float(bias[group * bias_group_stride + col + 1]);
    }
    return apply_activation(act, g) * u;
  }
  const char* invalid(std::int64_t, std::int64_t n) const {
    if (n % 2 != 0) return "frugal::gated_epilogue: N must be even (gate and up columns interleaved)";
    if (!std::isfinite(alpha)) return "frugal::gated_epilogue: alpha must be finite";
    if (bias_group_stride < 0) return "frugal::gated_epilogue: bias_group_stride must be >= 0";
    return nullptr;
  }
};

template <class Epilogue, class = void>
inline constexpr bool is_gated_epilogue_v = false;
template <class Epilogue>
inline constexpr bool is_gated_epilogue_v<Epilogue, std::void_t<decltype(Epilogue::gated)>> = Epilogue::gated;

//! Columns of D an epilogue writes for an N-column product.
template <class Epilogue>
constexpr std::int64_t epilogue_output_columns(std::int64_t n) {
  return is_gated_epilogue_v<Epilogue> ? n / 2 : n;
}

namespace detail {
// A user epilogue may define invalid(m, n); one that does not accepts every shape.
template <class Epilogue>
auto epilogue_invalid(const Epilogue& e, std::int64_t m, std::int64_t n, int) -> decltype(e.invalid(m, n)) {
  return e.invalid(m, n);
}
template <class Epilogue>
const char* epilogue_invalid(const Epilogue&, std::int64_t, std::int64_t, long) {
  return nullptr;
}
}  // namespace detail

// ---- tiling -----------------------------------------------------------------------------------

//! A block tile of BlockM x BlockN over K steps of BlockK, computed by WarpsM x WarpsN warps
//! (each a (BlockM / WarpsM) x (BlockN / WarpsN) tile of m16n8 MMAs) from a Stages-deep
//! cp.async pipeline. T: __half / __nv_bfloat16 (m16n8k16) or float (tf32, m16n8k8).
//! BLayout: how B sits in memory (col_major: [N, K], K contiguous; row_major: [K, N]).
template <class T, matrix_order BLayout, int BlockM, int BlockN, int BlockK, int WarpsM, int WarpsN, int Stages>
struct gemm_tile {
  static_assert(is_io_float_v<T>, "frugal::gemm_tile: T must be __half, __nv_bfloat16 or float (tf32)");
  using element_type = T;
  static constexpr matrix_order b_layout = BLayout;
  static constexpr int block_m = BlockM, block_n = BlockN, block_k = BlockK, warps_m = WarpsM, warps_n = WarpsN;
  static constexpr int stages = Stages;
  static constexpr int threads = 32 * WarpsM * WarpsN;
  static constexpr int warp_m = BlockM / WarpsM, warp_n = BlockN / WarpsN;
  static constexpr int mma_m = warp_m / 16, mma_n = warp_n / 8;  // MMAs per warp per k-step
  static constexpr int chunk_elements = int(16 / sizeof(T));     // elements per 16-byte chunk
  static constexpr int k_chunks = BlockK / chunk_elements;        // chunks per K-row of the A tile
  static constexpr int n_chunks = BlockN / chunk_elements;        // chunks per K-row of a row-major B tile
  static constexpr int k_steps = k_chunks / 2;                    // an MMA k-step spans two chunks
  static constexpr int a_chunks = BlockM * k_chunks;
  static constexpr int b_chunks = BlockN * k_chunks;              // either layout
  static constexpr int stage_bytes = (a_chunks + b_chunks) * 16;
  static constexpr int shared_bytes = Stages * stage_bytes;

  static_assert(WarpsM * WarpsN >= 1 && threads <= 1024, "frugal::gemm_tile: WarpsM * WarpsN warps, at most 32");
  static_assert(warp_m % 16 == 0 && warp_n % 16 == 0, "frugal::gemm_tile: each warp's tile must be a multiple of 16 x 16");
  static_assert(BlockK * int(sizeof(T)) % 32 == 0 && k_chunks <= 16,
                "frugal::gemm_tile: BlockK must span 32 to 256 bytes in steps of 32 (whole MMA k-steps)");
  static_assert(BlockN % chunk_elements == 0, "frugal::gemm_tile: BlockN must be a whole number of 16-byte chunks");
  // swizzled_chunk permutes the chunks of a row only for 2, 4 or a multiple of 8 of them.
  static_assert(k_chunks == 2 || k_chunks == 4 || k_chunks % 8 == 0,
                "frugal::gemm_tile: BlockK must span 32, 64 or a multiple of 128 bytes (2, 4 or 8k chunks of 16 bytes)");
  static_assert(BLayout == matrix_order::col_major || n_chunks == 2 || n_chunks == 4 || n_chunks % 8 == 0,
                "frugal::gemm_tile: with a row-major B, BlockN must span 32, 64 or a multiple of 128 bytes");
  static_assert(a_chunks % threads == 0 && b_chunks % threads == 0,
                "frugal::gemm_tile: every thread must load the same number of 16-byte chunks per stage");
  static_assert(Stages >= 2 && Stages <= 8, "frugal::gemm_tile: Stages must be in [2, 8]");
};

//! Position, in 16-byte chunks, of chunk `chunk` of row `row` in a shared tile of `chunks`
//! chunks per row (2, 4 or a multiple of 8: a permutation of each row only then; gemm_tile checks
//! it): the chunk index XOR a few row bits, so that the 8 rows one ldmatrix phase reads
//! (8 x 16 bytes) fall in 8 different bank groups, whatever the row width.
FRUGAL_HOST_DEVICE constexpr int swizzled_chunk(int row, int chunk, int chunks) {
  const int per_group = chunks >= 8 ? 1 : 8 / chunks;   // rows that share one 128-byte line
  const int span = chunks >= 8 ? 8 : chunks;             // chunks the XOR may reach
  return row * chunks + (chunk ^ ((row / per_group) % span));
}

}  // namespace frugal

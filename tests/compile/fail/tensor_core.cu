// SPDX-License-Identifier: Apache-2.0
// nvcc compile-fail cases of the tensor-core pieces and the GEMM (see host.cpp): bad template
// arguments, and every instruction in a build for an architecture older than sm_80 (the cases
// named *_sm75 are compiled for sm_75 only).
#include <frugal/gemm/device_gemm.cuh>
#include <frugal/tensor_core/cp_async.cuh>
#include <frugal/tensor_core/ldmatrix.cuh>
#include <frugal/tensor_core/mma.cuh>

__global__ void kernel(float* out, const float* in) {
  __shared__ __align__(16) unsigned short tile[32 * 8];
  frugal::mma_accumulator c{};
#if defined(FRUGAL_FAIL_CASE_mma_sm75)
  frugal::mma_fragment<frugal::mma_operand::a, frugal::m16n8k16, __nv_bfloat16> a{};
  frugal::mma_fragment<frugal::mma_operand::b, frugal::m16n8k16, __nv_bfloat16> b{};
  frugal::mma(c, a, b, c);
#elif defined(FRUGAL_FAIL_CASE_mma_tf32_sm75)
  frugal::mma_fragment<frugal::mma_operand::a, frugal::m16n8k8, float> a{};
  frugal::mma_fragment<frugal::mma_operand::b, frugal::m16n8k8, float> b{};
  frugal::mma(c, a, b, c);
#elif defined(FRUGAL_FAIL_CASE_mma_sp_sm75) || defined(FRUGAL_FAIL_CASE_mma_sp_selector)
  frugal::mma_fragment<frugal::mma_operand::a, frugal::m16n8k32_sparse, __half> a{};
  frugal::mma_fragment<frugal::mma_operand::b, frugal::m16n8k32_sparse, __half> b{};
#if defined(FRUGAL_FAIL_CASE_mma_sp_selector)
  frugal::mma_sp<2>(c, a, b, c, 0x44444444u);
#else
  frugal::mma_sp<0>(c, a, b, c, 0x44444444u);
#endif
#elif defined(FRUGAL_FAIL_CASE_ldmatrix_sm75) || defined(FRUGAL_FAIL_CASE_ldmatrix_count)
  std::uint32_t r[4];
#if defined(FRUGAL_FAIL_CASE_ldmatrix_count)
  frugal::ldmatrix<3>(*reinterpret_cast<std::uint32_t(*)[3]>(r), tile);
#else
  frugal::ldmatrix<4>(r, tile);
#endif
  c.x[0] = float(r[0]);
#elif defined(FRUGAL_FAIL_CASE_cp_async_sm75)
  frugal::cp_async_16(tile, in);
  frugal::cp_async_commit();
  frugal::cp_async_wait<0>();
#elif defined(FRUGAL_FAIL_CASE_cp_async_wait_range)
  frugal::cp_async_wait<8>();
#elif defined(FRUGAL_FAIL_CASE_fragment_type)
  frugal::mma_fragment<frugal::mma_operand::a, frugal::m16n8k8, __half> a{};
  c.x[0] = float(a.x[0]);
#endif
  out[threadIdx.x] = c.x[0] + float(tile[0]) + in[0];
}

int main() {
#if defined(FRUGAL_FAIL_CASE_gemm_type)
  frugal::matrix_ref<const int> a{}, b{};
  frugal::matrix_ref<float> d{};
  (void)frugal::gemm(a, b, d, 1, 1, 1);
#elif defined(FRUGAL_FAIL_CASE_gemm_tile_chunks)
  using bad = frugal::gemm_tile<__nv_bfloat16, frugal::matrix_order::col_major, 64, 64, 48, 2, 2, 3>;  // 6 chunks per row
  return bad::threads;
#elif defined(FRUGAL_FAIL_CASE_gemm_tile_warps)
  using bad = frugal::gemm_tile<__nv_bfloat16, frugal::matrix_order::col_major, 64, 40, 32, 2, 2, 3>;
  return bad::threads;
#endif
  return 0;
}

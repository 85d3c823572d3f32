// SPDX-License-Identifier: Apache-2.0
// Example 7: a kernel written directly with frugal's tensor-core pieces. One warp computes
// D[16 x 8] = A[16 x K] B[K x 8] in bf16 with fp32 accumulation: cp.async brings A and B into
// shared memory, ldmatrix turns them into fragments (B transposed on the way, since it is
// row-major), mma multiplies. Then the same with A 2:4-sparse: only its kept values and their
// metadata are stored, and mma_sp skips the pruned half. Both check themselves against a host
// product; in host SIMT mode the instructions run through frugal's exact emulation.
#include <frugal/core/launch.cuh>
#include <frugal/tensor_core/cp_async.cuh>
#include <frugal/tensor_core/ldmatrix.cuh>
#include <frugal/tensor_core/mma.cuh>

#include <cstdio>
#include <random>
#include <vector>

#include "example_support.hpp"

namespace {

using bf16 = __nv_bfloat16;
constexpr int K = 64;

__global__ void dense_tile(const bf16* a, const bf16* b, float* d) {  // a [16, K], b [K, 8] row-major
  __shared__ __align__(16) bf16 sa[16 * K], sb[K * 8];
  const int lane = int(threadIdx.x);
  for (int c = lane; c < 16 * K / 8; c += 32) frugal::cp_async_16(sa + 8 * c, a + 8 * c);  // 16-byte chunks
  for (int c = lane; c < K * 8 / 8; c += 32) frugal::cp_async_16(sb + 8 * c, b + 8 * c);
  frugal::cp_async_commit();
  frugal::cp_async_wait<0>();
  __syncwarp();
  frugal::mma_accumulator acc;
  acc.fill(0.0f);
  for (int k0 = 0; k0 < K; k0 += 16) {
    frugal::mma_fragment<frugal::mma_operand::a, frugal::m16n8k16, bf16> fa;
    frugal::mma_fragment<frugal::mma_operand::b, frugal::m16n8k16, bf16> fb;
    // A: lane l gives row l % 16, columns k0 + 8 (l / 16) .. + 7. B: lanes 0-15 give rows k0 .. k0 + 15.
    frugal::ldmatrix<4>(fa.x, sa + (lane % 16) * K + k0 + 8 * (lane / 16));
    frugal::ldmatrix<2, true>(fb.x, sb + (k0 + lane % 16) * 8);
    frugal::mma(acc, fa, fb, acc);
  }
  for (int i = 0; i < 4; ++i) {
    const auto p = frugal::mma_accumulator::position(lane, i);
    d[p.row * 8 + p.col] = acc.x[i];
  }
}

// A 2:4-sparse A [16, 32]: kept values as fragment registers and metadata prepared on the host.
__global__ void sparse_tile(const std::uint32_t* a_kept, const std::uint32_t* metadata, const std::uint32_t* b_regs, float* d) {
  const int lane = int(threadIdx.x);
  frugal::mma_fragment<frugal::mma_operand::a, frugal::m16n8k32_sparse, bf16> fa;
  frugal::mma_fragment<frugal::mma_operand::b, frugal::m16n8k32_sparse, bf16> fb;
  for (int r = 0; r < 4; ++r) fa.x[r] = a_kept[lane * 4 + r], fb.x[r] = b_regs[lane * 4 + r];
  frugal::mma_accumulator acc;
  acc.fill(0.0f);
  frugal::mma_sp<0>(acc, fa, fb, acc, metadata[lane]);
  for (int i = 0; i < 4; ++i) {
    const auto p = frugal::mma_accumulator::position(lane, i);
    d[p.row * 8 + p.col] = acc.x[i];
  }
}

}  // namespace

int main() {
  if (!examples::announce_mode("07_tensor_core_tile")) return 77;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-4, 4);
  std::vector<float> a(16 * K), b(K * 8);
  for (auto& v : a) v = float(small(rng));
  for (auto& v : b) v = float(small(rng));
  std::vector<bf16> a16(a.size()), b16(b.size());
  for (std::size_t i = 0; i < a.size(); ++i) a16[i] = __float2bfloat16_rn(a[i]);
  for (std::size_t i = 0; i < b.size(); ++i) b16[i] = __float2bfloat16_rn(b[i]);
  examples::device_array<bf16> d_a(a16), d_b(b16);
  examples::device_array<float> d_d(16 * 8);
  examples::check(frugal::launch(dense_tile, frugal::launch_config{dim3(1), dim3(32)}, (const bf16*)d_a.data(), (const bf16*)d_b.data(),
                                 d_d.data())
                      .cuda_error(),
                  "dense_tile");
  auto d = d_d.download();
  int wrong = 0;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      float want = 0;
      for (int k = 0; k < K; ++k) want += a[m * K + k] * b[k * 8 + n];
      wrong += d[m * 8 + n] != want;  // small integers: exact
    }
  std::printf("  dense 16 x 8 x %d tile: %d of 128 outputs differ from the host product\n", K, wrong);

  // Sparse: keep columns (c, c+1) .. of each chunk of 4 by a pattern that varies with row and chunk.
  namespace L = frugal::tensor_core_layout;
  static const int pairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
  std::vector<float> sparse(16 * 32, 0.0f), kept(16 * 16);
  std::vector<std::uint32_t> metadata(32, 0u), a_kept(32 * 4, 0u), b_regs(32 * 4, 0u);
  for (int row = 0; row < 16; ++row)
    for (int chunk = 0; chunk < 8; ++chunk) {
      const int* p = pairs[(row + 3 * chunk) % 6];
      for (int j = 0; j < 2; ++j) kept[row * 16 + 2 * chunk + j] = sparse[row * 32 + 4 * chunk + p[j]] = float(small(rng));
      const auto where = L::m16n8k32_sp_metadata(row, chunk, 0);
      metadata[std::size_t(where.lane)] |= L::metadata_nibble(p[0], p[1]) << where.bit;
    }
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 8; ++i) {
      const auto pa = L::m16n8k32_sp_a(lane, i), pb = L::m16n8k32_sp_b(lane, i);
      const auto bits = [](float v) { return std::uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(v))); };
      a_kept[std::size_t(lane * 4 + i / 2)] |= bits(kept[std::size_t(pa.row * 16 + pa.col)]) << (16 * (i % 2));
      b_regs[std::size_t(lane * 4 + i / 2)] |= bits(b[std::size_t(pb.row * 8 + pb.col)]) << (16 * (i % 2));
    }
  examples::device_array<std::uint32_t> d_kept(a_kept), d_meta(metadata), d_bregs(b_regs);
  examples::check(frugal::launch(sparse_tile, frugal::launch_config{dim3(1), dim3(32)}, (const std::uint32_t*)d_kept.data(),
                                 (const std::uint32_t*)d_meta.data(), (const std::uint32_t*)d_bregs.data(), d_d.data())
                      .cuda_error(),
                  "sparse_tile");
  d = d_d.download();
  int wrong_sparse = 0;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      float want = 0;
      for (int k = 0; k < 32; ++k) want += sparse[m * 32 + k] * b[k * 8 + n];
      wrong_sparse += d[m * 8 + n] != want;
    }
  std::printf("  2:4-sparse 16 x 8 x 32 tile: %d of 128 outputs differ (half of A's products skipped)\n", wrong_sparse);
  const bool ok = wrong == 0 && wrong_sparse == 0;
  std::printf("%s: a dense and a 2:4-sparse tensor-core tile written with cp.async, ldmatrix, mma and mma_sp\n",
              ok ? "verified" : "MISMATCH");
  return ok ? 0 : 1;
}

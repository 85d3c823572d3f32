// SPDX-License-Identifier: Apache-2.0
// The warp-level tensor-core pieces run: frugal::mma (m16n8k16 f16/bf16, m16n8k8 tf32),
// frugal::mma_sp (m16n8k32, both selectors), frugal::ldmatrix (x1/x2/x4, plain and .trans) and
// cp.async with zero-fill, commit and wait. Each kernel result is compared with a scalar
// reference and with the host emulation (tensor_core/emulation.hpp) run on the same fragments:
// in host SIMT mode that is the emulation against itself and the references; on a GPU it is the
// real instruction against the emulator, bit for bit on small integers and as a measured ulp
// distance on random data. The emulator's refusals (partial warps, exited lanes, invalid
// metadata, misaligned addresses) are checked in host SIMT mode only.
#include <frugal/core/launch.cuh>
#include <frugal/tensor_core/cp_async.cuh>
#include <frugal/tensor_core/emulation.hpp>
#include <frugal/tensor_core/ldmatrix.cuh>
#include <frugal/tensor_core/mma.cuh>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "support/test_support.hpp"

using frugal::launch_config;
using frugal::mma_accumulator;
using frugal::mma_fragment;
using frugal::mma_operand;
using frugal::test::device_buffer;
namespace L = frugal::tensor_core_layout;
namespace E = frugal::tensor_core_emulation;

namespace {

using matrix = std::vector<std::vector<float>>;

// ---- kernels: one warp loads its fragments, runs one instruction, stores the result --------------

template <class Shape, class T>
__global__ void mma_kernel(const std::uint32_t* a, const std::uint32_t* b, const float* c, float* d) {
  using fa = mma_fragment<mma_operand::a, Shape, T>;
  using fb = mma_fragment<mma_operand::b, Shape, T>;
  const int lane = int(threadIdx.x);
  fa fa_;
  fb fb_;
  mma_accumulator acc;
  for (int i = 0; i < fa::registers; ++i) fa_.x[i] = a[lane * fa::registers + i];
  for (int i = 0; i < fb::registers; ++i) fb_.x[i] = b[lane * fb::registers + i];
  for (int i = 0; i < 4; ++i) acc.x[i] = c[lane * 4 + i];
  frugal::mma(acc, fa_, fb_, acc);
  for (int i = 0; i < 4; ++i) d[lane * 4 + i] = acc.x[i];
}

template <int Selector, class T>
__global__ void mma_sp_kernel(const std::uint32_t* a, const std::uint32_t* b, const float* c, const std::uint32_t* e, float* d) {
  const int lane = int(threadIdx.x);
  mma_fragment<mma_operand::a, frugal::m16n8k32_sparse, T> fa;
  mma_fragment<mma_operand::b, frugal::m16n8k32_sparse, T> fb;
  mma_accumulator acc;
  for (int i = 0; i < 4; ++i) fa.x[i] = a[lane * 4 + i], fb.x[i] = b[lane * 4 + i], acc.x[i] = c[lane * 4 + i];
  frugal::mma_sp<Selector>(acc, fa, fb, acc, e[lane]);
  for (int i = 0; i < 4; ++i) d[lane * 4 + i] = acc.x[i];
}

// 64 rows of 8 16-bit elements go to shared memory; lane l points at row perm[l].
template <int Matrices, bool Transpose>
__global__ void ldmatrix_kernel(const std::uint16_t* rows, const int* perm, std::uint32_t* out) {
  __shared__ __align__(16) std::uint16_t tile[64 * 8];
  const int lane = int(threadIdx.x);
  for (int i = lane; i < 64 * 8; i += 32) tile[i] = rows[i];
  __syncwarp();
  std::uint32_t r[Matrices];
  frugal::ldmatrix<Matrices, Transpose>(r, tile + perm[lane] * 8);
  for (int j = 0; j < Matrices; ++j) out[lane * Matrices + j] = r[j];
}

// Thread i copies chunk i (16 bytes) of `src` with src-size sizes[i] into shared memory holding
// 0xA5 bytes, waits, and writes the shared chunk back out.
__global__ void cp_async_kernel(const unsigned char* src, const int* sizes, unsigned char* out) {
  __shared__ __align__(16) unsigned char staged[64 * 16];
  const int t = int(threadIdx.x);
  for (int i = 0; i < 16; ++i) staged[t * 16 + i] = 0xA5;
  frugal::cp_async_16(staged + t * 16, src + t * 16, sizes[t]);
  frugal::cp_async_commit();
  frugal::cp_async_wait<0>();
  __syncthreads();
  const int u = (t + 1) % int(blockDim.x);  // read another thread's chunk: the barrier made it visible
  for (int i = 0; i < 16; ++i) out[u * 16 + i] = staged[u * 16 + i];
}

// Three groups in flight; after wait<2> the first is complete, after wait<1> the second,
// after wait<0> all. out[stage * 32 + t] = what thread t then sees of each stage's copy.
__global__ void cp_async_groups_kernel(const std::uint32_t* src, std::uint32_t* out) {
  __shared__ __align__(16) std::uint32_t staged[3][32 * 4];
  const int t = int(threadIdx.x);
  for (int s = 0; s < 3; ++s) {
    for (int i = 0; i < 4; ++i) staged[s][t * 4 + i] = 0u;
    frugal::cp_async_16(&staged[s][t * 4], src + (s * 32 + t) * 4);
    frugal::cp_async_commit();
  }
  frugal::cp_async_wait<2>();
  out[0 * 32 + t] = staged[0][t * 4];
  frugal::cp_async_wait<1>();
  out[1 * 32 + t] = staged[1][t * 4];
  frugal::cp_async_wait<0>();
  out[2 * 32 + t] = staged[2][t * 4];
}

// ---- host side ---------------------------------------------------------------------------------

template <class T>
std::uint16_t bits16(float v) {
  const T x = frugal::from_float<T>(v);
  std::uint16_t b;
  std::memcpy(&b, static_cast<const void*>(&x), 2);
  return b;
}

template <class T, class F>
std::vector<std::uint32_t> pack16(const matrix& tile, F where, int registers) {
  std::vector<std::uint32_t> regs(32 * registers, 0u);
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 2 * registers; ++i) {
      const auto p = where(lane, i);
      regs[lane * registers + i / 2] |= std::uint32_t(bits16<T>(tile[p.row][p.col])) << (16 * (i & 1));
    }
  return regs;
}

std::vector<float> pack_c(const matrix& c) {
  std::vector<float> regs(128);
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) regs[lane * 4 + i] = c[L::m16n8_c(lane, i).row][L::m16n8_c(lane, i).col];
  return regs;
}

// Values exactly representable in T (and tf32). Integers: every element of the tile distinct (a
// shuffled run of integers around 0, at most 256 of them, exact in bf16), so a permuted layout
// cannot hide, and every fp32 partial sum of a product exact (|a b| <= 2^14, 32 terms). Otherwise
// rounded normal samples.
template <class T>
matrix make_tile(std::mt19937_64& rng, int rows, int cols, bool integers) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<int> distinct(std::size_t(rows * cols));
  std::iota(distinct.begin(), distinct.end(), -rows * cols / 2);
  std::shuffle(distinct.begin(), distinct.end(), rng);
  matrix m(rows, std::vector<float>(cols));
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const float x = integers ? float(distinct[std::size_t(r * cols + c)]) : normal(rng);
      if constexpr (std::is_same_v<T, float>) m[r][c] = frugal::to_tf32(x);
      else m[r][c] = frugal::to_float(frugal::from_float<T>(x));
    }
  return m;
}

int ulp_distance(float a, float b) {
  auto ordered = [](float f) {
    std::int32_t i;
    std::memcpy(&i, &f, 4);
    return i < 0 ? std::int64_t(std::numeric_limits<std::int32_t>::min()) - i : std::int64_t(i);
  };
  const std::int64_t d = ordered(a) - ordered(b);
  return int(std::min<std::int64_t>(d < 0 ? -d : d, 1 << 30));
}

// Compares a kernel's accumulators with the scalar product and with the emulator's on the same
// fragments. Exact data: both bit for bit. Random data: within a bound relative to sum |a b| +
// |c| (the accumulation order is the hardware's own), and the ulp distance reported.
struct comparison {
  const char* what;
  bool exact;
  double worst_reference = 0;  // largest |d - reference| / (sum |a b| + |c|)
  int worst_ulp = 0;           // largest ulp distance from the emulator
};
void compare_accumulators(comparison& cmp, const std::vector<float>& got, const float (&emulated)[32][4], const matrix& want,
                          const matrix& scale) {
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      const auto p = L::m16n8_c(lane, i);
      const float g = got[lane * 4 + i];
      INFO(std::string(cmp.what) << ": lane " << lane << " element " << i << " (" << p.row << ", " << p.col << ")");
      if (cmp.exact) {
        REQUIRE(g == want[p.row][p.col]);
        REQUIRE(g == emulated[lane][i]);
      } else {
        const double err = std::fabs(double(g) - want[p.row][p.col]) / scale[p.row][p.col];
        REQUIRE(err <= 1e-6);  // a few fp32 roundings of the sum of magnitudes
        cmp.worst_reference = std::max(cmp.worst_reference, err);
        cmp.worst_ulp = std::max(cmp.worst_ulp, ulp_distance(g, emulated[lane][i]));
      }
    }
  if (!cmp.exact) MESSAGE(std::string(cmp.what) << ": largest error " << cmp.worst_reference << " of sum |a b| + |c|, largest distance from the emulator "
                                   << cmp.worst_ulp << " ulp");
}

template <class Shape, class T>
void check_dense_mma(bool integers, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  constexpr int K = Shape::k;
  const matrix A = make_tile<T>(rng, 16, K, integers), B = make_tile<T>(rng, K, 8, integers),
               C = make_tile<float>(rng, 16, 8, integers);
  std::vector<std::uint32_t> a, b;
  if constexpr (std::is_same_v<T, float>) {
    a.resize(128), b.resize(64);
    for (int lane = 0; lane < 32; ++lane) {
      for (int i = 0; i < 4; ++i) std::memcpy(&a[lane * 4 + i], &A[L::m16n8k8_a(lane, i).row][L::m16n8k8_a(lane, i).col], 4);
      for (int i = 0; i < 2; ++i) std::memcpy(&b[lane * 2 + i], &B[L::m16n8k8_b(lane, i).row][L::m16n8k8_b(lane, i).col], 4);
    }
  } else {
    a = pack16<T>(A, L::m16n8k16_a, 4);
    b = pack16<T>(B, L::m16n8k16_b, 2);
  }
  const std::vector<float> c = pack_c(C);
  device_buffer<std::uint32_t> d_a(a), d_b(b);
  device_buffer<float> d_c(c), d_d(128);
  FRUGAL_REQUIRE_OK(frugal::launch(mma_kernel<Shape, T>, launch_config{dim3(1), dim3(32)}, d_a.data(), d_b.data(), d_c.data(), d_d.data()));
  frugal::test::synchronize();
  const auto got = d_d.download();

  matrix want(16, std::vector<float>(8)), scale(16, std::vector<float>(8));
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double s = C[m][n], mag = std::fabs(C[m][n]);
      for (int k = 0; k < K; ++k) s += double(A[m][k]) * B[k][n], mag += std::fabs(double(A[m][k]) * B[k][n]);
      want[m][n] = float(s);
      scale[m][n] = float(mag > 0 ? mag : 1);
    }
  std::uint32_t ea[32][4] = {}, eb[32][2] = {};
  float ec[32][4], ed[32][4];
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 4; ++i) ea[lane][i] = a[lane * 4 + i], ec[lane][i] = c[lane * 4 + i];
    for (int i = 0; i < 2; ++i) eb[lane][i] = b[lane * 2 + i];
  }
  E::error err;
  if constexpr (std::is_same_v<T, float>) err = E::mma_m16n8k8_tf32(ea, eb, ec, ed);
  else err = E::mma_m16n8k16<T>(ea, eb, ec, ed);
  REQUIRE(!err);
  comparison cmp{std::is_same_v<T, float> ? "mma m16n8k8 tf32" : std::is_same_v<T, __half> ? "mma m16n8k16 f16" : "mma m16n8k16 bf16",
                 integers};
  compare_accumulators(cmp, got, ed, want, scale);
}

// A 2:4-sparse 16 x 32 A with every one of the six nibbles in use, metadata for `selector`,
// garbage in the metadata of the lanes the selector does not name.
struct sparse_operand {
  matrix dense;
  std::vector<std::uint32_t> a, e;
};
template <class T>
sparse_operand make_sparse(std::mt19937_64& rng, int selector, bool integers) {
  static const unsigned nibbles[6] = {0x4, 0x8, 0xC, 0x9, 0xD, 0xE};
  const matrix values = make_tile<T>(rng, 16, 16, integers);
  sparse_operand s{matrix(16, std::vector<float>(32, 0.0f)), {}, std::vector<std::uint32_t>(32, 0u)};
  for (int row = 0; row < 16; ++row)
    for (int chunk = 0; chunk < 8; ++chunk) {
      const unsigned nibble = nibbles[(row * 8 + chunk + rng() % 6) % 6];
      s.dense[row][4 * chunk + int(nibble & 3u)] = values[row][2 * chunk];
      s.dense[row][4 * chunk + int(nibble >> 2)] = values[row][2 * chunk + 1];
      const auto w = L::m16n8k32_sp_metadata(row, chunk, selector);
      s.e[w.lane] |= nibble << w.bit;
    }
  for (int lane = 0; lane < 32; ++lane)
    if ((lane & 3) / 2 != selector) s.e[lane] = 0x0f0f0f0fu ^ unsigned(lane);  // never read
  s.a = pack16<T>(values, L::m16n8k32_sp_a, 4);
  return s;
}

template <int Selector, class T>
void check_sparse_mma(bool integers, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  const sparse_operand s = make_sparse<T>(rng, Selector, integers);
  const matrix B = make_tile<T>(rng, 32, 8, integers), C = make_tile<float>(rng, 16, 8, integers);
  const auto b = pack16<T>(B, L::m16n8k32_sp_b, 4);
  const auto c = pack_c(C);
  device_buffer<std::uint32_t> d_a(s.a), d_b(b), d_e(s.e);
  device_buffer<float> d_c(c), d_d(128);
  FRUGAL_REQUIRE_OK(frugal::launch(mma_sp_kernel<Selector, T>, launch_config{dim3(1), dim3(32)}, d_a.data(), d_b.data(), d_c.data(),
                                   d_e.data(), d_d.data()));
  frugal::test::synchronize();
  const auto got = d_d.download();
  matrix want(16, std::vector<float>(8)), scale(16, std::vector<float>(8));
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double sum = C[m][n], mag = std::fabs(C[m][n]);
      for (int k = 0; k < 32; ++k) sum += double(s.dense[m][k]) * B[k][n], mag += std::fabs(double(s.dense[m][k]) * B[k][n]);
      want[m][n] = float(sum);
      scale[m][n] = float(mag > 0 ? mag : 1);
    }
  std::uint32_t ea[32][4], eb[32][4], ee[32];
  float ec[32][4], ed[32][4];
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 4; ++i) ea[lane][i] = s.a[lane * 4 + i], eb[lane][i] = b[lane * 4 + i], ec[lane][i] = c[lane * 4 + i];
    ee[lane] = s.e[lane];
  }
  REQUIRE(!E::mma_sp_m16n8k32<T>(ea, eb, ec, ee, Selector, ed));
  comparison cmp{Selector == 0 ? (std::is_same_v<T, __half> ? "mma.sp m16n8k32 f16 selector 0" : "mma.sp m16n8k32 bf16 selector 0")
                               : (std::is_same_v<T, __half> ? "mma.sp m16n8k32 f16 selector 1" : "mma.sp m16n8k32 bf16 selector 1"),
                 integers};
  compare_accumulators(cmp, got, ed, want, scale);
}

template <int Matrices, bool Transpose>
void check_ldmatrix(unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  std::vector<std::uint16_t> rows(64 * 8);
  std::iota(rows.begin(), rows.end(), std::uint16_t(1));  // every element distinct
  std::vector<int> perm(64);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  perm.resize(32);
  device_buffer<std::uint16_t> d_rows(rows);
  device_buffer<int> d_perm(perm);
  device_buffer<std::uint32_t> d_out(32 * Matrices);
  FRUGAL_REQUIRE_OK(frugal::launch(ldmatrix_kernel<Matrices, Transpose>, launch_config{dim3(1), dim3(32)}, d_rows.data(), d_perm.data(),
                                   d_out.data()));
  frugal::test::synchronize();
  const auto out = d_out.download();
  const void* addresses[32];
  for (int lane = 0; lane < 32; ++lane) addresses[lane] = rows.data() + perm[lane] * 8;
  std::uint32_t emulated[32][4] = {};
  REQUIRE(!E::ldmatrix(Matrices, Transpose, addresses, emulated));
  for (int lane = 0; lane < 32; ++lane)
    for (int j = 0; j < Matrices; ++j) {
      const int g = lane / 4, t = lane % 4;
      // Written from the PTX text, not from the layout table.
      const auto at = [&](int r, int c) { return std::uint32_t(rows[std::size_t(perm[8 * j + r]) * 8 + c]); };
      const std::uint32_t want = Transpose ? at(2 * t, g) | at(2 * t + 1, g) << 16 : at(g, 2 * t) | at(g, 2 * t + 1) << 16;
      INFO("x" << Matrices << (Transpose ? ".trans" : "") << " lane " << lane << " register " << j);
      REQUIRE(out[lane * Matrices + j] == want);
      REQUIRE(emulated[lane][j] == want);
    }
}

}  // namespace

TEST_CASE("tensor cores: mma m16n8k16 bf16 and f16, small integers bit for bit, random data within bounds") {
  check_dense_mma<frugal::m16n8k16, __nv_bfloat16>(true, 101);
  check_dense_mma<frugal::m16n8k16, __half>(true, 102);
  check_dense_mma<frugal::m16n8k16, __nv_bfloat16>(false, 103);
  check_dense_mma<frugal::m16n8k16, __half>(false, 104);
}

TEST_CASE("tensor cores: mma m16n8k8 tf32, small integers bit for bit, random data within bounds") {
  check_dense_mma<frugal::m16n8k8, float>(true, 105);
  check_dense_mma<frugal::m16n8k8, float>(false, 106);
}

TEST_CASE("tensor cores: mma.sp m16n8k32 bf16 and f16, selectors 0 and 1, non-uniform metadata") {
  check_sparse_mma<0, __nv_bfloat16>(true, 107);
  check_sparse_mma<1, __nv_bfloat16>(true, 108);
  check_sparse_mma<0, __half>(true, 109);
  check_sparse_mma<1, __half>(true, 110);
  check_sparse_mma<0, __nv_bfloat16>(false, 111);
  check_sparse_mma<1, __half>(false, 112);
}

TEST_CASE("tensor cores: ldmatrix x1, x2, x4, plain and transposed, permuted row addresses") {
  check_ldmatrix<1, false>(121);
  check_ldmatrix<2, false>(122);
  check_ldmatrix<4, false>(123);
  check_ldmatrix<1, true>(124);
  check_ldmatrix<2, true>(125);
  check_ldmatrix<4, true>(126);
}

TEST_CASE("tensor cores: cp.async copies 16 bytes, reads src-size of them and zero-fills the rest") {
  const int threads = 64;
  std::vector<unsigned char> src(threads * 16);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i * 7 + 3);
  std::vector<int> sizes(threads);
  for (int t = 0; t < threads; ++t) sizes[t] = t % 17;  // 0 (read nothing) .. 16 (all)
  device_buffer<unsigned char> d_src(src), d_out(threads * 16);
  device_buffer<int> d_sizes(sizes);
  FRUGAL_REQUIRE_OK(frugal::launch(cp_async_kernel, launch_config{dim3(1), dim3(threads)}, d_src.data(), d_sizes.data(), d_out.data()));
  frugal::test::synchronize();
  const auto out = d_out.download();
  for (int t = 0; t < threads; ++t)
    for (int i = 0; i < 16; ++i) {
      INFO("thread " << t << " byte " << i << " src-size " << sizes[t]);
      REQUIRE(out[t * 16 + i] == (i < sizes[t] ? src[t * 16 + i] : 0));
    }
}

TEST_CASE("tensor cores: cp.async groups complete in commit order under wait_group") {
  std::vector<std::uint32_t> src(3 * 32 * 4);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = std::uint32_t(i + 1);
  device_buffer<std::uint32_t> d_src(src), d_out(3 * 32);
  FRUGAL_REQUIRE_OK(frugal::launch(cp_async_groups_kernel, launch_config{dim3(1), dim3(32)}, d_src.data(), d_out.data()));
  frugal::test::synchronize();
  const auto out = d_out.download();
  for (int s = 0; s < 3; ++s)
    for (int t = 0; t < 32; ++t) REQUIRE(out[s * 32 + t] == src[(s * 32 + t) * 4]);
}

#if defined(FRUGAL_HOST_SIMT)

namespace {

__global__ void mma_one_warp_kernel(int exit_lane, int* out) {
  const int lane = int(threadIdx.x % 32);
  if (lane == exit_lane) return;
  mma_fragment<mma_operand::a, frugal::m16n8k16, __nv_bfloat16> a{};
  mma_fragment<mma_operand::b, frugal::m16n8k16, __nv_bfloat16> b{};
  mma_accumulator c{};
  frugal::mma(c, a, b, c);
  out[threadIdx.x] = int(c.x[0]);
}

__global__ void bad_metadata_kernel(int bad_lane, std::uint32_t bad_metadata, int* out) {
  const int lane = int(threadIdx.x);
  mma_fragment<mma_operand::a, frugal::m16n8k32_sparse, __half> a{};
  mma_fragment<mma_operand::b, frugal::m16n8k32_sparse, __half> b{};
  mma_accumulator c{};
  frugal::mma_sp<1>(c, a, b, c, lane == bad_lane ? bad_metadata : 0x44444444u);
  out[lane] = int(c.x[0]);
}

__global__ void misaligned_ldmatrix_kernel(int bad_lane, int* out) {
  __shared__ __align__(16) std::uint16_t tile[32 * 8 + 8];
  const int lane = int(threadIdx.x);
  for (int i = lane; i < 32 * 8 + 8; i += 32) tile[i] = std::uint16_t(i);
  __syncwarp();
  std::uint32_t r[4];
  frugal::ldmatrix<4>(r, tile + lane * 8 + (lane == bad_lane ? 4 : 0));
  out[lane] = int(r[0]);
}

__global__ void mixed_instructions_kernel(int* out) {
  __shared__ __align__(16) std::uint16_t tile[32 * 8];
  const int lane = int(threadIdx.x);
  tile[lane * 8] = 1;
  __syncwarp();
  if (lane < 16) {
    std::uint32_t r[1];
    frugal::ldmatrix<1>(r, tile + lane * 8);
    out[lane] = int(r[0]);
  } else {
    mma_fragment<mma_operand::a, frugal::m16n8k16, __half> a{};
    mma_fragment<mma_operand::b, frugal::m16n8k16, __half> b{};
    mma_accumulator c{};
    frugal::mma(c, a, b, c);
    out[lane] = int(c.x[0]);
  }
}

__global__ void cp_async_misaligned_kernel(const unsigned char* src, int offset, int src_bytes, int* out) {
  __shared__ __align__(16) unsigned char staged[64];
  frugal::cp_async_16(staged + (threadIdx.x == 0 ? 0 : 16), src + offset, src_bytes);
  frugal::cp_async_commit();
  frugal::cp_async_wait<0>();
  out[threadIdx.x] = staged[0];
}

// Reads the destination before the wait: the emulator makes the copy land at the wait.
__global__ void cp_async_early_read_kernel(const std::uint32_t* src, std::uint32_t* out) {
  __shared__ __align__(16) std::uint32_t staged[32 * 4];
  const int t = int(threadIdx.x);
  staged[t * 4] = 0u;
  frugal::cp_async_16(&staged[t * 4], src + t * 4);
  frugal::cp_async_commit();
  out[t] = staged[t * 4];  // too early
  frugal::cp_async_wait<0>();
  out[32 + t] = staged[t * 4];
}

void require_launch_error(const frugal::status& s, std::initializer_list<const char*> fragments) {
  INFO("status: " << s.message() << "; emulator: " << frugal::host_simt::last_error_message());
  REQUIRE(!s.ok());
  CHECK(s.cuda_error() == cudaErrorLaunchFailure);
  for (const char* f : fragments) CHECK(std::strstr(frugal::host_simt::last_error_message(), f) != nullptr);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
}

}  // namespace

TEST_CASE("simt-only: tensor-core instructions need the whole warp: a partial warp and an exited lane are refused") {
  device_buffer<int> out(64);
  require_launch_error(frugal::launch(mma_one_warp_kernel, launch_config{dim3(1), dim3(48)}, -1, out.data()),
                       {"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", "all 32 lanes"});
  require_launch_error(frugal::launch(mma_one_warp_kernel, launch_config{dim3(1), dim3(32)}, 7, out.data()),
                       {"mma.sync.aligned.m16n8k16", "lane 7 has exited"});
}

TEST_CASE("simt-only: mma.sp metadata with equal or descending indices is refused, naming the lane") {
  device_buffer<int> out(32);
  // Selector 1 reads lanes 4 g + 2 and 4 g + 3. Lane 5 is not read: garbage there is fine.
  FRUGAL_REQUIRE_OK(frugal::launch(bad_metadata_kernel, launch_config{dim3(1), dim3(32)}, 5, 0x55555555u, out.data()));
  // Lane 14 is read: a nibble with equal indices (0b0101) or descending ones (0b0110) stops the run.
  require_launch_error(frugal::launch(bad_metadata_kernel, launch_config{dim3(1), dim3(32)}, 14, 0x44454444u, out.data()),
                       {"mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32", "lane 14", "idx0 < idx1",
                        "(value 5)"});
  require_launch_error(frugal::launch(bad_metadata_kernel, launch_config{dim3(1), dim3(32)}, 14, 0x64444444u, out.data()),
                       {"lane 14", "(value 6)"});
}

TEST_CASE("simt-only: a misaligned ldmatrix row address is refused, naming the lane") {
  device_buffer<int> out(32);
  require_launch_error(frugal::launch(misaligned_ldmatrix_kernel, launch_config{dim3(1), dim3(32)}, 13, out.data()),
                       {"ldmatrix.sync.aligned.m8n8.x4.shared.b16", "lane 13", "not 16-byte aligned"});
}

TEST_CASE("simt-only: lanes of a warp in different tensor-core instructions are refused") {
  device_buffer<int> out(32);
  require_launch_error(frugal::launch(mixed_instructions_kernel, launch_config{dim3(1), dim3(32)}, out.data()),
                       {"meet in different collectives"});
}

TEST_CASE("simt-only: cp.async refuses misaligned addresses and a src-size above 16") {
  device_buffer<unsigned char> src(64);
  device_buffer<int> out(2);
  require_launch_error(frugal::launch(cp_async_misaligned_kernel, launch_config{dim3(1), dim3(2)}, (const unsigned char*)src.data(), 8, 16,
                                      out.data()),
                       {"cp.async", "not aligned to 16 bytes"});
  require_launch_error(frugal::launch(cp_async_misaligned_kernel, launch_config{dim3(1), dim3(2)}, (const unsigned char*)src.data(), 0, 17,
                                      out.data()),
                       {"cp.async", "src-size 17 exceeds"});
  // PTX asks for an aligned source even when src-size 0 reads nothing.
  require_launch_error(frugal::launch(cp_async_misaligned_kernel, launch_config{dim3(1), dim3(2)}, (const unsigned char*)src.data(), 8, 0,
                                      out.data()),
                       {"cp.async", "not aligned to 16 bytes"});
}

TEST_CASE("simt-only: a copy lands at the wait that covers it, so reading it earlier shows the old bytes") {
  frugal::host_simt::set_schedule(frugal::host_simt::schedule::in_order);  // shuffled: half land at once
  std::vector<std::uint32_t> src(32 * 4, 7u);
  device_buffer<std::uint32_t> d_src(src), out(64);
  FRUGAL_REQUIRE_OK(frugal::launch(cp_async_early_read_kernel, launch_config{dim3(1), dim3(32)}, d_src.data(), out.data()));
  const auto o = out.download();
  for (int t = 0; t < 32; ++t) {
    CHECK(o[t] == 0u);
    CHECK(o[32 + t] == 7u);
  }
}

#endif  // FRUGAL_HOST_SIMT

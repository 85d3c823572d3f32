// SPDX-License-Identifier: Apache-2.0
// frugal/core/warp.cuh: reductions, scans and broadcasts over full and logical warps.
#include <frugal/core/launch.cuh>
#include <frugal/core/warp.cuh>

#include "support/test_support.hpp"

using frugal::launch_config;
using frugal::test::device_buffer;

namespace {

// out[i * 6 + {0..5}] = sum, max, min, inclusive scan, exclusive sum, broadcast of lane 1
template <int Width, class T>
__global__ void warp_ops_kernel(const T* in, T* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const T v = in[i];
  T total;
  out[i * 6 + 0] = frugal::warp_sum<Width>(v);
  out[i * 6 + 1] = frugal::warp_max<Width>(v);
  out[i * 6 + 2] = frugal::warp_min<Width>(v);
  out[i * 6 + 3] = frugal::warp_inclusive_scan<Width>(v, frugal::plus{});
  out[i * 6 + 4] = frugal::warp_exclusive_sum<Width>(v, total);
  out[i * 6 + 5] = frugal::warp_broadcast<Width>(v, 1 % Width) + total - total;
}

template <int Width, class T>
void check_warp_ops(unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  const int n = 4 * 64;  // two blocks of two warps
  std::vector<T> in(n);
  // Small integers: every sum and scan is exact in float too, so results compare with ==.
  for (auto& v : in) v = T(int(rng() % 201) - 100);
  device_buffer<T> d_in(in), d_out(n * 6);
  FRUGAL_REQUIRE_OK(frugal::launch(warp_ops_kernel<Width, T>, launch_config{dim3(2), dim3(128)}, d_in.data(), d_out.data()));
  frugal::test::synchronize();
  const auto out = d_out.download();
  for (int i = 0; i < n; ++i) {
    const int base = i / Width * Width;
    T sum = 0, mx = in[base], mn = in[base], scan = 0;
    for (int j = base; j < base + Width; ++j) {
      sum += in[j];
      mx = in[j] > mx ? in[j] : mx;
      mn = in[j] < mn ? in[j] : mn;
      if (j <= i) scan += in[j];
    }
    INFO("width " << Width << " element " << i);
    REQUIRE(out[i * 6 + 0] == sum);
    REQUIRE(out[i * 6 + 1] == mx);
    REQUIRE(out[i * 6 + 2] == mn);
    REQUIRE(out[i * 6 + 3] == scan);
    REQUIRE(out[i * 6 + 4] == scan - in[i]);
    REQUIRE(out[i * 6 + 5] == in[base + 1 % Width]);
  }
}

// out[i * 2 + {0, 1}] = OR of the logical warp's words, whether any lane of it holds an odd word
template <int Width>
__global__ void warp_bits_kernel(const unsigned* in, unsigned* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i * 2 + 0] = frugal::warp_or<Width>(in[i]);
  out[i * 2 + 1] = frugal::warp_any<Width>((in[i] & 1u) != 0u) ? 1u : 0u;
}

template <int Width>
void check_warp_bits(unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  const int n = 4 * 64;
  std::vector<unsigned> in(n);
  // Sparse bits, and odd words in only some logical warps (so that "any" is false in some).
  for (int i = 0; i < n; ++i) in[i] = (1u << (rng() % 32)) & (i / Width % 3 == 0 ? ~0u : ~1u);
  device_buffer<unsigned> d_in(in), d_out(n * 2);
  FRUGAL_REQUIRE_OK(frugal::launch(warp_bits_kernel<Width>, launch_config{dim3(2), dim3(128)}, d_in.data(), d_out.data()));
  frugal::test::synchronize();
  const auto out = d_out.download();
  for (int i = 0; i < n; ++i) {
    const int base = i / Width * Width;
    unsigned bits = 0, odd = 0;
    for (int j = base; j < base + Width; ++j) bits |= in[j], odd |= in[j] & 1u;
    INFO("width " << Width << " element " << i);
    REQUIRE(out[i * 2 + 0] == bits);
    REQUIRE(out[i * 2 + 1] == odd);
  }
}

}  // namespace

TEST_CASE("warp_or and warp_any over widths 32, 16, 8, 4, 2, 1") {
  check_warp_bits<32>(11);
  check_warp_bits<16>(12);
  check_warp_bits<8>(13);
  check_warp_bits<4>(14);
  check_warp_bits<2>(15);
  check_warp_bits<1>(16);
}

TEST_CASE("warp collectives: int over widths 32, 16, 8, 4, 2, 1") {
  check_warp_ops<32, int>(1);
  check_warp_ops<16, int>(2);
  check_warp_ops<8, int>(3);
  check_warp_ops<4, int>(4);
  check_warp_ops<2, int>(5);
  check_warp_ops<1, int>(6);
}

TEST_CASE("warp collectives: float and 64-bit over widths 32 and 8") {
  check_warp_ops<32, float>(7);
  check_warp_ops<8, float>(8);
  check_warp_ops<32, long long>(9);
  check_warp_ops<8, double>(10);
}

// SPDX-License-Identifier: Apache-2.0
// Host-usable parts of frugal/core and frugal/config.cuh: status, numeric conversion, vectors.
#include <frugal/config.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/vector_io.cuh>

#include <doctest/doctest.h>

#include <cstring>
#include <cmath>
#include <limits>
#include <random>

namespace {
frugal::status fails_then_stops(int& reached) {
  FRUGAL_TRY(frugal::status::invalid("frugal::test: first"));
  reached = 1;
  return frugal::status{};
}
frugal::status passes_through(int& reached) {
  FRUGAL_TRY(frugal::status{});
  reached = 2;
  return frugal::status::unsupported("frugal::test: second");
}
}  // namespace

TEST_CASE("status: codes, messages and CUDA errors") {
  constexpr frugal::status ok;
  static_assert(ok.ok() && ok.cuda_error() == cudaSuccess, "a default status is success");
  CHECK(std::strcmp(ok.message(), "success") == 0);
  const auto bad = frugal::status::invalid("frugal::x: k must be in [1, 32]");
  CHECK(!bad.ok());
  CHECK(bad.code() == frugal::errc::invalid_argument);
  CHECK(bad.cuda_error() == cudaErrorInvalidValue);
  CHECK(std::strcmp(bad.message(), "frugal::x: k must be in [1, 32]") == 0);
  CHECK(frugal::status::misaligned("m").cuda_error() == cudaErrorMisalignedAddress);
  CHECK(frugal::status::unsupported("u").cuda_error() == cudaErrorNotSupported);
  CHECK(frugal::status::from_cuda(cudaSuccess).ok());
  const auto cuda = frugal::status::from_cuda(cudaErrorMemoryAllocation);
  CHECK(cuda.code() == frugal::errc::cuda);
  CHECK(cuda.cuda_error() == cudaErrorMemoryAllocation);
  CHECK(std::strlen(cuda.message()) > 0);
  CHECK(bad != ok);
}

TEST_CASE("FRUGAL_TRY returns the first error and passes success through") {
  int reached = 0;
  CHECK(fails_then_stops(reached).code() == frugal::errc::invalid_argument);
  CHECK(reached == 0);
  CHECK(passes_through(reached).code() == frugal::errc::unsupported);
  CHECK(reached == 2);
}

TEST_CASE("numeric: to_float/from_float round to nearest even, exactly like the device") {
  std::mt19937 rng(3);
  for (int i = 0; i < 100000; ++i) {
    const float x = std::ldexp(float(int(rng() % 2000001) - 1000000) / 1000000.0f, int(rng() % 40) - 20);
    const __half h = frugal::from_float<__half>(x);
    const __nv_bfloat16 b = frugal::from_float<__nv_bfloat16>(x);
    // bf16 keeps the top 16 bits after round-to-nearest-even on the low 16.
    std::uint32_t bits;
    std::memcpy(&bits, &x, 4);
    const std::uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    std::uint16_t bbits;
    std::memcpy(&bbits, &b, 2);
    REQUIRE(bbits == rounded);
    REQUIRE(frugal::to_float(frugal::from_float<__half>(frugal::to_float(h))) == frugal::to_float(h));
  }
  CHECK(frugal::to_float(frugal::from_float<float>(1.5f)) == 1.5f);
  CHECK(std::isnan(frugal::to_float(frugal::from_float<__nv_bfloat16>(std::numeric_limits<float>::quiet_NaN()))));
}

TEST_CASE("vector_io: load and store 16-byte vectors, alignment check") {
  alignas(16) float src[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  alignas(16) float dst[8] = {};
  const auto v = frugal::load_vector<4>(src + 4);
  CHECK(v[0] == 5.0f);
  CHECK(v[3] == 8.0f);
  frugal::store_vector(dst, v);
  CHECK(dst[0] == 5.0f);
  CHECK(dst[3] == 8.0f);
  CHECK(frugal::is_aligned(src, 16));
  CHECK(!frugal::is_aligned(src + 1, 16));
  static_assert(frugal::vector_width_16B<__nv_bfloat16> == 8);
  static_assert(frugal::vector_width_16B<float> == 4);
  static_assert(sizeof(frugal::vector<__half, 8>) == 16 && alignof(frugal::vector<__half, 8>) == 16);
}

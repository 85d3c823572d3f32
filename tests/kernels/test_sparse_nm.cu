// SPDX-License-Identifier: Apache-2.0
// frugal::sparse masks, prune, compress and decompress against the host references, for 2:4,
// 1:4, 3:4, 2:8, 1:8, 4:8, 2:16, 8:16 and 15:16, bf16 / f16 / fp32, on random and adversarial
// matrices (all-zero windows, exactly N non-zeros, more than N, ties, -0.0, NaN, K not a multiple
// of M, one row, primes); round trips prune -> compress -> decompress == the masked dense;
// determinism; argument errors.
#include <frugal/reference/sparse_nm.hpp>
#include <frugal/sparse/device_nm.cuh>

#include <cmath>
#include <cstring>
#include <string>

#include "support/test_support.hpp"

using frugal::sparse::nm;
using frugal::sparse::nm_report;
using frugal::test::device_buffer;
using frugal::test::same_bits;

namespace {

enum class fill { random, ties, sparse_values, adversarial };

// Random values with the adversities the format must survive.
template <class T>
std::vector<T> make_matrix(std::mt19937_64& rng, std::int64_t rows, std::int64_t ld, fill kind) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> small(-2, 2), pick(0, 9);
  std::vector<T> v(std::size_t(rows * ld));
  for (auto& x : v) {
    float f = normal(rng);
    if (kind == fill::ties) f = float(small(rng));                       // many equal magnitudes, -x ties x
    if (kind == fill::sparse_values) f = pick(rng) < 6 ? 0.0f : f;         // mostly zeros
    if (kind == fill::adversarial) {
      const int p = pick(rng);
      f = p == 0 ? -0.0f : p == 1 ? 0.0f : p == 2 ? 1.0f : p == 3 ? -1.0f : f;  // -0.0, +0.0, exact ties
    }
    x = frugal::from_float<T>(f);
  }
  return v;
}

void require_same_report(const nm_report& got, const nm_report& want) {
  CHECK(got.nan_count == want.nan_count);
  CHECK(got.first_nan == want.first_nan);
  CHECK(got.overfull_windows == want.overfull_windows);
  CHECK(got.first_overfull == want.first_overfull);
  CHECK(got.most_nonzeros == want.most_nonzeros);
  CHECK(got.invalid_windows == want.invalid_windows);
  CHECK(got.first_invalid == want.first_invalid);
}

// Prune (with the mask recorded), compress with that mask, compress the pruned dense without a
// mask, decompress: every output equals the reference bit for bit, and decompress(prune(W)) is W
// masked.
template <class P, class T, class TV>
void check_round_trip(std::int64_t rows, std::int64_t k, fill kind, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  INFO("nm<" << P::n << ", " << P::m << "> " << std::string(frugal::type_name<T>()) << " -> " << std::string(frugal::type_name<TV>()) << " rows " << rows << " k "
             << k << " fill " << int(kind));
  const std::int64_t ld = k + 3, ldv = P::values_per_row(k) + 1, ldi = P::index_words_per_row(k) + 1, ldm = k + 5;
  const auto w = make_matrix<T>(rng, rows, ld, kind);
  device_buffer<T> d_w(w);
  device_buffer<TV> d_values(std::size_t(rows * ldv));
  device_buffer<std::uint32_t> d_indices(std::size_t(rows * ldi));
  device_buffer<std::uint8_t> d_mask(std::size_t(rows * ldm));
  device_buffer<nm_report> d_report(1);
  d_values.fill_bytes(0x5A);
  d_indices.fill_bytes(0x5A);
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_prune<P>(d_w.data(), ld, d_values.data(), ldv, d_indices.data(), ldi, d_mask.data(), ldm,
                                                d_report.data(), rows, k)));
  frugal::test::synchronize();
  std::vector<TV> want_values(std::size_t(rows * ldv));
  std::vector<std::uint32_t> want_indices(std::size_t(rows * ldi));
  std::vector<std::uint8_t> want_mask(std::size_t(rows * ldm));
  nm_report want_report;
  frugal::reference::nm_prune<P>(w.data(), ld, rows, k, want_values.data(), ldv, want_indices.data(), ldi, want_mask.data(), ldm,
                                 want_report);
  const auto values = d_values.download();
  const auto indices = d_indices.download();
  const auto mask = d_mask.download();
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t j = 0; j < P::values_per_row(k); ++j)
      REQUIRE(std::memcmp(&values[std::size_t(r * ldv + j)], &want_values[std::size_t(r * ldv + j)], sizeof(TV)) == 0);
    for (std::int64_t j = 0; j < P::index_words_per_row(k); ++j) {
      INFO("row " << r << " word " << j);
      REQUIRE(indices[std::size_t(r * ldi + j)] == want_indices[std::size_t(r * ldi + j)]);
    }
    for (std::int64_t c = 0; c < k; ++c) REQUIRE(mask[std::size_t(r * ldm + c)] == want_mask[std::size_t(r * ldm + c)]);
  }
  require_same_report(d_report.download()[0], want_report);
  // Each window keeps exactly min(N, its elements), except NaN windows (kept nothing).
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t win = 0; win < P::windows(k); ++win) {
      int kept = 0, real = 0;
      bool nan = false;
      for (int i = 0; i < P::m && win * P::m + i < k; ++i, ++real) {
        kept += mask[std::size_t(r * ldm + win * P::m + i)];
        nan = nan || std::isnan(frugal::to_float(w[std::size_t(r * ld + win * P::m + i)]));
      }
      REQUIRE(kept == (nan ? 0 : std::min(P::n, real)));
    }

  // Compress with the mask: the same values and indices.
  device_buffer<TV> d_values2(std::size_t(rows * ldv));
  device_buffer<std::uint32_t> d_indices2(std::size_t(rows * ldi));
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_compress<P>(d_w.data(), ld, d_mask.data(), ldm, d_values2.data(), ldv, d_indices2.data(), ldi,
                                                   d_report.data(), rows, k)));
  frugal::test::synchronize();
  const nm_report with_mask = d_report.download()[0];
  if (want_report.nan_count == 0) {
    REQUIRE(with_mask.ok());
    const auto v2 = d_values2.download();
    const auto i2 = d_indices2.download();
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t j = 0; j < P::values_per_row(k); ++j)
        REQUIRE(std::memcmp(&v2[std::size_t(r * ldv + j)], &values[std::size_t(r * ldv + j)], sizeof(TV)) == 0);
      for (std::int64_t j = 0; j < P::index_words_per_row(k); ++j) REQUIRE(i2[std::size_t(r * ldi + j)] == indices[std::size_t(r * ldi + j)]);
    }
  } else {
    CHECK(with_mask.invalid_windows > 0);  // the NaN windows' empty masks
  }

  // Decompress: the masked dense (values rounded to TV).
  device_buffer<float> d_dense(std::size_t(rows * ld));
  d_dense.fill_bytes(0x7F);
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_decompress<P>(d_values.data(), ldv, d_indices.data(), ldi, d_dense.data(), ld, d_report.data(), rows, k)));
  frugal::test::synchronize();
  REQUIRE(d_report.download()[0].ok());
  const auto dense = d_dense.download();
  std::vector<float> want_dense(std::size_t(rows * ld), 0.0f);
  nm_report ignored;
  frugal::reference::nm_decompress<P>(want_values.data(), ldv, want_indices.data(), ldi, rows, k, want_dense.data(), ld, ignored);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < k; ++c) {
      const float wv = frugal::to_float(w[std::size_t(r * ld + c)]);
      const bool kept = mask[std::size_t(r * ldm + c)] != 0;
      const float expected = kept ? frugal::to_float(frugal::from_float<TV>(wv)) : 0.0f;
      INFO("row " << r << " col " << c);
      REQUIRE(std::memcmp(&dense[std::size_t(r * ld + c)], &want_dense[std::size_t(r * ld + c)], 4) == 0);
      if (!std::isnan(wv)) REQUIRE((dense[std::size_t(r * ld + c)] == expected));
    }
}

template <class P>
void check_pattern(unsigned long long seed) {
  for (auto kind : {fill::random, fill::ties, fill::sparse_values, fill::adversarial}) {
    check_round_trip<P, float, __nv_bfloat16>(37, 203, kind, ++seed);  // K not a multiple of M, rows prime
    check_round_trip<P, __nv_bfloat16, __nv_bfloat16>(1, 1024 + P::m / 2, kind, ++seed);  // one long row, a tail
    check_round_trip<P, __half, float>(64, 5, kind, ++seed);            // K shorter than one window
  }
}

}  // namespace

TEST_CASE("sparse: prune / compress / decompress round trips for 2:4, 1:4, 3:4") {
  check_pattern<nm<2, 4>>(100);
  check_pattern<nm<1, 4>>(200);
  check_pattern<nm<3, 4>>(300);
}

TEST_CASE("sparse: prune / compress / decompress round trips for 2:8, 1:8, 4:8, 7:8") {
  check_pattern<nm<2, 8>>(400);
  check_pattern<nm<1, 8>>(500);
  check_pattern<nm<4, 8>>(600);
  check_pattern<nm<7, 8>>(700);
}

TEST_CASE("sparse: prune / compress / decompress round trips for 2:16, 8:16, 15:16") {
  check_pattern<nm<2, 16>>(800);
  check_pattern<nm<8, 16>>(900);
  check_pattern<nm<15, 16>>(1000);
}

TEST_CASE("sparse: masks along rows and columns, magnitude and score, against the reference") {
  FRUGAL_SEEDED_RNG(rng, 1100);
  for (auto axis : {frugal::sparse::nm_axis::rows, frugal::sparse::nm_axis::columns})
    for (auto score : {frugal::sparse::nm_score::magnitude, frugal::sparse::nm_score::value})
      for (auto kind : {fill::random, fill::ties, fill::adversarial}) {
        const std::int64_t rows = 45, cols = 77, ld = 80, ldm = 81;
        const auto x = make_matrix<__nv_bfloat16>(rng, rows, ld, kind);
        device_buffer<__nv_bfloat16> d_x(x);
        device_buffer<std::uint8_t> d_mask(std::size_t(rows * ldm));
        device_buffer<nm_report> d_report(1);
        FRUGAL_REQUIRE_OK((frugal::sparse::nm_mask<nm<2, 8>>(d_x.data(), ld, d_mask.data(), ldm, d_report.data(), rows, cols, axis, score)));
        frugal::test::synchronize();
        std::vector<std::uint8_t> want(std::size_t(rows * ldm), 0);
        nm_report want_report;
        frugal::reference::nm_mask<nm<2, 8>>(x.data(), ld, rows, cols, axis, score == frugal::sparse::nm_score::magnitude, want.data(), ldm,
                                              want_report);
        const auto got = d_mask.download();
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t c = 0; c < cols; ++c) {
            INFO("axis " << int(axis) << " score " << int(score) << " fill " << int(kind) << " (" << r << ", " << c << ")");
            REQUIRE(got[std::size_t(r * ldm + c)] == want[std::size_t(r * ldm + c)]);
          }
        require_same_report(d_report.download()[0], want_report);
      }
}

TEST_CASE("sparse: the tie and zero rules, spelled out") {
  // One 2:4 window per row: ties keep the lower position; -0.0 is a zero; a window with one
  // non-zero keeps it and the lowest zero position; NaN is reported with its position.
  const std::vector<float> w = {1, 1, 1, 1,  -0.0f, 0, 3, -0.0f,  0, 0, 0, 0,  0, 0, 0, 5,  2, NAN, 1, 1};
  device_buffer<float> d_w(w);
  device_buffer<float> d_values(10);
  device_buffer<std::uint32_t> d_indices(5);
  device_buffer<std::uint8_t> d_mask(20);
  device_buffer<nm_report> d_report(1);
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_prune<nm<2, 4>>(d_w.data(), 4, d_values.data(), 2, d_indices.data(), 1, d_mask.data(), 4,
                                                       d_report.data(), 5, 4)));
  frugal::test::synchronize();
  const auto mask = d_mask.download();
  const auto indices = d_indices.download();
  const std::vector<std::uint8_t> want_mask = {1, 1, 0, 0,  1, 0, 1, 0,  1, 1, 0, 0,  1, 0, 0, 1,  0, 0, 0, 0};
  CHECK(mask == want_mask);
  CHECK(indices[0] == 0x4u);  // (0, 1)
  CHECK(indices[1] == 0x8u);  // (0, 2): -0.0 at 0 ties 0 at 1, the lower position wins
  CHECK(indices[2] == 0x4u);  // all zero: (0, 1)
  CHECK(indices[3] == 0xCu);  // (0, 3)
  CHECK(indices[4] == 0x4u);  // NaN window: zeros at (0, 1)
  const auto report = d_report.download()[0];
  CHECK(report.nan_count == 1);
  CHECK(report.first_nan == 17u);
  CHECK(frugal::sparse::report_status(report).code() == frugal::errc::invalid_argument);
  const auto values = d_values.download();
  CHECK(values[6] == 0.0f);
  CHECK(values[7] == 5.0f);
}

TEST_CASE("sparse: compress without a mask reports overfull windows with the count, nothing silently dropped") {
  // Row 0 is 2:4; row 1 has a window with 3 non-zeros and one with 4.
  const std::vector<__nv_bfloat16> w = [] {
    std::vector<float> f = {1, 0, 2, 0, 0, 0, 0, 3,   1, 2, 3, 0, 4, 5, 6, 7};
    std::vector<__nv_bfloat16> b;
    for (float x : f) b.push_back(__float2bfloat16_rn(x));
    return b;
  }();
  device_buffer<__nv_bfloat16> d_w(w), d_values(8);
  device_buffer<std::uint32_t> d_indices(2);
  device_buffer<nm_report> d_report(1);
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_compress<nm<2, 4>>(d_w.data(), 8, static_cast<const std::uint8_t*>(nullptr), 0, d_values.data(), 4,
                                                          d_indices.data(), 1, d_report.data(), 2, 8)));
  frugal::test::synchronize();
  const auto report = d_report.download()[0];
  CHECK(report.overfull_windows == 2);
  CHECK(report.first_overfull == 8u);
  CHECK(report.most_nonzeros == 4u);
  CHECK(std::string(frugal::sparse::report_status(report).message()).find("more than N non-zeros") != std::string::npos);
  CHECK(d_indices.download()[0] == (0x8u | 0xCu << 4));  // (0, 2) and (0, 3)
}

TEST_CASE("sparse: a mask that keeps other than N, and indices that are not ascending, are reported") {
  const std::vector<float> w(16, 1.0f);
  const std::vector<std::uint8_t> mask = {1, 1, 0, 0,  1, 1, 1, 0,  0, 0, 0, 1,  0, 1, 1, 0};
  device_buffer<float> d_w(w), d_values(8), d_dense(16);
  device_buffer<std::uint8_t> d_mask(mask);
  device_buffer<std::uint32_t> d_indices(2);
  device_buffer<nm_report> d_report(1);
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_compress<nm<2, 4>>(d_w.data(), 8, d_mask.data(), 8, d_values.data(), 4, d_indices.data(), 1,
                                                          d_report.data(), 2, 8)));
  frugal::test::synchronize();
  auto report = d_report.download()[0];
  CHECK(report.invalid_windows == 2);
  CHECK(report.first_invalid == 4u);
  // Indices with an equal pair (0b0101) and a descending pair (0b0110) in row 1.
  const std::vector<std::uint32_t> bad = {0x84u, 0x65u};
  d_indices.upload(bad);
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_decompress<nm<2, 4>>(d_values.data(), 4, d_indices.data(), 1, d_dense.data(), 8, d_report.data(), 2, 8)));
  frugal::test::synchronize();
  report = d_report.download()[0];
  CHECK(report.invalid_windows == 2);
  CHECK(report.first_invalid == 8u);
}

TEST_CASE("sparse: bitwise deterministic, and arguments checked") {
  FRUGAL_SEEDED_RNG(rng, 1200);
  const auto w = make_matrix<float>(rng, 64, 512, fill::ties);
  device_buffer<float> d_w(w);
  device_buffer<__half> v1(64 * 192), v2(64 * 192);
  device_buffer<std::uint32_t> i1(64 * 18), i2(64 * 18);
  device_buffer<nm_report> d_report(1);
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_prune<nm<3, 8>>(d_w.data(), 512, v1.data(), 192, i1.data(), 18, static_cast<std::uint8_t*>(nullptr), 0,
                                                       d_report.data(), 64, 512)));
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_prune<nm<3, 8>>(d_w.data(), 512, v2.data(), 192, i2.data(), 18, static_cast<std::uint8_t*>(nullptr), 0,
                                                       d_report.data(), 64, 512)));
  frugal::test::synchronize();
  CHECK(same_bits(v1.download(), v2.download()));
  CHECK(same_bits(i1.download(), i2.download()));
  auto message = [](const frugal::status& s) { return std::string(s.message()); };
  CHECK(message(frugal::sparse::nm_prune<nm<3, 8>>(d_w.data(), 512, v1.data(), 191, i1.data(), 18, static_cast<std::uint8_t*>(nullptr), 0,
                                                   d_report.data(), 64, 512)) ==
        "frugal::sparse: ld_values must be >= nm<N, M>::values_per_row(K)");
  CHECK(message(frugal::sparse::nm_prune<nm<3, 8>>(d_w.data(), 512, v1.data(), 192, i1.data(), 17, static_cast<std::uint8_t*>(nullptr), 0,
                                                   d_report.data(), 64, 512)) ==
        "frugal::sparse: ld_indices must be >= nm<N, M>::index_words_per_row(K)");
  CHECK(message(frugal::sparse::nm_prune<nm<3, 8>>(d_w.data(), 512, v1.data(), 192, i1.data(), 18, static_cast<std::uint8_t*>(nullptr), 0,
                                                   static_cast<nm_report*>(nullptr), 64, 512)) ==
        "frugal::sparse: the report is null (errors are written there)");
  CHECK(!frugal::sparse::nm_mask<nm<2, 4>>(d_w.data(), 100, static_cast<std::uint8_t*>(nullptr), 512, d_report.data(), 64, 512).ok());
  // Empty matrices are a no-op (the report is still reset).
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_prune<nm<2, 4>>(d_w.data(), 512, v1.data(), 256, i1.data(), 16, static_cast<std::uint8_t*>(nullptr), 0,
                                                       d_report.data(), 0, 512)));
}

TEST_CASE("sparse: transposable N:4 masks against the reference; every block keeps N per row and column") {
  FRUGAL_SEEDED_RNG(rng, 1300);
  for (auto kind : {fill::random, fill::ties, fill::adversarial}) {
    const std::int64_t rows = 37, cols = 70, ld = 72;  // edge blocks in both directions
    const auto x = make_matrix<float>(rng, rows, ld, kind);
    device_buffer<float> d_x(x);
    device_buffer<std::uint8_t> d_mask(std::size_t(rows * cols));
    device_buffer<nm_report> d_report(1);
    auto run = [&](auto n_tag) {
      constexpr int N = decltype(n_tag)::value;
      FRUGAL_REQUIRE_OK((frugal::sparse::nm_transposable_mask<nm<N, 4>>(d_x.data(), ld, d_mask.data(), cols, d_report.data(), rows, cols)));
      frugal::test::synchronize();
      std::vector<std::uint8_t> want(std::size_t(rows * cols));
      nm_report want_report;
      frugal::reference::nm_transposable_mask4<N>(x.data(), ld, rows, cols, want.data(), cols, want_report);
      const auto got = d_mask.download();
      INFO("N " << N << " fill " << int(kind));
      REQUIRE(got == want);
      require_same_report(d_report.download()[0], want_report);
      // Interior blocks: exactly N per row and per column.
      for (std::int64_t r0 = 0; r0 + 4 <= rows; r0 += 4)
        for (std::int64_t c0 = 0; c0 + 4 <= cols; c0 += 4)
          for (int i = 0; i < 4; ++i) {
            int in_row = 0, in_col = 0;
            for (int j = 0; j < 4; ++j) {
              in_row += got[std::size_t((r0 + i) * cols + c0 + j)];
              in_col += got[std::size_t((r0 + j) * cols + c0 + i)];
            }
            REQUIRE(in_row == N);
            REQUIRE(in_col == N);
          }
    };
    run(std::integral_constant<int, 2>{});
    run(std::integral_constant<int, 1>{});
    run(std::integral_constant<int, 3>{});
  }
}

TEST_CASE("sparse: transposable N:8 and N:16 masks (warp greedy with completion) against the reference") {
  FRUGAL_SEEDED_RNG(rng, 1400);
  for (auto kind : {fill::random, fill::ties, fill::sparse_values}) {
    const std::int64_t rows = 45, cols = 70, ld = 70;  // edge blocks in both directions
    const auto x = make_matrix<__nv_bfloat16>(rng, rows, ld, kind);
    device_buffer<__nv_bfloat16> d_x(x);
    device_buffer<std::uint8_t> d_mask(std::size_t(rows * cols));
    device_buffer<nm_report> d_report(1);
    auto run = [&](auto n_tag, auto m_tag) {
      constexpr int N = decltype(n_tag)::value, M = decltype(m_tag)::value;
      FRUGAL_REQUIRE_OK((frugal::sparse::nm_transposable_mask<nm<N, M>>(d_x.data(), ld, d_mask.data(), cols, d_report.data(), rows, cols)));
      frugal::test::synchronize();
      std::vector<std::uint8_t> want(std::size_t(rows * cols));
      nm_report want_report;
      frugal::reference::nm_transposable_mask_greedy<N, M>(x.data(), ld, rows, cols, want.data(), cols, want_report);
      INFO(N << ":" << M << " fill " << int(kind));
      REQUIRE(d_mask.download() == want);
      require_same_report(d_report.download()[0], want_report);
    };
    run(std::integral_constant<int, 2>{}, std::integral_constant<int, 8>{});
    run(std::integral_constant<int, 4>{}, std::integral_constant<int, 8>{});
    run(std::integral_constant<int, 4>{}, std::integral_constant<int, 16>{});
    run(std::integral_constant<int, 8>{}, std::integral_constant<int, 16>{});
  }
}

TEST_CASE("sparse: 2:4 indices to CUTLASS / PyTorch metadata and back on the device, equal to the reference") {
  FRUGAL_SEEDED_RNG(rng, 1500);
  const std::int64_t rows = 64, k = 96, ldi = 4;
  const auto w = make_matrix<__nv_bfloat16>(rng, rows, k, fill::random);
  std::vector<__nv_bfloat16> values(std::size_t(rows * k / 2));
  std::vector<std::uint32_t> indices(std::size_t(rows * ldi), 0u);
  std::vector<std::uint8_t> mask(std::size_t(rows * k));
  nm_report report;
  frugal::reference::nm_prune<nm<2, 4>>(w.data(), k, rows, k, values.data(), k / 2, indices.data(), ldi, mask.data(), k, report);
  std::vector<std::int16_t> want(std::size_t(rows * k / 16));
  frugal::reference::nm24_to_cutlass_meta(indices.data(), ldi, rows, k, want.data());
  device_buffer<std::uint32_t> d_indices(indices), d_back(std::size_t(rows * ldi));
  device_buffer<std::int16_t> d_meta(std::size_t(rows * k / 16));
  FRUGAL_REQUIRE_OK(frugal::sparse::nm24_to_cutlass_meta(d_indices.data(), ldi, d_meta.data(), rows, k));
  d_back.fill_bytes(0);
  FRUGAL_REQUIRE_OK(frugal::sparse::nm24_from_cutlass_meta(d_meta.data(), d_back.data(), ldi, rows, k));
  frugal::test::synchronize();
  CHECK(d_meta.download() == want);
  const auto back = d_back.download();
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t i = 0; i < k / 32; ++i) REQUIRE(back[std::size_t(r * ldi + i)] == indices[std::size_t(r * ldi + i)]);
  CHECK(!frugal::sparse::nm24_to_cutlass_meta(d_indices.data(), ldi, d_meta.data(), 48, k).ok());
}

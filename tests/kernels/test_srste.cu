// SPDX-License-Identifier: Apache-2.0
// frugal::sparse::srste_step against the host reference, bit for bit over several steps: SGD
// with momentum and AdamW (weight decay included), 2:4, 2:8, 1:4 and 4:16, bf16 / fp32 gradients,
// bf16 / f16 compressed weights, K not a multiple of M; the flips, the NaN report, determinism
// and argument errors.
#include <frugal/reference/sparse_nm.hpp>
#include <frugal/sparse/srste.cuh>

#include <cmath>
#include <cstring>
#include <string>

#include "support/test_support.hpp"

using frugal::sparse::nm;
using frugal::sparse::nm_report;
using frugal::test::device_buffer;
using frugal::test::same_bits;

namespace {

template <class P, class Optimizer, class G, class TV>
void check_steps(std::int64_t rows, std::int64_t k, Optimizer opt, int steps, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  INFO("nm<" << P::n << ", " << P::m << "> rows " << rows << " k " << k << " grad " << std::string(frugal::type_name<G>()) << " values "
             << std::string(frugal::type_name<TV>()));
  constexpr bool adam = std::is_same_v<Optimizer, frugal::sparse::adamw>;
  const std::int64_t ld = k + 4, ldv = P::values_per_row(k), ldi = P::index_words_per_row(k);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(std::size_t(rows * ld)), s0(std::size_t(rows * ld), 0.0f), s1(std::size_t(rows * ld), 0.0f);
  for (auto& x : w) x = 0.1f * normal(rng);
  device_buffer<float> d_w(w), d_s0(s0), d_s1(s1);
  device_buffer<G> d_g(std::size_t(rows * ld));
  device_buffer<TV> d_values(std::size_t(rows * ldv));
  device_buffer<std::uint32_t> d_indices(std::size_t(rows * ldi));
  device_buffer<unsigned long long> d_flips(1);
  device_buffer<nm_report> d_report(1);
  std::vector<TV> values(std::size_t(rows * ldv));
  std::vector<std::uint32_t> indices(std::size_t(rows * ldi));
  const frugal::sparse::srste_params params{0.02f};  // a strong decay, so the masks move
  for (int step = 1; step <= steps; ++step) {
    std::vector<G> g(std::size_t(rows * ld));
    for (auto& x : g) x = frugal::from_float<G>(0.5f * normal(rng));
    d_g.upload(g);
    if constexpr (adam) opt.step = step;
    frugal::sparse::srste_buffers<G, TV> b;
    b.weight = d_w.data();
    b.grad = d_g.data();
    b.state0 = d_s0.data();
    b.state1 = adam ? d_s1.data() : nullptr;
    b.ld = ld;
    b.values = d_values.data();
    b.ld_values = ldv;
    b.indices = d_indices.data();
    b.ld_indices = ldi;
    b.flips = d_flips.data();
    b.report = d_report.data();
    FRUGAL_REQUIRE_OK((frugal::sparse::srste_step<P>(b, rows, k, opt, params)));
    frugal::test::synchronize();
    nm_report want_report;
    const unsigned long long want_flips = frugal::reference::srste_step<P>(w.data(), g.data(), s0.data(), adam ? s1.data() : nullptr, ld,
                                                                           rows, k, values.data(), ldv, indices.data(), ldi, opt, params,
                                                                           want_report);
    INFO("step " << step);
    REQUIRE(d_report.download()[0].ok());
    REQUIRE(want_report.ok());
    CHECK(d_flips.download()[0] == want_flips);
    const auto got_w = d_w.download();
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < k; ++c) {
        INFO("(" << r << ", " << c << ")");
        REQUIRE(std::memcmp(&got_w[std::size_t(r * ld + c)], &w[std::size_t(r * ld + c)], 4) == 0);
      }
    const auto got_s0 = d_s0.download();
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < k; ++c) REQUIRE(std::memcmp(&got_s0[std::size_t(r * ld + c)], &s0[std::size_t(r * ld + c)], 4) == 0);
    if (adam) {
      const auto got_s1 = d_s1.download();
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < k; ++c) REQUIRE(std::memcmp(&got_s1[std::size_t(r * ld + c)], &s1[std::size_t(r * ld + c)], 4) == 0);
    }
    REQUIRE(same_bits(d_values.download(), values));
    REQUIRE(same_bits(d_indices.download(), indices));
    if (step > 1) MESSAGE("step " << step << ": " << want_flips << " of " << rows * k << " mask positions flipped");
  }
}

}  // namespace

TEST_CASE("srste: SGD with momentum and weight decay, bit for bit against the reference over 4 steps") {
  frugal::sparse::sgd_momentum sgd;
  sgd.lr = 0.05f;
  sgd.momentum = 0.9f;
  sgd.weight_decay = 1e-3f;
  check_steps<nm<2, 4>, frugal::sparse::sgd_momentum, __nv_bfloat16, __nv_bfloat16>(33, 130, sgd, 4, 1);
  check_steps<nm<2, 8>, frugal::sparse::sgd_momentum, float, __half>(17, 77, sgd, 4, 2);
  check_steps<nm<1, 4>, frugal::sparse::sgd_momentum, __half, float>(5, 256, sgd, 3, 3);
}

TEST_CASE("srste: AdamW, bit for bit against the reference over 4 steps") {
  frugal::sparse::adamw adam;
  adam.lr = 0.01f;
  adam.weight_decay = 0.05f;
  check_steps<nm<2, 4>, frugal::sparse::adamw, __nv_bfloat16, __nv_bfloat16>(40, 96, adam, 4, 4);
  check_steps<nm<4, 16>, frugal::sparse::adamw, float, __nv_bfloat16>(9, 203, adam, 4, 5);
}

TEST_CASE("srste: a NaN gradient makes a NaN weight, reported with its position; arguments checked") {
  const std::int64_t rows = 2, k = 8;
  std::vector<float> w = {1, 2, 3, 4, 5, 6, 7, 8, -1, -2, -3, -4, -5, -6, -7, -8};
  std::vector<float> g(16, 0.0f);
  g[13] = NAN;
  device_buffer<float> d_w(w), d_g(g), d_s0(16);
  d_s0.fill_bytes(0);
  device_buffer<__nv_bfloat16> d_values(8);
  device_buffer<std::uint32_t> d_indices(2);
  device_buffer<unsigned long long> d_flips(1);
  device_buffer<nm_report> d_report(1);
  frugal::sparse::srste_buffers<float, __nv_bfloat16> b{d_w.data(), d_g.data(), d_s0.data(), nullptr, 8, d_values.data(), 4,
                                                        d_indices.data(), 1, d_flips.data(), d_report.data()};
  FRUGAL_REQUIRE_OK((frugal::sparse::srste_step<nm<2, 4>>(b, rows, k, frugal::sparse::sgd_momentum{})));
  frugal::test::synchronize();
  auto report = d_report.download()[0];
  CHECK(report.nan_count == 1);
  CHECK(report.first_nan == 13u);
  // The NaN weight is still there next step: counted once (not before and after the update).
  FRUGAL_REQUIRE_OK((frugal::sparse::srste_step<nm<2, 4>>(b, rows, k, frugal::sparse::sgd_momentum{})));
  frugal::test::synchronize();
  report = d_report.download()[0];
  CHECK(report.nan_count == 1);
  CHECK(report.first_nan == 13u);
  auto message = [](const frugal::status& s) { return std::string(s.message()); };
  frugal::sparse::adamw adam;
  adam.step = 0;
  CHECK(message(frugal::sparse::srste_step<nm<2, 4>>(b, rows, k, adam)) == "frugal::sparse::srste_step: a buffer is null (AdamW needs state1)");
  b.state1 = d_s0.data();
  CHECK(message(frugal::sparse::srste_step<nm<2, 4>>(b, rows, k, adam)) == "frugal::sparse::srste_step: adamw::step is 1-based");
  b.ld = 7;
  CHECK(message(frugal::sparse::srste_step<nm<2, 4>>(b, rows, k, frugal::sparse::sgd_momentum{})) == "frugal::sparse::srste_step: ld must be >= K");
  b.ld = 8;
  frugal::sparse::sgd_momentum bad;
  bad.lr = NAN;
  CHECK(!frugal::sparse::srste_step<nm<2, 4>>(b, rows, k, bad).ok());
}

TEST_CASE("srste: transposable 2:4, 1:4, 2:8, 4:16; W and W^T compressed, bit for bit against the reference over 3 steps") {
  auto run = [](auto n_tag, auto m_tag, auto optimizer, std::int64_t rows, std::int64_t k, unsigned long long seed) {
    constexpr int N = decltype(n_tag)::value, M = decltype(m_tag)::value;
    using P = nm<N, M>;
    using Optimizer = decltype(optimizer);
    constexpr bool adam = std::is_same_v<Optimizer, frugal::sparse::adamw>;
    FRUGAL_SEEDED_RNG(rng, seed);
    INFO(N << ":" << M << " rows " << rows << " k " << k << (adam ? " adamw" : " sgd"));
    const std::int64_t ld = k + 1, ldv = P::values_per_row(k), ldi = P::index_words_per_row(k);
    const std::int64_t ldvt = P::values_per_row(rows), ldit = P::index_words_per_row(rows);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> w(std::size_t(rows * ld)), s0(std::size_t(rows * ld), 0.0f), s1(std::size_t(rows * ld), 0.0f);
    for (auto& x : w) x = 0.1f * normal(rng);
    device_buffer<float> d_w(w), d_s0(s0), d_s1(s1);
    device_buffer<__nv_bfloat16> d_g(std::size_t(rows * ld)), d_values(std::size_t(rows * ldv)), d_values_t(std::size_t(k * ldvt));
    device_buffer<std::uint32_t> d_indices(std::size_t(rows * ldi)), d_indices_t(std::size_t(k * ldit));
    device_buffer<unsigned long long> d_flips(1);
    device_buffer<nm_report> d_report(1);
    std::vector<__nv_bfloat16> values(std::size_t(rows * ldv)), values_t(std::size_t(k * ldvt));
    std::vector<std::uint32_t> indices(std::size_t(rows * ldi)), indices_t(std::size_t(k * ldit));
    Optimizer opt = optimizer;
    for (int step = 1; step <= 3; ++step) {
      std::vector<__nv_bfloat16> g(std::size_t(rows * ld));
      for (auto& x : g) x = frugal::from_float<__nv_bfloat16>(0.5f * normal(rng));
      d_g.upload(g);
      if constexpr (adam) opt.step = step;
      frugal::sparse::srste_buffers<__nv_bfloat16, __nv_bfloat16> b;
      b.weight = d_w.data();
      b.grad = d_g.data();
      b.state0 = d_s0.data();
      b.state1 = adam ? d_s1.data() : nullptr;
      b.ld = ld;
      b.values = d_values.data();
      b.ld_values = ldv;
      b.indices = d_indices.data();
      b.ld_indices = ldi;
      b.flips = d_flips.data();
      b.report = d_report.data();
      b.values_t = d_values_t.data();
      b.ld_values_t = ldvt;
      b.indices_t = d_indices_t.data();
      b.ld_indices_t = ldit;
      const frugal::sparse::srste_params params{0.02f};
      FRUGAL_REQUIRE_OK((frugal::sparse::srste_step_transposable<P>(b, rows, k, opt, params)));
      frugal::test::synchronize();
      nm_report want_report;
      unsigned long long want_flips;
      if constexpr (M == 4)
        want_flips = frugal::reference::srste_step_transposable4<N>(w.data(), g.data(), s0.data(), adam ? s1.data() : nullptr, ld, rows, k,
                                                                    values.data(), ldv, indices.data(), ldi, values_t.data(), ldvt,
                                                                    indices_t.data(), ldit, opt, params, want_report);
      else
        want_flips = frugal::reference::srste_step_transposable_greedy<N, M>(
            w.data(), g.data(), s0.data(), adam ? s1.data() : nullptr, ld, rows, k, values.data(), ldv, indices.data(), ldi, values_t.data(),
            ldvt, indices_t.data(), ldit, opt, params, want_report);
      INFO("step " << step);
      REQUIRE(d_report.download()[0].ok());
      CHECK(d_flips.download()[0] == want_flips);
      const auto got_w = d_w.download();
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < k; ++c) REQUIRE(std::memcmp(&got_w[std::size_t(r * ld + c)], &w[std::size_t(r * ld + c)], 4) == 0);
      REQUIRE(same_bits(d_values.download(), values));
      REQUIRE(same_bits(d_indices.download(), indices));
      REQUIRE(same_bits(d_values_t.download(), values_t));
      REQUIRE(same_bits(d_indices_t.download(), indices_t));
      // Decompressing W^T gives the transpose of decompressed W.
      std::vector<float> dense(std::size_t(rows * k)), dense_t(std::size_t(k * rows));
      nm_report ignored;
      frugal::reference::nm_decompress<P>(values.data(), ldv, indices.data(), ldi, rows, k, dense.data(), k, ignored);
      frugal::reference::nm_decompress<P>(values_t.data(), ldvt, indices_t.data(), ldit, k, rows, dense_t.data(), rows, ignored);
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < k; ++c) REQUIRE(dense[std::size_t(r * k + c)] == dense_t[std::size_t(c * rows + r)]);
      if (step > 1) MESSAGE("transposable " << N << ":" << M << " step " << step << ": " << want_flips << " of " << rows * k << " positions flipped");
    }
  };
  frugal::sparse::sgd_momentum sgd;
  sgd.lr = 0.05f;
  frugal::sparse::adamw adam;
  adam.lr = 0.01f;
  using four = std::integral_constant<int, 4>;
  run(std::integral_constant<int, 2>{}, four{}, sgd, 36, 68, 21);
  run(std::integral_constant<int, 2>{}, four{}, adam, 33, 70, 22);  // edge blocks
  run(std::integral_constant<int, 1>{}, four{}, sgd, 16, 40, 23);
  run(std::integral_constant<int, 2>{}, std::integral_constant<int, 8>{}, sgd, 40, 61, 24);
  run(std::integral_constant<int, 4>{}, std::integral_constant<int, 16>{}, adam, 35, 48, 25);
}

// SPDX-License-Identifier: Apache-2.0
// frugal::sparse::nm_linear (Y = epilogue(X W^T), W 2:4-sparse, on the sparse tensor cores)
// against the host reference of the masked dense product: shapes from 1 to primes and tile
// edges, K not a multiple of the tile or of 4, tokens 1..16 (the decode tile) and large, bf16 and
// f16, every epilogue; exact on small integers; determinism; argument errors.
#include <frugal/reference/gemm.hpp>
#include <frugal/reference/sparse_nm.hpp>
#include <frugal/sparse/nm_backward.cuh>
#include <frugal/sparse/nm_linear.cuh>

#include <algorithm>
#include <numeric>

#include <cmath>
#include <cstring>
#include <string>

#include "support/test_support.hpp"

using frugal::matrix_order;
using frugal::matrix_ref;
using frugal::sparse::nm;
using frugal::test::device_buffer;

namespace {

template <class T>
struct sparse_weight {
  std::vector<T> values;
  std::vector<std::uint32_t> indices;
  std::vector<float> dense;  // the masked dense W the reference multiplies
  std::int64_t ld_values, ld_indices;
};

// An N:M-pruned W [out, K] of small integers (or normal samples) and its canonical form.
template <class T, class P = nm<2, 4>>
sparse_weight<T> make_weight(std::mt19937_64& rng, std::int64_t out, std::int64_t k, bool integers) {
  std::uniform_int_distribution<int> small(-3, 3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(std::size_t(out * k));
  for (auto& v : w) v = frugal::to_float(frugal::from_float<T>(integers ? float(small(rng)) : normal(rng)));
  sparse_weight<T> s;
  s.ld_values = P::values_per_row(k) + 8;  // a padded leading dimension, still 16-byte rows
  s.ld_indices = P::index_words_per_row(k) + 1;
  s.values.resize(std::size_t(out * s.ld_values));
  s.indices.resize(std::size_t(out * s.ld_indices));
  frugal::sparse::nm_report report;
  frugal::reference::nm_prune<P>(w.data(), k, out, k, s.values.data(), s.ld_values, s.indices.data(), s.ld_indices,
                                 static_cast<std::uint8_t*>(nullptr), 0, report);
  s.dense.assign(std::size_t(out * k), 0.0f);
  frugal::reference::nm_decompress<P>(s.values.data(), s.ld_values, s.indices.data(), s.ld_indices, out, k, s.dense.data(), k, report);
  REQUIRE(report.ok());
  return s;
}

template <class T, class Out, class Epilogue, class P = nm<2, 4>>
void check_linear(std::int64_t tokens, std::int64_t out, std::int64_t k, const Epilogue& device_epilogue, const Epilogue& host_epilogue,
                  bool integers, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  INFO(P::n << ":" << P::m << " " << std::string(frugal::type_name<T>()) << " -> " << std::string(frugal::type_name<Out>()) << " tokens "
            << tokens << " out " << out << " k " << k);
  const auto w = make_weight<T, P>(rng, out, k, integers);
  const std::int64_t ld_x = (k + 7) / 8 * 8;
  std::uniform_int_distribution<int> small(-3, 3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<T> x(std::size_t(tokens * ld_x));
  for (auto& v : x) v = frugal::from_float<T>(integers ? float(small(rng)) : normal(rng));
  device_buffer<T> d_x(x), d_values(w.values);
  device_buffer<std::uint32_t> d_indices(w.indices);
  device_buffer<Out> d_y(std::size_t(tokens * out));
  const frugal::sparse::nm_weight<T> weight{d_values.data(), w.ld_values, d_indices.data(), w.ld_indices, 0, 0};
  std::size_t bytes = 0;
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_linear<P>(nullptr, bytes, frugal::row_major<const T>(d_x.data(), ld_x), weight,
                                                  frugal::row_major(d_y.data(), out), tokens, out, k, device_epilogue)));
  device_buffer<unsigned char> workspace(bytes);
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_linear<P>(workspace.data(), bytes, frugal::row_major<const T>(d_x.data(), ld_x), weight,
                                                  frugal::row_major(d_y.data(), out), tokens, out, k, device_epilogue)));
  frugal::test::synchronize();
  std::vector<float> xf(std::size_t(tokens * k));
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t i = 0; i < k; ++i) xf[std::size_t(t * k + i)] = frugal::to_float(x[std::size_t(t * ld_x + i)]);
  std::vector<Out> want(std::size_t(tokens * out));
  // The masked dense product: D [tokens, out] = X W^T, W^T as the col-major B.
  frugal::reference::gemm(matrix_ref<const float>{xf.data(), k, matrix_order::row_major},
                          matrix_ref<const float>{w.dense.data(), k, matrix_order::col_major}, frugal::row_major(want.data(), out), tokens,
                          out, k, host_epilogue);
  const auto got = d_y.download();
  const double rtol = std::is_same_v<Out, float> ? 1e-5 : std::is_same_v<Out, __half> ? 2e-3 : 1.6e-2;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const float g = frugal::to_float(got[i]), wv = frugal::to_float(want[i]);
    INFO("element " << i << " got " << g << " want " << wv);
    if (integers) REQUIRE(g == wv);
    else REQUIRE(std::fabs(double(g) - wv) <= 1e-4 + rtol * std::fabs(double(wv)));
  }
}

}  // namespace

TEST_CASE("nm_linear: shapes (decode 1..16 tokens with and without split-K, prefill, primes, tile edges, K tails), bf16 and f16, exact on small integers") {
  const frugal::linear_epilogue<> plain;
  unsigned long long seed = 100;
  struct shape {
    std::int64_t tokens, out, k;
  };
  for (const shape s : {shape{1, 16, 32}, {1, 1, 8}, {3, 48, 70}, {7, 61, 13}, {16, 64, 128}, {16, 200, 96}, {17, 65, 100}, {33, 130, 256},
                        {100, 130, 250}, {128, 128, 64}, {256, 256, 192}, {5, 300, 1},
                        // few feature tiles and a long K: split-K decode (the emulated device has 4 SMs)
                        {4, 64, 1024}, {16, 100, 2048}, {1, 1, 512}, {9, 70, 1000}}) {
    check_linear<__nv_bfloat16, float>(s.tokens, s.out, s.k, plain, plain, true, ++seed);
    check_linear<__half, float>(s.tokens, s.out, s.k, plain, plain, true, ++seed);
  }
}

TEST_CASE("nm_linear: every decode width, 1 to 16 tokens, 2:4 and compact 2:8, exact on small integers") {
  const frugal::linear_epilogue<> plain;
  for (std::int64_t tokens = 1; tokens <= 16; ++tokens) {
    check_linear<__nv_bfloat16, float>(tokens, 72, 200, plain, plain, true, 130 + std::uint64_t(tokens));
    check_linear<__half, float, frugal::linear_epilogue<>, nm<2, 8>>(tokens, 72, 200, plain, plain, true, 150 + std::uint64_t(tokens));
  }
}

TEST_CASE("nm_linear: compact 1:4, 2:8, 1:8, 2:16 weights expanded to 2:4 on the way, exact on small integers") {
  const frugal::linear_epilogue<> plain;
  unsigned long long seed = 150;
  struct shape {
    std::int64_t tokens, out, k;
  };
  for (const shape s : {shape{1, 64, 64}, {5, 70, 100}, {16, 64, 256}, {40, 130, 136}, {256, 256, 128}}) {
    check_linear<__nv_bfloat16, float, frugal::linear_epilogue<>, nm<2, 8>>(s.tokens, s.out, s.k, plain, plain, true, ++seed);
    check_linear<__half, float, frugal::linear_epilogue<>, nm<1, 4>>(s.tokens, s.out, s.k, plain, plain, true, ++seed);
    check_linear<__nv_bfloat16, float, frugal::linear_epilogue<>, nm<1, 8>>(s.tokens, s.out, s.k, plain, plain, true, ++seed);
    check_linear<__nv_bfloat16, float, frugal::linear_epilogue<>, nm<2, 16>>(s.tokens, s.out, s.k, plain, plain, true, ++seed);
  }
}

TEST_CASE("nm_linear: denser patterns (3:4, 4:8, 8:16) load sparse and compute dense, exact on small integers") {
  const frugal::linear_epilogue<> plain;
  unsigned long long seed = 170;
  struct shape {
    std::int64_t tokens, out, k;
  };
  for (const shape s : {shape{1, 64, 64}, {5, 70, 100}, {16, 64, 256}, {40, 130, 136}, {256, 256, 128}}) {
    check_linear<__nv_bfloat16, float, frugal::linear_epilogue<>, nm<3, 4>>(s.tokens, s.out, s.k, plain, plain, true, ++seed);
    check_linear<__half, float, frugal::linear_epilogue<>, nm<4, 8>>(s.tokens, s.out, s.k, plain, plain, true, ++seed);
    check_linear<__nv_bfloat16, float, frugal::linear_epilogue<>, nm<8, 16>>(s.tokens, s.out, s.k, plain, plain, true, ++seed);
  }
}

TEST_CASE("nm_linear: epilogues (bias per feature, activations, alpha, residual as beta C), every output type, random data") {
  FRUGAL_SEEDED_RNG(rng, 200);
  const std::int64_t tokens = 24, out = 72, k = 136;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> bias(static_cast<std::size_t>(out)), residual(static_cast<std::size_t>(tokens * out));
  for (auto& v : bias) v = normal(rng);
  for (auto& v : residual) v = normal(rng);
  device_buffer<float> d_bias(bias), d_residual(residual);
  for (auto act : {frugal::activation::identity, frugal::activation::relu, frugal::activation::gelu, frugal::activation::silu}) {
    frugal::linear_epilogue<float, float> device_e;
    device_e.alpha = 0.5f;
    device_e.beta = 1.0f;
    device_e.c = d_residual.data();
    device_e.ldc = out;
    device_e.bias = d_bias.data();
    device_e.bias_on = frugal::bias_kind::per_column;
    device_e.act = act;
    auto host_e = device_e;
    host_e.c = residual.data();
    host_e.bias = bias.data();
    check_linear<__nv_bfloat16, float>(tokens, out, k, device_e, host_e, false, 300 + int(act));
    check_linear<__nv_bfloat16, __nv_bfloat16>(tokens, out, k, device_e, host_e, false, 310 + int(act));
    check_linear<__half, __half>(9, out, k, device_e, host_e, false, 320 + int(act));
  }
}

TEST_CASE("nm_linear: bitwise deterministic, and arguments checked") {
  FRUGAL_SEEDED_RNG(rng, 400);
  const auto w = make_weight<__nv_bfloat16>(rng, 64, 128, false);
  std::vector<__nv_bfloat16> x(8 * 128, frugal::from_float<__nv_bfloat16>(0.5f));
  device_buffer<__nv_bfloat16> d_x(x), d_values(w.values);
  device_buffer<std::uint32_t> d_indices(w.indices);
  device_buffer<float> y1(8 * 64), y2(8 * 64);
  const frugal::sparse::nm_weight<__nv_bfloat16> weight{d_values.data(), w.ld_values, d_indices.data(), w.ld_indices, 0, 0};
  std::size_t bytes = 0;
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_linear<nm<2, 4>>(nullptr, bytes, frugal::row_major<const __nv_bfloat16>(d_x.data(), 128), weight,
                                                         frugal::row_major(y1.data(), 64), 8, 64, 128)));
  device_buffer<unsigned char> workspace(bytes);
  for (auto* y : {&y1, &y2})
    FRUGAL_REQUIRE_OK((frugal::sparse::nm_linear<nm<2, 4>>(workspace.data(), bytes, frugal::row_major<const __nv_bfloat16>(d_x.data(), 128),
                                                           weight, frugal::row_major(y->data(), 64), 8, 64, 128)));
  frugal::test::synchronize();
  const auto a = y1.download(), b = y2.download();
  CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
  {  // with split-K (random data: the split order is fixed, so are the bits)
    const auto wide = make_weight<__nv_bfloat16>(rng, 64, 2048, false);
    std::vector<__nv_bfloat16> xw(4 * 2048);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& v : xw) v = frugal::from_float<__nv_bfloat16>(normal(rng));
    device_buffer<__nv_bfloat16> d_xw(xw), d_vw(wide.values);
    device_buffer<std::uint32_t> d_iw(wide.indices);
    device_buffer<float> s1(4 * 64), s2(4 * 64);
    const frugal::sparse::nm_weight<__nv_bfloat16> ww{d_vw.data(), wide.ld_values, d_iw.data(), wide.ld_indices, 0, 0};
    std::size_t split_bytes = 0;
    FRUGAL_REQUIRE_OK((frugal::sparse::nm_linear<nm<2, 4>>(nullptr, split_bytes, frugal::row_major<const __nv_bfloat16>(d_xw.data(), 2048), ww,
                                                           frugal::row_major(s1.data(), 64), 4, 64, 2048)));
    CHECK(split_bytes > 16u);  // the emulated device's 4 SMs against one feature tile: a split
    device_buffer<unsigned char> split_workspace(split_bytes);
    for (auto* y : {&s1, &s2})
      FRUGAL_REQUIRE_OK((frugal::sparse::nm_linear<nm<2, 4>>(split_workspace.data(), split_bytes,
                                                             frugal::row_major<const __nv_bfloat16>(d_xw.data(), 2048), ww,
                                                             frugal::row_major(y->data(), 64), 4, 64, 2048)));
    frugal::test::synchronize();
    const auto c = s1.download(), d = s2.download();
    CHECK(std::memcmp(c.data(), d.data(), c.size() * 4) == 0);
  }
  auto message = [](const frugal::status& s) { return std::string(s.message()); };
  CHECK(message(frugal::sparse::nm_linear<nm<2, 4>>(workspace.data(), bytes, frugal::row_major<const __nv_bfloat16>(d_x.data(), 100), weight,
                                                    frugal::row_major(y1.data(), 64), 8, 64, 128)) ==
        "frugal::sparse::nm_linear: ld_x must be >= K");
  CHECK(message(frugal::sparse::nm_linear<nm<2, 4>>(workspace.data(), bytes, frugal::row_major<const __nv_bfloat16>(d_x.data(), 128),
                                                    frugal::sparse::nm_weight<__nv_bfloat16>{d_values.data(), 10, d_indices.data(), w.ld_indices},
                                                    frugal::row_major(y1.data(), 64), 8, 64, 128)) ==
        "frugal::sparse::nm_linear: ld_values must be >= nm<N, M>::values_per_row(K)");
  CHECK(!frugal::sparse::nm_linear<nm<2, 4>>(workspace.data(), bytes, frugal::row_major<const __nv_bfloat16>(d_x.data(), 128), weight,
                                             frugal::row_major(y1.data(), 63), 8, 64, 128)
              .ok());
}

// The three layouts of a dispatch plan's rows (docs/moe_dispatch.md).
enum class plan_layout { padded, contiguous, masked };

TEST_CASE("nm_grouped_linear: experts of a plan (empty, one token, one hot expert), 2:4 and 2:8, every plan layout, per-expert bias, exact on integers") {
  auto run = [](auto pattern_tag, std::vector<int> counts, std::int64_t out, std::int64_t k, unsigned long long seed,
                plan_layout layout = plan_layout::padded) {
    using P = decltype(pattern_tag);
    using T = __nv_bfloat16;
    FRUGAL_SEEDED_RNG(rng, seed);
    const int experts = int(counts.size());
    const int capacity = counts.empty() ? 1 : std::max(1, *std::max_element(counts.begin(), counts.end()));
    std::vector<std::int32_t> offsets(1, 0), counts32;
    for (int c : counts) {
      counts32.push_back(c);
      // padded: segments rounded up to 16 rows, with counts (the vLLM/SGLang layout); contiguous:
      // layout b, offsets only; masked: expert g owns rows [g capacity, g capacity + counts[g]).
      const int span = layout == plan_layout::padded ? (c + 15) / 16 * 16 : layout == plan_layout::contiguous ? c : capacity;
      offsets.push_back(offsets.back() + span);
    }
    const std::int64_t rows = offsets.back();
    INFO(P::n << ":" << P::m << " experts " << experts << " rows " << rows << " layout " << int(layout));
    std::vector<sparse_weight<T>> weights;
    for (int e = 0; e < experts; ++e) weights.push_back(make_weight<T, P>(rng, out, k, true));
    const std::int64_t ldv = weights[0].ld_values, ldi = weights[0].ld_indices;
    std::vector<T> values;
    std::vector<std::uint32_t> indices;
    for (const auto& w : weights) {
      values.insert(values.end(), w.values.begin(), w.values.end());
      indices.insert(indices.end(), w.indices.begin(), w.indices.end());
    }
    std::uniform_int_distribution<int> small(-3, 3);
    std::vector<T> x(std::size_t(rows * k));
    for (auto& v : x) v = frugal::from_float<T>(float(small(rng)));
    std::vector<float> bias(std::size_t(experts * out));
    for (auto& v : bias) v = float(small(rng));
    device_buffer<T> d_x(x), d_values(values);
    device_buffer<std::uint32_t> d_indices(indices);
    device_buffer<float> d_bias(bias), d_y(std::size_t(rows * out));
    device_buffer<std::int32_t> d_offsets(offsets), d_counts(counts32);
    d_y.fill_bytes(0);
    std::vector<float> y_untouched(std::size_t(rows * out), 0.0f);
    frugal::gemm_groups<std::int32_t> groups;
    groups.offsets = layout == plan_layout::masked ? nullptr : d_offsets.data();
    groups.counts = layout == plan_layout::contiguous ? nullptr : d_counts.data();
    groups.capacity = layout == plan_layout::masked ? capacity : 0;
    groups.groups = experts;
    groups.rows = rows;
    frugal::linear_epilogue<float, float> e;
    e.bias = d_bias.data();
    e.bias_on = frugal::bias_kind::per_column;
    e.bias_group_stride = out;
    FRUGAL_REQUIRE_OK((frugal::sparse::nm_grouped_linear<P>(frugal::row_major<const T>(d_x.data(), k),
                                                            frugal::sparse::nm_weight<T>{d_values.data(), ldv, d_indices.data(), ldi, 0, 0},
                                                            groups, frugal::row_major(d_y.data(), out), out, k, e)));
    frugal::test::synchronize();
    const auto got = d_y.download();
    for (int g = 0; g < experts; ++g)
      for (std::int64_t r = offsets[std::size_t(g)]; r < offsets[std::size_t(g) + 1]; ++r)
        for (std::int64_t f = 0; f < out; ++f) {
          float want = 0.0f;
          if (r < offsets[std::size_t(g)] + counts[std::size_t(g)]) {
            for (std::int64_t i = 0; i < k; ++i) want += frugal::to_float(x[std::size_t(r * k + i)]) * weights[std::size_t(g)].dense[std::size_t(f * k + i)];
            want += bias[std::size_t(g * out + f)];
          }
          INFO("expert " << g << " row " << r << " feature " << f);
          REQUIRE(got[std::size_t(r * out + f)] == want);  // padding rows stay 0
        }
  };
  run(nm<2, 4>{}, {0, 3, 17, 40, 1, 0, 70}, 72, 96, 500);
  run(nm<2, 8>{}, {0, 3, 17, 40, 1, 0, 70}, 72, 96, 501);
  run(nm<2, 4>{}, {2, 1, 1, 3}, 64, 128, 502);            // decoding: a few tokens per expert
  run(nm<2, 4>{}, {0, 0, 300, 0}, 40, 64, 503);           // one hot expert
  run(nm<2, 4>{}, {0, 3, 17, 40, 1, 0, 70}, 72, 96, 504, plan_layout::contiguous);
  run(nm<2, 8>{}, {2, 0, 19, 1}, 72, 96, 505, plan_layout::contiguous);
  run(nm<2, 4>{}, {0, 3, 17, 40, 1, 0, 70}, 72, 96, 506, plan_layout::masked);
  run(nm<2, 8>{}, {5, 0, 33}, 64, 200, 507, plan_layout::masked);
  // Denser patterns on the dense tensor cores: the 64 x 64 tile (48 KiB of dynamic shared memory
  // beside the tile search's static memory) and the decode tile.
  run(nm<4, 8>{}, {0, 3, 17, 40, 1, 0, 70}, 72, 96, 508);
  run(nm<3, 4>{}, {2, 1, 1, 3}, 64, 128, 509);
}

TEST_CASE("sanitized_metadata: every ascending 2:4 nibble kept, every other one read as positions 0, 1") {
  for (unsigned n = 0; n < 16; ++n) {
    const bool ascending = (n & 3u) < (n >> 2);
    for (int at = 0; at < 8; ++at) {
      const std::uint32_t word = (0x44444444u & ~(0xfu << (4 * at))) | (n << (4 * at));  // n among valid nibbles
      const std::uint32_t want = ascending ? word : 0x44444444u;
      INFO("nibble " << n << " at " << at);
      CHECK(frugal::sparse::sanitized_metadata(word) == want);
    }
  }
  CHECK(frugal::sparse::sanitized_metadata(0xEDC98E4Du) == 0xEDC98E4Du);  // all six valid nibbles
  CHECK(frugal::sparse::sanitized_metadata(0x00000000u) == 0x44444444u);
}

TEST_CASE("nm_linear: a corrupted 2:4 index (a descending or equal nibble) is read as positions 0, 1, never undefined") {
  using T = __nv_bfloat16;
  FRUGAL_SEEDED_RNG(rng, 450);
  const std::int64_t tokens = 5, out = 16, k = 64;
  auto w = make_weight<T>(rng, out, k, true);
  // Corrupt window 3 of row 2 (nibble 0x1: idx0 1, idx1 0) and window 9 of row 7 (0xA: 2, 2).
  auto corrupt = [&](std::int64_t row, int window, std::uint32_t nibble) {
    std::uint32_t& word = w.indices[std::size_t(row * w.ld_indices + window / 8)];
    word = (word & ~(0xfu << (4 * (window % 8)))) | (nibble << (4 * (window % 8)));
    for (int i = 0; i < 4; ++i) w.dense[std::size_t(row * k + window * 4 + i)] = 0.0f;
    for (int j = 0; j < 2; ++j)  // the window's two values land at positions 0 and 1
      w.dense[std::size_t(row * k + window * 4 + j)] = frugal::to_float(w.values[std::size_t(row * w.ld_values + window * 2 + j)]);
  };
  corrupt(2, 3, 0x1u);
  corrupt(7, 9, 0xAu);
  std::uniform_int_distribution<int> small(-3, 3);
  std::vector<T> x(std::size_t(tokens * k));
  for (auto& v : x) v = frugal::from_float<T>(float(small(rng)));
  device_buffer<T> d_x(x), d_values(w.values);
  device_buffer<std::uint32_t> d_indices(w.indices);
  device_buffer<float> d_y(std::size_t(tokens * out));
  std::size_t bytes = 0;
  const frugal::sparse::nm_weight<T> weight{d_values.data(), w.ld_values, d_indices.data(), w.ld_indices, 0, 0};
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_linear<nm<2, 4>>(nullptr, bytes, frugal::row_major<const T>(d_x.data(), k), weight,
                                                         frugal::row_major(d_y.data(), out), tokens, out, k)));
  device_buffer<unsigned char> workspace(bytes);
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_linear<nm<2, 4>>(workspace.data(), bytes, frugal::row_major<const T>(d_x.data(), k), weight,
                                                         frugal::row_major(d_y.data(), out), tokens, out, k)));
  frugal::test::synchronize();
  const auto got = d_y.download();
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t f = 0; f < out; ++f) {
      float want = 0.0f;
      for (std::int64_t i = 0; i < k; ++i) want += frugal::to_float(x[std::size_t(t * k + i)]) * w.dense[std::size_t(f * k + i)];
      INFO("token " << t << " feature " << f);
      REQUIRE(got[std::size_t(t * out + f)] == want);
    }
}

TEST_CASE("backward: dX = dY W through W^T compressed under a transposable 2:4 mask; dW = dY^T X, masked and dense") {
  using T = __nv_bfloat16;
  FRUGAL_SEEDED_RNG(rng, 600);
  const std::int64_t tokens = 24, out = 48, k = 80;
  std::uniform_int_distribution<int> small(-3, 3);
  std::vector<float> w(std::size_t(out * k));
  for (auto& v : w) v = float(small(rng));
  // A transposable 2:4 mask, W masked, and both W and W^T compressed.
  std::vector<std::uint8_t> mask(std::size_t(out * k)), mask_t(std::size_t(k * out));
  frugal::sparse::nm_report report;
  frugal::reference::nm_transposable_mask4<2>(w.data(), k, out, k, mask.data(), k, report);
  std::vector<float> w_t(std::size_t(k * out));
  for (std::int64_t o = 0; o < out; ++o)
    for (std::int64_t i = 0; i < k; ++i) {
      w_t[std::size_t(i * out + o)] = w[std::size_t(o * k + i)];
      mask_t[std::size_t(i * out + o)] = mask[std::size_t(o * k + i)];
    }
  using P = nm<2, 4>;
  const std::int64_t ldv_t = P::values_per_row(out), ldi_t = P::index_words_per_row(out);
  std::vector<T> values_t(std::size_t(k * ldv_t));
  std::vector<std::uint32_t> indices_t(std::size_t(k * ldi_t));
  frugal::reference::nm_compress<P>(w_t.data(), out, k, out, mask_t.data(), out, values_t.data(), ldv_t, indices_t.data(), ldi_t, report);
  REQUIRE(report.ok());
  std::vector<T> dy(std::size_t(tokens * out)), x(std::size_t(tokens * k));
  for (auto& v : dy) v = frugal::from_float<T>(float(small(rng)));
  for (auto& v : x) v = frugal::from_float<T>(float(small(rng)));
  device_buffer<T> d_dy(dy), d_x(x), d_values_t(values_t);
  device_buffer<std::uint32_t> d_indices_t(indices_t);
  device_buffer<float> d_dx(std::size_t(tokens * k)), d_dw(std::size_t(out * k));
  device_buffer<std::uint8_t> d_mask(mask);
  // dX [tokens, K] = dY [tokens, out] (W^T)^T: nm_linear with out = K and the reduction over `out`.
  std::size_t bytes = 0;
  const frugal::sparse::nm_weight<T> weight_t{d_values_t.data(), ldv_t, d_indices_t.data(), ldi_t, 0, 0};
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_linear<P>(nullptr, bytes, frugal::row_major<const T>(d_dy.data(), out), weight_t,
                                                  frugal::row_major(d_dx.data(), k), tokens, k, out)));
  device_buffer<unsigned char> workspace(bytes);
  FRUGAL_REQUIRE_OK((frugal::sparse::nm_linear<P>(workspace.data(), bytes, frugal::row_major<const T>(d_dy.data(), out), weight_t,
                                                  frugal::row_major(d_dx.data(), k), tokens, k, out)));
  frugal::test::synchronize();
  const auto dx = d_dx.download();
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t i = 0; i < k; ++i) {
      float want = 0.0f;
      for (std::int64_t o = 0; o < out; ++o)
        want += frugal::to_float(dy[std::size_t(t * out + o)]) * (mask[std::size_t(o * k + i)] ? w[std::size_t(o * k + i)] : 0.0f);
      REQUIRE(dx[std::size_t(t * k + i)] == want);
    }
  // dW = dY^T X, masked to the pattern and dense.
  for (bool masked : {true, false}) {
    std::size_t grad_bytes = 0;
    FRUGAL_REQUIRE_OK((frugal::sparse::nm_weight_gradient(nullptr, grad_bytes, frugal::row_major<const T>(d_dy.data(), out),
                                                          frugal::row_major<const T>(d_x.data(), k), masked ? d_mask.data() : nullptr, k,
                                                          frugal::row_major(d_dw.data(), k), tokens, out, k)));
    device_buffer<unsigned char> grad_workspace(grad_bytes);
    FRUGAL_REQUIRE_OK((frugal::sparse::nm_weight_gradient(grad_workspace.data(), grad_bytes, frugal::row_major<const T>(d_dy.data(), out),
                                                          frugal::row_major<const T>(d_x.data(), k), masked ? d_mask.data() : nullptr, k,
                                                          frugal::row_major(d_dw.data(), k), tokens, out, k)));
    frugal::test::synchronize();
    const auto dw = d_dw.download();
    for (std::int64_t o = 0; o < out; ++o)
      for (std::int64_t i = 0; i < k; ++i) {
        float want = 0.0f;
        for (std::int64_t t = 0; t < tokens; ++t)
          want += frugal::to_float(dy[std::size_t(t * out + o)]) * frugal::to_float(x[std::size_t(t * k + i)]);
        if (masked && !mask[std::size_t(o * k + i)]) want = 0.0f;
        INFO("masked " << masked << " (" << o << ", " << i << ")");
        REQUIRE(dw[std::size_t(o * k + i)] == want);
      }
  }
}

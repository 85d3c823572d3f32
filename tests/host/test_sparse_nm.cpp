// SPDX-License-Identifier: Apache-2.0
// N:M sparsity on the CPU: the bit packing of the canonical format, every 2:4 nibble, window
// selection against a sort, the CUTLASS / PyTorch metadata reordering against vectors PyTorch
// made (tests/data/make_semi_structured_vectors.py), and the SR-STE arithmetic against values
// derived by hand.
#include <frugal/reference/sparse_nm.hpp>
#include <frugal/sparse/nm.cuh>
#include <frugal/sparse/srste_math.cuh>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using frugal::sparse::nm;
using frugal::sparse::nm_report;

namespace {

template <class P>
void check_packing(unsigned long long seed) {
  std::mt19937_64 rng(seed);
  const std::int64_t values = 1000;
  std::vector<std::uint32_t> words(std::size_t((values * P::index_bits + 31) / 32) + 1, 0u);
  std::vector<unsigned> want(static_cast<std::size_t>(values));
  std::vector<bool> bits(words.size() * 32, false);  // the bit stream written by hand
  for (std::int64_t j = 0; j < values; ++j) {
    want[std::size_t(j)] = unsigned(rng() % P::m);
    frugal::sparse::set_packed_index<P>(words.data(), j, want[std::size_t(j)]);
    for (int b = 0; b < P::index_bits; ++b) bits[std::size_t(j * P::index_bits + b)] = (want[std::size_t(j)] >> b) & 1u;
  }
  for (std::int64_t j = 0; j < values; ++j) REQUIRE(frugal::sparse::packed_index<P>(words.data(), j) == want[std::size_t(j)]);
  for (std::size_t i = 0; i < bits.size(); ++i) REQUIRE(((words[i / 32] >> (i % 32)) & 1u) == unsigned(bits[i]));
  // Overwriting keeps the neighbours.
  frugal::sparse::set_packed_index<P>(words.data(), 10, 0u);
  REQUIRE(frugal::sparse::packed_index<P>(words.data(), 9) == want[9]);
  REQUIRE(frugal::sparse::packed_index<P>(words.data(), 11) == want[11]);
}

}  // namespace

TEST_CASE("sparse format: sizes, and indices packed LSB first in 32-bit words (2, 3 and 4 bits, straddling words)") {
  CHECK(nm<2, 4>::index_bits == 2);
  CHECK(nm<2, 8>::index_bits == 3);
  CHECK(nm<5, 16>::index_bits == 4);
  CHECK(nm<2, 4>::values_per_row(10) == 6);       // 3 windows, K padded to 12
  CHECK(nm<2, 4>::index_words_per_row(64) == 2);  // 32 values x 2 bits
  CHECK(nm<2, 8>::index_words_per_row(64) == 2);   // 16 values x 3 bits = 48 bits
  CHECK(nm<2, 8>::index_words_per_row(128) == 3);  // 96 bits
  check_packing<nm<2, 4>>(1);
  check_packing<nm<3, 8>>(2);
  check_packing<nm<7, 16>>(3);
}

TEST_CASE("sparse format: every 2:4 nibble is idx0 | idx1 << 2 with idx0 < idx1, windows 4 bits apart") {
  std::set<unsigned> seen;
  for (unsigned nonzero = 0; nonzero < 16; ++nonzero) {
    if (__builtin_popcount(nonzero) > 2) continue;
    float w[8] = {};
    for (int i = 0; i < 4; ++i) w[i] = ((nonzero >> i) & 1u) ? float(i + 1) : 0.0f;
    for (int i = 0; i < 4; ++i) w[4 + i] = w[3 - i];  // a second window, mirrored
    float values[4];
    std::uint32_t word = 0;
    nm_report report;
    frugal::reference::nm_compress<nm<2, 4>>(w, 8, 1, 8, static_cast<const std::uint8_t*>(nullptr), 0, values, 4, &word, 1, report);
    REQUIRE(report.ok());
    const unsigned nibble = word & 0xfu, idx0 = nibble & 3u, idx1 = nibble >> 2;
    REQUIRE(idx0 < idx1);                                        // distinct, ascending: one of the six valid nibbles
    REQUIRE((nonzero & ~((1u << idx0) | (1u << idx1))) == 0u);  // every non-zero is kept
    // Fewer than two non-zeros: the lowest zero positions fill the window.
    if (nonzero == 0) REQUIRE(nibble == 0x4u);
    if (__builtin_popcount(nonzero) == 2) seen.insert(nibble);
    REQUIRE(((word >> 4) & 0xfu) != 0u);  // the second window sits in bits 4..7
  }
  CHECK(seen == std::set<unsigned>{0x4, 0x8, 0xC, 0x9, 0xD, 0xE});
}

TEST_CASE("sparse selection: the N largest, ties to the lower position, against a stable sort, every window of -2..2") {
  for (int code = 0; code < 625; ++code) {
    float score[4];
    int c = code;
    for (int i = 0; i < 4; ++i, c /= 5) score[i] = std::fabs(float(c % 5 - 2));
    for (int n = 1; n < 4; ++n) {
      std::vector<int> order(4);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[a] > score[b]; });
      unsigned want = 0;
      for (int i = 0; i < n; ++i) want |= 1u << order[std::size_t(i)];
      const unsigned got = n == 1 ? frugal::sparse::select_window<1, 4>(score)
                                  : n == 2 ? frugal::sparse::select_window<2, 4>(score) : frugal::sparse::select_window<3, 4>(score);
      INFO("code " << code << " n " << n);
      REQUIRE(got == want);
    }
  }
}

TEST_CASE("sparse format: the CUTLASS metadata reordering is a bijection") {
  for (std::int64_t rows : {32, 64, 96})
    for (std::int64_t cols : {2, 4, 6, 8}) {
      std::set<std::int64_t> offsets;
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c) {
          const auto o = frugal::sparse::cutlass_meta_offset(r, c, rows);
          REQUIRE(o >= 0);
          REQUIRE(o < rows * cols);
          REQUIRE(offsets.insert(o).second);
        }
    }
}

namespace {

std::vector<std::uint16_t> read_words(std::istream& in, const std::string& label, std::size_t count) {
  std::string line, tag;
  REQUIRE(std::getline(in, line));
  std::istringstream words(line);
  words >> tag;
  REQUIRE(tag == label);
  std::vector<std::uint16_t> v;
  std::string w;
  while (words >> w) v.push_back(std::uint16_t(std::stoul(w, nullptr, 16)));
  REQUIRE(v.size() == count);
  return v;
}

}  // namespace

TEST_CASE("sparse format: 2:4 compression and metadata equal PyTorch's sparse_semi_structured_from_dense_cutlass") {
  std::ifstream in(FRUGAL_TEST_DATA_DIR "/semi_structured_vectors.txt");
  REQUIRE(in.good());
  std::string line;
  std::getline(in, line);
  INFO(line);
  REQUIRE(line.find("PyTorch") != std::string::npos);
  int cases = 0;
  while (std::getline(in, line)) {
    std::istringstream head(line);
    std::string tag, type, set;
    std::int64_t rows = 0, cols = 0;
    head >> tag >> type >> rows >> cols >> set;
    REQUIRE(tag == "case");
    INFO(type << " " << rows << " x " << cols << " " << set);
    const auto dense = read_words(in, "dense", std::size_t(rows * cols));
    const auto values = read_words(in, "values", std::size_t(rows * cols / 2));
    const auto meta_words = read_words(in, "meta", std::size_t(rows * cols / 16));
    std::vector<std::int16_t> meta(meta_words.size());
    std::memcpy(meta.data(), meta_words.data(), meta.size() * 2);
    const std::int64_t words = nm<2, 4>::index_words_per_row(cols);

    // PyTorch's metadata, un-reordered, then decompressed with PyTorch's values: the dense matrix.
    std::vector<std::uint32_t> indices(std::size_t(rows * words));
    frugal::reference::nm24_from_cutlass_meta(meta.data(), rows, cols, indices.data(), words);
    std::vector<std::uint16_t> restored(dense.size());
    nm_report report;
    auto decompress = [&](auto tag_type) {
      using T = decltype(tag_type);
      std::vector<T> v(values.size()), d(dense.size());
      std::memcpy(static_cast<void*>(v.data()), values.data(), v.size() * 2);
      frugal::reference::nm_decompress<nm<2, 4>>(v.data(), cols / 2, indices.data(), words, rows, cols, d.data(), cols, report);
      std::memcpy(restored.data(), static_cast<const void*>(d.data()), d.size() * 2);
    };
    if (type == "bf16") decompress(__nv_bfloat16{});
    else decompress(__half{});
    REQUIRE(report.ok());
    REQUIRE(restored == dense);
    // ... and back: the same reordered metadata.
    std::vector<std::int16_t> again(meta.size());
    frugal::reference::nm24_to_cutlass_meta(indices.data(), words, rows, cols, again.data());
    REQUIRE(again == meta);

    // Compressing the dense matrix ourselves gives PyTorch's values and metadata where every
    // chunk has exactly two non-zeros (elsewhere both formats are valid but pick other padding).
    if (set == "exact") {
      std::vector<std::uint16_t> our_values(values.size());
      std::vector<std::uint32_t> our_indices(std::size_t(rows * words));
      auto compress = [&](auto tag_type) {
        using T = decltype(tag_type);
        std::vector<T> d(dense.size()), v(values.size());
        std::memcpy(static_cast<void*>(d.data()), dense.data(), d.size() * 2);
        frugal::reference::nm_compress<nm<2, 4>>(d.data(), cols, rows, cols, static_cast<const std::uint8_t*>(nullptr), 0, v.data(),
                                                 cols / 2, our_indices.data(), words, report);
        std::memcpy(our_values.data(), static_cast<const void*>(v.data()), v.size() * 2);
      };
      if (type == "bf16") compress(__nv_bfloat16{});
      else compress(__half{});
      REQUIRE(report.ok());
      REQUIRE(our_values == values);
      std::vector<std::int16_t> our_meta(meta.size());
      frugal::reference::nm24_to_cutlass_meta(our_indices.data(), words, rows, cols, our_meta.data());
      REQUIRE(our_meta == meta);
    }
    ++cases;
  }
  CHECK(cases == 5);
}

TEST_CASE("srste arithmetic: the refined gradient and SGD / AdamW updates, derived by hand") {
  const frugal::sparse::srste_params p{0.25f};
  // Kept positions keep their gradient; pruned ones gain decay * w.
  CHECK(frugal::sparse::srste_gradient(0.5f, 1.0f, true, p) == 0.5f);
  CHECK(frugal::sparse::srste_gradient(0.5f, 1.0f, false, p) == 0.75f);
  // SGD: g' = 0.75 + wd w = 0.75 + 0.125 * 2 = 1.0; buf = 0.5 * 1 + 1.0 = 1.5; w = 2 - 0.5 * 1.5 = 1.25.
  frugal::sparse::sgd_momentum sgd;
  sgd.lr = 0.5f;
  sgd.momentum = 0.5f;
  sgd.weight_decay = 0.125f;
  float w = 2.0f, buf = 1.0f, unused = 0.0f;
  frugal::sparse::optimizer_update(sgd, frugal::sparse::constants_of(sgd), 0.75f, w, buf, unused);
  CHECK(buf == 1.5f);
  CHECK(w == 1.25f);
  // AdamW, step 2, from m = 0.1, v = 0.01, w = 1, g = 0.5, lr 0.01, wd 0.1, b1 0.9, b2 0.999:
  //   m = 0.09 + 0.05 = 0.14; v = 0.00999 + 0.00025 = 0.01024; w = 1 - 0.001 = 0.999;
  //   m_hat = 0.14 / 0.19; v_hat = 0.01024 / 0.001999; w -= 0.01 m_hat / (sqrt(v_hat) + 1e-8).
  frugal::sparse::adamw adam;
  adam.lr = 0.01f;
  adam.weight_decay = 0.1f;
  adam.step = 2;
  float wa = 1.0f, m = 0.1f, v = 0.01f;
  frugal::sparse::optimizer_update(adam, frugal::sparse::constants_of(adam), 0.5f, wa, m, v);
  const double m_hat = 0.14 / 0.19, v_hat = 0.01024 / (1.0 - 0.999 * 0.999);
  const double want = 0.999 - 0.01 * m_hat / (std::sqrt(v_hat) + 1e-8);
  CHECK(m == doctest::Approx(0.14).epsilon(1e-6));
  CHECK(v == doctest::Approx(0.01024).epsilon(1e-6));
  CHECK(wa == doctest::Approx(want).epsilon(1e-6));
}

TEST_CASE("transposable 2:4 (and 1:4, 3:4): the best of every valid 4 x 4 pattern, against brute force over all 65536 masks") {
  auto check = [](auto n_tag, int expected_patterns) {
    constexpr int N = decltype(n_tag)::value;
    std::vector<unsigned> valid;
    for (unsigned m = 0; m < 65536; ++m) {
      bool ok = true;
      for (int r = 0; r < 4; ++r) ok = ok && __builtin_popcount((m >> (4 * r)) & 15u) == N;
      for (int c = 0; c < 4; ++c) ok = ok && __builtin_popcount(m & (0x1111u << c)) == N;
      if (ok) valid.push_back(m);
    }
    REQUIRE(int(valid.size()) == expected_patterns);
    std::mt19937_64 rng(N);
    std::uniform_int_distribution<int> small(0, 6);  // integer scores: every sum exact, many ties
    for (int trial = 0; trial < 3000; ++trial) {
      float score[16];
      for (auto& s : score) s = float(small(rng));
      const unsigned got = frugal::sparse::select_block4<N>(score);
      REQUIRE(std::find(valid.begin(), valid.end(), got) != valid.end());
      auto sum = [&](unsigned m) {
        double t = 0;
        for (int i = 0; i < 16; ++i) t += ((m >> i) & 1u) ? score[i] : 0.0;
        return t;
      };
      double best = -1;
      for (unsigned m : valid) best = std::max(best, sum(m));
      INFO("trial " << trial);
      REQUIRE(sum(got) == best);
    }
  };
  check(std::integral_constant<int, 2>{}, 90);
  check(std::integral_constant<int, 1>{}, 24);
  check(std::integral_constant<int, 3>{}, 24);
}

TEST_CASE("transposable N:8 and N:16: the greedy keeps N per row and column; its sum against the exact optimum (min-cost flow)") {
  auto measure = [](auto n_tag, auto m_tag, double floor) {
    constexpr int N = decltype(n_tag)::value, M = decltype(m_tag)::value;
    std::mt19937_64 rng(N * 100 + M);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    double worst = 1.0, mean = 0.0;
    const int blocks = 200;
    for (int b = 0; b < blocks; ++b) {
      float score[M * M];
      for (auto& s : score) s = std::fabs(normal(rng));
      const auto kept = frugal::reference::transposable_greedy_block<N, M>(score);
      double sum = 0.0;
      for (int r = 0; r < M; ++r) {
        int in_row = 0, in_col = 0;
        for (int c = 0; c < M; ++c) {
          in_row += kept[std::size_t(r * M + c)];
          in_col += kept[std::size_t(c * M + r)];
          sum += kept[std::size_t(r * M + c)] ? score[r * M + c] : 0.0;
        }
        REQUIRE(in_row == N);
        REQUIRE(in_col == N);
      }
      const double optimum = frugal::reference::transposable_optimum(score, N, M);
      REQUIRE(sum <= optimum + 1e-6);
      worst = std::min(worst, sum / optimum);
      mean += sum / optimum / blocks;
    }
    MESSAGE("greedy transposable " << N << ":" << M << " on |N(0,1)| blocks: mean " << mean << ", worst " << worst
                                   << " of the optimum's kept magnitude (200 blocks)");
    CHECK(worst >= floor);
  };
  measure(std::integral_constant<int, 2>{}, std::integral_constant<int, 8>{}, 0.9);
  measure(std::integral_constant<int, 4>{}, std::integral_constant<int, 8>{}, 0.9);
  measure(std::integral_constant<int, 4>{}, std::integral_constant<int, 16>{}, 0.9);
  measure(std::integral_constant<int, 8>{}, std::integral_constant<int, 16>{}, 0.9);
  // The 2:4 search is exact: its sum equals the flow optimum.
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int b = 0; b < 200; ++b) {
    float score[16];
    for (auto& s : score) s = std::fabs(normal(rng));
    const unsigned m = frugal::sparse::select_block4<2>(score);
    double sum = 0.0;
    for (int i = 0; i < 16; ++i) sum += ((m >> i) & 1u) ? score[i] : 0.0;
    REQUIRE(sum == doctest::Approx(frugal::reference::transposable_optimum(score, 2, 4)).epsilon(1e-6));
  }
}

// SPDX-License-Identifier: Apache-2.0
// frugal/topk/thread_topk.cuh: the register top-k network against the reference, exhaustively
// over small tie-heavy inputs and randomly over larger ones.
#include <frugal/reference/topk.hpp>
#include <frugal/topk/thread_topk.cuh>

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace {

template <int K, int N>
void check_against_reference(const float (&values)[N]) {
  const auto best = frugal::thread_topk_of<K, N>(values);
  constexpr int kk = K < N ? K : N;
  std::vector<float> rv(kk);
  std::vector<std::int32_t> ri(kk);
  frugal::reference::topk(values, rv.data(), ri.data(), 1, N, kk);
  for (int j = 0; j < kk; ++j) REQUIRE(std::int32_t(frugal::topk_key_index(best.keys[j])) == ri[j]);
  for (int j = kk; j < K; ++j) REQUIRE(best.keys[j] == frugal::empty_topk_key);
  for (int j = 1; j < K; ++j) REQUIRE(best.keys[j - 1] >= best.keys[j]);
}

// Every input of length N over the alphabet {NaN, -1, 0, 1}: 4^N cases, all ties and NaNs.
template <int K, int N>
void exhaustive() {
  const float alphabet[4] = {std::numeric_limits<float>::quiet_NaN(), -1.0f, 0.0f, 1.0f};
  int total = 1;
  for (int i = 0; i < N; ++i) total *= 4;
  for (int code = 0; code < total; ++code) {
    float values[N];
    int c = code;
    for (int i = 0; i < N; ++i, c /= 4) values[i] = alphabet[c % 4];
    INFO("K " << K << " N " << N << " code " << code);
    check_against_reference<K, N>(values);
  }
}

template <int K, int N>
void random_cases(unsigned long long seed) {
  std::mt19937_64 rng(seed);
  INFO("seed " << seed);
  for (int t = 0; t < 300; ++t) {
    float values[N];
    for (auto& v : values) {
      const unsigned r = unsigned(rng() % 16);
      v = r == 0 ? std::numeric_limits<float>::quiet_NaN() : r == 1 ? -0.0f : float(int(rng() % 9) - 4) * 0.25f;
    }
    check_against_reference<K, N>(values);
  }
}

}  // namespace

TEST_CASE("thread_topk: exhaustive over {NaN,-1,0,1}^N for N <= 7") {
  exhaustive<1, 1>();
  exhaustive<1, 5>();
  exhaustive<2, 6>();
  exhaustive<3, 7>();
  exhaustive<7, 7>();
  exhaustive<8, 4>();  // K > N: the slots beyond N stay empty
}

TEST_CASE("thread_topk: random tie-heavy inputs up to N = 256, K = 32") {
  random_cases<1, 8>(1);
  random_cases<2, 8>(2);
  random_cases<4, 16>(3);
  random_cases<8, 64>(4);
  random_cases<6, 160>(5);
  random_cases<22, 256>(6);
  random_cases<32, 256>(7);
  random_cases<32, 33>(8);
}

TEST_CASE("thread_topk: insert keeps descending order and ignores empty keys") {
  frugal::thread_topk<4> best;
  for (auto k : best.keys) CHECK(k == frugal::empty_topk_key);
  best.insert(frugal::empty_topk_key);
  for (auto k : best.keys) CHECK(k == frugal::empty_topk_key);
  best.insert(2.0f, 3);
  best.insert(2.0f, 1);
  best.insert(-1.0f, 0);
  best.insert(std::numeric_limits<float>::quiet_NaN(), 9);
  best.insert(5.0f, 7);
  CHECK(frugal::topk_key_index(best.keys[0]) == 7);
  CHECK(frugal::topk_key_index(best.keys[1]) == 1);
  CHECK(frugal::topk_key_index(best.keys[2]) == 3);
  CHECK(frugal::topk_key_index(best.keys[3]) == 0);
}

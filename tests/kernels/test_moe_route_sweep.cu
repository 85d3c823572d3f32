// SPDX-License-Identifier: Apache-2.0
// frugal::moe::route against the reference over every E in {1, 2, 7, 8, 160, 256, 384, 896, 1024}
// and k in {1, 2, 6, 8, 22, 32} (k <= E), softmax scoring, on random, tie-heavy, NaN/inf,
// all-equal, one-hot-expert and degenerate rows.
#include "moe_route_support.hpp"

using namespace frugal;
using frugal::test::logits_pattern;

namespace {

template <int E, int K>
void sweep_one(unsigned long long seed) {
  if constexpr (K <= E) {
    using config = moe::route_config<E, K>;
    test::route_case c;
    c.tokens = E >= 384 ? 24 : 80;
    for (auto p : {logits_pattern::random, logits_pattern::ties, logits_pattern::specials, logits_pattern::all_equal,
                   logits_pattern::one_hot, logits_pattern::nan_rows, logits_pattern::neg_inf_rows}) {
      c.pattern = p;
      test::check_route<config>(c, seed++);
    }
  }
}

template <int E>
void sweep_k(unsigned long long seed) {
  sweep_one<E, 1>(seed + 0);
  sweep_one<E, 2>(seed + 10);
  sweep_one<E, 6>(seed + 20);
  sweep_one<E, 8>(seed + 30);
  sweep_one<E, 22>(seed + 40);
  sweep_one<E, 32>(seed + 50);
}

}  // namespace

TEST_CASE("route sweep: E = 1, 2, 7, 8") {
  sweep_k<1>(1000);
  sweep_k<2>(2000);
  sweep_k<7>(3000);
  sweep_k<8>(4000);
}
TEST_CASE("route sweep: E = 160") { sweep_k<160>(5000); }
TEST_CASE("route sweep: E = 256") { sweep_k<256>(6000); }
TEST_CASE("route sweep: E = 384") { sweep_k<384>(7000); }
TEST_CASE("route sweep: E = 896") { sweep_k<896>(8000); }
TEST_CASE("route sweep: E = 1024") { sweep_k<1024>(9000); }

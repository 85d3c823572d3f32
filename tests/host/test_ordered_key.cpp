// SPDX-License-Identifier: Apache-2.0
// frugal/core/ordered_key.cuh: the key order equals the documented selection order.
#include <frugal/core/numeric.cuh>
#include <frugal/core/ordered_key.cuh>
#include <frugal/reference/topk.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace {
const float infinity = std::numeric_limits<float>::infinity();
const float qnan = std::numeric_limits<float>::quiet_NaN();

std::vector<float> special_values() {
  return {qnan, -qnan, -infinity, -std::numeric_limits<float>::max(), -1.0f, -std::numeric_limits<float>::denorm_min(),
          -0.0f, 0.0f, std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min(), 1.0f,
          1.0f + std::numeric_limits<float>::epsilon(), std::numeric_limits<float>::max(), infinity,
          std::bit_cast<float>(0x7fa00001u) /* signalling NaN */};
}
}  // namespace

TEST_CASE("ordered key: order matches reference::selected_before on special values") {
  const auto values = special_values();
  for (std::uint32_t ia : {0u, 1u, 7u, 1000u, frugal::max_topk_index})
    for (std::uint32_t ib : {0u, 1u, 7u, 1000u, frugal::max_topk_index})
      for (float a : values)
        for (float b : values) {
          if (ia == ib) continue;
          INFO(a << "@" << ia << " vs " << b << "@" << ib);
          CHECK((frugal::make_topk_key(a, ia) > frugal::make_topk_key(b, ib)) ==
                frugal::reference::selected_before(a, ia, b, ib));
        }
}

TEST_CASE("ordered key: order matches on random bit patterns") {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 200000; ++i) {
    const float a = std::bit_cast<float>(std::uint32_t(rng())), b = std::bit_cast<float>(std::uint32_t(rng()));
    const std::uint32_t ia = std::uint32_t(rng() % 2048), ib = std::uint32_t(rng() % 2048);
    if (ia == ib) continue;
    REQUIRE((frugal::make_topk_key(a, ia) > frugal::make_topk_key(b, ib)) == frugal::reference::selected_before(a, ia, b, ib));
  }
}

TEST_CASE("ordered key: round trip of value and index, no key is empty") {
  for (float v : special_values())
    for (std::uint32_t i : {0u, 5u, frugal::max_topk_index}) {
      const auto key = frugal::make_topk_key(v, i);
      CHECK(key != frugal::empty_topk_key);
      CHECK(frugal::topk_key_index(key) == i);
      const float back = frugal::topk_key_value(key);
      if (std::isnan(v)) CHECK(std::isnan(back));
      else if (v == 0.0f) CHECK(std::bit_cast<std::uint32_t>(back) == 0u);  // -0.0 decodes as +0.0
      else CHECK(std::bit_cast<std::uint32_t>(back) == std::bit_cast<std::uint32_t>(v));
    }
}

TEST_CASE("ordered bits: strictly monotone in value over sorted random and boundary floats") {
  std::mt19937_64 rng(9);
  std::vector<float> xs = special_values();
  for (int i = 0; i < 100000; ++i) xs.push_back(std::bit_cast<float>(std::uint32_t(rng())));
  std::erase_if(xs, [](float x) { return std::isnan(x); });
  std::sort(xs.begin(), xs.end());
  for (std::size_t i = 1; i < xs.size(); ++i) {
    if (xs[i] == xs[i - 1]) REQUIRE(frugal::ordered_bits(xs[i]) == frugal::ordered_bits(xs[i - 1]));
    else REQUIRE(frugal::ordered_bits(xs[i]) > frugal::ordered_bits(xs[i - 1]));
  }
  CHECK(frugal::ordered_bits(0.0f) == frugal::ordered_bits(-0.0f));
  CHECK(frugal::ordered_bits(qnan) == 0u);
  CHECK(frugal::ordered_bits(-infinity) > 0u);
}

TEST_CASE("ordered bits: the branch-free form equals the definition on every kind of float") {
  // The definition: NaN (any sign, any payload) -> 0; -0.0 as +0.0; negative values flip every
  // bit, the others set the sign bit.
  auto defined = [](float x) -> std::uint32_t {
    if (std::isnan(x)) return 0u;
    const std::uint32_t b = x == 0.0f ? 0u : std::bit_cast<std::uint32_t>(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  };
  std::mt19937_64 rng(10);
  std::vector<float> xs = special_values();
  for (std::uint32_t bits : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x00000001u, 0x80000001u, 0x807fffffu})
    xs.push_back(std::bit_cast<float>(bits));
  for (int i = 0; i < 200000; ++i) xs.push_back(std::bit_cast<float>(std::uint32_t(rng())));
  for (float x : xs) {
    INFO("bits " << std::bit_cast<std::uint32_t>(x));
    REQUIRE(frugal::ordered_bits(x) == defined(x));
  }
}

TEST_CASE("key_greater is the unsigned order of keys") {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 10000; ++i) {
    const frugal::topk_key a = rng(), b = i % 3 == 0 ? a : rng();
    REQUIRE(frugal::key_greater(a, b) == (a > b));
  }
}

namespace {
// Random values of a 16-bit type (as floats, exactly) mixed with its special values.
template <class T>
std::vector<float> sixteen_bit_values(std::mt19937_64& rng) {
  std::vector<float> xs;
  for (float s : special_values()) xs.push_back(frugal::to_float(frugal::from_float<T>(s)));
  for (int i = 0; i < 3000; ++i) {
    const auto bits = std::uint16_t(rng());
    xs.push_back(frugal::to_float(std::bit_cast<T>(bits)));
  }
  return xs;
}

template <class T, int ZeroBits>
void check_compact_keys(unsigned long long seed) {
  std::mt19937_64 rng(seed);
  const auto xs = sixteen_bit_values<T>(rng);
  const std::uint32_t max_index = (1u << ZeroBits) - 2u;
  for (int n = 0; n < 200000; ++n) {
    const float a = xs[rng() % xs.size()], b = rng() % 4 == 0 ? a : xs[rng() % xs.size()];
    const std::uint32_t i = std::uint32_t(rng() % (max_index + 1)), j = rng() % 8 == 0 ? i : std::uint32_t(rng() % (max_index + 1));
    const auto ca = frugal::make_compact_topk_key<ZeroBits>(a, i), cb = frugal::make_compact_topk_key<ZeroBits>(b, j);
    const auto ka = frugal::make_topk_key(a, i), kb = frugal::make_topk_key(b, j);
    INFO("a " << a << " i " << i << " b " << b << " j " << j);
    REQUIRE(ca != 0u);
    REQUIRE((ca > cb) == (ka > kb));
    REQUIRE((ca == cb) == (ka == kb));
    REQUIRE(frugal::compact_topk_key_index<ZeroBits>(ca) == i);
    // The value comes back as topk_key_value gives it: exactly, -0.0 as +0.0, a NaN as a NaN.
    const float back = frugal::compact_topk_key_value<ZeroBits>(ca), full = frugal::topk_key_value(ka);
    if (std::isnan(a)) REQUIRE((std::isnan(back) && std::isnan(full)));
    else REQUIRE(std::bit_cast<std::uint32_t>(back) == std::bit_cast<std::uint32_t>(full));
  }
  REQUIRE(std::isnan(frugal::compact_topk_key_value<ZeroBits>(0u)));  // the empty key
}
}  // namespace

TEST_CASE("compact keys order bf16 and fp16 values with their indices exactly as topk_key does") {
  check_compact_keys<__nv_bfloat16, 16>(12);
  check_compact_keys<__half, 13>(13);
}

TEST_CASE("truncated keys never reverse topk_key's order, and keep it where the top 24 bits differ") {
  std::mt19937_64 rng(14);
  std::vector<float> xs = special_values();
  for (int i = 0; i < 3000; ++i) xs.push_back(std::bit_cast<float>(std::uint32_t(rng())));
  for (int i = 0; i < 300; ++i) xs.push_back(1.0f + float(i % 300) * 0x1p-23f);  // same top 24 bits, in runs
  for (int n = 0; n < 200000; ++n) {
    const float a = xs[rng() % xs.size()], b = rng() % 4 == 0 ? a : xs[rng() % xs.size()];
    const std::uint32_t i = std::uint32_t(rng() % 256), j = std::uint32_t(rng() % 256);
    const auto ta = frugal::make_truncated_topk_key<8>(a, i), tb = frugal::make_truncated_topk_key<8>(b, j);
    const auto ka = frugal::make_topk_key(a, i), kb = frugal::make_topk_key(b, j);
    INFO("a " << a << " i " << i << " b " << b << " j " << j);
    REQUIRE(ta != 0u);
    REQUIRE(255u - (ta & 255u) == i);
    if ((ta >> 8) != (tb >> 8)) REQUIRE((ta > tb) == (ka > kb));  // distinct fields: the exact order
    if (ka == kb) REQUIRE(ta == tb);
    // Equal values (frugal's equality: -0.0 == +0.0, NaN == NaN) have equal fields.
    if (a == b || (std::isnan(a) && std::isnan(b))) REQUIRE((ta >> 8) == (tb >> 8));
  }
}

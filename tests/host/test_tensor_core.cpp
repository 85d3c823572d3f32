// SPDX-License-Identifier: Apache-2.0
// frugal/tensor_core/layout.cuh and emulation.hpp on the CPU: every layout function is a
// bijection between (lane, element) and its tile and agrees with entries written out by hand
// from the PTX ISA's figures; the emulation functions against scalar references, their
// arithmetic rules and their refusals.
#include <frugal/tensor_core/emulation.hpp>
#include <frugal/tensor_core/fragment.cuh>
#include <frugal/tensor_core/layout.cuh>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace L = frugal::tensor_core_layout;
namespace E = frugal::tensor_core_emulation;
using pos = L::position;

namespace {

// Every (lane, element) lands on a distinct cell of a rows x cols tile, and every cell is hit.
template <class F>
void require_bijection(F f, int elements, int rows, int cols) {
  std::set<std::pair<int, int>> seen;
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < elements; ++i) {
      const pos p = f(lane, i);
      INFO("lane " << lane << " element " << i);
      REQUIRE(p.row >= 0);
      REQUIRE(p.row < rows);
      REQUIRE(p.col >= 0);
      REQUIRE(p.col < cols);
      REQUIRE(seen.insert({p.row, p.col}).second);
    }
  REQUIRE(int(seen.size()) == rows * cols);
}

struct hand_entry {
  int lane, i, row, col;
};
template <class F>
void require_entries(F f, const std::vector<hand_entry>& entries) {
  for (const auto& e : entries) {
    INFO("lane " << e.lane << " element " << e.i);
    CHECK(f(e.lane, e.i) == pos{e.row, e.col});
  }
}

std::uint16_t bits_of(float x, bool bf16) {
  std::uint16_t b;
  if (bf16) {
    const __nv_bfloat16 v = __float2bfloat16_rn(x);
    std::memcpy(&b, &v, 2);
  } else {
    const __half v = __float2half_rn(x);
    std::memcpy(&b, &v, 2);
  }
  return b;
}

void put16(std::uint32_t* regs, int i, std::uint16_t bits) {
  const int shift = 16 * (i & 1);
  regs[i >> 1] = (regs[i >> 1] & ~(0xffffu << shift)) | std::uint32_t(bits) << shift;
}

}  // namespace

TEST_CASE("layout: every fragment layout is a bijection onto its tile") {
  require_bijection(L::m16n8k16_a, 8, 16, 16);
  require_bijection(L::m16n8k16_b, 4, 16, 8);
  require_bijection(L::m16n8_c, 4, 16, 8);
  require_bijection(L::m16n8k8_a, 4, 16, 8);
  require_bijection(L::m16n8k8_b, 2, 8, 8);
  require_bijection(L::m16n8k32_sp_a, 8, 16, 16);
  require_bijection(L::m16n8k32_sp_b, 8, 32, 8);
  for (bool trans : {false, true})
    require_bijection([&](int lane, int h) { return L::ldmatrix_element(lane, h, trans); }, 2, 8, 8);
  // Each sparse chunk (row, chunk of 4 logical columns) is held by exactly one lane, twice.
  std::set<std::pair<int, int>> chunks;
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 8; i += 2) {
      const pos c = L::m16n8k32_sp_a_chunk(lane, i);
      REQUIRE(L::m16n8k32_sp_a_chunk(lane, i + 1) == c);
      REQUIRE(chunks.insert({c.row, c.col}).second);
    }
  REQUIRE(chunks.size() == 16u * 8u);
}

// Entries read off the PTX ISA 9.0 figures and formulas by hand (g = lane / 4, t = lane % 4).
TEST_CASE("layout: m16n8k16 f16/bf16 entries from PTX 9.7.14.5.8 (Figures 'mma-16816-A/B/C')") {
  require_entries(L::m16n8k16_a, {{0, 0, 0, 0}, {0, 1, 0, 1}, {0, 2, 8, 0}, {0, 3, 8, 1}, {0, 4, 0, 8}, {0, 5, 0, 9},
                                  {0, 6, 8, 8}, {0, 7, 8, 9}, {5, 0, 1, 2}, {5, 7, 9, 11}, {31, 0, 7, 6}, {31, 3, 15, 7},
                                  {31, 4, 7, 14}, {31, 7, 15, 15}});
  require_entries(L::m16n8k16_b, {{0, 0, 0, 0}, {0, 1, 1, 0}, {0, 2, 8, 0}, {0, 3, 9, 0}, {5, 0, 2, 1}, {5, 3, 11, 1},
                                  {14, 1, 5, 3}, {31, 0, 6, 7}, {31, 1, 7, 7}, {31, 2, 14, 7}, {31, 3, 15, 7}, {3, 2, 14, 0}});
  require_entries(L::m16n8_c, {{0, 0, 0, 0}, {0, 1, 0, 1}, {0, 2, 8, 0}, {0, 3, 8, 1}, {5, 0, 1, 2}, {5, 1, 1, 3},
                               {5, 2, 9, 2}, {5, 3, 9, 3}, {31, 0, 7, 6}, {31, 1, 7, 7}, {31, 2, 15, 6}, {31, 3, 15, 7}});
}

TEST_CASE("layout: m16n8k8 tf32 entries from PTX 9.7.14.5.7 (Figures 'mma-1688-A-tf32', 'mma-1688-B-tf32')") {
  require_entries(L::m16n8k8_a, {{0, 0, 0, 0}, {0, 1, 8, 0}, {0, 2, 0, 4}, {0, 3, 8, 4}, {5, 0, 1, 1}, {5, 1, 9, 1},
                                 {5, 2, 1, 5}, {5, 3, 9, 5}, {31, 0, 7, 3}, {31, 1, 15, 3}, {31, 2, 7, 7}, {31, 3, 15, 7}});
  require_entries(L::m16n8k8_b, {{0, 0, 0, 0}, {0, 1, 4, 0}, {5, 0, 1, 1}, {5, 1, 5, 1}, {10, 0, 2, 2}, {10, 1, 6, 2},
                                 {19, 0, 3, 4}, {19, 1, 7, 4}, {24, 0, 0, 6}, {24, 1, 4, 6}, {31, 0, 3, 7}, {31, 1, 7, 7}});
}

TEST_CASE("layout: sparse m16n8k32 entries from PTX 9.7.14.6.2.2 (Figures 120, 121, 122)") {
  // A: (row, chunk of 4 logical columns): row g for a0 a1 a4 a5, firstcol 4t (+16 for i >= 4).
  require_entries(L::m16n8k32_sp_a_chunk, {{0, 0, 0, 0}, {0, 1, 0, 0}, {0, 2, 8, 0}, {0, 3, 8, 0}, {0, 4, 0, 4}, {0, 6, 8, 4},
                                           {5, 0, 1, 1}, {5, 4, 1, 5}, {5, 7, 9, 5}, {31, 0, 7, 3}, {31, 3, 15, 3}, {31, 6, 15, 7}});
  // ... which in the compressed 16 x 16 tile is the dense m16n8k16 A layout.
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 8; ++i) CHECK(L::m16n8k32_sp_a(lane, i) == L::m16n8k16_a(lane, i));
  require_entries(L::m16n8k32_sp_b, {{0, 0, 0, 0}, {0, 1, 1, 0}, {0, 2, 8, 0}, {0, 3, 9, 0}, {0, 4, 16, 0}, {0, 5, 17, 0},
                                     {0, 6, 24, 0}, {0, 7, 25, 0}, {31, 0, 6, 7}, {31, 4, 22, 7}, {31, 7, 31, 7}, {9, 5, 19, 2}});
  // Metadata: lane 4 g + 2 s + (chunk >= 4), bits 4 (chunk % 4) (+16 for rows 8..15).
  struct meta_entry {
    int row, chunk, selector, lane, bit;
  };
  for (const auto& m : std::vector<meta_entry>{{0, 0, 0, 0, 0},   {0, 3, 0, 0, 12},  {0, 4, 0, 1, 0},    {8, 0, 0, 0, 16},
                                               {8, 7, 0, 1, 28},  {3, 2, 1, 14, 8},  {15, 7, 1, 31, 28}, {7, 5, 0, 29, 4},
                                               {12, 1, 1, 18, 20}, {1, 6, 1, 7, 8},  {9, 4, 0, 5, 16},   {6, 0, 1, 26, 0}}) {
    INFO("row " << m.row << " chunk " << m.chunk << " selector " << m.selector);
    const auto w = L::m16n8k32_sp_metadata(m.row, m.chunk, m.selector);
    CHECK(w.lane == m.lane);
    CHECK(w.bit == m.bit);
  }
  // Per selector: every nibble of the tile in a distinct place, on the lanes 4g + 2s + {0, 1}.
  for (int s = 0; s < 2; ++s) {
    std::set<std::pair<int, int>> places;
    for (int row = 0; row < 16; ++row)
      for (int chunk = 0; chunk < 8; ++chunk) {
        const auto w = L::m16n8k32_sp_metadata(row, chunk, s);
        REQUIRE((w.lane & 3) / 2 == s);
        REQUIRE(w.bit % 4 == 0);
        REQUIRE(places.insert({w.lane, w.bit}).second);
      }
    REQUIRE(places.size() == 128u);
  }
  // The six nibbles ordered metadata allows (PTX 9.7.14.6.1): 0b0100 0b1000 0b1001 0b1100 0b1101 0b1110.
  std::set<unsigned> valid;
  for (unsigned n = 0; n < 16; ++n)
    if (L::is_ordered_metadata_nibble(n)) valid.insert(n);
  CHECK(valid == std::set<unsigned>{0x4, 0x8, 0x9, 0xC, 0xD, 0xE});
  CHECK(L::metadata_nibble(1, 3) == 0xDu);
}

TEST_CASE("layout: ldmatrix entries from PTX 9.7.14.5.15 (Figure 'ldmatrix fragments', .trans text)") {
  require_entries([](int lane, int h) { return L::ldmatrix_element(lane, h, false); },
                  {{0, 0, 0, 0}, {0, 1, 0, 1}, {1, 0, 0, 2}, {3, 1, 0, 7}, {4, 0, 1, 0}, {5, 0, 1, 2}, {5, 1, 1, 3},
                   {17, 1, 4, 3}, {30, 0, 7, 4}, {31, 0, 7, 6}, {31, 1, 7, 7}, {12, 0, 3, 0}});
  require_entries([](int lane, int h) { return L::ldmatrix_element(lane, h, true); },
                  {{0, 0, 0, 0}, {0, 1, 1, 0}, {1, 0, 2, 0}, {3, 1, 7, 0}, {4, 0, 0, 1}, {5, 0, 2, 1}, {5, 1, 3, 1},
                   {17, 1, 3, 4}, {30, 0, 4, 7}, {31, 0, 6, 7}, {31, 1, 7, 7}, {12, 0, 0, 3}});
  CHECK(L::ldmatrix_address_lane(0, 0) == 0);
  CHECK(L::ldmatrix_address_lane(2, 3) == 19);
  CHECK(L::ldmatrix_address_lane(3, 7) == 31);
}

TEST_CASE("to_tf32: round to nearest, ties away from zero, low 13 bits zero; NaN and infinities kept") {
  auto from_bits = [](std::uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  };
  auto bits = [](float f) {
    std::uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
  };
  CHECK(bits(frugal::to_tf32(1.0f)) == 0x3f800000u);
  CHECK(bits(frugal::to_tf32(from_bits(0x3f800fffu))) == 0x3f800000u);  // below the half: down
  CHECK(bits(frugal::to_tf32(from_bits(0x3f801000u))) == 0x3f802000u);  // the tie: away from zero
  CHECK(bits(frugal::to_tf32(from_bits(0xbf801000u))) == 0xbf802000u);
  CHECK(bits(frugal::to_tf32(from_bits(0x3f803000u))) == 0x3f804000u);  // a tie with an odd mantissa: up too
  CHECK(bits(frugal::to_tf32(INFINITY)) == 0x7f800000u);
  CHECK(std::isnan(frugal::to_tf32(from_bits(0x7f800001u))));  // a NaN whose payload is all in the low bits
  CHECK(std::isinf(frugal::to_tf32(from_bits(0x7f7ff000u))));  // beyond the largest tf32
  std::mt19937 rng(3);
  for (int n = 0; n < 100000; ++n) {
    const float x = from_bits(rng() & 0x7effffffu) * ((n & 1) ? -1.0f : 1.0f);
    const float r = frugal::to_tf32(x);
    REQUIRE((bits(r) & 0x1fffu) == 0u);
    const float up = from_bits((bits(x) & 0xffffe000u) + 0x2000u), down = from_bits(bits(x) & 0xffffe000u);
    REQUIRE((r == up || r == down));
    REQUIRE(std::fabs(double(r) - x) <= std::fabs(double(x == r ? r : (r == up ? down : up)) - x));  // the nearer one
  }
}

TEST_CASE("fragment: set and get place elements where the layout says") {
  frugal::mma_fragment<frugal::mma_operand::a, frugal::m16n8k16, __nv_bfloat16> a{};
  for (int i = 0; i < 8; ++i) a.set(i, float(i + 1));
  for (int i = 0; i < 8; ++i) CHECK(a.get(i) == float(i + 1));
  CHECK(a.x[0] == frugal::pack_pair(__float2bfloat16_rn(1.0f), __float2bfloat16_rn(2.0f)));
  frugal::mma_fragment<frugal::mma_operand::b, frugal::m16n8k8, float> b{};
  b.set(1, 1.0f + 1.0f / 2048.0f);  // a tie of tf32 (10 mantissa bits): away from zero, 1 + 2^-10
  CHECK(b.get(1) == 1.0f + 1.0f / 1024.0f);
  CHECK(decltype(a)::position(5, 7) == L::m16n8k16_a(5, 7));
  CHECK(frugal::mma_accumulator::position(31, 3) == pos{15, 7});
}

namespace {

// Builds the warp's registers of a 16-bit operand tile via the layout.
template <class F>
void fill16(std::uint32_t (&regs)[32][4], F where, int elements, const std::vector<std::vector<float>>& tile, bool bf16) {
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < elements; ++i) {
      const pos p = where(lane, i);
      put16(regs[lane], i, bits_of(tile[p.row][p.col], bf16));
    }
}

std::vector<std::vector<float>> random_tile(std::mt19937& rng, int rows, int cols, bool integers) {
  std::uniform_int_distribution<int> small(-8, 8);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> t(rows, std::vector<float>(cols));
  for (auto& r : t)
    for (auto& v : r) v = integers ? float(small(rng)) : normal(rng);
  return t;
}

}  // namespace

TEST_CASE("emulation: mma m16n8k16 (f16, bf16) equals the scalar product on small integers, bit for bit") {
  std::mt19937 rng(11);
  for (bool bf16 : {true, false}) {
    for (int trial = 0; trial < 20; ++trial) {
      auto A = random_tile(rng, 16, 16, true), B = random_tile(rng, 16, 8, true), C = random_tile(rng, 16, 8, true);
      std::uint32_t a[32][4] = {}, b[32][2] = {};
      float c[32][4], d[32][4];
      std::uint32_t b4[32][4] = {};
      fill16(a, L::m16n8k16_a, 8, A, bf16);
      fill16(b4, L::m16n8k16_b, 4, B, bf16);
      for (int l = 0; l < 32; ++l) b[l][0] = b4[l][0], b[l][1] = b4[l][1];
      for (int l = 0; l < 32; ++l)
        for (int i = 0; i < 4; ++i) c[l][i] = C[L::m16n8_c(l, i).row][L::m16n8_c(l, i).col];
      const auto e = bf16 ? E::mma_m16n8k16<__nv_bfloat16>(a, b, c, d) : E::mma_m16n8k16<__half>(a, b, c, d);
      REQUIRE(!e);
      for (int l = 0; l < 32; ++l)
        for (int i = 0; i < 4; ++i) {
          const pos p = L::m16n8_c(l, i);
          float want = C[p.row][p.col];
          for (int k = 0; k < 16; ++k) want += A[p.row][k] * B[k][p.col];
          REQUIRE(d[l][i] == want);
        }
    }
  }
}

TEST_CASE("emulation: the documented order: fma chain from c over k increasing, one rounding per step") {
  // A row of 2^24, 1, 1, ... against ones: summing left to right in fp32 loses every 1
  // (2^24 + 1 rounds to 2^24); any other order would keep some of them.
  std::uint32_t a[32][4] = {}, b[32][2] = {};
  float c[32][4] = {}, d[32][4];
  std::vector<std::vector<float>> A(16, std::vector<float>(16, 0.0f)), B(16, std::vector<float>(8, 1.0f));
  A[0][0] = 16777216.0f;
  for (int k = 1; k < 16; ++k) A[0][k] = 1.0f;
  std::uint32_t b4[32][4] = {};
  fill16(a, L::m16n8k16_a, 8, A, true);  // bf16: 2^24 and 1 are exact
  fill16(b4, L::m16n8k16_b, 4, B, true);
  for (int l = 0; l < 32; ++l) b[l][0] = b4[l][0], b[l][1] = b4[l][1];
  REQUIRE(!E::mma_m16n8k16<__nv_bfloat16>(a, b, c, d));
  CHECK(d[0][0] == 16777216.0f);  // lane 0 c0 = (0, 0)
}

TEST_CASE("emulation: mma m16n8k8 tf32 ignores the low 13 bits and equals the scalar product") {
  std::mt19937 rng(12);
  auto A = random_tile(rng, 16, 8, true), B = random_tile(rng, 8, 8, true);
  std::uint32_t a[32][4], b[32][2];
  float c[32][4] = {}, d[32][4];
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < 4; ++i) {
      std::memcpy(&a[l][i], &A[L::m16n8k8_a(l, i).row][L::m16n8k8_a(l, i).col], 4);
      a[l][i] |= 0x1fffu;  // garbage below tf32 precision: ignored
    }
    for (int i = 0; i < 2; ++i) std::memcpy(&b[l][i], &B[L::m16n8k8_b(l, i).row][L::m16n8k8_b(l, i).col], 4);
  }
  REQUIRE(!E::mma_m16n8k8_tf32(a, b, c, d));
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const pos p = L::m16n8_c(l, i);
      float want = 0.0f;
      for (int k = 0; k < 8; ++k) want += A[p.row][k] * B[k][p.col];
      REQUIRE(d[l][i] == want);
    }
}

namespace {

// A random 2:4-sparse 16 x 32 tile as kept values + per-lane metadata for `selector`, with
// non-uniform patterns (every one of the six nibbles appears).
struct sparse_tile {
  std::vector<std::vector<float>> dense;  // 16 x 32, zeros where pruned
  std::uint32_t a[32][4] = {};
  std::uint32_t e[32] = {};
};
sparse_tile make_sparse(std::mt19937& rng, int selector, bool bf16) {
  static const unsigned nibbles[6] = {0x4, 0x8, 0xC, 0x9, 0xD, 0xE};
  sparse_tile s;
  s.dense.assign(16, std::vector<float>(32, 0.0f));
  std::vector<std::vector<float>> kept(16, std::vector<float>(16));
  std::uniform_int_distribution<int> small(1, 9);
  for (int row = 0; row < 16; ++row)
    for (int chunk = 0; chunk < 8; ++chunk) {
      const unsigned nibble = nibbles[rng() % 6];
      const int i0 = int(nibble & 3u), i1 = int(nibble >> 2);
      const float v0 = float(small(rng)), v1 = -float(small(rng));
      s.dense[row][4 * chunk + i0] = v0;
      s.dense[row][4 * chunk + i1] = v1;
      kept[row][2 * chunk] = v0;
      kept[row][2 * chunk + 1] = v1;
      const auto w = L::m16n8k32_sp_metadata(row, chunk, selector);
      s.e[w.lane] |= nibble << w.bit;
    }
  // Lanes that the selector does not name carry garbage (never read).
  for (int lane = 0; lane < 32; ++lane)
    if ((lane & 3) / 2 != selector) s.e[lane] = 0x11111111u * unsigned(lane % 4);
  fill16(s.a, L::m16n8k32_sp_a, 8, kept, bf16);
  return s;
}

}  // namespace

TEST_CASE("emulation: mma.sp m16n8k32 equals the dense product of the decompressed A, both selectors") {
  std::mt19937 rng(13);
  for (bool bf16 : {true, false})
    for (int selector = 0; selector < 2; ++selector)
      for (int trial = 0; trial < 10; ++trial) {
        const auto s = make_sparse(rng, selector, bf16);
        auto B = random_tile(rng, 32, 8, true);
        std::uint32_t b[32][4] = {};
        fill16(b, L::m16n8k32_sp_b, 8, B, bf16);
        float c[32][4] = {}, d[32][4];
        for (int l = 0; l < 32; ++l) c[l][0] = float(l);
        const auto err = bf16 ? E::mma_sp_m16n8k32<__nv_bfloat16>(s.a, b, c, s.e, selector, d)
                              : E::mma_sp_m16n8k32<__half>(s.a, b, c, s.e, selector, d);
        REQUIRE(!err);
        for (int l = 0; l < 32; ++l)
          for (int i = 0; i < 4; ++i) {
            const pos p = L::m16n8_c(l, i);
            float want = i == 0 ? float(l) : 0.0f;
            for (int k = 0; k < 32; ++k) want += s.dense[p.row][k] * B[k][p.col];
            INFO("bf16 " << bf16 << " selector " << selector << " lane " << l << " element " << i);
            REQUIRE(d[l][i] == want);
          }
      }
}

TEST_CASE("emulation: mma.sp never multiplies a pruned position (an infinite B there gives no NaN)") {
  std::mt19937 rng(14);
  const auto s = make_sparse(rng, 0, true);
  std::vector<std::vector<float>> B(32, std::vector<float>(8, 1.0f));
  for (int k = 0; k < 32; ++k)
    if (s.dense[0][k] == 0.0f) B[k][0] = INFINITY;  // only where row 0 of A is pruned
  std::uint32_t b[32][4] = {};
  fill16(b, L::m16n8k32_sp_b, 8, B, true);
  float c[32][4] = {}, d[32][4];
  REQUIRE(!E::mma_sp_m16n8k32<__nv_bfloat16>(s.a, b, c, s.e, 0, d));
  float want = 0.0f;
  for (int k = 0; k < 32; ++k) want += s.dense[0][k];
  CHECK(d[0][0] == want);  // lane 0 c0 = (row 0, col 0)
}

TEST_CASE("emulation: invalid metadata and selectors are refused, naming the lane and the value") {
  std::mt19937 rng(15);
  auto s = make_sparse(rng, 1, true);
  std::uint32_t b[32][4] = {};
  float c[32][4] = {}, d[32][4];
  // Equal indices (0b0101) in row 11, chunk 6, selector 1: lane 4*3 + 2 + 1 = 15, bits 24..27.
  const auto w = L::m16n8k32_sp_metadata(11, 6, 1);
  REQUIRE(w.lane == 15);
  s.e[w.lane] = (s.e[w.lane] & ~(0xfu << w.bit)) | (0x5u << w.bit);
  auto err = E::mma_sp_m16n8k32<__nv_bfloat16>(s.a, b, c, s.e, 1, d);
  REQUIRE(err);
  CHECK(err.lane == 15);
  CHECK(err.value == 0x5u);
  CHECK(std::string(err.what).find("mma.sp::ordered_metadata.m16n8k32") != std::string::npos);
  // Descending indices (idx0 = 2, idx1 = 1: 0b0110) are undefined for ordered metadata too.
  s.e[w.lane] = (s.e[w.lane] & ~(0xfu << w.bit)) | (0x6u << w.bit);
  err = E::mma_sp_m16n8k32<__nv_bfloat16>(s.a, b, c, s.e, 1, d);
  REQUIRE(err);
  CHECK(err.value == 0x6u);
  // The same garbage on lanes the selector does not read is fine.
  s = make_sparse(rng, 0, true);
  s.e[2] = 0x55555555u;
  CHECK(!E::mma_sp_m16n8k32<__nv_bfloat16>(s.a, b, c, s.e, 0, d));
  err = E::mma_sp_m16n8k32<__nv_bfloat16>(s.a, b, c, s.e, 2, d);
  REQUIRE(err);
  CHECK(err.value == 2u);
  CHECK(std::string(err.what).find("selector") != std::string::npos);
}

TEST_CASE("emulation: ldmatrix x1/x2/x4, plain and transposed, with permuted row addresses") {
  alignas(16) std::uint16_t memory[64][8];  // 64 rows of 16 bytes, each element distinct
  for (int r = 0; r < 64; ++r)
    for (int c = 0; c < 8; ++c) memory[r][c] = std::uint16_t(r * 8 + c + 1);
  std::mt19937 rng(16);
  std::vector<int> perm(64);
  for (int i = 0; i < 64; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), rng);
  const void* rows[32];
  for (int lane = 0; lane < 32; ++lane) rows[lane] = memory[perm[lane]];
  for (int matrices : {1, 2, 4})
    for (bool trans : {false, true}) {
      std::uint32_t out[32][4] = {};
      REQUIRE(!E::ldmatrix(matrices, trans, rows, out));
      for (int lane = 0; lane < 32; ++lane)
        for (int j = 0; j < 4; ++j) {
          INFO("x" << matrices << " trans " << trans << " lane " << lane << " register " << j);
          if (j >= matrices) {
            REQUIRE(out[lane][j] == 0u);
            continue;
          }
          const int g = lane / 4, t = lane % 4;
          // Without .trans: row g of matrix j, elements 2t and 2t+1. With .trans: column g, rows 2t and 2t+1.
          const std::uint16_t lo = trans ? memory[perm[8 * j + 2 * t]][g] : memory[perm[8 * j + g]][2 * t];
          const std::uint16_t hi = trans ? memory[perm[8 * j + 2 * t + 1]][g] : memory[perm[8 * j + g]][2 * t + 1];
          REQUIRE(out[lane][j] == (std::uint32_t(lo) | std::uint32_t(hi) << 16));
        }
    }
  // Lanes beyond 8 x matrices may pass anything; a misaligned or null address of a used lane is refused.
  rows[20] = reinterpret_cast<const char*>(memory[3]) + 2;
  std::uint32_t out[32][4];
  CHECK(!E::ldmatrix(2, false, rows, out));
  auto err = E::ldmatrix(4, false, rows, out);
  REQUIRE(err);
  CHECK(err.lane == 20);
  CHECK(err.value == 2u);
  rows[20] = nullptr;
  err = E::ldmatrix(4, true, rows, out);
  REQUIRE(err);
  CHECK(err.lane == 20);
}

TEST_CASE("emulation: fp16 subnormals and bf16 values widen exactly") {
  CHECK(E::half_bits_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(E::half_bits_to_float(0x03ff) == std::ldexp(1023.0f, -24));
  CHECK(E::half_bits_to_float(0x3c00) == 1.0f);
  CHECK(E::half_bits_to_float(0xc000) == -2.0f);
  CHECK(E::half_bits_to_float(0x7bff) == 65504.0f);
  CHECK(std::isinf(E::half_bits_to_float(0x7c00)));
  CHECK(std::isnan(E::half_bits_to_float(0x7e00)));
  CHECK(E::bf16_bits_to_float(0x3f80) == 1.0f);
  for (std::uint32_t b = 0; b < 65536; ++b) {
    __half h;
    const auto bits = std::uint16_t(b);
    std::memcpy(static_cast<void*>(&h), &bits, 2);
    const float want = __half2float(h), got = E::half_bits_to_float(bits);
    REQUIRE(((std::isnan(want) && std::isnan(got)) || want == got));
  }
}

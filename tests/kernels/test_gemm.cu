// SPDX-License-Identifier: Apache-2.0
// frugal::gemm, frugal::grouped_gemm and frugal::block_gemm against the host references:
// many shapes (1, primes, tile edges, K not a multiple of the tile, up to 256), both B layouts,
// bf16 / f16 / tf32, aligned (cp.async) and unaligned (element) loads, every epilogue and
// output type, the grouped form over plan-like segments, determinism and argument errors.
#include <frugal/gemm/block_gemm.cuh>
#include <frugal/gemm/device_gemm.cuh>
#include <frugal/gemm/grouped_gemm.cuh>
#include <frugal/reference/gemm.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <string>

#include "support/test_support.hpp"

using frugal::col_major;
using frugal::matrix_order;
using frugal::matrix_ref;
using frugal::row_major;
using frugal::test::device_buffer;

namespace {

template <class T>
std::vector<T> random_values(std::mt19937_64& rng, std::size_t n, bool integers) {
  std::uniform_int_distribution<int> small(-3, 3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<T> v(n);
  for (auto& x : v) x = frugal::from_float<T>(integers ? float(small(rng)) : normal(rng));
  return v;
}

template <class Out>
double tolerance_of() {
  return std::is_same_v<Out, float> ? 1e-5 : std::is_same_v<Out, __half> ? 2e-3 : 1.6e-2;
}

// got against want: exact (bit for bit) or within atol + rtol |want| (rtol from D's type).
template <class Out>
void require_close(const std::vector<Out>& got, const std::vector<Out>& want, bool exact, const std::string& what, double atol = 1e-5) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const float g = frugal::to_float(got[i]), w = frugal::to_float(want[i]);
    INFO(what << ": element " << i << " got " << g << " want " << w);
    if (exact) REQUIRE(std::memcmp(static_cast<const void*>(&got[i]), static_cast<const void*>(&want[i]), sizeof(Out)) == 0);
    else REQUIRE(std::fabs(double(g) - w) <= atol + tolerance_of<Out>() * std::fabs(double(w)));
  }
}

struct shape {
  std::int64_t m, n, k;
};

// One GEMM on the device and on the host; `pad` adds columns to every leading dimension and
// `offset` elements to the operands' base (either makes loads element-wise).
template <class T, class Out, class Epilogue>
void run_gemm(const shape& s, matrix_order b_order, const Epilogue& epilogue, bool integers, unsigned long long seed, int pad = 0,
              int offset = 0, bool exact = true) {
  FRUGAL_SEEDED_RNG(rng, seed);
  const std::int64_t out_cols = frugal::epilogue_output_columns<Epilogue>(s.n);
  const std::int64_t lda = s.k + pad, ldb = (b_order == matrix_order::col_major ? s.k : s.n) + pad, ldd = out_cols + pad;
  const std::int64_t b_rows = b_order == matrix_order::col_major ? s.n : s.k;
  const auto a = random_values<T>(rng, std::size_t(s.m * lda + offset), integers);
  const auto b = random_values<T>(rng, std::size_t(b_rows * ldb + offset), integers);
  std::vector<Out> d(std::size_t(s.m * ldd + offset), frugal::from_float<Out>(-7.0f));
  device_buffer<T> d_a(a), d_b(b);
  device_buffer<Out> d_d(d);
  const matrix_ref<const T> ra{d_a.data() + offset, lda, matrix_order::row_major}, rb{d_b.data() + offset, ldb, b_order};
  FRUGAL_REQUIRE_OK(frugal::gemm(ra, rb, row_major(d_d.data() + offset, ldd), s.m, s.n, s.k, epilogue));
  frugal::test::synchronize();
  const auto got = d_d.download();
  std::vector<Out> want = d;
  frugal::reference::gemm(matrix_ref<const T>{a.data() + offset, lda, matrix_order::row_major},
                          matrix_ref<const T>{b.data() + offset, ldb, b_order}, row_major(want.data() + offset, ldd), s.m, s.n, s.k,
                          epilogue);
  require_close(got, want, exact,
                std::string(frugal::type_name<T>()) + " -> " + frugal::type_name<Out>() + " m " + std::to_string(s.m) + " n " +
                    std::to_string(s.n) + " k " + std::to_string(s.k) + (b_order == matrix_order::col_major ? " B col" : " B row") +
                    " pad " + std::to_string(pad) + " offset " + std::to_string(offset));
}

const std::vector<shape> sweep_shapes = {{1, 1, 1},     {1, 8, 16},    {3, 5, 7},       {16, 8, 16},    {17, 9, 33},
                                         {31, 47, 61},  {64, 64, 64},  {65, 63, 40},    {128, 16, 8},   {127, 129, 65},
                                         {97, 200, 130}, {13, 256, 96}, {256, 13, 100},  {130, 131, 257}};

}  // namespace

TEST_CASE("gemm: shape sweep, small integers bit for bit: bf16, f16 and tf32, B row- and col-major") {
  unsigned long long seed = 1000;
  for (const auto& s : sweep_shapes)
    for (auto order : {matrix_order::col_major, matrix_order::row_major}) {
      run_gemm<__nv_bfloat16, float>(s, order, frugal::linear_epilogue<>{}, true, ++seed);
      run_gemm<__half, float>(s, order, frugal::linear_epilogue<>{}, true, ++seed);
      run_gemm<float, float>(s, order, frugal::linear_epilogue<>{}, true, ++seed);
    }
}

TEST_CASE("gemm: leading dimensions and bases that break 16-byte alignment load element by element") {
  unsigned long long seed = 2000;
  for (const auto& s : std::vector<shape>{{5, 7, 13}, {33, 17, 9}, {70, 90, 45}})
    for (auto order : {matrix_order::col_major, matrix_order::row_major}) {
      run_gemm<__nv_bfloat16, float>(s, order, frugal::linear_epilogue<>{}, true, ++seed, 1, 0);  // odd leading dimensions
      run_gemm<__half, __half>(s, order, frugal::linear_epilogue<>{}, true, ++seed, 0, 3);        // base off by 3 elements
      run_gemm<float, float>(s, order, frugal::linear_epilogue<>{}, true, ++seed, 2, 1);
    }
  // Padded rows that stay 16-byte multiples keep the cp.async path; K is still a tail.
  run_gemm<__nv_bfloat16, __nv_bfloat16>({40, 24, 20}, matrix_order::row_major, frugal::linear_epilogue<>{}, true, 2100, 4, 0);
}

TEST_CASE("gemm: 256 x 256 x 256 (large tiles in host SIMT), and a device-filling shape") {
  int sms = 0;
  FRUGAL_REQUIRE_OK(frugal::multiprocessor_count(sms));
  const auto start = std::chrono::steady_clock::now();
  run_gemm<__nv_bfloat16, float>({256, 256, 256}, matrix_order::col_major, frugal::linear_epilogue<>{}, true, 3000);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("256 x 256 x 256 bf16 GEMM with its check: " << seconds << " s");
  // As many 128 x 128 tiles as multiprocessors: the large-tile kernel, with edges.
  run_gemm<__half, float>({128 * sms - 5, 131, 72}, matrix_order::row_major, frugal::linear_epilogue<>{}, true, 3001);
  run_gemm<float, float>({128 * sms, 128, 40}, matrix_order::col_major, frugal::linear_epilogue<>{}, true, 3002);
}

TEST_CASE("gemm: every epilogue: alpha, beta C, bias per row and column, activations, every output type") {
  FRUGAL_SEEDED_RNG(rng, 4000);
  const shape s{37, 70, 50};
  const auto c_f32 = random_values<float>(rng, std::size_t(s.m * s.n), false);
  const auto c_bf16 = random_values<__nv_bfloat16>(rng, std::size_t(s.m * s.n), false);
  const auto bias_rows = random_values<__nv_bfloat16>(rng, std::size_t(s.m), false);
  const auto bias_cols = random_values<float>(rng, std::size_t(s.n), false);
  device_buffer<float> d_c_f32(c_f32), d_bias_cols(bias_cols);
  device_buffer<__nv_bfloat16> d_c_bf16(c_bf16), d_bias_rows(bias_rows);
  // The host reference reads the same parameters through host copies.
  auto host = [&](auto e, const void* c_host, const void* bias_host) {
    using E = decltype(e);
    E h = e;
    h.c = static_cast<decltype(h.c)>(c_host);
    h.bias = static_cast<decltype(h.bias)>(bias_host);
    return h;
  };
  for (auto act : {frugal::activation::identity, frugal::activation::relu, frugal::activation::gelu, frugal::activation::gelu_tanh,
                   frugal::activation::silu}) {
    INFO("activation " << int(act));
    frugal::linear_epilogue<float, float> e1;
    e1.alpha = 0.5f;
    e1.beta = -1.5f;
    e1.c = d_c_f32.data();
    e1.ldc = s.n;
    e1.bias = d_bias_cols.data();
    e1.bias_on = frugal::bias_kind::per_column;
    e1.act = act;
    frugal::linear_epilogue<__nv_bfloat16, __nv_bfloat16> e2;
    e2.alpha = 2.0f;
    e2.beta = 1.0f;
    e2.c = d_c_bf16.data();
    e2.ldc = s.n;
    e2.bias = d_bias_rows.data();
    e2.bias_on = frugal::bias_kind::per_row;
    e2.act = act;
    // The device runs with the device copies of C and the bias, the reference with host copies.
    FRUGAL_SEEDED_RNG(data, 4100 + int(act));
    const auto a = random_values<__nv_bfloat16>(data, std::size_t(s.m * s.k), false);
    const auto b = random_values<__nv_bfloat16>(data, std::size_t(s.n * s.k), false);
    device_buffer<__nv_bfloat16> d_a(a), d_b(b);
    device_buffer<float> out_f32(std::size_t(s.m * s.n));
    device_buffer<__half> out_f16(std::size_t(s.m * s.n));
    device_buffer<__nv_bfloat16> out_bf16(std::size_t(s.m * s.n));
    const auto ra = row_major<const __nv_bfloat16>(d_a.data(), s.k);
    const auto rb = col_major<const __nv_bfloat16>(d_b.data(), s.k);
    FRUGAL_REQUIRE_OK(frugal::gemm(ra, rb, row_major(out_f32.data(), s.n), s.m, s.n, s.k, e1));
    FRUGAL_REQUIRE_OK(frugal::gemm(ra, rb, row_major(out_f16.data(), s.n), s.m, s.n, s.k, e1));
    FRUGAL_REQUIRE_OK(frugal::gemm(ra, rb, row_major(out_bf16.data(), s.n), s.m, s.n, s.k, e2));
    frugal::test::synchronize();
    std::vector<float> want_f32(std::size_t(s.m * s.n));
    std::vector<__half> want_f16(std::size_t(s.m * s.n));
    std::vector<__nv_bfloat16> want_bf16(std::size_t(s.m * s.n));
    const matrix_ref<const __nv_bfloat16> ha{a.data(), s.k, matrix_order::row_major}, hb{b.data(), s.k, matrix_order::col_major};
    frugal::reference::gemm(ha, hb, row_major(want_f32.data(), s.n), s.m, s.n, s.k, host(e1, c_f32.data(), bias_cols.data()));
    frugal::reference::gemm(ha, hb, row_major(want_f16.data(), s.n), s.m, s.n, s.k, host(e1, c_f32.data(), bias_cols.data()));
    frugal::reference::gemm(ha, hb, row_major(want_bf16.data(), s.n), s.m, s.n, s.k, host(e2, c_bf16.data(), bias_rows.data()));
    // fp32 sums in another order and the GPU's own erff/tanhf/expf: a few ulp of the sum of magnitudes.
    require_close(out_f32.download(), want_f32, false, "epilogue f32", 1e-4);
    require_close(out_f16.download(), want_f16, false, "epilogue f16", 1e-3);
    require_close(out_bf16.download(), want_bf16, false, "epilogue bf16", 1e-2);
  }
}

TEST_CASE("gemm: the gated epilogue (SwiGLU over interleaved gate/up columns) with a bias") {
  FRUGAL_SEEDED_RNG(rng, 5000);
  const auto bias = random_values<float>(rng, 96, false);
  device_buffer<float> d_bias(bias);
  frugal::gated_epilogue<float> device_e;
  device_e.bias = d_bias.data();
  device_e.alpha = 0.25f;
  frugal::gated_epilogue<float> host_e = device_e;
  host_e.bias = bias.data();
  const shape s{45, 96, 72};
  const auto a = random_values<__nv_bfloat16>(rng, std::size_t(s.m * s.k), false);
  const auto b = random_values<__nv_bfloat16>(rng, std::size_t(s.n * s.k), false);
  device_buffer<__nv_bfloat16> d_a(a), d_b(b), d_out(std::size_t(s.m * s.n / 2));
  FRUGAL_REQUIRE_OK(frugal::gemm(row_major<const __nv_bfloat16>(d_a.data(), s.k), col_major<const __nv_bfloat16>(d_b.data(), s.k),
                                 row_major(d_out.data(), s.n / 2), s.m, s.n, s.k, device_e));
  frugal::test::synchronize();
  std::vector<__nv_bfloat16> want(std::size_t(s.m * s.n / 2));
  frugal::reference::gemm(matrix_ref<const __nv_bfloat16>{a.data(), s.k, matrix_order::row_major},
                          matrix_ref<const __nv_bfloat16>{b.data(), s.k, matrix_order::col_major}, row_major(want.data(), s.n / 2), s.m,
                          s.n, s.k, host_e);
  require_close(d_out.download(), want, false, "gated bf16", 1e-2);
}

TEST_CASE("gemm: random data within the stated tolerance, and bitwise deterministic") {
  for (auto order : {matrix_order::col_major, matrix_order::row_major}) {
    run_gemm<__nv_bfloat16, float>({100, 120, 300}, order, frugal::linear_epilogue<>{}, false, 6000, 0, 0, false);
    run_gemm<float, float>({64, 80, 200}, order, frugal::linear_epilogue<>{}, false, 6001, 0, 0, false);
  }
  FRUGAL_SEEDED_RNG(rng, 6100);
  const auto a = random_values<__half>(rng, 90 * 130, false), b = random_values<__half>(rng, 130 * 70, false);
  device_buffer<__half> d_a(a), d_b(b);
  device_buffer<float> d1(90 * 70), d2(90 * 70);
  for (auto* d : {&d1, &d2})
    FRUGAL_REQUIRE_OK(frugal::gemm(row_major<const __half>(d_a.data(), 130), row_major<const __half>(d_b.data(), 70),
                                   row_major(d->data(), 70), 90, 70, 130));
  frugal::test::synchronize();
  const auto r1 = d1.download(), r2 = d2.download();
  REQUIRE(std::memcmp(r1.data(), r2.data(), r1.size() * sizeof(float)) == 0);
}

TEST_CASE("gemm: bad arguments return a status with a message, touching nothing") {
  device_buffer<__nv_bfloat16> a(64 * 64), b(64 * 64);
  device_buffer<float> d(64 * 64);
  const auto ra = row_major<const __nv_bfloat16>(a.data(), 64);
  const auto rb = col_major<const __nv_bfloat16>(b.data(), 64);
  const auto rd = row_major(d.data(), 64);
  auto message = [](const frugal::status& s) { return std::string(s.message()); };
  CHECK(frugal::gemm(ra, rb, rd, -1, 8, 8).code() == frugal::errc::invalid_argument);
  CHECK(message(frugal::gemm(col_major<const __nv_bfloat16>(a.data(), 64), rb, rd, 8, 8, 8)) == "frugal::gemm: A must be row-major");
  CHECK(message(frugal::gemm(row_major<const __nv_bfloat16>(nullptr, 64), rb, rd, 8, 8, 8)) == "frugal::gemm: A or B is null");
  CHECK(message(frugal::gemm(ra, rb, row_major<float>(nullptr, 64), 8, 8, 8)) == "frugal::gemm: D is null");
  CHECK(message(frugal::gemm(row_major<const __nv_bfloat16>(a.data(), 7), rb, rd, 8, 8, 8)) == "frugal::gemm: lda must be >= K");
  CHECK(message(frugal::gemm(ra, row_major<const __nv_bfloat16>(b.data(), 7), rd, 8, 8, 8)).find("ldb must be") != std::string::npos);
  CHECK(message(frugal::gemm(ra, rb, row_major(d.data(), 7), 8, 8, 8)) == "frugal::gemm: ldd must be >= the columns of D");
  const auto misaligned = frugal::gemm(ra, rb, row_major(reinterpret_cast<float*>(reinterpret_cast<char*>(d.data()) + 2), 64), 8, 8, 8);
  CHECK(misaligned.code() == frugal::errc::misaligned);
  // D over A: refused.
  CHECK(message(frugal::gemm(ra, rb, row_major(reinterpret_cast<float*>(a.data()), 64), 8, 8, 8)).find("D overlaps A or B") !=
        std::string::npos);
  frugal::linear_epilogue<> beta_without_c;
  beta_without_c.beta = 1.0f;
  CHECK(message(frugal::gemm(ra, rb, rd, 8, 8, 8, beta_without_c)) == "frugal::linear_epilogue: beta != 0 needs C with ldc >= N");
  CHECK(message(frugal::gemm(ra, rb, rd, 8, 7, 8, frugal::gated_epilogue<>{})).find("N must be even") != std::string::npos);
  // Empty products succeed without a launch; K = 0 gives epilogue(0).
  FRUGAL_REQUIRE_OK(frugal::gemm(ra, rb, rd, 0, 8, 8));
  frugal::linear_epilogue<> plus_bias;
  std::vector<float> ones(64, 1.0f);
  device_buffer<float> d_ones(ones);
  plus_bias.bias = d_ones.data();
  plus_bias.bias_on = frugal::bias_kind::per_column;
  FRUGAL_REQUIRE_OK(frugal::gemm(ra, rb, rd, 4, 8, 0, plus_bias));
  frugal::test::synchronize();
  const auto out = d.download();
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 8; ++c) REQUIRE(out[std::size_t(r * 64 + c)] == 1.0f);
}

namespace {

// Plan-like segments: counts per group, each padded to `block` rows, as moe::plan lays them out.
struct segments {
  std::vector<std::int32_t> counts, offsets;
  std::int64_t rows = 0;
};
segments make_segments(const std::vector<int>& counts, int block) {
  segments s;
  s.offsets.push_back(0);
  for (int c : counts) {
    s.counts.push_back(c);
    s.rows += (c + block - 1) / block * block;
    s.offsets.push_back(std::int32_t(s.rows));
  }
  return s;
}

template <class T, class OffsetT, class Epilogue>
void run_grouped(const std::vector<OffsetT>& offsets, const std::vector<std::int32_t>& counts, std::int64_t capacity, int groups,
                 std::int64_t rows, std::int64_t n, std::int64_t k, matrix_order b_order, const Epilogue& device_epilogue,
                 const Epilogue& host_epilogue, bool use_offsets, bool use_counts, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  const std::int64_t out_cols = frugal::epilogue_output_columns<Epilogue>(n);
  const auto a = random_values<T>(rng, std::size_t(rows * k), true);
  const auto b = random_values<T>(rng, std::size_t(groups * n * k), true);
  std::vector<float> d(std::size_t(rows * out_cols), -7.0f);  // rows no group covers must keep it
  device_buffer<T> d_a(a), d_b(b);
  device_buffer<float> d_d(d);
  device_buffer<OffsetT> d_offsets(offsets);
  device_buffer<std::int32_t> d_counts(counts);
  frugal::gemm_groups<OffsetT> g;
  g.offsets = use_offsets ? d_offsets.data() : nullptr;
  g.counts = use_counts ? d_counts.data() : nullptr;
  g.capacity = capacity;
  g.groups = groups;
  g.rows = rows;
  const std::int64_t ldb = b_order == matrix_order::col_major ? k : n;
  FRUGAL_REQUIRE_OK(frugal::grouped_gemm(row_major<const T>(d_a.data(), k), matrix_ref<const T>{d_b.data(), ldb, b_order}, g,
                                         row_major(d_d.data(), out_cols), n, k, device_epilogue));
  frugal::test::synchronize();
  std::vector<float> want = d;
  frugal::reference::grouped_gemm(matrix_ref<const T>{a.data(), k, matrix_order::row_major}, matrix_ref<const T>{b.data(), ldb, b_order},
                                  use_offsets ? offsets.data() : static_cast<const OffsetT*>(nullptr),
                                  use_counts ? counts.data() : nullptr, capacity, groups, rows, 0, row_major(want.data(), out_cols), n, k,
                                  host_epilogue);
  require_close(d_d.download(), want, std::is_same_v<Epilogue, frugal::linear_epilogue<>>, "grouped", 1e-4);
}

}  // namespace

TEST_CASE("grouped_gemm: plan segments (offsets, with and without counts), masked layout, int64 offsets, empty groups") {
  const auto s = make_segments({0, 3, 130, 17, 64, 1, 0, 200}, 16);
  const int groups = int(s.counts.size());
  frugal::linear_epilogue<> plain;
  for (auto order : {matrix_order::col_major, matrix_order::row_major}) {
    run_grouped<__nv_bfloat16, std::int32_t>(s.offsets, s.counts, 0, groups, s.rows, 72, 40, order, plain, plain, true, true, 7000);
    run_grouped<__half, std::int32_t>(s.offsets, s.counts, 0, groups, s.rows, 40, 33, order, plain, plain, true, false, 7001);
    const std::vector<std::int64_t> offsets64(s.offsets.begin(), s.offsets.end());
    run_grouped<float, std::int64_t>(offsets64, s.counts, 0, groups, s.rows, 24, 20, order, plain, plain, true, true, 7002);
    // Masked: group g owns rows [g * capacity, g * capacity + counts[g]) (counts above capacity clipped).
    const std::vector<std::int32_t> masked_counts = {5, 0, 48, 64, 70, 1};
    run_grouped<__nv_bfloat16, std::int32_t>({}, masked_counts, 64, 6, 6 * 64, 56, 48, order, plain, plain, false, true, 7003);
  }
  // Large tiles: every group averaging a full 128-row tile.
  const auto big = make_segments({300, 129, 128, 200}, 1);
  run_grouped<__nv_bfloat16, std::int32_t>(big.offsets, big.counts, 0, 4, big.rows, 136, 64, matrix_order::col_major, plain, plain, true,
                                           false, 7004);
}

TEST_CASE("grouped_gemm: per-group bias and the gated epilogue (an MoE gate/up projection)") {
  const auto s = make_segments({7, 0, 70, 33}, 16);
  FRUGAL_SEEDED_RNG(rng, 7100);
  const int n = 64;
  const auto bias = random_values<float>(rng, std::size_t(4 * n), false);
  device_buffer<float> d_bias(bias);
  frugal::gated_epilogue<float> device_e;
  device_e.bias = d_bias.data();
  device_e.bias_group_stride = n;
  frugal::gated_epilogue<float> host_e = device_e;
  host_e.bias = bias.data();
  run_grouped<__nv_bfloat16, std::int32_t>(s.offsets, s.counts, 0, 4, s.rows, n, 48, matrix_order::col_major, device_e, host_e, true,
                                           true, 7101);
  frugal::linear_epilogue<float, float> device_l;
  device_l.bias = d_bias.data();
  device_l.bias_on = frugal::bias_kind::per_column;
  device_l.bias_group_stride = n;
  device_l.act = frugal::activation::relu;
  auto host_l = device_l;
  host_l.bias = bias.data();
  run_grouped<__half, std::int32_t>(s.offsets, s.counts, 0, 4, s.rows, n, 48, matrix_order::row_major, device_l, host_l, true, true, 7102);
}

TEST_CASE("grouped_gemm: segments reaching outside the buffer are clipped, bad groups refused") {
  // Group 1 claims 500 rows of a 96-row buffer; group 2 starts past it; group 3 has a negative count.
  // Group 0's count exceeds its segment (clipped to 40 rows: rows 40.. are group 1's).
  const std::vector<std::int32_t> offsets = {0, 40, 540, 600, 600}, counts = {60, 500, 10, -5};
  frugal::linear_epilogue<> plain;
  run_grouped<__nv_bfloat16, std::int32_t>(offsets, counts, 0, 4, 96, 24, 16, matrix_order::col_major, plain, plain, true, true, 7200);
  device_buffer<__nv_bfloat16> a(64), b(64);
  device_buffer<float> d(64);
  frugal::gemm_groups<std::int32_t> g;
  g.groups = 2;
  g.rows = 4;
  auto s = frugal::grouped_gemm(row_major<const __nv_bfloat16>(a.data(), 8), col_major<const __nv_bfloat16>(b.data(), 8), g,
                                row_major(d.data(), 8), 4, 8);
  CHECK(std::string(s.message()) == "frugal::grouped_gemm: give offsets, or counts with a capacity >= 1 (the masked layout)");
  g.groups = -1;
  CHECK(!frugal::grouped_gemm(row_major<const __nv_bfloat16>(a.data(), 8), col_major<const __nv_bfloat16>(b.data(), 8), g,
                              row_major(d.data(), 8), 4, 8)
             .ok());
}

namespace {

// A user kernel that computes one 64 x 64 tile with block_gemm and a user epilogue (a functor
// that is not one of frugal's): the device function users compose.
using user_tile = frugal::gemm_tile<__nv_bfloat16, matrix_order::col_major, 64, 64, 32, 2, 2, 2>;
struct scale_and_shift {
  float scale, shift;
  FRUGAL_HOST_DEVICE float operator()(float acc, std::int64_t row, std::int64_t col, int) const {
    return acc * scale + shift + float(row - col);
  }
};
__global__ void user_tile_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, float* d, int m, int n, int k) {
  using gemm = frugal::block_gemm<user_tile>;
  gemm g(*frugal::dynamic_shared<gemm::TempStorage>());
  gemm::accumulators acc;
  acc.clear();
  g.multiply({a, k, m, b, k, n, k, true}, acc);
  g.store(acc, d, n, 0, 0, m, n, scale_and_shift{2.0f, 1.0f}, 0);
}

}  // namespace

TEST_CASE("block_gemm: one tile in a user kernel with a user epilogue") {
  FRUGAL_SEEDED_RNG(rng, 8000);
  const int m = 50, n = 64, k = 48;
  const auto a = random_values<__nv_bfloat16>(rng, std::size_t(m * k), true), b = random_values<__nv_bfloat16>(rng, std::size_t(n * k), true);
  device_buffer<__nv_bfloat16> d_a(a), d_b(b);
  device_buffer<float> d_d(std::size_t(m * n));
  FRUGAL_REQUIRE_OK(frugal::launch(user_tile_kernel, frugal::launch_config{dim3(1), dim3(user_tile::threads), user_tile::shared_bytes},
                                   (const __nv_bfloat16*)d_a.data(), (const __nv_bfloat16*)d_b.data(), d_d.data(), m, n, k));
  frugal::test::synchronize();
  std::vector<float> want(std::size_t(m * n));
  frugal::reference::gemm(matrix_ref<const __nv_bfloat16>{a.data(), k, matrix_order::row_major},
                          matrix_ref<const __nv_bfloat16>{b.data(), k, matrix_order::col_major}, row_major(want.data(), n), m, n, k,
                          scale_and_shift{2.0f, 1.0f});
  require_close(d_d.download(), want, true, "user tile");
}

// SPDX-License-Identifier: Apache-2.0
// permute, permute_fp8, combine and their backward against the reference, bit for bit, on rows
// laid out by a real plan (dropless and with drops, padding rows), fp32/bf16/fp16, odd sizes.
#include <frugal/moe/combine.cuh>
#include <frugal/moe/permute.cuh>
#include <frugal/moe/plan.cuh>
#include <frugal/reference/moe_dispatch.hpp>

#include <climits>
#include <cstring>
#include <set>

#include "support/test_support.hpp"

using namespace frugal;
using test::same_bits;

namespace {

struct layout {
  std::int64_t tokens;
  int k, experts;
  moe::plan_params params;
  std::vector<std::int32_t> ids;
  std::vector<float> weights;  // routing weights [T, k]
  reference::plan_result plan;
  std::int64_t rows;
};

// A plan of random distinct ids (some -1) and weights, computed by the reference (the plan has
// its own tests).
layout make_layout(std::int64_t tokens, int k, int experts, moe::plan_params params, std::mt19937_64& rng) {
  layout l{tokens, k, experts, params, std::vector<std::int32_t>(static_cast<std::size_t>(tokens * k)),
           std::vector<float>(static_cast<std::size_t>(tokens * k)), {}, 0};
  for (auto& w : l.weights) w = float(rng() % 1000) / 1000.0f;
  for (std::int64_t t = 0; t < tokens; ++t) {
    std::set<int> used;
    for (int j = 0; j < k; ++j) {
      int e;
      do e = int(rng() % experts); while (used.count(e));
      used.insert(e);
      l.ids[std::size_t(t * k + j)] = rng() % 9 == 0 ? -1 : e;
    }
  }
  l.plan = reference::plan(l.ids.data(), l.weights.data(), tokens, k, experts, params);
  l.rows = moe::plan_max_rows(tokens, k, experts, params);
  return l;
}

template <class T>
std::vector<T> random_rows(std::int64_t rows, int hidden, std::mt19937_64& rng, float spread = 3.0f) {
  std::vector<T> x(static_cast<std::size_t>(rows * hidden));
  std::normal_distribution<float> normal(0.0f, spread);
  for (auto& v : x) v = from_float<T>(normal(rng));
  return x;
}

template <class Index>
std::vector<Index> as_index(const std::vector<std::int32_t>& map) {
  return std::vector<Index>(map.begin(), map.end());
}

template <class T, class OutT = T, class Index = std::int32_t>
void check_all(std::int64_t tokens, int hidden, int k, int experts, moe::plan_params params, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  INFO(std::string(type_name<T>()) << " -> " << std::string(type_name<OutT>()) << " T " << tokens << " hidden " << hidden << " k "
                                   << k << " E " << experts << " policy " << int(params.policy) << " block " << params.block_size);
  const auto l = make_layout(tokens, k, experts, params, rng);
  const auto x = random_rows<T>(tokens, hidden, rng);
  const std::vector<float>& weights = l.weights;

  test::device_buffer<T> d_x(x), d_perm(std::size_t(l.rows) * hidden), d_y(std::size_t(l.rows) * hidden);
  test::device_buffer<Index> d_row_to_slot(as_index<Index>(l.plan.row_to_slot)), d_slot_to_row(as_index<Index>(l.plan.slot_to_row));
  test::device_buffer<float> d_weights(weights);
  // Scatter (each token read once, with the inverse map) and gather (each row reads its token).
  test::device_buffer<T> d_perm_gather(std::size_t(l.rows) * hidden);
  d_perm.fill_bytes(0x7f);
  d_perm_gather.fill_bytes(0x7f);
  const moe::dispatch_shape shape{tokens, k, hidden, l.rows};
  const moe::dispatch_maps_of<Index> maps{d_row_to_slot.data(), d_slot_to_row.data()}, gather{d_row_to_slot.data(), nullptr};
  FRUGAL_REQUIRE_OK(moe::permute(d_x.data(), maps, d_perm.data(), shape));
  FRUGAL_REQUIRE_OK(moe::permute(d_x.data(), gather, d_perm_gather.data(), shape));

  // "expert outputs": some function of the permuted rows, here fresh random values
  const auto y = random_rows<T>(l.rows, hidden, rng);
  d_y.upload(y);
  const auto residual = random_rows<OutT>(tokens, hidden, rng);
  test::device_buffer<OutT> d_residual(residual), d_out(std::size_t(tokens) * hidden), d_out_plain(std::size_t(tokens) * hidden);
  FRUGAL_REQUIRE_OK(moe::combine(d_y.data(), maps, d_weights.data(), d_residual.data(), d_out.data(), shape));
  FRUGAL_REQUIRE_OK(moe::combine(d_y.data(), maps, d_weights.data(), nullptr, d_out_plain.data(), shape));
  // The documented in-place residual add: residual == out.
  test::device_buffer<OutT> d_in_place(residual);
  FRUGAL_REQUIRE_OK(moe::combine(d_y.data(), maps, d_weights.data(), d_in_place.data(), d_in_place.data(), shape));

  // backward
  const auto d_out_grad = random_rows<T>(tokens, hidden, rng, 1.0f);
  test::device_buffer<T> d_g(d_out_grad), d_dy(std::size_t(l.rows) * hidden), d_dx(std::size_t(tokens) * hidden);
  test::device_buffer<float> d_dw(static_cast<std::size_t>(tokens * k));
  FRUGAL_REQUIRE_OK(moe::combine_backward(d_g.data(), d_y.data(), maps, d_weights.data(), d_dy.data(), d_dw.data(), shape));
  test::device_buffer<T> d_dy_gather(std::size_t(l.rows) * hidden);  // d_y without the forward map
  FRUGAL_REQUIRE_OK(moe::combine_backward(d_g.data(), d_y.data(), gather, d_weights.data(), d_dy_gather.data(), nullptr, shape));
  FRUGAL_REQUIRE_OK(moe::permute_backward(d_y.data(), maps, d_dx.data(), shape));
  test::synchronize();

  const auto perm_ref = reference::permute(x.data(), tokens, hidden, k, l.plan.row_to_slot);
  CHECK(same_bits(d_perm.download(), perm_ref));
  CHECK(same_bits(d_perm_gather.download(), perm_ref));
  CHECK(same_bits(d_out.download(), reference::combine(y.data(), l.rows, hidden, k, tokens, l.plan.slot_to_row.data(),
                                                       weights.data(), residual.data())));
  CHECK(same_bits(d_in_place.download(), d_out.download()));
  CHECK(same_bits(d_out_plain.download(), reference::combine(y.data(), l.rows, hidden, k, tokens, l.plan.slot_to_row.data(),
                                                             weights.data(), (const OutT*)nullptr)));
  CHECK(same_bits(d_dx.download(), reference::combine(y.data(), l.rows, hidden, k, tokens, l.plan.slot_to_row.data(),
                                                      (const float*)nullptr, (const T*)nullptr)));
  std::vector<T> dy_ref(std::size_t(l.rows) * hidden, from_float<T>(0.0f));
  for (std::int64_t row = 0; row < l.rows; ++row) {
    const std::int64_t s = l.plan.row_to_slot[std::size_t(row)];
    if (s < 0 || s >= tokens * k) continue;
    for (int h = 0; h < hidden; ++h)
      dy_ref[std::size_t(row * hidden + h)] = from_float<T>(weights[std::size_t(s)] * to_float(d_out_grad[std::size_t((s / k) * hidden + h)]));
  }
  CHECK(same_bits(d_dy.download(), dy_ref));
  CHECK(same_bits(d_dy_gather.download(), dy_ref));
  const auto dw = d_dw.download();
  const auto dw_ref = reference::combine_weight_grad(d_out_grad.data(), y.data(), l.rows, hidden, k, tokens, l.plan.slot_to_row.data());
  CHECK(std::memcmp(dw.data(), dw_ref.data(), dw.size() * sizeof(float)) == 0);
}

// scale_block_rows > 0 asks for the per-128 scales MN-major in blocks of that many rows (0: the
// per_128 row-major layout, -1: MN-major over all rows).
template <class T>
void check_fp8(std::int64_t tokens, int hidden, int k, bool per_128, unsigned long long seed, std::int64_t scale_block_rows = 0) {
  FRUGAL_SEEDED_RNG(rng, seed);
  INFO(std::string(type_name<T>()) << " T " << tokens << " hidden " << hidden << " per_128 " << per_128 << " scale block rows "
                                   << scale_block_rows);
  moe::plan_params params;
  params.block_size = 4;
  const auto l = make_layout(tokens, k, 16, params, rng);
  auto x = random_rows<T>(tokens, hidden, rng, 20.0f);
  if (tokens > 1)
    for (int h = 0; h < hidden; ++h) x[std::size_t(hidden + h)] = from_float<T>(0.0f);  // an all-zero token: scale 1
  test::device_buffer<T> d_x(x);
  test::device_buffer<std::int32_t> d_row_to_slot(l.plan.row_to_slot), d_slot_to_row(l.plan.slot_to_row);
  test::device_buffer<__nv_fp8_e4m3> d_q(std::size_t(l.rows) * hidden), d_q_gather(std::size_t(l.rows) * hidden);
  test::device_buffer<float> d_scales(std::size_t(l.rows) * (per_128 ? hidden / 128 : 1)), d_scales_gather(d_scales.size());
  const bool mn_major = per_128 && scale_block_rows != 0;
  const std::int64_t block_rows = scale_block_rows > 0 ? scale_block_rows : 0;
  const auto scaling = mn_major ? moe::fp8_scaling::per_128_mn_major : per_128 ? moe::fp8_scaling::per_128 : moe::fp8_scaling::per_token;
  const moe::dispatch_shape shape{tokens, k, hidden, l.rows};
  const moe::fp8_scales scales{scaling, block_rows};
  FRUGAL_REQUIRE_OK(moe::permute_fp8(d_x.data(), moe::dispatch_maps{d_row_to_slot.data(), d_slot_to_row.data()}, d_q.data(), d_scales.data(),
                                     shape, scales));
  FRUGAL_REQUIRE_OK(moe::permute_fp8(d_x.data(), moe::dispatch_maps{d_row_to_slot.data(), nullptr}, d_q_gather.data(),
                                     d_scales_gather.data(), shape, scales));
  test::synchronize();
  std::vector<unsigned char> q_ref;
  std::vector<float> s_ref;
  reference::permute_fp8(x.data(), tokens, hidden, k, l.plan.row_to_slot, per_128, q_ref, s_ref);
  // The reference's scales are row-major [rows, G]; MN-major moves row r, group g to
  // (r / B) G B + g B + r % B.
  std::vector<float> s_expected = s_ref;
  if (mn_major) {
    const std::int64_t groups = hidden / 128, b = block_rows > 0 ? block_rows : l.rows;
    for (std::int64_t r = 0; r < l.rows; ++r)
      for (std::int64_t g = 0; g < groups; ++g)
        s_expected[std::size_t((r / b) * groups * b + g * b + r % b)] = s_ref[std::size_t(r * groups + g)];
  }
  const auto q = d_q.download(), q_gather = d_q_gather.download();
  CHECK(std::memcmp(q.data(), q_ref.data(), q_ref.size()) == 0);
  CHECK(std::memcmp(q_gather.data(), q_ref.data(), q_ref.size()) == 0);
  CHECK(d_scales.download() == s_expected);
  CHECK(d_scales_gather.download() == s_expected);
  // and the quantisation is accurate: |dequantised - x| <= 1/16 relative (e4m3 has 3 mantissa bits)
  for (std::int64_t row = 0; row < l.rows; ++row) {
    const std::int64_t s = l.plan.row_to_slot[std::size_t(row)];
    if (s < 0 || s >= tokens * k) continue;
    for (int h = 0; h < hidden; ++h) {
      const float scale = s_ref[std::size_t(per_128 ? row * (hidden / 128) + h / 128 : row)];
      const float back = float(q[std::size_t(row * hidden + h)]) * scale;
      const float orig = to_float(x[std::size_t((s / k) * hidden + h)]);
      REQUIRE(std::fabs(back - orig) <= std::fabs(orig) / 16.0f + scale * 0.0039f);
    }
  }
}

// Expert choice's way back: combine_expert_choice (weighted, with a residual; unweighted, the
// backward of the k = 1 permute) and its backward, bit for bit against host loops in the
// kernel's order. Lists as route_expert_choice writes them: each expert's tokens increasing,
// then -1 (experts with fewer valid tokens than places), some tokens chosen by no expert.
template <class T>
void check_expert_choice_combine(std::int64_t tokens, int experts, int capacity, int hidden, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  INFO(std::string(type_name<T>()) << " T " << tokens << " E " << experts << " C " << capacity << " hidden " << hidden);
  const std::int64_t rows = std::int64_t(experts) * capacity;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(rows), -1);
  std::vector<float> w(static_cast<std::size_t>(rows), 0.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int e = 0; e < experts; ++e) {
    std::set<std::int32_t> chosen;
    const int valid = std::min<std::int64_t>(capacity - e % 3, tokens - 1);  // token T - 1: nobody's
    while (int(chosen.size()) < valid) chosen.insert(std::int32_t(rng() % std::uint64_t(tokens - 1)));
    int j = 0;
    for (std::int32_t t : chosen) {
      ids[std::size_t(e) * capacity + j] = t;
      w[std::size_t(e) * capacity + j] = u(rng);
      ++j;
    }
    // A malformed id (>= tokens, or below -1) in a free place: every entry point treats it as empty.
    if (j < capacity && e % 4 == 3) ids[std::size_t(e) * capacity + j] = e % 8 == 3 ? std::int32_t(tokens + 3) : -5;
  }
  auto valid_token = [&](std::int32_t t) { return t >= 0 && t < tokens; };
  const auto y = random_rows<T>(rows, hidden, rng), residual = random_rows<T>(tokens, hidden, rng), d_out = random_rows<T>(tokens, hidden, rng);
  test::device_buffer<T> d_y(y), d_residual(residual), d_out_dev(d_out), d_combined(std::size_t(tokens) * hidden),
      d_plain(std::size_t(tokens) * hidden), d_dy(std::size_t(rows) * hidden);
  test::device_buffer<std::int32_t> d_ids(ids);
  test::device_buffer<float> d_w(w), d_dw(static_cast<std::size_t>(rows));
  const moe::expert_choice_shape shape{tokens, experts, capacity, hidden};
  FRUGAL_REQUIRE_OK(moe::combine_expert_choice(d_y.data(), d_ids.data(), d_w.data(), d_residual.data(), d_combined.data(), shape));
  FRUGAL_REQUIRE_OK(moe::combine_expert_choice(d_y.data(), d_ids.data(), nullptr, nullptr, d_plain.data(), shape));
  FRUGAL_REQUIRE_OK(moe::combine_expert_choice_backward(d_out_dev.data(), d_y.data(), d_ids.data(), d_w.data(), d_dy.data(), d_dw.data(), shape));
  test::synchronize();
  // Host loops: per token, its experts in increasing order, fp32 fused multiply-adds, then the residual.
  std::vector<T> combined(std::size_t(tokens) * hidden), plain(combined.size());
  for (std::int64_t t = 0; t < tokens; ++t)
    for (int h = 0; h < hidden; ++h) {
      float acc = 0.0f, acc_plain = 0.0f;
      for (std::int64_t r = 0; r < rows; ++r)  // rows in expert order
        if (ids[std::size_t(r)] == t) {
          acc = std::fma(w[std::size_t(r)], to_float(y[std::size_t(r * hidden + h)]), acc);
          acc_plain = std::fma(1.0f, to_float(y[std::size_t(r * hidden + h)]), acc_plain);
        }
      combined[std::size_t(t * hidden + h)] = from_float<T>(acc + to_float(residual[std::size_t(t * hidden + h)]));
      plain[std::size_t(t * hidden + h)] = from_float<T>(acc_plain);
    }
  CHECK(same_bits(d_combined.download(), combined));
  CHECK(same_bits(d_plain.download(), plain));
  // d y = w * d out[token]; d w = <d out[token], y> in the kernel's butterfly order (the
  // reference's combine_weight_grad on the gathered d out rows, one slot per row).
  std::vector<T> dy(static_cast<std::size_t>(rows * hidden), from_float<T>(0.0f)), gathered = dy;
  std::vector<std::int32_t> identity(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    identity[std::size_t(r)] = valid_token(ids[std::size_t(r)]) ? std::int32_t(r) : -1;
    const std::int32_t t = ids[std::size_t(r)];
    if (!valid_token(t)) continue;
    for (int h = 0; h < hidden; ++h) {
      gathered[std::size_t(r * hidden + h)] = d_out[std::size_t(std::int64_t(t) * hidden + h)];
      dy[std::size_t(r * hidden + h)] = from_float<T>(w[std::size_t(r)] * to_float(d_out[std::size_t(std::int64_t(t) * hidden + h)]));
    }
  }
  CHECK(same_bits(d_dy.download(), dy));
  const auto dw_ref = reference::combine_weight_grad(gathered.data(), y.data(), rows, hidden, 1, rows, identity.data());
  const auto dw = d_dw.download();
  CHECK(std::memcmp(dw.data(), dw_ref.data(), dw.size() * sizeof(float)) == 0);
}

}  // namespace

TEST_CASE("combine_expert_choice and its backward: bit for bit, experts in order, tokens nobody chose") {
  check_expert_choice_combine<__nv_bfloat16>(300, 16, 40, 64, 40);
  check_expert_choice_combine<float>(97, 64, 5, 36, 41);
  check_expert_choice_combine<__half>(2000, 1024, 3, 16, 42);
  check_expert_choice_combine<float>(700, 4096, 2, 8, 44);  // the most experts
  check_expert_choice_combine<__nv_bfloat16>(3, 2, 2, 8, 43);
  // argument checks
  test::device_buffer<float> y(64), out(64);
  test::device_buffer<std::int32_t> ids(8);
  CHECK(moe::combine_expert_choice(y.data(), ids.data(), nullptr, nullptr, out.data(), moe::expert_choice_shape{4, 4097, 1, 4}).code() ==
        errc::invalid_argument);
  CHECK(moe::combine_expert_choice(y.data(), ids.data(), nullptr, nullptr, out.data(), moe::expert_choice_shape{4, 2, 2, 6}).code() ==
        errc::invalid_argument);
}

TEST_CASE("permute / combine / backward: bf16, fp16, fp32, bit for bit, dropless with padded segments") {
  moe::plan_params p;
  p.block_size = 8;
  check_all<__nv_bfloat16>(257, 136, 2, 8, p, 1);
  check_all<__half>(63, 64, 8, 64, p, 2);
  check_all<float>(100, 36, 4, 16, p, 3);
  check_all<__nv_bfloat16>(1, 8, 1, 1, p, 4);
  check_all<__nv_bfloat16, float>(129, 512, 6, 160, p, 5);  // bf16 expert outputs combined into fp32
  check_all<float, __nv_bfloat16>(31, 1024, 3, 7, p, 6);
  check_all<__nv_bfloat16>(4096, 64, 8, 256, p, 7);  // T = 4096
  check_all<__nv_bfloat16>(3, 32, 32, 1024, p, 8);   // T = 3, k = 32, E = 1024
}

TEST_CASE("permute / combine / backward: with capacity drops (dropped slots contribute nothing)") {
  moe::plan_params p;
  p.policy = moe::drop_policy::weight_priority;
  p.capacity_factor = 0.5f;
  check_all<__nv_bfloat16>(300, 64, 4, 8, p, 10);
  p.policy = moe::drop_policy::slot_major;
  check_all<float>(200, 32, 2, 4, p, 12);
  p.layout = moe::placement::masked;
  p.capacity = 16;
  check_all<__half>(300, 64, 4, 8, p, 11);
}

TEST_CASE("permute / combine / backward: int64 maps (an engine's own index tensors) give the bits of int32 maps") {
  moe::plan_params p;
  p.block_size = 16;
  check_all<__nv_bfloat16, __nv_bfloat16, std::int64_t>(300, 64, 4, 16, p, 60);
  check_all<float, __half, std::int64_t>(97, 12, 8, 40, p, 61);
  p.policy = moe::drop_policy::token_order;
  p.capacity_factor = 0.6f;
  check_all<__half, float, std::int64_t>(256, 24, 2, 8, p, 62);
  // permute_fp8 reads the same maps
  FRUGAL_SEEDED_RNG(rng, 63);
  const auto l = make_layout(50, 2, 8, moe::plan_params{}, rng);
  const auto x = random_rows<__nv_bfloat16>(50, 128, rng);
  test::device_buffer<__nv_bfloat16> d_x(x);
  test::device_buffer<std::int32_t> r32(l.plan.row_to_slot), s32(l.plan.slot_to_row);
  test::device_buffer<std::int64_t> r64(as_index<std::int64_t>(l.plan.row_to_slot)), s64(as_index<std::int64_t>(l.plan.slot_to_row));
  test::device_buffer<__nv_fp8_e4m3> q32(std::size_t(l.rows) * 128), q64(std::size_t(l.rows) * 128);
  test::device_buffer<float> sc32(std::size_t(l.rows)), sc64(std::size_t(l.rows));
  const moe::dispatch_shape shape{50, 2, 128, l.rows};
  FRUGAL_REQUIRE_OK(moe::permute_fp8(d_x.data(), moe::dispatch_maps{r32.data(), s32.data()}, q32.data(), sc32.data(), shape));
  FRUGAL_REQUIRE_OK(moe::permute_fp8(d_x.data(), moe::dispatch_maps_of<std::int64_t>{r64.data(), s64.data()}, q64.data(), sc64.data(), shape));
  test::synchronize();
  CHECK(same_bits(q32.download(), q64.download()));
  CHECK(same_bits(sc32.download(), sc64.download()));
}

TEST_CASE("permute / combine / backward: rows as slices of wider buffers (row strides) give the bits of contiguous rows") {
  FRUGAL_SEEDED_RNG(rng, 70);
  moe::plan_params params;
  params.block_size = 8;
  const std::int64_t tokens = 150;
  const int k = 4, hidden = 40, ld_t = 56, ld_r = 64;  // bf16: whole 16-byte vectors
  const auto l = make_layout(tokens, k, 12, params, rng);
  const auto x = random_rows<__nv_bfloat16>(tokens, hidden, rng), y = random_rows<__nv_bfloat16>(l.rows, hidden, rng);
  const auto residual = random_rows<__nv_bfloat16>(tokens, hidden, rng), grad = random_rows<__nv_bfloat16>(tokens, hidden, rng);
  // The same data, rows spread out with a stride; the gaps hold a sentinel.
  auto spread = [](const std::vector<__nv_bfloat16>& v, std::int64_t rows, int ld) {
    std::vector<__nv_bfloat16> out(std::size_t(rows * ld), from_float<__nv_bfloat16>(-7.0f));
    for (std::int64_t r = 0; r < rows; ++r)
      for (int h = 0; h < hidden; ++h) out[std::size_t(r * ld + h)] = v[std::size_t(r * hidden + h)];
    return out;
  };
  auto gather = [](const std::vector<__nv_bfloat16>& v, std::int64_t rows, int ld) {
    std::vector<__nv_bfloat16> out(std::size_t(rows * hidden));
    for (std::int64_t r = 0; r < rows; ++r)
      for (int h = 0; h < hidden; ++h) out[std::size_t(r * hidden + h)] = v[std::size_t(r * ld + h)];
    return out;
  };
  auto gaps_untouched = [](const std::vector<__nv_bfloat16>& v, std::int64_t rows, int ld) {
    for (std::int64_t r = 0; r < rows; ++r)
      for (int h = hidden; h < ld; ++h)
        if (to_float(v[std::size_t(r * ld + h)]) != -7.0f) return false;
    return true;
  };
  test::device_buffer<std::int32_t> r2s(l.plan.row_to_slot), s2r(l.plan.slot_to_row);
  test::device_buffer<float> w(l.weights);
  const moe::dispatch_maps maps{r2s.data(), s2r.data()};
  const moe::dispatch_shape dense{tokens, k, hidden, l.rows}, strided{tokens, k, hidden, l.rows, ld_t, ld_r};
  // contiguous
  test::device_buffer<__nv_bfloat16> d_x(x), d_y(y), d_res(residual), d_g(grad), perm(std::size_t(l.rows) * hidden),
      out(std::size_t(tokens) * hidden), dy(std::size_t(l.rows) * hidden), dx(std::size_t(tokens) * hidden);
  test::device_buffer<float> dw(std::size_t(tokens * k)), dw_s(std::size_t(tokens * k));
  FRUGAL_REQUIRE_OK(moe::permute(d_x.data(), maps, perm.data(), dense));
  FRUGAL_REQUIRE_OK(moe::combine(d_y.data(), maps, w.data(), d_res.data(), out.data(), dense));
  FRUGAL_REQUIRE_OK(moe::combine_backward(d_g.data(), d_y.data(), maps, w.data(), dy.data(), dw.data(), dense));
  FRUGAL_REQUIRE_OK(moe::permute_backward(d_y.data(), maps, dx.data(), dense));
  // strided
  test::device_buffer<__nv_bfloat16> s_x(spread(x, tokens, ld_t)), s_y(spread(y, l.rows, ld_r)), s_res(spread(residual, tokens, ld_t)),
      s_g(spread(grad, tokens, ld_t)), s_perm(spread(std::vector<__nv_bfloat16>(std::size_t(l.rows) * hidden), l.rows, ld_r)),
      s_out(spread(std::vector<__nv_bfloat16>(std::size_t(tokens) * hidden), tokens, ld_t)),
      s_dy(spread(std::vector<__nv_bfloat16>(std::size_t(l.rows) * hidden), l.rows, ld_r)),
      s_dx(spread(std::vector<__nv_bfloat16>(std::size_t(tokens) * hidden), tokens, ld_t));
  FRUGAL_REQUIRE_OK(moe::permute(s_x.data(), maps, s_perm.data(), strided));
  FRUGAL_REQUIRE_OK(moe::combine(s_y.data(), maps, w.data(), s_res.data(), s_out.data(), strided));
  FRUGAL_REQUIRE_OK(moe::combine_backward(s_g.data(), s_y.data(), maps, w.data(), s_dy.data(), dw_s.data(), strided));
  FRUGAL_REQUIRE_OK(moe::permute_backward(s_y.data(), maps, s_dx.data(), strided));
  test::synchronize();
  CHECK(same_bits(gather(s_perm.download(), l.rows, ld_r), perm.download()));
  CHECK(gaps_untouched(s_perm.download(), l.rows, ld_r));
  CHECK(same_bits(gather(s_out.download(), tokens, ld_t), out.download()));
  CHECK(gaps_untouched(s_out.download(), tokens, ld_t));
  CHECK(same_bits(gather(s_dy.download(), l.rows, ld_r), dy.download()));
  CHECK(gaps_untouched(s_dy.download(), l.rows, ld_r));
  CHECK(same_bits(dw_s.download(), dw.download()));
  CHECK(same_bits(gather(s_dx.download(), tokens, ld_t), dx.download()));
  // fp8: the quantized rows with a stride (in fp8 elements)
  test::device_buffer<__nv_fp8_e4m3> q(std::size_t(l.rows) * hidden), q_s(std::size_t(l.rows) * ld_r);
  test::device_buffer<float> sc(std::size_t(l.rows)), sc_s(std::size_t(l.rows));
  FRUGAL_REQUIRE_OK(moe::permute_fp8(d_x.data(), maps, q.data(), sc.data(), dense));
  FRUGAL_REQUIRE_OK(moe::permute_fp8(s_x.data(), maps, q_s.data(), sc_s.data(), strided));
  test::synchronize();
  const auto qa = q.download(), qb = q_s.download();
  bool same = true;
  for (std::int64_t r = 0; r < l.rows; ++r) same = same && std::memcmp(&qa[std::size_t(r * hidden)], &qb[std::size_t(r * ld_r)], hidden) == 0;
  CHECK(same);
  CHECK(same_bits(sc.download(), sc_s.download()));
  // strides that break the rules
  moe::dispatch_shape bad = strided;
  bad.ld_tokens = hidden - 8;
  CHECK(moe::permute(s_x.data(), maps, s_perm.data(), bad).code() == errc::invalid_argument);
  bad = strided;
  bad.ld_rows = ld_r + 1;
  CHECK(std::strstr(moe::combine(s_y.data(), maps, w.data(), nullptr, s_out.data(), bad).message(), "ld_") != nullptr);
}

TEST_CASE("permute_fp8: per-token and per-128 scales, bit for bit") {
  check_fp8<__nv_bfloat16>(100, 256, 2, false, 20);
  check_fp8<__nv_bfloat16>(100, 512, 4, true, 21);
  check_fp8<float>(33, 128, 1, true, 22);
  check_fp8<__half>(17, 136, 3, false, 23);
  // MN-major per-128 scales (DeepGEMM's layout): over all rows, and in blocks of 4 rows (the
  // padded segments here are multiples of 4, as a masked layout's capacity would be).
  check_fp8<__nv_bfloat16>(100, 512, 4, true, 24, -1);
  check_fp8<__nv_bfloat16>(100, 384, 2, true, 25, 4);
}

TEST_CASE("permute / combine: argument checks (vector width, alignment, sizes)") {
  test::device_buffer<__nv_bfloat16> x(64 * 16), out(64 * 16);
  test::device_buffer<std::int32_t> map(64);
  const moe::dispatch_maps maps{map.data(), map.data()};
  auto shape = [](std::int64_t tokens, int hidden, int k, std::int64_t rows) { return moe::dispatch_shape{tokens, k, hidden, rows}; };
  auto s = moe::permute(x.data(), maps, out.data(), shape(4, 12, 2, 8));
  CHECK(s.code() == errc::invalid_argument);
  CHECK(std::strstr(s.message(), "multiple of 16 / sizeof(T)") != nullptr);
  s = moe::permute(x.data() + 1, maps, out.data(), shape(4, 16, 2, 8));
  CHECK(s.code() == errc::misaligned);
  s = moe::combine(x.data(), maps, nullptr, nullptr, (float*)nullptr, shape(4, 16, 2, 8));
  CHECK(s.code() == errc::invalid_argument);
  test::device_buffer<__nv_fp8_e4m3> q(64 * 16);
  test::device_buffer<float> scales(64);
  s = moe::permute_fp8(x.data(), maps, q.data(), scales.data(), shape(4, 64, 2, 8), {moe::fp8_scaling::per_128});
  CHECK(std::strstr(s.message(), "multiple of 128") != nullptr);
  s = moe::permute_fp8(x.data(), maps, q.data(), scales.data(), shape(4, 128, 2, 8), {moe::fp8_scaling::per_128_mn_major, 3});
  CHECK(s.code() == errc::invalid_argument);  // 3 does not divide the 8 rows
  CHECK(std::strstr(s.message(), "scale_block_rows") != nullptr);
  s = moe::permute_fp8(x.data(), maps, q.data(), reinterpret_cast<float*>(reinterpret_cast<char*>(scales.data()) + 2), shape(4, 128, 2, 8),
                       {moe::fp8_scaling::per_128});
  CHECK(s.code() == errc::misaligned);
  s = moe::permute(x.data(), maps, out.data(), shape(4, 16, 33, 8));
  CHECK(s.code() == errc::invalid_argument);
  // T * k beyond int32 slots, and a T so large that T * k would overflow int64: refused, not wrapped
  for (std::int64_t huge : {std::int64_t(INT32_MAX), std::int64_t(INT64_MAX / 4)}) {
    s = moe::permute(x.data(), maps, out.data(), shape(huge, 16, 8, 8));
    CHECK(std::strstr(s.message(), "at most INT32_MAX") != nullptr);
    s = moe::combine(x.data(), maps, nullptr, nullptr, out.data(), shape(huge, 16, 8, 8));
    CHECK(std::strstr(s.message(), "at most INT32_MAX") != nullptr);
  }
  FRUGAL_REQUIRE_OK(moe::permute(x.data(), maps, out.data(), shape(4, 16, 2, 0)));  // no rows: nothing to do
  // Aliasing: outputs over inputs are refused; residual == out (exactly) is the in-place add.
  s = moe::permute(x.data(), maps, x.data(), shape(4, 16, 2, 8));
  CHECK(std::strstr(s.message(), "must not overlap") != nullptr);
  s = moe::combine(x.data(), maps, nullptr, nullptr, x.data() + 16, shape(4, 16, 2, 8));
  CHECK(std::strstr(s.message(), "must not overlap") != nullptr);
  s = moe::combine(x.data(), maps, nullptr, out.data() + 16, out.data(), shape(4, 16, 2, 8));
  CHECK(std::strstr(s.message(), "residual may be out itself") != nullptr);
  test::device_buffer<float> dw(8);
  s = moe::combine_backward(x.data(), x.data(), maps, dw.data(), out.data(), dw.data(), shape(4, 16, 2, 8));
  CHECK(std::strstr(s.message(), "must not overlap") != nullptr);
  s = moe::combine_expert_choice_backward(x.data(), x.data(), map.data(), nullptr, x.data(), nullptr, moe::expert_choice_shape{4, 2, 4, 16});
  CHECK(std::strstr(s.message(), "must not overlap") != nullptr);
}

// A plan sized for the worst case (block 64: T k + E 63 rows) used by a decode step: with the
// plan's device-side total, permute, permute_fp8, combine and the backward touch only the rows
// the plan used. Every row past the total keeps its sentinel bytes; padding rows inside the used
// range are zeros, or keep their bytes with padding_rows::untouched.
TEST_CASE("permute / combine: rows past the plan's total cost nothing; padding rows zeros or untouched") {
  using T = __nv_bfloat16;
  FRUGAL_SEEDED_RNG(rng, 90);
  moe::plan_params params;
  params.block_size = 64;
  for (std::int64_t tokens : {1, 3}) {
    const int k = 8, experts = 128, hidden = 64;
    const auto l = make_layout(tokens, k, experts, params, rng);
    const std::int64_t used = l.plan.total_rows;
    INFO("T " << tokens << " rows used " << used << " of " << l.rows);
    REQUIRE(used < l.rows);
    const auto x = random_rows<T>(tokens, hidden, rng);
    test::device_buffer<T> d_x(x);
    test::device_buffer<std::int32_t> d_row_to_slot(l.plan.row_to_slot), d_slot_to_row(l.plan.slot_to_row),
        d_total(std::vector<std::int32_t>{std::int32_t(used)});
    const moe::dispatch_shape shape{tokens, k, hidden, l.rows};
    const auto perm_ref = reference::permute(x.data(), tokens, hidden, k, l.plan.row_to_slot);
    for (bool scatter : {true, false})
      for (auto padding : {moe::padding_rows::zeros, moe::padding_rows::untouched}) {
        const moe::dispatch_maps maps{d_row_to_slot.data(), scatter ? d_slot_to_row.data() : nullptr, d_total.data()};
        test::device_buffer<T> d_perm(std::size_t(l.rows) * hidden);
        d_perm.fill_bytes(0x7f);
        FRUGAL_REQUIRE_OK(moe::permute(d_x.data(), maps, d_perm.data(), shape, padding));
        test::synchronize();
        const auto got = d_perm.download();
        std::size_t rows_written = 0;
        for (std::int64_t r = 0; r < l.rows; ++r) {
          const bool filled = l.plan.row_to_slot[std::size_t(r)] >= 0 && l.plan.row_to_slot[std::size_t(r)] < tokens * k;
          const bool expect_written = r < used && (filled || padding == moe::padding_rows::zeros);
          bool untouched = true, equal = true;
          for (int h = 0; h < hidden; ++h) {
            const std::size_t i = std::size_t(r * hidden + h);
            std::uint16_t bits;
            std::memcpy(&bits, &got[i], 2);
            untouched = untouched && bits == 0x7f7f;
            equal = equal && std::memcmp(&got[i], &perm_ref[i], 2) == 0;
          }
          INFO("row " << r << " filled " << filled << " scatter " << scatter << " padding " << int(padding));
          if (expect_written) CHECK(equal);
          else CHECK(untouched);
          rows_written += expect_written;
        }
        CHECK(rows_written <= std::size_t(used));
      }
    // fp8: rows and scales past the total untouched.
    test::device_buffer<__nv_fp8_e4m3> d_q(std::size_t(l.rows) * hidden);
    test::device_buffer<float> d_scales(static_cast<std::size_t>(l.rows));
    d_q.fill_bytes(0x7f);
    d_scales.fill_bytes(0x7f);
    FRUGAL_REQUIRE_OK(moe::permute_fp8(d_x.data(), moe::dispatch_maps{d_row_to_slot.data(), d_slot_to_row.data(), d_total.data()}, d_q.data(),
                                       d_scales.data(), shape));
    test::synchronize();
    const auto q = d_q.download();
    const auto scales = d_scales.download();
    for (std::int64_t r = used; r < l.rows; ++r) {
      std::uint32_t bits;
      std::memcpy(&bits, &scales[std::size_t(r)], 4);
      CHECK(bits == 0x7f7f7f7fu);
      for (int h = 0; h < hidden; ++h) CHECK(q[std::size_t(r * hidden + h)].__x == 0x7f);
    }
    // combine and the weight gradient ignore a slot whose row lies past the total (a stale map).
    auto slot_to_row = l.plan.slot_to_row;
    slot_to_row[0] = std::int32_t(l.rows - 1);  // a row the plan did not use
    test::device_buffer<std::int32_t> d_stale(slot_to_row);
    const auto y = random_rows<T>(l.rows, hidden, rng);
    test::device_buffer<T> d_y(y), d_out(std::size_t(tokens) * hidden), d_out_clean(std::size_t(tokens) * hidden);
    test::device_buffer<float> d_w(l.weights), d_dw(static_cast<std::size_t>(tokens * k));
    auto clean = l.plan.slot_to_row;
    clean[0] = -1;
    test::device_buffer<std::int32_t> d_clean(clean);
    FRUGAL_REQUIRE_OK(moe::combine(d_y.data(), moe::dispatch_maps{d_row_to_slot.data(), d_stale.data(), d_total.data()}, d_w.data(), nullptr,
                                   d_out.data(), shape));
    FRUGAL_REQUIRE_OK(moe::combine(d_y.data(), moe::dispatch_maps{d_row_to_slot.data(), d_clean.data()}, d_w.data(), nullptr,
                                   d_out_clean.data(), shape));
    FRUGAL_REQUIRE_OK(moe::combine_backward(d_out.data(), d_y.data(), moe::dispatch_maps{d_row_to_slot.data(), d_stale.data(), d_total.data()},
                                            nullptr, nullptr, d_dw.data(), shape));
    test::synchronize();
    CHECK(same_bits(d_out.download(), d_out_clean.download()));
    CHECK(d_dw.download()[0] == 0.0f);
  }
}

// bf16 and fp16 routing weights in combine and its backward: the same bits as fp32 weights
// holding the same values.
TEST_CASE("combine / combine_backward: bf16 and fp16 routing weights") {
  using T = __nv_bfloat16;
  FRUGAL_SEEDED_RNG(rng, 91);
  moe::plan_params params;
  params.block_size = 4;
  const std::int64_t tokens = 37;
  const int k = 4, experts = 16, hidden = 32;
  const auto l = make_layout(tokens, k, experts, params, rng);
  const moe::dispatch_shape shape{tokens, k, hidden, l.rows};
  const auto y = random_rows<T>(l.rows, hidden, rng), g = random_rows<T>(tokens, hidden, rng);
  test::device_buffer<T> d_y(y), d_g(g);
  test::device_buffer<std::int32_t> d_row_to_slot(l.plan.row_to_slot), d_slot_to_row(l.plan.slot_to_row);
  const moe::dispatch_maps maps{d_row_to_slot.data(), d_slot_to_row.data()};
  std::vector<__nv_bfloat16> w16(l.weights.size());
  std::vector<__half> wh(l.weights.size());
  std::vector<float> w_bf(l.weights.size()), w_h(l.weights.size());
  for (std::size_t i = 0; i < w16.size(); ++i) {
    w16[i] = from_float<__nv_bfloat16>(l.weights[i]);
    wh[i] = from_float<__half>(l.weights[i]);
    w_bf[i] = to_float(w16[i]);
    w_h[i] = to_float(wh[i]);
  }
  test::device_buffer<__nv_bfloat16> d_w16(w16);
  test::device_buffer<__half> d_wh(wh);
  test::device_buffer<float> d_wbf(w_bf), d_wf(w_h);
  auto run = [&](auto* weights, test::device_buffer<T>& out, test::device_buffer<T>& dy, test::device_buffer<float>& dw) {
    FRUGAL_REQUIRE_OK(moe::combine(d_y.data(), maps, weights, nullptr, out.data(), shape));
    FRUGAL_REQUIRE_OK(moe::combine_backward(d_g.data(), d_y.data(), maps, weights, dy.data(), dw.data(), shape));
  };
  for (int which = 0; which < 2; ++which) {
    test::device_buffer<T> out_a(std::size_t(tokens) * hidden), out_b(out_a.size()), dy_a(std::size_t(l.rows) * hidden), dy_b(dy_a.size());
    test::device_buffer<float> dw_a(static_cast<std::size_t>(tokens * k)), dw_b(dw_a.size());
    if (which == 0) {
      run(d_w16.data(), out_a, dy_a, dw_a);
      run(d_wbf.data(), out_b, dy_b, dw_b);
    } else {
      run(d_wh.data(), out_a, dy_a, dw_a);
      run(d_wf.data(), out_b, dy_b, dw_b);
    }
    test::synchronize();
    CHECK(same_bits(out_a.download(), out_b.download()));
    CHECK(same_bits(dy_a.download(), dy_b.download()));
    CHECK(same_bits(dw_a.download(), dw_b.download()));
  }
}

// SPDX-License-Identifier: Apache-2.0
// The fused backward of InfoNCE and CLIP against the fp64 references: every gradient (rows,
// columns, log-scale) for bf16, fp16 and fp32 (tf32) inputs, float and bf16 gradients, tile edges,
// D over one 256-wide slice, a rank offset, label smoothing, fused normalisation (a zero row
// included), an upstream gradient, a clamped log-scale; bit for bit run to run.
#include <frugal/contrast/infonce.cuh>
#include <frugal/reference/contrastive.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "support/contrast_support.hpp"
#include "support/test_support.hpp"

using namespace frugal;
using frugal::test::random_rows;
using frugal::test::relative_error;
using frugal::test::same_bits;

namespace {

// The same over a gradient [rows, dim] with one row apart (a zero row under normalisation, whose
// gradient is 1 / eps = 1e12 times larger): the rest, and that row on its own scale.
template <class G>
double relative_error_apart(const std::vector<G>& got, const std::vector<double>& want, int dim, std::int64_t apart) {
  const auto d = std::size_t(dim), r = std::size_t(apart);
  if (apart < 0 || want.size() < (r + 1) * d) return relative_error(got, want);
  double e = relative_error(got, want, r * d, (r + 1) * d);
  std::vector<G> g2(got);
  std::vector<double> w2(want);
  g2.erase(g2.begin() + std::ptrdiff_t(r * d), g2.begin() + std::ptrdiff_t((r + 1) * d));
  w2.erase(w2.begin() + std::ptrdiff_t(r * d), w2.begin() + std::ptrdiff_t((r + 1) * d));
  const double rest = relative_error(g2, w2);
  return std::isnan(e) || std::isnan(rest) ? INFINITY : std::max(e, rest);
}

template <class G>
struct backward_result {
  std::vector<G> d_rows, d_cols;
  float d_log_scale = 0.0f;
};

// Runs infonce_forward for the statistics, then infonce_backward.
template <class T, class G>
backward_result<G> run_infonce(const test::device_buffer<T>& x, const test::device_buffer<T>& y, const contrast::contrast_shape& shape,
                               const contrast::logit_options& o, const contrast::softmax_options& so, float upstream) {
  const auto n = std::size_t(shape.rows), m = std::size_t(shape.cols), d = std::size_t(shape.dim);
  test::device_buffer<float> loss(1), lse(n), up(std::vector<float>{upstream}), d_scale(1);
  std::size_t bytes = 0;
  FRUGAL_REQUIRE_OK(contrast::infonce_forward(nullptr, bytes, x.data(), y.data(), contrast::infonce_outputs{loss.data(), lse.data()}, shape, o, so));
  test::device_buffer<unsigned char> ws(bytes);
  FRUGAL_REQUIRE_OK(contrast::infonce_forward(ws.data(), bytes, x.data(), y.data(), contrast::infonce_outputs{loss.data(), lse.data()}, shape, o, so));
  test::device_buffer<G> d_rows(n * d), d_cols(m * d);
  const contrast::contrast_gradients<G> grads{d_rows.data(), d_cols.data(), d_scale.data()};
  FRUGAL_REQUIRE_OK(contrast::infonce_backward(nullptr, bytes, x.data(), y.data(), lse.data(), up.data(), grads, shape, o, so));
  test::device_buffer<unsigned char> ws2(bytes);
  FRUGAL_REQUIRE_OK(contrast::infonce_backward(ws2.data(), bytes, x.data(), y.data(), lse.data(), up.data(), grads, shape, o, so));
  test::synchronize();
  return {d_rows.download(), d_cols.download(), d_scale.download()[0]};
}

// G rounded to the input type before its product (as FlashAttention's backward does) bounds the
// error at about 2^-8 (bf16) or 2^-11 (fp16, tf32) of the gradient's scale, plus the fp32 sums.
template <class T, class G>
double gradient_tolerance() {
  return std::is_same_v<T, __nv_bfloat16> || std::is_same_v<G, __nv_bfloat16> ? 1.5e-2 : 4e-3;
}

template <class T, class G = float>
void check_infonce_backward(std::int64_t n, std::int64_t m, int dim, std::int64_t offset, float smoothing, bool normalize, float upstream,
                            unsigned long long seed, float log_scale = 2.6592600f, bool shared_direction = false, double tolerance = 0.0) {
  FRUGAL_SEEDED_RNG(rng, seed);
  INFO(type_name<T>() << " -> " << type_name<G>() << " N " << n << " M " << m << " D " << dim << " offset " << offset << " eps " << smoothing
                      << " normalize " << normalize << " upstream " << upstream << " log_scale " << log_scale);
  // Unnormalised rows of norm about 1 (normalize on: norms far from 1, one row all zeros).
  auto x = random_rows<T>(n, dim, normalize ? 0.7f : 1.0f / std::sqrt(float(dim)), rng);
  auto y = random_rows<T>(m, dim, normalize ? 1.3f : 1.0f / std::sqrt(float(dim)), rng);
  if (shared_direction) {  // every row leans the same way: the negatives' terms add up instead of cancelling
    const auto common = random_rows<float>(1, dim, 1.0f / std::sqrt(float(dim)), rng);
    for (auto* v : {&x, &y})
      for (std::size_t i = 0; i < v->size(); ++i) (*v)[i] = from_float<T>(to_float((*v)[i]) + common[i % std::size_t(dim)]);
  }
  if (normalize && n > 2)
    for (int k = 0; k < dim; ++k) x[std::size_t(2 * dim + k)] = from_float<T>(0.0f);
  contrast::logit_options o;
  o.log_scale = log_scale;
  o.normalize = normalize;
  contrast::softmax_options so;
  so.row_offset = offset;
  so.label_smoothing = smoothing;
  const auto ref = reference::infonce(x.data(), n, y.data(), m, dim, o, so, double(upstream));
  test::device_buffer<T> d_x(x), d_y(y);
  const contrast::contrast_shape shape{n, m, dim};
  const auto got = run_infonce<T, G>(d_x, d_y, shape, o, so, upstream);
  const double tol = tolerance > 0.0 ? tolerance : gradient_tolerance<T, G>();
  const std::int64_t zero_row = normalize && n > 2 ? 2 : -1;
  CHECK(relative_error_apart(got.d_rows, ref.d_rows, dim, zero_row) <= tol);
  CHECK(relative_error(got.d_cols, ref.d_cols) <= tol);
  CHECK(std::abs(got.d_log_scale - ref.d_log_scale) <= tol * (1e-3 + std::abs(ref.d_log_scale)));
  const auto again = run_infonce<T, G>(d_x, d_y, shape, o, so, upstream);
  CHECK(same_bits(again.d_rows, got.d_rows));
  CHECK(same_bits(again.d_cols, got.d_cols));
  CHECK(std::memcmp(&again.d_log_scale, &got.d_log_scale, sizeof(float)) == 0);
}

}  // namespace

TEST_CASE("infonce_backward: every gradient against the fp64 reference, bf16 / fp16 / fp32 (tf32), tile edges, offset, smoothing") {
  check_infonce_backward<__nv_bfloat16>(97, 150, 40, 20, 0.0f, false, 1.0f, 11);  // partial tiles both ways
  check_infonce_backward<__half>(130, 200, 36, 70, 0.1f, false, 2.5f, 12);        // element loads, smoothing, upstream
  check_infonce_backward<float>(80, 129, 32, 49, 0.0f, false, 1.0f, 13);          // tf32
  check_infonce_backward<__nv_bfloat16, __nv_bfloat16>(64, 64, 128, 0, 0.0f, false, 1.0f, 14);  // one tile, bf16 gradients
  check_infonce_backward<__nv_bfloat16>(1, 1, 8, 0, 0.0f, false, 1.0f, 15);       // one pair: every gradient 0
  check_infonce_backward<__nv_bfloat16>(101, 131, 37, 13, 0.0f, true, 1.0f, 16);  // N, M and D prime
}

TEST_CASE("infonce_backward: D over one 256-wide slice, fused normalisation with a zero row, a clamped log-scale") {
  check_infonce_backward<__nv_bfloat16>(70, 90, 300, 5, 0.0f, false, 1.0f, 21);   // two slices, the second 44 wide
  check_infonce_backward<__half>(100, 140, 72, 10, 0.05f, true, 1.0f, 22);        // normalised, row 2 all zeros
  check_infonce_backward<float>(33, 65, 20, 0, 0.0f, true, 0.5f, 23);
  check_infonce_backward<__half>(40, 40, 64, 0, 0.0f, false, 1.0f, 24, 5.0f);      // above ln 100: clamped, no log-scale gradient
}

TEST_CASE("infonce_backward: fp16 at 600 x 700 with rows sharing a direction, where G ~ 1 / (N M) would be subnormal in fp16 unless scaled") {
  // Measured 2.1e-4 with G scaled, 6.8e-4 without: the bound separates the two.
  check_infonce_backward<__half>(600, 700, 32, 50, 0.0f, false, 1.0f, 25, 2.6592600f, true, 4e-4);
}

TEST_CASE("clip_backward: both gradients and the log-scale against the fp64 reference") {
  struct clip_case {
    std::int64_t n;
    int dim;
    bool normalize;
    float smoothing;
    unsigned long long seed;
  };
  // 2048 x 2048: 32 x 32 tiles each way (the fused passes cross a thousand tile pairs).
  for (const clip_case c : {clip_case{150, 48, false, 0.05f, 31}, clip_case{129, 264, true, 0.0f, 32}, clip_case{1, 16, false, 0.0f, 33},
                            clip_case{2048, 64, true, 0.0f, 34}}) {
    FRUGAL_SEEDED_RNG(rng, c.seed);
    INFO("N " << c.n << " D " << c.dim << " normalize " << c.normalize);
    const std::int64_t n = c.n;
    const int dim = c.dim;
    const auto x = random_rows<__nv_bfloat16>(n, dim, 0.3f, rng), y = random_rows<__nv_bfloat16>(n, dim, 0.3f, rng);
    contrast::logit_options o;
    o.normalize = c.normalize;
    o.log_scale = c.normalize ? 2.6592600f : 1.0f;
    contrast::softmax_options so;
    so.label_smoothing = c.smoothing;
    const auto ref = reference::clip(x.data(), y.data(), n, dim, o, so);
    test::device_buffer<__nv_bfloat16> d_x(x), d_y(y);
    const auto un = std::size_t(n), ud = std::size_t(dim);
    test::device_buffer<float> loss(1), row_lse(un), col_lse(un), d_rows(un * ud), d_cols(un * ud), d_scale(1);
    std::size_t bytes = 0;
    const contrast::clip_outputs out{loss.data(), row_lse.data(), col_lse.data()};
    FRUGAL_REQUIRE_OK(contrast::clip_forward(nullptr, bytes, d_x.data(), d_y.data(), out, n, dim, o, so));
    test::device_buffer<unsigned char> ws(bytes);
    FRUGAL_REQUIRE_OK(contrast::clip_forward(ws.data(), bytes, d_x.data(), d_y.data(), out, n, dim, o, so));
    const contrast::contrast_gradients<float> grads{d_rows.data(), d_cols.data(), d_scale.data()};
    FRUGAL_REQUIRE_OK(contrast::clip_backward(nullptr, bytes, d_x.data(), d_y.data(), row_lse.data(), col_lse.data(), nullptr, grads, n, dim, o, so));
    test::device_buffer<unsigned char> ws2(bytes);
    FRUGAL_REQUIRE_OK(contrast::clip_backward(ws2.data(), bytes, d_x.data(), d_y.data(), row_lse.data(), col_lse.data(), nullptr, grads, n, dim, o, so));
    test::synchronize();
    CHECK(std::abs(loss.download()[0] - ref.loss) <= 1e-4 * (1.0 + std::abs(ref.loss)));
    CHECK(relative_error(d_rows.download(), ref.d_rows) <= 1.5e-2);
    CHECK(relative_error(d_cols.download(), ref.d_cols) <= 1.5e-2);
    CHECK(std::abs(d_scale.download()[0] - ref.d_log_scale) <= 1.5e-2 * (1e-3 + std::abs(ref.d_log_scale)));
  }
}

TEST_CASE("infonce_backward and clip_backward: argument checks") {
  test::device_buffer<__nv_bfloat16> x(64), y(64);
  test::device_buffer<float> lse(8), d_rows(64), d_cols(64), d_bias(1);
  std::size_t bytes = 0;
  const contrast::contrast_gradients<float> grads{d_rows.data(), d_cols.data()};
  FRUGAL_REQUIRE_OK(contrast::infonce_backward(nullptr, bytes, x.data(), y.data(), lse.data(), nullptr, grads, {4, 8, 8}));
  test::device_buffer<unsigned char> ws(bytes);
  CHECK(contrast::infonce_backward(ws.data(), bytes, x.data(), y.data(), static_cast<const float*>(nullptr), nullptr, grads, {4, 8, 8}).code() ==
        errc::invalid_argument);  // no statistics
  CHECK(contrast::infonce_backward(ws.data(), bytes, x.data(), y.data(), lse.data(), nullptr, contrast::contrast_gradients<float>{}, {4, 8, 8})
            .code() == errc::invalid_argument);  // no d_rows
  CHECK(std::strstr(contrast::infonce_backward(ws.data(), bytes, x.data(), y.data(), lse.data(), nullptr,
                                               contrast::contrast_gradients<float>{d_rows.data(), nullptr, nullptr, d_bias.data()}, {4, 8, 8})
                        .message(),
                    "SigLIP") != nullptr);
  CHECK(contrast::infonce_backward(ws.data(), bytes, x.data(), y.data(), lse.data(), nullptr,
                                   contrast::contrast_gradients<float>{reinterpret_cast<float*>(lse.data()), nullptr}, {4, 8, 8})
            .code() == errc::invalid_argument);  // d_rows over the statistics
  CHECK(contrast::clip_backward(ws.data(), bytes, x.data(), y.data(), lse.data(), lse.data(), nullptr,
                                contrast::contrast_gradients<float>{d_rows.data(), nullptr}, 4, 8)
            .code() == errc::invalid_argument);  // CLIP needs both gradients
}

// SPDX-License-Identifier: Apache-2.0
// The fused InfoNCE forward against the fp64 reference: bf16, fp16 and fp32 (tf32) inputs,
// shapes crossing 64 x 64 tiles and their edges, a rank offset, label smoothing, one row;
// determinism bit for bit; the argument checks; CLIP's symmetric forward.
#include <frugal/contrast/infonce.cuh>
#include <frugal/reference/contrastive.hpp>

#include <cmath>
#include <cstring>

#include "support/test_support.hpp"

using namespace frugal;

namespace {

// Unit rows (the usual CLIP embeddings), rounded to T.
template <class T>
std::vector<T> unit_rows(std::int64_t rows, int dim, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<T> v(std::size_t(rows * dim));
  std::vector<float> row(static_cast<std::size_t>(dim));
  for (std::int64_t r = 0; r < rows; ++r) {
    float sq = 0.0f;
    for (auto& e : row) {
      e = normal(rng);
      sq += e * e;
    }
    for (int k = 0; k < dim; ++k) v[std::size_t(r * dim + k)] = from_float<T>(row[std::size_t(k)] / std::sqrt(sq));
  }
  return v;
}

struct forward_result {
  std::vector<float> loss, row_lse, row_loss, accuracy;
};

template <class T>
forward_result run_forward(const test::device_buffer<T>& x, const test::device_buffer<T>& y, const contrast::contrast_shape& shape,
                           const contrast::logit_options& o, const contrast::softmax_options& so) {
  test::device_buffer<float> loss(1), lse(std::size_t(shape.rows)), row_loss(std::size_t(shape.rows)), accuracy(1);
  std::size_t bytes = 0;
  const contrast::infonce_outputs out{loss.data(), lse.data(), row_loss.data(), accuracy.data()};
  FRUGAL_REQUIRE_OK(contrast::infonce_forward(nullptr, bytes, x.data(), y.data(), out, shape, o, so));
  test::device_buffer<unsigned char> workspace(bytes);
  FRUGAL_REQUIRE_OK(contrast::infonce_forward(workspace.data(), bytes, x.data(), y.data(), out, shape, o, so));
  test::synchronize();
  return {loss.download(), lse.download(), row_loss.download(), accuracy.download()};
}

template <class T>
void check_infonce(std::int64_t n, std::int64_t m, int dim, std::int64_t offset, float smoothing, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  INFO(std::string(type_name<T>()) << " N " << n << " M " << m << " D " << dim << " offset " << offset << " eps " << smoothing);
  const auto x = unit_rows<T>(n, dim, rng), y = unit_rows<T>(m, dim, rng);
  contrast::logit_options o;  // CLIP's initial scale, 1 / 0.07
  contrast::softmax_options so;
  so.row_offset = offset;
  so.label_smoothing = smoothing;
  const auto ref = reference::infonce(x.data(), n, y.data(), m, dim, o, so);
  test::device_buffer<T> d_x(x), d_y(y);
  const contrast::contrast_shape shape{n, m, dim};
  const auto got = run_forward(d_x, d_y, shape, o, so);
  // fp32 accumulation of exactly representable products (bf16, fp16); tf32 rounds fp32 inputs
  // to 11 bits, so the logits move by up to about scale * 2^-10.
  const double tolerance = std::is_same_v<T, float> ? 2e-2 : 1e-4;
  CHECK(std::abs(got.loss[0] - ref.loss) <= tolerance * (1.0 + std::abs(ref.loss)));
  for (std::int64_t i = 0; i < n; ++i) {
    const double r = ref.row_loss[std::size_t(i)];
    if (std::abs(got.row_loss[std::size_t(i)] - r) > tolerance * (1.0 + std::abs(r))) FAIL("row " << i << " loss " << got.row_loss[std::size_t(i)] << " vs " << r);
  }
  if (!std::is_same_v<T, float>) CHECK(got.accuracy[0] == doctest::Approx(ref.row_accuracy).epsilon(1e-6));
  // bit for bit run to run
  const auto again = run_forward(d_x, d_y, shape, o, so);
  CHECK(std::memcmp(again.row_lse.data(), got.row_lse.data(), got.row_lse.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(again.loss.data(), got.loss.data(), sizeof(float)) == 0);
}

}  // namespace

TEST_CASE("infonce_forward: against the fp64 reference, bf16 / fp16 / fp32 (tf32), tile edges, rank offset, label smoothing") {
  check_infonce<__nv_bfloat16>(97, 150, 40, 20, 0.0f, 1);    // partial tiles both ways, 16-byte rows
  check_infonce<__nv_bfloat16>(130, 200, 36, 70, 0.1f, 2);   // rows not whole 16-byte chunks: element loads
  check_infonce<__half>(64, 64, 128, 0, 0.0f, 3);            // exactly one tile
  check_infonce<__half>(300, 300, 64, 0, 0.1f, 4);           // CLIP's square case, several tiles
  check_infonce<float>(80, 129, 32, 49, 0.0f, 5);
  check_infonce<__nv_bfloat16>(1, 1, 8, 0, 0.0f, 6);         // one pair: loss 0
}

TEST_CASE("clip_forward: the symmetric loss and both accuracies against the fp64 reference") {
  struct clip_case {
    std::int64_t n;
    int dim;
    unsigned long long seed;
  };
  for (const clip_case c : {clip_case{150, 48, 7}, clip_case{64, 128, 8}, clip_case{1, 16, 9}}) {
    const std::int64_t n = c.n;
    const int dim = c.dim;
    FRUGAL_SEEDED_RNG(rng, c.seed);
    INFO("N " << n << " D " << dim);
    const auto x = unit_rows<__nv_bfloat16>(n, dim, rng), y = unit_rows<__nv_bfloat16>(n, dim, rng);
    contrast::logit_options o;
    o.log_scale = 3.0f;
    contrast::softmax_options so;
    so.label_smoothing = 0.05f;
    const auto ref = reference::clip(x.data(), y.data(), n, dim, o, so);
    test::device_buffer<__nv_bfloat16> d_x(x), d_y(y);
    test::device_buffer<float> loss(1), row_lse(static_cast<std::size_t>(n)), col_lse(static_cast<std::size_t>(n)), acc(2);
    std::size_t bytes = 0;
    const contrast::clip_outputs out{loss.data(), row_lse.data(), col_lse.data(), acc.data(), acc.data() + 1};
    FRUGAL_REQUIRE_OK(contrast::clip_forward(nullptr, bytes, d_x.data(), d_y.data(), out, n, dim, o, so));
    test::device_buffer<unsigned char> ws(bytes);
    FRUGAL_REQUIRE_OK(contrast::clip_forward(ws.data(), bytes, d_x.data(), d_y.data(), out, n, dim, o, so));
    test::synchronize();
    CHECK(std::abs(loss.download()[0] - ref.loss) <= 1e-4 * (1.0 + std::abs(ref.loss)));
    const auto a = acc.download();
    CHECK(a[0] == doctest::Approx(ref.row_accuracy).epsilon(1e-6));
    CHECK(a[1] == doctest::Approx(ref.col_accuracy).epsilon(1e-6));
    // the column statistics are the row statistics of Z^T
    const auto forward_t = run_forward(d_y, d_x, contrast::contrast_shape{n, n, dim}, o, so);
    CHECK(std::memcmp(forward_t.row_lse.data(), col_lse.download().data(), std::size_t(n) * sizeof(float)) == 0);
  }
}

TEST_CASE("infonce_forward: argument checks") {
  test::device_buffer<__nv_bfloat16> x(64), y(64);
  test::device_buffer<float> loss(1);
  std::size_t bytes = 0;
  const contrast::infonce_outputs out{loss.data()};
  FRUGAL_REQUIRE_OK(contrast::infonce_forward(nullptr, bytes, x.data(), y.data(), out, {4, 8, 8}));
  test::device_buffer<unsigned char> ws(bytes);
  contrast::softmax_options so;
  so.row_offset = 5;  // rows 0..3 need columns 5..8: one past the end
  CHECK(std::strstr(contrast::infonce_forward(ws.data(), bytes, x.data(), y.data(), out, {4, 8, 8}, {}, so).message(), "row_offset") != nullptr);
  contrast::logit_options o;
  o.bias = 1.0f;  // SigLIP's
  CHECK(std::strstr(contrast::infonce_forward(ws.data(), bytes, x.data(), y.data(), out, {4, 8, 8}, o).message(), "bias") != nullptr);
  o = {};
  o.log_scale = NAN;
  CHECK(contrast::infonce_forward(ws.data(), bytes, x.data(), y.data(), out, {4, 8, 8}, o).code() == errc::invalid_argument);
  CHECK(contrast::infonce_forward(ws.data(), bytes, x.data(), y.data(), contrast::infonce_outputs{}, {4, 8, 8}).code() == errc::invalid_argument);
  CHECK(contrast::infonce_forward(ws.data(), bytes, x.data(), y.data(), contrast::infonce_outputs{reinterpret_cast<float*>(x.data())},
                                  {4, 8, 8}).code() == errc::invalid_argument);  // the loss over the rows
  // no rows: the loss is 0
  FRUGAL_REQUIRE_OK(contrast::infonce_forward(ws.data(), bytes, x.data(), y.data(), out, {0, 8, 8}));
  test::synchronize();
  CHECK(loss.download()[0] == 0.0f);
}

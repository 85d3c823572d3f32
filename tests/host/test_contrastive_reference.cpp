// SPDX-License-Identifier: Apache-2.0
// The contrastive references (frugal/reference/contrastive.hpp) checked against themselves by
// central finite differences in double: every input of every loss (rows, columns, the
// log-scale, the SigLIP bias), with and without normalisation, on random data and on the
// adversarial cases (duplicates, a zero vector, N = 1, scale 100, one class, no positives, an
// empty queue); and the closed forms the docs state.
#include <frugal/reference/contrastive.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

using namespace frugal;

namespace {

std::vector<double> random_matrix(std::int64_t rows, int d, std::mt19937_64& rng, double spread = 1.0) {
  std::normal_distribution<double> normal(0.0, spread);
  std::vector<double> v(std::size_t(rows * d));
  for (auto& x : v) x = normal(rng);
  return v;
}

// |analytic - numeric| <= 1e-6 * (1 + |numeric|) for each entry; h = 1e-5 (central differences
// of a smooth function in double: truncation about h^2, rounding about 1e-16 / h).
void check_gradient(const std::vector<double>& analytic, std::vector<double>& input, const std::function<double()>& loss,
                    const char* what) {
  REQUIRE(analytic.size() == input.size());
  for (std::size_t k = 0; k < input.size(); ++k) {
    const double keep = input[k], h = 1e-5;
    input[k] = keep + h;
    const double up = loss();
    input[k] = keep - h;
    const double down = loss();
    input[k] = keep;
    const double numeric = (up - down) / (2 * h);
    INFO(what << "[" << k << "] analytic " << analytic[k] << " numeric " << numeric);
    CHECK(std::abs(analytic[k] - numeric) <= 1e-6 * (1.0 + std::abs(numeric)));
  }
}

void check_scalar(double analytic, float& parameter, const std::function<double()>& loss, const char* what) {
  // The options are float: step in float and divide by the step actually taken.
  const float keep = parameter, h = 1e-3f;
  parameter = keep + h;
  const double up = loss();
  parameter = keep - h;
  const double down = loss();
  parameter = keep;
  const double numeric = (up - down) / (double(keep + h) - double(keep - h));
  INFO(what << " analytic " << analytic << " numeric " << numeric);
  CHECK(std::abs(analytic - numeric) <= 2e-5 * (1.0 + std::abs(numeric)));
}

contrast::logit_options options(bool normalize, float log_scale = 1.2f) {
  contrast::logit_options o;
  o.normalize = normalize;
  o.log_scale = log_scale;
  return o;
}

}  // namespace

TEST_CASE("contrastive reference: InfoNCE gradients by finite differences (rows, columns, log-scale), label smoothing, rank offset") {
  std::mt19937_64 rng(1);
  for (bool normalize : {false, true})
    for (float eps : {0.0f, 0.1f}) {
      const std::int64_t n = 4, m = 7;
      const int d = 3;
      auto x = random_matrix(n, d, rng), y = random_matrix(m, d, rng);
      auto o = options(normalize);
      contrast::softmax_options so;
      so.label_smoothing = eps;
      so.row_offset = 2;  // a rank holding rows 2..5 of the gathered batch
      const auto r = reference::infonce(x.data(), n, y.data(), m, d, o, so, 1.5);
      auto loss = [&] { return 1.5 * reference::infonce(x.data(), n, y.data(), m, d, o, so).loss; };
      check_gradient(r.d_rows, x, loss, "d_rows");
      check_gradient(r.d_cols, y, loss, "d_cols");
      check_scalar(r.d_log_scale, o.log_scale, loss, "d_log_scale");
      double sum = 0.0;
      for (double v : r.row_loss) sum += v;
      CHECK(r.loss == doctest::Approx(sum / double(n)).epsilon(1e-12));
    }
}

TEST_CASE("contrastive reference: CLIP gradients by finite differences, and CLIP = the mean of InfoNCE both ways") {
  std::mt19937_64 rng(2);
  for (bool normalize : {false, true}) {
    const std::int64_t n = 5;
    const int d = 4;
    auto x = random_matrix(n, d, rng), y = random_matrix(n, d, rng);
    auto o = options(normalize, 2.0f);
    const auto r = reference::clip(x.data(), y.data(), n, d, o);
    auto loss = [&] { return reference::clip(x.data(), y.data(), n, d, o).loss; };
    check_gradient(r.d_rows, x, loss, "d_rows");
    check_gradient(r.d_cols, y, loss, "d_cols");
    check_scalar(r.d_log_scale, o.log_scale, loss, "d_log_scale");
    const auto a = reference::infonce(x.data(), n, y.data(), n, d, o), b = reference::infonce(y.data(), n, x.data(), n, d, o);
    CHECK(r.loss == doctest::Approx((a.loss + b.loss) / 2).epsilon(1e-12));
    for (std::size_t k = 0; k < r.d_rows.size(); ++k) CHECK(r.d_rows[k] == doctest::Approx((a.d_rows[k] + b.d_cols[k]) / 2).epsilon(1e-10));
  }
}

TEST_CASE("contrastive reference: NT-Xent, SigLIP (with its bias), SupCon and MoCo gradients by finite differences") {
  std::mt19937_64 rng(3);
  for (bool normalize : {false, true}) {
    const int d = 3;
    {
      auto z = random_matrix(6, d, rng);
      auto o = options(normalize);
      const auto r = reference::nt_xent(z.data(), 6, d, o);
      auto loss = [&] { return reference::nt_xent(z.data(), 6, d, o).loss; };
      check_gradient(r.d_rows, z, loss, "nt_xent d_views");
      check_scalar(r.d_log_scale, o.log_scale, loss, "nt_xent d_log_scale");
    }
    {
      auto x = random_matrix(3, d, rng), y = random_matrix(5, d, rng);
      auto o = options(normalize, 1.0f);
      o.bias = -2.0f;
      const auto r = reference::siglip(x.data(), 3, y.data(), 5, d, o, 1);
      auto loss = [&] { return reference::siglip(x.data(), 3, y.data(), 5, d, o, 1).loss; };
      check_gradient(r.d_rows, x, loss, "siglip d_rows");
      check_gradient(r.d_cols, y, loss, "siglip d_cols");
      check_scalar(r.d_log_scale, o.log_scale, loss, "siglip d_log_scale");
      check_scalar(r.d_bias, o.bias, loss, "siglip d_bias");
    }
    {
      auto x = random_matrix(7, d, rng);
      const std::vector<std::int32_t> labels{0, 1, 0, 2, 1, 0, 3};  // class 2 and 3: anchors without a positive
      auto o = options(normalize);
      const auto r = reference::supcon(x.data(), labels.data(), 7, d, o);
      auto loss = [&] { return reference::supcon(x.data(), labels.data(), 7, d, o).loss; };
      check_gradient(r.d_rows, x, loss, "supcon d_rows");
      check_scalar(r.d_log_scale, o.log_scale, loss, "supcon d_log_scale");
      CHECK(r.row_loss[3] == 0.0);
      CHECK(r.row_loss[6] == 0.0);
    }
    {
      auto q = random_matrix(4, d, rng), k = random_matrix(4, d, rng), queue = random_matrix(6, d, rng);
      auto o = options(normalize);
      const auto r = reference::moco(q.data(), k.data(), 4, queue.data(), 6, d, o);
      auto loss = [&] { return reference::moco(q.data(), k.data(), 4, queue.data(), 6, d, o).loss; };
      check_gradient(r.d_rows, q, loss, "moco d_queries");
      check_scalar(r.d_log_scale, o.log_scale, loss, "moco d_log_scale");
    }
  }
}

TEST_CASE("contrastive reference: adversarial cases") {
  std::mt19937_64 rng(4);
  const int d = 4;
  SUBCASE("N = 1: one pair; InfoNCE and CLIP are 0, SigLIP is softplus(-Z)") {
    auto x = random_matrix(1, d, rng), y = random_matrix(1, d, rng);
    const auto o = options(true);
    CHECK(reference::infonce(x.data(), 1, y.data(), 1, d, o).loss == 0.0);
    CHECK(reference::clip(x.data(), y.data(), 1, d, o).loss == 0.0);
    const auto s = reference::siglip(x.data(), 1, y.data(), 1, d, o);
    double xx = 0, yy = 0, xy = 0;
    for (int k = 0; k < d; ++k) {
      xx += x[std::size_t(k)] * x[std::size_t(k)];
      yy += y[std::size_t(k)] * y[std::size_t(k)];
      xy += x[std::size_t(k)] * y[std::size_t(k)];
    }
    const double z = std::exp(double(o.log_scale)) * xy / std::sqrt(xx * yy) + double(o.bias);
    CHECK(s.loss == doctest::Approx(std::log1p(std::exp(-z))).epsilon(1e-12));
    CHECK(reference::nt_xent(x.data(), 1, d, o).loss == 0.0);  // a single view has nothing to contrast with
  }
  SUBCASE("duplicate embeddings: exact ties, finite loss, the accuracy takes the first") {
    std::vector<double> x(std::size_t(4 * d), 0.5), y(std::size_t(4 * d), 0.5);
    const auto r = reference::clip(x.data(), y.data(), 4, d, options(false));
    CHECK(r.loss == doctest::Approx(std::log(4.0)).epsilon(1e-12));  // every logit equal: log N both ways
    CHECK(r.row_accuracy == 0.25);  // only row 0's first maximum is its own column
  }
  SUBCASE("a zero vector under normalisation: finite loss and gradients (F.normalize's eps)") {
    auto x = random_matrix(3, d, rng), y = random_matrix(3, d, rng);
    for (int k = 0; k < d; ++k) x[std::size_t(d + k)] = 0.0;
    const auto r = reference::clip(x.data(), y.data(), 3, d, options(true));
    CHECK(std::isfinite(r.loss));
    for (double v : r.d_rows) CHECK(std::isfinite(v));
  }
  SUBCASE("temperature 0.01 (scale 100, the clamp's limit): no overflow; above the clamp the log-scale takes no gradient") {
    auto x = random_matrix(6, d, rng), y = random_matrix(6, d, rng);
    auto o = options(true, 4.6051702f);
    const auto r = reference::clip(x.data(), y.data(), 6, d, o);
    CHECK(std::isfinite(r.loss));
    CHECK(r.d_log_scale != 0.0);
    o.log_scale = 6.0f;  // clamped to ln 100
    const auto clamped = reference::clip(x.data(), y.data(), 6, d, o);
    CHECK(clamped.d_log_scale == 0.0);
    CHECK(clamped.loss == doctest::Approx(r.loss).epsilon(1e-6));
  }
  SUBCASE("SupCon: one class (every other sample a positive), every sample its own class (loss 0)") {
    auto x = random_matrix(5, d, rng);
    const std::vector<std::int32_t> one(5, 7), own{0, 1, 2, 3, 4};
    const auto a = reference::supcon(x.data(), one.data(), 5, d, options(true));
    CHECK(std::isfinite(a.loss));
    CHECK(a.loss > 0.0);
    const auto b = reference::supcon(x.data(), own.data(), 5, d, options(true));
    CHECK(b.loss == 0.0);
    for (double v : b.d_rows) CHECK(v == 0.0);
  }
  SUBCASE("MoCo with an empty queue: the positive is the only logit, loss 0, no gradient") {
    auto q = random_matrix(3, d, rng), k = random_matrix(3, d, rng);
    const auto r = reference::moco(q.data(), k.data(), 3, static_cast<const double*>(nullptr), 0, d, options(true));
    CHECK(r.loss == 0.0);
    for (double v : r.d_rows) CHECK(v == 0.0);
    CHECK(r.row_accuracy == 1.0);
  }
}

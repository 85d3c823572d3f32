// SPDX-License-Identifier: Apache-2.0
// NT-Xent, SupCon, SigLIP and MoCo, fused forward and backward, against the fp64 references: the loss,
// per-row losses, accuracy, every gradient (rows, columns, log-scale, SigLIP bias); adversarial
// inputs (exact duplicates, one class, every sample its own class, a zero row under
// normalisation, N = 2 views, scale 100 with logits near 100, D over a 256 slice, sizes not tile
// multiples, an empty MoCo queue, a queue entry equal to the positive key); bit for bit run to run;
// argument checks.
#include <frugal/contrast/moco.cuh>
#include <frugal/contrast/self_supervised.cuh>
#include <frugal/contrast/siglip.cuh>
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

bool close(double got, double want, double tol) { return std::abs(got - want) <= tol * (1e-3 + std::abs(want)); }

// bf16 G before its product: about 2^-8 of the gradient's scale (docs/contrastive.md).
constexpr double gradient_tol = 1.5e-2;

struct self_result {
  float loss = 0.0f, accuracy = 0.0f, d_log_scale = 0.0f;
  std::vector<float> row_loss, d_rows;
};

self_result run_nt_xent(const test::device_buffer<__nv_bfloat16>& v, std::int64_t views, int dim, const contrast::logit_options& o) {
  const auto n = std::size_t(views);
  test::device_buffer<float> loss(1), acc(1), lse(n), row_loss(n), d_rows(n * std::size_t(dim)), d_scale(1);
  std::size_t bytes = 0;
  const contrast::infonce_outputs out{loss.data(), lse.data(), row_loss.data(), acc.data()};
  FRUGAL_REQUIRE_OK(contrast::nt_xent_forward(nullptr, bytes, v.data(), out, views, dim, o));
  test::device_buffer<unsigned char> ws(bytes);
  FRUGAL_REQUIRE_OK(contrast::nt_xent_forward(ws.data(), bytes, v.data(), out, views, dim, o));
  const contrast::contrast_gradients<float> grads{d_rows.data(), nullptr, d_scale.data()};
  FRUGAL_REQUIRE_OK(contrast::nt_xent_backward(nullptr, bytes, v.data(), lse.data(), nullptr, grads, views, dim, o));
  test::device_buffer<unsigned char> ws2(bytes);
  FRUGAL_REQUIRE_OK(contrast::nt_xent_backward(ws2.data(), bytes, v.data(), lse.data(), nullptr, grads, views, dim, o));
  test::synchronize();
  return {loss.download()[0], acc.download()[0], d_scale.download()[0], row_loss.download(), d_rows.download()};
}

self_result run_supcon(const test::device_buffer<__nv_bfloat16>& x, const test::device_buffer<std::int32_t>& labels, std::int64_t n, int dim,
                       const contrast::logit_options& o, float upstream) {
  const auto un = std::size_t(n);
  test::device_buffer<float> loss(1), lse(un), positives(un), row_loss(un), d_rows(un * std::size_t(dim)), d_scale(1), up(std::vector<float>{upstream});
  std::size_t bytes = 0;
  const contrast::supcon_outputs out{loss.data(), lse.data(), positives.data(), row_loss.data()};
  FRUGAL_REQUIRE_OK(contrast::supcon_forward(nullptr, bytes, x.data(), labels.data(), out, n, dim, o));
  test::device_buffer<unsigned char> ws(bytes);
  FRUGAL_REQUIRE_OK(contrast::supcon_forward(ws.data(), bytes, x.data(), labels.data(), out, n, dim, o));
  const contrast::contrast_gradients<float> grads{d_rows.data(), nullptr, d_scale.data()};
  FRUGAL_REQUIRE_OK(contrast::supcon_backward(nullptr, bytes, x.data(), labels.data(), lse.data(), positives.data(), up.data(), grads, n, dim, o));
  test::device_buffer<unsigned char> ws2(bytes);
  FRUGAL_REQUIRE_OK(contrast::supcon_backward(ws2.data(), bytes, x.data(), labels.data(), lse.data(), positives.data(), up.data(), grads, n, dim, o));
  test::synchronize();
  return {loss.download()[0], 0.0f, d_scale.download()[0], row_loss.download(), d_rows.download()};
}

void check_self(const self_result& got, const reference::contrast_result& ref, bool accuracy) {
  CHECK(close(got.loss, ref.loss, 1e-4));
  for (std::size_t i = 0; i < ref.row_loss.size(); ++i)
    if (!close(got.row_loss[i], ref.row_loss[i], 1e-4)) FAIL("row " << i << " loss " << got.row_loss[i] << " vs " << ref.row_loss[i]);
  if (accuracy) CHECK(got.accuracy == doctest::Approx(ref.row_accuracy).epsilon(1e-6));
  CHECK(relative_error(got.d_rows, ref.d_rows) <= gradient_tol);
  CHECK(close(got.d_log_scale, ref.d_log_scale, gradient_tol));
}

}  // namespace

TEST_CASE("nt_xent: forward and backward against the fp64 reference, tile edges, D over a slice, duplicates, normalised") {
  struct nt_case {
    std::int64_t views;
    int dim;
    bool normalize, duplicates;
    float log_scale;
    unsigned long long seed;
  };
  for (const nt_case c : {nt_case{2 * 75, 40, false, false, 1.0f, 41}, nt_case{2 * 33, 300, true, false, 2.6592600f, 42},
                          nt_case{2, 16, false, false, 1.0f, 43}, nt_case{2 * 40, 24, true, true, 4.6051702f, 44}}) {
    FRUGAL_SEEDED_RNG(rng, c.seed);
    INFO("views " << c.views << " D " << c.dim << " normalize " << c.normalize << " duplicates " << c.duplicates);
    auto v = random_rows<__nv_bfloat16>(c.views, c.dim, c.normalize ? 1.0f : 0.4f, rng);
    if (c.duplicates)  // every sample's two views equal, and samples 0 and 1 equal: exact ties
      for (std::int64_t i = 0; i < c.views / 2; ++i)
        for (int k = 0; k < c.dim; ++k) {
          const auto src = std::size_t((i == 1 ? 0 : i) * c.dim + k);
          v[std::size_t(i * c.dim + k)] = v[src];
          v[std::size_t((i + c.views / 2) * c.dim + k)] = v[src];
        }
    contrast::logit_options o;
    o.normalize = c.normalize;
    o.log_scale = c.log_scale;
    const auto ref = reference::nt_xent(v.data(), c.views, c.dim, o);
    test::device_buffer<__nv_bfloat16> d_v(v);
    const auto got = run_nt_xent(d_v, c.views, c.dim, o);
    check_self(got, ref, !c.duplicates);  // ties in fp32 may resolve differently than in double
    const auto again = run_nt_xent(d_v, c.views, c.dim, o);
    CHECK(same_bits(again.d_rows, got.d_rows));
    CHECK(std::memcmp(&again.loss, &got.loss, sizeof(float)) == 0);
  }
}

TEST_CASE("supcon: forward and backward against the fp64 reference, labels of many kinds, anchors without a positive") {
  struct sup_case {
    std::int64_t n;
    int dim, classes;
    bool normalize;
    unsigned long long seed;
  };
  // classes 0: every sample its own class (no positive anywhere: loss and gradients 0);
  // classes 1: one class (every other sample a positive).
  for (const sup_case c : {sup_case{150, 40, 7, false, 51}, sup_case{97, 72, 30, true, 52}, sup_case{70, 16, 1, false, 53},
                           sup_case{65, 16, 0, false, 54}, sup_case{1, 8, 1, false, 55}}) {
    FRUGAL_SEEDED_RNG(rng, c.seed);
    INFO("N " << c.n << " D " << c.dim << " classes " << c.classes << " normalize " << c.normalize);
    const auto x = random_rows<__nv_bfloat16>(c.n, c.dim, c.normalize ? 1.0f : 0.4f, rng);
    std::vector<std::int32_t> labels(std::size_t(c.n));
    std::uniform_int_distribution<int> pick(0, std::max(c.classes, 1) - 1);
    for (std::int64_t i = 0; i < c.n; ++i) labels[std::size_t(i)] = c.classes == 0 ? std::int32_t(1000 + i) : std::int32_t(pick(rng));
    contrast::logit_options o;
    o.normalize = c.normalize;
    o.log_scale = 1.5f;
    const auto ref = reference::supcon(x.data(), labels.data(), c.n, c.dim, o, 2.0);
    test::device_buffer<__nv_bfloat16> d_x(x);
    test::device_buffer<std::int32_t> d_labels(labels);
    const auto got = run_supcon(d_x, d_labels, c.n, c.dim, o, 2.0f);
    check_self(got, ref, false);
    if (c.classes == 0 || c.n == 1) {
      CHECK(got.loss == 0.0f);
      CHECK(std::all_of(got.d_rows.begin(), got.d_rows.end(), [](float g) { return g == 0.0f; }));
    }
    const auto again = run_supcon(d_x, d_labels, c.n, c.dim, o, 2.0f);
    CHECK(same_bits(again.d_rows, got.d_rows));
  }
}

TEST_CASE("siglip: forward, the backward with its forward riding along, every gradient and the bias against the fp64 reference") {
  struct sig_case {
    std::int64_t n, m, offset;
    int dim;
    bool normalize;
    float log_scale, bias;
    unsigned long long seed;
  };
  // open_clip's initial values (scale 10, bias -10); the clamp's top (scale 100, logits near 100).
  for (const sig_case c : {sig_case{97, 150, 20, 40, true, 2.3025851f, -10.0f, 61}, sig_case{130, 130, 0, 300, true, 4.6051702f, -5.0f, 62},
                           sig_case{64, 200, 100, 36, false, 1.0f, 0.5f, 63}, sig_case{1, 1, 0, 8, true, 2.3025851f, -10.0f, 64}}) {
    FRUGAL_SEEDED_RNG(rng, c.seed);
    INFO("N " << c.n << " M " << c.m << " offset " << c.offset << " D " << c.dim << " normalize " << c.normalize);
    const auto x = random_rows<__nv_bfloat16>(c.n, c.dim, c.normalize ? 1.0f : 0.3f, rng);
    const auto y = random_rows<__nv_bfloat16>(c.m, c.dim, c.normalize ? 1.0f : 0.3f, rng);
    contrast::logit_options o;
    o.normalize = c.normalize;
    o.log_scale = c.log_scale;
    o.bias = c.bias;
    const auto ref = reference::siglip(x.data(), c.n, y.data(), c.m, c.dim, o, c.offset, 0.5);
    test::device_buffer<__nv_bfloat16> d_x(x), d_y(y);
    const auto un = std::size_t(c.n), um = std::size_t(c.m), ud = std::size_t(c.dim);
    const contrast::contrast_shape shape{c.n, c.m, c.dim};
    // the forward alone
    test::device_buffer<float> loss(1), acc(1), row_loss(un);
    std::size_t bytes = 0;
    FRUGAL_REQUIRE_OK(contrast::siglip_forward(nullptr, bytes, d_x.data(), d_y.data(), contrast::siglip_outputs{loss.data()}, shape, o, c.offset));
    test::device_buffer<unsigned char> ws(bytes);
    FRUGAL_REQUIRE_OK(contrast::siglip_forward(ws.data(), bytes, d_x.data(), d_y.data(), contrast::siglip_outputs{loss.data(), row_loss.data(), acc.data()},
                                               shape, o, c.offset));
    test::synchronize();
    CHECK(close(loss.download()[0], ref.loss, 1e-4));
    CHECK(acc.download()[0] == doctest::Approx(ref.row_accuracy).epsilon(1e-6));
    const auto forward_rows = row_loss.download();
    for (std::size_t i = 0; i < un; ++i)
      if (!close(forward_rows[i], ref.row_loss[i] * 1.0, 1e-4)) FAIL("row " << i << " loss " << forward_rows[i] << " vs " << ref.row_loss[i]);
    // the backward, reporting the forward it rode along (upstream 0.5)
    test::device_buffer<float> d_rows(un * ud), d_cols(um * ud), d_scale(1), d_bias(1), up(std::vector<float>{0.5f}), loss2(1), acc2(1), rows2(un);
    const contrast::contrast_gradients<float> grads{d_rows.data(), d_cols.data(), d_scale.data(), d_bias.data()};
    const contrast::siglip_outputs report{loss2.data(), rows2.data(), acc2.data()};
    FRUGAL_REQUIRE_OK(contrast::siglip_backward(nullptr, bytes, d_x.data(), d_y.data(), up.data(), grads, report, shape, o, c.offset));
    test::device_buffer<unsigned char> ws2(bytes);
    FRUGAL_REQUIRE_OK(contrast::siglip_backward(ws2.data(), bytes, d_x.data(), d_y.data(), up.data(), grads, report, shape, o, c.offset));
    test::synchronize();
    CHECK(relative_error(d_rows.download(), ref.d_rows) <= gradient_tol);
    CHECK(relative_error(d_cols.download(), ref.d_cols) <= gradient_tol);
    CHECK(close(d_scale.download()[0], ref.d_log_scale, gradient_tol));
    CHECK(close(d_bias.download()[0], ref.d_bias, gradient_tol));
    // the forward that rode along is the forward's, bit for bit (same association order)
    CHECK(same_bits(rows2.download(), forward_rows));
    CHECK(loss2.download()[0] == loss.download()[0]);
    CHECK(acc2.download()[0] == acc.download()[0]);
    const auto first = d_cols.download();
    FRUGAL_REQUIRE_OK(contrast::siglip_backward(ws2.data(), bytes, d_x.data(), d_y.data(), up.data(), grads, report, shape, o, c.offset));
    test::synchronize();
    CHECK(same_bits(d_cols.download(), first));
  }
}

TEST_CASE("moco: forward and backward against the fp64 reference, an empty queue, a queued copy of the positive key") {
  struct moco_case {
    std::int64_t n, queued;
    int dim;
    bool normalize, copy_key;
    unsigned long long seed;
  };
  for (const moco_case c : {moco_case{70, 150, 40, true, false, 71}, moco_case{64, 0, 32, true, false, 72}, moco_case{33, 300, 300, true, true, 73},
                            moco_case{100, 129, 24, false, false, 74}}) {
    FRUGAL_SEEDED_RNG(rng, c.seed);
    INFO("N " << c.n << " queued " << c.queued << " D " << c.dim << " normalize " << c.normalize << " copy_key " << c.copy_key);
    const auto q = random_rows<__nv_bfloat16>(c.n, c.dim, c.normalize ? 1.0f : 0.3f, rng);
    const auto k = random_rows<__nv_bfloat16>(c.n, c.dim, c.normalize ? 1.0f : 0.3f, rng);
    auto queue = random_rows<__nv_bfloat16>(c.queued, c.dim, c.normalize ? 1.0f : 0.3f, rng);
    if (c.copy_key)  // queue row 5 = key 3: an exact tie with query 3's positive, which wins it
      for (int d = 0; d < c.dim; ++d) queue[std::size_t(5 * c.dim + d)] = k[std::size_t(3 * c.dim + d)];
    contrast::logit_options o;
    o.normalize = c.normalize;
    o.log_scale = c.normalize ? std::log(1.0f / 0.07f) : 1.0f;
    const auto ref = reference::moco(q.data(), k.data(), c.n, queue.data(), c.queued, c.dim, o, 1.5);
    test::device_buffer<__nv_bfloat16> d_q(q), d_k(k), d_queue(queue.empty() ? std::vector<__nv_bfloat16>(1) : queue);
    const auto un = std::size_t(c.n);
    const contrast::moco_shape shape{c.n, c.queued, c.dim};
    test::device_buffer<float> loss(1), acc(1), lse(un), row_loss(un), d_rows(un * std::size_t(c.dim)), d_scale(1), up(std::vector<float>{1.5f});
    const contrast::infonce_outputs out{loss.data(), lse.data(), row_loss.data(), acc.data()};
    std::size_t bytes = 0;
    FRUGAL_REQUIRE_OK(contrast::moco_forward(nullptr, bytes, d_q.data(), d_k.data(), d_queue.data(), out, shape, o));
    test::device_buffer<unsigned char> ws(bytes);
    FRUGAL_REQUIRE_OK(contrast::moco_forward(ws.data(), bytes, d_q.data(), d_k.data(), d_queue.data(), out, shape, o));
    const contrast::contrast_gradients<float> grads{d_rows.data(), nullptr, d_scale.data()};
    FRUGAL_REQUIRE_OK(contrast::moco_backward(nullptr, bytes, d_q.data(), d_k.data(), d_queue.data(), lse.data(), up.data(), grads, shape, o));
    test::device_buffer<unsigned char> ws2(bytes);
    FRUGAL_REQUIRE_OK(contrast::moco_backward(ws2.data(), bytes, d_q.data(), d_k.data(), d_queue.data(), lse.data(), up.data(), grads, shape, o));
    test::synchronize();
    CHECK(close(loss.download()[0], ref.loss, 1e-4));
    const auto rows = row_loss.download();
    for (std::size_t i = 0; i < un; ++i)
      if (!close(rows[i], ref.row_loss[i], 1e-4)) FAIL("row " << i << " loss " << rows[i] << " vs " << ref.row_loss[i]);
    CHECK(acc.download()[0] == doctest::Approx(ref.row_accuracy).epsilon(1e-6));
    const auto first = d_rows.download();
    CHECK(relative_error(first, ref.d_rows) <= gradient_tol);
    CHECK(close(d_scale.download()[0], ref.d_log_scale, gradient_tol));
    if (c.queued == 0) {
      CHECK(loss.download()[0] == 0.0f);
      CHECK(std::all_of(first.begin(), first.end(), [](float g) { return g == 0.0f; }));
    }
    FRUGAL_REQUIRE_OK(contrast::moco_backward(ws2.data(), bytes, d_q.data(), d_k.data(), d_queue.data(), lse.data(), up.data(), grads, shape, o));
    test::synchronize();
    CHECK(same_bits(d_rows.download(), first));
  }
}

TEST_CASE("nt_xent, supcon, siglip, moco: argument checks") {
  test::device_buffer<__nv_bfloat16> x(64);
  test::device_buffer<float> loss(1), lse(8), d_rows(64), d_cols(64);
  test::device_buffer<std::int32_t> labels(8);
  std::size_t bytes = 0;
  CHECK(std::strstr(contrast::nt_xent_forward(nullptr, bytes, x.data(), contrast::infonce_outputs{loss.data()}, 7, 8).message(), "even") != nullptr);
  FRUGAL_REQUIRE_OK(contrast::nt_xent_backward(nullptr, bytes, x.data(), lse.data(), nullptr, contrast::contrast_gradients<float>{d_rows.data()}, 8, 8));
  test::device_buffer<unsigned char> ws(bytes);
  CHECK(contrast::nt_xent_backward(ws.data(), bytes, x.data(), lse.data(), nullptr, contrast::contrast_gradients<float>{d_rows.data(), d_cols.data()}, 8, 8)
            .code() == errc::invalid_argument);  // the views' gradient is d_rows alone
  contrast::logit_options o;
  o.bias = 1.0f;
  CHECK(contrast::supcon_forward(nullptr, bytes, x.data(), labels.data(), contrast::supcon_outputs{loss.data()}, 8, 8, o).code() == errc::invalid_argument);
  FRUGAL_REQUIRE_OK(contrast::supcon_backward(nullptr, bytes, x.data(), labels.data(), lse.data(), lse.data(), nullptr,
                                              contrast::contrast_gradients<float>{d_rows.data()}, 8, 8));
  test::device_buffer<unsigned char> ws2(bytes);
  CHECK(contrast::supcon_backward(ws2.data(), bytes, x.data(), labels.data(), lse.data(), static_cast<const float*>(nullptr), nullptr,
                                  contrast::contrast_gradients<float>{d_rows.data()}, 8, 8)
            .code() == errc::invalid_argument);  // the positive counts are needed
  CHECK(std::strstr(contrast::siglip_forward(nullptr, bytes, x.data(), x.data(), contrast::siglip_outputs{loss.data()}, {4, 8, 8}, {}, 5).message(),
                    "row_offset") != nullptr);
  o = {};
  o.log_scale = o.max_log_scale = 90.0f;  // exp(90) overflows fp32
  CHECK(std::strstr(contrast::siglip_forward(nullptr, bytes, x.data(), x.data(), contrast::siglip_outputs{loss.data()}, {4, 8, 8}, o).message(), "80") !=
        nullptr);
  o = {};
  o.max_log_scale = -1.0f;  // min > max
  CHECK(contrast::siglip_forward(nullptr, bytes, x.data(), x.data(), contrast::siglip_outputs{loss.data()}, {4, 8, 8}, o).code() == errc::invalid_argument);
  FRUGAL_REQUIRE_OK(contrast::moco_backward(nullptr, bytes, x.data(), x.data(), x.data(), lse.data(), nullptr, contrast::contrast_gradients<float>{d_rows.data()},
                                            contrast::moco_shape{4, 4, 8}));
  test::device_buffer<unsigned char> ws3(bytes);
  CHECK(std::strstr(contrast::moco_backward(ws3.data(), bytes, x.data(), x.data(), x.data(), lse.data(), nullptr,
                                            contrast::contrast_gradients<float>{d_rows.data(), d_cols.data()}, contrast::moco_shape{4, 4, 8})
                        .message(),
                    "no gradient") != nullptr);
  CHECK(contrast::moco_forward(nullptr, bytes, x.data(), x.data(), x.data(), contrast::infonce_outputs{loss.data()}, contrast::moco_shape{-1, 4, 8}).code() ==
        errc::invalid_argument);
}

// SPDX-License-Identifier: Apache-2.0
// Example 8: dynamic 2:8 sparse training of a toy linear regression with SR-STE. A student
// W [32, 64] learns a 2:8-sparse teacher from 256 samples: each step decompresses the compressed
// weight (nm_decompress), runs the forward pass Y = X W~^T on the tensor cores (frugal::gemm, tf32),
// takes the gradient of the mean squared error on the host, and calls srste_step (SGD with
// momentum), which updates the fp32 master, picks the new 2:8 mask and writes the compressed
// weight in one pass. It prints the loss falling and the fraction of the mask that flipped, then
// checks that the last compressed weight decompresses to the master weight masked and rounded.
#include <frugal/gemm/device_gemm.cuh>
#include <frugal/sparse/device_nm.cuh>
#include <frugal/sparse/srste.cuh>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "example_support.hpp"

namespace {

using pattern = frugal::sparse::nm<2, 8>;
using bf16 = __nv_bfloat16;
constexpr int rows = 32, k = 64, batch = 256;

using examples::check;

}  // namespace

int main() {
  if (!examples::announce_mode("08_sparse_training")) return 77;
  std::mt19937 rng(8);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // A 2:8-sparse teacher, the data, and a dense random student.
  std::vector<float> teacher(rows * k, 0.0f), x(batch * k), w(rows * k);
  for (int r = 0; r < rows; ++r)
    for (int win = 0; win < k / 8; ++win)
      for (int j = 0; j < 2; ++j) teacher[r * k + win * 8 + int(rng() % 8)] = normal(rng);
  for (auto& v : x) v = normal(rng);
  for (auto& v : w) v = 0.5f * normal(rng);
  std::vector<float> target(batch * rows, 0.0f);
  for (int b = 0; b < batch; ++b)
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < k; ++i) target[b * rows + r] += x[b * k + i] * teacher[r * k + i];

  constexpr std::int64_t ld_values = pattern::values_per_row(k), ld_indices = pattern::index_words_per_row(k);
  examples::device_array<float> d_w(w), d_x(x), d_momentum(std::vector<float>(rows * k, 0.0f)), d_dense(rows * k), d_y(batch * rows),
      d_grad(rows * k);
  examples::device_array<bf16> d_values(rows * ld_values);
  examples::device_array<std::uint32_t> d_indices(rows * ld_indices);
  examples::device_array<unsigned long long> d_flips(1);
  examples::device_array<frugal::sparse::nm_report> d_report(1);

  // Start from the dense weight pruned to 2:8 by magnitude.
  check(frugal::sparse::nm_prune<pattern>(d_w.data(), k, d_values.data(), ld_values, d_indices.data(), ld_indices,
                                          static_cast<std::uint8_t*>(nullptr), 0, d_report.data(), rows, k),
        "nm_prune");
  frugal::sparse::sgd_momentum sgd;
  sgd.lr = 0.05f;
  sgd.momentum = 0.9f;
  frugal::sparse::srste_buffers<float, bf16> buffers;
  buffers.weight = d_w.data();
  buffers.grad = d_grad.data();
  buffers.state0 = d_momentum.data();
  buffers.ld = k;
  buffers.values = d_values.data();
  buffers.ld_values = ld_values;
  buffers.indices = d_indices.data();
  buffers.ld_indices = ld_indices;
  buffers.flips = d_flips.data();
  buffers.report = d_report.data();

  double first_loss = 0.0, loss = 0.0;
  const int steps = 40;
  for (int step = 0; step <= steps; ++step) {
    // Forward with the sparse weight: Y [batch, rows] = X [batch, k] W~^T (W~ [rows, k] is B col-major).
    check(frugal::sparse::nm_decompress<pattern>(d_values.data(), ld_values, d_indices.data(), ld_indices, d_dense.data(), k, d_report.data(),
                                                 rows, k),
          "nm_decompress");
    check(frugal::gemm(frugal::row_major<const float>(d_x.data(), k), frugal::col_major<const float>(d_dense.data(), k),
                       frugal::row_major(d_y.data(), rows), batch, rows, k),
          "gemm");
    const auto y = d_y.download();
    // Mean squared error and its gradient with respect to W~: (2 / batch) E^T X.
    loss = 0.0;
    std::vector<float> grad(rows * k, 0.0f);
    for (int b = 0; b < batch; ++b)
      for (int r = 0; r < rows; ++r) {
        const float e = y[b * rows + r] - target[b * rows + r];
        loss += double(e) * e / batch;
        for (int i = 0; i < k; ++i) grad[r * k + i] += 2.0f / batch * e * x[b * k + i];
      }
    if (step == 0) first_loss = loss;
    if (step == steps) break;
    examples::check(cudaMemcpy(d_grad.data(), grad.data(), grad.size() * 4, cudaMemcpyHostToDevice), "upload");
    check(frugal::sparse::srste_step<pattern>(buffers, rows, k, sgd), "srste_step");
    const auto flips = d_flips.download()[0];
    if (step % 5 == 0 || step < 3)
      std::printf("  step %2d: loss %9.4f, mask flips %4llu (%.2f%% of %d positions)\n", step, loss, flips, 100.0 * double(flips) / (rows * k),
                  rows * k);
  }
  std::printf("  loss %.4f -> %.4f after %d SR-STE steps\n", first_loss, loss, steps);

  // The compressed weight is the master weight masked to its 2:8 pattern, rounded to bf16.
  check(frugal::sparse::nm_decompress<pattern>(d_values.data(), ld_values, d_indices.data(), ld_indices, d_dense.data(), k, d_report.data(),
                                               rows, k),
        "nm_decompress");
  const auto dense = d_dense.download();
  const auto master = d_w.download();
  int mismatches = 0, bad_windows = 0;
  for (int r = 0; r < rows; ++r)
    for (int win = 0; win < k / 8; ++win) {
      int kept = 0;
      for (int i = 0; i < 8; ++i) {
        const float d = dense[r * k + win * 8 + i], m = master[r * k + win * 8 + i];
        if (d != 0.0f) {
          ++kept;
          mismatches += d != __bfloat162float(__float2bfloat16_rn(m));
        }
      }
      bad_windows += kept > 2;
    }
  const bool ok = loss < 0.05 * first_loss && mismatches == 0 && bad_windows == 0;
  std::printf("%s: SR-STE 2:8 training (loss down %.0fx), compressed weight = master masked and rounded (%d mismatches, %d windows over 2)\n",
              ok ? "verified" : "MISMATCH", first_loss / loss, mismatches, bad_windows);
  return ok ? 0 : 1;
}

// SPDX-License-Identifier: Apache-2.0
// Example 10: self-supervised training in miniature. 512 synthetic identities, each a random
// 512-dimensional prototype; a view of an identity is its prototype plus a strong "augmentation"
// in a 64-dimensional nuisance subspace (different for every view) and a little noise. A linear
// projector W (512 -> 128) is trained with the NT-Xent loss (SimCLR) on two views of 64
// identities per step: the views' embeddings come from the tensor-core GEMM, the loss and its
// gradient from the fused kernels (normalised inside, the N x N logits never stored), and the
// weight gradient dW = dZ^T X from the GEMM again; plain SGD. A momentum encoder W_k follows W
// (momentum_update), and its keys of the second views feed a MoCo queue (moco_enqueue) of 256
// keys; retrieval is measured as MoCo does: each first view's embedding against this step's keys
// and the queue (InfoNCE's top-1 accuracy over 64 + 256 candidates). The loss falls and the
// retrieval accuracy rises as the projector learns to ignore the nuisance subspace.
#include <frugal/contrast/infonce.cuh>
#include <frugal/contrast/momentum.cuh>
#include <frugal/contrast/self_supervised.cuh>
#include <frugal/gemm/device_gemm.cuh>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "example_support.hpp"

namespace {

constexpr int identities = 512, in_dim = 512, out_dim = 128, nuisance_dim = 64;
constexpr int batch = 64, views = 2 * batch, queue_rows = 256;

using examples::check;

}  // namespace

int main() {
  if (!examples::announce_mode("10_contrastive_training")) return 77;
  std::mt19937 rng(10);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> prototypes(std::size_t(identities) * in_dim), nuisance(std::size_t(nuisance_dim) * in_dim), w(std::size_t(out_dim) * in_dim);
  for (auto& v : prototypes) v = normal(rng);
  for (auto& v : nuisance) v = normal(rng);
  for (auto& v : w) v = normal(rng) / std::sqrt(float(in_dim));
  // A view of identity s: prototype + 3 N(0, 1) coordinates in the nuisance subspace + 0.1 noise.
  auto make_views = [&](const std::vector<int>& ids, std::vector<float>& x, int first_row) {
    for (std::size_t b = 0; b < ids.size(); ++b) {
      float* row = x.data() + (first_row + b) * in_dim;
      for (int c = 0; c < in_dim; ++c) row[c] = prototypes[std::size_t(ids[b]) * in_dim + c] + 0.1f * normal(rng);
      for (int j = 0; j < nuisance_dim; ++j) {
        const float a = 3.0f * normal(rng);
        for (int c = 0; c < in_dim; ++c) row[c] += a * nuisance[std::size_t(j) * in_dim + c] / std::sqrt(float(nuisance_dim));
      }
    }
  };

  examples::device_array<float> d_w(w), d_wk(w), d_x(std::size_t(views) * in_dim), d_z(std::size_t(views) * out_dim);
  examples::device_array<float> d_dz(std::size_t(views) * out_dim), d_dzt(std::size_t(views) * out_dim);
  examples::device_array<float> d_dw(std::size_t(out_dim) * in_dim), d_loss(1), d_accuracy(1), d_lse(views);
  // Columns of the retrieval check: this step's keys, then the queue (one buffer, keys first).
  std::vector<float> initial_queue(std::size_t(batch + queue_rows) * out_dim);
  for (auto& v : initial_queue) v = normal(rng);
  examples::device_array<float> d_columns(initial_queue);
  examples::device_array<frugal::contrast::queue_state> d_queue_state(std::vector<frugal::contrast::queue_state>(1));
  const frugal::contrast::moco_queue<float> queue{d_columns.data() + std::size_t(batch) * out_dim, queue_rows, out_dim, d_queue_state.data()};
  frugal::contrast::logit_options o;
  o.normalize = true;
  o.log_scale = std::log(1.0f / 0.2f);  // temperature 0.2
  namespace fc = frugal::contrast;
  const fc::infonce_outputs retrieval{d_loss.data(), nullptr, nullptr, d_accuracy.data()}, nt_xent{d_loss.data(), d_lse.data()};
  const fc::contrast_shape retrieval_shape{batch, batch + queue_rows, out_dim};
  const fc::contrast_gradients<float> d_views{d_dz.data()};
  // One workspace serves the three calls: the largest of their sizes (a null workspace asks).
  std::size_t bytes[3] = {0, 0, 0};
  check(fc::infonce_forward(nullptr, bytes[0], d_z.data(), d_columns.data(), retrieval, retrieval_shape, o), "infonce_forward size");
  check(fc::nt_xent_forward(nullptr, bytes[1], d_z.data(), nt_xent, views, out_dim, o), "nt_xent_forward size");
  check(fc::nt_xent_backward(nullptr, bytes[2], d_z.data(), d_lse.data(), nullptr, d_views, views, out_dim, o), "nt_xent_backward size");
  std::size_t ws_bytes = std::max(bytes[0], std::max(bytes[1], bytes[2]));
  examples::device_array<unsigned char> ws(ws_bytes);

  const float lr = 0.2f;
  const int steps = 60;
  double first_loss = 0.0, last_loss = 0.0, first_accuracy = 0.0, last_accuracy = 0.0;
  std::vector<float> x(std::size_t(views) * in_dim);
  for (int step = 0; step <= steps; ++step) {
    std::vector<int> ids(batch);
    for (auto& id : ids) id = int(rng() % identities);
    make_views(ids, x, 0);      // views 0 .. 63
    make_views(ids, x, batch);  // views 64 .. 127: view i and i + 64 are the same identity
    examples::check(cudaMemcpy(d_x.data(), x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice), "upload views");
    // Z = X W^T [128, 128] on the tensor cores (tf32), W [128, 512] read as the col-major B.
    check(frugal::gemm(frugal::row_major<const float>(d_x.data(), in_dim), frugal::col_major<const float>(d_w.data(), in_dim),
                       frugal::row_major(d_z.data(), out_dim), views, out_dim, in_dim),
          "gemm forward");
    // Retrieval, MoCo's way: first views (query encoder) against the momentum encoder's keys of
    // the second views, then the queue.
    check(frugal::gemm(frugal::row_major<const float>(d_x.data() + std::size_t(batch) * in_dim, in_dim),
                       frugal::col_major<const float>(d_wk.data(), in_dim), frugal::row_major(d_columns.data(), out_dim), batch, out_dim, in_dim),
          "gemm keys");
    check(fc::infonce_forward(ws.data(), ws_bytes, d_z.data(), d_columns.data(), retrieval, retrieval_shape, o), "infonce_forward (retrieval)");
    const double accuracy = d_accuracy.download()[0];
    // The NT-Xent loss of the two views and its gradient dZ.
    check(fc::nt_xent_forward(ws.data(), ws_bytes, d_z.data(), nt_xent, views, out_dim, o), "nt_xent_forward");
    const double loss = d_loss.download()[0];
    check(fc::nt_xent_backward(ws.data(), ws_bytes, d_z.data(), d_lse.data(), nullptr, d_views, views, out_dim, o), "nt_xent_backward");
    if (step == 0) first_loss = loss, first_accuracy = accuracy;
    last_loss = loss, last_accuracy = accuracy;
    if (step % 10 == 0) std::printf("  step %2d: NT-Xent loss %.4f, retrieval top-1 over %d candidates %5.1f%%\n", step, loss, batch + queue_rows, 100.0 * accuracy);
    if (step == steps) break;
    // dW = dZ^T X [128, 512]: A = dZ^T row-major (transposed on the host: 64 KiB), B = X row-major.
    const auto dz = d_dz.download();
    std::vector<float> dzt(dz.size());
    for (int r = 0; r < views; ++r)
      for (int c = 0; c < out_dim; ++c) dzt[std::size_t(c) * views + r] = dz[std::size_t(r) * out_dim + c];
    examples::check(cudaMemcpy(d_dzt.data(), dzt.data(), dzt.size() * sizeof(float), cudaMemcpyHostToDevice), "upload dZ^T");
    check(frugal::gemm(frugal::row_major<const float>(d_dzt.data(), views), frugal::row_major<const float>(d_x.data(), in_dim),
                       frugal::row_major(d_dw.data(), in_dim), out_dim, in_dim, views),
          "gemm weight gradient");
    // SGD on W, then the momentum encoder W_k <- 0.9 W_k + 0.1 W, and the keys into the queue.
    const auto dw = d_dw.download();
    for (std::size_t i = 0; i < w.size(); ++i) w[i] -= lr * dw[i];
    examples::check(cudaMemcpy(d_w.data(), w.data(), w.size() * sizeof(float), cudaMemcpyHostToDevice), "upload W");
    const auto key_encoder = fc::momentum_pair(d_wk.data(), static_cast<const float*>(d_w.data()), std::int64_t(w.size()));
    check(fc::momentum_update(&key_encoder, 1, 0.9f), "momentum_update");
    check(fc::moco_enqueue(static_cast<const float*>(d_columns.data()), queue, batch), "moco_enqueue");
  }
  const bool ok = last_loss < 0.5 * first_loss && last_accuracy > first_accuracy + 0.5;
  std::printf("%s: NT-Xent %.4f -> %.4f, retrieval top-1 %.1f%% -> %.1f%% after %d steps\n", ok ? "verified" : "MISMATCH", first_loss, last_loss,
              100.0 * first_accuracy, 100.0 * last_accuracy, steps);
  return ok ? 0 : 1;
}

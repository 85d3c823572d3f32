// SPDX-License-Identifier: Apache-2.0
//! @file
//! Host references of the contrastive losses and their gradients (docs/contrastive.md), in
//! double, written for clarity: the logit matrix Z is built whole (N x M), the loss and
//! G = dL/dZ are computed from it, and the gradients follow by the chain rule. The fused kernels
//! are checked against these; these are checked by central finite differences (host tier).
//! Plain C++.
#pragma once

#include <frugal/contrast/contrast_config.cuh>
#include <frugal/core/numeric.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

namespace frugal::reference {

//! What every contrastive reference returns. Gradients are of the mean loss times `upstream`.
struct contrast_result {
  double loss = 0.0;
  std::vector<double> row_loss;  //!< [N] each anchor row's loss (0 for an anchor without a positive)
  std::vector<double> d_rows;    //!< [N, D]
  std::vector<double> d_cols;    //!< [M, D] (empty where the columns are the rows, or take no gradient)
  double d_log_scale = 0.0;
  double d_bias = 0.0;
  //! Top-1 retrieval: the fraction of rows whose first largest logit is their positive, and of
  //! columns whose first largest logit (down the column) is theirs. -1 where it does not apply.
  double row_accuracy = -1.0, col_accuracy = -1.0;
};

namespace detail {

// Rows of an [n, d] matrix in double, L2-normalised when asked (F.normalize, eps 1e-12), with
// the norms kept for the backward.
struct embedded {
  std::vector<double> v, norm;
  std::int64_t n = 0;
  int d = 0;
  const double* row(std::int64_t i) const { return v.data() + i * d; }
};

// An input element in double (double inputs stay exact: the finite-difference checks use them).
template <class T>
double as_double(const T& v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else return double(to_float(v));
}

template <class T>
embedded embed(const T* x, std::int64_t n, int d, bool normalize) {
  embedded e{std::vector<double>(std::size_t(n * d)), std::vector<double>(std::size_t(n), 1.0), n, d};
  for (std::int64_t i = 0; i < n; ++i) {
    double sq = 0.0;
    for (int k = 0; k < d; ++k) {
      const double v = as_double(x[i * d + k]);
      e.v[std::size_t(i * d + k)] = v;
      sq += v * v;
    }
    if (!normalize) continue;
    const double norm = std::max(std::sqrt(sq), 1e-12);
    e.norm[std::size_t(i)] = norm;
    for (int k = 0; k < d; ++k) e.v[std::size_t(i * d + k)] /= norm;
  }
  return e;
}

// d x from d x_hat: (g - x_hat <x_hat, g>) / ||x|| where the norm is above eps, g / eps at a
// clamped (near-zero) row.
inline void unnormalize_gradient(const embedded& e, std::vector<double>& g, bool normalize) {
  if (!normalize) return;
  for (std::int64_t i = 0; i < e.n; ++i) {
    double* gi = g.data() + i * e.d;
    const double* xi = e.row(i);
    const double norm = e.norm[std::size_t(i)];
    double dot = 0.0;
    for (int k = 0; k < e.d; ++k) dot += xi[k] * gi[k];
    const bool clamped = norm <= 1e-12;
    for (int k = 0; k < e.d; ++k) gi[k] = (clamped ? gi[k] : gi[k] - xi[k] * dot) / norm;
  }
}

inline double dot(const double* a, const double* b, int d) {
  double s = 0.0;
  for (int k = 0; k < d; ++k) s += a[k] * b[k];
  return s;
}

// log sum exp over z[j] for j in [0, m) where keep(j); -inf when nothing is kept.
template <class Keep>
double logsumexp(const double* z, std::int64_t m, Keep keep) {
  double hi = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < m; ++j)
    if (keep(j)) hi = std::max(hi, z[j]);
  if (hi == -std::numeric_limits<double>::infinity()) return hi;
  double sum = 0.0;
  for (std::int64_t j = 0; j < m; ++j)
    if (keep(j)) sum += std::exp(z[j] - hi);
  return hi + std::log(sum);
}

// The logit matrix Z = s <x_i, y_j> + b [n, m] and the raw dot products.
struct logits {
  std::vector<double> z, dots;
  std::int64_t n = 0, m = 0;
  double scale = 1.0;
  double at(std::int64_t i, std::int64_t j) const { return z[std::size_t(i * m + j)]; }
};

inline logits make_logits(const embedded& x, const embedded& y, double scale, double bias) {
  logits l{std::vector<double>(std::size_t(x.n * y.n)), std::vector<double>(std::size_t(x.n * y.n)), x.n, y.n, scale};
  for (std::int64_t i = 0; i < x.n; ++i)
    for (std::int64_t j = 0; j < y.n; ++j) {
      const double s = dot(x.row(i), y.row(j), x.d);
      l.dots[std::size_t(i * y.n + j)] = s;
      l.z[std::size_t(i * y.n + j)] = scale * s + bias;
    }
  return l;
}

// From G = dL/dZ [n, m]: d rows, d cols (through the normalisation), d log_scale, d bias.
inline void chain_rule(const embedded& x, const embedded& y, const logits& l, const std::vector<double>& g,
                       const contrast::logit_options& o, bool passes, contrast_result& r, bool cols_wanted = true) {
  const int d = x.d;
  r.d_rows.assign(std::size_t(x.n * d), 0.0);
  if (cols_wanted) r.d_cols.assign(std::size_t(y.n * d), 0.0);
  double ds = 0.0, db = 0.0;
  for (std::int64_t i = 0; i < x.n; ++i)
    for (std::int64_t j = 0; j < y.n; ++j) {
      const double gij = g[std::size_t(i * y.n + j)];
      if (gij == 0.0) continue;
      ds += gij * l.dots[std::size_t(i * y.n + j)];
      db += gij;
      for (int k = 0; k < d; ++k) {
        r.d_rows[std::size_t(i * d + k)] += l.scale * gij * y.row(j)[k];
        if (cols_wanted) r.d_cols[std::size_t(j * d + k)] += l.scale * gij * x.row(i)[k];
      }
    }
  unnormalize_gradient(x, r.d_rows, o.normalize);
  if (cols_wanted) unnormalize_gradient(y, r.d_cols, o.normalize);
  r.d_log_scale = passes ? l.scale * ds : 0.0;
  r.d_bias = db;
}

// Index of the first largest of z[0..m) (step apart).
inline std::int64_t first_argmax(const double* z, std::int64_t m, std::int64_t step) {
  std::int64_t best = 0;
  for (std::int64_t j = 1; j < m; ++j)
    if (z[j * step] > z[best * step]) best = j;
  return best;
}

// Softmax cross-entropy rows of Z against positive columns pos(i) (label smoothing eps), into
// the loss (mean over the rows, times `weight`) and G (added).
template <class Pos>
double softmax_rows(const logits& l, Pos pos, double eps, double weight, std::vector<double>& g, std::vector<double>* row_loss) {
  double total = 0.0;
  for (std::int64_t i = 0; i < l.n; ++i) {
    const double* zi = l.z.data() + i * l.m;
    const double lse = logsumexp(zi, l.m, [](std::int64_t) { return true; });
    double mean_z = 0.0;
    for (std::int64_t j = 0; j < l.m; ++j) mean_z += zi[j];
    mean_z /= double(l.m);
    const std::int64_t p = pos(i);
    const double li = lse - (1.0 - eps) * zi[p] - eps * mean_z;
    total += li;
    if (row_loss) (*row_loss)[std::size_t(i)] += weight * li;
    for (std::int64_t j = 0; j < l.m; ++j)
      g[std::size_t(i * l.m + j)] += weight / double(l.n) * (std::exp(zi[j] - lse) - (j == p ? 1.0 - eps : 0.0) - eps / double(l.m));
  }
  return weight * total / double(l.n);
}

// The same down the columns of Z (column j against row q(j)): CLIP's second direction; column
// j's loss (times `weight`) is added to row_loss[j].
template <class Pos>
double softmax_cols(const logits& l, Pos pos, double eps, double weight, std::vector<double>& g, std::vector<double>* row_loss) {
  double total = 0.0;
  std::vector<double> col(std::size_t(l.n));
  for (std::int64_t j = 0; j < l.m; ++j) {
    double mean_z = 0.0;
    for (std::int64_t i = 0; i < l.n; ++i) mean_z += (col[std::size_t(i)] = l.at(i, j));
    mean_z /= double(l.n);
    const double lse = logsumexp(col.data(), l.n, [](std::int64_t) { return true; });
    const std::int64_t q = pos(j);
    const double lj = lse - (1.0 - eps) * col[std::size_t(q)] - eps * mean_z;
    total += lj;
    if (row_loss) (*row_loss)[std::size_t(j)] += weight * lj;
    for (std::int64_t i = 0; i < l.n; ++i)
      g[std::size_t(i * l.m + j)] += weight / double(l.m) * (std::exp(col[std::size_t(i)] - lse) - (i == q ? 1.0 - eps : 0.0) - eps / double(l.n));
  }
  return weight * total / double(l.m);
}

// A loss's inputs embedded (normalised when asked), its clamped log-scale and its logits.
struct posed {
  embedded x, y;
  contrast::clamped_log_scale t;
  logits l;
};

template <class T>
posed pose(const T* x, std::int64_t n, const T* y, std::int64_t m, int d, const contrast::logit_options& o, double bias) {
  posed p{embed(x, n, d, o.normalize), embed(y, m, d, o.normalize), contrast::clamp_log_scale(o), {}};
  p.l = make_logits(p.x, p.y, std::exp(double(p.t.value)), bias);
  return p;
}

}  // namespace detail

//! InfoNCE, one direction: rows X [N, D] against columns Y [M, D]; row i's positive is column
//! row_offset + i (in-batch negatives: every other column).
//! L = (1/N) sum_i [ LSE_j Z_ij - (1 - eps) Z_{i,p(i)} - (eps/M) sum_j Z_ij ].
template <class T>
contrast_result infonce(const T* x, std::int64_t n, const T* y, std::int64_t m, int d, const contrast::logit_options& o,
                        const contrast::softmax_options& so = {}, double upstream = 1.0) {
  const auto [ex, ey, t, l] = detail::pose(x, n, y, m, d, o, 0.0);
  contrast_result r;
  r.row_loss.assign(std::size_t(n), 0.0);
  std::vector<double> g(std::size_t(n * m), 0.0);
  r.loss = detail::softmax_rows(l, [&](std::int64_t i) { return so.row_offset + i; }, so.label_smoothing, 1.0, g, &r.row_loss);
  for (auto& v : g) v *= upstream;
  detail::chain_rule(ex, ey, l, g, o, t.passes_gradient, r);
  r.d_bias = 0.0;
  std::int64_t right = 0;
  for (std::int64_t i = 0; i < n; ++i) right += detail::first_argmax(l.z.data() + i * m, m, 1) == so.row_offset + i;
  r.row_accuracy = n > 0 ? double(right) / double(n) : 0.0;
  return r;
}

//! CLIP, symmetric: X [N, D] and Y [N, D] paired row by row; the mean of InfoNCE from X to Y
//! (rows of Z) and from Y to X (columns of the same Z). row_loss holds (row_i + column_i) / 2.
template <class T>
contrast_result clip(const T* x, const T* y, std::int64_t n, int d, const contrast::logit_options& o,
                     const contrast::softmax_options& so = {}, double upstream = 1.0) {
  const auto [ex, ey, t, l] = detail::pose(x, n, y, n, d, o, 0.0);
  contrast_result r;
  r.row_loss.assign(std::size_t(n), 0.0);
  std::vector<double> g(std::size_t(n * n), 0.0);
  auto same = [](std::int64_t i) { return i; };
  r.loss = detail::softmax_rows(l, same, so.label_smoothing, 0.5, g, &r.row_loss);
  std::vector<double> col_g(std::size_t(n * n), 0.0);
  r.loss += detail::softmax_cols(l, same, so.label_smoothing, 0.5, col_g, &r.row_loss);  // column j: the pair j
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = upstream * (g[i] + col_g[i]);
  detail::chain_rule(ex, ey, l, g, o, t.passes_gradient, r);
  r.d_bias = 0.0;
  std::int64_t rows_right = 0, cols_right = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    rows_right += detail::first_argmax(l.z.data() + i * n, n, 1) == i;
    cols_right += detail::first_argmax(l.z.data() + i, n, n) == i;
  }
  r.row_accuracy = n > 0 ? double(rows_right) / double(n) : 0.0;
  r.col_accuracy = n > 0 ? double(cols_right) / double(n) : 0.0;
  return r;
}

//! NT-Xent (SimCLR): 2N views Z [2N, D] (view i and view i + N of the same sample, i < N); each
//! view against the other 2N - 1, its partner the positive.
//! L = (1/2N) sum_i [ LSE_{j != i} Z_ij - Z_{i,pos(i)} ]. d_rows is the gradient of the views
//! (both roles, row and column, summed); d_cols is empty.
template <class T>
contrast_result nt_xent(const T* z, std::int64_t n2, int d, const contrast::logit_options& o, double upstream = 1.0) {
  const auto e = detail::embed(z, n2, d, o.normalize);
  const auto t = contrast::clamp_log_scale(o);
  const auto l = detail::make_logits(e, e, std::exp(double(t.value)), 0.0);
  const std::int64_t half = n2 / 2;
  contrast_result r;
  r.row_loss.assign(std::size_t(n2), 0.0);
  std::vector<double> g(std::size_t(n2 * n2), 0.0);
  std::int64_t right = 0;
  for (std::int64_t i = 0; i < n2; ++i) {
    const double* zi = l.z.data() + i * n2;
    const std::int64_t p = i < half ? i + half : i - half;
    const double lse = detail::logsumexp(zi, n2, [&](std::int64_t j) { return j != i; });
    const double li = n2 > 1 ? lse - zi[p] : 0.0;
    r.row_loss[std::size_t(i)] = li;
    r.loss += li / double(n2);
    std::int64_t best = i == 0 ? 1 : 0;
    for (std::int64_t j = 0; j < n2; ++j) {
      if (j == i || n2 < 2) continue;
      if (zi[j] > zi[best]) best = j;
      g[std::size_t(i * n2 + j)] = upstream / double(n2) * (std::exp(zi[j] - lse) - (j == p ? 1.0 : 0.0));
    }
    right += n2 > 1 && best == p;
  }
  contrast_result both;
  detail::chain_rule(e, e, l, g, o, t.passes_gradient, both);
  r.d_rows = both.d_rows;
  for (std::size_t k = 0; k < r.d_rows.size(); ++k) r.d_rows[k] += both.d_cols[k];
  r.d_log_scale = both.d_log_scale;
  r.row_accuracy = n2 > 0 ? double(right) / double(n2) : 0.0;
  return r;
}

//! SigLIP: pairwise sigmoid, Z_ij = s <x_i, y_j> + b, label +1 for j = row_offset + i, -1
//! otherwise. L = (1/N) sum_i sum_j softplus(-label_ij Z_ij) (N: the rows).
template <class T>
contrast_result siglip(const T* x, std::int64_t n, const T* y, std::int64_t m, int d, const contrast::logit_options& o,
                       std::int64_t row_offset = 0, double upstream = 1.0) {
  const auto [ex, ey, t, l] = detail::pose(x, n, y, m, d, o, double(o.bias));
  contrast_result r;
  r.row_loss.assign(std::size_t(n), 0.0);
  std::vector<double> g(std::size_t(n * m), 0.0);
  auto softplus = [](double v) { return std::max(v, 0.0) + std::log1p(std::exp(-std::abs(v))); };
  auto sigmoid = [](double v) { return v >= 0 ? 1.0 / (1.0 + std::exp(-v)) : std::exp(v) / (1.0 + std::exp(v)); };
  std::int64_t right = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < m; ++j) {
      const double zij = l.at(i, j), label = j == row_offset + i ? 1.0 : -1.0;
      r.row_loss[std::size_t(i)] += softplus(-label * zij);
      g[std::size_t(i * m + j)] = upstream / double(n) * (sigmoid(zij) - (label > 0 ? 1.0 : 0.0));
    }
    r.loss += r.row_loss[std::size_t(i)] / double(n);
    right += detail::first_argmax(l.z.data() + i * m, m, 1) == row_offset + i;
  }
  detail::chain_rule(ex, ey, l, g, o, t.passes_gradient, r);
  r.row_accuracy = n > 0 ? double(right) / double(n) : 0.0;
  return r;
}

//! SupCon (Khosla et al., L_out): one set of N embeddings X with integer labels; for anchor i,
//! P(i) = the other samples with its label, A(i) = every sample but i:
//! L_i = LSE_{a in A(i)} Z_ia - (1/|P(i)|) sum_{p in P(i)} Z_ip. Anchors without a positive
//! have L_i = 0 and are left out of the mean: L = (1/|anchors with a positive|) sum L_i (0 when
//! there is none). d_rows sums both roles; d_cols is empty.
template <class T>
contrast_result supcon(const T* x, const std::int32_t* labels, std::int64_t n, int d, const contrast::logit_options& o,
                       double upstream = 1.0) {
  const auto e = detail::embed(x, n, d, o.normalize);
  const auto t = contrast::clamp_log_scale(o);
  const auto l = detail::make_logits(e, e, std::exp(double(t.value)), 0.0);
  contrast_result r;
  r.row_loss.assign(std::size_t(n), 0.0);
  std::vector<double> g(std::size_t(n * n), 0.0);
  std::int64_t anchors = 0;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j)
      if (j != i && labels[j] == labels[i]) {
        ++anchors;
        break;
      }
  for (std::int64_t i = 0; i < n; ++i) {
    const double* zi = l.z.data() + i * n;
    std::int64_t positives = 0;
    double positive_sum = 0.0;
    for (std::int64_t j = 0; j < n; ++j)
      if (j != i && labels[j] == labels[i]) {
        ++positives;
        positive_sum += zi[j];
      }
    if (positives == 0) continue;
    const double lse = detail::logsumexp(zi, n, [&](std::int64_t j) { return j != i; });
    const double li = lse - positive_sum / double(positives);
    r.row_loss[std::size_t(i)] = li;
    r.loss += li / double(anchors);
    for (std::int64_t j = 0; j < n; ++j)
      if (j != i)
        g[std::size_t(i * n + j)] = upstream / double(anchors) *
                                    (std::exp(zi[j] - lse) - (labels[j] == labels[i] ? 1.0 / double(positives) : 0.0));
  }
  contrast_result both;
  detail::chain_rule(e, e, l, g, o, t.passes_gradient, both);
  r.d_rows = both.d_rows;
  for (std::size_t k = 0; k < r.d_rows.size(); ++k) r.d_rows[k] += both.d_cols[k];
  r.d_log_scale = both.d_log_scale;
  return r;
}

//! MoCo: queries Q [N, D], each against its positive key K [N, D] and a queue of negatives
//! [Kq, D] (Kq may be 0). Logits l_i = s [<q_i, k_i>, <q_i, queue_0>, ...];
//! L = (1/N) sum_i [ LSE(l_i) - l_i0 ]. Keys and queue come from the momentum encoder and take
//! no gradient: d_rows is dL/dQ, d_cols is empty. row_accuracy: the positive ranks first.
template <class T>
contrast_result moco(const T* q, const T* k, std::int64_t n, const T* queue, std::int64_t queued, int d,
                     const contrast::logit_options& o, double upstream = 1.0) {
  const auto eq = detail::embed(q, n, d, o.normalize), ek = detail::embed(k, n, d, o.normalize);
  const auto equeue = detail::embed(queue, queued, d, o.normalize);
  const auto t = contrast::clamp_log_scale(o);
  const double s = std::exp(double(t.value));
  contrast_result r;
  r.row_loss.assign(std::size_t(n), 0.0);
  r.d_rows.assign(std::size_t(n * d), 0.0);
  double ds = 0.0;
  std::int64_t right = 0;
  std::vector<double> li(std::size_t(queued + 1)), dots(std::size_t(queued + 1));
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j <= queued; ++j) {
      dots[std::size_t(j)] = detail::dot(eq.row(i), j == 0 ? ek.row(i) : equeue.row(j - 1), d);
      li[std::size_t(j)] = s * dots[std::size_t(j)];
    }
    const double lse = detail::logsumexp(li.data(), queued + 1, [](std::int64_t) { return true; });
    r.row_loss[std::size_t(i)] = lse - li[0];
    r.loss += r.row_loss[std::size_t(i)] / double(n);
    right += detail::first_argmax(li.data(), queued + 1, 1) == 0;
    for (std::int64_t j = 0; j <= queued; ++j) {
      const double gij = upstream / double(n) * (std::exp(li[std::size_t(j)] - lse) - (j == 0 ? 1.0 : 0.0));
      ds += gij * dots[std::size_t(j)];
      const double* col = j == 0 ? ek.row(i) : equeue.row(j - 1);
      for (int c = 0; c < d; ++c) r.d_rows[std::size_t(i * d + c)] += s * gij * col[c];
    }
  }
  detail::unnormalize_gradient(eq, r.d_rows, o.normalize);
  r.d_log_scale = t.passes_gradient ? s * ds : 0.0;
  r.row_accuracy = n > 0 ? double(right) / double(n) : 0.0;
  return r;
}

}  // namespace frugal::reference

// SPDX-License-Identifier: Apache-2.0
//! @file
//! Host reference of dispatch and combine (frugal/moe/plan.cuh, permute.cuh, combine.cuh),
//! written for clarity: lists per expert, sorts by the policy's priority, then token order.
#pragma once

#include <frugal/core/numeric.cuh>
#include <frugal/core/ordered_key.cuh>
#include <frugal/core/philox.cuh>
#include <frugal/moe/dispatch_config.cuh>
#include <frugal/reference/topk.hpp>

#include <cuda_fp8.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <vector>

namespace frugal::reference {

struct plan_result {
  std::vector<std::int32_t> counts, dropped, offsets;  // [E], [E], [E + 1]
  std::vector<std::int32_t> slot_to_row, row_to_slot;  // [T * k], [max rows]
  std::vector<std::int32_t> expanded_to_row, row_to_expanded, row_to_token;
  std::vector<std::int32_t> tile_experts;
  std::int32_t total_rows = 0;
  std::int32_t invalid_ids = 0, duplicate_ids = 0;
};

template <class IdT>
plan_result plan(const IdT* ids, const float* weights, std::int64_t tokens, int k, int experts, const moe::plan_params& p) {
  const std::int64_t slots = tokens * k;
  const std::int64_t cap = moe::plan_capacity(tokens, k, experts, p);
  const std::int64_t max_rows = moe::plan_max_rows(tokens, k, experts, p);
  plan_result r;
  std::vector<std::vector<std::int64_t>> entries(static_cast<std::size_t>(experts));
  for (std::int64_t s = 0; s < slots; ++s) {
    const std::int64_t e = std::int64_t(ids[s]);
    if (e < -1 || e >= experts) ++r.invalid_ids;
    if (e < 0 || e >= experts) continue;
    for (std::int64_t j = s / k * k; j < s; ++j)
      if (std::int64_t(ids[j]) == e) {
        ++r.duplicate_ids;
        break;
      }
    entries[std::size_t(e)].push_back(s);  // token order
  }
  // Priority: true if a is kept before b.
  auto before = [&](std::int64_t a, std::int64_t b) {
    switch (p.policy) {
      case moe::drop_policy::slot_major: return (a % k) * tokens + a / k < (b % k) * tokens + b / k;
      case moe::drop_policy::weight_priority: return selected_before(weights[a], a, weights[b], b);
      case moe::drop_policy::random: {
        auto key = [&](std::int64_t s) {
          const auto w = philox4x32_10(philox_words{{std::uint32_t(s), std::uint32_t(std::uint64_t(s) >> 32), 0x5eedu, 0}},
                                       std::uint32_t(p.seed), std::uint32_t(p.seed >> 32));
          return w.v[0] | 1u;
        };
        return key(a) != key(b) ? key(a) > key(b) : a < b;
      }
      default: return a < b;
    }
  };
  r.counts.assign(std::size_t(experts), 0);
  r.dropped.assign(std::size_t(experts), 0);
  r.offsets.assign(std::size_t(experts) + 1, 0);
  std::vector<std::vector<std::int64_t>> kept(static_cast<std::size_t>(experts));
  for (int e = 0; e < experts; ++e) {
    auto list = entries[std::size_t(e)];
    if (cap > 0 && std::int64_t(list.size()) > cap) {
      std::stable_sort(list.begin(), list.end(), before);
      list.resize(std::size_t(cap));
      std::sort(list.begin(), list.end());  // back to token order
    }
    kept[std::size_t(e)] = list;
    r.counts[std::size_t(e)] = std::int32_t(list.size());
    r.dropped[std::size_t(e)] = std::int32_t(entries[std::size_t(e)].size() - list.size());
  }
  const bool masked = p.layout == moe::placement::masked;
  for (int e = 0; e < experts; ++e) {
    const std::int64_t rows = masked ? cap : (r.counts[std::size_t(e)] + p.block_size - 1) / p.block_size * p.block_size;
    r.offsets[std::size_t(e) + 1] = std::int32_t(r.offsets[std::size_t(e)] + rows);
  }
  r.total_rows = r.offsets[std::size_t(experts)];
  r.slot_to_row.assign(std::size_t(slots), -1);
  r.expanded_to_row.assign(std::size_t(slots), -1);
  r.row_to_slot.assign(std::size_t(max_rows), moe::plan_padding_sentinel(tokens, k));
  r.row_to_expanded.assign(std::size_t(max_rows), -1);
  r.row_to_token.assign(std::size_t(max_rows), -1);
  for (int e = 0; e < experts; ++e)
    for (std::size_t j = 0; j < kept[std::size_t(e)].size(); ++j) {
      const std::int64_t s = kept[std::size_t(e)][j], row = r.offsets[std::size_t(e)] + std::int64_t(j);
      const std::int64_t expanded = (s % k) * tokens + s / k;
      r.slot_to_row[std::size_t(s)] = std::int32_t(row);
      r.expanded_to_row[std::size_t(expanded)] = std::int32_t(row);
      r.row_to_slot[std::size_t(row)] = std::int32_t(s);
      r.row_to_expanded[std::size_t(row)] = std::int32_t(expanded);
      r.row_to_token[std::size_t(row)] = std::int32_t(s / k);
    }
  if (!masked) {
    r.tile_experts.assign(std::size_t(max_rows / p.block_size), -1);
    for (int e = 0; e < experts; ++e)
      for (std::int64_t row = r.offsets[std::size_t(e)]; row < r.offsets[std::size_t(e) + 1]; row += p.block_size)
        r.tile_experts[std::size_t(row / p.block_size)] = e;
  }
  return r;
}

//! permute: out[row] = x[row_to_slot[row] / k], zeros for padding rows.
template <class T>
std::vector<T> permute(const T* x, std::int64_t tokens, int hidden, int k, const std::vector<std::int32_t>& row_to_slot) {
  std::vector<T> out(row_to_slot.size() * std::size_t(hidden), from_float<T>(0.0f));
  for (std::size_t row = 0; row < row_to_slot.size(); ++row) {
    const std::int64_t s = row_to_slot[row];
    if (s < 0 || s >= tokens * k) continue;
    for (int h = 0; h < hidden; ++h) out[row * std::size_t(hidden) + std::size_t(h)] = x[(s / k) * hidden + h];
  }
  return out;
}

//! permute_fp8: q = fp8(x * (1 / s)), s = amax / 448 (1 if amax is 0), per row or per 128.
template <class T>
void permute_fp8(const T* x, std::int64_t tokens, int hidden, int k, const std::vector<std::int32_t>& row_to_slot, bool per_128,
                 std::vector<unsigned char>& q, std::vector<float>& scales) {
  const int group = per_128 ? 128 : hidden, groups = hidden / group;
  q.assign(row_to_slot.size() * std::size_t(hidden), 0);
  scales.assign(row_to_slot.size() * std::size_t(groups), 1.0f);
  for (std::size_t row = 0; row < row_to_slot.size(); ++row) {
    const std::int64_t s = row_to_slot[row];
    const bool valid = s >= 0 && s < tokens * k;
    for (int g = 0; g < groups; ++g) {
      float amax = 0.0f;
      for (int h = g * group; valid && h < (g + 1) * group; ++h) amax = std::max(amax, std::fabs(to_float(x[(s / k) * hidden + h])));
      const float scale = amax > 0.0f ? amax / 448.0f : 1.0f, inv = 1.0f / scale;
      scales[row * std::size_t(groups) + std::size_t(g)] = scale;
      for (int h = g * group; h < (g + 1) * group; ++h) {
        const float v = valid ? to_float(x[(s / k) * hidden + h]) : 0.0f;
        const __nv_fp8_e4m3 f(v * inv);
        std::memcpy(&q[row * std::size_t(hidden) + std::size_t(h)], &f, 1);
      }
    }
  }
}

//! combine: residual + sum_j w_j * y[row_j], fused multiply-adds in slot order, one rounding.
template <class T, class OutT>
std::vector<OutT> combine(const T* y, std::int64_t rows, int hidden, int k, std::int64_t tokens, const std::int32_t* slot_to_row,
                          const float* weights, const OutT* residual) {
  std::vector<OutT> out(std::size_t(tokens) * std::size_t(hidden));
  for (std::int64_t t = 0; t < tokens; ++t)
    for (int h = 0; h < hidden; ++h) {
      float acc = 0.0f;
      for (int j = 0; j < k; ++j) {
        const std::int32_t r = slot_to_row[t * k + j];
        if (r < 0 || r >= rows) continue;
        acc = std::fma(weights ? weights[t * k + j] : 1.0f, to_float(y[std::int64_t(r) * hidden + h]), acc);
      }
      if (residual) acc += to_float(residual[t * hidden + h]);
      out[std::size_t(t * hidden + h)] = from_float<OutT>(acc);
    }
  return out;
}

//! d weights of combine: per slot, 32 lane partials (lane l takes the 16-byte chunks l, l+32, ...,
//! fused multiply-adds in order) summed by the butterfly the kernel uses, so the bits match.
template <class T>
std::vector<float> combine_weight_grad(const T* d_out, const T* y, std::int64_t rows, int hidden, int k, std::int64_t tokens,
                                       const std::int32_t* slot_to_row) {
  const int per = int(16 / sizeof(T)), chunks = hidden / per;
  std::vector<float> dw(std::size_t(tokens * k), 0.0f);
  for (std::int64_t s = 0; s < tokens * k; ++s) {
    const std::int32_t r = slot_to_row[s];
    if (r < 0 || r >= rows) continue;
    float lane[32] = {};
    for (int l = 0; l < 32; ++l)
      for (int c = l; c < chunks; c += 32)
        for (int j = 0; j < per; ++j)
          lane[l] = std::fma(to_float(d_out[(s / k) * hidden + c * per + j]), to_float(y[std::int64_t(r) * hidden + c * per + j]), lane[l]);
    for (int offset = 16; offset > 0; offset /= 2) {
      float next[32];
      for (int l = 0; l < 32; ++l) next[l] = lane[l] + lane[l ^ offset];
      std::copy(next, next + 32, lane);
    }
    dw[std::size_t(s)] = lane[0];
  }
  return dw;
}

}  // namespace frugal::reference

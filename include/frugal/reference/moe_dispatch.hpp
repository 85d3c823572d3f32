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

#include <algorithm>
#include <cstdint>
#include <vector>

namespace frugal::reference {

struct plan_result {
  std::vector<std::int32_t> counts, dropped, offsets;  // [E], [E], [E + 1]
  std::vector<std::int32_t> slot_to_row, row_to_slot;  // [T * k], [max rows]
  std::vector<std::int32_t> expanded_to_row, row_to_expanded;
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
  for (int e = 0; e < experts; ++e)
    for (std::size_t j = 0; j < kept[std::size_t(e)].size(); ++j) {
      const std::int64_t s = kept[std::size_t(e)][j], row = r.offsets[std::size_t(e)] + std::int64_t(j);
      const std::int64_t expanded = (s % k) * tokens + s / k;
      r.slot_to_row[std::size_t(s)] = std::int32_t(row);
      r.expanded_to_row[std::size_t(expanded)] = std::int32_t(row);
      r.row_to_slot[std::size_t(row)] = std::int32_t(s);
      r.row_to_expanded[std::size_t(row)] = std::int32_t(expanded);
    }
  if (!masked) {
    r.tile_experts.assign(std::size_t(max_rows / p.block_size), -1);
    for (int e = 0; e < experts; ++e)
      for (std::int64_t row = r.offsets[std::size_t(e)]; row < r.offsets[std::size_t(e) + 1]; row += p.block_size)
        r.tile_experts[std::size_t(row / p.block_size)] = e;
  }
  return r;
}

}  // namespace frugal::reference

// SPDX-License-Identifier: Apache-2.0
//! @file
//! The dispatch plan: from routing ids [T, k] to where every kept entry goes in the
//! expert-major buffer, under a capacity and a drop policy, in the layouts of vLLM/SGLang
//! (sorted_token_ids), TensorRT-LLM (expert_first_token_offset and row maps) and DeepEP/DeepGEMM
//! (masked [E, capacity, H]). docs/moe_dispatch.md.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/plan.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/moe/detail/plan_kernels.cuh>
#include <frugal/moe/dispatch_config.cuh>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace frugal::moe {

namespace detail {
// The most plan blocks resident at once on the current device. It depends only on the device, and
// the occupancy query costs microseconds of host time a 5-microsecond plan cannot spare: cached.
template <class Kernel>
status plan_grid_limit(Kernel kernel, int& blocks) {
  static std::atomic<int> cached[64] = {};  // per device; 0 = not asked yet
  int device = 0;
  FRUGAL_TRY(status::from_cuda(cudaGetDevice(&device)));
  if (device >= 0 && device < 64 && (blocks = cached[device].load(std::memory_order_relaxed)) > 0) return status{};
  FRUGAL_TRY(cooperative_grid_blocks(kernel, plan_threads, 0, blocks));
  if (device >= 0 && device < 64) cached[device].store(blocks, std::memory_order_relaxed);
  return status{};
}
}  // namespace detail

//! Plans the dispatch of ids [T, k] (global expert ids; -1 = not routed here) to E experts.
//!
//! Every routed entry (slot t * k + j) gets a rank inside its expert in token order; the drop
//! policy decides which entries an expert over capacity keeps (`weights` [T, k] fp32 are needed
//! for drop_policy::weight_priority), and kept entries keep their token order. Dropped entries
//! are counted per expert (out.dropped), never silently lost. Outputs are described in
//! plan_outputs; the row arrays need plan_max_rows(T, k, E, params) entries.
//!
//! Rules for malformed ids: an id outside [-1, E) is treated as not routed, a repeated id within
//! a token is a separate entry; both are counted in out.id_errors. Nothing is written out of
//! bounds. Two-phase workspace (any alignment: the plan aligns it); one cooperative launch (grid barriers between the phases, as many
//! blocks as the device holds at once, at most one per 256 slots); deterministic.
template <class IdT>
status plan(void* workspace, std::size_t& workspace_bytes, const IdT* ids, const float* weights, std::int64_t tokens,
            int k, int experts, const plan_params& params, plan_outputs out, cudaStream_t stream = nullptr) {
  static_assert(std::is_same_v<IdT, std::int32_t> || std::is_same_v<IdT, std::int64_t>,
                "frugal::moe::plan: ids must be int32 or int64");
  if (tokens < 0) return status::invalid("frugal::moe::plan: tokens must be >= 0");
  if (k < 1 || k > 32) return status::invalid("frugal::moe::plan: k must be in [1, 32]");
  if (experts < 1 || experts > detail::plan_max_experts) return status::invalid("frugal::moe::plan: experts must be in [1, 1024]");
  // (tokens is compared after dividing, so tokens * k itself cannot overflow)
  if (tokens > std::int64_t(INT32_MAX) / 2 / k) return status::invalid("frugal::moe::plan: tokens * k is too large for int32 rows");
  const std::int64_t slots = tokens * k;
  // 15 bytes of slack: any workspace pointer is aligned up to 16 inside it (as CUB does).
  const std::size_t needed = detail::plan_workspace_bytes(slots, experts) + 15;
  if (workspace == nullptr) {
    workspace_bytes = needed;
    return status{};
  }
  if (workspace_bytes < needed) return status::invalid("frugal::moe::plan: workspace_bytes is smaller than the size query returned");
  const auto* given_workspace = static_cast<const unsigned char*>(workspace);  // [given, given + needed) holds the aligned part
  workspace = static_cast<unsigned char*>(workspace) + (16 - reinterpret_cast<std::uintptr_t>(workspace) % 16) % 16;
  if (params.block_size < 1 || params.block_size > 256) return status::invalid("frugal::moe::plan: block_size must be in [1, 256]");
  if (params.capacity < 0 || params.min_capacity < 0 || params.capacity_multiple < 1 ||
      !(params.capacity_factor >= 0.0f) || !std::isfinite(params.capacity_factor))
    return status::invalid("frugal::moe::plan: capacity, min_capacity, capacity_multiple and capacity_factor must be >= 0 (multiple >= 1)");
  if (params.policy == drop_policy::none && params.layout == placement::packed && (params.capacity > 0 || params.capacity_factor > 0.0f))
    return status::invalid("frugal::moe::plan: capacity and capacity_factor need a drop policy (drop_policy::none is dropless and would ignore them)");
  const std::int64_t capacity = plan_capacity(tokens, k, experts, params);
  if (params.layout == placement::masked && params.policy == drop_policy::none)
    return status::invalid("frugal::moe::plan: a masked placement needs a drop policy (rows beyond the capacity cannot be placed)");
  if ((params.policy != drop_policy::none || params.layout == placement::masked) && capacity < 1 && tokens > 0)
    return status::invalid("frugal::moe::plan: the capacity is 0 (set capacity or capacity_factor)");
  if (params.policy == drop_policy::weight_priority && !weights && tokens > 0)
    return status::invalid("frugal::moe::plan: drop_policy::weight_priority needs the routing weights");
  if (!ids && tokens > 0) return status::invalid("frugal::moe::plan: ids is null");
  const std::int64_t max_rows = plan_max_rows(tokens, k, experts, params);
  if (max_rows > INT32_MAX) return status::invalid("frugal::moe::plan: the expert-major buffer would exceed int32 rows");
  {
    using frugal::detail::byte_range;
    const std::int64_t tiles = params.layout == placement::packed ? max_rows / params.block_size : 0;
    if (frugal::detail::any_overlap(frugal::detail::ranges(byte_range(out.counts, experts), byte_range(out.dropped, experts), byte_range(out.offsets, experts + 1),
                             byte_range(out.offsets64, experts + 1), byte_range(out.slot_to_row, slots), byte_range(out.row_to_slot, max_rows),
                             byte_range(out.expanded_to_row, slots), byte_range(out.row_to_expanded, max_rows),
                             byte_range(out.row_to_token, max_rows), byte_range(out.tile_experts, tiles), byte_range(out.total_rows, 1),
                             byte_range(out.id_errors, 2)),
                            frugal::detail::ranges(byte_range(ids, slots), byte_range(weights, weights ? slots : 0),
                             byte_range(given_workspace, std::int64_t(needed)))))
      return status::invalid("frugal::moe::plan: the outputs must not overlap each other, the ids, the weights or the workspace");
  }

  if (params.max_blocks < 0) return status::invalid("frugal::moe::plan: max_blocks must be >= 0 (0: the whole device)");
  const auto kernel = detail::plan_kernel<IdT>;
  int most_blocks = 0;
  FRUGAL_TRY(detail::plan_grid_limit(kernel, most_blocks));
  if (params.max_blocks > 0 && params.max_blocks < most_blocks) most_blocks = params.max_blocks;

  detail::plan_problem p;
  p.tokens = tokens;
  p.k = k;
  p.experts = experts;
  p.slots = slots;
  p.capacity = capacity;
  p.max_rows = max_rows;
  p.by_priority = capacity > 0 && (params.policy == drop_policy::slot_major ||
                                   params.policy == drop_policy::weight_priority || params.policy == drop_policy::random);
  p.params = params;
  detail::plan_tiling(p, most_blocks);
  detail::carve_plan_workspace(workspace, p);
  const unsigned blocks = unsigned(p.tiles > 0 ? p.tiles : 1);
  return launch_cooperative(kernel, launch_config{dim3(blocks), dim3(detail::plan_threads), 0, stream}, ids, weights, p, out);
}

}  // namespace frugal::moe

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
#include <frugal/core/numeric.cuh>
#include <frugal/moe/detail/plan_kernels.cuh>
#include <frugal/moe/dispatch_config.cuh>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <type_traits>

namespace frugal::moe {

namespace detail {
// The most plan blocks resident at once on the current device for `experts` experts (the shared
// memory grows with them). It depends only on the device and the shared memory, and the occupancy
// query costs microseconds of host time a 5-microsecond plan cannot spare: cached per device and
// per 256 experts, asked for the largest expert count of that step. The kernel's dynamic shared
// memory limit is raised to that step's size when needed and never lowered (under a lock, so
// that concurrent plans of different sizes cannot undo each other), within what the device
// allows. No call here synchronises or allocates, so a plan can be captured in a CUDA graph.
template <class Kernel>
status plan_grid_limit(Kernel kernel, int experts, int& blocks) {
  constexpr int steps = plan_max_experts / 256, devices = 64;
  static std::atomic<int> cached[devices][steps] = {};  // 0 = not asked yet
  static std::size_t allowed[devices] = {};             // the kernel's raised limit, per device
  static std::mutex raising;
  int device = 0;
  FRUGAL_TRY(status::from_cuda(cudaGetDevice(&device)));
  const int step = (experts - 1) / 256;
  const bool cacheable = device >= 0 && device < devices;
  if (cacheable && (blocks = cached[device][step].load(std::memory_order_relaxed)) > 0) return status{};
  const std::size_t bytes = plan_shared_bytes((step + 1) * 256);
  {
    std::lock_guard<std::mutex> lock(raising);
    if (!cacheable || allowed[device] < bytes) {
      int optin = 0;
      FRUGAL_TRY(status::from_cuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device)));
      if (bytes + sizeof(plan_collectives) > std::size_t(optin))
        return status::unsupported("frugal::moe::plan: this many experts need more shared memory per block than the device has");
      FRUGAL_TRY(allow_dynamic_shared(kernel, bytes));
      if (cacheable) allowed[device] = bytes;
    }
  }
  FRUGAL_TRY(cooperative_grid_blocks(kernel, plan_threads, bytes, blocks));
  if (cacheable) cached[device][step].store(blocks, std::memory_order_relaxed);
  return status{};
}
}  // namespace detail

//! Plans the dispatch of ids [T, k] (global expert ids; -1 = not routed here) to E experts.
//!
//! Every routed entry (slot t * k + j) gets a rank inside its expert in token order; the drop
//! policy decides which entries an expert over capacity keeps (`weights` [T, k], float, __half or
//! __nv_bfloat16, are needed for drop_policy::weight_priority; nullptr otherwise), and kept
//! entries keep their token order. Dropped entries
//! are counted per expert (out.dropped), never silently lost. Outputs are described in
//! plan_outputs; the row arrays need plan_max_rows(T, k, E, params) entries.
//!
//! Rules for malformed ids: an id outside [-1, E) is treated as not routed, a repeated id within
//! a token is a separate entry; both are counted in out.id_errors. Nothing is written out of
//! bounds. Two-phase workspace (any alignment: the plan aligns it); one cooperative launch (grid barriers between the phases, as many
//! blocks as the device holds at once, at most one per 256 slots); deterministic.
template <class IdT, class W>
status plan(void* workspace, std::size_t& workspace_bytes, const IdT* ids, const W* weights, const plan_outputs& out,
            const plan_shape& shape, const plan_params& params = {}, cudaStream_t stream = nullptr) {
  static_assert(std::is_same_v<IdT, std::int32_t> || std::is_same_v<IdT, std::int64_t>,
                "frugal::moe::plan: ids must be int32 or int64");
  static_assert(is_io_float_v<W>, "frugal::moe::plan: weights must be float, __half or __nv_bfloat16");
  const std::int64_t tokens = shape.tokens;
  const int k = shape.k, experts = shape.experts;
  if (tokens < 0) return status::invalid("frugal::moe::plan: tokens must be >= 0");
  if (k < 1 || k > 32) return status::invalid("frugal::moe::plan: k must be in [1, 32]");
  if (experts < 1 || experts > detail::plan_max_experts) return status::invalid("frugal::moe::plan: experts must be in [1, 4096]");
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
  const auto kernel = detail::plan_kernel<IdT, W>;
  int most_blocks = 0;
  FRUGAL_TRY(detail::plan_grid_limit(kernel, experts, most_blocks));
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
  return launch_cooperative(kernel, launch_config{dim3(blocks), dim3(detail::plan_threads), detail::plan_shared_bytes(experts), stream},
                            ids, weights, p, out);
}

//! plan() without weights (every drop policy but weight_priority).
template <class IdT>
status plan(void* workspace, std::size_t& workspace_bytes, const IdT* ids, std::nullptr_t, const plan_outputs& out, const plan_shape& shape,
            const plan_params& params = {}, cudaStream_t stream = nullptr) {
  return plan(workspace, workspace_bytes, ids, static_cast<const float*>(nullptr), out, shape, params, stream);
}

}  // namespace frugal::moe

// SPDX-License-Identifier: Apache-2.0
//! @file
//! Options and outputs of the dispatch plan (frugal::moe::plan), and the host-side arithmetic
//! that sizes its outputs. Thread level: usable from plain C++.
#pragma once

#include <frugal/config.cuh>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace frugal::moe {

//! Which entries an over-full expert keeps (all keep their token order inside the expert).
enum class drop_policy {
  none,             //!< dropless: every routed entry is kept (capacity ignored)
  token_order,      //!< earlier tokens first (flat order t * k + j)
  slot_major,       //!< all first choices before any second choice (GShard, Tutel): order j * T + t
  weight_priority,  //!< larger routing weight first, ties to the earlier entry (batch prioritized routing)
  random,           //!< a seeded random priority per entry (Philox4x32-10 of (seed, flat entry t * k + j))
};

//! Where an expert's kept entries go in the expert-major buffer.
enum class placement {
  packed,  //!< segments back to back, each padded to a multiple of block_size rows (layouts a, b)
  masked,  //!< expert e owns rows [e * capacity, (e + 1) * capacity) (layout c: [E, capacity, H])
};

//! The fill value of row_to_slot for padding rows of a packed plan, as vLLM/SGLang use it: T * k.
//! (Returned by plan_padding_sentinel(T, k).)
FRUGAL_HOST_DEVICE std::int32_t plan_padding_sentinel(std::int64_t tokens, int k) { return std::int32_t(tokens * k); }

struct plan_params {
  drop_policy policy = drop_policy::none;
  //! capacity = ceil(capacity_factor * T * k / E), at least min_capacity, rounded up to a
  //! multiple of capacity_multiple; or `capacity` when it is > 0 (then the factor is ignored).
  float capacity_factor = 0.0f;
  int capacity = 0;
  int min_capacity = 0;
  int capacity_multiple = 1;
  placement layout = placement::packed;
  //! packed: pad every expert's segment to a multiple of block_size rows (1..256), e.g. the GEMM
  //! M-tile; the padding rows hold the sentinel plan_padding_sentinel(T, k).
  int block_size = 1;
  unsigned long long seed = 0;  //!< drop_policy::random
  //! The plan is one cooperative launch: all its blocks must be resident at once. 0 sizes the
  //! grid for the whole device; a positive value caps it, for kernels that run beside others
  //! holding SMs (persistent communication kernels). Fewer blocks give each more slots.
  int max_blocks = 0;
};

//! The capacity a plan uses (0, unbounded, for drop_policy::none with a packed layout).
inline std::int64_t plan_capacity(std::int64_t tokens, int k, int experts, const plan_params& p) {
  if (p.policy == drop_policy::none && p.layout == placement::packed) return 0;
  if (p.capacity > 0) return p.capacity;
  // A capacity above T * k keeps everything, as T * k would: clamp before converting, so an
  // absurd factor cannot overflow the row arithmetic.
  const double slots = double(tokens) * k;
  double c = std::ceil(double(p.capacity_factor) * slots / experts);
  c = c < slots ? c : slots;
  std::int64_t cap = std::int64_t(c) < p.min_capacity ? p.min_capacity : std::int64_t(c);
  const std::int64_t m = p.capacity_multiple > 1 ? p.capacity_multiple : 1;
  return (cap + m - 1) / m * m;
}

//! Rows of the expert-major buffer a plan may use: T*k + E*(block_size-1) (packed; the bound
//! vLLM's sorted_token_ids has) or E * capacity (masked).
inline std::int64_t plan_max_rows(std::int64_t tokens, int k, int experts, const plan_params& p) {
  if (p.layout == placement::masked) return std::int64_t(experts) * plan_capacity(tokens, k, experts, p);
  const std::int64_t slots = tokens * k;
  const std::int64_t cap = plan_capacity(tokens, k, experts, p);
  const std::int64_t kept = cap > 0 && cap * experts < slots ? cap * experts : slots;
  return kept + std::int64_t(experts) * (p.block_size - 1);
}

//! What a plan writes; every pointer may be null except where the entry point says otherwise.
//! "slot" = flat index t * k + j of ids [T, k]; "expanded row" = j * T + t (TensorRT-LLM's order);
//! "row" = a row of the expert-major buffer.
struct plan_outputs {
  std::int32_t* counts = nullptr;           //!< [E] entries kept per expert (without padding)
  std::int32_t* dropped = nullptr;          //!< [E] entries dropped per expert (capacity)
  std::int32_t* offsets = nullptr;          //!< [E + 1] first row of each expert; offsets[E] = rows used
  std::int64_t* offsets64 = nullptr;        //!< [E + 1] the same in int64 (expert_first_token_offset)
  std::int32_t* slot_to_row = nullptr;      //!< [T * k] row of each slot, -1 if dropped or not routed
  std::int32_t* row_to_slot = nullptr;      //!< [max rows] slot of each row (vLLM sorted_token_ids); padding/empty: T * k
  std::int32_t* expanded_to_row = nullptr;  //!< [T * k] by expanded row: TRT unpermuted_row_to_permuted_row, -1 if none
  std::int32_t* row_to_expanded = nullptr;  //!< [max rows] TRT permuted_row_to_unpermuted_row; padding/empty: -1
  std::int32_t* row_to_token = nullptr;     //!< [max rows] source token of each row, for GEMMs that gather; padding/empty: -1
  std::int32_t* tile_experts = nullptr;     //!< [max rows / block_size] expert of each block_size tile; unused: -1
                                            //!< (packed placement only: the masked layout leaves it unwritten)
  std::int32_t* total_rows = nullptr;       //!< [1] rows used (vLLM num_tokens_post_pad)
  //! [2]: number of ids outside [-1, E) (treated as not routed) and of ids repeating an earlier
  //! id of the same token (kept as separate entries). Both 0 for well-formed routing.
  std::int32_t* id_errors = nullptr;
};

//! The sizes of plan, by name (none can take another's place).
struct plan_shape {
  std::int64_t tokens = 0;  //!< T: rows of ids
  int k = 1;                //!< ids per token, 1..32
  int experts = 0;          //!< E, 1..4096
};

//! The sizes of permute, combine and their backwards, by name: T tokens of `hidden` elements
//! with k slots each, and the `rows` rows of the expert-major buffer (plan_max_rows, or
//! E * capacity for the masked placement).
struct dispatch_shape {
  std::int64_t tokens = 0;
  int k = 1;
  int hidden = 0;
  std::int64_t rows = 0;
  //! Elements from one token row to the next in the token-side arrays (permute's x, combine's
  //! out and residual, the backwards' d_out and d_x); 0: hidden. A slice of a wider buffer (the
  //! hidden states inside a fused buffer) needs no copy. A multiple of 16 / sizeof(element).
  std::int64_t ld_tokens = 0;
  //! The same for the expert-major buffer (permute's out, combine's y, d_y); 0: hidden.
  std::int64_t ld_rows = 0;
};

//! The row strides in use (0 in the shape means hidden).
inline std::int64_t token_stride(const dispatch_shape& s) { return s.ld_tokens > 0 ? s.ld_tokens : s.hidden; }
inline std::int64_t row_stride(const dispatch_shape& s) { return s.ld_rows > 0 ? s.ld_rows : s.hidden; }

//! The maps permute and combine read, as a plan wrote them (plan_maps(out) takes them from
//! plan_outputs), int32 or int64 (Index; an engine's own int64 index tensors need no conversion).
//! A map entry outside its range means "nothing there" (docs/moe_dispatch.md).
template <class Index>
struct dispatch_maps_of {
  static_assert(std::is_same_v<Index, std::int32_t> || std::is_same_v<Index, std::int64_t>,
                "frugal::moe::dispatch_maps_of: Index must be int32 or int64");
  const Index* row_to_slot = nullptr;  //!< [rows]: the slot each row holds (padding: T * k)
  const Index* slot_to_row = nullptr;  //!< [T * k]: the row of each slot, -1 for none
  //! [1] on the device, or nullptr: the rows the plan used (plan_outputs::total_rows). Rows at or
  //! past it are neither read nor written, so a buffer sized for the worst case (plan_max_rows)
  //! costs only what the plan used: at decode, a few rows instead of E * (block_size - 1).
  const Index* total_rows = nullptr;
};
//! The plan's maps (int32).
using dispatch_maps = dispatch_maps_of<std::int32_t>;

//! The maps of a plan's outputs.
inline dispatch_maps plan_maps(const plan_outputs& out) { return {out.row_to_slot, out.slot_to_row, out.total_rows}; }

//! What permute writes to padding rows inside the used range (rows no slot fills: a packed
//! segment's round-up, a masked expert's empty places).
enum class padding_rows {
  zeros,      //!< written as zeros (a GEMM over them then adds nothing, whatever it does with them)
  untouched,  //!< not written (for a GEMM that skips them by the plan's counts; saves their bytes)
};

//! The sizes of the expert-choice way back (combine_expert_choice and its backward).
struct expert_choice_shape {
  std::int64_t tokens = 0;  //!< T
  int experts = 0;          //!< E, 1..4096
  int capacity = 0;         //!< places per expert: y has E * capacity rows
  int hidden = 0;
};

}  // namespace frugal::moe

// SPDX-License-Identifier: Apache-2.0
//! @file
//! Block level: an elementwise scoring's value at every bf16 logit x with 2^-27 <= |x| < 2^5, in
//! shared memory (8192 entries, 32 KB), filled by the block with the scoring itself. A lookup
//! returns exactly what the scoring computes on this device, for a few instructions where the
//! exact sigmoid takes about 22 (an expf and an IEEE division): routing with a selection bias
//! (the DeepSeek-V3 gate) scores every logit of the row, and at large T that is most of its work.
//!
//! A bf16 logit has 65536 values; those in the range fill 32 binades of 128 significands per
//! sign. Outside it (|x| < 2^-27, |x| >= 32, infinities, NaN: score_table_holds is false) the
//! caller computes the score; for N(0, 1) logits about 1.5 rows of 256 in 10^6 hold such a number.
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/ordered_key.cuh>
#include <frugal/moe/scoring.cuh>

#include <cmath>
#include <cstdint>

namespace frugal::moe {

//! Entries per sign: 32 binades of 128 bf16 significands.
inline constexpr int score_table_entries_per_sign = 32 * 128;
//! fp32 bits of 2^-27, the smallest magnitude in the table (2^5 is the first beyond it).
inline constexpr std::uint32_t score_table_first_bits = (127u - 27u) << 23;

//! Whether the table holds a logit `x` that holds a bf16 value (exactly, as a widened bf16 does):
//! 2^-27 <= |x| < 2^5, false for NaN. (Two compares, which the GPU accumulates into one
//! predicate over a row's logits.)
FRUGAL_HOST_DEVICE bool score_table_holds(float x) {
  const float magnitude = std::fabs(x);
  return magnitude >= 0x1p-27f && magnitude < 32.0f;
}

//! The table entry of such a logit: its fp32 bits 16 to 27 (the 7 bf16 significand bits and the
//! low 5 exponent bits) and the sign above them, negative logits in [4096, 8192). The 32
//! exponents held, 100 to 131, differ in their low 5 bits, so no subtraction is needed.
//! Meaningless (but in [0, 8192)) where score_table_holds(x) is false, so that a lookup never
//! needs a branch.
FRUGAL_HOST_DEVICE int score_table_entry(float x) {
  const std::uint32_t bits = float_bits(x);
  return int(((bits >> 16) & 4095u) | ((bits >> 19) & 4096u));
}

//! 4 * score_table_entry(x), the entry's byte offset, for a logit x that is a bf16 value widened
//! to fp32 (its low 16 bits zero, which put zeros in the offset's low 2 bits): two shifts and one
//! bit select, which the shared-memory load adds to the table's address itself. (bits >> 17) is
//! below 2^15, so its bits above the low 14 are the sign alone.
FRUGAL_HOST_DEVICE std::uint32_t score_table_offset_of_bf16(float x) {
  const std::uint32_t bits = float_bits(x);
  constexpr std::uint32_t low = 0x3fffu;
#if defined(__CUDA_ARCH__)
  // Written as the bit select itself: from the plain expression nvcc derives a second mask
  // constant, (bits >> 17) & 0x4000, which costs a third logic op.
  std::uint32_t offset;
  asm("lop3.b32 %0, %1, %2, %3, 0xe4;" : "=r"(offset) : "r"(bits >> 14), "r"(bits >> 17), "n"(low));
  return offset;
#else
  return ((bits >> 14) & low) | ((bits >> 17) & ~low);
#endif
}

//! The bf16 logit (widened to fp32) that entry `i` (0 <= i < 8192) stands for.
FRUGAL_HOST_DEVICE float score_table_logit(int i) {
  const std::uint32_t entry = std::uint32_t(i);
  const std::uint32_t sign = (entry & std::uint32_t(score_table_entries_per_sign)) << 19;
  constexpr std::uint32_t first_exponent = score_table_first_bits >> 23;
  const std::uint32_t exponent = first_exponent + (((entry >> 7) - first_exponent) & 31u);
  return bit_cast<float>(sign | (exponent << 23) | ((entry & 127u) << 16));
}

//! No table: warp_route computes every score (the default).
struct no_score_table {};

#if FRUGAL_KERNEL_CODE

//! The table of Scoring (an elementwise scoring, a pure function of the logit) over bf16 logits.
//! CUB's shape: the block provides the TempStorage (__shared__), constructs the table on it and
//! calls fill() once; then any warp of the block passes it to warp_route.
template <class Scoring>
class bf16_score_table {
  static_assert(scoring_kind_of<Scoring> == scoring_kind::elementwise,
                "frugal::moe::bf16_score_table: Scoring must be elementwise (a function of the logit alone)");

 public:
  using scoring = Scoring;
  static constexpr int entries = 2 * score_table_entries_per_sign;
  struct TempStorage {
    float score[entries];
  };

  FRUGAL_DEVICE explicit bf16_score_table(TempStorage& storage) : storage_(storage) {}

  //! Scores every entry with Scoring itself. Every thread of the block calls it; it returns when
  //! the table is complete (one __syncthreads).
  FRUGAL_DEVICE void fill() const {
    const int threads = int(blockDim.x * blockDim.y * blockDim.z);
    const int thread = int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    for (int i = thread; i < entries; i += threads) storage_.score[i] = Scoring{}(score_table_logit(i));
    __syncthreads();
  }

  //! The score at entry `i` (score_table_entry of the logit).
  FRUGAL_DEVICE float at(int i) const { return storage_.score[i]; }

  //! at(score_table_entry(x)) for a logit x that is a bf16 value widened to fp32 (as warp_route's
  //! plain bf16 logits are; then the load stays inside the table, held or not), one instruction
  //! fewer: no scaling of the entry.
  FRUGAL_DEVICE float score_of_bf16(float x) const {
    const char* bytes = reinterpret_cast<const char*>(storage_.score);
    return *reinterpret_cast<const float*>(bytes + score_table_offset_of_bf16(x));
  }

 private:
  TempStorage& storage_;
};

#endif  // FRUGAL_KERNEL_CODE

}  // namespace frugal::moe

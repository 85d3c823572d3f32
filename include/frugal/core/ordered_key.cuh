// SPDX-License-Identifier: Apache-2.0
//! @file
//! Thread level: a 64-bit key that orders (value, index) pairs the way frugal selects them.
//!
//! key(v, i) > key(w, j)  iff  v > w, or v == w and i < j, where NaN is smaller than every number
//! (all NaNs are equal to each other) and -0.0 == +0.0. Keys of distinct indices are distinct, so
//! "the k largest keys" is a well-defined set with no ties left: selecting keys gives the tie rule
//! "lower index wins" and distinct indices for free. Key 0 is never produced; it marks an empty slot.
#pragma once

#include <frugal/config.cuh>

#include <cstdint>
#include <cstring>

namespace frugal {

using topk_key = unsigned long long;

//! The empty key: smaller than the key of any (value, index).
inline constexpr topk_key empty_topk_key = 0;

//! Largest index a key can carry.
inline constexpr std::uint32_t max_topk_index = 0xfffffffeu;

template <class To, class From>
FRUGAL_HOST_DEVICE To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "frugal::bit_cast: sizes differ");
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

FRUGAL_HOST_DEVICE std::uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  return bit_cast<std::uint32_t>(x);
#endif
}

//! x itself, through an empty asm on the GPU: the compiler cannot relate the result to x, so it
//! recomputes what it derives from it instead of keeping earlier results alive.
FRUGAL_HOST_DEVICE float launder(float x) {
#if defined(__CUDA_ARCH__)
  asm("" : "+f"(x));
#endif
  return x;
}

//! Maps fp32 to uint32 so that unsigned order is value order: NaN -> 0, -0.0 -> +0.0.
//! Branch-free (it runs once per routed logit): adding +0.0 turns -0.0 into +0.0 (round to
//! nearest), then negative values flip every bit and the others only the sign bit.
FRUGAL_HOST_DEVICE std::uint32_t ordered_bits(float x) {
  const std::uint32_t b = float_bits(x + 0.0f);
  const std::uint32_t flip = std::uint32_t(std::int32_t(b) >> 31) | 0x80000000u;
  return x != x ? 0u : b ^ flip;
}

//! Inverse of ordered_bits (0 decodes to a NaN, the canonical zero to +0.0). Branch-free: ordered
//! bits with the top bit set came from a value >= +0.0 (flip it back), the others from a negative
//! value (flip every bit).
FRUGAL_HOST_DEVICE float from_ordered_bits(std::uint32_t o) {
  const std::uint32_t nonnegative = std::uint32_t(std::int32_t(o) >> 31);
  return bit_cast<float>(o ^ (~nonnegative | 0x80000000u));
}

FRUGAL_HOST_DEVICE topk_key make_topk_key(float value, std::uint32_t index) {
  return (topk_key(ordered_bits(value)) << 32) | topk_key(0xffffffffu - index);
}

//! a > b, written so that the compiler keeps one comparison per use: plain `a > b` on 64-bit keys
//! gets rewritten into separate max and min patterns, each with its own two-instruction compare.
FRUGAL_HOST_DEVICE bool key_greater(topk_key a, topk_key b) {
#if defined(__CUDA_ARCH__)
  unsigned greater;
  asm("{\n\t.reg .pred p;\n\tsetp.gt.u64 p, %1, %2;\n\tselp.u32 %0, 1, 0, p;\n\t}" : "=r"(greater) : "l"(a), "l"(b));
  return greater != 0;
#else
  return a > b;
#endif
}

//! A 32-bit key for values whose fp32 bits end in at least ZeroBits zeros (bf16 converted to fp32:
//! 16, fp16: 13): the value's bits above them, as an offset-binary number, and the index below,
//! in the same order as topk_key. Selecting on half as many bits halves the selection's work.
//! Index < 2^ZeroBits - 1; 0 is the empty key.
//!
//! The value field is 2^31 + m for a value >= 0 and 2^31 - m for a negative one (m: the bits of
//! |value|), so -0.0 and +0.0 meet at 2^31 with no canonicalising add, and a NaN is 2^ZeroBits,
//! below -inf (2^31 - 0x7f800000). The low ZeroBits bits of m are zero, and so are those of
//! 2^31 - m: the index adds into them without a mask. Six instructions per value on sm_90.
using compact_topk_key = std::uint32_t;

namespace detail {
// The value field less its offset 2^31: m or -m (two's complement), and 2^LowBits - 2^31 for a
// NaN, which takes the bits of the negative "value" of largest magnitude above the low bits.
// (The callers add 2^31 with their index: one constant per item.)
template <int LowBits>
FRUGAL_HOST_DEVICE std::uint32_t signed_magnitude_bits(float value) {
  constexpr std::uint32_t low = (1u << LowBits) - 1u;
  const std::uint32_t bits = value != value ? ~low : float_bits(value);
  const std::uint32_t negative = std::uint32_t(std::int32_t(bits) >> 31);
  return ((bits & 0x7fffffffu) ^ negative) - negative;  // (m ^ negative) - negative: m or -m
}
}  // namespace detail

template <int ZeroBits>
FRUGAL_HOST_DEVICE compact_topk_key make_compact_topk_key(float value, std::uint32_t index) {
  static_assert(ZeroBits >= 1 && ZeroBits <= 16, "frugal::make_compact_topk_key: ZeroBits must be in [1, 16]");
  constexpr std::uint32_t low = (1u << ZeroBits) - 1u;
  return detail::signed_magnitude_bits<ZeroBits>(value) + (0x80000000u + low - index);
}

template <int ZeroBits>
FRUGAL_HOST_DEVICE std::uint32_t compact_topk_key_index(compact_topk_key key) {
  constexpr std::uint32_t low = (1u << ZeroBits) - 1u;
  return low - (key & low);
}

//! The value a compact key holds, as topk_key_value gives it (NaN for a NaN and for the empty
//! key, +0.0 for -0.0).
template <int ZeroBits>
FRUGAL_HOST_DEVICE float compact_topk_key_value(compact_topk_key key) {
  constexpr std::uint32_t low = (1u << ZeroBits) - 1u;
  const std::uint32_t signed_m = (key & ~low) - 0x80000000u;  // m or -m
  const std::uint32_t negative = std::uint32_t(std::int32_t(signed_m) >> 31);
  const std::uint32_t m = (signed_m ^ negative) - negative;
  // The empty key's field, 0, would decode to a magnitude of 2^31.
  return key > low ? bit_cast<float>(m | (negative & 0x80000000u)) : bit_cast<float>(0x7fc00000u);
}

//! A 32-bit key for any fp32 value and an index <= 2^IndexBits - 1: the value's ordered_bits
//! with the low IndexBits bits cleared, and the index below them. Truncation never reverses an
//! order (a strictly larger field means a strictly larger value), but it ties values that differ
//! only in those bits, which the index then orders: selection on these keys is exact only where
//! the winners' fields differ from each other and from every other key's
//! (warp_topk_entry_truncated checks, and falls back to topk_key). Never 0: a NaN's field is
//! 2^IndexBits, below -inf's. About six instructions on sm_90: the add that merges the zeros, the
//! sign shift, two three-input logic ops, and the NaN compare and select.
template <int IndexBits>
FRUGAL_HOST_DEVICE compact_topk_key make_truncated_topk_key(float value, std::uint32_t index) {
  static_assert(IndexBits >= 1 && IndexBits <= 16, "frugal::make_truncated_topk_key: IndexBits must be in [1, 16]");
  constexpr std::uint32_t low = (1u << IndexBits) - 1u;
  // A NaN takes the bits of a negative number whose flip is low + 1 (then the mask and the index
  // are one logic op).
  const std::uint32_t bits = value != value ? ~(low + 1u) : float_bits(value + 0.0f);
  const std::uint32_t ordered = bits ^ (std::uint32_t(std::int32_t(bits) >> 31) | 0x80000000u);
  return (ordered & ~low) | (low - index);
}

FRUGAL_HOST_DEVICE bool key_greater(compact_topk_key a, compact_topk_key b) { return a > b; }

FRUGAL_HOST_DEVICE std::uint32_t topk_key_index(topk_key key) {
  return 0xffffffffu - std::uint32_t(key & 0xffffffffu);
}

FRUGAL_HOST_DEVICE float topk_key_value(topk_key key) {
  return from_ordered_bits(std::uint32_t(key >> 32));
}

}  // namespace frugal

// SPDX-License-Identifier: Apache-2.0
//! @file
//! Thread level: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
//! SC'11), a counter-based generator: the same (counter, key) gives the same four words on any
//! thread, any device and the host, so random choices are reproducible without state.
#pragma once

#include <frugal/config.cuh>

#include <cmath>
#include <cstdint>

namespace frugal {

struct philox_words {
  std::uint32_t v[4];
};

FRUGAL_HOST_DEVICE std::uint32_t mul_hi_u32(std::uint32_t a, std::uint32_t b) {
  return std::uint32_t((std::uint64_t(a) * b) >> 32);
}

//! Philox4x32 with 10 rounds of `counter` under `key`.
FRUGAL_HOST_DEVICE philox_words philox4x32_10(philox_words counter, std::uint32_t key0, std::uint32_t key1) {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u, w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
  std::uint32_t c0 = counter.v[0], c1 = counter.v[1], c2 = counter.v[2], c3 = counter.v[3];
  FRUGAL_UNROLL
  for (int round = 0; round < 10; ++round) {
    const std::uint32_t hi0 = mul_hi_u32(m0, c0), lo0 = m0 * c0;
    const std::uint32_t hi1 = mul_hi_u32(m1, c2), lo1 = m1 * c2;
    c0 = hi1 ^ c1 ^ key0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ key1;
    c3 = lo0;
    key0 += w0;
    key1 += w1;
  }
  return philox_words{{c0, c1, c2, c3}};
}

//! A standard normal sample from two words (Box-Muller; the first word maps to (0, 1], so the
//! logarithm is finite).
FRUGAL_HOST_DEVICE float normal_from_words(std::uint32_t a, std::uint32_t b) {
  const float u1 = (float(a >> 8) + 1.0f) * (1.0f / 16777216.0f);  // (0, 1]
  const float u2 = float(b >> 8) * (1.0f / 16777216.0f);           // [0, 1)
#if defined(__CUDA_ARCH__)
  // cospi needs no large-argument reduction (cosf keeps a local-memory slow path for |x| > 1e5).
  return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
#else
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853071795864769f * u2);
#endif
}

}  // namespace frugal

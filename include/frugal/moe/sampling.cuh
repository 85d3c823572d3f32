// SPDX-License-Identifier: Apache-2.0
//! @file
//! Thread level pieces of sampled routing (frugal::moe::sample_route): the seeded Gumbel noise
//! and the options. Plain arithmetic, shared by the kernels and the host reference.
#pragma once

#include <frugal/config.cuh>
#include <frugal/core/philox.cuh>

#include <cmath>
#include <cstdint>

namespace frugal::moe {

//! Options of sampled routing.
struct sample_params {
  unsigned long long seed = 0;  //!< Philox key
  unsigned offset = 0;          //!< a fourth counter word: a training step, so each step samples afresh
  float temperature = 1.0f;     //!< samples from softmax(logits / temperature); > 0
  const std::uint8_t* row_mask = nullptr;  //!< [T] bytes; 0 marks a padding row (ids -1, log_prob 0)
};

//! 1 / temperature, by which sampled routing multiplies the logits (x = logit * (1 / temperature)).
FRUGAL_HOST_DEVICE float inverse_temperature(const sample_params& p) { return 1.0f / p.temperature; }

//! The standard Gumbel sample -log(-log u) of (token, expert) under the seed and offset, u in
//! (0, 1) from the first Philox4x32-10 word of counter (expert, token low, token high, offset)
//! (24 bits, centred: u = (w >> 8 + 0.5) / 2^24), computed in fp32.
FRUGAL_HOST_DEVICE float gumbel_noise(const sample_params& p, std::int64_t token, int expert) {
  const philox_words counter{{std::uint32_t(expert), std::uint32_t(std::uint64_t(token)), std::uint32_t(std::uint64_t(token) >> 32),
                              p.offset}};
  const philox_words r = philox4x32_10(counter, std::uint32_t(p.seed), std::uint32_t(p.seed >> 32));
  const float u = (float(r.v[0] >> 8) + 0.5f) * (1.0f / 16777216.0f);
#if defined(__CUDA_ARCH__)
  return -logf(-logf(u));
#else
  return -std::log(-std::log(u));
#endif
}

}  // namespace frugal::moe

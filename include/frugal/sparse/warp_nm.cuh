// SPDX-License-Identifier: Apache-2.0
//! @file
//! Warp level N:M pieces for your own kernels: a warp owns 32 consecutive windows of a row (one
//! per lane), loads them, chooses what to keep (sparse/nm.cuh), writes the kept values and
//! assembles the packed indices of its 32 windows with one OR-reduction per 32-bit word; the
//! report of what was wrong goes through atomics. Host SIMT runs them.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/sparse/warp_nm.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/vector_io.cuh>
#include <frugal/core/warp.cuh>
#include <frugal/sparse/nm.cuh>

#include <cstdint>

namespace frugal::sparse {

//! Loads `count` (<= M) elements p[0], p[stride], ... as fp32, `pad` for the rest; one vector
//! access per 16 bytes when `vector` (stride 1, count M, p aligned to the access).
template <int M, class T>
FRUGAL_DEVICE void load_window(const T* p, std::int64_t stride, int count, bool vector, float pad, float (&out)[M]) {
  if (vector) {
    load_floats<M>(p, out);
    return;
  }
  FRUGAL_UNROLL
  for (int i = 0; i < M; ++i) out[i] = i < count ? to_float(p[i * stride]) : pad;
}

//! Each lane holds the kept positions (a bit mask, N set) of window first_window + lane of a row
//! whose packed indices are `row_words` (`words` of them); the warp writes the indices of its 32
//! windows. first_window is a multiple of 32, so the warp's bits start on a word boundary. Lanes
//! past the row pass 0 (zero bits: the row's last word then holds zeros after its windows).
//! Every lane of the warp must call it.
template <class Pattern>
FRUGAL_DEVICE void warp_store_indices(unsigned kept, std::uint32_t* row_words, std::int64_t first_window, std::int64_t words) {
  constexpr int M = Pattern::m, B = Pattern::index_bits, WB = Pattern::window_bits;
  // This window's N indices, WB <= 60 bits, the lowest position in the lowest bits: push from
  // the highest position down.
  std::uint64_t bits = 0;
  FRUGAL_UNROLL
  for (int i = M - 1; i >= 0; --i) bits = ((kept >> i) & 1u) ? (bits << B) | unsigned(i) : bits;
  const int lane = int(lane_index());
  const std::int64_t first_word = first_window / 32 * WB;
  // Not unrolled: nothing in the body is indexed by j, and 15:16 has 60 words.
  for (int j = 0; j < WB; ++j) {  // the warp's 32 * WB bits are WB whole words
    const int d = lane * WB - 32 * j;  // where this lane's bit 0 falls in word j
    const std::uint32_t piece = d >= 32 || d <= -64 ? 0u : d >= 0 ? std::uint32_t(bits << d) : std::uint32_t(bits >> -d);
    const std::uint32_t word = warp_or(piece);
    if (lane == j % 32 && first_word + j < words) row_words[first_word + j] = word;
  }
}

//! Notes a problem in the report: one more, and the lowest position seen.
FRUGAL_DEVICE void report_problem(unsigned long long* count, unsigned long long* first, std::int64_t position) {
  atomicAdd(count, 1ull);
  atomicMin(first, static_cast<unsigned long long>(position));
}

}  // namespace frugal::sparse

// SPDX-License-Identifier: Apache-2.0
//! @file
//! The bytes an argument spans, so that entry points can refuse an output written over an input
//! (or over another output) before launching: an in-place call that the kernel does not support
//! would otherwise return ok and give wrong results. Host code.
#pragma once

#include <frugal/config.cuh>

#include <cstddef>
#include <cstdint>

namespace frugal::detail {

//! [first, last) bytes of an array or a strided matrix; empty for a null pointer or no elements.
struct byte_range {
  std::uintptr_t first = 0, last = 0;
  byte_range() = default;
  //! `count` elements of T from p.
  template <class T>
  byte_range(const T* p, std::int64_t count) {
    if (p == nullptr || count <= 0) return;
    first = reinterpret_cast<std::uintptr_t>(p);
    last = first + std::uintptr_t(count) * sizeof(T);
  }
  //! `rows` x `cols` elements of T with leading dimension ld (rows in the matrix's own order).
  template <class T>
  byte_range(const T* p, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
    if (p == nullptr || rows <= 0 || cols <= 0) return;
    first = reinterpret_cast<std::uintptr_t>(p);
    last = first + std::uintptr_t(((rows - 1) * ld + cols) * std::int64_t(sizeof(T)));
  }
  bool empty() const { return first >= last; }
  bool overlaps(const byte_range& o) const { return !empty() && !o.empty() && first < o.last && o.first < last; }
};

//! A fixed list of ranges: ranges(a, b, c). (A function, not a braced list at the call site:
//! nvcc's front end mangles braced lists of dependent expressions in templates.)
template <std::size_t N>
struct range_list {
  byte_range at[N > 0 ? N : 1];
};
template <class... Ranges>
range_list<sizeof...(Ranges)> ranges(const Ranges&... r) {
  range_list<sizeof...(Ranges)> list;
  std::size_t i = 0;
  ((list.at[i++] = r), ...);
  return list;
}

//! Whether some range of `outputs` overlaps an input or another output.
template <std::size_t N, std::size_t M>
bool any_overlap(const range_list<N>& outputs, const range_list<M>& inputs) {
  for (std::size_t o = 0; o < N; ++o) {
    for (std::size_t i = 0; i < M; ++i)
      if (outputs.at[o].overlaps(inputs.at[i])) return true;
    for (std::size_t p = o + 1; p < N; ++p)
      if (outputs.at[o].overlaps(outputs.at[p])) return true;
  }
  return false;
}

}  // namespace frugal::detail

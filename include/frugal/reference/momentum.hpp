// SPDX-License-Identifier: Apache-2.0
//! @file
//! Host references of the momentum encoder's update and the MoCo queue
//! (frugal/contrast/momentum.cuh): the same fp32 step, element by element, and the queue as a
//! plain ring. Plain C++.
#pragma once

#include <frugal/contrast/contrast_config.cuh>
#include <frugal/core/numeric.cuh>

#include <cmath>
#include <cstdint>
#include <vector>

namespace frugal::reference {

//! key[i] <- round(key[i] + (1 - m) (query[i] - key[i])) in fp32 with one fused multiply-add;
//! copy[i] (if given) <- the same value rounded to C.
template <class K, class Q, class C = float>
void momentum_update(K* key, const Q* query, std::int64_t n, float momentum, C* copy = nullptr) {
  const float w = 1.0f - momentum;
  for (std::int64_t i = 0; i < n; ++i) {
    const float k = to_float(key[i]);
    const float v = std::fma(w, to_float(query[i]) - k, k);
    key[i] = from_float<K>(v);
    if (copy) copy[i] = from_float<C>(v);
  }
}

//! Appends keys [n, dim] to the ring `rows` [capacity, dim] at `head`, one after the other.
template <class T>
void moco_enqueue(std::vector<T>& rows, std::int64_t capacity, int dim, std::int64_t& head, const T* keys, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    for (int c = 0; c < dim; ++c) rows[std::size_t(head * dim + c)] = keys[i * dim + c];
    head = (head + 1) % capacity;
  }
}

}  // namespace frugal::reference

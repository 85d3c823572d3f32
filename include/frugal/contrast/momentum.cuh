// SPDX-License-Identifier: Apache-2.0
//! @file
//! The momentum encoder of MoCo/BYOL-style training (docs/contrastive.md):
//!  - momentum_update: theta_k <- theta_k + (1 - m) (theta_q - theta_k) over a list of parameter
//!    tensors of mixed sizes and element types in one launch (PyTorch's `_foreach_lerp_` with
//!    weight 1 - m, in one kernel), optionally writing a rounded copy of each new key (fp32
//!    master weights, bf16 copies for the forward);
//!  - moco_enqueue: this step's keys into the queue of negatives, over the oldest, with the ring
//!    position kept on the device (capture-safe).
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/contrast/momentum.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/byte_range.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/vector_io.cuh>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__) && !defined(FRUGAL_HOST_SIMT) && CUDART_VERSION < 12010
#error "frugal: frugal/contrast/momentum.cuh passes up to 256 tensor descriptors (12 KB) as kernel parameters, which needs CUDA 12.1 or later"
#endif

namespace frugal::contrast {

//! Element types a momentum tensor may hold.
enum class element_type : std::uint8_t { f32, bf16, f16 };

template <class T>
inline constexpr element_type element_type_of = std::is_same_v<T, float>           ? element_type::f32
                                                : std::is_same_v<T, __nv_bfloat16> ? element_type::bf16
                                                                                   : element_type::f16;

//! One parameter tensor of the momentum encoder: `count` elements of the key (updated in place)
//! and of the query (read), and optionally a copy of the new key in another type.
struct momentum_tensor {
  void* key = nullptr;
  const void* query = nullptr;
  void* key_copy = nullptr;  //!< nullptr: none
  std::int64_t count = 0;
  element_type key_type = element_type::f32, query_type = element_type::f32, copy_type = element_type::bf16;
};

//! A momentum_tensor from typed pointers (float, __nv_bfloat16 or __half each).
template <class K, class Q>
momentum_tensor momentum_pair(K* key, const Q* query, std::int64_t count) {
  static_assert(is_io_float_v<K> && is_io_float_v<Q>, "frugal::contrast::momentum_pair: key and query must be float, __half or __nv_bfloat16");
  momentum_tensor t;
  t.key = key;
  t.query = query;
  t.count = count;
  t.key_type = element_type_of<K>;
  t.query_type = element_type_of<Q>;
  return t;
}

//! momentum_pair() that also writes the new key, rounded, to `key_copy`.
template <class K, class Q, class C>
momentum_tensor momentum_pair(K* key, const Q* query, C* key_copy, std::int64_t count) {
  static_assert(is_io_float_v<C>, "frugal::contrast::momentum_pair: key_copy must be float, __half or __nv_bfloat16");
  momentum_tensor t = momentum_pair(key, query, count);
  t.key_copy = key_copy;
  t.copy_type = element_type_of<C>;
  return t;
}

//! The update of one element, in fp32 (the reference uses it too): k + (1 - m) (q - k), one
//! fused multiply-add, then rounded to the key's type.
FRUGAL_HOST_DEVICE float momentum_step(float key, float query, float one_minus_m) { return fmaf(one_minus_m, query - key, key); }

namespace detail {

inline constexpr int momentum_threads = 256;
inline constexpr int momentum_per_thread = 8;  // elements in flight per thread
inline constexpr std::int64_t momentum_chunk = momentum_threads * momentum_per_thread;
inline constexpr int momentum_batch = 256;  // tensors per launch (the kernel's parameter holds them)

struct momentum_launch {
  momentum_tensor tensors[momentum_batch];
  std::int64_t first_chunk[momentum_batch + 1];  // prefix of the tensors' chunks
  int count;
  float one_minus_m;
};

template <class T>
FRUGAL_DEVICE float load_as_float(const void* p, std::int64_t i) {
  return to_float(static_cast<const T*>(p)[i]);
}

FRUGAL_DEVICE float load_element(const void* p, element_type t, std::int64_t i) {
  switch (t) {
    case element_type::bf16: return load_as_float<__nv_bfloat16>(p, i);
    case element_type::f16: return load_as_float<__half>(p, i);
    default: return load_as_float<float>(p, i);
  }
}

FRUGAL_DEVICE void store_element(void* p, element_type t, std::int64_t i, float v) {
  switch (t) {
    case element_type::bf16: static_cast<__nv_bfloat16*>(p)[i] = from_float<__nv_bfloat16>(v); break;
    case element_type::f16: static_cast<__half*>(p)[i] = from_float<__half>(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

// A block per chunk of one tensor, found by a binary search of the chunk prefix. Each thread
// loads its momentum_per_thread elements (strided by the block, so a warp's accesses coalesce)
// before it stores any.
template <int = 0>  // a template, so that every unit including this header may define it
__global__ void __launch_bounds__(momentum_threads) momentum_kernel(momentum_launch p) {
  const std::int64_t chunk = blockIdx.x;
  int lo = 0, hi = p.count;  // the last tensor whose first chunk is <= chunk
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (p.first_chunk[mid] <= chunk) lo = mid;
    else hi = mid;
  }
  const momentum_tensor& t = p.tensors[lo];
  const std::int64_t base = (chunk - p.first_chunk[lo]) * momentum_chunk;
  float k[momentum_per_thread], q[momentum_per_thread];
  FRUGAL_UNROLL
  for (int u = 0; u < momentum_per_thread; ++u) {
    const std::int64_t i = base + u * momentum_threads + threadIdx.x;
    k[u] = i < t.count ? load_element(t.key, t.key_type, i) : 0.0f;
    q[u] = i < t.count ? load_element(t.query, t.query_type, i) : 0.0f;
  }
  FRUGAL_UNROLL
  for (int u = 0; u < momentum_per_thread; ++u) {
    const std::int64_t i = base + u * momentum_threads + threadIdx.x;
    if (i >= t.count) break;
    const float v = momentum_step(k[u], q[u], p.one_minus_m);
    store_element(t.key, t.key_type, i, v);
    if (t.key_copy) store_element(t.key_copy, t.copy_type, i, v);
  }
}

inline std::size_t element_bytes(element_type t) { return t == element_type::f32 ? 4 : 2; }

}  // namespace detail

//! theta_k <- theta_k + (1 - momentum) (theta_q - theta_k) for every tensor of `tensors` (a host
//! array of `count` descriptors), in fp32 with one fused multiply-add, rounded to each key's
//! type; key_copy, where given, receives the same new value rounded to its own type. One launch
//! per 256 tensors (the descriptors travel in the kernel's parameters: no workspace, no copy, so
//! a CUDA graph can capture it). momentum in [0, 1]; tensors must not overlap one another.
inline status momentum_update(const momentum_tensor* tensors, int count, float momentum, cudaStream_t stream = nullptr) {
  if (count < 0 || (count > 0 && !tensors)) return status::invalid("frugal::contrast::momentum_update: tensors is null or count < 0");
  if (!(momentum >= 0.0f && momentum <= 1.0f)) return status::invalid("frugal::contrast::momentum_update: momentum must be in [0, 1]");
  for (int i = 0; i < count; ++i) {
    const momentum_tensor& t = tensors[i];
    if (t.count < 0) return status::invalid("frugal::contrast::momentum_update: a tensor's count is negative");
    if (t.count > 0 && (!t.key || !t.query)) return status::invalid("frugal::contrast::momentum_update: a tensor's key or query is null");
    using frugal::detail::byte_range;
    const std::int64_t key_bytes = t.count * std::int64_t(detail::element_bytes(t.key_type));
    const byte_range key(static_cast<const unsigned char*>(t.key), key_bytes);
    const byte_range query(static_cast<const unsigned char*>(t.query), t.count * std::int64_t(detail::element_bytes(t.query_type)));
    const byte_range copy(static_cast<const unsigned char*>(t.key_copy), t.key_copy ? t.count * std::int64_t(detail::element_bytes(t.copy_type)) : 0);
    if (key.overlaps(query) || key.overlaps(copy) || copy.overlaps(query))
      return status::invalid("frugal::contrast::momentum_update: a tensor's key, query and key_copy must not overlap");
  }
  for (int first = 0; first < count; first += detail::momentum_batch) {
    detail::momentum_launch p{};
    p.count = count - first < detail::momentum_batch ? count - first : detail::momentum_batch;
    p.one_minus_m = 1.0f - momentum;
    std::int64_t chunks = 0;
    for (int i = 0; i < p.count; ++i) {
      p.tensors[i] = tensors[first + i];
      p.first_chunk[i] = chunks;
      chunks += (p.tensors[i].count + detail::momentum_chunk - 1) / detail::momentum_chunk;
    }
    p.first_chunk[p.count] = chunks;
    if (chunks > INT32_MAX) return status::invalid("frugal::contrast::momentum_update: more than 2^31 chunks of 2048 elements in one batch");
    FRUGAL_TRY(launch(detail::momentum_kernel<>, launch_config{dim3(unsigned(chunks)), dim3(detail::momentum_threads), 0, stream}, p));
  }
  return status{};
}

//! The ring position of a MoCo queue, on the device (zero it once, e.g. with cudaMemset, before
//! the first enqueue). `arrivals` counts the blocks of an enqueue in flight (0 between launches).
struct queue_state {
  std::int64_t head = 0;  //!< the next row to overwrite (the oldest key)
  std::uint32_t arrivals = 0;
};

//! A MoCo queue of negatives: `capacity` rows of `dim` elements, and its ring position.
template <class T>
struct moco_queue {
  T* rows = nullptr;
  std::int64_t capacity = 0;
  int dim = 0;
  queue_state* state = nullptr;
};

namespace detail {

inline constexpr int enqueue_threads = 128;

// A block per written key row: key i goes to row (head + i) mod capacity. Every block reads the
// head before it arrives; the last block to arrive advances the head and resets the count, so
// the head changes only after every block has read it.
template <class T>
__global__ void __launch_bounds__(enqueue_threads)
    moco_enqueue_kernel(const T* __restrict__ keys, std::int64_t n, std::int64_t first_key, moco_queue<T> q) {
  const std::int64_t head = *reinterpret_cast<volatile const std::int64_t*>(&q.state->head);
  const std::int64_t key = first_key + blockIdx.x;
  const std::int64_t row = (head + key) % q.capacity;
  for (int c = int(threadIdx.x); c < q.dim; c += enqueue_threads) q.rows[row * q.dim + c] = keys[key * q.dim + c];
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();  // this block's head read and row writes before its arrival
    // atomicInc wraps the count to 0 at the last arrival: the next launch starts from 0.
    if (atomicInc(&q.state->arrivals, gridDim.x - 1) == gridDim.x - 1) {
      __threadfence();  // every other block's arrival (so its head read) before the new head
      q.state->head = (head + n) % q.capacity;
    }
  }
}

}  // namespace detail

//! Enqueues this step's keys [n, dim] into the queue over its oldest rows and advances the ring
//! position, in one launch, on the device (no host read of the position: capture-safe). When
//! n > capacity only the last `capacity` keys stay (the first n - capacity would be overwritten
//! in the same step) and only those are written. keys must not overlap the queue.
template <class T>
status moco_enqueue(const T* keys, const moco_queue<T>& queue, std::int64_t n, cudaStream_t stream = nullptr) {
  static_assert(is_io_float_v<T>, "frugal::contrast::moco_enqueue: T must be float, __half or __nv_bfloat16");
  if (n < 0 || queue.capacity < 1 || queue.dim < 1 || !queue.rows || !queue.state || (n > 0 && !keys))
    return status::invalid("frugal::contrast::moco_enqueue: n >= 0, a queue of capacity >= 1 and dim >= 1, and non-null keys, rows and state");
  using frugal::detail::byte_range;
  if (byte_range(keys, n * queue.dim).overlaps(byte_range(queue.rows, queue.capacity * queue.dim)) ||
      byte_range(queue.state, 1).overlaps(byte_range(queue.rows, queue.capacity * queue.dim)))
    return status::invalid("frugal::contrast::moco_enqueue: keys and the state must not overlap the queue's rows");
  if (n == 0) return status{};
  const std::int64_t written = n < queue.capacity ? n : queue.capacity;
  if (written > INT32_MAX) return status::invalid("frugal::contrast::moco_enqueue: too many rows for one launch");
  return launch(detail::moco_enqueue_kernel<T>, launch_config{dim3(unsigned(written)), dim3(detail::enqueue_threads), 0, stream}, keys, n,
                n - written, queue);
}

}  // namespace frugal::contrast

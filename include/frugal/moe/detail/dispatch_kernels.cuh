// SPDX-License-Identifier: Apache-2.0
// Kernels that move token rows to the expert-major buffer and back (frugal/moe/permute.cuh,
// frugal/moe/combine.cuh). One 128-thread block per source row, 16-byte vector accesses, fp32
// arithmetic with explicit fused multiply-adds in a fixed order (so the host reference
// reproduces every bit).
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/detail/dispatch_kernels.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/core/block.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/vector_io.cuh>
#include <frugal/core/warp.cuh>

#include <cuda_fp8.h>

#include <cmath>
#include <cstdint>

namespace frugal::moe::detail {

inline constexpr int dispatch_threads = 128;
inline constexpr int dispatch_unroll = 4;  // 16-byte chunks per thread in flight in a row copy
inline constexpr float fp8_e4m3_max = 448.0f;

// The token a row gathers from, or -1 (padding, or a slot outside [0, T*k)). Maps are int32 or
// int64 (Index); every entry is read as int64 and range-checked, so the row arithmetic is int64.
template <class Index>
FRUGAL_DEVICE std::int64_t source_token(const Index* row_to_slot, std::int64_t row, std::int64_t tokens, int k) {
  const std::int64_t s = row_to_slot[row];
  return s >= 0 && s < tokens * k ? s / k : -1;
}

// The rows of the expert-major buffer in use: the plan's device-side total when given (read once
// per block), else all `rows`. Rows at or past it are neither read nor written.
template <class Index>
FRUGAL_DEVICE std::int64_t used_rows(const Index* total_rows, std::int64_t rows) {
  if (!total_rows) return rows;
  const std::int64_t total = *total_rows;
  return total < 0 ? 0 : total < rows ? total : rows;
}

template <class T, int V>
FRUGAL_DEVICE vector<T, V> zero_vector() {
  vector<T, V> v;
  FRUGAL_UNROLL
  for (int j = 0; j < V; ++j) v[j] = from_float<T>(0.0f);
  return v;
}

// The rows one source row is written to, staged in shared memory: a token's k rows (scatter: the
// token row is read once) or the single row that gathers it. row -1: nothing to write.
struct row_targets {
  std::int32_t row[32];
  float scale[32];
};

// The arguments every row-moving kernel shares: the maps, the sizes, and whether padding rows
// inside the used range are written (as zeros).
template <class Index>
struct move_problem {
  std::int64_t tokens;
  int hidden, k;
  const Index* row_to_slot;
  const Index* slot_to_row;
  const Index* total_rows;
  std::int64_t rows;
  bool pad;
  std::int64_t ld_tokens, ld_rows;  // row strides of the token-side and the expert-major arrays
};

// Runs body(src, targets, count) once per source row: every token with its k rows when the
// forward map slot_to_row is given, then the padding rows (no slot writes them) with src null;
// otherwise every row with the token that row_to_slot names. Only rows below the used total.
// The block stages the targets; slot_scale[slot] (float, __half or __nv_bfloat16) scales a
// target when given.
template <class T, class S, class Index, class Body>
FRUGAL_DEVICE void for_each_source(const T* x, const move_problem<Index>& p, const S* slot_scale, row_targets& targets, Body body) {
  const unsigned tid = threadIdx.x;
  const std::int64_t tokens = p.tokens, rows = used_rows(p.total_rows, p.rows);
  const int k = p.k;
  if (p.slot_to_row) {
    for (std::int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
      if (tid < unsigned(k)) {
        const std::int64_t s = t * k + tid;
        const std::int64_t r = p.slot_to_row[s];
        targets.row[tid] = r >= 0 && r < rows ? std::int32_t(r) : -1;  // dropped or out of range: no row
        targets.scale[tid] = slot_scale ? to_float(slot_scale[s]) : 1.0f;
      }
      __syncthreads();
      body(x + t * p.ld_tokens, targets, k);
      __syncthreads();  // the targets are rewritten for the next token
    }
    for (std::int64_t row = blockIdx.x; p.pad && row < rows; row += gridDim.x) {
      if (source_token(p.row_to_slot, row, tokens, k) >= 0) continue;  // a token wrote it
      if (tid == 0) {
        targets.row[0] = std::int32_t(row);
        targets.scale[0] = 1.0f;
      }
      __syncthreads();
      body(static_cast<const T*>(nullptr), targets, 1);
      __syncthreads();
    }
  } else {
    for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
      const std::int64_t token = source_token(p.row_to_slot, row, tokens, k);
      if (token < 0 && !p.pad) continue;  // (block-uniform: every thread reads the same entry)
      if (tid == 0) {
        targets.row[0] = std::int32_t(row);
        targets.scale[0] = slot_scale && token >= 0 ? to_float(slot_scale[p.row_to_slot[row]]) : 1.0f;
      }
      __syncthreads();
      body(token >= 0 ? x + token * p.ld_tokens : nullptr, targets, 1);
      __syncthreads();
    }
  }
}

// out[target] = scale * src for each target (zeros when src is null). scale = slot_scale[slot]
// when given (combine_backward's d_y), applied per target.
template <class T, int V, class S, class Index>
__global__ void __launch_bounds__(dispatch_threads)
    permute_kernel(const T* __restrict__ x, move_problem<Index> p, const S* __restrict__ slot_scale, T* __restrict__ out) {
  __shared__ row_targets targets;
  const int hidden = p.hidden, chunks = hidden / V;
  for_each_source(x, p, slot_scale, targets, [&](const T* src, const row_targets& to, int count) {
    // dispatch_unroll chunks per thread per round: all loads issue before any store, so each
    // thread keeps several 16-byte loads in flight (a row copy is bound by memory latency).
    for (int c0 = int(threadIdx.x); c0 < chunks; c0 += dispatch_unroll * dispatch_threads) {
      vector<T, V> v[dispatch_unroll];
      FRUGAL_UNROLL
      for (int u = 0; u < dispatch_unroll; ++u) {
        const int c = c0 + u * dispatch_threads;
        v[u] = src && c < chunks ? load_vector<V>(src + c * V) : zero_vector<T, V>();
      }
      for (int d = 0; d < count; ++d) {
        const std::int32_t row = to.row[d];
        if (row < 0) continue;
        const float scale = to.scale[d];
        FRUGAL_UNROLL
        for (int u = 0; u < dispatch_unroll; ++u) {
          const int c = c0 + u * dispatch_threads;
          if (c >= chunks) break;
          vector<T, V> w = v[u];
          if (slot_scale && src)
            FRUGAL_UNROLL
            for (int j = 0; j < V; ++j) w[j] = from_float<T>(scale * to_float(w[j]));
          store_vector(out + std::int64_t(row) * p.ld_rows + c * V, w);
        }
      }
    }
  });
}

// fp8 e4m3 with one scale per row (Group = 0) or per Group elements: q = x / s, s = amax / 448
// (1 when amax is 0), saturated to +-448, round to nearest even.
template <class T, int V>
FRUGAL_DEVICE vector<unsigned char, V> quantize_chunk(const vector<T, V>& v, float inv_scale) {
  vector<unsigned char, V> q;
  FRUGAL_UNROLL
  for (int j = 0; j < V; ++j) {
    const __nv_fp8_e4m3 f(to_float(v[j]) * inv_scale);
    q[j] = f.__x;
  }
  return q;
}

FRUGAL_DEVICE float fp8_scale_of(float amax) { return amax > 0.0f ? amax / fp8_e4m3_max : 1.0f; }

template <class T, int V, int Group, class Index>
__global__ void __launch_bounds__(dispatch_threads)
    permute_fp8_kernel(const T* __restrict__ x, move_problem<Index> p, __nv_fp8_e4m3* __restrict__ out, float* __restrict__ scales,
                       std::int64_t scale_block_rows) {  // 0: row-major scales
  __shared__ typename block_reduce<float, dispatch_threads>::TempStorage storage;
  __shared__ row_targets targets;
  const int hidden = p.hidden, chunks = hidden / V;
  auto quantized_row = [&](std::int32_t row) { return reinterpret_cast<unsigned char*>(out + std::int64_t(row) * p.ld_rows); };
  for_each_source(x, p, static_cast<const float*>(nullptr), targets, [&](const T* src, const row_targets& to, int count) {
    if constexpr (Group == 0) {
      // One scale per row: amax over the source row, then quantize (read twice, from L2).
      float amax = 0.0f;
      for (int c = int(threadIdx.x); src && c < chunks; c += dispatch_threads) {
        const auto v = load_vector<V>(src + c * V);
        FRUGAL_UNROLL
        for (int j = 0; j < V; ++j) amax = fmaxf(amax, fabsf(to_float(v[j])));
      }
      amax = block_reduce<float, dispatch_threads>(storage).max(amax);
      const float scale = fp8_scale_of(amax);
      if (threadIdx.x == 0)
        for (int d = 0; d < count; ++d)
          if (to.row[d] >= 0) scales[to.row[d]] = scale;
      for (int c = int(threadIdx.x); c < chunks; c += dispatch_threads) {
        const auto q = quantize_chunk(src ? load_vector<V>(src + c * V) : zero_vector<T, V>(), 1.0f / scale);
        for (int d = 0; d < count; ++d)
          if (to.row[d] >= 0) store_vector(quantized_row(to.row[d]) + c * V, q);
      }
    } else {
      // One scale per Group elements: Group / V lanes share a group, reduce amax among themselves.
      constexpr int lanes_per_group = Group / V;
      static_assert(lanes_per_group >= 1 && lanes_per_group <= 32 && (lanes_per_group & (lanes_per_group - 1)) == 0,
                    "frugal: the fp8 group must span a power-of-two number of vectors, at most a warp");
      // Every lane of every warp runs the same number of iterations (chunks is a multiple of the
      // group, and the loop bound is rounded up to whole warps), so the shuffles stay converged.
      const int rounded = (chunks + dispatch_threads - 1) / dispatch_threads * dispatch_threads;
      for (int c = int(threadIdx.x); c < rounded; c += dispatch_threads) {
        const bool in_row = c < chunks;
        const vector<T, V> v = in_row && src ? load_vector<V>(src + c * V) : zero_vector<T, V>();
        float amax = 0.0f;
        FRUGAL_UNROLL
        for (int j = 0; j < V; ++j) amax = fmaxf(amax, fabsf(to_float(v[j])));
        amax = warp_max<lanes_per_group>(amax);
        const float scale = fp8_scale_of(amax);
        if (!in_row) continue;
        const auto q = quantize_chunk(v, 1.0f / scale);
        for (int d = 0; d < count; ++d) {
          const std::int32_t row = to.row[d];
          if (row < 0) continue;
          store_vector(quantized_row(row) + c * V, q);
          if (c % lanes_per_group == 0) {
            const std::int64_t groups = hidden / Group, g = c / lanes_per_group, b = scale_block_rows;
            scales[b > 0 ? (row / b) * groups * b + g * b + row % b : std::int64_t(row) * groups + g] = scale;
          }
        }
      }
    }
  });
}

// The rows a token sums in combine, and their weights, written by load() to shared row_of /
// weight_of in summation order (every thread calls it; it ends with a __syncthreads and returns
// the count, the same in every thread).
//
// A token-choice plan: the token's k slots, in slot order.
template <class W, class Index>
struct token_choice_slots {
  static constexpr int max_slots = 32;
  struct TempStorage {};
  const Index* slot_to_row;
  const W* weights;  // [T, k] (float, __half or __nv_bfloat16) or nullptr (1)
  const Index* total_rows;  // the rows in use, or nullptr (all `rows`)
  std::int64_t rows;
  int k;
  FRUGAL_DEVICE int load(std::int64_t t, std::int32_t* row_of, float* weight_of, TempStorage&) const {
    if (threadIdx.x < unsigned(k)) {
      const std::int64_t s = t * k + threadIdx.x, used = used_rows(total_rows, rows);
      const std::int64_t r = slot_to_row[s];
      row_of[threadIdx.x] = r >= 0 && r < used ? std::int32_t(r) : -1;  // dropped or out of range: contributes nothing
      weight_of[threadIdx.x] = weights ? to_float(weights[s]) : 1.0f;
    }
    __syncthreads();
    return k;
  }
};

// Expert choice: the experts whose lists hold the token, in increasing expert order. Expert e's
// list, token_ids[e C, e C + C), holds tokens in increasing order then -1s: a binary search per
// expert, one expert per thread, compacted in order by a block scan.
template <class W>
struct expert_choice_slots {
  static constexpr int max_slots = 4096;  // experts (as many as expert_choice_config allows)
  struct TempStorage {
    typename block_scan<int, dispatch_threads>::TempStorage scan;
  };
  const std::int32_t* token_ids;
  const W* weights;  // [E C] (float, __half or __nv_bfloat16) or nullptr (1)
  int experts, capacity;
  FRUGAL_DEVICE int load(std::int64_t t, std::int32_t* row_of, float* weight_of, TempStorage& storage) const {
    int count = 0;
    for (int e0 = 0; e0 < experts; e0 += dispatch_threads) {
      const int e = e0 + int(threadIdx.x);
      std::int32_t row = -1;
      if (e < experts) {
        const std::int64_t first = std::int64_t(e) * capacity;
        int lo = 0, hi = capacity;  // the first place whose token is not below t (-1 sorts last)
        while (lo < hi) {
          const int mid = (lo + hi) / 2;
          const std::int32_t u = token_ids[first + mid];
          if (u >= 0 && u < t) lo = mid + 1;
          else hi = mid;
        }
        if (lo < capacity && token_ids[first + lo] == t) row = std::int32_t(first + lo);
      }
      int total = 0;
      const int position = block_scan<int, dispatch_threads>(storage.scan).exclusive_sum(row >= 0 ? 1 : 0, total);
      if (row >= 0) {
        row_of[count + position] = row;
        weight_of[count + position] = weights ? to_float(weights[row]) : 1.0f;
      }
      count += total;
      __syncthreads();  // the scan's storage is reused
    }
    return count;
  }
};

// out[t] = residual[t] + sum_j w_j * y[row_j] over the token's rows (Slots), j in order, fp32
// fused multiply-adds.
template <class T, class OutT, int V, class Slots>
__global__ void __launch_bounds__(dispatch_threads)
    combine_kernel(const T* __restrict__ y, std::int64_t ld_y, int hidden, std::int64_t tokens, Slots slots, const OutT* residual,
                   OutT* out, std::int64_t ld_out) {  // residual may be out (in-place add); ld_out is residual's stride too
  __shared__ std::int32_t row_of[Slots::max_slots];
  __shared__ float weight_of[Slots::max_slots];
  __shared__ typename Slots::TempStorage storage;
  const int chunks = hidden / V;
  for (std::int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const int k = slots.load(t, row_of, weight_of, storage);
    for (int c = int(threadIdx.x); c < chunks; c += dispatch_threads) {
      float acc[V];
      FRUGAL_UNROLL
      for (int j = 0; j < V; ++j) acc[j] = 0.0f;
      // dispatch_unroll slots' loads issue before their multiply-adds (latency, as in permute);
      // the multiply-adds stay in slot order.
      for (int slot0 = 0; slot0 < k; slot0 += dispatch_unroll) {
        vector<T, V> v[dispatch_unroll];
        FRUGAL_UNROLL
        for (int u = 0; u < dispatch_unroll; ++u) {
          const std::int32_t r = slot0 + u < k ? row_of[slot0 + u] : -1;
          if (r >= 0) v[u] = load_vector<V>(y + std::int64_t(r) * ld_y + c * V);
        }
        FRUGAL_UNROLL
        for (int u = 0; u < dispatch_unroll; ++u) {
          if (slot0 + u >= k || row_of[slot0 + u] < 0) continue;
          const float w = weight_of[slot0 + u];
          FRUGAL_UNROLL
          for (int j = 0; j < V; ++j) acc[j] = fmaf(w, to_float(v[u][j]), acc[j]);
        }
      }
      if (residual) {
        float res[V];
        load_floats(residual + t * ld_out + c * V, res);
        FRUGAL_UNROLL
        for (int j = 0; j < V; ++j) acc[j] += res[j];
      }
      store_floats(out + t * ld_out + c * V, acc);
    }
    __syncthreads();  // row_of / weight_of are rewritten for the next token
  }
}

// The backward of the expert-choice combine, a warp per row r of token t = token_ids[r]:
// d_y[r] = w[r] d_out[t] (zeros for an empty place), d_weights[r] = <d_out[t], y[r]> (a butterfly
// sum; 0 for an empty place).
template <class T, class G, int V, class W>
__global__ void __launch_bounds__(dispatch_threads)
    expert_choice_combine_backward_kernel(const G* __restrict__ d_out, const T* __restrict__ y, std::int64_t rows, int hidden,
                                          std::int64_t tokens, const std::int32_t* __restrict__ token_ids,
                                          const W* __restrict__ weights, T* __restrict__ d_y, float* __restrict__ d_weights) {
  constexpr int warps = dispatch_threads / 32;
  const int lane = int(threadIdx.x % 32), chunks = hidden / V;
  for (std::int64_t r = std::int64_t(blockIdx.x) * warps + threadIdx.x / 32; r < rows; r += std::int64_t(gridDim.x) * warps) {
    const std::int32_t id = token_ids[r];
    const std::int32_t t = id >= 0 && id < tokens ? id : -1;  // out of range: an empty place, as -1
    const float w = weights ? to_float(weights[r]) : 1.0f;
    const G* g_row = t >= 0 ? d_out + std::int64_t(t) * hidden : nullptr;  // nullptr: an empty place, zeros
    float dot = 0.0f;
    for (int c = lane; c < chunks; c += 32) {
      float g[V];
      FRUGAL_UNROLL
      for (int j = 0; j < V; ++j) g[j] = 0.0f;
      if (g_row) load_floats(g_row + c * V, g);
      if (d_weights && g_row) {
        float yv[V];
        load_floats(y + r * hidden + c * V, yv);
        FRUGAL_UNROLL
        for (int j = 0; j < V; ++j) dot = fmaf(g[j], yv[j], dot);
      }
      if (d_y) {
        FRUGAL_UNROLL
        for (int j = 0; j < V; ++j) g[j] *= w;
        store_floats(d_y + r * hidden + c * V, g);
      }
    }
    if (d_weights) {
      dot = warp_sum(dot);
      if (lane == 0) d_weights[r] = t >= 0 ? dot : 0.0f;
    }
  }
}

// d weights: dw[s] = sum_h d_out[t, h] * y[row(s), h] (0 when the slot has no row); a warp per
// slot, lanes over 16-byte chunks, a butterfly sum.
template <class T, class G, int V, class Index>
__global__ void __launch_bounds__(dispatch_threads)
    combine_weight_grad_kernel(const G* __restrict__ d_out, std::int64_t ld_d_out, const T* __restrict__ y, std::int64_t ld_y,
                               std::int64_t all_rows, int hidden, int k,
                               std::int64_t tokens, const Index* __restrict__ slot_to_row, const Index* __restrict__ total_rows,
                               float* __restrict__ d_weights) {
  constexpr int warps = dispatch_threads / 32;
  const int lane = int(threadIdx.x % 32), chunks = hidden / V;
  const std::int64_t rows = used_rows(total_rows, all_rows);
  for (std::int64_t s = std::int64_t(blockIdx.x) * warps + threadIdx.x / 32; s < tokens * k; s += std::int64_t(gridDim.x) * warps) {
    const std::int64_t r = slot_to_row[s];
    const bool placed = r >= 0 && r < rows;
    const std::int64_t t = s / k;
    float acc = 0.0f;
    for (int c = lane; placed && c < chunks; c += 32) {
      float yv[V], gv[V];
      load_floats(y + r * ld_y + c * V, yv);
      load_floats(d_out + t * ld_d_out + c * V, gv);
      FRUGAL_UNROLL
      for (int j = 0; j < V; ++j) acc = fmaf(gv[j], yv[j], acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) d_weights[s] = placed ? acc : 0.0f;
  }
}

}  // namespace frugal::moe::detail

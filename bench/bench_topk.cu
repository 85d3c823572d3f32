// SPDX-License-Identifier: Apache-2.0
// frugal::topk against a CUB segmented radix sort of every row (then the first k), timed in the
// same binary. Bytes counted for the floor: the matrix read once, values and int32 ids written once.
#include <frugal/topk/device_topk.cuh>

#include <cub/device/device_segmented_radix_sort.cuh>

#include <vector>

#include "support/bench_support.cuh"

namespace {

template <class T>
struct topk_problem {
  std::int64_t rows;
  int cols, k, copies;
  frugal::bench::device_vector<T> logits;
  frugal::bench::device_vector<T> values;
  frugal::bench::device_vector<std::int32_t> ids;

  topk_problem(std::int64_t r, int c, int kk)
      : rows(r), cols(c), k(kk), copies(frugal::bench::rotation_count(std::size_t(r) * c * sizeof(T))),
        logits(std::size_t(r) * c * copies), values(std::size_t(r) * kk), ids(std::size_t(r) * kk) {
    frugal::bench::fill_normal(logits.ptr, logits.count, 1);
  }
  const T* input(int iteration) const { return logits.ptr + std::size_t(iteration % copies) * rows * cols; }
  double bytes() const { return double(rows) * cols * sizeof(T) + double(rows) * k * (sizeof(T) + 4); }
};

template <class T>
void BM_frugal_topk(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  topk_problem<T> p(state.range(0), int(state.range(1)), int(state.range(2)));
  frugal::bench::time_launches(state, nullptr, p.bytes(), [&](int it) {
    return frugal::topk(p.input(it), p.values.ptr, p.ids.ptr, p.rows, p.cols, p.k).ok();
  });
  state.SetLabel(std::string(frugal::type_name<T>()) + " frugal::topk");
}

// Peer: sort every row (keys = values, payload = column) with CUB, descending.
template <class T>
void BM_cub_segmented_sort_topk(benchmark::State& state) {
  if (!frugal::bench::require_device(state)) return;
  topk_problem<T> p(state.range(0), int(state.range(1)), int(state.range(2)));
  const std::size_t n = std::size_t(p.rows) * p.cols;
  frugal::bench::device_vector<T> sorted(n);
  frugal::bench::device_vector<std::int32_t> columns(n), sorted_columns(n), offsets(std::size_t(p.rows) + 1);
  std::vector<std::int32_t> host_columns(n), host_offsets(std::size_t(p.rows) + 1);
  for (std::size_t i = 0; i < n; ++i) host_columns[i] = std::int32_t(i % std::size_t(p.cols));
  for (std::int64_t r = 0; r <= p.rows; ++r) host_offsets[std::size_t(r)] = std::int32_t(r * p.cols);
  cudaMemcpy(columns.ptr, host_columns.data(), n * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(offsets.ptr, host_offsets.data(), host_offsets.size() * 4, cudaMemcpyHostToDevice);
  std::size_t temp_bytes = 0;
  cub::DeviceSegmentedRadixSort::SortPairsDescending(nullptr, temp_bytes, p.input(0), sorted.ptr, columns.ptr,
                                                     sorted_columns.ptr, std::int64_t(n), p.rows, offsets.ptr,
                                                     offsets.ptr + 1);
  frugal::bench::device_vector<unsigned char> temp(temp_bytes);
  frugal::bench::time_launches(state, nullptr, p.bytes(), [&](int it) {
    return cub::DeviceSegmentedRadixSort::SortPairsDescending(temp.ptr, temp_bytes, p.input(it), sorted.ptr, columns.ptr,
                                                              sorted_columns.ptr, std::int64_t(n), p.rows, offsets.ptr,
                                                              offsets.ptr + 1) == cudaSuccess;
  });
  state.SetLabel(std::string(frugal::type_name<T>()) + " cub::DeviceSegmentedRadixSort (peer, full sort)");
}

void topk_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols", "k"});
  for (std::int64_t rows : {256, 16384, 65536})
    for (int cols : {256, 1024})
      for (int k : {8, 32}) b->Args({rows, cols, k});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_frugal_topk<__nv_bfloat16>)->Name("topk/frugal_bf16")->Apply(topk_shapes);
BENCHMARK(BM_frugal_topk<float>)->Name("topk/frugal_f32")->Apply(topk_shapes);
BENCHMARK(BM_cub_segmented_sort_topk<__nv_bfloat16>)->Name("topk/cub_segmented_sort_bf16")->Apply(topk_shapes);

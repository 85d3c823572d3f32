// SPDX-License-Identifier: Apache-2.0
// The momentum encoder's update over a list of mixed tensors and the MoCo queue, bit for bit
// against the host references; the argument checks; the queue replayed from a CUDA graph.
#include <frugal/contrast/momentum.cuh>
#include <frugal/reference/momentum.hpp>

#include <cmath>
#include <cstring>
#include <memory>

#include "support/test_support.hpp"

using namespace frugal;
using test::same_bits;

namespace {

template <class T>
std::vector<T> random_values(std::int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = from_float<T>(normal(rng));
  return v;
}

// One tensor of the list: device key, query and optional copy, and the expected result.
struct any_tensor {
  virtual ~any_tensor() = default;
  virtual contrast::momentum_tensor descriptor() = 0;
  virtual bool matches(float momentum) = 0;
};

template <class K, class Q, class C>
struct typed_tensor : any_tensor {
  std::vector<K> key;
  std::vector<Q> query;
  test::device_buffer<K> d_key;
  test::device_buffer<Q> d_query;
  test::device_buffer<C> d_copy;
  bool with_copy;
  typed_tensor(std::int64_t n, bool copy, std::mt19937_64& rng)
      : key(random_values<K>(n, rng)), query(random_values<Q>(n, rng)), d_key(key), d_query(query),
        d_copy(copy ? std::size_t(n) : 0), with_copy(copy) {}
  contrast::momentum_tensor descriptor() override {
    return with_copy ? contrast::momentum_pair(d_key.data(), static_cast<const Q*>(d_query.data()), d_copy.data(), std::int64_t(key.size()))
                     : contrast::momentum_pair(d_key.data(), static_cast<const Q*>(d_query.data()), std::int64_t(key.size()));
  }
  bool matches(float momentum) override {
    std::vector<K> expected = key;
    std::vector<C> copy(key.size());
    reference::momentum_update(expected.data(), query.data(), std::int64_t(key.size()), momentum, copy.data());
    return same_bits(d_key.download(), expected) && (!with_copy || same_bits(d_copy.download(), copy));
  }
};

void check_list(std::vector<std::unique_ptr<any_tensor>>& tensors, float momentum) {
  std::vector<contrast::momentum_tensor> list;
  for (auto& t : tensors) list.push_back(t->descriptor());
  FRUGAL_REQUIRE_OK(contrast::momentum_update(list.data(), int(list.size()), momentum));
  test::synchronize();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    INFO("tensor " << i << " momentum " << momentum);
    CHECK(tensors[i]->matches(momentum));
  }
}

}  // namespace

TEST_CASE("momentum_update: mixed sizes and element types in one launch, bit for bit (fp32 masters with bf16 copies)") {
  FRUGAL_SEEDED_RNG(rng, 10);
  for (float momentum : {0.999f, 0.9f, 0.0f, 1.0f}) {
    std::vector<std::unique_ptr<any_tensor>> tensors;
    tensors.push_back(std::make_unique<typed_tensor<float, float, float>>(100003, false, rng));
    tensors.push_back(std::make_unique<typed_tensor<float, float, __nv_bfloat16>>(5000, true, rng));  // master + bf16 copy
    tensors.push_back(std::make_unique<typed_tensor<__nv_bfloat16, __nv_bfloat16, float>>(2049, false, rng));
    tensors.push_back(std::make_unique<typed_tensor<__half, float, float>>(2048, false, rng));
    tensors.push_back(std::make_unique<typed_tensor<float, __half, __half>>(7, true, rng));
    tensors.push_back(std::make_unique<typed_tensor<float, float, float>>(0, false, rng));  // an empty tensor
    tensors.push_back(std::make_unique<typed_tensor<__nv_bfloat16, float, float>>(1, false, rng));
    check_list(tensors, momentum);
  }
}

TEST_CASE("momentum_update: more tensors than one launch holds (300 small ones, 3 launches of 256 at most)") {
  FRUGAL_SEEDED_RNG(rng, 11);
  std::vector<std::unique_ptr<any_tensor>> tensors;
  for (int i = 0; i < 300; ++i) tensors.push_back(std::make_unique<typed_tensor<float, __nv_bfloat16, float>>(1 + i % 37, false, rng));
  check_list(tensors, 0.99f);
}

TEST_CASE("momentum_update: argument checks") {
  test::device_buffer<float> a(16), b(16);
  auto t = contrast::momentum_pair(a.data(), static_cast<const float*>(b.data()), 16);
  CHECK(contrast::momentum_update(&t, 1, NAN).code() == errc::invalid_argument);
  CHECK(contrast::momentum_update(&t, 1, 1.5f).code() == errc::invalid_argument);
  CHECK(contrast::momentum_update(nullptr, 1, 0.9f).code() == errc::invalid_argument);
  FRUGAL_REQUIRE_OK(contrast::momentum_update(nullptr, 0, 0.9f));
  auto overlapping = contrast::momentum_pair(a.data(), static_cast<const float*>(a.data() + 8), 16);
  CHECK(std::strstr(contrast::momentum_update(&overlapping, 1, 0.9f).message(), "overlap") != nullptr);
  auto null_query = contrast::momentum_pair(a.data(), static_cast<const float*>(nullptr), 16);
  CHECK(contrast::momentum_update(&null_query, 1, 0.9f).code() == errc::invalid_argument);
}

TEST_CASE("moco_enqueue: the ring against a host ring, including more keys than the queue holds") {
  FRUGAL_SEEDED_RNG(rng, 12);
  const std::int64_t capacity = 10;
  const int dim = 5;
  std::vector<float> rows(std::size_t(capacity * dim), 0.0f);
  std::int64_t head = 0;
  test::device_buffer<float> d_rows(rows);
  test::device_buffer<contrast::queue_state> state(1);
  state.fill_bytes(0);
  const contrast::moco_queue<float> queue{d_rows.data(), capacity, dim, state.data()};
  for (std::int64_t n : {3, 3, 3, 0, 4, 25, 1, 10}) {
    const auto keys = random_values<float>(n * dim, rng);
    test::device_buffer<float> d_keys(keys);
    FRUGAL_REQUIRE_OK(contrast::moco_enqueue(d_keys.data(), queue, n));
    test::synchronize();
    reference::moco_enqueue(rows, capacity, dim, head, keys.data(), n);
    INFO("after enqueuing " << n);
    CHECK(same_bits(d_rows.download(), rows));
    const auto s = state.download()[0];
    CHECK(s.head == head);
    CHECK(s.arrivals == 0u);
  }
  test::device_buffer<float> keys(8);
  CHECK(contrast::moco_enqueue(keys.data(), contrast::moco_queue<float>{d_rows.data(), 0, dim, state.data()}, 1).code() ==
        errc::invalid_argument);
  CHECK(std::strstr(contrast::moco_enqueue(d_rows.data() + 5, queue, 1).message(), "overlap") != nullptr);
}

TEST_CASE("moco_enqueue and momentum_update captured in a CUDA graph: each replay advances the ring") {
  const std::int64_t capacity = 6;
  const int dim = 8;
  std::vector<__nv_bfloat16> rows(std::size_t(capacity * dim), from_float<__nv_bfloat16>(0.0f));
  std::int64_t head = 0;
  FRUGAL_SEEDED_RNG(rng, 13);
  const auto keys = random_values<__nv_bfloat16>(4 * dim, rng);
  test::device_buffer<__nv_bfloat16> d_rows(rows), d_keys(keys);
  test::device_buffer<contrast::queue_state> state(1);
  state.fill_bytes(0);
  std::vector<float> key(64, 1.0f), query(64, 3.0f);
  test::device_buffer<float> d_key(key), d_query(query);
  const auto tensor = contrast::momentum_pair(d_key.data(), static_cast<const float*>(d_query.data()), 64);
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
  const status a = contrast::momentum_update(&tensor, 1, 0.5f, stream);
  const status b = contrast::moco_enqueue(static_cast<const __nv_bfloat16*>(d_keys.data()),
                                          contrast::moco_queue<__nv_bfloat16>{d_rows.data(), capacity, dim, state.data()}, 4, stream);
  REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  FRUGAL_REQUIRE_OK(a);
  FRUGAL_REQUIRE_OK(b);
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  for (int replay = 0; replay < 3; ++replay) {
    REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    reference::moco_enqueue(rows, capacity, dim, head, keys.data(), 4);
    reference::momentum_update(key.data(), query.data(), 64, 0.5f);
    CHECK(same_bits(d_rows.download(), rows));
    CHECK(state.download()[0].head == head);
    CHECK(same_bits(d_key.download(), key));
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

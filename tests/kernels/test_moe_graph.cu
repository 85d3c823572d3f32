// SPDX-License-Identifier: Apache-2.0
// The MoE layer's data movement captured in a CUDA graph, as vLLM, SGLang and TensorRT-LLM run
// decode steps: route -> plan -> permute -> combine recorded once on a stream in global capture
// mode (the strictest: any synchronising or allocating call fails the capture), then replayed on
// new logits and inputs, bit for bit against direct calls. Host SIMT emulates stream capture
// with CUDA's rules, so this shows here that the entry points are capture-safe; the device tier
// runs the same test on a GPU.
#include <frugal/moe/combine.cuh>
#include <frugal/moe/device_route.cuh>
#include <frugal/moe/permute.cuh>
#include <frugal/moe/plan.cuh>

#include <cstring>

#include "support/test_support.hpp"

using namespace frugal;
using test::same_bits;

namespace {

using graph_route = moe::route_config<64, 6, moe::sigmoid_scoring, 8, 4>;  // DeepSeek-like, grouped

// Fixed device buffers of one layer, as a graph needs (its pointers are baked in at capture).
struct moe_step {
  std::int64_t tokens;
  int hidden;
  moe::plan_params params;
  std::int64_t rows;
  test::device_buffer<float> logits;
  test::device_buffer<std::int32_t> ids;
  test::device_buffer<float> weights;
  test::device_buffer<std::int32_t> slot_to_row, row_to_slot, offsets, total_rows;
  std::size_t workspace_bytes;
  test::device_buffer<unsigned char> workspace;
  test::device_buffer<__nv_bfloat16> x, permuted, out;

  moe_step(std::int64_t t, int h, moe::plan_params p)
      : tokens(t), hidden(h), params(p), rows(moe::plan_max_rows(t, graph_route::k, graph_route::experts, p)),
        logits(std::size_t(t * graph_route::experts)), ids(std::size_t(t * graph_route::k)),
        weights(std::size_t(t * graph_route::k)), slot_to_row(std::size_t(t * graph_route::k)),
        row_to_slot(std::size_t(rows)), offsets(graph_route::experts + 1), total_rows(1),
        workspace_bytes(workspace_size(t, p)), workspace(workspace_bytes), x(std::size_t(t * h)),
        permuted(std::size_t(rows * h)), out(std::size_t(t * h)) {}

  static std::size_t workspace_size(std::int64_t t, const moe::plan_params& p) {
    std::size_t bytes = 0;
    FRUGAL_REQUIRE_OK(moe::plan(nullptr, bytes, static_cast<const std::int32_t*>(nullptr), nullptr, {},
                                {t, graph_route::k, graph_route::experts}, p));
    return bytes;
  }

  // The whole step on `stream`: nothing here may synchronise, allocate or touch another stream.
  status run(cudaStream_t stream) {
    moe::route_params rp;
    rp.routed_scaling = 2.5f;
    FRUGAL_TRY(moe::route<graph_route>(moe::route_inputs<float>{logits.data(), nullptr, 0, graph_route::experts},
                                       moe::route_outputs<std::int32_t, float>{ids.data(), weights.data()}, tokens, rp,
                                       stream));
    moe::plan_outputs po;
    po.slot_to_row = slot_to_row.data();
    po.row_to_slot = row_to_slot.data();
    po.offsets = offsets.data();
    po.total_rows = total_rows.data();
    FRUGAL_TRY(moe::plan(workspace.data(), workspace_bytes, ids.data(), weights.data(), po,
                         {tokens, graph_route::k, graph_route::experts}, params, stream));
    const moe::dispatch_shape shape{tokens, graph_route::k, hidden, rows};
    FRUGAL_TRY(moe::permute(x.data(), moe::plan_maps(po), permuted.data(), shape, moe::padding_rows::zeros, stream));
    // (the experts' GEMMs would run here on `permuted`; the combine reads it back as y)
    return moe::combine(permuted.data(), moe::plan_maps(po), weights.data(), nullptr, out.data(), shape, stream);
  }
};

struct step_inputs {
  std::vector<float> logits;
  std::vector<__nv_bfloat16> x;
};

step_inputs random_inputs(std::int64_t tokens, int hidden, std::mt19937_64& rng) {
  step_inputs in{std::vector<float>(std::size_t(tokens * graph_route::experts)), std::vector<__nv_bfloat16>(std::size_t(tokens * hidden))};
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (auto& v : in.logits) v = normal(rng);
  for (auto& v : in.x) v = from_float<__nv_bfloat16>(normal(rng));
  return in;
}

struct step_outputs {
  std::vector<std::int32_t> ids, total_rows;
  std::vector<float> weights;
  std::vector<__nv_bfloat16> out;
  bool operator==(const step_outputs& o) const {
    return ids == o.ids && total_rows == o.total_rows && same_bits(weights, o.weights) && same_bits(out, o.out);
  }
};

step_outputs outputs_of(const moe_step& s) {
  return {s.ids.download(), s.total_rows.download(), s.weights.download(), s.out.download()};
}

void check_graph_replays(std::int64_t tokens, int hidden, moe::plan_params params, unsigned long long seed) {
  FRUGAL_SEEDED_RNG(rng, seed);
  moe_step step(tokens, hidden, params);
  std::vector<step_inputs> inputs;
  std::vector<step_outputs> direct;
  for (int i = 0; i < 3; ++i) {
    inputs.push_back(random_inputs(tokens, hidden, rng));
    step.logits.upload(inputs.back().logits);
    step.x.upload(inputs.back().x);
    FRUGAL_REQUIRE_OK(step.run(nullptr));
    test::synchronize();
    direct.push_back(outputs_of(step));
  }

  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
  const status captured = step.run(stream);
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  FRUGAL_REQUIRE_OK(captured);
  REQUIRE(ended == cudaSuccess);
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  for (int replay : {2, 0, 1, 1}) {  // new inputs each time, then the same twice
    step.logits.upload(inputs[std::size_t(replay)].logits);
    step.x.upload(inputs[std::size_t(replay)].x);
    step.ids.fill_bytes(0x7f);
    step.weights.fill_bytes(0x7f);
    step.out.fill_bytes(0x7f);
    step.total_rows.fill_bytes(0x7f);
    test::synchronize();  // the uploads and fills ran on the legacy stream, the graph runs on `stream`
    REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    CUDA_REQUIRE(cudaGetLastError());
    INFO("replay of input " << replay);
    CHECK(outputs_of(step) == direct[std::size_t(replay)]);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

}  // namespace

TEST_CASE("MoE step in a CUDA graph: route -> plan -> permute -> combine replays bit for bit (decode)") {
  moe::plan_params params;
  params.block_size = 64;  // vLLM's fused_moe block
  check_graph_replays(8, 256, params, 800);
}

TEST_CASE("MoE step in a CUDA graph: prefill with a capacity and drops") {
  moe::plan_params params;
  params.policy = moe::drop_policy::weight_priority;
  params.capacity_factor = 1.0f;
  params.block_size = 16;
  check_graph_replays(700, 136, params, 801);
}

#if defined(FRUGAL_HOST_SIMT)
// The emulation keeps CUDA's capture rules, or the test above would prove nothing.
TEST_CASE("host SIMT stream capture: synchronising, allocating and legacy-stream calls invalidate a global capture") {
  test::device_buffer<float> buffer(16);
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  cudaGraph_t graph = nullptr;
  auto invalidated_by = [&](auto call, cudaError_t expected) {
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
    CHECK(call() == expected);
    CHECK(cudaStreamEndCapture(stream, &graph) == cudaErrorStreamCaptureInvalidated);
    CHECK(graph == nullptr);
    cudaGetLastError();
  };
  void* p = nullptr;
  float host[16] = {};
  invalidated_by([&] { return cudaMalloc(&p, 64); }, cudaErrorStreamCaptureUnsupported);
  invalidated_by([&] { return cudaMemcpy(host, buffer.data(), 64, cudaMemcpyDeviceToHost); }, cudaErrorStreamCaptureUnsupported);
  invalidated_by([&] { return cudaStreamSynchronize(stream); }, cudaErrorStreamCaptureUnsupported);
  invalidated_by([&] { return cudaDeviceSynchronize(); }, cudaErrorStreamCaptureUnsupported);
  invalidated_by([&] { return cudaMemsetAsync(buffer.data(), 0, 64, nullptr); }, cudaErrorStreamCaptureImplicit);
  // A kernel launched on the legacy stream during the capture (an entry point not given the
  // capturing stream) fails the same way.
  test::device_buffer<std::int32_t> map(std::vector<std::int32_t>{0});
  invalidated_by([&] {
    const status s = moe::permute(buffer.data(), moe::dispatch_maps{map.data(), map.data()}, buffer.data() + 8,
                                  moe::dispatch_shape{1, 1, 8, 1});
    return s.ok() ? cudaSuccess : cudaErrorStreamCaptureImplicit;
  }, cudaErrorStreamCaptureImplicit);
  // Recorded work runs at launch, not at capture.
  std::vector<float> ones(16, 1.0f);
  buffer.upload(ones);
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(buffer.data(), 0, 64, stream) == cudaSuccess);
  REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  CHECK(buffer.download() == ones);
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
  CHECK(buffer.download() == std::vector<float>(16, 0.0f));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}
#endif

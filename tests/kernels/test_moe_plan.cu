// SPDX-License-Identifier: Apache-2.0
// frugal::moe::plan against the reference, every output exactly, for every drop policy and
// placement, block sizes, capacity rules, sizes from one tile to many slots per tile (the grid
// holds at most as many blocks as are resident at once), one-hot experts, malformed ids; plus invariants checked without the reference.
#include <frugal/moe/plan.cuh>
#include <frugal/reference/moe_dispatch.hpp>

#include <climits>
#include <cstring>
#include <set>
#include <string>

#include "support/test_support.hpp"

using namespace frugal;

namespace {

enum class ids_pattern { uniform, skewed, one_hot, with_gaps, malformed };

const char* name(ids_pattern p) {
  switch (p) {
    case ids_pattern::uniform: return "uniform";
    case ids_pattern::skewed: return "skewed";
    case ids_pattern::one_hot: return "one_hot";
    case ids_pattern::with_gaps: return "with_gaps";
    case ids_pattern::malformed: return "malformed";
  }
  return "?";
}

// [T, k] ids, distinct within a token unless `malformed`.
std::vector<std::int32_t> make_ids(ids_pattern p, std::int64_t tokens, int k, int experts, std::mt19937_64& rng) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(tokens * k));
  for (std::int64_t t = 0; t < tokens; ++t) {
    std::set<int> used;
    for (int j = 0; j < k; ++j) {
      int e;
      if (p == ids_pattern::one_hot && j == 0) e = 0;  // every token's first choice is expert 0
      else if (p == ids_pattern::malformed && rng() % 10 == 0) e = rng() % 2 ? experts + int(rng() % 5) : -7;
      else if (p == ids_pattern::malformed && j > 0 && rng() % 10 == 0) e = ids[std::size_t(t * k)];  // duplicate
      else {
        do {
          e = p == ids_pattern::skewed ? int(std::min<std::uint64_t>(rng() % experts, rng() % experts)) : int(rng() % experts);
        } while (k <= experts && used.count(e) && p != ids_pattern::malformed);
      }
      if (p == ids_pattern::with_gaps && rng() % 7 == 0) e = -1;  // padding or another rank's expert
      used.insert(e);
      ids[std::size_t(t * k + j)] = e;
    }
  }
  return ids;
}

struct plan_case {
  ids_pattern pattern = ids_pattern::uniform;
  std::int64_t tokens = 100;
  int k = 2, experts = 8;
  moe::plan_params params;
};

void check_invariants(const reference::plan_result& r, const std::vector<std::int32_t>& ids, const plan_case& c) {
  // Every kept entry appears exactly once, inverse maps invert, counts add up.
  std::int64_t kept = 0, dropped = 0, routed = 0;
  for (int e = 0; e < c.experts; ++e) {
    kept += r.counts[std::size_t(e)];
    dropped += r.dropped[std::size_t(e)];
  }
  for (auto id : ids) routed += id >= 0 && id < c.experts;
  REQUIRE(kept + dropped == routed);
  std::int64_t placed = 0;
  for (std::size_t s = 0; s < r.slot_to_row.size(); ++s) {
    const std::int32_t row = r.slot_to_row[s];
    if (row < 0) continue;
    ++placed;
    REQUIRE(r.row_to_slot[std::size_t(row)] == std::int32_t(s));
    const int e = ids[s];
    REQUIRE(row >= r.offsets[std::size_t(e)]);
    REQUIRE(row < r.offsets[std::size_t(e)] + r.counts[std::size_t(e)]);
  }
  REQUIRE(placed == kept);
  for (std::size_t x = 0; x < r.expanded_to_row.size(); ++x) {  // the expanded-row maps invert each other
    const std::int32_t row = r.expanded_to_row[x];
    if (row >= 0) REQUIRE(r.row_to_expanded[std::size_t(row)] == std::int32_t(x));
  }
  for (int e = 0; e < c.experts; ++e)  // segments in token order
    for (std::int32_t row = r.offsets[std::size_t(e)] + 1; row < r.offsets[std::size_t(e)] + r.counts[std::size_t(e)]; ++row)
      REQUIRE(r.row_to_slot[std::size_t(row)] > r.row_to_slot[std::size_t(row) - 1]);
}

// The device plan of `ids` (int32, or widened to IdT), against the reference and the invariants.
template <class IdT>
void check_device_plan(const plan_case& c, const std::vector<std::int32_t>& ids, const std::vector<float>& weights,
                       const reference::plan_result& ref) {
  INFO("ids " << std::string(sizeof(IdT) == 8 ? "int64" : "int32"));
  const std::int64_t slots = c.tokens * c.k, rows = moe::plan_max_rows(c.tokens, c.k, c.experts, c.params);
  test::device_buffer<IdT> d_ids(std::vector<IdT>(ids.begin(), ids.end()));
  test::device_buffer<std::int32_t> counts(c.experts), dropped(c.experts), offsets(c.experts + 1),
      slot_to_row(slots), row_to_slot(rows), expanded_to_row(slots), row_to_expanded(rows),
      tile_experts(rows / c.params.block_size), total(1), errors(2), row_to_token(rows);
  test::device_buffer<float> d_weights(weights);
  test::device_buffer<std::int64_t> offsets64(c.experts + 1);
  for (auto* b : {&slot_to_row, &row_to_slot, &expanded_to_row, &row_to_expanded, &tile_experts}) b->fill_bytes(0x7f);
  std::size_t bytes = 0;
  FRUGAL_REQUIRE_OK(moe::plan(nullptr, bytes, d_ids.data(), d_weights.data(), {}, {c.tokens, c.k, c.experts}, c.params));
  test::device_buffer<unsigned char> workspace(bytes);
  const moe::plan_outputs out{counts.data(),          dropped.data(),         offsets.data(),       offsets64.data(),
                              slot_to_row.data(),     row_to_slot.data(),     expanded_to_row.data(), row_to_expanded.data(),
                              row_to_token.data(),    tile_experts.data(),    total.data(),           errors.data()};
  FRUGAL_REQUIRE_OK(moe::plan(workspace.data(), bytes, d_ids.data(), d_weights.data(), out, {c.tokens, c.k, c.experts}, c.params));
  test::synchronize();
  CHECK(counts.download() == ref.counts);
  CHECK(dropped.download() == ref.dropped);
  CHECK(offsets.download() == ref.offsets);
  const auto o64 = offsets64.download();
  CHECK(std::vector<std::int32_t>(o64.begin(), o64.end()) == ref.offsets);
  CHECK(slot_to_row.download() == ref.slot_to_row);
  CHECK(row_to_slot.download() == ref.row_to_slot);
  CHECK(expanded_to_row.download() == ref.expanded_to_row);
  CHECK(row_to_expanded.download() == ref.row_to_expanded);
  CHECK(row_to_token.download() == ref.row_to_token);
  if (c.params.layout == moe::placement::packed) CHECK(tile_experts.download() == ref.tile_experts);
  CHECK(total.download()[0] == ref.total_rows);
  const auto err = errors.download();
  CHECK(err[0] == ref.invalid_ids);
  CHECK(err[1] == ref.duplicate_ids);
  // The invariants on the device's own output (not only through the reference).
  reference::plan_result device = ref;
  device.counts = counts.download();
  device.dropped = dropped.download();
  device.offsets = offsets.download();
  device.slot_to_row = slot_to_row.download();
  device.row_to_slot = row_to_slot.download();
  device.expanded_to_row = expanded_to_row.download();
  device.row_to_expanded = row_to_expanded.download();
  check_invariants(device, ids, c);
}

void check_plan(const plan_case& c, unsigned long long seed, bool int64_ids = false) {
  FRUGAL_SEEDED_RNG(rng, seed);
  INFO("pattern " << std::string(name(c.pattern)) << " T " << c.tokens << " k " << c.k << " E " << c.experts << " policy "
                  << int(c.params.policy) << " layout " << int(c.params.layout) << " block " << c.params.block_size
                  << " capacity " << moe::plan_capacity(c.tokens, c.k, c.experts, c.params));
  const auto ids = make_ids(c.pattern, c.tokens, c.k, c.experts, rng);
  std::vector<float> weights(ids.size());
  for (auto& w : weights) w = float(int(rng() % 8)) * 0.125f;  // ties on purpose
  const auto ref = reference::plan(ids.data(), weights.data(), c.tokens, c.k, c.experts, c.params);
  check_invariants(ref, ids, c);
  check_device_plan<std::int32_t>(c, ids, weights, ref);
  if (int64_ids) check_device_plan<std::int64_t>(c, ids, weights, ref);
}

struct shape {
  std::int64_t tokens;
  int k, experts;
};

const moe::drop_policy all_policies[] = {moe::drop_policy::token_order, moe::drop_policy::slot_major,
                                         moe::drop_policy::weight_priority, moe::drop_policy::random};

}  // namespace

TEST_CASE("plan: dropless, packed, block sizes 1 .. 256, small and prime sizes") {
  for (int block : {1, 3, 16, 64, 256})
    for (auto [tokens, k, experts] : std::vector<shape>{{1, 1, 1}, {3, 2, 8}, {97, 6, 160}, {4096, 8, 256}, {500, 32, 1024}, {1000, 1, 7}, {700, 8, 1500}, {1200, 16, 4096}}) {
      plan_case c;
      c.tokens = tokens;
      c.k = k;
      c.experts = experts;
      c.params.block_size = block;
      for (auto p : {ids_pattern::uniform, ids_pattern::skewed, ids_pattern::one_hot, ids_pattern::with_gaps})
        check_plan((c.pattern = p, c), 100 + block + int(p));
    }
}

TEST_CASE("plan: every drop policy with capacity factor, absolute capacity, rounding and minimum") {
  unsigned long long seed = 200;
  for (auto policy : all_policies)
    for (auto [tokens, k, experts] : std::vector<shape>{{3, 2, 4}, {1000, 2, 8}, {4096, 8, 64}, {300, 32, 1024}, {900, 8, 4096}}) {
      plan_case c;
      c.tokens = tokens;
      c.k = k;
      c.experts = experts;
      c.params.policy = policy;
      c.params.capacity_factor = 1.0f;
      for (auto p : {ids_pattern::uniform, ids_pattern::skewed, ids_pattern::one_hot, ids_pattern::with_gaps})
        check_plan((c.pattern = p, c), seed++);
      c.params.capacity_factor = 0.5f;
      c.params.capacity_multiple = 8;
      c.params.block_size = 8;
      check_plan((c.pattern = ids_pattern::skewed, c), seed++);
      c.params.capacity = 1;  // absolute: every expert keeps one entry
      check_plan((c.pattern = ids_pattern::one_hot, c), seed++);
      c.params.capacity = 0;
      c.params.capacity_factor = 0.01f;
      c.params.min_capacity = 4;
      check_plan((c.pattern = ids_pattern::uniform, c), seed++);
    }
}

TEST_CASE("plan: masked placement [E, capacity] for every drop policy") {
  unsigned long long seed = 300;
  for (auto policy : all_policies) {
    plan_case c;
    c.tokens = 777;
    c.k = 4;
    c.experts = 32;
    c.params.policy = policy;
    c.params.layout = moe::placement::masked;
    c.params.capacity = 64;
    for (auto p : {ids_pattern::uniform, ids_pattern::one_hot, ids_pattern::with_gaps}) check_plan((c.pattern = p, c), seed++);
  }
}

TEST_CASE("plan: int64 ids give the int32 plan, every layout and policy") {
  unsigned long long seed = 350;
  for (auto policy : {moe::drop_policy::none, moe::drop_policy::token_order, moe::drop_policy::weight_priority})
    for (auto layout : {moe::placement::packed, moe::placement::masked}) {
      if (layout == moe::placement::masked && policy == moe::drop_policy::none) continue;
      plan_case c;
      c.tokens = 513;
      c.k = 6;
      c.experts = 160;
      c.params.policy = policy;
      c.params.layout = layout;
      c.params.block_size = 16;
      if (policy != moe::drop_policy::none) c.params.capacity_factor = 1.0f;
      for (auto p : {ids_pattern::uniform, ids_pattern::with_gaps, ids_pattern::malformed}) check_plan((c.pattern = p, c), seed++, true);
    }
}

TEST_CASE("plan: above 64K entries (many sub-tiles per block) equals the reference too") {
  plan_case c;
  c.tokens = 9001;
  c.k = 8;
  c.experts = 256;
  c.params.block_size = 64;
  check_plan((c.pattern = ids_pattern::skewed, c), 400);
  c.params.policy = moe::drop_policy::weight_priority;
  c.params.capacity_factor = 1.25f;
  check_plan((c.pattern = ids_pattern::one_hot, c), 401);
  c.params.policy = moe::drop_policy::slot_major;
  c.params.layout = moe::placement::masked;
  check_plan((c.pattern = ids_pattern::with_gaps, c), 402);
  // A grid capped to a few blocks (the plan beside kernels that hold SMs): many sub-tiles each.
  for (int blocks : {1, 3}) {
    c.params.max_blocks = blocks;
    c.params.capacity_factor = 1.25f;
    c.params.policy = moe::drop_policy::slot_major;
    c.params.layout = moe::placement::masked;
    check_plan((c.pattern = ids_pattern::skewed, c), 403 + blocks);
    c.params.policy = moe::drop_policy::none;
    c.params.layout = moe::placement::packed;
    c.params.capacity_factor = 0.0f;  // (a capacity with the dropless policy is refused)
    check_plan((c.pattern = ids_pattern::uniform, c), 410 + blocks);
  }
}

#if !defined(FRUGAL_HOST_SIMT)
// CUDA graphs (how vLLM and SGLang run decode steps): the plan is a cooperative launch, and a
// captured plan must replay to the same bits as a direct call. GPU only (host SIMT has no graphs).
TEST_CASE("plan: captured in a CUDA graph, replays bit for bit") {
  FRUGAL_SEEDED_RNG(rng, 700);
  const std::int64_t tokens = 4096;
  const int k = 8, experts = 256;
  moe::plan_params params;
  params.block_size = 64;
  const auto ids = make_ids(ids_pattern::skewed, tokens, k, experts, rng);
  const std::int64_t rows = moe::plan_max_rows(tokens, k, experts, params);
  test::device_buffer<std::int32_t> d_ids(ids), direct(rows), replayed(rows), offsets(experts + 1);
  std::size_t bytes = 0;
  FRUGAL_REQUIRE_OK(moe::plan(nullptr, bytes, d_ids.data(), nullptr, {}, {tokens, k, experts}, params));
  test::device_buffer<unsigned char> workspace(bytes);
  moe::plan_outputs out;
  out.row_to_slot = direct.data();
  out.offsets = offsets.data();
  FRUGAL_REQUIRE_OK(moe::plan(workspace.data(), bytes, d_ids.data(), nullptr, out, {tokens, k, experts}, params));
  test::synchronize();

  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  out.row_to_slot = replayed.data();
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  const frugal::status captured = moe::plan(workspace.data(), bytes, d_ids.data(), nullptr, out, {tokens, k, experts}, params, stream);
  REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  FRUGAL_REQUIRE_OK(captured);
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  for (int replay = 0; replay < 3; ++replay) {
    replayed.fill_bytes(0x7f);
    test::synchronize();  // the memset runs on the legacy stream, the graph on `stream`
    REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    CHECK(replayed.download() == direct.download());
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}
#endif

TEST_CASE("plan: an absurd capacity factor behaves as keep-all (no overflow of the row arithmetic)") {
  plan_case c;
  c.tokens = 1024;
  c.k = 8;
  c.experts = 16;
  c.params.policy = moe::drop_policy::token_order;
  c.params.capacity_factor = 1e30f;
  CHECK(moe::plan_capacity(c.tokens, c.k, c.experts, c.params) == c.tokens * c.k);
  CHECK(moe::plan_max_rows(c.tokens, c.k, c.experts, c.params) == c.tokens * c.k);
  check_plan((c.pattern = ids_pattern::one_hot, c), 600);
}

TEST_CASE("plan: malformed ids are counted and handled by the documented rule") {
  plan_case c;
  c.tokens = 300;
  c.k = 4;
  c.experts = 16;
  c.pattern = ids_pattern::malformed;
  check_plan(c, 500);
  c.params.policy = moe::drop_policy::random;
  c.params.seed = 99;
  c.params.capacity_factor = 1.0f;
  check_plan(c, 501);
}

TEST_CASE("plan: invalid arguments are refused with a message") {
  test::device_buffer<std::int32_t> ids(8);
  std::size_t bytes = 1 << 20;
  test::device_buffer<unsigned char> ws(bytes);
  auto expect = [&](const moe::plan_params& p, int k, int experts, const char* fragment, const float* weights = nullptr) {
    const auto s = moe::plan(ws.data(), bytes, ids.data(), weights, {}, {4, k, experts}, p);
    INFO(s.message());
    CHECK(s.code() == errc::invalid_argument);
    CHECK(std::strstr(s.message(), fragment) != nullptr);
  };
  moe::plan_params p;
  expect(p, 0, 8, "k must be in [1, 32]");
  expect(p, 2, 0, "experts must be in [1, 4096]");
  expect(p, 2, 4097, "experts must be in [1, 4096]");
  p.block_size = 0;
  expect(p, 2, 8, "block_size");
  p = {};
  p.policy = moe::drop_policy::token_order;
  expect(p, 2, 8, "capacity is 0");
  p.capacity = 4;
  p.policy = moe::drop_policy::weight_priority;
  expect(p, 2, 8, "needs the routing weights");
  p = {};
  p.layout = moe::placement::masked;
  p.capacity = 4;
  expect(p, 2, 8, "masked placement needs a drop policy");
  p = {};
  p.max_blocks = -1;
  expect(p, 2, 8, "max_blocks must be >= 0");
  p = {};
  p.capacity_factor = 1.25f;  // with the dropless policy: refused, not silently ignored
  expect(p, 2, 8, "need a drop policy");
  p = {};
  p.capacity = 3;
  expect(p, 2, 8, "need a drop policy");
  const auto huge = moe::plan(ws.data(), bytes, ids.data(), nullptr, {}, {INT64_MAX / 4, 8, 8});
  CHECK(std::strstr(huge.message(), "tokens * k is too large") != nullptr);  // no int64 overflow on the way
  std::size_t small = 4;
  const auto s = moe::plan(ws.data(), small, ids.data(), nullptr, {}, {4, 2, 8});
  CHECK(std::strstr(s.message(), "workspace_bytes") != nullptr);
  moe::plan_outputs over_ids;
  over_ids.slot_to_row = ids.data();  // an output over the ids
  CHECK(std::strstr(moe::plan(ws.data(), bytes, ids.data(), nullptr, over_ids, {4, 2, 8}).message(), "must not overlap") != nullptr);
  test::device_buffer<std::int32_t> maps(64);
  moe::plan_outputs sharing;
  sharing.slot_to_row = maps.data();
  sharing.row_to_slot = maps.data() + 4;  // two outputs sharing bytes
  CHECK(std::strstr(moe::plan(ws.data(), bytes, ids.data(), nullptr, sharing, {4, 2, 8}).message(), "must not overlap") != nullptr);
}

TEST_CASE("plan: any workspace alignment (the plan aligns it inside the bytes the query asked for)") {
  const std::int64_t tokens = 37;
  const int k = 3, experts = 8;
  std::vector<std::int32_t> ids(std::size_t(tokens * k));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = std::int32_t((i * 5 + i / 3) % experts);
  test::device_buffer<std::int32_t> d_ids(ids);
  std::size_t bytes = 0;
  FRUGAL_REQUIRE_OK(moe::plan(nullptr, bytes, d_ids.data(), nullptr, {}, {tokens, k, experts}));
  test::device_buffer<unsigned char> ws(bytes + 16);
  std::vector<std::vector<std::int32_t>> rows_of_offset;
  for (int offset : {0, 1, 4, 7, 8, 12}) {
    test::device_buffer<std::int32_t> slot_to_row(ids.size());
    moe::plan_outputs out;
    out.slot_to_row = slot_to_row.data();
    std::size_t given = bytes;
    FRUGAL_REQUIRE_OK(moe::plan(ws.data() + offset, given, d_ids.data(), nullptr, out, {tokens, k, experts}));
    test::synchronize();
    rows_of_offset.push_back(slot_to_row.download());
  }
  for (const auto& rows : rows_of_offset) CHECK(rows == rows_of_offset.front());
}

TEST_CASE("plan: bf16 and fp16 routing weights give the plan of fp32 weights holding the same values") {
  FRUGAL_SEEDED_RNG(rng, 800);
  const std::int64_t tokens = 300;
  const int k = 4, experts = 16;
  std::vector<std::int32_t> ids(std::size_t(tokens * k));
  std::vector<float> w(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = std::int32_t((i / k * 7 + i % k * 3) % experts);
    w[i] = float(rng() % 64) / 64.0f;  // exact in bf16 and fp16; many ties
  }
  moe::plan_params p;
  p.policy = moe::drop_policy::weight_priority;
  p.capacity = 40;
  test::device_buffer<std::int32_t> d_ids(ids);
  std::vector<__nv_bfloat16> wb(w.size());
  std::vector<__half> wh(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) {
    wb[i] = from_float<__nv_bfloat16>(w[i]);
    wh[i] = from_float<__half>(w[i]);
  }
  test::device_buffer<float> d_wf(w);
  test::device_buffer<__nv_bfloat16> d_wb(wb);
  test::device_buffer<__half> d_wh(wh);
  auto rows_of = [&](auto* weights) {
    std::size_t bytes = 0;
    FRUGAL_REQUIRE_OK(moe::plan(nullptr, bytes, d_ids.data(), weights, {}, {tokens, k, experts}, p));
    test::device_buffer<unsigned char> ws(bytes);
    test::device_buffer<std::int32_t> slot_to_row(ids.size());
    moe::plan_outputs out;
    out.slot_to_row = slot_to_row.data();
    FRUGAL_REQUIRE_OK(moe::plan(ws.data(), bytes, d_ids.data(), weights, out, {tokens, k, experts}, p));
    test::synchronize();
    return slot_to_row.download();
  };
  const auto want = rows_of(d_wf.data());
  CHECK(rows_of(d_wb.data()) == want);
  CHECK(rows_of(d_wh.data()) == want);
  CHECK(want == reference::plan(ids.data(), w.data(), tokens, k, experts, p).slot_to_row);
}

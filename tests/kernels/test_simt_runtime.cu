// SPDX-License-Identifier: Apache-2.0
// The execution model host SIMT mode emulates, checked the same way on the CPU and on a GPU:
// barriers, shared memory, shuffles with widths and partial masks, votes, partial warps, exited
// threads, atomics, dynamic shared memory, grid-stride loops, fp16/bf16, cooperative launches with
// grid-wide barriers. Cases that check how the
// emulator reports misuse (deadlocks, bad masks, a planted missing barrier) run in host SIMT only.
#include <frugal/core/grid_sync.cuh>
#include <frugal/core/launch.cuh>
#include <frugal/core/numeric.cuh>
#include <frugal/core/shared_memory.cuh>

#include <algorithm>
#include <numeric>
#include <string>

#include "support/test_support.hpp"

using frugal::launch_config;
using frugal::test::device_buffer;

namespace {

__global__ void block_sum_kernel(const int* in, int* out) {
  __shared__ int partial[1024];
  const unsigned t = threadIdx.x;
  partial[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (t < s) partial[t] += partial[t + s];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = partial[0];
}

__global__ void block_inclusive_scan_kernel(const int* in, int* out) {
  __shared__ int buffer[2][1024];
  const unsigned t = threadIdx.x;
  int ping = 0;
  buffer[0][t] = in[t];
  __syncthreads();
  for (unsigned offset = 1; offset < blockDim.x; offset *= 2) {
    const int v = buffer[ping][t] + (t >= offset ? buffer[ping][t - offset] : 0);
    buffer[1 - ping][t] = v;
    ping = 1 - ping;
    __syncthreads();
  }
  out[t] = buffer[ping][t];
}

__global__ void barrier_vote_kernel(const int* predicate, int* out) {
  const int p = predicate[threadIdx.x];
  const int count = __syncthreads_count(p);
  const int all = __syncthreads_and(p);
  const int any = __syncthreads_or(p);
  if (threadIdx.x == 0) {
    out[0] = count;
    out[1] = all;
    out[2] = any;
  }
}

// out[lane * 4 + {0,1,2,3}] = shfl idx / up / down / xor of (lane * 10) within `width`.
template <int Width>
__global__ void shuffle_kernel(int* out) {
  const int lane = int(threadIdx.x % 32);
  const int v = lane * 10;
  out[lane * 4 + 0] = __shfl_sync(0xffffffffu, v, 3, Width);
  out[lane * 4 + 1] = __shfl_up_sync(0xffffffffu, v, 2, Width);
  out[lane * 4 + 2] = __shfl_down_sync(0xffffffffu, v, 2, Width);
  out[lane * 4 + 3] = __shfl_xor_sync(0xffffffffu, v, 1, Width);
}

// The two halves of the warp diverge and shuffle/vote among themselves with partial masks.
__global__ void divergent_halves_kernel(int* out) {
  const int lane = int(threadIdx.x % 32);
  if (lane < 16) {
    out[lane] = __shfl_down_sync(0x0000ffffu, lane, 1, 16);
    out[32 + lane] = int(__ballot_sync(0x0000ffffu, lane % 3 == 0));
  } else {
    out[lane] = __shfl_sync(0xffff0000u, lane * 2, 20);
    out[32 + lane] = __all_sync(0xffff0000u, lane >= 16) + 2 * __any_sync(0xffff0000u, lane == 31);
  }
}

// 40 threads: warp 1 has only lanes 0..7, which vote and reduce with the mask of existing lanes.
__global__ void partial_warp_kernel(int* out) {
  const unsigned t = threadIdx.x, first = t / 32 * 32;
  const unsigned lanes = blockDim.x - first < 32 ? blockDim.x - first : 32;
  const unsigned mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
  const unsigned ballot = __ballot_sync(mask, 1);
  int total = 0;
  // Every lane of the mask calls each shuffle: all lanes loop over the same sources in order.
  for (unsigned src = 0; src < lanes; ++src) total += __shfl_sync(mask, int(t), int(src));
  out[t * 2 + 0] = int(ballot);
  out[t * 2 + 1] = total;
}

// Threads with index >= live exit before the barrier; the others still meet and reduce.
__global__ void early_exit_kernel(int live, int* out) {
  __shared__ int values[256];
  const int t = int(threadIdx.x);
  if (t >= live) return;
  values[t] = t + 1;
  __syncthreads();
  if (t == 0) {
    int s = 0;
    for (int i = 0; i < live; ++i) s += values[i];
    out[0] = s;
  }
  // A warp collective among the lanes that did not exit (named explicitly: __activemask() is
  // only a snapshot of convergence, not a list of live lanes).
  const int first = t / 32 * 32, remaining = live - first;
  const unsigned mask = remaining >= 32 ? 0xffffffffu : (1u << remaining) - 1u;
  const int lanes = __popc(__ballot_sync(mask, 1));
  if (t % 32 == 0) out[1 + t / 32] = lanes;
}

__global__ void atomics_kernel(int* counter, unsigned long long* wide, float* fsum, int* maximum,
                               unsigned* cas_slot) {
  const unsigned id = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(counter, 1);
  atomicAdd(wide, 1ull << 33);
  atomicAdd(fsum, 0.5f);
  atomicMax(maximum, int(id));
  unsigned old = *cas_slot, assumed;
  do {
    assumed = old;
    old = atomicCAS(cas_slot, assumed, assumed + 3u);
  } while (old != assumed);
}

__global__ void dynamic_shared_kernel(const float* in, float* out, int n) {
  float* tile = frugal::dynamic_shared<float>();
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) tile[i] = in[i] * 2.0f;
  __syncthreads();
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) out[i] = tile[n - 1 - i];
}

// A 2D grid of 3D blocks; a grid-stride loop marks every index exactly once.
__global__ void coordinates_kernel(int* hits, int n) {
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  const unsigned block = blockIdx.x + gridDim.x * blockIdx.y;
  const unsigned local = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned stride = threads * gridDim.x * gridDim.y;
  for (unsigned i = block * threads + local; i < unsigned(n); i += stride) atomicAdd(&hits[i], 1);
}

__global__ void half_kernel(const __half* a, const __nv_bfloat16* b, float* out) {
  const unsigned t = threadIdx.x;
  const __half h = __hadd(a[t], a[t]);
  out[t] = __half2float(h) + __bfloat162float(b[t]) + __half2float(__shfl_xor_sync(0xffffffffu, a[t], 1));
}

}  // namespace

// Rounds of: every block publishes a value, the grid meets, every block sums all published values.
// Each block also keeps a value in its own shared memory across the barriers.
__global__ void grid_rounds_kernel(int rounds, int* published, int* out) {
  __shared__ int mine;
  const int b = int(blockIdx.x), blocks = int(gridDim.x);
  if (threadIdx.x == 0) mine = 1000 * b;
  for (int r = 0; r < rounds; ++r) {
    if (threadIdx.x == 0) published[r * blocks + b] = b + r;
    frugal::grid_sync();
    int sum = 0;
    for (int i = int(threadIdx.x); i < blocks; i += int(blockDim.x)) sum += published[r * blocks + i];
    sum = __reduce_add_sync(0xffffffffu, sum);  // blockDim.x == 32
    if (threadIdx.x == 0) out[r * blocks + b] = sum + mine;
  }
}

TEST_CASE("simt: shared-memory block reduction over several blocks") {
  const int blocks = 3, threads = 256;
  std::vector<int> in(blocks * threads);
  std::iota(in.begin(), in.end(), 1);
  device_buffer<int> d_in(in), d_out(blocks);
  FRUGAL_REQUIRE_OK(frugal::launch(block_sum_kernel, launch_config{dim3(blocks), dim3(threads)}, d_in.data(), d_out.data()));
  frugal::test::synchronize();
  const auto out = d_out.download();
  for (int b = 0; b < blocks; ++b) {
    long expected = 0;
    for (int i = 0; i < threads; ++i) expected += in[b * threads + i];
    CHECK(out[b] == expected);
  }
}

TEST_CASE("simt: 1024-thread block inclusive scan") {
  std::vector<int> in(1024);
  for (int i = 0; i < 1024; ++i) in[i] = (i * 7) % 13 - 6;
  device_buffer<int> d_in(in), d_out(1024);
  FRUGAL_REQUIRE_OK(frugal::launch(block_inclusive_scan_kernel, launch_config{dim3(1), dim3(1024)}, d_in.data(), d_out.data()));
  frugal::test::synchronize();
  const auto out = d_out.download();
  int running = 0;
  for (int i = 0; i < 1024; ++i) {
    running += in[i];
    REQUIRE(out[i] == running);
  }
}

TEST_CASE("simt: __syncthreads_count, _and, _or") {
  for (int pattern = 0; pattern < 3; ++pattern) {
    std::vector<int> p(96);
    for (int i = 0; i < 96; ++i) p[i] = pattern == 0 ? 0 : pattern == 1 ? (i % 5 == 0) * 7 : 1;
    device_buffer<int> d_p(p), d_out(3);
    FRUGAL_REQUIRE_OK(frugal::launch(barrier_vote_kernel, launch_config{dim3(1), dim3(96)}, d_p.data(), d_out.data()));
    frugal::test::synchronize();
    const auto out = d_out.download();
    const int count = int(std::count_if(p.begin(), p.end(), [](int v) { return v != 0; }));
    CHECK(out[0] == count);
    CHECK(out[1] == (count == 96));
    CHECK(out[2] == (count > 0));
  }
}

template <int Width>
void check_shuffles() {
  device_buffer<int> d_out(128);
  FRUGAL_REQUIRE_OK(frugal::launch(shuffle_kernel<Width>, launch_config{dim3(1), dim3(32)}, d_out.data()));
  frugal::test::synchronize();
  const auto out = d_out.download();
  for (int lane = 0; lane < 32; ++lane) {
    const int base = lane / Width * Width;
    INFO("width " << Width << " lane " << lane);
    CHECK(out[lane * 4 + 0] == (base + 3 % Width) * 10);
    CHECK(out[lane * 4 + 1] == (lane - 2 >= base ? lane - 2 : lane) * 10);
    CHECK(out[lane * 4 + 2] == (lane + 2 < base + Width ? lane + 2 : lane) * 10);
    CHECK(out[lane * 4 + 3] == ((lane ^ 1) < base + Width ? (lane ^ 1) : lane) * 10);
  }
}

TEST_CASE("simt: shuffles idx/up/down/xor for widths 2, 8, 16, 32") {
  check_shuffles<2>();
  check_shuffles<8>();
  check_shuffles<16>();
  check_shuffles<32>();
}

TEST_CASE("simt: divergent half-warps with partial masks") {
  device_buffer<int> d_out(64);
  FRUGAL_REQUIRE_OK(frugal::launch(divergent_halves_kernel, launch_config{dim3(1), dim3(32)}, d_out.data()));
  frugal::test::synchronize();
  const auto out = d_out.download();
  unsigned ballot = 0;
  for (int l = 0; l < 16; ++l) ballot |= (l % 3 == 0 ? 1u : 0u) << l;
  for (int l = 0; l < 16; ++l) {
    CHECK(out[l] == (l + 1 < 16 ? l + 1 : l));
    CHECK(unsigned(out[32 + l]) == ballot);
  }
  for (int l = 16; l < 32; ++l) {
    CHECK(out[l] == 40);
    CHECK(out[32 + l] == 3);
  }
}

TEST_CASE("simt: partial last warp (40 threads)") {
  device_buffer<int> d_out(80);
  FRUGAL_REQUIRE_OK(frugal::launch(partial_warp_kernel, launch_config{dim3(1), dim3(40)}, d_out.data()));
  frugal::test::synchronize();
  const auto out = d_out.download();
  for (int t = 0; t < 40; ++t) {
    INFO("thread " << t);
    CHECK(unsigned(out[t * 2]) == (t < 32 ? 0xffffffffu : 0xffu));
    CHECK(out[t * 2 + 1] == (t < 32 ? 31 * 32 / 2 : (32 + 39) * 8 / 2));
  }
}

TEST_CASE("simt: threads that exit early leave the barrier to the others") {
  for (int live : {1, 31, 33, 100, 255}) {
    device_buffer<int> d_out(9);
    d_out.fill_bytes(0);
    FRUGAL_REQUIRE_OK(frugal::launch(early_exit_kernel, launch_config{dim3(1), dim3(256)}, live, d_out.data()));
    frugal::test::synchronize();
    const auto out = d_out.download();
    INFO("live " << live);
    CHECK(out[0] == live * (live + 1) / 2);
    for (int w = 0; w * 32 < live; ++w) CHECK(out[1 + w] == std::min(32, live - w * 32));
  }
}

TEST_CASE("simt: atomics across blocks") {
  device_buffer<int> counter(1), maximum(1);
  device_buffer<unsigned long long> wide(1);
  device_buffer<float> fsum(1);
  device_buffer<unsigned> cas(1);
  counter.fill_bytes(0);
  maximum.fill_bytes(0);
  wide.fill_bytes(0);
  fsum.fill_bytes(0);
  cas.fill_bytes(0);
  FRUGAL_REQUIRE_OK(frugal::launch(atomics_kernel, launch_config{dim3(5), dim3(128)}, counter.data(), wide.data(),
                                   fsum.data(), maximum.data(), cas.data()));
  frugal::test::synchronize();
  CHECK(counter.download()[0] == 640);
  CHECK(wide.download()[0] == 640ull << 33);
  CHECK(fsum.download()[0] == 320.0f);
  CHECK(maximum.download()[0] == 639);
  CHECK(cas.download()[0] == 640u * 3u);
}

TEST_CASE("simt: dynamic shared memory, including above 48 KiB with the opt-in") {
  for (int n : {1, 1000, 16384}) {
    std::vector<float> in(n);
    for (int i = 0; i < n; ++i) in[i] = float(i) - 3.5f;
    device_buffer<float> d_in(in), d_out(n);
    const std::size_t bytes = std::size_t(n) * sizeof(float);
    FRUGAL_REQUIRE_OK(frugal::allow_dynamic_shared(dynamic_shared_kernel, bytes));
    FRUGAL_REQUIRE_OK(frugal::launch(dynamic_shared_kernel, launch_config{dim3(2), dim3(128), bytes}, d_in.data(),
                                     d_out.data(), n));
    frugal::test::synchronize();
    const auto out = d_out.download();
    for (int i = 0; i < n; ++i) REQUIRE(out[i] == in[n - 1 - i] * 2.0f);
  }
}

TEST_CASE("simt: 2D grid of 3D blocks in a grid-stride loop") {
  const int n = 5000;
  device_buffer<int> hits(n);
  hits.fill_bytes(0);
  FRUGAL_REQUIRE_OK(frugal::launch(coordinates_kernel, launch_config{dim3(3, 2), dim3(8, 4, 2)}, hits.data(), n));
  frugal::test::synchronize();
  const auto out = hits.download();
  for (int i = 0; i < n; ++i) REQUIRE(out[i] == 1);
}

TEST_CASE("simt: fp16 and bf16 in kernels") {
  std::vector<__half> a(32);
  std::vector<__nv_bfloat16> b(32);
  for (int i = 0; i < 32; ++i) {
    a[i] = __float2half(0.25f * i);
    b[i] = __float2bfloat16(-1.5f * i);
  }
  device_buffer<__half> d_a(a);
  device_buffer<__nv_bfloat16> d_b(b);
  device_buffer<float> d_out(32);
  FRUGAL_REQUIRE_OK(frugal::launch(half_kernel, launch_config{dim3(1), dim3(32)}, d_a.data(), d_b.data(), d_out.data()));
  frugal::test::synchronize();
  const auto out = d_out.download();
  for (int i = 0; i < 32; ++i) CHECK(out[i] == 0.5f * i - 1.5f * i + 0.25f * (i ^ 1));
}

TEST_CASE("simt: a cooperative launch meets every block at each grid sync") {
  int most = 0;
  FRUGAL_REQUIRE_OK(frugal::cooperative_grid_blocks(grid_rounds_kernel, 32, 0, most));
  REQUIRE(most >= 1);
  for (int blocks : {1, 3, std::min(most, 24)}) {
    const int rounds = 4;
    device_buffer<int> published(std::size_t(rounds) * blocks), out(std::size_t(rounds) * blocks);
    published.fill_bytes(0xff);
    FRUGAL_REQUIRE_OK(frugal::launch_cooperative(grid_rounds_kernel, launch_config{dim3(unsigned(blocks)), dim3(32)},
                                                 rounds, published.data(), out.data()));
    frugal::test::synchronize();
    const auto got = out.download();
    INFO("blocks " << blocks);
    for (int r = 0; r < rounds; ++r)
      for (int b = 0; b < blocks; ++b) REQUIRE(got[r * blocks + b] == blocks * (blocks - 1) / 2 + r * blocks + 1000 * b);
  }
}

TEST_CASE("simt: an empty grid launches nothing and succeeds") {
  FRUGAL_REQUIRE_OK(frugal::launch(block_sum_kernel, launch_config{dim3(0), dim3(32)}, (const int*)nullptr, (int*)nullptr));
}

#if defined(FRUGAL_HOST_SIMT)
// ---- how host SIMT mode reports misuse ---------------------------------------------------------
#include <cstring>

namespace {

__global__ void shuffle_with_exited_lane_kernel(int* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, int(threadIdx.x), 0);
}

__global__ void mask_without_self_kernel(int* out) {
  out[threadIdx.x] = __shfl_sync(0x1u, int(threadIdx.x), 0);
}

__global__ void read_outside_mask_kernel(int* out) {
  if (threadIdx.x < 4) out[threadIdx.x] = __shfl_sync(0xfu, int(threadIdx.x), 9);
}

__global__ void mismatched_collectives_kernel(int* out) {
  if (threadIdx.x % 2) out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
  else out[threadIdx.x] = int(__ballot_sync(0xffffffffu, 1));
}

__global__ void divergent_barrier_deadlock_kernel(int* out) {
  // Lane 0 waits at the block barrier while its warp-mates wait for it in a shuffle.
  if (threadIdx.x == 0) __syncthreads();
  else out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
}

// The planted bug: thread t reads its left neighbour's slot without a barrier after the writes.
__global__ void grid_sync_after_exit_kernel(int* out) {
  if (blockIdx.x == 1) return;  // block 1 never reaches the grid barrier
  frugal::grid_sync();
  out[blockIdx.x] = 1;
}

__global__ void mixed_barriers_kernel(int* out) {
  if (threadIdx.x == 0) __syncthreads();
  else frugal::grid_sync();
  out[threadIdx.x] = 1;
}

template <bool WithBarrier>
__global__ void neighbour_kernel(int salt, int* out) {
  __shared__ int slots[128];
  const int t = int(threadIdx.x);
  slots[t] = t + salt;
  if (WithBarrier) __syncthreads();
  out[t] = t == 0 ? slots[0] : slots[t - 1];
}

struct schedule_guard {
  ~schedule_guard() { frugal::host_simt::set_schedule(frugal::host_simt::schedule::in_order); }
};

void require_launch_error(const frugal::status& s, const char* fragment) {
  INFO("status: " << s.message() << "; emulator: " << frugal::host_simt::last_error_message());
  REQUIRE(!s.ok());
  CHECK(s.cuda_error() == cudaErrorLaunchFailure);
  CHECK(std::strstr(frugal::host_simt::last_error_message(), fragment) != nullptr);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK(cudaGetLastError() == cudaSuccess);
}

}  // namespace

TEST_CASE("simt-only: a shuffle waiting on an exited lane is reported as a deadlock") {
  device_buffer<int> out(32);
  require_launch_error(frugal::launch(shuffle_with_exited_lane_kernel, launch_config{dim3(1), dim3(32)}, out.data()),
                       "exited lanes 0x00000020");
}

TEST_CASE("simt-only: a mask that omits the calling lane is rejected") {
  device_buffer<int> out(32);
  require_launch_error(frugal::launch(mask_without_self_kernel, launch_config{dim3(1), dim3(32)}, out.data()),
                       "is not in mask 0x00000001");
}

TEST_CASE("simt-only: a shuffle source outside the mask is rejected") {
  device_buffer<int> out(32);
  require_launch_error(frugal::launch(read_outside_mask_kernel, launch_config{dim3(1), dim3(32)}, out.data()),
                       "reads lane 9, which is not in mask");
}

TEST_CASE("simt-only: lanes meeting in different collectives are rejected") {
  device_buffer<int> out(32);
  require_launch_error(frugal::launch(mismatched_collectives_kernel, launch_config{dim3(1), dim3(32)}, out.data()),
                       "meet in different collectives");
}

TEST_CASE("simt-only: a barrier inside divergent code deadlocks and says where") {
  device_buffer<int> out(32);
  require_launch_error(frugal::launch(divergent_barrier_deadlock_kernel, launch_config{dim3(1), dim3(32)}, out.data()),
                       "waits in __syncthreads");
}

TEST_CASE("simt-only: a mask naming lanes beyond a partial warp is rejected") {
  device_buffer<int> out(40);
  require_launch_error(frugal::launch(shuffle_with_exited_lane_kernel, launch_config{dim3(1), dim3(40)}, out.data()),
                       "names lanes that do not exist");
}

TEST_CASE("simt-only: invalid launch shapes and shared memory sizes are refused") {
  device_buffer<int> out(1);
  frugal::status s = frugal::launch(block_sum_kernel, launch_config{dim3(1), dim3(2048)}, (const int*)out.data(), out.data());
  CHECK(s.cuda_error() == cudaErrorInvalidConfiguration);
  s = frugal::launch(block_sum_kernel, launch_config{dim3(1), dim3(32), 64 * 1024}, (const int*)out.data(), out.data());
  CHECK(s.cuda_error() == cudaErrorInvalidValue);
  CHECK(std::strstr(frugal::host_simt::last_error_message(), "cudaFuncSetAttribute") != nullptr);
  (void)cudaGetLastError();
}

TEST_CASE("simt-only: grid sync misuse is reported, not hung") {
  device_buffer<int> out(64);
  require_launch_error(frugal::launch(grid_sync_after_exit_kernel, launch_config{dim3(2), dim3(32)}, out.data()),
                       "not launched cooperatively");
  require_launch_error(frugal::launch_cooperative(grid_sync_after_exit_kernel, launch_config{dim3(3), dim3(32)}, out.data()),
                       "exited block(s) never reach");
  require_launch_error(frugal::launch_cooperative(mixed_barriers_kernel, launch_config{dim3(2), dim3(32)}, out.data()),
                       "meet in different barriers");
  int most = 0;
  FRUGAL_REQUIRE_OK(frugal::cooperative_grid_blocks(grid_sync_after_exit_kernel, 32, 0, most));
  const frugal::status s =
      frugal::launch_cooperative(grid_sync_after_exit_kernel, launch_config{dim3(unsigned(most + 1)), dim3(32)}, out.data());
  CHECK(s.cuda_error() == cudaErrorCooperativeLaunchTooLarge);
  (void)cudaGetLastError();
}

TEST_CASE("simt-only: the shuffled schedule catches a planted missing __syncthreads") {
  schedule_guard restore;
  device_buffer<int> out(128);
  int salt = 1000;
  auto run = [&](auto kernel) {
    salt += 1000;  // __shared__ outlives launches here: fresh values make stale reads visible
    FRUGAL_REQUIRE_OK(frugal::launch(kernel, launch_config{dim3(1), dim3(128)}, salt, out.data()));
    const auto got = out.download();
    for (int t = 0; t < 128; ++t)
      if (got[t] != (t == 0 ? 0 : t - 1) + salt) return false;
    return true;
  };
  // In order, every thread runs to completion before the next starts, so the left neighbour has
  // always written: the bug is invisible.
  frugal::host_simt::set_schedule(frugal::host_simt::schedule::in_order);
  CHECK(run(neighbour_kernel<false>));
  CHECK(run(neighbour_kernel<true>));
  int caught = 0;
  for (unsigned long long seed = 1; seed <= 8; ++seed) {
    frugal::host_simt::set_schedule(frugal::host_simt::schedule::shuffled, seed);
    caught += !run(neighbour_kernel<false>);
    CHECK(run(neighbour_kernel<true>));  // the correct kernel passes under every order
  }
  CHECK(caught == 8);
}
#endif  // FRUGAL_HOST_SIMT

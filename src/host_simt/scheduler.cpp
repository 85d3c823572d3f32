// SPDX-License-Identifier: Apache-2.0
// The host SIMT scheduler: runs a grid block by block, each block's threads as fibers, switching
// only at rendezvous points. Every rendezvous yields to the scheduler, which resumes runnable
// threads in linear order or, when shuffled, in a seeded random order. A cooperative launch runs
// every block at once, each on its own OS thread (shared memory is per OS thread), and meets them
// at grid barriers.
#include <frugal/host_simt/host_simt.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fiber.hpp"
#include "state.hpp"

namespace frugal::host_simt {

namespace detail {

__thread const coords* current = nullptr;  // see host_simt.hpp

namespace {

struct schedule_choice {
  bool chosen = false;
  schedule kind = schedule::in_order;
  unsigned long long seed = 0;
};
thread_local schedule_choice chosen_schedule;
thread_local std::string last_error;
thread_local launch_state* running_launch = nullptr;
thread_local std::vector<std::unique_ptr<fiber_stack>> stack_pool;
thread_local std::size_t stack_pool_bytes = 0;

struct warp_pending {
  warp_op op;
  const char* name;
  unsigned mask;
  unsigned arrived;
  std::uint64_t value[32];
  int param[32];
  int width;
  warp_compute_fn compute;  // warp_op::compute: value[lane] is the lane's record
};

// One cp.async of a thread, performed when a wait covers its group.
struct async_copy_op {
  void* dst;
  const void* src;
  unsigned bytes;
  unsigned src_bytes;
};

struct sim_thread {
  coords where;
  fiber_context context;
  bool done = false;
  bool blocked = false;
  const char* waiting_in = nullptr;  // name of the rendezvous a blocked thread waits in
  unsigned waiting_mask = 0;
  std::uint64_t result = 0;
  std::vector<async_copy_op> uncommitted_copies;         // cp.async since the last commit
  std::deque<std::vector<async_copy_op>> copy_groups;    // committed, oldest first
};

}  // namespace

// The rendezvous of a cooperative launch's blocks. A block that fails, or exits while others wait,
// fails the whole grid, so no OS thread waits forever.
struct grid_sync_state {
  std::mutex mutex;
  std::condition_variable changed;
  unsigned blocks = 0;
  unsigned arrived = 0;   // blocks waiting in the current grid barrier
  unsigned finished = 0;  // blocks that have exited
  unsigned long long generation = 0;
  bool failed = false;
  std::string error;  // the first failure

  void fail_locked(const std::string& why) {
    if (!failed) error = why;
    failed = true;
    changed.notify_all();
  }
  void fail(const std::string& why) {
    std::lock_guard<std::mutex> lock(mutex);
    fail_locked(why);
  }
  void check_deadlock_locked(const std::string& who) {
    if (arrived > 0 && finished > 0 && arrived + finished == blocks)
      fail_locked("deadlock: " + std::to_string(arrived) + " block(s) wait in a grid sync that " +
                  std::to_string(finished) + " exited block(s) never reach (" + who + ")");
  }
  void block_finished(const std::string& who) {
    std::lock_guard<std::mutex> lock(mutex);
    ++finished;
    check_deadlock_locked("the last to exit: block " + who);
  }
  // Returns false if the grid failed instead of meeting.
  bool arrive_and_wait(const std::string& who) {
    std::unique_lock<std::mutex> lock(mutex);
    if (failed) return false;
    const unsigned long long mine = generation;
    if (++arrived == blocks) {
      arrived = 0;
      ++generation;
      changed.notify_all();
      return true;
    }
    check_deadlock_locked("the last to arrive: block " + who);
    changed.wait(lock, [&] { return generation != mine || failed; });
    return generation != mine;
  }
};

struct launch_state {
  kernel_body body;
  dim3 grid, block;
  unsigned threads_per_block = 0;
  unsigned warps_per_block = 0;
  std::vector<sim_thread> threads;
  std::vector<std::vector<warp_pending>> warps;  // pending collectives per warp
  std::vector<unsigned char> dynamic_shared;
  unsigned live = 0;               // threads of the block that have not exited
  unsigned barrier_arrived = 0;
  unsigned barrier_true = 0;
  const char* barrier_name = nullptr;  // the barrier the first arrival waits in
  bool barrier_is_grid = false;
  grid_sync_state* grid_sync = nullptr;  // cooperative launches only
  sim_thread* running = nullptr;
  fiber_context scheduler;
  bool cancelling = false;  // a failed launch's fibers are being unwound
  bool shuffled = false;
  std::mt19937_64 rng;
  bool failed = false;
  std::string error;
};

namespace {

std::string describe(const uint3& t) {
  return "(" + std::to_string(t.x) + "," + std::to_string(t.y) + "," + std::to_string(t.z) + ")";
}

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Thrown into the fibers of a failed launch when the scheduler resumes them one last time, so
// that each unwinds its stack to fiber_entry (destroying what its frames own: no leak, and no
// stale sanitizer state) instead of being abandoned mid-frame.
struct fiber_cancelled {};

void yield_to_scheduler() {
  launch_state& L = *running_launch;
  sim_thread* self = L.running;
  switch_fiber(self->context, L.scheduler);
  if (L.cancelling) throw fiber_cancelled{};
}

// Records the first error of the launch and abandons the block: the scheduler resumes a fiber
// of a failed launch only to unwind it.
[[noreturn]] void fail(const std::string& what) {
  launch_state& L = *running_launch;
  if (!L.failed) {
    L.failed = true;
    L.error = "block " + describe(L.running->where.block_idx) + " thread " +
              describe(L.running->where.thread_idx) + ": " + what;
  }
  L.running->blocked = true;
  yield_to_scheduler();
  std::abort();  // unreachable: a failed launch never resumes its fibers
}

unsigned linear_of(const sim_thread& t, const launch_state& L) {
  return t.where.thread_idx.x + L.block.x * (t.where.thread_idx.y + L.block.y * t.where.thread_idx.z);
}

// Lanes of warp `w` that exist (the last warp of a block may be partial).
unsigned existing_lanes(const launch_state& L, unsigned w) {
  unsigned first = w * 32, n = std::min(32u, L.threads_per_block - first);
  return n == 32 ? 0xffffffffu : ((1u << n) - 1u);
}

void release_barrier_if_complete() {
  launch_state& L = *running_launch;
  if (L.barrier_arrived == 0 || L.barrier_arrived != L.live) return;
  if (L.barrier_is_grid) {
    // The whole block is here: this OS thread now waits for the other blocks.
    L.barrier_is_grid = false;
    const std::string who = describe(L.running->where.block_idx);
    if (!L.grid_sync->arrive_and_wait(who)) {
      L.failed = true;
      L.error = "block " + who + ": abandoned in " + L.barrier_name + ": " + L.grid_sync->error;
      return;
    }
  }
  L.barrier_name = nullptr;
  const std::uint64_t result = (std::uint64_t(L.barrier_arrived) << 32) | L.barrier_true;
  for (auto& t : L.threads) {
    if (!t.done && t.blocked && t.waiting_mask == 0 && t.waiting_in) {
      t.blocked = false;
      t.waiting_in = nullptr;
      t.result = result;
    }
  }
  L.barrier_arrived = 0;
  L.barrier_true = 0;
}

extern "C" void fiber_entry() {
  begin_fiber();
  launch_state& L = *running_launch;
  if (!L.cancelling) {
    try {
      L.body.invoke(L.body.context);
    } catch (const fiber_cancelled&) {
    } catch (...) {  // kernel code does not throw; the emulator's own failures (bad_alloc) end the launch
      if (!L.failed) {
        L.failed = true;
        L.error = "block " + describe(L.running->where.block_idx) + " thread " + describe(L.running->where.thread_idx) +
                  ": an exception escaped the kernel";
      }
    }
  }
  sim_thread* self = L.running;
  self->done = true;
  --L.live;
  if (!L.cancelling) release_barrier_if_complete();  // exited threads no longer hold a barrier back
  exit_fiber(self->context, L.scheduler);
  std::abort();  // a finished fiber is never resumed
}

std::string deadlock_report(const launch_state& L) {
  std::string s = "deadlock: no thread of the block can run;";
  int shown = 0;
  for (const auto& t : L.threads) {
    if (t.done || !t.blocked) continue;
    if (shown++ == 8) {
      s += " ...";
      break;
    }
    s += " thread " + describe(t.where.thread_idx) + " waits in " + t.waiting_in;
    if (t.waiting_mask) {
      unsigned w = linear_of(t, L) / 32, exited = 0;
      for (unsigned lane = 0; lane < 32; ++lane)
        if ((t.waiting_mask >> lane & 1u) && w * 32 + lane < L.threads_per_block &&
            L.threads[w * 32 + lane].done)
          exited |= 1u << lane;
      s += " (mask " + hex(t.waiting_mask) + (exited ? ", exited lanes " + hex(exited) : "") + ")";
    }
    s += ";";
  }
  return s;
}

void run_block(launch_state& L, uint3 block_idx) {
  const std::size_t n = L.threads_per_block;
  for (std::size_t i = 0; i < n; ++i) {
    sim_thread& t = L.threads[i];
    t = sim_thread{};
    t.where.thread_idx = uint3{unsigned(i % L.block.x), unsigned(i / L.block.x % L.block.y),
                               unsigned(i / (std::size_t(L.block.x) * L.block.y))};
    t.where.block_idx = block_idx;
    t.where.block_dim = L.block;
    t.where.grid_dim = L.grid;
    make_fiber(t.context, *stack_pool[i], fiber_entry);
  }
  for (auto& w : L.warps) w.clear();
  L.live = unsigned(n);
  L.barrier_arrived = L.barrier_true = 0;
  L.barrier_name = nullptr;
  L.barrier_is_grid = false;

  std::vector<sim_thread*> order;
  order.reserve(n);
  while (L.live > 0 && !L.failed) {
    order.clear();
    for (auto& t : L.threads)
      if (!t.done && !t.blocked) order.push_back(&t);
    if (order.empty()) {
      L.failed = true;
      L.error = "block " + describe(block_idx) + ": " + deadlock_report(L);
      break;
    }
    if (L.shuffled) std::shuffle(order.begin(), order.end(), L.rng);
    for (sim_thread* t : order) {
      if (t->done || t->blocked) continue;
      L.running = t;
      current = &t->where;
      switch_fiber(L.scheduler, t->context);
      current = nullptr;
      if (L.failed) break;
    }
  }
  if (L.failed) {  // unwind every fiber that has not finished
    L.cancelling = true;
    for (auto& t : L.threads) {
      if (t.done) continue;
      L.running = &t;
      current = &t.where;
      switch_fiber(L.scheduler, t.context);
      current = nullptr;
    }
    L.cancelling = false;
  }
  L.running = nullptr;
}

}  // namespace

namespace {

std::uint64_t barrier(int predicate, const char* name, bool grid) {
  launch_state* L = running_launch;
  if (!L || !L->running) trap((std::string(name) + " called outside a kernel").c_str());
  if (grid && !L->grid_sync) fail(std::string(name) + " in a kernel not launched cooperatively (frugal::launch_cooperative)");
  if (L->barrier_arrived > 0 && L->barrier_is_grid != grid)
    fail(std::string("threads of the block meet in different barriers (") + name + " while others wait in " +
         L->barrier_name + ")");
  if (L->barrier_arrived == 0) {
    L->barrier_name = name;
    L->barrier_is_grid = grid;
  }
  sim_thread* self = L->running;
  self->blocked = true;
  self->waiting_in = name;
  self->waiting_mask = 0;
  ++L->barrier_arrived;
  L->barrier_true += predicate != 0;
  release_barrier_if_complete();
  yield_to_scheduler();
  return self->result;
}

}  // namespace

std::uint64_t block_barrier(int predicate, const char* name) { return barrier(predicate, name, false); }
void grid_barrier(const char* name) { barrier(1, name, true); }

namespace {

std::uint64_t combine(const warp_pending& p, unsigned lane) {
  const unsigned mask = p.mask;
  switch (p.op) {
    case warp_op::shfl_idx:
    case warp_op::shfl_up:
    case warp_op::shfl_down:
    case warp_op::shfl_xor: {
      const int width = p.width, base = int(lane) & ~(width - 1), d = p.param[lane];
      int src = int(lane);
      if (p.op == warp_op::shfl_idx) src = base + (d & (width - 1));
      if (p.op == warp_op::shfl_up) src = int(lane) - d < base ? int(lane) : int(lane) - d;
      if (p.op == warp_op::shfl_down) src = int(lane) + d >= base + width ? int(lane) : int(lane) + d;
      if (p.op == warp_op::shfl_xor) src = (int(lane) ^ d) >= base + width ? int(lane) : int(lane) ^ d;
      if (src < 0 || src > 31 || !(mask >> src & 1u))
        fail(std::string(p.name) + ": lane " + std::to_string(lane) + " reads lane " +
             std::to_string(src) + ", which is not in mask " + hex(mask));
      return p.value[src];
    }
    case warp_op::ballot: {
      unsigned r = 0;
      for (unsigned l = 0; l < 32; ++l)
        if ((mask >> l & 1u) && p.value[l]) r |= 1u << l;
      return r;
    }
    case warp_op::any:
    case warp_op::all: {
      bool any = false, all = true;
      for (unsigned l = 0; l < 32; ++l)
        if (mask >> l & 1u) {
          any = any || p.value[l];
          all = all && p.value[l];
        }
      return p.op == warp_op::any ? any : all;
    }
    case warp_op::sync:
    case warp_op::compute:  // results written by the compute function itself
      return 0;
    case warp_op::reduce_and:
    case warp_op::reduce_or:
    case warp_op::reduce_xor: {
      std::uint32_t acc = p.op == warp_op::reduce_and ? ~0u : 0u;
      for (unsigned l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        const auto v = std::uint32_t(p.value[l]);
        acc = p.op == warp_op::reduce_and ? acc & v : p.op == warp_op::reduce_or ? acc | v : acc ^ v;
      }
      return acc;
    }
    case warp_op::reduce_add:
    case warp_op::reduce_min:
    case warp_op::reduce_max: {
      const bool is_signed = p.param[lane] != 0;
      std::int64_t acc = 0;
      bool first = true;
      for (unsigned l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        std::int64_t v = is_signed ? std::int64_t(std::int32_t(p.value[l]))
                                   : std::int64_t(std::uint32_t(p.value[l]));
        if (first) acc = v;
        else if (p.op == warp_op::reduce_add) acc += v;
        else if (p.op == warp_op::reduce_min) acc = std::min(acc, v);
        else acc = std::max(acc, v);
        first = false;
      }
      return std::uint64_t(std::uint32_t(acc));
    }
    case warp_op::match_any: {
      unsigned r = 0;
      for (unsigned l = 0; l < 32; ++l)
        if ((mask >> l & 1u) && p.value[l] == p.value[lane]) r |= 1u << l;
      return r;
    }
  }
  return 0;
}

}  // namespace

namespace {

std::uint64_t rendezvous(warp_op op, unsigned mask, std::uint64_t value, int param, int width, const char* name,
                         warp_compute_fn compute) {
  launch_state* L = running_launch;
  if (!L || !L->running) trap((std::string(name) + " called outside a kernel").c_str());
  sim_thread* self = L->running;
  const unsigned linear = linear_of(*self, *L), warp = linear / 32, lane = linear % 32;
  if (!(mask >> lane & 1u))
    fail(std::string(name) + ": the calling lane " + std::to_string(lane) + " is not in mask " +
         hex(mask));
  if (mask & ~existing_lanes(*L, warp))
    fail(std::string(name) + ": mask " + hex(mask) + " names lanes that do not exist in warp " +
         std::to_string(warp) + " (lanes " + hex(existing_lanes(*L, warp)) + ")");
  if (width < 1 || width > 32 || (width & (width - 1)))
    fail(std::string(name) + ": width " + std::to_string(width) + " is not a power of two in [1, 32]");

  auto& pending = L->warps[warp];
  auto it = std::find_if(pending.begin(), pending.end(),
                         [&](const warp_pending& p) { return p.mask == mask; });
  if (it == pending.end()) {
    pending.push_back(warp_pending{});
    it = pending.end() - 1;
    it->op = op;
    it->name = name;
    it->mask = mask;
    it->arrived = 0;
    it->width = width;
    it->compute = compute;
  } else if (it->op != op || it->width != width || it->compute != compute || (compute && it->name != name)) {
    fail(std::string(name) + ": lanes of mask " + hex(mask) + " meet in different collectives (" +
         it->name + " is already waiting)");
  }
  it->value[lane] = value;
  it->param[lane] = param;
  it->arrived |= 1u << lane;
  self->blocked = true;
  self->waiting_in = name;
  self->waiting_mask = mask;
  if (it->arrived == mask) {
    const warp_pending done = *it;
    pending.erase(it);
    if (done.op == warp_op::compute) {
      void* records[32];
      for (unsigned l = 0; l < 32; ++l) records[l] = reinterpret_cast<void*>(done.value[l]);
      if (const char* error = done.compute(records)) fail(std::string(name) + ": " + error);
    }
    for (unsigned l = 0; l < 32; ++l) {
      if (!(mask >> l & 1u)) continue;
      sim_thread& t = L->threads[warp * 32 + l];
      t.result = done.op == warp_op::compute ? 0 : combine(done, l);
      t.blocked = false;
      t.waiting_in = nullptr;
      t.waiting_mask = 0;
    }
  }
  yield_to_scheduler();
  return self->result;
}

}  // namespace

std::uint64_t warp_collective(warp_op op, unsigned mask, std::uint64_t value, int param, int width,
                              const char* name) {
  return rendezvous(op, mask, value, param, width, name, nullptr);
}

void warp_compute(void* record, warp_compute_fn compute, const char* name) {
  launch_state* L = running_launch;
  if (!L || !L->running) trap((std::string(name) + " called outside a kernel").c_str());
  const unsigned warp = linear_of(*L->running, *L) / 32;
  if (existing_lanes(*L, warp) != 0xffffffffu)
    fail(std::string(name) + ": warp " + std::to_string(warp) + " has only lanes " + hex(existing_lanes(*L, warp)) +
         "; the instruction is .sync.aligned: all 32 lanes must execute it");
  for (unsigned l = 0; l < 32; ++l)
    if (L->threads[warp * 32 + l].done)
      fail(std::string(name) + ": lane " + std::to_string(l) +
           " has exited; the instruction is .sync.aligned: all 32 lanes must execute it");
  rendezvous(warp_op::compute, 0xffffffffu, reinterpret_cast<std::uint64_t>(record), 0, 32, name, compute);
}

namespace {

void perform(const async_copy_op& c) {
  if (c.src_bytes > 0) std::memcpy(c.dst, c.src, c.src_bytes);
  std::memset(static_cast<unsigned char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
}

sim_thread& async_caller(const char* name) {
  launch_state* L = running_launch;
  if (!L || !L->running) trap((std::string(name) + " called outside a kernel").c_str());
  return *L->running;
}

}  // namespace

void async_copy(void* dst, const void* src, unsigned bytes, unsigned src_bytes, const char* name) {
  sim_thread& self = async_caller(name);
  const auto d = reinterpret_cast<std::uintptr_t>(dst), s = reinterpret_cast<std::uintptr_t>(src);
  if (bytes != 4 && bytes != 8 && bytes != 16) fail(std::string(name) + ": the copy size must be 4, 8 or 16 bytes");
  if (src_bytes > bytes)
    fail(std::string(name) + ": src-size " + std::to_string(src_bytes) + " exceeds the copy size " + std::to_string(bytes));
  if (d == 0 || d % bytes != 0)
    fail(std::string(name) + ": the shared-memory address " + hex(unsigned(d & 0xffffffffu)) + " is not aligned to " +
         std::to_string(bytes) + " bytes");
  if (s % bytes != 0 || (src_bytes > 0 && s == 0))
    fail(std::string(name) + ": the global address " + hex(unsigned(s & 0xffffffffu)) + " is not aligned to " +
         std::to_string(bytes) + " bytes");
  // Under the shuffled schedule half the copies land at once, the earliest moment the hardware
  // allows: a stage overwritten while another warp still reads it then shows as wrong data.
  launch_state& L = *running_launch;
  if (L.shuffled && (L.rng() & 1u)) {
    perform(async_copy_op{dst, src, bytes, src_bytes});
    return;
  }
  self.uncommitted_copies.push_back(async_copy_op{dst, src, bytes, src_bytes});
}

void async_commit() {
  sim_thread& self = async_caller("cp.async.commit_group");
  self.copy_groups.push_back(std::move(self.uncommitted_copies));
  self.uncommitted_copies.clear();
}

void async_wait(int pending) {
  sim_thread& self = async_caller("cp.async.wait_group");
  if (pending < 0) fail("cp.async.wait_group: the number of pending groups must be >= 0");
  while (self.copy_groups.size() > std::size_t(pending)) {
    for (const auto& c : self.copy_groups.front()) perform(c);
    self.copy_groups.pop_front();
  }
}

unsigned active_mask() {
  launch_state* L = running_launch;
  if (!L || !L->running) trap("__activemask called outside a kernel");
  const unsigned warp = linear_of(*L->running, *L) / 32;
  unsigned m = 0;
  for (unsigned l = 0; l < 32 && warp * 32 + l < L->threads_per_block; ++l)
    if (!L->threads[warp * 32 + l].done) m |= 1u << l;
  return m;
}

void trap(const char* why) {
  if (running_launch && running_launch->running) fail(why);
  std::fprintf(stderr, "frugal host SIMT: %s\n", why);
  std::abort();
}

void* dynamic_shared_base() {
  launch_state* L = running_launch;
  if (!L) trap("frugal::dynamic_shared called outside a kernel");
  return L->dynamic_shared.data();
}

namespace {

cudaError_t reject(cudaError_t e, const std::string& why) {
  last_error = why;
  std::fprintf(stderr, "frugal host SIMT: %s\n", why.c_str());
  return note_error(e);
}

// Rejects a launch CUDA would not start; cudaSuccess if it is launchable.
cudaError_t check_launch(const void* kernel, dim3 grid, dim3 block, std::size_t shared_bytes) {
  if (running_launch) return reject(cudaErrorNotSupported, "a kernel launched from inside a kernel");
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
    return reject(cudaErrorInvalidConfiguration, "block (" + std::to_string(block.x) + "," + std::to_string(block.y) +
                                                     "," + std::to_string(block.z) + ") is not a valid CUDA block shape");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    return reject(cudaErrorInvalidConfiguration, "grid dimensions are not valid");
  const std::size_t limit = dynamic_shared_limit(kernel);
  if (shared_bytes > limit)
    return reject(cudaErrorInvalidValue, std::to_string(shared_bytes) + " bytes of dynamic shared memory exceed the " +
                                             std::to_string(limit) +
                                             " allowed for this kernel (raise it with cudaFuncSetAttribute)");
  return cudaSuccess;
}

schedule_choice effective_schedule() {
  schedule_choice s = chosen_schedule;
  if (!s.chosen) {
    if (const char* env = std::getenv("FRUGAL_HOST_SIMT_SHUFFLE")) {
      s.kind = schedule::shuffled;
      s.seed = std::strtoull(env, nullptr, 10);
    }
  }
  return s;
}

// Sets up `L` for blocks of shape `block` and this OS thread's fiber stacks.
void prepare(launch_state& L, kernel_body body, dim3 grid, dim3 block, std::size_t shared_bytes, schedule_choice s,
             unsigned long long seed) {
  L.body = body;
  L.grid = grid;
  L.block = block;
  L.threads_per_block = block.x * block.y * block.z;
  L.warps_per_block = (L.threads_per_block + 31) / 32;
  L.threads.resize(L.threads_per_block);
  L.warps.resize(L.warps_per_block);
  // Fresh dynamic shared memory is filled with a pattern, not zeros, so that reading it before
  // writing shows up as garbage, as it would on a GPU.
  L.dynamic_shared.assign(shared_bytes + 16, 0xA5);
  L.shuffled = s.kind == schedule::shuffled;
  L.rng.seed(seed);
  const std::size_t stack_bytes = fiber_stack_bytes();
  if (stack_pool_bytes != stack_bytes) {
    stack_pool.clear();
    stack_pool_bytes = stack_bytes;
  }
  while (stack_pool.size() < L.threads_per_block) stack_pool.push_back(std::make_unique<fiber_stack>(stack_bytes));
}

std::vector<uint3> blocks_of(dim3 grid) {
  std::vector<uint3> blocks;
  blocks.reserve(std::size_t(grid.x) * grid.y * grid.z);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) blocks.push_back(uint3{x, y, z});
  return blocks;
}

// Runs `run(body)` now, or, on a capturing stream, records it with its own copy of the body for
// the graph to run later. Launch checks happen before, at submission, as on a GPU.
template <class Run>
cudaError_t run_or_capture(cudaStream_t stream, kernel_body body, Run run) {
  cudaError_t result = cudaSuccess;
  auto recorded = [&]() -> std::function<cudaError_t()> {
    std::shared_ptr<void> owned(body.clone(body.context), body.destroy);
    return [owned, body, run] {
      kernel_body copy = body;
      copy.context = owned.get();
      return run(copy);
    };
  };
  if (record_if_capturing(stream, recorded, result) || result) return result;
  return run(body);
}

cudaError_t run_launch(dim3 grid, dim3 block, std::size_t shared_bytes, kernel_body body) {
  launch_state L;
  const schedule_choice s = effective_schedule();
  prepare(L, body, grid, block, shared_bytes, s, s.seed);
  std::vector<uint3> blocks = blocks_of(grid);
  if (L.shuffled) std::shuffle(blocks.begin(), blocks.end(), L.rng);

  running_launch = &L;
  for (const uint3& b : blocks) {
    run_block(L, b);
    if (L.failed) break;
  }
  running_launch = nullptr;
  if (L.failed) return reject(cudaErrorLaunchFailure, L.error);
  return cudaSuccess;
}

cudaError_t run_cooperative(dim3 grid, dim3 block, std::size_t shared_bytes, kernel_body body) {
  const unsigned long long blocks_total = 1ull * grid.x * grid.y * grid.z;
  grid_sync_state sync;
  sync.blocks = unsigned(blocks_total);
  const schedule_choice s = effective_schedule();
  std::vector<uint3> blocks = blocks_of(grid);
  std::vector<std::thread> workers;
  workers.reserve(blocks.size());
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    workers.emplace_back([&, i] {
      // Each block gets its own OS thread, fiber stacks, shared memory and schedule stream.
      launch_state L;
      prepare(L, body, grid, block, shared_bytes, s, s.seed * 0x9E3779B97F4A7C15ull + i);
      L.grid_sync = &sync;
      running_launch = &L;
      run_block(L, blocks[i]);
      running_launch = nullptr;
      if (L.failed) sync.fail(L.error);
      else sync.block_finished(describe(blocks[i]));
    });
  }
  for (auto& w : workers) w.join();
  if (sync.failed) return reject(cudaErrorLaunchFailure, sync.error);
  return cudaSuccess;
}

}  // namespace

cudaError_t launch(const void* kernel, dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                   kernel_body body) {
  if (const cudaError_t e = check_launch(kernel, grid, block, shared_bytes)) return e;
  return run_or_capture(stream, body, [=](kernel_body b) { return run_launch(grid, block, shared_bytes, b); });
}

cudaError_t launch_cooperative(const void* kernel, dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                               kernel_body body) {
  if (const cudaError_t e = check_launch(kernel, grid, block, shared_bytes)) return e;
  const unsigned threads = block.x * block.y * block.z;
  int per_sm = 0, sms = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, int(threads), shared_bytes);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const unsigned long long blocks_total = 1ull * grid.x * grid.y * grid.z;
  if (blocks_total > 1ull * per_sm * sms)
    return reject(cudaErrorCooperativeLaunchTooLarge,
                  "a cooperative grid of " + std::to_string(blocks_total) + " blocks exceeds the " +
                      std::to_string(per_sm * sms) + " that can be resident at once");
  return run_or_capture(stream, body, [=](kernel_body b) { return run_cooperative(grid, block, shared_bytes, b); });
}

}  // namespace detail

void set_schedule(schedule s, unsigned long long seed) {
  detail::chosen_schedule = detail::schedule_choice{true, s, seed};
}

const char* last_error_message() { return detail::last_error.c_str(); }

std::size_t fiber_stack_bytes() {
  if (const char* env = std::getenv("FRUGAL_HOST_SIMT_STACK_KB")) {
    const unsigned long long kb = std::strtoull(env, nullptr, 10);
    if (kb >= 16) return std::size_t(kb) * 1024;
  }
  return std::size_t(256) * 1024;
}

}  // namespace frugal::host_simt

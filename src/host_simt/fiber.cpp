// SPDX-License-Identifier: Apache-2.0
#include "fiber.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#if defined(__SANITIZE_ADDRESS__)
#define FRUGAL_FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FRUGAL_FIBER_ASAN 1
#endif
#endif
#if defined(FRUGAL_FIBER_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace frugal::host_simt::detail {

namespace {

#if defined(FRUGAL_FIBER_ASAN)
// The context that switched last on this OS thread: the one a resumed context came from.
thread_local fiber_context* switched_from = nullptr;

// Before leaving `from` for `to` (from == nullptr: `from` is finished and never resumed).
void announce_switch(fiber_context* from, fiber_context& to, fiber_context& source) {
  switched_from = &source;
  __sanitizer_start_switch_fiber(from ? &from->fake_stack : nullptr, to.stack_bottom, to.stack_size);
}

// After arriving in a context (fake_stack: its saved frames, null on its first run). The context
// we came from learns its stack bounds here: the scheduler's are not known before.
void complete_switch(void* fake_stack) {
  const void* bottom = nullptr;
  std::size_t size = 0;
  __sanitizer_finish_switch_fiber(fake_stack, &bottom, &size);
  if (switched_from && !switched_from->stack_bottom) {
    switched_from->stack_bottom = bottom;
    switched_from->stack_size = size;
  }
}
#else
void announce_switch(fiber_context*, fiber_context&, fiber_context&) {}
void complete_switch(void*) {}
#endif

void raw_switch(fiber_context& from, fiber_context& to);

}  // namespace

void begin_fiber() { complete_switch(nullptr); }

void switch_fiber(fiber_context& from, fiber_context& to) {
  announce_switch(&from, to, from);
  raw_switch(from, to);
  complete_switch(from.fake_stack);
}

void exit_fiber(fiber_context& from, fiber_context& to) {
  announce_switch(nullptr, to, from);
  raw_switch(from, to);
}

fiber_stack::fiber_stack(std::size_t bytes) {
  const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
  bytes_ = (bytes + page - 1) / page * page;
  mapped_ = bytes_ + page;
  void* m = mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    std::fprintf(stderr, "frugal host SIMT: cannot map a fiber stack of %zu bytes\n", bytes_);
    std::abort();
  }
  mapping_ = static_cast<char*>(m);
  // A stack overflow in a kernel faults on the guard page instead of corrupting a neighbour.
  mprotect(mapping_, page, PROT_NONE);
  base_ = mapping_ + page;
}

fiber_stack::~fiber_stack() {
#if defined(FRUGAL_FIBER_ASAN)
  __asan_unpoison_memory_region(base_, bytes_);  // the next mapping here starts clean
#endif
  munmap(mapping_, mapped_);
}

namespace {
void prepare_stack(fiber_context& ctx, const fiber_stack& stack) {
  ctx.stack_bottom = stack.bottom();
  ctx.stack_size = stack.bytes();
  ctx.fake_stack = nullptr;
#if defined(FRUGAL_FIBER_ASAN)
  __asan_unpoison_memory_region(stack.bottom(), stack.bytes());
#endif
}
}  // namespace

#if defined(__x86_64__)

extern "C" void frugal_host_simt_switch(void** save_sp, void* load_sp);

// Pushes the System V callee-saved registers, swaps stack pointers, pops and returns into the
// other context. A new fiber's stack is laid out so that the final `ret` enters its entry point.
asm(R"(
  .text
  .p2align 4
  .globl frugal_host_simt_switch
  .type frugal_host_simt_switch,@function
frugal_host_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size frugal_host_simt_switch, .-frugal_host_simt_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");

void make_fiber(fiber_context& ctx, const fiber_stack& stack, void (*entry)()) {
  prepare_stack(ctx, stack);
  auto top = reinterpret_cast<std::uintptr_t>(stack.top()) & ~std::uintptr_t(15);
  auto* slot = reinterpret_cast<std::uintptr_t*>(top);
  *--slot = 0;                                         // entry's (never used) return address
  *--slot = reinterpret_cast<std::uintptr_t>(entry);  // popped by `ret`; 16-byte aligned
  for (int i = 0; i < 6; ++i) *--slot = 0;             // rbp rbx r12 r13 r14 r15
  ctx.sp = slot;
}

namespace {
void raw_switch(fiber_context& from, fiber_context& to) { frugal_host_simt_switch(&from.sp, to.sp); }
}  // namespace

#else

void make_fiber(fiber_context& ctx, const fiber_stack& stack, void (*entry)()) {
  prepare_stack(ctx, stack);
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack.bottom();
  ctx.uc.uc_stack.ss_size = stack.bytes();
  ctx.uc.uc_link = nullptr;
  makecontext(&ctx.uc, entry, 0);
}

namespace {
void raw_switch(fiber_context& from, fiber_context& to) { swapcontext(&from.uc, &to.uc); }
}  // namespace

#endif

}  // namespace frugal::host_simt::detail

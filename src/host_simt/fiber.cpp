// SPDX-License-Identifier: Apache-2.0
#include "fiber.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace frugal::host_simt::detail {

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

fiber_stack::~fiber_stack() { munmap(mapping_, mapped_); }

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
  auto top = reinterpret_cast<std::uintptr_t>(stack.top()) & ~std::uintptr_t(15);
  auto* slot = reinterpret_cast<std::uintptr_t*>(top);
  *--slot = 0;                                         // entry's (never used) return address
  *--slot = reinterpret_cast<std::uintptr_t>(entry);  // popped by `ret`; 16-byte aligned
  for (int i = 0; i < 6; ++i) *--slot = 0;             // rbp rbx r12 r13 r14 r15
  ctx.sp = slot;
}

void switch_fiber(fiber_context& from, fiber_context& to) { frugal_host_simt_switch(&from.sp, to.sp); }

#else

void make_fiber(fiber_context& ctx, const fiber_stack& stack, void (*entry)()) {
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack.bottom();
  ctx.uc.uc_stack.ss_size = stack.bytes();
  ctx.uc.uc_link = nullptr;
  makecontext(&ctx.uc, entry, 0);
}

void switch_fiber(fiber_context& from, fiber_context& to) { swapcontext(&from.uc, &to.uc); }

#endif

}  // namespace frugal::host_simt::detail

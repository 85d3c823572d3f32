// SPDX-License-Identifier: Apache-2.0
// Minimal cooperative fibers for the host SIMT scheduler: a stack and a saved stack pointer.
// x86-64 uses a hand-written switch of the callee-saved registers (a few nanoseconds); other
// targets fall back to ucontext, which also works but enters the kernel on every switch.
#pragma once

#include <cstddef>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace frugal::host_simt::detail {

class fiber_stack {
 public:
  explicit fiber_stack(std::size_t bytes);
  ~fiber_stack();
  fiber_stack(const fiber_stack&) = delete;
  fiber_stack& operator=(const fiber_stack&) = delete;
  char* top() const { return base_ + bytes_; }
  char* bottom() const { return base_; }
  std::size_t bytes() const { return bytes_; }

 private:
  char* mapping_ = nullptr;  // includes one guard page below base_
  char* base_ = nullptr;
  std::size_t bytes_ = 0;
  std::size_t mapped_ = 0;
};

// Saved execution state of a suspended fiber (or of the scheduler).
struct fiber_context {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
  // The stack the context runs on, for AddressSanitizer (which must be told of every switch to
  // another stack). A fiber's is set by make_fiber; the scheduler's is learnt on the first switch.
  const void* stack_bottom = nullptr;
  std::size_t stack_size = 0;
  void* fake_stack = nullptr;  // AddressSanitizer's saved fake frames of the suspended context
};

// Prepares `ctx` so that switching to it runs `entry()` on `stack`; entry must never return and
// must call begin_fiber() first. A reused stack is cleared of the sanitizer's stale poison (a
// fiber of a failed launch is abandoned mid-frame, its redzones still marked).
void make_fiber(fiber_context& ctx, const fiber_stack& stack, void (*entry)());
// The first call of a fiber's entry: completes the switch that started it.
void begin_fiber();
// Saves the running context in `from` and resumes `to`.
void switch_fiber(fiber_context& from, fiber_context& to);
// The last switch of a fiber that has finished: `from` is never resumed.
void exit_fiber(fiber_context& from, fiber_context& to);

}  // namespace frugal::host_simt::detail

// SPDX-License-Identifier: Apache-2.0
// Thread-level frugal from plain C++: no CUDA compiler involved.
#include <frugal/reference/topk.hpp>
#include <frugal/topk/thread_topk.cuh>

#include <cstdio>

int main() {
  const float scores[6] = {0.1f, 0.7f, 0.7f, -2.0f, 0.3f, 0.9f};
  const auto best = frugal::thread_topk_of<3>(scores);
  const unsigned a = frugal::topk_key_index(best.keys[0]), b = frugal::topk_key_index(best.keys[1]),
                 c = frugal::topk_key_index(best.keys[2]);
  if (a != 5 || b != 1 || c != 2) {
    std::printf("consumer: thread_topk gave %u %u %u\n", a, b, c);
    return 1;
  }
  std::printf("consumer: thread_topk 5 1 2 verified\n");
  return 0;
}

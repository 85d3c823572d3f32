// SPDX-License-Identifier: Apache-2.0
// Entry point of frugal_bench: every benchmark of bench/*.cu in one binary.
#include "support/bench_support.cuh"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  frugal::bench::add_device_context();
  if (!frugal::bench::device().present) std::printf("frugal_bench: no CUDA device; every benchmark is skipped\n");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

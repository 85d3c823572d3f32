// SPDX-License-Identifier: Apache-2.0
// doctest main shared by every test binary.
//  - device tier (FRUGAL_TEST_NEEDS_GPU): exits with 77, which CTest reports as skipped, when no
//    CUDA device is usable; listing test cases works without one.
//  - host SIMT tier: --simt-shuffle=<seed> runs every launch with the shuffled schedule.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(FRUGAL_HOST_SIMT)
#include <frugal/host_simt/host_simt.hpp>
#endif
#if defined(FRUGAL_TEST_NEEDS_GPU)
#include <cuda_runtime_api.h>
#endif

int main(int argc, char** argv) {
  std::vector<char*> args;
  bool listing = false;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--simt-shuffle=", 15) == 0) {
#if defined(FRUGAL_HOST_SIMT)
      frugal::host_simt::set_schedule(frugal::host_simt::schedule::shuffled,
                                      std::strtoull(argv[i] + 15, nullptr, 10));
#endif
      continue;
    }
    if (std::strncmp(argv[i], "--list", 6) == 0 || std::strncmp(argv[i], "-l", 2) == 0 ||
        std::strcmp(argv[i], "-h") == 0 || std::strcmp(argv[i], "--help") == 0)
      listing = true;
    args.push_back(argv[i]);
  }
#if defined(FRUGAL_TEST_NEEDS_GPU)
  if (!listing) {
    int devices = 0;
    // Without a driver this is cudaErrorInsufficientDriver, not cudaErrorNoDevice: any error
    // means "no GPU here".
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      std::printf("SKIPPED: no usable CUDA device; the device tier runs only on a machine with a GPU\n");
      return 77;
    }
  }
#endif
  (void)listing;
  doctest::Context context(int(args.size()), args.data());
  return context.run();
}

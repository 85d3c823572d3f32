// SPDX-License-Identifier: Apache-2.0
//! @file
//! The single kernel-launch helper. Every frugal entry point launches through `frugal::launch`,
//! so host SIMT mode can take launches over without touching the kernels.
#pragma once

#include <frugal/config.cuh>

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

namespace frugal {

//! Launch geometry and stream of one kernel launch.
struct launch_config {
  dim3 grid{1, 1, 1};
  dim3 block{1, 1, 1};
  std::size_t shared_bytes = 0;  //!< dynamic shared memory, see frugal::dynamic_shared
  cudaStream_t stream = nullptr;
};

namespace detail {
#if defined(FRUGAL_HOST_SIMT)
template <class... Params, class... Args>
status simt_launch(bool cooperative, void (*kernel)(Params...), const launch_config& config, Args&&... args) {
  // The arguments converted once; each emulated thread calls the kernel with its own copies of
  // them, as on a GPU. A launch captured into a CUDA graph keeps a copy of the whole body.
  auto body = [kernel, params = std::tuple<Params...>(Params(std::forward<Args>(args))...)] { std::apply(kernel, params); };
  using body_t = decltype(body);
  host_simt::detail::kernel_body invoke{[](void* b) { (*static_cast<body_t*>(b))(); }, &body,
                                        [](const void* b) -> void* { return new body_t(*static_cast<const body_t*>(b)); },
                                        [](void* b) { delete static_cast<body_t*>(b); }};
  const auto start = cooperative ? host_simt::detail::launch_cooperative : host_simt::detail::launch;
  return status::from_cuda(start(reinterpret_cast<const void*>(kernel), config.grid, config.block, config.shared_bytes,
                                 config.stream, invoke));
}
#endif
}  // namespace detail

//! Launches `kernel` with `config`, converting `args` to the kernel's parameter types.
//! An empty grid launches nothing and succeeds (CUDA itself rejects a zero grid dimension).
//! Returns the launch error, if any; it does not synchronize.
template <class... Params, class... Args>
status launch(void (*kernel)(Params...), const launch_config& config, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "frugal::launch: wrong number of kernel arguments");
  if (config.grid.x == 0 || config.grid.y == 0 || config.grid.z == 0) return status{};
#if defined(FRUGAL_HOST_SIMT)
  return detail::simt_launch(false, kernel, config, std::forward<Args>(args)...);
#elif defined(__CUDACC__)
  kernel<<<config.grid, config.block, config.shared_bytes, config.stream>>>(std::forward<Args>(args)...);
  return status::from_cuda(cudaGetLastError());
#else
  static_assert(sizeof(kernel) == 0, "frugal::launch: compile kernels with nvcc, or with the host compiler in host SIMT mode");
  return status::unsupported("frugal::launch: no kernel compiler");
#endif
}

//! Launches `kernel` cooperatively: every block resident at once, so the kernel may call
//! frugal::grid_sync (core/grid_sync.cuh). The grid must not exceed cooperative_grid_blocks.
template <class... Params, class... Args>
status launch_cooperative(void (*kernel)(Params...), const launch_config& config, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "frugal::launch_cooperative: wrong number of kernel arguments");
  // cudaLaunchCooperativeKernel takes the address of each argument; a reference parameter would
  // hand the kernel a host address.
  static_assert(!(std::is_reference_v<Params> || ...), "frugal::launch_cooperative: kernel parameters must be values");
  if (config.grid.x == 0 || config.grid.y == 0 || config.grid.z == 0) return status{};
#if defined(FRUGAL_HOST_SIMT)
  return detail::simt_launch(true, kernel, config, std::forward<Args>(args)...);
#elif defined(__CUDACC__)
  std::tuple<Params...> values(std::forward<Args>(args)...);  // converted to the parameter types
  return std::apply(
      [&](auto&... v) {
        void* argv[] = {static_cast<void*>(&v)..., nullptr};
        return status::from_cuda(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), config.grid,
                                                             config.block, argv, config.shared_bytes, config.stream));
      },
      values);
#else
  static_assert(sizeof(kernel) == 0, "frugal::launch_cooperative: compile kernels with nvcc, or with the host compiler in host SIMT mode");
  return status::unsupported("frugal::launch_cooperative: no kernel compiler");
#endif
}

//! Raises the dynamic shared memory `kernel` may use to `bytes`. Needed when its static plus
//! dynamic shared memory exceeds 48 KiB; set for any size, because the static part (a kernel's
//! own __shared__ variables) is not known here: 48 KiB of dynamic memory beside 56 bytes of static
//! memory fails to launch without it.
template <class... Params>
status allow_dynamic_shared(void (*kernel)(Params...), std::size_t bytes) {
  if (bytes == 0) return status{};
  return status::from_cuda(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

//! Number of multiprocessors of the current device (host SIMT: the emulated device's).
inline status multiprocessor_count(int& count) {
  int device = 0;
  FRUGAL_TRY(status::from_cuda(cudaGetDevice(&device)));
  return status::from_cuda(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
}

//! Most blocks of `threads` threads (and `shared_bytes` dynamic shared memory) of `kernel` that
//! can be resident at once on the current device: the largest cooperative grid.
template <class... Params>
status cooperative_grid_blocks(void (*kernel)(Params...), int threads, std::size_t shared_bytes, int& blocks) {
  int per_sm = 0, sms = 0;
  FRUGAL_TRY(status::from_cuda(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, reinterpret_cast<const void*>(kernel), threads, shared_bytes)));
  FRUGAL_TRY(multiprocessor_count(sms));
  blocks = per_sm * sms;
  if (blocks < 1) return status::unsupported("frugal: the kernel cannot be resident on this device (occupancy 0)");
  return status{};
}

}  // namespace frugal

# SPDX-License-Identifier: Apache-2.0
# Helpers for frugal's own tests, benchmarks and examples: one place sets the compiler flags of
# the three tiers that build code (host, host SIMT, nvcc) and registers the tests.

# A compiler cache (ccache), when installed, for every compile of frugal's own targets: the nvcc
# builds dominate a fresh build. FRUGAL_USE_CCACHE=OFF turns it off.
option(FRUGAL_USE_CCACHE "Compile frugal's tests, benchmarks and examples through ccache when found" ON)
set(frugal_ccache "")
if(FRUGAL_USE_CCACHE)
  find_program(FRUGAL_CCACHE_PROGRAM ccache)
  if(FRUGAL_CCACHE_PROGRAM)
    set(frugal_ccache "${FRUGAL_CCACHE_PROGRAM}")
    set(CMAKE_CXX_COMPILER_LAUNCHER "${frugal_ccache}")
  endif()
endif()

set(FRUGAL_PTXAS_REPORT_DIR "${CMAKE_BINARY_DIR}/ptxas-report" CACHE INTERNAL "")
file(MAKE_DIRECTORY "${FRUGAL_PTXAS_REPORT_DIR}")
file(WRITE "${FRUGAL_PTXAS_REPORT_DIR}/allowed-spills.txt" "")

# Host compiler warnings for everything frugal builds with g++/clang++.
function(frugal_host_flags target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wshadow -Werror>)
endfunction()

# nvcc targets: warnings are errors (ptxas and the host pass included), ptxas reports resources
# into FRUGAL_PTXAS_REPORT_DIR through cmake/ptxas-report, and a register spill fails the build
# unless the target says why it may spill:  frugal_cuda_flags(t ALLOW_SPILLS "reason").
function(frugal_cuda_flags target)
  cmake_parse_arguments(arg "" "ALLOW_SPILLS" "" ${ARGN})
  set(ptxas -v)
  if(arg_ALLOW_SPILLS)
    file(APPEND "${FRUGAL_PTXAS_REPORT_DIR}/allowed-spills.txt" "${target}: ${arg_ALLOW_SPILLS}\n")
  else()
    list(APPEND ptxas --warn-on-spills)
  endif()
  list(JOIN ptxas "," ptxas)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings -Xptxas=${ptxas} -Xcompiler=-Wall,-Wextra>)
  set_target_properties(${target} PROPERTIES
    CUDA_COMPILER_LAUNCHER "${CMAKE_COMMAND};-E;env;FRUGAL_CCACHE=${frugal_ccache};${PROJECT_SOURCE_DIR}/cmake/ptxas-report;${FRUGAL_PTXAS_REPORT_DIR}")
  frugal_host_flags(${target})
endfunction()

# A g++ translation unit that includes `source` (a .cu file), so the same kernel source builds
# for host SIMT mode without changing its language property (which nvcc's build of it needs).
function(frugal_simt_wrapper out_var source)
  get_filename_component(abs "${source}" ABSOLUTE)
  get_filename_component(stem "${source}" NAME_WE)
  set(wrapper "${CMAKE_CURRENT_BINARY_DIR}/simt/${stem}.cpp")
  file(CONFIGURE OUTPUT "${wrapper}" CONTENT "#include \"${abs}\"\n" @ONLY)
  set(${out_var} "${wrapper}" PARENT_SCOPE)
endfunction()

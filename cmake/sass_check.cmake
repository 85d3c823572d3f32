# SPDX-License-Identifier: Apache-2.0
# cmake -D CUOBJDUMP=<path> -D BINARY=<file> -D ARCH=sm_XX -D "REQUIRE=<regex>;..." [-D "FORBID=<regex>;..."]
#       -P sass_check.cmake
# Reads the SASS of BINARY for ARCH with cuobjdump (nvdisasm beside it) and fails unless every
# REQUIRE pattern occurs and no FORBID pattern does: the tensor-core wrappers must become the
# instructions they name (HMMA, HMMA.SP, LDSM, LDGSTS), and the kernels must not touch local
# memory (LDL / STL: spills or run-time indexed register arrays).
if(NOT CUOBJDUMP OR NOT EXISTS "${CUOBJDUMP}")
  message(FATAL_ERROR "cuobjdump not found (${CUOBJDUMP}): scripts/test provides it, or configure with "
                      "-D FRUGAL_CUDA_BINARY_TOOLS=<folder with cuobjdump and nvdisasm>")
endif()
get_filename_component(tools "${CUOBJDUMP}" DIRECTORY)
get_filename_component(name "${BINARY}" NAME)
set(listing "${CMAKE_CURRENT_BINARY_DIR}/sass-${ARCH}-${name}.txt")
execute_process(COMMAND ${CMAKE_COMMAND} -E env "PATH=${tools}:$ENV{PATH}" "NVDISASM_PATH=${tools}"
                        "${CUOBJDUMP}" -sass -arch ${ARCH} "${BINARY}"
                OUTPUT_FILE "${listing}" ERROR_VARIABLE errors RESULT_VARIABLE rc)
file(SIZE "${listing}" bytes)
if(NOT rc EQUAL 0 OR bytes EQUAL 0)
  message(FATAL_ERROR "cuobjdump -sass -arch ${ARCH} ${BINARY} failed (${rc}): ${errors}")
endif()
# grep -c: CMake's own regex engine takes half a minute on tens of megabytes of SASS.
set(failed "")
foreach(pattern IN LISTS REQUIRE)
  execute_process(COMMAND grep -cE "${pattern}" "${listing}" OUTPUT_VARIABLE count OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT count OR count EQUAL 0)
    string(APPEND failed "\n  missing: ${pattern}")
  else()
    message(STATUS "${ARCH}: ${count} lines with ${pattern}")
  endif()
endforeach()
foreach(pattern IN LISTS FORBID)
  execute_process(COMMAND grep -m1 -E "${pattern}" "${listing}" OUTPUT_VARIABLE hit OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(hit)
    string(APPEND failed "\n  present but forbidden: ${pattern}: ${hit}")
  endif()
endforeach()
file(REMOVE "${listing}")
if(failed)
  message(FATAL_ERROR "SASS of ${BINARY} for ${ARCH}:${failed}")
endif()
message(STATUS "SASS of ${BINARY} for ${ARCH}: every required instruction present, none forbidden")

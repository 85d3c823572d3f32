# SPDX-License-Identifier: Apache-2.0
# cmake -D MODE=<find_package|add_subdirectory> -D FRUGAL_SOURCE_DIR=... -D FRUGAL_BINARY_DIR=...
#       -D WORK_DIR=... -D GENERATOR=... -D CUDA_COMPILER=... -P run_consumer.cmake
# Installs frugal (find_package mode), configures and builds tests/consumer, runs its programs.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(args -S "${FRUGAL_SOURCE_DIR}/tests/consumer" -B "${WORK_DIR}/build" -G "${GENERATOR}"
    -D "CMAKE_CUDA_COMPILER=${CUDA_COMPILER}" -D CMAKE_CUDA_ARCHITECTURES=90 -D "FRUGAL_CONSUMER_MODE=${MODE}")
if(MODE STREQUAL "find_package")
  run("${CMAKE_COMMAND}" --install "${FRUGAL_BINARY_DIR}" --prefix "${WORK_DIR}/prefix")
  list(APPEND args -D "CMAKE_PREFIX_PATH=${WORK_DIR}/prefix")
else()
  list(APPEND args -D "FRUGAL_SOURCE_DIR=${FRUGAL_SOURCE_DIR}")
endif()
run("${CMAKE_COMMAND}" ${args})
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/build")
foreach(program IN ITEMS consumer_host consumer_simt consumer_device)
  run("${WORK_DIR}/build/${program}")
endforeach()
message("consumer: all checks passed (${MODE})")

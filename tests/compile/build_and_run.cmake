# SPDX-License-Identifier: Apache-2.0
# Builds TARGET in the build tree BUILD, then runs EXE: a compile-tier test of a program that
# must link (and start).
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${BUILD}" --target "${TARGET}" RESULT_VARIABLE built)
if(NOT built EQUAL 0)
  message(FATAL_ERROR "building ${TARGET} failed")
endif()
execute_process(COMMAND "${EXE}" RESULT_VARIABLE ran)
if(NOT ran EQUAL 0)
  message(FATAL_ERROR "${EXE} exited with ${ran}")
endif()

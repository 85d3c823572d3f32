# SPDX-License-Identifier: Apache-2.0
# Registers every doctest test case of a test executable as its own CTest test, discovered after
# each build by listing the executable's cases (so adding a case needs no re-configure).
#
#   frugal_discover_tests(<target> PREFIX <name prefix> LABEL <tier> [SKIP_RETURN_CODE <code>]
#                         [ARGS <extra arguments>...])

set(FRUGAL_DISCOVER_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/FrugalDiscoverTests.cmake")

if(CMAKE_SCRIPT_MODE_FILE)
  # ---- script mode: run at build time by the POST_BUILD step -----------------------------------
  execute_process(COMMAND "${EXECUTABLE}" --list-test-cases --no-version
                  OUTPUT_VARIABLE listing RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "listing the test cases of ${EXECUTABLE} failed (${rc}):\n${listing}")
  endif()
  string(REPLACE ";" "," listing "${listing}")
  string(REPLACE "\n" ";" lines "${listing}")
  set(script "")
  foreach(line IN LISTS lines)
    if(line STREQUAL "" OR line MATCHES "^===" OR line MATCHES "^\\[doctest\\]")
      continue()
    endif()
    string(REPLACE "," "\\," filter "${line}")  # doctest splits filters at commas
    set(name "${PREFIX}${line}")
    string(APPEND script "add_test([==[${name}]==] [==[${EXECUTABLE}]==] [==[--test-case=${filter}]==]")
    foreach(arg IN LISTS ARGS)
      string(APPEND script " [==[${arg}]==]")
    endforeach()
    string(APPEND script ")\nset_tests_properties([==[${name}]==] PROPERTIES LABELS ${LABEL} TIMEOUT 900")
    if(SKIP_RETURN_CODE)
      string(APPEND script " SKIP_RETURN_CODE ${SKIP_RETURN_CODE}")
    endif()
    string(APPEND script ")\n")
  endforeach()
  file(WRITE "${OUTPUT}" "${script}")
  return()
endif()

function(frugal_discover_tests target)
  cmake_parse_arguments(arg "" "PREFIX;LABEL;SKIP_RETURN_CODE" "ARGS" ${ARGN})
  string(MD5 key "${arg_PREFIX}${arg_ARGS}")
  string(SUBSTRING "${key}" 0 8 key)
  set(tests_file "${CMAKE_CURRENT_BINARY_DIR}/${target}-${key}-tests.cmake")
  set(include_file "${CMAKE_CURRENT_BINARY_DIR}/${target}-${key}-include.cmake")
  add_custom_command(TARGET ${target} POST_BUILD
    COMMAND "${CMAKE_COMMAND}" -D "EXECUTABLE=$<TARGET_FILE:${target}>" -D "PREFIX=${arg_PREFIX}"
            -D "LABEL=${arg_LABEL}" -D "SKIP_RETURN_CODE=${arg_SKIP_RETURN_CODE}"
            -D "ARGS=${arg_ARGS}" -D "OUTPUT=${tests_file}" -P "${FRUGAL_DISCOVER_SCRIPT}"
    BYPRODUCTS "${tests_file}" VERBATIM)
  file(WRITE "${include_file}"
    "if(EXISTS \"${tests_file}\")\n  include(\"${tests_file}\")\nelse()\n"
    "  add_test(${target}-not-built ${target}-not-built)\nendif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${include_file}")
endfunction()

# Included by the top-level CMakeLists.txt with the tests. Builds fuzz/ (a
# project of its own: it needs clang for libFuzzer) as an ExternalProject
# and adds `fuzz_append`, a short fuzz session (fuzz/run_ctest.sh). Without
# clang the test exists and fails, saying why: scripts/install-deps
# installs clang-14 and libclang-rt-14-dev, so it is never skipped.
find_program(AUTHTRAIL_FUZZ_CXX NAMES clang++-14
             DOC "clang++ with libFuzzer, for fuzz/")
set(AUTHTRAIL_FUZZ_JOBS 1 CACHE STRING "Parallel jobs of the fuzz/ build")
set(_fuzz_src ${PROJECT_SOURCE_DIR}/fuzz)
if(AUTHTRAIL_FUZZ_CXX)
  include(ExternalProject)
  ExternalProject_Add(authtrail_fuzz
    SOURCE_DIR ${_fuzz_src}
    BINARY_DIR ${CMAKE_BINARY_DIR}/fuzz
    CMAKE_GENERATOR ${CMAKE_GENERATOR}
    CMAKE_ARGS -DCMAKE_CXX_COMPILER=${AUTHTRAIL_FUZZ_CXX}
               -DCMAKE_BUILD_TYPE=RelWithDebInfo
    # One job: it runs beside the main build's jobs on a 2-core machine.
    BUILD_COMMAND ${CMAKE_COMMAND} --build <BINARY_DIR> -j ${AUTHTRAIL_FUZZ_JOBS}
    # Sources outside fuzz/ change too: let the inner build decide.
    BUILD_ALWAYS ON
    INSTALL_COMMAND "")
  add_test(NAME fuzz_append
           COMMAND bash ${_fuzz_src}/run_ctest.sh
                   ${CMAKE_BINARY_DIR}/fuzz/authtrail_append_fuzzer
                   ${_fuzz_src})
else()
  add_test(NAME fuzz_append
           COMMAND sh -c "echo 'FAIL: clang++-14 was not found when this \
build was configured, so the fuzz target was not built; run \
scripts/install-deps and configure again' >&2; exit 1")
endif()
set_tests_properties(fuzz_append PROPERTIES TIMEOUT 300)

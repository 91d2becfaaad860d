# Extra test targets (included by tests/CMakeLists.txt when present).
#
# fuzz_safetensors: the libFuzzer target for the safetensors reader. libFuzzer ships with clang
# only, so the target exists only in a clang build; scripts/fuzz-safetensors.sh configures one
# (with the whole library under AddressSanitizer) and runs it. In such a build CTest also replays
# the seed corpus once as a regression test.
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  add_executable(fuzz_safetensors ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_safetensors.cpp)
  target_compile_options(fuzz_safetensors PRIVATE -fsanitize=fuzzer,address -g)
  target_link_options(fuzz_safetensors PRIVATE -fsanitize=fuzzer,address)
  target_link_libraries(fuzz_safetensors PRIVATE gantry::gantry)
  add_test(NAME fuzz_safetensors_corpus
    COMMAND fuzz_safetensors -runs=0 ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus)
  set_tests_properties(fuzz_safetensors_corpus PROPERTIES LABELS fuzz)
endif()

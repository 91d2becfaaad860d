# Extra test targets (included by tests/CMakeLists.txt when present).
#
# fuzz_safetensors, fuzz_torch_checkpoint, fuzz_pickle: the libFuzzer targets for the two
# checkpoint readers and the unpickler (also the CIFAR python version's reader).
# libFuzzer ships with clang only, so the targets exist only in a clang build; scripts/fuzz.sh
# configures one (with the whole library under AddressSanitizer) and runs one. In such a build
# CTest also replays each seed corpus once as a regression test.
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  add_executable(fuzz_safetensors ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_safetensors.cpp)
  target_compile_options(fuzz_safetensors PRIVATE -fsanitize=fuzzer,address -g)
  target_link_options(fuzz_safetensors PRIVATE -fsanitize=fuzzer,address)
  target_link_libraries(fuzz_safetensors PRIVATE gantry::gantry)
  add_test(NAME fuzz_safetensors_corpus
    COMMAND fuzz_safetensors -runs=0 ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus)
  set_tests_properties(fuzz_safetensors_corpus PROPERTIES LABELS fuzz)
  add_executable(fuzz_pickle ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_pickle.cpp)
  target_compile_options(fuzz_pickle PRIVATE -fsanitize=fuzzer,address -g)
  target_link_options(fuzz_pickle PRIVATE -fsanitize=fuzzer,address)
  target_link_libraries(fuzz_pickle PRIVATE gantry::gantry)
  add_test(NAME fuzz_pickle_corpus
    COMMAND fuzz_pickle -runs=0 ${CMAKE_CURRENT_SOURCE_DIR}/data/pickle ${CMAKE_CURRENT_SOURCE_DIR}/data/cifar-10-batches-py
      ${CMAKE_CURRENT_SOURCE_DIR}/data/cifar-100-python)
  set_tests_properties(fuzz_pickle_corpus PROPERTIES LABELS fuzz)
  if(GANTRY_HAVE_LIBZIP)
    add_executable(fuzz_torch_checkpoint ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_torch_checkpoint.cpp)
    target_compile_options(fuzz_torch_checkpoint PRIVATE -fsanitize=fuzzer,address -g)
    target_link_options(fuzz_torch_checkpoint PRIVATE -fsanitize=fuzzer,address)
    target_link_libraries(fuzz_torch_checkpoint PRIVATE gantry::gantry PkgConfig::LIBZIP)
    add_test(NAME fuzz_torch_checkpoint_corpus
      COMMAND fuzz_torch_checkpoint -runs=0 ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/torch_corpus)
    set_tests_properties(fuzz_torch_checkpoint_corpus PROPERTIES LABELS fuzz)
  endif()
endif()

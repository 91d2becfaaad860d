// Main of the GPU test executables (tests/cuda/test_*.cpp, CTest label `cuda`). Without a
// usable GPU it prints why and exits 77, which CTest reports as skipped (SKIP_RETURN_CODE):
// GPU tests never pass silently on a machine that cannot run them.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include "gantry/core/device.h"

int main(int argc, char** argv) {
  if (!gantry::cuda_available()) {
    std::printf("SKIPPED: no CUDA GPU available (%s)\n",
                gantry::cuda_compiled()
                    ? "the CUDA backend is built, but cudaGetDeviceCount found no usable GPU or driver"
                    : "gantry was built without the CUDA backend (-DGANTRY_CUDA=OFF)");
    std::fflush(stdout);
    return 77;
  }
  // Catch returns the number of failed assertions (at most 255): 77 of them must not read as
  // the skip code.
  const int failed = Catch::Session().run(argc, argv);
  return failed == 77 ? 78 : failed;
}

// The cuDNN / cuBLAS entry points in the emulator build (GANTRY_CUDA_EMU): the emulator runs
// gantry's own kernels only, so each library path says so instead of running.
// backend_select.cpp makes the hand-written kernels the default there (library_available()).
#include <string>

#include "gantry/core/cuda_runtime.h"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda::library {
namespace {
[[noreturn]] void unavailable(const char* op) {
  throw CudaError(std::string("cuda::library::") + op +
                  ": the cuDNN/cuBLAS path does not exist in the CUDA emulator build "
                  "(GANTRY_CUDA_EMU); select the hand-written kernels (Impl::Handwritten)");
}
}  // namespace

void gemm(bool, bool, int64_t, int64_t, int64_t, float, const float*, const float*, float,
          float*) {
  unavailable("gemm");
}
void conv2d_forward(const float*, const float*, const float*, float*, const Conv2dShape&) {
  unavailable("conv2d_forward");
}
void conv2d_backward_input(const float*, const float*, float*, const Conv2dShape&) {
  unavailable("conv2d_backward_input");
}
void conv2d_backward_weight(const float*, const float*, float*, float*, const Conv2dShape&) {
  unavailable("conv2d_backward_weight");
}
void batch_norm_forward_train(const float*, const float*, const float*, float*, float*, float*,
                              float*, int64_t, int64_t, int64_t, float) {
  unavailable("batch_norm_forward_train");
}
void batch_norm_forward_eval(const float*, const float*, const float*, const float*,
                             const float*, float*, int64_t, int64_t, int64_t, float) {
  unavailable("batch_norm_forward_eval");
}
void batch_norm_backward_train(const float*, const float*, const float*, const float*,
                               const float*, float*, float*, float*, int64_t, int64_t, int64_t) {
  unavailable("batch_norm_backward_train");
}

}  // namespace gantry::cuda::library

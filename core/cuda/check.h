#pragma once
// Status checks for CUDA, cuDNN, cuBLAS and cuRAND calls (internal to the CUDA backend; this
// header includes the vendor headers, so it is never included from a public header).
//
//   GANTRY_CUDA_CHECK(cudaMemcpyAsync(...));   // throws gantry::CudaError on failure:
//   "CUDA error cudaErrorInvalidValue (invalid argument) in cudaMemcpyAsync(...) at file.cu:42"
//   GANTRY_CUDA_LAUNCH_CHECK();                // after a <<<...>>> launch
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <curand.h>

#include "gantry/core/cuda_runtime.h"

namespace gantry::cuda::detail {

[[noreturn]] void throw_error(const char* library, const char* status_name, const char* detail,
                              const char* call, const char* file, int line);
const char* cublas_status_name(cublasStatus_t s);
const char* curand_status_name(curandStatus_t s);

inline void check(cudaError_t s, const char* call, const char* file, int line) {
  if (s != cudaSuccess)
    throw_error("CUDA", cudaGetErrorName(s), cudaGetErrorString(s), call, file, line);
}
inline void check(cudnnStatus_t s, const char* call, const char* file, int line) {
  if (s != CUDNN_STATUS_SUCCESS)
    throw_error("cuDNN", cudnnGetErrorString(s), nullptr, call, file, line);
}
inline void check(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw_error("cuBLAS", cublas_status_name(s), nullptr, call, file, line);
}
inline void check(curandStatus_t s, const char* call, const char* file, int line) {
  if (s != CURAND_STATUS_SUCCESS)
    throw_error("cuRAND", curand_status_name(s), nullptr, call, file, line);
}

}  // namespace gantry::cuda::detail

#define GANTRY_CUDA_CHECK(call) ::gantry::cuda::detail::check((call), #call, __FILE__, __LINE__)
#define GANTRY_CUDNN_CHECK(call) ::gantry::cuda::detail::check((call), #call, __FILE__, __LINE__)
#define GANTRY_CUBLAS_CHECK(call) ::gantry::cuda::detail::check((call), #call, __FILE__, __LINE__)
#define GANTRY_CURAND_CHECK(call) ::gantry::cuda::detail::check((call), #call, __FILE__, __LINE__)
// A kernel launch reports configuration errors (bad grid, too much shared memory) only
// through cudaGetLastError; errors inside the kernel surface at the next synchronizing call.
#define GANTRY_CUDA_LAUNCH_CHECK() GANTRY_CUDA_CHECK(cudaGetLastError())

#pragma once
// The CUDA device layer's contract, used by core/ when the build has GANTRY_WITH_CUDA.
// Implemented in core/cuda/ (compiled only with the CUDA backend). Everything runs on one
// compute stream per device; every CUDA/cuDNN/cuBLAS/cuRAND status is checked and a failure
// throws CudaError naming the call, the status and file:line.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace gantry {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace cuda {

// Number of usable devices; 0 (never throws) without a driver or GPU.
int device_count();
void set_device(int index);
// Stream-ordered allocation from the device's memory pool (cudaMallocAsync); out of memory
// throws CudaError with the requested and free byte counts.
void* allocate(std::size_t nbytes, int device);
void deallocate(void* ptr, int device);
// Pinned (page-locked) host memory for fast, overlappable transfers.
void* allocate_pinned(std::size_t nbytes);
void deallocate_pinned(void* ptr);
// Copies on the compute stream. d2h waits for the stream before returning.
void copy_host_to_device(void* dst, const void* src, std::size_t nbytes);
void copy_device_to_host(void* dst, const void* src, std::size_t nbytes);
void copy_device_to_device(void* dst, const void* src, std::size_t nbytes);
void synchronize();
// Peak bytes held by the pool since the last reset (benchmarks' "peak memory").
std::size_t pool_high_water_mark();
void reset_pool_high_water_mark();
std::string device_name(int index);

}  // namespace cuda
}  // namespace gantry

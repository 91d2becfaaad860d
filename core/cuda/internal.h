#pragma once
// Internal pieces of the CUDA backend shared by core/cuda and kernels/{cuda,cudnn,cublas}:
// the compute stream of the current device, library handles bound to it, and scratch
// buffers from the memory pool. Includes vendor headers: never include from a public header.
#include <cstddef>

#include "gantry/core/cuda/check.h"

namespace gantry::cuda {

// The current device (cudaGetDevice) and its compute stream. Every kernel, copy and library
// call of the backend runs on this stream, so work is ordered without extra synchronization.
int current_device();
cudaStream_t stream();
// The memory pool allocate() and Scratch draw from on the current device (its default pool).
cudaMemPool_t memory_pool();
// The current device's streaming multiprocessors (SMs), read once: kernels that choose their
// grid from the machine (how many blocks share one reduction) ask it.
int multiprocessor_count();
// cuDNN / cuBLAS handles of the current device, created on first use and bound to stream().
cudnnHandle_t cudnn_handle();
cublasHandle_t cublas_handle();

// Switches the current device for a scope (no-op when it is already current).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// A temporary device buffer from the pool of the current device, freed (stream-ordered) at
// scope exit. Freed memory is reused by the pool, so per-call scratch costs no cudaMalloc.
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(std::size_t nbytes);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Scratch(Scratch&& o) noexcept : ptr_(o.ptr_), nbytes_(o.nbytes_), device_(o.device_) {
    o.ptr_ = nullptr;
    o.nbytes_ = 0;
  }
  Scratch& operator=(Scratch&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = o.ptr_;
      nbytes_ = o.nbytes_;
      device_ = o.device_;
      o.ptr_ = nullptr;
      o.nbytes_ = 0;
    }
    return *this;
  }
  void* get() const { return ptr_; }
  float* f() const { return static_cast<float*>(ptr_); }
  std::size_t size() const { return nbytes_; }

 private:
  void release() noexcept;
  void* ptr_ = nullptr;
  std::size_t nbytes_ = 0;
  int device_ = 0;
};

}  // namespace gantry::cuda

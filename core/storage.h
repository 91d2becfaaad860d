#pragma once
// Storage: one owned block of memory on one device. Tensors share a Storage through
// std::shared_ptr, so reshape/view/detach are free and memory goes when the last user goes.
#include <cstddef>
#include <memory>

#include "gantry/core/device.h"

namespace gantry {

class Storage {
 public:
  // Allocates nbytes on dev (64-byte aligned on the CPU). Throws std::bad_alloc or
  // gantry::CudaError (out of memory: says how much was asked and how much is free).
  Storage(std::size_t nbytes, Device dev);
  // Page-locked host memory (CPU device) for fast, asynchronous copies to a GPU. In a build
  // without CUDA, or without a usable GPU, this is ordinary host memory.
  static std::shared_ptr<Storage> pinned(std::size_t nbytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  bool is_pinned() const { return pinned_; }

 private:
  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  Device device_;
  bool pinned_ = false;
};

}  // namespace gantry

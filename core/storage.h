#pragma once
// Storage: one owned block of memory on one device. Tensors share a Storage through
// std::shared_ptr, so reshape/view/detach are free and memory goes when the last user goes.
#include <cstddef>
#include <cstdint>
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
  // Counts in-place writes (Tensor::fill_/copy_/add_/..., optimizer steps), shared by every
  // view of this storage. Autograd compares it at backward time with the value it had when an
  // op saved the tensor, so a saved tensor changed in between is an error, not a wrong gradient.
  uint64_t version() const { return version_; }
  void bump_version() { ++version_; }

 private:
  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  Device device_;
  bool pinned_ = false;
  uint64_t version_ = 0;
};

}  // namespace gantry

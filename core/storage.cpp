#include "gantry/core/storage.h"

#include "gantry/core/cpu_allocator.h"

#include <cstdlib>
#include <new>
#include <stdexcept>

#ifdef GANTRY_WITH_CUDA
#include "gantry/core/cuda_runtime.h"
#endif

namespace gantry {

Storage::Storage(std::size_t nbytes, Device dev) : nbytes_(nbytes), device_(dev) {
  if (dev.is_cpu()) {
    data_ = cpu_allocator::allocate(nbytes);  // 64-byte aligned; large blocks cached
    return;
  }
#ifdef GANTRY_WITH_CUDA
  data_ = cuda::allocate(nbytes, dev.index);
#else
  throw std::runtime_error("cannot allocate on " + dev.str() +
                           ": gantry was built without CUDA (configure with -DGANTRY_CUDA=ON)");
#endif
}

std::shared_ptr<Storage> Storage::pinned(std::size_t nbytes) {
#ifdef GANTRY_WITH_CUDA
  if (cuda::device_count() > 0) {
    auto s = std::shared_ptr<Storage>(new Storage(0, Device::cpu()));
    cpu_allocator::deallocate(s->data_, 0);  // the placeholder block of Storage(0, cpu)
    s->data_ = cuda::allocate_pinned(nbytes);
    s->nbytes_ = nbytes;
    s->pinned_ = true;
    return s;
  }
#endif
  return std::make_shared<Storage>(nbytes, Device::cpu());
}

Storage::~Storage() {
  if (!data_) return;
  if (pinned_) {
#ifdef GANTRY_WITH_CUDA
    cuda::deallocate_pinned(data_);
#endif
    return;
  }
  if (device_.is_cpu()) {
    cpu_allocator::deallocate(data_, nbytes_);
    return;
  }
#ifdef GANTRY_WITH_CUDA
  cuda::deallocate(data_, device_.index);
#endif
}

}  // namespace gantry

#include "gantry/core/storage.h"

#include <cstdlib>
#include <new>
#include <stdexcept>

#ifdef GANTRY_WITH_CUDA
#include "gantry/core/cuda_runtime.h"
#endif

namespace gantry {

namespace {
constexpr std::size_t kAlign = 64;  // a cache line; also what AVX-512 loads like
}

Storage::Storage(std::size_t nbytes, Device dev) : nbytes_(nbytes), device_(dev) {
  if (dev.is_cpu()) {
    // aligned_alloc needs a size that is a multiple of the alignment (and non-zero).
    const std::size_t rounded = ((nbytes + kAlign - 1) / kAlign) * kAlign;
    data_ = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
    if (!data_) throw std::bad_alloc();
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
    std::free(s->data_);
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
    std::free(data_);
    return;
  }
#ifdef GANTRY_WITH_CUDA
  cuda::deallocate(data_, device_.index);
#endif
}

}  // namespace gantry

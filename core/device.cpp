#include "gantry/core/device.h"

#include <stdexcept>

#ifdef GANTRY_WITH_CUDA
#include "gantry/core/cuda_runtime.h"
#endif

namespace gantry {

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string idx = text.substr(5);
    if (!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos)
      return cuda(std::stoi(idx));
  }
  throw std::invalid_argument("unknown device '" + text + "': expected cpu, cuda or cuda:N");
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

bool cuda_compiled() {
#ifdef GANTRY_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef GANTRY_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

bool cuda_available() { return cuda_device_count() > 0; }

void use_device(Device dev) {
  if (dev.is_cpu()) return;
#ifdef GANTRY_WITH_CUDA
  cuda::set_device(dev.index);
#else
  throw std::runtime_error("device " + dev.str() +
                           ": gantry was built without CUDA (configure with -DGANTRY_CUDA=ON)");
#endif
}

}  // namespace gantry

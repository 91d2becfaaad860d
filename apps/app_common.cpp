#include "app_common.h"

#include <iostream>
#include <stdexcept>

namespace gantry::apps {

Device choose_device(const std::string& choice, const std::string& flag) {
  if (choice == "auto") {
    if (cuda_available()) return Device::cuda(0);
    if (cuda_compiled())
      std::cerr << "gantry: this build has CUDA but no usable GPU or driver was found; running on the CPU\n";
    return Device::cpu();
  }
  Device dev;
  try {
    dev = Device::parse(choice);
  } catch (const std::invalid_argument&) {
    throw std::invalid_argument(flag + " " + choice + ": expected auto, cpu, cuda or cuda:N");
  }
  if (dev.is_cuda()) {
    if (!cuda_compiled())
      throw std::invalid_argument(flag + " " + choice + ": this gantry was built without CUDA "
                                  "(rebuild with -DGANTRY_CUDA=ON on a machine with nvcc), or use --device cpu");
    if (dev.index >= cuda_device_count())
      throw std::invalid_argument(flag + " " + choice + ": no such GPU (" +
                                  std::to_string(cuda_device_count()) + " usable); use --device cpu or auto");
    use_device(dev);  // ops run on the current GPU's stream: make it the one asked for
  }
  return dev;
}

std::string truncation_error(float truncation) {
  if (truncation == 0 || (truncation >= 0.05f && truncation <= 1000.f)) return {};
  return "--truncation " + std::to_string(truncation) + ": give 0 (off) or a threshold from 0.05 to 1000";
}

void note_truncation_with_batch_stats(float truncation, const std::string& bn) {
  if (truncation > 0 && bn == "batch")
    std::cerr << "note: --truncation with --bn batch: G's batch norm rescales the truncated latents by their own "
                 "statistics, which undoes most of the truncation; --bn eval keeps it (docs/quality.md)\n";
}

int run_app(const char* app, int (*body)(int, char**), int argc, char** argv) {
  try {
    return body(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << app << ": error: " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace gantry::apps

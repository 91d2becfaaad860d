#pragma once
// Device: where a tensor's storage lives (the CPU, or CUDA GPU n).
#include <string>

namespace gantry {

enum class DeviceType { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  // Parses "cpu", "cuda" or "cuda:N"; anything else throws std::invalid_argument.
  static Device parse(const std::string& text);

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  std::string str() const;  // "cpu" or "cuda:0"

  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

// True when this build contains the CUDA backend (GANTRY_CUDA was on at configure time).
bool cuda_compiled();
// True when the CUDA backend is compiled in and a usable GPU and driver are present.
// Never throws: a missing driver or GPU answers false.
bool cuda_available();
// Number of usable GPUs (0 without CUDA, driver or GPU).
int cuda_device_count();
// Makes dev the calling thread's current GPU: GPU ops run on the stream of the current GPU, so a
// program that works on cuda:N calls this once before it makes tensors there (the apps do, from
// --device). A CPU device leaves the current GPU alone. Throws for a GPU index that is not there.
void use_device(Device dev);

}  // namespace gantry

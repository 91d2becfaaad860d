#pragma once
// Helpers of the GPU parity tests: device buffers that start poisoned (NaN), host <-> device
// copies, random inputs and the relative error ||out - ref|| / ||ref||.
#ifdef GANTRY_WITH_CUDA
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gantry/core/cuda_runtime.h"
#include "gantry/core/random.h"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::test {

// A device buffer of n floats, filled with NaN on creation (and by poison()): an output
// element a kernel forgets to write stays NaN and fails the comparison.
struct DevBuf {
  float* p = nullptr;
  int64_t n = 0;
  explicit DevBuf(int64_t count) : n(count) {
    p = static_cast<float*>(cuda::allocate(static_cast<size_t>(n > 0 ? n : 1) * sizeof(float), 0));
    poison();
  }
  explicit DevBuf(const std::vector<float>& v) : DevBuf(static_cast<int64_t>(v.size())) { upload(v); }
  ~DevBuf() { cuda::deallocate(p, 0); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void poison() { cuda::fill(p, n, std::numeric_limits<float>::quiet_NaN()); }
  void upload(const std::vector<float>& v) {
    cuda::copy_host_to_device(p, v.data(), v.size() * sizeof(float));
  }
  std::vector<float> download() const {
    std::vector<float> v(static_cast<size_t>(n));
    cuda::copy_device_to_host(v.data(), p, v.size() * sizeof(float));  // synchronizes
    return v;
  }
};

inline std::vector<float> randn(int64_t n, uint64_t seed, float std = 1.f, float mean = 0.f) {
  std::vector<float> v(static_cast<size_t>(n));
  Generator g(seed);
  g.fill_normal(v.data(), n, mean, std);
  return v;
}

inline std::vector<float> rand_uniform(int64_t n, uint64_t seed, float lo, float hi) {
  std::vector<float> v(static_cast<size_t>(n));
  Generator g(seed);
  g.fill_uniform(v.data(), n, lo, hi);
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// ||out - ref|| / ||ref||; infinity when out holds a NaN/inf or the sizes differ.
template <class R>
double rel_error(const std::vector<float>& out, const std::vector<R>& ref) {
  if (out.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return std::numeric_limits<double>::infinity();
    const double d = static_cast<double>(out[i]) - static_cast<double>(ref[i]);
    num += d * d;
    den += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
  }
  // A reference at double rounding level (an exact answer of 0, such as batch norm's output for
  // one value per channel) has no meaningful relative error: compare absolutely.
  if (den < 1e-20) return std::sqrt(num);
  return std::sqrt(num / den);
}

inline std::string shape_name(const cpu::Conv2dShape& s) {
  return "N" + std::to_string(s.N) + " C" + std::to_string(s.C) + " " + std::to_string(s.H) +
         "x" + std::to_string(s.W) + " O" + std::to_string(s.O) + " k" + std::to_string(s.kh) +
         "x" + std::to_string(s.kw) + " s" + std::to_string(s.stride) + " p" +
         std::to_string(s.padding);
}

}  // namespace gantry::test
#endif

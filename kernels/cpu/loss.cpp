// Binary cross-entropy, mean reduction, with PyTorch's numerics:
//   BCE(p, t) = -(t log p + (1 - t) log(1 - p)), each log clamped at -100 so p = 0 or 1 is
//   finite; its gradient divides by max(p (1 - p), 1e-12).
//   BCE-with-logits(x, t) = max(x, 0) - x t + log(1 + exp(-|x|)), stable for any x; its
//   gradient is sigmoid(x) - t.
#include <algorithm>
#include <cmath>

#include "gantry/kernels/cpu/cpu_kernels.h"

namespace gantry::cpu {

template <class T>
T bce_forward(const T* p, const T* t, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double lp = std::max(std::log(static_cast<double>(p[i])), -100.0);
    const double l1p = std::max(std::log1p(-static_cast<double>(p[i])), -100.0);
    acc -= t[i] * lp + (1.0 - t[i]) * l1p;
  }
  return static_cast<T>(acc / static_cast<double>(n));
}

template <class T>
void bce_backward(const T* p, const T* t, T g, T* dp, int64_t n) {
  const T scale = g / static_cast<T>(n);
  for (int64_t i = 0; i < n; ++i)
    dp[i] = scale * (p[i] - t[i]) / std::max(p[i] * (T(1) - p[i]), T(1e-12));
}

template <class T>
T bce_logits_forward(const T* x, const T* t, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    acc += std::max(v, 0.0) - v * t[i] + std::log1p(std::exp(-std::abs(v)));
  }
  return static_cast<T>(acc / static_cast<double>(n));
}

template <class T>
void bce_logits_backward(const T* x, const T* t, T g, T* dx, int64_t n) {
  const T scale = g / static_cast<T>(n);
  for (int64_t i = 0; i < n; ++i) {
    const T s = x[i] >= 0 ? T(1) / (T(1) + std::exp(-x[i])) : std::exp(x[i]) / (T(1) + std::exp(x[i]));
    dx[i] = scale * (s - t[i]);
  }
}

#define GANTRY_INSTANTIATE(T)                                        \
  template T bce_forward<T>(const T*, const T*, int64_t);            \
  template void bce_backward<T>(const T*, const T*, T, T*, int64_t); \
  template T bce_logits_forward<T>(const T*, const T*, int64_t);     \
  template void bce_logits_backward<T>(const T*, const T*, T, T*, int64_t);
GANTRY_INSTANTIATE(float)
GANTRY_INSTANTIATE(double)
#undef GANTRY_INSTANTIATE

}  // namespace gantry::cpu

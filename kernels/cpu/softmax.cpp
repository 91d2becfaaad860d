// Row-wise log-softmax and the mean cross-entropy of logits against class labels, in the
// max-shifted form so exp never overflows:
//   log_softmax(x)_j = x_j - m - log(sum_k exp(x_k - m)),  m = max_k x_k
//   CE(x, t) = logsumexp(x) - x_t,  dCE/dx = softmax(x) - onehot(t)
#include <cmath>

#include "gantry/kernels/cpu/cpu_kernels.h"

namespace gantry::cpu {

namespace {
template <class T>
T row_logsumexp(const T* x, int64_t C) {
  T m = x[0];
  for (int64_t j = 1; j < C; ++j) m = x[j] > m ? x[j] : m;
  T s = 0;
  for (int64_t j = 0; j < C; ++j) s += std::exp(x[j] - m);
  return m + std::log(s);
}
}  // namespace

template <class T>
void log_softmax_forward(const T* x, T* y, int64_t M, int64_t C) {
  for (int64_t i = 0; i < M; ++i) {
    const T lse = row_logsumexp(x + i * C, C);
    for (int64_t j = 0; j < C; ++j) y[i * C + j] = x[i * C + j] - lse;
  }
}

template <class T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t M, int64_t C) {
  for (int64_t i = 0; i < M; ++i) {
    T s = 0;
    for (int64_t j = 0; j < C; ++j) s += dy[i * C + j];
    for (int64_t j = 0; j < C; ++j) dx[i * C + j] = dy[i * C + j] - std::exp(y[i * C + j]) * s;
  }
}

template <class T>
T cross_entropy_forward(const T* logits, const T* labels, int64_t M, int64_t C) {
  double acc = 0;
  for (int64_t i = 0; i < M; ++i) {
    const int64_t t = static_cast<int64_t>(labels[i]);
    acc += static_cast<double>(row_logsumexp(logits + i * C, C) - logits[i * C + t]);
  }
  return static_cast<T>(acc / static_cast<double>(M));
}

template <class T>
void cross_entropy_backward(const T* logits, const T* labels, T g, T* dx, int64_t M, int64_t C) {
  const T scale = g / static_cast<T>(M);
  for (int64_t i = 0; i < M; ++i) {
    const T lse = row_logsumexp(logits + i * C, C);
    const int64_t t = static_cast<int64_t>(labels[i]);
    for (int64_t j = 0; j < C; ++j)
      dx[i * C + j] = scale * (std::exp(logits[i * C + j] - lse) - (j == t ? T(1) : T(0)));
  }
}

#define GANTRY_INSTANTIATE(T)                                                           \
  template void log_softmax_forward<T>(const T*, T*, int64_t, int64_t);                \
  template void log_softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);     \
  template T cross_entropy_forward<T>(const T*, const T*, int64_t, int64_t);           \
  template void cross_entropy_backward<T>(const T*, const T*, T, T*, int64_t, int64_t);
GANTRY_INSTANTIATE(float)
GANTRY_INSTANTIATE(double)
#undef GANTRY_INSTANTIATE

}  // namespace gantry::cpu

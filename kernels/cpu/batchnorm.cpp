// Batch normalization over [N, C, S]: per channel c, statistics over the N*S values.
// Forward:  xhat = (x - mean) * invstd,  y = gamma * xhat + beta.
// Backward (training, statistics depend on x):
//   dx = gamma * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat)),  M = N*S.
// Channels are independent, so they are split over threads.
#include <cmath>

#include "gantry/kernels/cpu/cpu_kernels.h"

namespace gantry::cpu {

template <class T>
void batch_norm_forward_train(const T* x, const T* gamma, const T* beta, T* y, T* save_mean,
                              T* save_invstd, T* var_unbiased, int64_t N, int64_t C, int64_t S,
                              T eps) {
  const int64_t M = N * S;
#pragma omp parallel for if (N * C * S > (1 << 15))
  for (int64_t c = 0; c < C; ++c) {
    // Two passes (mean, then centred squares) in double: exact enough for the unbiased
    // running variance and immune to the cancellation of E[x^2] - E[x]^2.
    double sum = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* xs = x + (n * C + c) * S;
      for (int64_t i = 0; i < S; ++i) sum += xs[i];
    }
    const double mean = sum / static_cast<double>(M);
    double sq = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* xs = x + (n * C + c) * S;
      for (int64_t i = 0; i < S; ++i) {
        const double d = xs[i] - mean;
        sq += d * d;
      }
    }
    const double var = sq / static_cast<double>(M);
    const double invstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
    save_mean[c] = static_cast<T>(mean);
    save_invstd[c] = static_cast<T>(invstd);
    if (var_unbiased) var_unbiased[c] = static_cast<T>(M > 1 ? sq / static_cast<double>(M - 1) : var);
    const T g = gamma ? gamma[c] : T(1), b = beta ? beta[c] : T(0);
    const T scale = static_cast<T>(invstd) * g;
    const T shift = b - static_cast<T>(mean) * scale;
    for (int64_t n = 0; n < N; ++n) {
      const T* xs = x + (n * C + c) * S;
      T* ys = y + (n * C + c) * S;
      for (int64_t i = 0; i < S; ++i) ys[i] = xs[i] * scale + shift;
    }
  }
}

template <class T>
void batch_norm_forward_eval(const T* x, const T* gamma, const T* beta, const T* mean,
                             const T* var, T* y, int64_t N, int64_t C, int64_t S, T eps) {
#pragma omp parallel for collapse(2) if (N * C * S > (1 << 15))
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const T scale = (gamma ? gamma[c] : T(1)) / std::sqrt(var[c] + eps);
      const T shift = (beta ? beta[c] : T(0)) - mean[c] * scale;
      const T* xs = x + (n * C + c) * S;
      T* ys = y + (n * C + c) * S;
      for (int64_t i = 0; i < S; ++i) ys[i] = xs[i] * scale + shift;
    }
}

template <class T>
void batch_norm_backward_train(const T* x, const T* dy, const T* gamma, const T* save_mean,
                               const T* save_invstd, T* dx, T* dgamma, T* dbeta, int64_t N,
                               int64_t C, int64_t S) {
  const double M = static_cast<double>(N * S);
#pragma omp parallel for if (N * C * S > (1 << 15))
  for (int64_t c = 0; c < C; ++c) {
    const double mean = save_mean[c], invstd = save_invstd[c];
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* xs = x + (n * C + c) * S;
      const T* gs = dy + (n * C + c) * S;
      for (int64_t i = 0; i < S; ++i) {
        sum_dy += gs[i];
        sum_dy_xhat += gs[i] * (xs[i] - mean) * invstd;
      }
    }
    if (dgamma) dgamma[c] = static_cast<T>(sum_dy_xhat);
    if (dbeta) dbeta[c] = static_cast<T>(sum_dy);
    const double g = gamma ? gamma[c] : 1.0;
    // dx = k * (dy - a - xhat * b) with a = mean(dy), b = mean(dy * xhat), k = gamma * invstd
    const T k = static_cast<T>(g * invstd);
    const T a = static_cast<T>(sum_dy / M), b = static_cast<T>(sum_dy_xhat / M);
    const T m = static_cast<T>(mean), is = static_cast<T>(invstd);
    for (int64_t n = 0; n < N; ++n) {
      const T* xs = x + (n * C + c) * S;
      const T* gs = dy + (n * C + c) * S;
      T* ds = dx + (n * C + c) * S;
      for (int64_t i = 0; i < S; ++i) ds[i] = k * (gs[i] - a - (xs[i] - m) * is * b);
    }
  }
}

#define GANTRY_INSTANTIATE(T)                                                                  \
  template void batch_norm_forward_train<T>(const T*, const T*, const T*, T*, T*, T*, T*,      \
                                            int64_t, int64_t, int64_t, T);                     \
  template void batch_norm_forward_eval<T>(const T*, const T*, const T*, const T*, const T*,   \
                                           T*, int64_t, int64_t, int64_t, T);                  \
  template void batch_norm_backward_train<T>(const T*, const T*, const T*, const T*, const T*, \
                                             T*, T*, T*, int64_t, int64_t, int64_t);
GANTRY_INSTANTIATE(float)
GANTRY_INSTANTIATE(double)
#undef GANTRY_INSTANTIATE

}  // namespace gantry::cpu

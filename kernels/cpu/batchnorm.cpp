// Batch normalization over [N, C, S]: per channel c, statistics over the N*S values.
// Forward:  xhat = (x - mean) * invstd,  y = gamma * xhat + beta.
// Backward (training, statistics depend on x):
//   dx = gamma * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat)),  M = N*S.
// Channels are independent, so they are split over threads.
#include <cmath>

#include "gantry/kernels/cpu/cpu_kernels.h"

namespace gantry::cpu {

namespace {
// Sums in double over 8 independent lanes: a single double accumulator is a serial chain the
// compiler may not reorder (so it stays scalar, ~1 element per add latency); 8 lanes let it
// vectorize the float->double conversions and adds. The lanes only reorder the double sums.
template <class T, class F>
double lane_sum(int64_t n, F f) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += f(i + j);
  double tail = 0;
  for (; i < n; ++i) tail += f(i);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}
}  // namespace

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
      sum += lane_sum<T>(S, [xs](int64_t i) { return static_cast<double>(xs[i]); });
    }
    const double mean = sum / static_cast<double>(M);
    double sq = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* xs = x + (n * C + c) * S;
      sq += lane_sum<T>(S, [xs, mean](int64_t i) {
        const double d = static_cast<double>(xs[i]) - mean;
        return d * d;
      });
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
    double sum_dy = 0, sum_dy_xc = 0;  // sum(dy), sum(dy * (x - mean))
    for (int64_t n = 0; n < N; ++n) {
      const T* xs = x + (n * C + c) * S;
      const T* gs = dy + (n * C + c) * S;
      // Both sums in one pass, 8 lanes each (see lane_sum).
      double a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t i = 0;
      for (; i + 8 <= S; i += 8)
        for (int j = 0; j < 8; ++j) {
          const double g = gs[i + j];
          a[j] += g;
          b[j] += g * (static_cast<double>(xs[i + j]) - mean);
        }
      for (; i < S; ++i) {
        const double g = gs[i];
        a[0] += g;
        b[0] += g * (static_cast<double>(xs[i]) - mean);
      }
      sum_dy += ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
      sum_dy_xc += ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
    }
    const double sum_dy_xhat = sum_dy_xc * invstd;
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

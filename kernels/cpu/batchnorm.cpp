// Batch normalization over [N, C, S]: per channel c, statistics over the N*S values.
// Forward:  xhat = (x - mean) * invstd,  y = gamma * xhat + beta.
// Backward (training, statistics depend on x):
//   dx = gamma * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat)),  M = N*S.
#include <algorithm>
#include <cmath>
#include <vector>

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

// Channels are processed in blocks sized so that a block's data (N*S values per channel) stays
// in a core's L2 cache across the passes over it, and each block is walked n-major: for every
// image the rows x[n, c0:c1, :] are one contiguous run. One channel at a time (the block of
// the large maps) re-reads its N rows from cache; on the deep layers (S = 16-64) that order
// read rows of 16-64 floats C*S apart and ran at 1-2 GB/s, while a block of many channels
// reads 4-8 KiB runs. The sums are taken in the same order either way (per channel: row by
// row, n ascending).
template <class T>
int64_t channels_per_block(int64_t N, int64_t C, int64_t S) {
  constexpr int64_t kBlockBytes = 512 << 10;
  const int64_t per_channel = std::max<int64_t>(1, N * S * static_cast<int64_t>(sizeof(T)));
  return std::max<int64_t>(1, std::min<int64_t>(C, kBlockBytes / per_channel));
}

template <class T>
void batch_norm_forward_train(const T* x, const T* gamma, const T* beta, T* y, T* save_mean,
                              T* save_invstd, T* var_unbiased, int64_t N, int64_t C, int64_t S,
                              T eps) {
  const int64_t M = N * S, cb = channels_per_block<T>(N, C, S), nb = (C + cb - 1) / cb;
#pragma omp parallel for schedule(static) if (nb > 1 && N * C * S > (1 << 15))
  for (int64_t blk = 0; blk < nb; ++blk) {
    const int64_t c0 = blk * cb, c1 = std::min(C, c0 + cb), cn = c1 - c0;
    // Two passes (mean, then centred squares) in double: exact enough for the unbiased
    // running variance and immune to the cancellation of E[x^2] - E[x]^2.
    std::vector<double> sum(cn, 0.0), sq(cn, 0.0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) {
        const T* xs = x + (n * C + c) * S;
        sum[c - c0] += lane_sum<T>(S, [xs](int64_t i) { return static_cast<double>(xs[i]); });
      }
    for (int64_t j = 0; j < cn; ++j) sum[j] /= static_cast<double>(M);  // now the means
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) {
        const T* xs = x + (n * C + c) * S;
        const double mean = sum[c - c0];
        sq[c - c0] += lane_sum<T>(S, [xs, mean](int64_t i) {
          const double d = static_cast<double>(xs[i]) - mean;
          return d * d;
        });
      }
    std::vector<T> scale(cn), shift(cn);
    for (int64_t c = c0; c < c1; ++c) {
      const double mean = sum[c - c0], var = sq[c - c0] / static_cast<double>(M);
      const double invstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
      save_mean[c] = static_cast<T>(mean);
      save_invstd[c] = static_cast<T>(invstd);
      if (var_unbiased)
        var_unbiased[c] = static_cast<T>(M > 1 ? sq[c - c0] / static_cast<double>(M - 1) : var);
      const T g = gamma ? gamma[c] : T(1), b = beta ? beta[c] : T(0);
      scale[c - c0] = static_cast<T>(invstd) * g;
      shift[c - c0] = b - static_cast<T>(mean) * scale[c - c0];
    }
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) {
        const T* xs = x + (n * C + c) * S;
        T* ys = y + (n * C + c) * S;
        const T sc = scale[c - c0], sh = shift[c - c0];
        for (int64_t i = 0; i < S; ++i) ys[i] = xs[i] * sc + sh;
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
  const int64_t cb = channels_per_block<T>(N, C, S), nb = (C + cb - 1) / cb;
#pragma omp parallel for schedule(static) if (nb > 1 && N * C * S > (1 << 15))
  for (int64_t blk = 0; blk < nb; ++blk) {
    const int64_t c0 = blk * cb, c1 = std::min(C, c0 + cb), cn = c1 - c0;
    std::vector<double> sum_dy(cn, 0.0), sum_dy_xc(cn, 0.0);  // sum(dy), sum(dy * (x - mean))
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) {
        const double mean = save_mean[c];
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
        sum_dy[c - c0] += ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        sum_dy_xc[c - c0] += ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
      }
    // dx = k * (dy - a - (x - mean) * invstd * b) with a = mean(dy), b = mean(dy * xhat),
    // k = gamma * invstd; per channel as float factors.
    std::vector<T> k(cn), av(cn), bv(cn);
    for (int64_t c = c0; c < c1; ++c) {
      const double invstd = save_invstd[c];
      const double sum_dy_xhat = sum_dy_xc[c - c0] * invstd;
      if (dgamma) dgamma[c] = static_cast<T>(sum_dy_xhat);
      if (dbeta) dbeta[c] = static_cast<T>(sum_dy[c - c0]);
      const double g = gamma ? gamma[c] : 1.0;
      k[c - c0] = static_cast<T>(g * invstd);
      av[c - c0] = static_cast<T>(sum_dy[c - c0] / M);
      bv[c - c0] = static_cast<T>(sum_dy_xhat / M);
    }
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) {
        const T* xs = x + (n * C + c) * S;
        const T* gs = dy + (n * C + c) * S;
        T* ds = dx + (n * C + c) * S;
        const T kc = k[c - c0], a = av[c - c0], b = bv[c - c0];
        const T m = save_mean[c], is = save_invstd[c];
        for (int64_t i = 0; i < S; ++i) ds[i] = kc * (gs[i] - a - (xs[i] - m) * is * b);
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

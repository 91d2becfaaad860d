// GPU versions of kernels/cpu/pool.cpp, softmax.cpp and gather.cpp: one thread per output
// element (pooling, gather), per input element (pooling backward: a gather over the windows
// that cover it, so no atomics), or per row (softmax and cross-entropy: the class count is
// small, 10 for the classifier).
#include <algorithm>

#include "gantry/kernels/cuda/common.cuh"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda {
using namespace kern;

namespace {

// The pooling and gather kernels decode indices in the index type I (common.cuh: int32_t when
// every index of the launch fits).
template <class I>
__global__ void avg_pool_fwd_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t NC,
                                    int64_t H_, int64_t W_, int k, int s, int64_t OH_, int64_t OW_) {
  const float inv = 1.f / static_cast<float>(k * k);
  const I H = static_cast<I>(H_), W = static_cast<I>(W_), OH = static_cast<I>(OH_),
          OW = static_cast<I>(OW_);
  GANTRY_GRID_LOOP(flat, NC * OH_ * OW_) {
    const I i = static_cast<I>(flat);
    const I row = i / OW, ox = i - row * OW;  // row = p*OH + oy
    const I p = row / OH, oy = row - p * OH;
    const float* xp = x + p * H * W;
    float acc = 0.f;
    for (int a = 0; a < k; ++a)
      for (int b = 0; b < k; ++b) acc += xp[(oy * s + a) * W + ox * s + b];
    y[i] = acc * inv;
  }
}

template <class I>
__global__ void avg_pool_bwd_kernel(const float* __restrict__ dy, float* __restrict__ dx,
                                    int64_t NC, int64_t H_, int64_t W_, int k_, int s_,
                                    int64_t OH_, int64_t OW_) {
  const float inv = 1.f / static_cast<float>(k_ * k_);
  const I H = static_cast<I>(H_), W = static_cast<I>(W_), OH = static_cast<I>(OH_),
          OW = static_cast<I>(OW_), k = static_cast<I>(k_), s = static_cast<I>(s_);
  GANTRY_GRID_LOOP(flat, NC * H_ * W_) {
    const I i = static_cast<I>(flat);
    const I row = i / W, x = i - row * W;  // row = p*H + y
    const I p = row / H, y = row - p * H;
    const I oy0 = y < k ? 0 : (y - k) / s + 1, oy1 = min(OH - 1, y / s);
    const I ox0 = x < k ? 0 : (x - k) / s + 1, ox1 = min(OW - 1, x / s);
    const float* dyp = dy + p * OH * OW;
    float acc = 0.f;
    for (I oy = oy0; oy <= oy1; ++oy)
      for (I ox = ox0; ox <= ox1; ++ox) acc += dyp[oy * OW + ox];
    dx[i] = acc * inv;
  }
}

__device__ float row_lse(const float* x, int64_t C) {
  float m = x[0];
  for (int64_t j = 1; j < C; ++j) m = fmaxf(m, x[j]);
  float s = 0.f;
  for (int64_t j = 0; j < C; ++j) s += expf(x[j] - m);
  return m + logf(s);
}

__global__ void log_softmax_fwd_kernel(const float* __restrict__ x, float* __restrict__ y,
                                       int64_t M, int64_t C) {
  GANTRY_GRID_LOOP(i, M) {
    const float lse = row_lse(x + i * C, C);
    for (int64_t j = 0; j < C; ++j) y[i * C + j] = x[i * C + j] - lse;
  }
}

__global__ void log_softmax_bwd_kernel(const float* __restrict__ y, const float* __restrict__ dy,
                                       float* __restrict__ dx, int64_t M, int64_t C) {
  GANTRY_GRID_LOOP(i, M) {
    float s = 0.f;
    for (int64_t j = 0; j < C; ++j) s += dy[i * C + j];
    for (int64_t j = 0; j < C; ++j) dx[i * C + j] = dy[i * C + j] - expf(y[i * C + j]) * s;
  }
}

__global__ void ce_rows_kernel(const float* __restrict__ x, const float* __restrict__ t,
                               float* __restrict__ rows, int64_t M, int64_t C) {
  GANTRY_GRID_LOOP(i, M) {
    const int64_t k = static_cast<int64_t>(t[i]);
    rows[i] = row_lse(x + i * C, C) - x[i * C + k];
  }
}

__global__ void ce_bwd_kernel(const float* __restrict__ x, const float* __restrict__ t,
                              const float* __restrict__ g, float* __restrict__ dx, int64_t M,
                              int64_t C) {
  const float scale = g[0] / static_cast<float>(M);
  GANTRY_GRID_LOOP(i, M) {
    const float lse = row_lse(x + i * C, C);
    const int64_t k = static_cast<int64_t>(t[i]);
    for (int64_t j = 0; j < C; ++j)
      dx[i * C + j] = scale * (expf(x[i * C + j] - lse) - (j == k ? 1.f : 0.f));
  }
}

// Output element i = (n*C + c)*P_out + p reads input element (n*C + c)*P_in + idx[n, p], or
// nothing (-1) where idx is negative.
template <class I>
__device__ __forceinline__ I gather_source(const float* idx, I i, int64_t C, int64_t P_in,
                                           int64_t P_out) {
  const I nc = i / static_cast<I>(P_out), p = i - nc * static_cast<I>(P_out);
  const I q = static_cast<I>(idx[nc / static_cast<I>(C) * static_cast<I>(P_out) + p]);
  return q >= 0 ? nc * static_cast<I>(P_in) + q : -1;
}

template <class I>
__global__ void gather_fwd_kernel(const float* __restrict__ x, const float* __restrict__ idx,
                                  float* __restrict__ y, int64_t N, int64_t C_, int64_t P_in_,
                                  int64_t P_out_) {
  GANTRY_GRID_LOOP(flat, N * C_ * P_out_) {
    const I i = static_cast<I>(flat), src = gather_source<I>(idx, i, C_, P_in_, P_out_);
    y[i] = src >= 0 ? x[src] : 0.f;
  }
}

template <class I>
__global__ void gather_bwd_kernel(const float* __restrict__ dy, const float* __restrict__ idx,
                                  float* __restrict__ dx, int64_t N, int64_t C_, int64_t P_in_,
                                  int64_t P_out_) {
  GANTRY_GRID_LOOP(flat, N * C_ * P_out_) {
    const I i = static_cast<I>(flat), src = gather_source<I>(idx, i, C_, P_in_, P_out_);
    if (src >= 0) atomicAdd(dx + src, dy[i]);
  }
}

}  // namespace

void avg_pool2d_forward(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int k, int s) {
  const int64_t OH = (H - k) / s + 1, OW = (W - k) / s + 1, n = NC * OH * OW;
  if (index_fits_int32(NC * H * W))  // x is the larger side
    avg_pool_fwd_kernel<int32_t><<<blocks_for(n), kThreads, 0, stream()>>>(x, y, NC, H, W, k, s, OH, OW);
  else
    avg_pool_fwd_kernel<int64_t><<<blocks_for(n), kThreads, 0, stream()>>>(x, y, NC, H, W, k, s, OH, OW);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void avg_pool2d_backward(const float* dy, float* dx, int64_t NC, int64_t H, int64_t W, int k,
                         int s) {
  const int64_t OH = (H - k) / s + 1, OW = (W - k) / s + 1, n = NC * H * W;
  if (index_fits_int32(n))
    avg_pool_bwd_kernel<int32_t><<<blocks_for(n), kThreads, 0, stream()>>>(dy, dx, NC, H, W, k, s, OH, OW);
  else
    avg_pool_bwd_kernel<int64_t><<<blocks_for(n), kThreads, 0, stream()>>>(dy, dx, NC, H, W, k, s, OH, OW);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void log_softmax_forward(const float* x, float* y, int64_t M, int64_t C) {
  log_softmax_fwd_kernel<<<blocks_for(M), kThreads, 0, stream()>>>(x, y, M, C);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void log_softmax_backward(const float* y, const float* dy, float* dx, int64_t M, int64_t C) {
  log_softmax_bwd_kernel<<<blocks_for(M), kThreads, 0, stream()>>>(y, dy, dx, M, C);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void cross_entropy_forward(const float* logits, const float* labels, float* out, int64_t M,
                           int64_t C) {
  Scratch rows(static_cast<size_t>(M) * sizeof(float));
  ce_rows_kernel<<<blocks_for(M), kThreads, 0, stream()>>>(logits, labels, rows.f(), M, C);
  GANTRY_CUDA_LAUNCH_CHECK();
  sum_all(rows.f(), M, out, 1.f / static_cast<float>(M));
}

void cross_entropy_backward(const float* logits, const float* labels, const float* g, float* dx,
                            int64_t M, int64_t C) {
  ce_bwd_kernel<<<blocks_for(M), kThreads, 0, stream()>>>(logits, labels, g, dx, M, C);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void spatial_gather_forward(const float* x, const float* idx, float* y, int64_t N, int64_t C,
                            int64_t P_in, int64_t P_out) {
  const int64_t n = N * C * P_out;
  if (index_fits_int32(std::max(n, N * C * P_in)))
    gather_fwd_kernel<int32_t><<<blocks_for(n), kThreads, 0, stream()>>>(x, idx, y, N, C, P_in, P_out);
  else
    gather_fwd_kernel<int64_t><<<blocks_for(n), kThreads, 0, stream()>>>(x, idx, y, N, C, P_in, P_out);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void spatial_gather_backward(const float* dy, const float* idx, float* dx, int64_t N, int64_t C,
                             int64_t P_in, int64_t P_out) {
  fill(dx, N * C * P_in, 0.f);
  const int64_t n = N * C * P_out;
  if (index_fits_int32(std::max(n, N * C * P_in)))
    gather_bwd_kernel<int32_t><<<blocks_for(n), kThreads, 0, stream()>>>(dy, idx, dx, N, C, P_in, P_out);
  else
    gather_bwd_kernel<int64_t><<<blocks_for(n), kThreads, 0, stream()>>>(dy, idx, dx, N, C, P_in, P_out);
  GANTRY_CUDA_LAUNCH_CHECK();
}

}  // namespace gantry::cuda

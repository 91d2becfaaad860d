// Hand-written batch norm over x viewed as [N, C, S] (S = H*W).
//
// Training statistics are per channel, over N*S values that are not contiguous (runs of S
// separated by C*S). One block per channel walks them in order: thread t takes elements
// t, t + blockDim, ... of the channel, so a warp reads 32 consecutive floats of a run
// (coalesced). Mean and variance are two passes (mean first, then the sum of squared
// deviations): slower than one pass of sum and sum of squares, but that one cancels
// catastrophically when |mean| >> std. The same block then normalizes its channel, so the
// statistics never leave the SM. With C >= #SMs (DCGAN: 64..512 channels) the GPU is busy.
#include <stdexcept>

#include "gantry/kernels/cuda/common.cuh"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda {
using namespace kern;

namespace {

constexpr int kBnThreads = 512;
static_assert(kBnThreads % 32 == 0 && kBnThreads <= 1024, "block_sum needs whole warps, at most 32");

__device__ __forceinline__ int64_t channel_offset(int64_t j, int64_t c, int64_t C, int64_t S) {
  const int64_t n = j / S;
  return (n * C + c) * S + (j - n * S);
}

__global__ void __launch_bounds__(kBnThreads)
bn_forward_train_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                        const float* __restrict__ beta, float* __restrict__ y,
                        float* __restrict__ save_mean, float* __restrict__ save_invstd,
                        float* __restrict__ var_unbiased, int64_t N, int64_t C, int64_t S,
                        float eps, float* __restrict__ running_mean,
                        float* __restrict__ running_var, float momentum) {
  const int64_t c = blockIdx.x, M = N * S;
  float acc = 0.f;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) acc += x[channel_offset(j, c, C, S)];
  const float mean = block_sum(acc) / static_cast<float>(M);

  acc = 0.f;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const float d = x[channel_offset(j, c, C, S)] - mean;
    acc += d * d;
  }
  const float ss = block_sum(acc);
  const float invstd = 1.f / sqrtf(ss / static_cast<float>(M) + eps);  // biased variance
  if (threadIdx.x == 0) {
    save_mean[c] = mean;
    save_invstd[c] = invstd;
    // As cpu::batch_norm_forward_train: with a single value (M == 1) the unbiased estimate
    // is 0/0; the CPU kernel writes the biased variance (0) instead of NaN.
    const float var_u = ss / static_cast<float>(M > 1 ? M - 1 : M);
    if (var_unbiased) var_unbiased[c] = var_u;
    if (running_mean) {  // the running statistics, in the same launch
      running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean;
      running_var[c] = (1.f - momentum) * running_var[c] + momentum * var_u;
    }
  }

  const float g = gamma ? gamma[c] : 1.f, b = beta ? beta[c] : 0.f;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int64_t k = channel_offset(j, c, C, S);
    y[k] = (x[k] - mean) * invstd * g + b;
  }
}

// Eval is elementwise: one thread per element, the channel from the index.
__global__ void bn_forward_eval_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                       const float* __restrict__ beta,
                                       const float* __restrict__ mean,
                                       const float* __restrict__ var, float* __restrict__ y,
                                       int64_t n, int64_t C, int64_t S, float eps) {
  GANTRY_GRID_LOOP(i, n) {
    const int64_t c = (i / S) % C;
    const float invstd = 1.f / sqrtf(var[c] + eps);
    y[i] = (x[i] - mean[c]) * invstd * (gamma ? gamma[c] : 1.f) + (beta ? beta[c] : 0.f);
  }
}

// Backward, with xhat = (x - mean) invstd and M = N*S:
//   dbeta = sum dy,  dgamma = sum dy xhat,
//   dx = gamma invstd / M * (M dy - dbeta - xhat dgamma)
// Two reductions over the channel, then one elementwise pass, in one block per channel.
__global__ void __launch_bounds__(kBnThreads)
bn_backward_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                   const float* __restrict__ gamma, const float* __restrict__ save_mean,
                   const float* __restrict__ save_invstd, float* __restrict__ dx,
                   float* __restrict__ dgamma, float* __restrict__ dbeta, int64_t N, int64_t C,
                   int64_t S) {
  const int64_t c = blockIdx.x, M = N * S;
  const float mean = save_mean[c], invstd = save_invstd[c];
  float a_dy = 0.f, a_dyx = 0.f;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int64_t k = channel_offset(j, c, C, S);
    a_dy += dy[k];
    a_dyx += dy[k] * (x[k] - mean) * invstd;
  }
  const float sum_dy = block_sum(a_dy);
  const float sum_dy_xhat = block_sum(a_dyx);
  if (threadIdx.x == 0) {
    if (dbeta) dbeta[c] = sum_dy;
    if (dgamma) dgamma[c] = sum_dy_xhat;
  }
  const float g = gamma ? gamma[c] : 1.f;
  const float scale = g * invstd / static_cast<float>(M);
  const float m = static_cast<float>(M);
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int64_t k = channel_offset(j, c, C, S);
    const float xhat = (x[k] - mean) * invstd;
    dx[k] = scale * (m * dy[k] - sum_dy - xhat * sum_dy_xhat);
  }
}

}  // namespace

namespace handwritten {

void batch_norm_forward_train(const float* x, const float* gamma, const float* beta, float* y,
                              float* save_mean, float* save_invstd, float* var_unbiased,
                              int64_t N, int64_t C, int64_t S, float eps, float* running_mean,
                              float* running_var, float momentum) {
  if (C <= 0) return;
  if ((running_mean == nullptr) != (running_var == nullptr))
    throw std::invalid_argument("cuda::batch_norm_forward_train: give both running_mean and running_var or neither");
  bn_forward_train_kernel<<<static_cast<unsigned>(C), kBnThreads, 0, stream()>>>(
      x, gamma, beta, y, save_mean, save_invstd, var_unbiased, N, C, S, eps, running_mean,
      running_var, momentum);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void batch_norm_forward_eval(const float* x, const float* gamma, const float* beta,
                             const float* mean, const float* var, float* y, int64_t N, int64_t C,
                             int64_t S, float eps) {
  const int64_t n = N * C * S;
  if (n <= 0) return;
  bn_forward_eval_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(x, gamma, beta, mean, var, y,
                                                                    n, C, S, eps);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void batch_norm_backward_train(const float* x, const float* dy, const float* gamma,
                               const float* save_mean, const float* save_invstd, float* dx,
                               float* dgamma, float* dbeta, int64_t N, int64_t C, int64_t S,
                               float /*eps: save_invstd already holds it*/) {
  if (C <= 0) return;
  bn_backward_kernel<<<static_cast<unsigned>(C), kBnThreads, 0, stream()>>>(
      x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, N, C, S);
  GANTRY_CUDA_LAUNCH_CHECK();
}

}  // namespace handwritten
}  // namespace gantry::cuda

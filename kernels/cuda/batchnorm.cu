// Hand-written batch norm over x viewed as [N, C, S] (S = H*W).
//
// Training statistics are per channel, over M = N*S values that are not contiguous (runs of S
// separated by C*S). A channel is cut into P slices of consecutive values j = n*S + s, one
// block per (channel, slice); thread t of a block takes the slice's values t, t + blockDim, ...,
// so a warp reads 32 consecutive floats of a run (coalesced). Each thread steps its position
// (n, s) forward instead of dividing j by S for every value: a 64-bit division is a long
// software sequence on a GPU, not one instruction.
//
// P = 1 when the channels alone fill the GPU (C >= 4 blocks per SM): one launch computes the
// statistics in two passes (the mean, then the squared deviations: one pass of E[x^2] - E[x]^2
// cancels catastrophically when |mean| >> std) and normalizes, so they never leave the SM.
// With fewer channels (the generator's last batch norm at 64x64 has 64, which would leave half
// of an H100's 132 SMs idle) each slice's block writes its (mean, squared deviations) pair and
// a second launch merges the P pairs of a channel with Chan et al.'s pairwise update (as stable
// as the two passes) and normalizes the slice. The backward splits the same way.
//
// A block has whole warps (block_sum needs them), up to 512 threads, but no more than its slice
// has values: instance norm at 4x4 has 16 values per channel, one warp, not 16 idle ones.
#include <stdexcept>

#include "gantry/kernels/cuda/common.cuh"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda {
using namespace kern;

namespace {

constexpr int kBnThreads = 512;
static_assert(kBnThreads % 32 == 0 && kBnThreads <= 1024, "block_sum needs whole warps, at most 32");
// A slice has at least this many values (4 per thread of a full block); below it the second
// launch and the partials cost more than the idle SMs they would fill.
constexpr int64_t kMinSliceValues = 4 * kBnThreads;

// Threads for a block that walks `len` values: whole warps, at least one, at most kBnThreads.
int bn_threads(int64_t len) {
  const int64_t t = (len + 31) / 32 * 32;
  return static_cast<int>(t < 32 ? 32 : (t > kBnThreads ? kBnThreads : t));
}

// One thread's walk over the values j = first, first + step, ... of channel c, giving the flat
// index k = (n*C + c)*S + s of each (j = n*S + s) with an add and a compare per step.
struct ChannelWalk {
  int64_t s, k;   // the current value
  int64_t ds, dk;  // step: s += ds, k += dk (n += step / S)
  int64_t S, wrap;  // s passed S: on to the next image, k += (C - 1) S
  __device__ ChannelWalk(int64_t first, int64_t step, int64_t c, int64_t C, int64_t S_)
      : S(S_), wrap((C - 1) * S_) {
    const int64_t n = first / S_, dn = step / S_;
    s = first - n * S_;
    k = (n * C + c) * S_ + s;
    ds = step - dn * S_;
    dk = dn * C * S_ + ds;
  }
  __device__ void next() {
    s += ds;
    k += dk;
    if (s >= S) {
      s -= S;
      k += wrap;
    }
  }
};

// Values [begin, end) of channel c, this block's share: f(k) for each flat index k, the block's
// threads interleaved.
template <class F>
__device__ __forceinline__ void for_each_in_slice(int64_t begin, int64_t end, int64_t c,
                                                  int64_t C, int64_t S, F f) {
  const int64_t first = begin + threadIdx.x;
  if (first >= end) return;  // also keeps S = 0 (no values) away from the division
  ChannelWalk w(first, blockDim.x, c, C, S);
  for (int64_t j = first; j < end; j += blockDim.x, w.next()) f(w.k);
}

// The block's slice of its channel (blockIdx.y of gridDim.y slices of `len` values; the last
// may be shorter).
struct Slice {
  int64_t begin, end;
};
__device__ __forceinline__ Slice block_slice(int64_t M, int64_t len) {
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * len;
  return {begin, begin + len < M ? begin + len : M};
}

// Mean and sum of squared deviations of a slice, two-pass, returned to every thread.
__device__ __forceinline__ void slice_moments(const float* x, Slice sl, int64_t c, int64_t C,
                                              int64_t S, float& mean, float& m2) {
  float acc = 0.f;
  for_each_in_slice(sl.begin, sl.end, c, C, S, [&](int64_t k) { acc += x[k]; });
  mean = block_sum(acc) / static_cast<float>(sl.end - sl.begin);
  acc = 0.f;
  for_each_in_slice(sl.begin, sl.end, c, C, S, [&](int64_t k) {
    const float d = x[k] - mean;
    acc += d * d;
  });
  m2 = block_sum(acc);
}

// One thread per channel: the saved statistics and, when given, the running ones.
__device__ __forceinline__ void write_stats(int64_t c, int64_t M, float mean, float m2,
                                            float invstd, float* save_mean, float* save_invstd,
                                            float* var_unbiased, float* running_mean,
                                            float* running_var, float momentum) {
  save_mean[c] = mean;
  save_invstd[c] = invstd;
  // As cpu::batch_norm_forward_train: with a single value (M == 1) the unbiased estimate is
  // 0/0; the CPU kernel writes the biased variance (0) instead of NaN.
  const float var_u = m2 / static_cast<float>(M > 1 ? M - 1 : M);
  if (var_unbiased) var_unbiased[c] = var_u;
  if (running_mean) {  // the running statistics, in the same launch
    running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean;
    running_var[c] = (1.f - momentum) * running_var[c] + momentum * var_u;
  }
}

__device__ __forceinline__ void normalize_slice(const float* x, float* y, Slice sl, int64_t c,
                                                int64_t C, int64_t S, float mean, float invstd,
                                                const float* gamma, const float* beta) {
  const float g = gamma ? gamma[c] : 1.f, b = beta ? beta[c] : 0.f;
  for_each_in_slice(sl.begin, sl.end, c, C, S,
                    [&](int64_t k) { y[k] = (x[k] - mean) * invstd * g + b; });
}

// P = 1: statistics and normalization of channel blockIdx.x in one block.
__global__ void __launch_bounds__(kBnThreads)
bn_forward_train_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                        const float* __restrict__ beta, float* __restrict__ y,
                        float* __restrict__ save_mean, float* __restrict__ save_invstd,
                        float* __restrict__ var_unbiased, int64_t N, int64_t C, int64_t S,
                        float eps, float* __restrict__ running_mean,
                        float* __restrict__ running_var, float momentum) {
  const int64_t c = blockIdx.x, M = N * S;
  float mean, m2;
  slice_moments(x, {0, M}, c, C, S, mean, m2);
  const float invstd = 1.f / sqrtf(m2 / static_cast<float>(M) + eps);  // biased variance
  if (threadIdx.x == 0)
    write_stats(c, M, mean, m2, invstd, save_mean, save_invstd, var_unbiased, running_mean,
                running_var, momentum);
  normalize_slice(x, y, {0, M}, c, C, S, mean, invstd, gamma, beta);
}

// Thread 0 of block (c, p) stores its slice's pair of partial results at part[2 (c P + p)],
// P = gridDim.y: what the second launch of the split forward and backward merges.
__device__ __forceinline__ void store_slice_pair(float* part, int64_t c, float a, float b) {
  if (threadIdx.x != 0) return;
  float* out = part + 2 * (c * gridDim.y + blockIdx.y);
  out[0] = a;
  out[1] = b;
}

// P > 1, first launch: block (c, p) writes its slice's (mean, squared deviations) to
// part[2 (c P + p) ...].
__global__ void __launch_bounds__(kBnThreads)
bn_slice_moments_kernel(const float* __restrict__ x, int64_t N, int64_t C, int64_t S,
                        int64_t len, float* __restrict__ part) {
  const int64_t c = blockIdx.x, M = N * S;
  const Slice sl = block_slice(M, len);
  float mean, m2;
  slice_moments(x, sl, c, C, S, mean, m2);
  store_slice_pair(part, c, mean, m2);
}

// P > 1, second launch: block (c, p) merges the P pairs of channel c (thread 0, in slice
// order, in double: the merge is P steps), block (c, 0) writes the statistics, and every block
// normalizes its slice. Chan et al.: joining (n_a, mean_a, M2_a) and (n_b, mean_b, M2_b),
//   delta = mean_b - mean_a,  mean = mean_a + delta n_b / n,  M2 = M2_a + M2_b + delta^2 n_a n_b / n.
__global__ void __launch_bounds__(kBnThreads)
bn_merge_normalize_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                          const float* __restrict__ beta, float* __restrict__ y,
                          const float* __restrict__ part, float* __restrict__ save_mean,
                          float* __restrict__ save_invstd, float* __restrict__ var_unbiased,
                          int64_t N, int64_t C, int64_t S, int64_t len, float eps,
                          float* __restrict__ running_mean, float* __restrict__ running_var,
                          float momentum) {
  __shared__ float s_mean, s_m2;
  const int64_t c = blockIdx.x, M = N * S, P = gridDim.y;
  if (threadIdx.x == 0) {
    double n_a = 0, mean_a = 0, m2_a = 0;
    for (int64_t q = 0; q < P; ++q) {
      const int64_t end = (q + 1) * len < M ? (q + 1) * len : M;
      const double n_b = static_cast<double>(end - q * len), n = n_a + n_b;
      const double delta = part[2 * (c * P + q)] - mean_a;
      mean_a += delta * n_b / n;
      m2_a += part[2 * (c * P + q) + 1] + delta * delta * n_a * n_b / n;
      n_a = n;
    }
    s_mean = static_cast<float>(mean_a);
    s_m2 = static_cast<float>(m2_a);
  }
  __syncthreads();
  const float mean = s_mean, m2 = s_m2;
  const float invstd = 1.f / sqrtf(m2 / static_cast<float>(M) + eps);
  if (threadIdx.x == 0 && blockIdx.y == 0)
    write_stats(c, M, mean, m2, invstd, save_mean, save_invstd, var_unbiased, running_mean,
                running_var, momentum);
  normalize_slice(x, y, block_slice(M, len), c, C, S, mean, invstd, gamma, beta);
}

// Eval is elementwise: one thread per element, the channel from the index, decoded in the
// index type I (common.cuh: 32 bits when the tensor's indices fit).
template <class I>
__global__ void bn_forward_eval_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                       const float* __restrict__ beta,
                                       const float* __restrict__ mean,
                                       const float* __restrict__ var, float* __restrict__ y,
                                       int64_t n, int64_t C_, int64_t S_, float eps) {
  const I C = static_cast<I>(C_), S = static_cast<I>(S_);
  GANTRY_GRID_LOOP(flat, n) {
    const I plane = static_cast<I>(flat) / S, c = plane - plane / C * C;
    const float invstd = 1.f / sqrtf(var[c] + eps);
    y[flat] = (x[flat] - mean[c]) * invstd * (gamma ? gamma[c] : 1.f) + (beta ? beta[c] : 0.f);
  }
}

// Backward, with xhat = (x - mean) invstd and M = N*S:
//   dbeta = sum dy,  dgamma = sum dy xhat,
//   dx = gamma invstd / M * (M dy - dbeta - xhat dgamma)
// Two reductions over the channel, then one elementwise pass.
__device__ __forceinline__ void slice_grad_sums(const float* x, const float* dy, Slice sl,
                                                int64_t c, int64_t C, int64_t S, float mean,
                                                float invstd, float& sum_dy, float& sum_dy_xhat) {
  float a_dy = 0.f, a_dyx = 0.f;
  for_each_in_slice(sl.begin, sl.end, c, C, S, [&](int64_t k) {
    a_dy += dy[k];
    a_dyx += dy[k] * (x[k] - mean) * invstd;
  });
  sum_dy = block_sum(a_dy);
  sum_dy_xhat = block_sum(a_dyx);
}

__device__ __forceinline__ void slice_dx(const float* x, const float* dy, float* dx, Slice sl,
                                         int64_t c, int64_t C, int64_t S, int64_t M, float mean,
                                         float invstd, const float* gamma, float sum_dy,
                                         float sum_dy_xhat) {
  const float g = gamma ? gamma[c] : 1.f;
  const float scale = g * invstd / static_cast<float>(M);
  const float m = static_cast<float>(M);
  for_each_in_slice(sl.begin, sl.end, c, C, S, [&](int64_t k) {
    const float xhat = (x[k] - mean) * invstd;
    dx[k] = scale * (m * dy[k] - sum_dy - xhat * sum_dy_xhat);
  });
}

// P = 1: the whole backward of channel blockIdx.x in one block.
__global__ void __launch_bounds__(kBnThreads)
bn_backward_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                   const float* __restrict__ gamma, const float* __restrict__ save_mean,
                   const float* __restrict__ save_invstd, float* __restrict__ dx,
                   float* __restrict__ dgamma, float* __restrict__ dbeta, int64_t N, int64_t C,
                   int64_t S) {
  const int64_t c = blockIdx.x, M = N * S;
  const float mean = save_mean[c], invstd = save_invstd[c];
  float sum_dy, sum_dy_xhat;
  slice_grad_sums(x, dy, {0, M}, c, C, S, mean, invstd, sum_dy, sum_dy_xhat);
  if (threadIdx.x == 0) {
    if (dbeta) dbeta[c] = sum_dy;
    if (dgamma) dgamma[c] = sum_dy_xhat;
  }
  slice_dx(x, dy, dx, {0, M}, c, C, S, M, mean, invstd, gamma, sum_dy, sum_dy_xhat);
}

// P > 1, first launch: block (c, p) writes its slice's two sums to part[2 (c P + p) ...].
__global__ void __launch_bounds__(kBnThreads)
bn_slice_grad_sums_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                          const float* __restrict__ save_mean,
                          const float* __restrict__ save_invstd, int64_t N, int64_t C,
                          int64_t S, int64_t len, float* __restrict__ part) {
  const int64_t c = blockIdx.x, M = N * S;
  float sum_dy, sum_dy_xhat;
  slice_grad_sums(x, dy, block_slice(M, len), c, C, S, save_mean[c], save_invstd[c], sum_dy,
                  sum_dy_xhat);
  store_slice_pair(part, c, sum_dy, sum_dy_xhat);
}

// P > 1, second launch: block (c, p) adds the P pairs of channel c (thread 0, in slice order),
// block (c, 0) writes dgamma and dbeta, and every block writes dx of its slice.
__global__ void __launch_bounds__(kBnThreads)
bn_merge_backward_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                         const float* __restrict__ gamma, const float* __restrict__ save_mean,
                         const float* __restrict__ save_invstd, const float* __restrict__ part,
                         float* __restrict__ dx, float* __restrict__ dgamma,
                         float* __restrict__ dbeta, int64_t N, int64_t C, int64_t S,
                         int64_t len) {
  __shared__ float s_dy, s_dyx;
  const int64_t c = blockIdx.x, M = N * S, P = gridDim.y;
  if (threadIdx.x == 0) {
    float a = 0.f, b = 0.f;
    for (int64_t q = 0; q < P; ++q) {
      a += part[2 * (c * P + q)];
      b += part[2 * (c * P + q) + 1];
    }
    s_dy = a;
    s_dyx = b;
    if (blockIdx.y == 0) {
      if (dbeta) dbeta[c] = a;
      if (dgamma) dgamma[c] = b;
    }
  }
  __syncthreads();
  slice_dx(x, dy, dx, block_slice(M, len), c, C, S, M, save_mean[c], save_invstd[c], gamma, s_dy,
           s_dyx);
}

// Slices per channel: 0 = chosen from the machine, > 0 = forced (tests).
int64_t g_forced_slices = 0;

struct Split {
  int64_t slices;  // P
  int64_t len;     // values per slice (the last may have fewer)
};

Split split_channels(int64_t C, int64_t M) {
  if (M <= 0) return {1, M};
  int64_t P = g_forced_slices < 4096 ? g_forced_slices : 4096;  // each block merges all P
  if (P <= 0) {
    // 4 blocks of 512 threads fill an SM (2048 threads on sm_80/sm_90).
    const int64_t target = 4 * static_cast<int64_t>(multiprocessor_count());
    P = C >= target ? 1 : (target + C - 1) / C;
    if (P > M / kMinSliceValues) P = M / kMinSliceValues;
  }
  if (P > 65535) P = 65535;  // gridDim.y
  if (P > M) P = M;
  if (P < 1) P = 1;
  const int64_t len = (M + P - 1) / P;
  return {(M + len - 1) / len, len};  // no empty slice
}

}  // namespace

namespace handwritten {

void set_batch_norm_slices(int64_t slices) { g_forced_slices = slices > 0 ? slices : 0; }

int64_t batch_norm_slices(int64_t N, int64_t C, int64_t S) { return split_channels(C, N * S).slices; }

void batch_norm_forward_train(const float* x, const float* gamma, const float* beta, float* y,
                              float* save_mean, float* save_invstd, float* var_unbiased,
                              int64_t N, int64_t C, int64_t S, float eps, float* running_mean,
                              float* running_var, float momentum) {
  if (C <= 0) return;
  if ((running_mean == nullptr) != (running_var == nullptr))
    throw std::invalid_argument("cuda::batch_norm_forward_train: give both running_mean and running_var or neither");
  const Split sp = split_channels(C, N * S);
  const int threads = bn_threads(sp.len);
  if (sp.slices == 1) {
    bn_forward_train_kernel<<<static_cast<unsigned>(C), threads, 0, stream()>>>(
        x, gamma, beta, y, save_mean, save_invstd, var_unbiased, N, C, S, eps, running_mean,
        running_var, momentum);
    GANTRY_CUDA_LAUNCH_CHECK();
    return;
  }
  Scratch part(static_cast<size_t>(2 * C * sp.slices) * sizeof(float));
  const dim3 grid(static_cast<unsigned>(C), static_cast<unsigned>(sp.slices));
  bn_slice_moments_kernel<<<grid, threads, 0, stream()>>>(x, N, C, S, sp.len, part.f());
  GANTRY_CUDA_LAUNCH_CHECK();
  bn_merge_normalize_kernel<<<grid, threads, 0, stream()>>>(
      x, gamma, beta, y, part.f(), save_mean, save_invstd, var_unbiased, N, C, S, sp.len, eps,
      running_mean, running_var, momentum);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void batch_norm_forward_eval(const float* x, const float* gamma, const float* beta,
                             const float* mean, const float* var, float* y, int64_t N, int64_t C,
                             int64_t S, float eps) {
  const int64_t n = N * C * S;
  if (n <= 0) return;
  if (index_fits_int32(n))
    bn_forward_eval_kernel<int32_t><<<blocks_for(n), kThreads, 0, stream()>>>(x, gamma, beta, mean, var, y, n, C, S, eps);
  else
    bn_forward_eval_kernel<int64_t><<<blocks_for(n), kThreads, 0, stream()>>>(x, gamma, beta, mean, var, y, n, C, S, eps);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void batch_norm_backward_train(const float* x, const float* dy, const float* gamma,
                               const float* save_mean, const float* save_invstd, float* dx,
                               float* dgamma, float* dbeta, int64_t N, int64_t C, int64_t S,
                               float /*eps: save_invstd already holds it*/) {
  if (C <= 0) return;
  const Split sp = split_channels(C, N * S);
  const int threads = bn_threads(sp.len);
  if (sp.slices == 1) {
    bn_backward_kernel<<<static_cast<unsigned>(C), threads, 0, stream()>>>(
        x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, N, C, S);
    GANTRY_CUDA_LAUNCH_CHECK();
    return;
  }
  Scratch part(static_cast<size_t>(2 * C * sp.slices) * sizeof(float));
  const dim3 grid(static_cast<unsigned>(C), static_cast<unsigned>(sp.slices));
  bn_slice_grad_sums_kernel<<<grid, threads, 0, stream()>>>(x, dy, save_mean, save_invstd, N, C,
                                                            S, sp.len, part.f());
  GANTRY_CUDA_LAUNCH_CHECK();
  bn_merge_backward_kernel<<<grid, threads, 0, stream()>>>(x, dy, gamma, save_mean, save_invstd,
                                                           part.f(), dx, dgamma, dbeta, N, C, S,
                                                           sp.len);
  GANTRY_CUDA_LAUNCH_CHECK();
}

}  // namespace handwritten
}  // namespace gantry::cuda

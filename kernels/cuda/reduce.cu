// Reductions and the binary cross-entropy losses.
//
// A reduction adds many numbers into few. On a GPU it runs in stages: each thread first sums
// a strided slice of the input in a register (reads stay coalesced: neighbouring threads read
// neighbouring elements), then the 32 lanes of a warp combine with register shuffles, then the
// warps of a block combine through shared memory (kern::block_sum). When one block is not
// enough (a whole tensor into one number), a first kernel writes one partial per block and a
// second, single-block kernel adds the partials. No atomics: results are deterministic.
#include <stdexcept>
#include <string>

#include "gantry/kernels/cuda/common.cuh"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda {
using namespace kern;

namespace {

constexpr int kMaxPartials = 1024;  // blocks in stage 1 (and threads of stage 2)
static_assert(kMaxPartials % 32 == 0 && kMaxPartials <= 1024, "block_sum needs whole warps, at most 32");

// Stage 1: block b sums the terms f(i) of its grid-stride slice into partials[b].
template <class F>
__global__ void partial_sum_kernel(F f, int64_t n, float* __restrict__ partials) {
  float acc = 0.f;
  GANTRY_GRID_LOOP(i, n) acc += f(i);
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Stage 2: one block adds the partials (in a fixed order) and scales.
__global__ void __launch_bounds__(kMaxPartials)
final_sum_kernel(const float* __restrict__ partials, int count, float* __restrict__ out,
                 float scale) {
  float acc = 0.f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = acc * scale;
}

// out[0] = scale * sum_i f(i), in the two stages above.
template <class F>
void reduce_terms(F f, int64_t n, float* out, float scale) {
  if (n <= 0) {
    fill(out, 1, 0.f);
    return;
  }
  int64_t blocks = (n + 4 * kThreads - 1) / (4 * kThreads);  // >= 4 elements per thread
  if (blocks > kMaxPartials) blocks = kMaxPartials;
  Scratch partials(static_cast<size_t>(blocks) * sizeof(float));
  partial_sum_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream()>>>(f, n, partials.f());
  GANTRY_CUDA_LAUNCH_CHECK();
  final_sum_kernel<<<1, kMaxPartials, 0, stream()>>>(partials.f(), static_cast<int>(blocks), out,
                                                     scale);
  GANTRY_CUDA_LAUNCH_CHECK();
}

// ---- the summed terms (functors: inlined into the stage-1 kernel) --------------------------
struct Identity {
  const float* x;
  __device__ float operator()(int64_t i) const { return x[i]; }
};

// PyTorch's binary_cross_entropy: -(t log p + (1 - t) log(1 - p)), each log clamped at -100.
// log(1 - p) as log1p(-p), as PyTorch and the CPU kernel: logf(1.f - p) loses all digits of a
// small p (1 - p rounds first), which is where a confident discriminator's outputs live.
// The clamp is std::max(log, -100) as on the CPU: a NaN p stays NaN (fmaxf would give -100).
__device__ __forceinline__ float clamp_log(float v) { return v < -100.f ? -100.f : v; }

struct BceTerm {
  const float* p;
  const float* t;
  __device__ float operator()(int64_t i) const {
    const float lp = clamp_log(logf(p[i]));
    const float l1p = clamp_log(log1pf(-p[i]));
    return -(t[i] * lp + (1.f - t[i]) * l1p);
  }
};

// On logits, stable for any x: max(x, 0) - x t + log(1 + exp(-|x|)).
struct BceLogitsTerm {
  const float* x;
  const float* t;
  __device__ float operator()(int64_t i) const {
    const float v = x[i];
    return fmaxf(v, 0.f) - v * t[i] + log1pf(expf(-fabsf(v)));
  }
};

__global__ void bce_backward_kernel(const float* __restrict__ p, const float* __restrict__ t,
                                    const float* __restrict__ g, float* __restrict__ dp,
                                    int64_t n, float inv_n) {
  const float gs = g[0] * inv_n;  // the upstream gradient, a device scalar
  GANTRY_GRID_LOOP(i, n) {
    const float denom = fmaxf(p[i] * (1.f - p[i]), 1e-12f);
    dp[i] = gs * (p[i] - t[i]) / denom;
  }
}

__global__ void bce_logits_backward_kernel(const float* __restrict__ x,
                                           const float* __restrict__ t,
                                           const float* __restrict__ g, float* __restrict__ dx,
                                           int64_t n, float inv_n) {
  const float gs = g[0] * inv_n;
  GANTRY_GRID_LOOP(i, n) dx[i] = gs * (1.f / (1.f + expf(-x[i])) - t[i]);
}

// ---- sum_to_shape ---------------------------------------------------------------------------
// Output element o sums the input elements whose kept coordinates equal o's. The input is
// split into "kept" dims (out size == in size) and "reduced" dims (out size 1): o decodes to
// the kept coordinates, and r in [0, R) to the reduced ones.
struct ReduceIndex {
  int ndim;
  int64_t in_stride[kMaxDims];
  int64_t out_size[kMaxDims];  // 1 along reduced dims
  int64_t red_size[kMaxDims];  // 1 along kept dims
};

// The offset in x of coordinates numbered i over `size` (last dim fastest), in the index type
// I (common.cuh: 32 bits when every offset fits).
template <class I>
__device__ __forceinline__ I offset_of(const ReduceIndex& ix, const int64_t* size, I i) {
  I off = 0;
  for (int d = ix.ndim - 1; d >= 0; --d) {
    const I n = static_cast<I>(size[d]), next = i / n;
    off += (i - next * n) * static_cast<I>(ix.in_stride[d]);
    i = next;
  }
  return off;
}

// Few terms per output (R small): one thread per output element, a serial loop over R.
template <class I>
__global__ void sum_to_shape_thread_kernel(const float* __restrict__ x, float* __restrict__ out,
                                           int64_t n_out, int64_t R, ReduceIndex ix) {
  GANTRY_GRID_LOOP(o, n_out) {
    const I base = offset_of<I>(ix, ix.out_size, static_cast<I>(o));
    float acc = 0.f;
    for (I r = 0; r < static_cast<I>(R); ++r) acc += x[base + offset_of<I>(ix, ix.red_size, r)];
    out[o] = acc;
  }
}

// Many terms per output: one block per output element, block_sum over R.
template <class I>
__global__ void sum_to_shape_block_kernel(const float* __restrict__ x, float* __restrict__ out,
                                          int64_t n_out, int64_t R, ReduceIndex ix) {
  for (int64_t o = blockIdx.x; o < n_out; o += gridDim.x) {
    const I base = offset_of<I>(ix, ix.out_size, static_cast<I>(o));
    float acc = 0.f;
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x)  // 64-bit counter: r + blockDim may pass 2^31
      acc += x[base + offset_of<I>(ix, ix.red_size, static_cast<I>(r))];
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[o] = acc;
  }
}

template <class I>
__global__ void broadcast_kernel(const float* __restrict__ x, float* __restrict__ out, int64_t n,
                                 ReduceIndex ix) {
  // ix.in_stride holds x's strides over out's dims (0 where x has size 1).
  GANTRY_GRID_LOOP(i, n) out[i] = x[offset_of<I>(ix, ix.out_size, static_cast<I>(i))];
}

// out[c] = sum over (n, s) of x[n, c, s]: one block per channel; the threads of a block walk
// the N*S elements of that channel (contiguous runs of S), so reads are coalesced.
__global__ void sum_channels_kernel(const float* __restrict__ x, float* __restrict__ out,
                                    int64_t N, int64_t C, int64_t S) {
  const int64_t c = blockIdx.x;
  float acc = 0.f;
  for (int64_t j = threadIdx.x; j < N * S; j += blockDim.x) {
    const int64_t n = j / S, s = j - n * S;
    acc += x[(n * C + c) * S + s];
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[c] = acc;
}

void check_ndim(int ndim, const char* op) {
  if (ndim > kMaxDims)
    throw std::invalid_argument(std::string("cuda::") + op + ": " + std::to_string(ndim) +
                                " dims; at most " + std::to_string(kMaxDims));
}

}  // namespace

// ---- entry points --------------------------------------------------------------------------
void sum_all(const float* x, int64_t n, float* out, float scale) {
  reduce_terms(Identity{x}, n, out, scale);
}

void sum_to_shape(const float* x, const int64_t* in_shape, float* out, const int64_t* out_shape,
                  int ndim) {
  check_ndim(ndim, "sum_to_shape");
  ReduceIndex ix{};
  ix.ndim = ndim;
  int64_t stride = 1, n_out = 1, R = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    const bool kept = out_shape[d] == in_shape[d];
    if (!kept && out_shape[d] != 1)
      throw std::invalid_argument("cuda::sum_to_shape: output size " +
                                  std::to_string(out_shape[d]) + " at dim " + std::to_string(d) +
                                  " must be 1 or the input size " + std::to_string(in_shape[d]));
    ix.in_stride[d] = stride;
    ix.out_size[d] = out_shape[d];
    ix.red_size[d] = kept ? 1 : in_shape[d];
    stride *= in_shape[d];
    n_out *= out_shape[d];
    R *= ix.red_size[d];
  }
  if (n_out <= 0) return;
  if (n_out == 1) {  // everything into one number: the two-stage reduction
    sum_all(x, R, out, 1.f);
    return;
  }
  const bool narrow = index_fits_int32(n_out * R);  // x's size: every offset is below it
  if (R < 64) {
    if (narrow)
      sum_to_shape_thread_kernel<int32_t><<<blocks_for(n_out), kThreads, 0, stream()>>>(x, out, n_out, R, ix);
    else
      sum_to_shape_thread_kernel<int64_t><<<blocks_for(n_out), kThreads, 0, stream()>>>(x, out, n_out, R, ix);
  } else {
    const unsigned blocks = static_cast<unsigned>(n_out < 65536 ? n_out : 65536);
    if (narrow)
      sum_to_shape_block_kernel<int32_t><<<blocks, kThreads, 0, stream()>>>(x, out, n_out, R, ix);
    else
      sum_to_shape_block_kernel<int64_t><<<blocks, kThreads, 0, stream()>>>(x, out, n_out, R, ix);
  }
  GANTRY_CUDA_LAUNCH_CHECK();
}

void broadcast_to(const float* x, const int64_t* x_shape, float* out, const int64_t* out_shape,
                  int ndim) {
  check_ndim(ndim, "broadcast_to");
  ReduceIndex ix{};
  ix.ndim = ndim;
  int64_t stride = 1, n = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    ix.in_stride[d] = x_shape[d] == 1 ? 0 : stride;
    ix.out_size[d] = out_shape[d];
    stride *= x_shape[d];
    n *= out_shape[d];
  }
  if (n <= 0) return;
  if (index_fits_int32(n))  // x is no larger than out
    broadcast_kernel<int32_t><<<blocks_for(n), kThreads, 0, stream()>>>(x, out, n, ix);
  else
    broadcast_kernel<int64_t><<<blocks_for(n), kThreads, 0, stream()>>>(x, out, n, ix);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void sum_channels(const float* x, float* out, int64_t N, int64_t C, int64_t S) {
  if (C <= 0) return;
  if (N * S == 0) {
    fill(out, C, 0.f);
    return;
  }
  sum_channels_kernel<<<static_cast<unsigned>(C), kThreads, 0, stream()>>>(x, out, N, C, S);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void bce_forward(const float* p, const float* t, float* out, int64_t n) {
  reduce_terms(BceTerm{p, t}, n, out, n > 0 ? 1.f / static_cast<float>(n) : 0.f);
}

void bce_backward(const float* p, const float* t, const float* g, float* dp, int64_t n) {
  if (n <= 0) return;
  bce_backward_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(p, t, g, dp, n,
                                                                1.f / static_cast<float>(n));
  GANTRY_CUDA_LAUNCH_CHECK();
}

void bce_logits_forward(const float* x, const float* t, float* out, int64_t n) {
  reduce_terms(BceLogitsTerm{x, t}, n, out, n > 0 ? 1.f / static_cast<float>(n) : 0.f);
}

void bce_logits_backward(const float* x, const float* t, const float* g, float* dx, int64_t n) {
  if (n <= 0) return;
  bce_logits_backward_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(
      x, t, g, dx, n, 1.f / static_cast<float>(n));
  GANTRY_CUDA_LAUNCH_CHECK();
}

}  // namespace gantry::cuda

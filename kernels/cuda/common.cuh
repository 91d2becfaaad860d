#pragma once
// Shared helpers of the hand-written kernels: launch sizes and warp/block sums.
#include <cstdint>

#include "gantry/core/cuda/internal.h"

namespace gantry::cuda::kern {

constexpr int kThreads = 256;  // a good default block: 8 warps, many blocks per SM

// Blocks for a grid-stride loop over n items: enough to fill the GPU, capped so very large
// tensors reuse threads instead of launching millions of blocks.
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65536) b = 65536;
  return static_cast<unsigned>(b);
}

// Grid-stride loop: thread t handles t, t + stride, t + 2*stride, ... (64-bit safe).
#define GANTRY_GRID_LOOP(i, n)                                                         \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Sum of v over the 32 lanes of a warp: each step adds the value `offset` lanes higher, so
// after 5 steps lane 0 holds the total. Registers only, no shared memory, no barrier.
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the whole block, returned to every thread. Each warp reduces with shuffles,
// lane 0 of each warp parks its partial in shared memory, and warp 0 reduces the partials.
// Safe to call repeatedly in one kernel (the last barrier protects the shared slots).
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>((blockDim.x + 31) / 32) ? partial[lane] : 0.f;
    v = warp_sum(v);
    if (lane == 0) total = v;
  }
  __syncthreads();
  const float r = total;
  __syncthreads();
  return r;
}

// Up to 8 dims of sizes and strides, passed to kernels by value.
constexpr int kMaxDims = 8;
struct Dims {
  int ndim;
  int64_t size[kMaxDims];
};

}  // namespace gantry::cuda::kern

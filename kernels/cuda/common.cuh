#pragma once
// Shared helpers of the hand-written kernels: launch sizes and warp/block sums.
#include <cstdint>

#include "gantry/core/cuda/internal.h"

namespace gantry::cuda::kern {

constexpr int kThreads = 256;  // a good default block: 8 warps, many blocks per SM
static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block_sum needs whole warps, at most 32");

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

// Precondition of warp_sum and block_sum: blockDim.x is a multiple of 32 (<= 1024) and every
// thread of the block calls them (full mask); each launch site static_asserts its block size.
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

// Multi-tensor launches (Adam, EMA): the descriptors of up to kMaxChunkedTensors tensors travel
// in the kernel's argument block (__grid_constant__, no copy to device memory), each tensor is
// cut into kChunk-element chunks, and one CUDA block handles one chunk. A block finds its
// tensor from the prefix sum of chunk counts (a short scan over <= 64 entries).
constexpr int kMaxChunkedTensors = 64;
constexpr int64_t kChunk = 4096;

template <class T>
struct ChunkedTensors {
  T t[kMaxChunkedTensors];
  int64_t first_block[kMaxChunkedTensors + 1];  // prefix sum of chunk counts
  int count;

  // Host: packs tensors[next..] (skipping empty ones) until the block is full; advances `next`
  // and returns the number of CUDA blocks to launch (0: nothing left to do).
  int64_t pack(const T* tensors, int total, int& next) {
    count = 0;
    int64_t blocks = 0;
    for (; next < total && count < kMaxChunkedTensors; ++next) {
      if (tensors[next].numel <= 0) continue;
      t[count] = tensors[next];
      first_block[count] = blocks;
      blocks += (tensors[next].numel + kChunk - 1) / kChunk;
      ++count;
    }
    first_block[count] = blocks;
    return blocks;
  }

  // Device: this block's tensor and its element range [begin, end).
  __device__ const T& mine(int64_t& begin, int64_t& end) const {
    int k = 0;
    while (k + 1 < count && blockIdx.x >= first_block[k + 1]) ++k;
    begin = (blockIdx.x - first_block[k]) * kChunk;
    end = begin + kChunk < t[k].numel ? begin + kChunk : t[k].numel;
    return t[k];
  }
};

// Index arithmetic: decoding a flat index into coordinates divides by runtime sizes, and a
// GPU has no integer divide instruction: a 32-bit division is a sequence of about 20
// instructions, a 64-bit one a longer software routine. Kernels that decode per element are
// templates on the index type, and the host launches the int32_t instance when every index of
// the launch is below `n` <= INT32_MAX (host code; set_force_wide_indices in cuda_kernels.h
// makes it false for tests of the int64_t instances).
bool index_fits_int32(int64_t n);

// Up to 8 dims of sizes and strides, passed to kernels by value.
constexpr int kMaxDims = 8;
struct Dims {
  int ndim;
  int64_t size[kMaxDims];
};

}  // namespace gantry::cuda::kern

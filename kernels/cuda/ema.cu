// Multi-tensor EMA: a model's average updated by one kernel launch.
//
// EMA::update (optim/ema.h) runs after every optimizer step: per parameter
// avg = decay * avg + (1 - decay) * param, and per buffer (BN's running statistics) avg = buffer.
// Done tensor by tensor that is two launches per parameter and one per buffer (29 for the
// 32x32 DCGAN generator); here it is one, with the same chunking as multi-tensor Adam
// (ChunkedTensors in common.cuh).
#include "gantry/kernels/cuda/common.cuh"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda {
using namespace kern;

namespace {

struct EmaBatch {
  ChunkedTensors<EmaTensor> chunks;
  float decay, one_minus_decay;
};
static_assert(sizeof(EmaBatch) <= 4096, "a kernel's parameters must fit in 4 KiB");

__global__ void ema_kernel(const __grid_constant__ EmaBatch b) {
  int64_t begin, end;
  const EmaTensor& t = b.chunks.mine(begin, end);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    if (t.copy) {
      t.average[i] = t.source[i];  // exact, whatever the average held (even NaN)
    } else {
      // The roundings of EMA::update on the CPU, explicitly (nvcc's default --fmad=true would
      // otherwise fuse whichever product it likes): mul_ rounds avg * decay once, and add_'s
      // `avg += alpha * src` (core/tensor.cpp) is one FMA in the x86-64-v3 host build (GCC
      // contracts it: vfmadd in Tensor::add_). A host built without FMA rounds twice there.
      const float scaled = __fmul_rn(t.average[i], b.decay);
      t.average[i] = __fmaf_rn(b.one_minus_decay, t.source[i], scaled);
    }
  }
}

}  // namespace

void ema_multi_tensor(const EmaTensor* tensors, int count, double decay) {
  for (int next = 0; next < count;) {
    EmaBatch b{};
    const int64_t blocks = b.chunks.pack(tensors, count, next);
    if (blocks == 0) continue;
    b.decay = static_cast<float>(decay);
    b.one_minus_decay = static_cast<float>(1.0 - decay);  // in double, as EMA::update on the CPU
    ema_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream()>>>(b);
    GANTRY_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace gantry::cuda

// Multi-tensor Adam: every parameter of a model updated by one kernel launch.
//
// A DCGAN has ~25 parameter tensors, many tiny (BN's 64-element vectors). One launch per
// tensor (x4 for param, grad and two moments) would be dominated by launch overhead; instead
// the host packs the pointers and sizes of up to 64 tensors into the kernel's argument block
// (4 KiB of __grid_constant__ parameter space, no copy to device memory) and each CUDA block
// updates one 4096-element chunk of one tensor. A block finds its tensor from a prefix sum of
// chunk counts (a short search over <= 64 entries). Adam is elementwise, so chunks are
// independent and the launch is as wide as the whole model.
#include <cmath>
#include <stdexcept>
#include <string>

#include "gantry/kernels/cuda/common.cuh"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda {
using namespace kern;

namespace {

constexpr int kMaxTensors = 64;
constexpr int64_t kChunk = 4096;

struct AdamBatch {
  AdamTensor t[kMaxTensors];
  int64_t first_block[kMaxTensors + 1];  // prefix sum of chunk counts
  int count;
  // Float factors formed in double on the host, as adam_update_cpu (optim/adam.cpp) does.
  float beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay;
  float step_size;             // lr / (1 - beta1^t)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^t)
};

// PyTorch's lerp: start + w (end - start) for w < 0.5, else end - (end - start)(1 - w); used by
// torch.optim.Adam for the first moment (exp_avg.lerp_(grad, 1 - beta1)).
__device__ __forceinline__ float lerp(float start, float end, float w) {
  return w < 0.5f ? start + w * (end - start) : end - (end - start) * (1.f - w);
}

__global__ void adam_kernel(const __grid_constant__ AdamBatch b) {
  int k = 0;
  while (k + 1 < b.count && blockIdx.x >= b.first_block[k + 1]) ++k;
  const AdamTensor& t = b.t[k];
  const int64_t begin = (blockIdx.x - b.first_block[k]) * kChunk;
  const int64_t end = begin + kChunk < t.numel ? begin + kChunk : t.numel;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float g = t.grad[i];
    const float p = t.param[i];
    if (b.weight_decay != 0.f) g = g + b.weight_decay * p;  // L2, as torch.optim.Adam
    const float m = lerp(t.exp_avg[i], g, b.one_minus_beta1);
    const float v = t.exp_avg_sq[i] * b.beta2 + b.one_minus_beta2 * g * g;
    t.exp_avg[i] = m;
    t.exp_avg_sq[i] = v;
    const float denom = sqrtf(v) / b.bias_correction2_sqrt + b.eps;
    t.param[i] = p - b.step_size * (m / denom);
  }
}

}  // namespace

void adam_multi_tensor(const AdamTensor* tensors, int count, const AdamConfig& cfg) {
  if (cfg.step < 1)
    throw std::invalid_argument("cuda::adam_multi_tensor: step must be >= 1, got " +
                                std::to_string(cfg.step));
  // The bias corrections in double on the host, as PyTorch computes them in Python floats.
  const double bc1 = 1.0 - std::pow(cfg.beta1, static_cast<double>(cfg.step));
  const double bc2 = 1.0 - std::pow(cfg.beta2, static_cast<double>(cfg.step));
  for (int start = 0; start < count; start += kMaxTensors) {
    AdamBatch b{};
    b.beta2 = static_cast<float>(cfg.beta2);
    b.one_minus_beta1 = static_cast<float>(1.0 - cfg.beta1);
    b.one_minus_beta2 = static_cast<float>(1.0 - cfg.beta2);
    b.eps = static_cast<float>(cfg.eps);
    b.weight_decay = static_cast<float>(cfg.weight_decay);
    b.step_size = static_cast<float>(cfg.lr / bc1);
    b.bias_correction2_sqrt = static_cast<float>(std::sqrt(bc2));
    int64_t blocks = 0;
    const int stop = count - start < kMaxTensors ? count : start + kMaxTensors;
    for (int i = start; i < stop; ++i) {
      if (tensors[i].numel <= 0) continue;
      b.t[b.count] = tensors[i];
      b.first_block[b.count] = blocks;
      blocks += (tensors[i].numel + kChunk - 1) / kChunk;
      ++b.count;
    }
    b.first_block[b.count] = blocks;
    if (blocks == 0) continue;
    adam_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream()>>>(b);
    GANTRY_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace gantry::cuda

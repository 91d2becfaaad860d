// Multi-tensor Adam: every parameter of a model updated by one kernel launch.
//
// A DCGAN has ~25 parameter tensors, many tiny (BN's 64-element vectors). One launch per
// tensor (x4 for param, grad and two moments) would be dominated by launch overhead; instead
// the host packs the pointers and sizes of up to 64 tensors into the kernel's argument block
// (4 KiB of __grid_constant__ parameter space, no copy to device memory) and each CUDA block
// updates one 4096-element chunk of one tensor (ChunkedTensors in common.cuh). Adam is
// elementwise, so chunks are independent and the launch is as wide as the whole model.
#include <cmath>
#include <stdexcept>
#include <string>

#include "gantry/kernels/cuda/common.cuh"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda {
using namespace kern;

namespace {

struct AdamBatch {
  ChunkedTensors<AdamTensor> chunks;
  // Float factors formed in double on the host, as adam_update_cpu (optim/adam.cpp) does. The
  // arithmetic below is left to nvcc (it may fuse a*b + c): it follows torch.optim.Adam's
  // formula, not the CPU's roundings, and is compared with a tolerance, not bit for bit.
  float beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay;
  float step_size;             // lr / (1 - beta1^t)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^t)
};
static_assert(sizeof(AdamBatch) <= 4096, "a kernel's parameters must fit in 4 KiB");

// PyTorch's lerp: start + w (end - start) for w < 0.5, else end - (end - start)(1 - w); used by
// torch.optim.Adam for the first moment (exp_avg.lerp_(grad, 1 - beta1)).
__device__ __forceinline__ float lerp(float start, float end, float w) {
  return w < 0.5f ? start + w * (end - start) : end - (end - start) * (1.f - w);
}

__global__ void adam_kernel(const __grid_constant__ AdamBatch b) {
  int64_t begin, end;
  const AdamTensor& t = b.chunks.mine(begin, end);
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
  for (int next = 0; next < count;) {
    AdamBatch b{};
    const int64_t blocks = b.chunks.pack(tensors, count, next);
    if (blocks == 0) continue;
    b.beta2 = static_cast<float>(cfg.beta2);
    b.one_minus_beta1 = static_cast<float>(1.0 - cfg.beta1);
    b.one_minus_beta2 = static_cast<float>(1.0 - cfg.beta2);
    b.eps = static_cast<float>(cfg.eps);
    b.weight_decay = static_cast<float>(cfg.weight_decay);
    b.step_size = static_cast<float>(cfg.lr / bc1);
    b.bias_correction2_sqrt = static_cast<float>(std::sqrt(bc2));
    adam_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream()>>>(b);
    GANTRY_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace gantry::cuda

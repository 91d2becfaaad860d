// GPU version of kernels/cpu/warp.cpp. One thread per output pixel of one sample, looping
// over the channels: the taps (kernels/warp_taps.h, double precision, the same roundings as
// the host) are computed once per pixel, and consecutive threads write consecutive pixels of
// each channel plane (coalesced stores; the reads follow the map, so they coalesce as far as
// the map keeps neighbours together). The map itself is never stored: theta, 6 floats per
// sample, is all that reaches the device.
#include "gantry/kernels/cuda/common.cuh"
#include "gantry/kernels/cuda/cuda_kernels.h"
#include "gantry/kernels/warp_taps.h"

namespace gantry::cuda {
using namespace kern;

namespace {

__global__ void affine_warp_fwd_kernel(const float* __restrict__ x, const float* __restrict__ theta,
                                       float* __restrict__ y, int64_t N, int64_t C, int64_t H,
                                       int64_t W) {
  const int64_t P = H * W;
  GANTRY_GRID_LOOP(i, N * P) {
    const int64_t n = i / P, p = i % P;
    const warp_detail::Taps t = warp_detail::taps(theta + 6 * n, p / W, p % W, H, W);
    for (int64_t c = 0; c < C; ++c) {
      const float* xc = x + (n * C + c) * P;
      float acc = 0.f;
      // Multiply, then add, each rounded: the host's order, so the outputs match bit for bit.
      for (int k = 0; k < 4; ++k)
        if (t.w[k] != 0.f) acc = __fadd_rn(acc, __fmul_rn(xc[t.q[k]], t.w[k]));
      y[(n * C + c) * P + p] = acc;
    }
  }
}

// The adjoint: each output pixel's gradient is added to its four taps. Reflection and
// magnification send several outputs to one input, so the adds are atomic (and their order,
// hence the last bits of dx, varies from run to run).
__global__ void affine_warp_bwd_kernel(const float* __restrict__ dy, const float* __restrict__ theta,
                                       float* __restrict__ dx, int64_t N, int64_t C, int64_t H,
                                       int64_t W) {
  const int64_t P = H * W;
  GANTRY_GRID_LOOP(i, N * P) {
    const int64_t n = i / P, p = i % P;
    const warp_detail::Taps t = warp_detail::taps(theta + 6 * n, p / W, p % W, H, W);
    for (int64_t c = 0; c < C; ++c) {
      const float g = dy[(n * C + c) * P + p];
      float* dxc = dx + (n * C + c) * P;
      for (int k = 0; k < 4; ++k)
        if (t.w[k] != 0.f) atomicAdd(dxc + t.q[k], __fmul_rn(g, t.w[k]));
    }
  }
}

}  // namespace

void affine_warp_forward(const float* x, const float* theta, float* y, int64_t N, int64_t C,
                         int64_t H, int64_t W) {
  affine_warp_fwd_kernel<<<blocks_for(N * H * W), kThreads, 0, stream()>>>(x, theta, y, N, C, H, W);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void affine_warp_backward(const float* dy, const float* theta, float* dx, int64_t N, int64_t C,
                          int64_t H, int64_t W) {
  fill(dx, N * C * H * W, 0.f);
  affine_warp_bwd_kernel<<<blocks_for(N * H * W), kThreads, 0, stream()>>>(dy, theta, dx, N, C, H, W);
  GANTRY_CUDA_LAUNCH_CHECK();
}

}  // namespace gantry::cuda

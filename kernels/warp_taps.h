#pragma once
// The four bilinear taps of one output pixel of affine_warp, shared by the CPU kernel
// (kernels/cpu/warp.cpp) and the CUDA kernel (kernels/cuda/warp.cu) so both read the same
// input positions with the same weights, bit for bit.
//
// theta holds one sample's 2x3 matrix [m00 m01 tx; m10 m11 ty] in pixel units about the image
// centre (cx, cy) = ((W - 1) / 2, (H - 1) / 2): output pixel (i, j) reads the input at
//   xs = m00 (j - cx) + m01 (i - cy) + tx + cx,   ys = m10 (j - cx) + m11 (i - cy) + ty + cy,
// interpolated between its four integer neighbours, which reflect into the image (period
// 2 (n - 1), as torch's "reflect" padding). Requires H, W >= 2.
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define GANTRY_HOST_DEVICE __host__ __device__
#else
#define GANTRY_HOST_DEVICE
#endif

namespace gantry::warp_detail {

struct Taps {
  int64_t q[4];  // input positions y * W + x: (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)
  float w[4];    // their weights, summing to 1
};

// Products and sums rounded one at a time: nvcc would fuse a * b + c into one FMA on the
// device; the host's kernels/cpu/warp.cpp is compiled with -ffp-contract=off (CMakeLists.txt).
GANTRY_HOST_DEVICE inline double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
GANTRY_HOST_DEVICE inline double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

GANTRY_HOST_DEVICE inline int64_t reflect(int64_t i, int64_t n) {
  if (i >= 0 && i < n) return i;  // most taps: no 64-bit division (slow on both sides)
  const int64_t period = 2 * (n - 1);
  int64_t r = i % period;
  if (r < 0) r += period;
  return r < n ? r : period - r;
}

GANTRY_HOST_DEVICE inline Taps taps(const float* theta, int64_t i, int64_t j, int64_t H, int64_t W) {
  const double cx = (W - 1) / 2.0, cy = (H - 1) / 2.0;
  const double u = static_cast<double>(j) - cx, v = static_cast<double>(i) - cy;
  double xs = add_rn(add_rn(add_rn(mul_rn(theta[0], u), mul_rn(theta[1], v)), theta[2]), cx);
  double ys = add_rn(add_rn(add_rn(mul_rn(theta[3], u), mul_rn(theta[4], v)), theta[5]), cy);
  // Bounded so the casts below are defined whatever theta holds (fmax maps NaN to the bound);
  // the CPU op rejects non-finite theta, a GPU theta is not read back to be checked.
  xs = fmin(fmax(xs, -1e15), 1e15);
  ys = fmin(fmax(ys, -1e15), 1e15);
  const double x0 = floor(xs), y0 = floor(ys), fx = xs - x0, fy = ys - y0;
  const int64_t ix = static_cast<int64_t>(x0), iy = static_cast<int64_t>(y0);
  const int64_t c0 = reflect(ix, W), c1 = reflect(ix + 1, W);
  const int64_t r0 = reflect(iy, H) * W, r1 = reflect(iy + 1, H) * W;
  Taps t;
  t.q[0] = r0 + c0; t.q[1] = r0 + c1; t.q[2] = r1 + c0; t.q[3] = r1 + c1;
  t.w[0] = static_cast<float>(mul_rn(1 - fy, 1 - fx));
  t.w[1] = static_cast<float>(mul_rn(1 - fy, fx));
  t.w[2] = static_cast<float>(mul_rn(fy, 1 - fx));
  t.w[3] = static_cast<float>(mul_rn(fy, fx));
  return t;
}

}  // namespace gantry::warp_detail

// Bilinear resampling through a per-sample affine map (the general geometry of the
// augmentations). The taps of each output pixel (kernels/warp_taps.h) are found once and
// serve every channel; a tap of weight 0 is skipped, so an integer map (a flip, a whole-pixel
// shift, a quarter turn) costs one read per pixel and copies the values exactly.
#include <cstring>

#include "gantry/kernels/cpu/cpu_kernels.h"
#include "gantry/kernels/warp_taps.h"

namespace gantry::cpu {

template <class T>
void affine_warp_forward(const T* x, const float* theta, T* y, int64_t N, int64_t C, int64_t H,
                         int64_t W) {
  const int64_t P = H * W;
#pragma omp parallel for if (N * C * P > 16384)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j) {
        const warp_detail::Taps t = warp_detail::taps(theta + 6 * n, i, j, H, W);
        for (int64_t c = 0; c < C; ++c) {
          const T* xc = x + (n * C + c) * P;
          T acc = 0;
          for (int k = 0; k < 4; ++k)
            if (t.w[k] != 0.f) acc += xc[t.q[k]] * static_cast<T>(t.w[k]);
          y[(n * C + c) * P + i * W + j] = acc;
        }
      }
}

template <class T>
void affine_warp_backward(const T* dy, const float* theta, T* dx, int64_t N, int64_t C,
                          int64_t H, int64_t W) {
  const int64_t P = H * W;
  std::memset(dx, 0, sizeof(T) * static_cast<size_t>(N * C * P));
#pragma omp parallel for if (N * C * P > 16384)
  for (int64_t n = 0; n < N; ++n)  // samples are independent: no two threads share a dx plane
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j) {
        const warp_detail::Taps t = warp_detail::taps(theta + 6 * n, i, j, H, W);
        for (int64_t c = 0; c < C; ++c) {
          const T g = dy[(n * C + c) * P + i * W + j];
          T* dxc = dx + (n * C + c) * P;
          for (int k = 0; k < 4; ++k)
            if (t.w[k] != 0.f) dxc[t.q[k]] += g * static_cast<T>(t.w[k]);
        }
      }
}

#define GANTRY_INSTANTIATE(T)                                                                 \
  template void affine_warp_forward<T>(const T*, const float*, T*, int64_t, int64_t, int64_t, \
                                       int64_t);                                              \
  template void affine_warp_backward<T>(const T*, const float*, T*, int64_t, int64_t, int64_t, \
                                        int64_t);
GANTRY_INSTANTIATE(float)
GANTRY_INSTANTIATE(double)
#undef GANTRY_INSTANTIATE

}  // namespace gantry::cpu

// Average pooling (no padding). Forward: each output is the mean of its k x k window. Backward:
// each input element sums dy / k^2 over the windows that contain it (a gather, so no two
// threads write the same element).
#include <algorithm>

#include "gantry/kernels/cpu/cpu_kernels.h"

namespace gantry::cpu {

template <class T>
void avg_pool2d_forward(const T* x, T* y, int64_t NC, int64_t H, int64_t W, int k, int s) {
  const int64_t OH = (H - k) / s + 1, OW = (W - k) / s + 1;
  const T inv = T(1) / static_cast<T>(k * k);
#pragma omp parallel for if (NC * OH * OW > 65536)
  for (int64_t p = 0; p < NC; ++p) {
    const T* xp = x + p * H * W;
    T* yp = y + p * OH * OW;
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox) {
        T acc = 0;
        for (int i = 0; i < k; ++i)
          for (int j = 0; j < k; ++j) acc += xp[(oy * s + i) * W + ox * s + j];
        yp[oy * OW + ox] = acc * inv;
      }
  }
}

template <class T>
void avg_pool2d_backward(const T* dy, T* dx, int64_t NC, int64_t H, int64_t W, int k, int s) {
  const int64_t OH = (H - k) / s + 1, OW = (W - k) / s + 1;
  const T inv = T(1) / static_cast<T>(k * k);
#pragma omp parallel for if (NC * H * W > 65536)
  for (int64_t p = 0; p < NC; ++p) {
    const T* dyp = dy + p * OH * OW;
    T* dxp = dx + p * H * W;
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        // Windows oy with oy*s <= y < oy*s + k, likewise for x.
        const int64_t oy0 = y < k ? 0 : (y - k) / s + 1, oy1 = std::min<int64_t>(OH - 1, y / s);
        const int64_t ox0 = x < k ? 0 : (x - k) / s + 1, ox1 = std::min<int64_t>(OW - 1, x / s);
        T acc = 0;
        for (int64_t oy = oy0; oy <= oy1; ++oy)
          for (int64_t ox = ox0; ox <= ox1; ++ox) acc += dyp[oy * OW + ox];
        dxp[y * W + x] = acc * inv;
      }
  }
}

#define GANTRY_INSTANTIATE(T)                                                                  \
  template void avg_pool2d_forward<T>(const T*, T*, int64_t, int64_t, int64_t, int, int); \
  template void avg_pool2d_backward<T>(const T*, T*, int64_t, int64_t, int64_t, int, int);
GANTRY_INSTANTIATE(float)
GANTRY_INSTANTIATE(double)
#undef GANTRY_INSTANTIATE

}  // namespace gantry::cpu

// Per-sample spatial gather: every output position of sample n reads one input position of the
// same sample (all channels alike) or zero. Flips, integer translations, 90-degree rotations
// and cutout are all such index maps, so one op with one backward (the scatter-add through the
// same map) makes them all differentiable.
#include <cstring>

#include "gantry/kernels/cpu/cpu_kernels.h"

namespace gantry::cpu {

template <class T>
void spatial_gather_forward(const T* x, const float* idx, T* y, int64_t N, int64_t C,
                            int64_t P_in, int64_t P_out) {
#pragma omp parallel for if (N * C * P_out > 65536)
  for (int64_t n = 0; n < N; ++n) {
    const float* in = idx + n * P_out;
    for (int64_t c = 0; c < C; ++c) {
      const T* xc = x + (n * C + c) * P_in;
      T* yc = y + (n * C + c) * P_out;
      for (int64_t p = 0; p < P_out; ++p) {
        const int64_t q = static_cast<int64_t>(in[p]);
        yc[p] = q >= 0 ? xc[q] : T(0);
      }
    }
  }
}

template <class T>
void spatial_gather_backward(const T* dy, const float* idx, T* dx, int64_t N, int64_t C,
                             int64_t P_in, int64_t P_out) {
  std::memset(dx, 0, sizeof(T) * static_cast<size_t>(N * C * P_in));
#pragma omp parallel for if (N * C * P_out > 65536)
  for (int64_t n = 0; n < N; ++n) {  // samples are independent: no two threads share a dx row
    const float* in = idx + n * P_out;
    for (int64_t c = 0; c < C; ++c) {
      const T* dyc = dy + (n * C + c) * P_out;
      T* dxc = dx + (n * C + c) * P_in;
      for (int64_t p = 0; p < P_out; ++p) {
        const int64_t q = static_cast<int64_t>(in[p]);
        if (q >= 0) dxc[q] += dyc[p];
      }
    }
  }
}

#define GANTRY_INSTANTIATE(T)                                                                \
  template void spatial_gather_forward<T>(const T*, const float*, T*, int64_t, int64_t,    \
                                          int64_t, int64_t);                               \
  template void spatial_gather_backward<T>(const T*, const float*, T*, int64_t, int64_t,   \
                                           int64_t, int64_t);
GANTRY_INSTANTIATE(float)
GANTRY_INSTANTIATE(double)
#undef GANTRY_INSTANTIATE

}  // namespace gantry::cpu

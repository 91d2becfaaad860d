// Reductions that undo broadcasting (sum_to_shape) and the broadcast itself (broadcast_to).
// Sums accumulate in double so a float sum over a large batch does not drift.
#include <cstddef>
#include <vector>

#include "gantry/kernels/cpu/cpu_kernels.h"

namespace gantry::cpu {

namespace {
// Strides of `shape` seen from an index space `full` (0 along dims where shape is 1).
void broadcast_strides(const int64_t* shape, const int64_t* full, int ndim, int64_t* strides) {
  int64_t acc = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    strides[d] = (shape[d] == 1 && full[d] != 1) ? 0 : acc;
    acc *= shape[d];
  }
}
}  // namespace

template <class T>
void sum_to_shape(const T* x, const int64_t* in_shape, T* out, const int64_t* out_shape,
                  int ndim) {
  int64_t n = 1, m = 1;
  for (int d = 0; d < ndim; ++d) {
    n *= in_shape[d];
    m *= out_shape[d];
  }
  if (m == 1) {  // a full reduction: split over threads, combine the partial sums
    double total = 0;
#pragma omp parallel for reduction(+ : total) if (n >= (1 << 16))
    for (int64_t i = 0; i < n; ++i) total += static_cast<double>(x[i]);
    out[0] = static_cast<T>(total);
    return;
  }
  std::vector<double> acc(static_cast<size_t>(m), 0.0);
  int64_t so[8];
  broadcast_strides(out_shape, in_shape, ndim, so);
  const int64_t inner = ndim ? in_shape[ndim - 1] : 1;
  const int64_t rows = inner ? n / inner : 0;
  const int64_t so_in = ndim ? so[ndim - 1] : 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, o = 0;
    for (int d = ndim - 2; d >= 0; --d) {
      o += (rem % in_shape[d]) * so[d];
      rem /= in_shape[d];
    }
    const T* row = x + r * inner;
    if (so_in == 0) {  // the innermost dim is reduced: one sum per row
      double s = 0;
      for (int64_t j = 0; j < inner; ++j) s += row[j];
      acc[o] += s;
    } else {
      double* a = acc.data() + o;
      for (int64_t j = 0; j < inner; ++j) a[j] += row[j];
    }
  }
  for (int64_t i = 0; i < m; ++i) out[i] = static_cast<T>(acc[i]);
}

template <class T>
void broadcast_to(const T* x, const int64_t* x_shape, T* out, const int64_t* out_shape,
                  int ndim) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= out_shape[d];
  int64_t sx[8];
  broadcast_strides(x_shape, out_shape, ndim, sx);
  const int64_t inner = ndim ? out_shape[ndim - 1] : 1;
  const int64_t rows = inner ? n / inner : 0;
  const int64_t sx_in = ndim ? sx[ndim - 1] : 0;
#pragma omp parallel for if (n >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, o = 0;
    for (int d = ndim - 2; d >= 0; --d) {
      o += (rem % out_shape[d]) * sx[d];
      rem /= out_shape[d];
    }
    T* dst = out + r * inner;
    for (int64_t j = 0; j < inner; ++j) dst[j] = x[o + j * sx_in];
  }
}

template void sum_to_shape<float>(const float*, const int64_t*, float*, const int64_t*, int);
template void sum_to_shape<double>(const double*, const int64_t*, double*, const int64_t*, int);
template void broadcast_to<float>(const float*, const int64_t*, float*, const int64_t*, int);
template void broadcast_to<double>(const double*, const int64_t*, double*, const int64_t*, int);

}  // namespace gantry::cpu

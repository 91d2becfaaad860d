// Elementwise kernels. Loops are plain so the compiler vectorizes them; large ones split over
// OpenMP threads (below kParallelMin elements a thread team costs more than it saves).
//
// GCC keeps a loop with a float comparison in a select (relu's backward, leaky relu, clamp)
// scalar under its default -ftrapping-math ("control flow in loop"), which measured 10-25x
// slower than the vectorized loop on the DCGAN's activations. No gantry kernel relies on
// floating-point traps, so this file is compiled without trapping math (results unchanged).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <algorithm>
#include <cmath>

#include "gantry/kernels/cpu/cpu_kernels.h"

namespace gantry::cpu {

namespace {
constexpr int64_t kParallelMin = 1 << 15;

template <class T>
T sigmoid_scalar(T x) {
  // Split by sign so exp never overflows.
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}
}  // namespace

template <class T>
void unary_forward(Unary op, const T* x, T* y, int64_t n) {
#define GANTRY_LOOP(expr)                                                  \
  _Pragma("omp parallel for simd if (n >= kParallelMin)")                  \
  for (int64_t i = 0; i < n; ++i) { const T v = x[i]; y[i] = (expr); }     \
  break;
  switch (op) {
    case Unary::Neg: GANTRY_LOOP(-v)
    case Unary::Square: GANTRY_LOOP(v * v)
    case Unary::Sqrt: GANTRY_LOOP(std::sqrt(v))
    case Unary::Exp: GANTRY_LOOP(std::exp(v))
    case Unary::Log: GANTRY_LOOP(std::log(v))
    case Unary::Abs: GANTRY_LOOP(std::abs(v))
    case Unary::Relu: GANTRY_LOOP(v > T(0) ? v : T(0))
    case Unary::Tanh: GANTRY_LOOP(std::tanh(v))
    case Unary::Sigmoid: GANTRY_LOOP(sigmoid_scalar(v))
  }
#undef GANTRY_LOOP
}

template <class T>
void unary_backward(Unary op, const T* x, const T* y, const T* dy, T* dx, int64_t n) {
#define GANTRY_LOOP(expr)                                                          \
  _Pragma("omp parallel for simd if (n >= kParallelMin)")                          \
  for (int64_t i = 0; i < n; ++i) { dx[i] = dy[i] * (expr); }                     \
  break;
  switch (op) {
    case Unary::Neg: GANTRY_LOOP(T(-1))
    case Unary::Square: GANTRY_LOOP(T(2) * x[i])
    case Unary::Sqrt: GANTRY_LOOP(T(0.5) / y[i])
    case Unary::Exp: GANTRY_LOOP(y[i])
    case Unary::Log: GANTRY_LOOP(T(1) / x[i])
    case Unary::Abs: GANTRY_LOOP(x[i] > T(0) ? T(1) : (x[i] < T(0) ? T(-1) : T(0)))
    case Unary::Relu: GANTRY_LOOP(x[i] > T(0) ? T(1) : T(0))
    case Unary::Tanh: GANTRY_LOOP(T(1) - y[i] * y[i])
    case Unary::Sigmoid: GANTRY_LOOP(y[i] * (T(1) - y[i]))
  }
#undef GANTRY_LOOP
}

template <class T>
void leaky_relu_forward(const T* x, T* y, int64_t n, T slope) {
#pragma omp parallel for simd if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : slope * x[i];
}

template <class T>
void leaky_relu_backward(const T* x, const T* dy, T* dx, int64_t n, T slope) {
#pragma omp parallel for simd if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] = x[i] > T(0) ? dy[i] : slope * dy[i];
}

template <class T>
void clamp_forward(const T* x, T* y, int64_t n, T lo, T hi) {
#pragma omp parallel for simd if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], lo), hi);
}

template <class T>
void clamp_backward(const T* x, const T* dy, T* dx, int64_t n, T lo, T hi) {
#pragma omp parallel for simd if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] = (x[i] >= lo && x[i] <= hi) ? dy[i] : T(0);
}

template <class T>
void affine(const T* x, T* y, int64_t n, T a, T b) {
#pragma omp parallel for simd if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = a * x[i] + b;
}

namespace {
template <class T>
inline T apply(Binary op, T a, T b) {
  switch (op) {
    case Binary::Add: return a + b;
    case Binary::Sub: return a - b;
    case Binary::Mul: return a * b;
    case Binary::Div: return a / b;
  }
  return T(0);
}

template <class T, class F>
void same_shape_loop(const T* a, const T* b, T* out, int64_t n, F f) {
#pragma omp parallel for simd if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
}
}  // namespace

template <class T>
void binary_broadcast(Binary op, const T* a, const int64_t* a_shape, const T* b,
                      const int64_t* b_shape, T* out, const int64_t* out_shape, int ndim) {
  int64_t n = 1;
  bool same = true;
  for (int d = 0; d < ndim; ++d) {
    n *= out_shape[d];
    same = same && a_shape[d] == out_shape[d] && b_shape[d] == out_shape[d];
  }
  if (same) {  // the common case gets a tight, vectorizable loop
    switch (op) {
      case Binary::Add: return same_shape_loop(a, b, out, n, [](T p, T q) { return p + q; });
      case Binary::Sub: return same_shape_loop(a, b, out, n, [](T p, T q) { return p - q; });
      case Binary::Mul: return same_shape_loop(a, b, out, n, [](T p, T q) { return p * q; });
      case Binary::Div: return same_shape_loop(a, b, out, n, [](T p, T q) { return p / q; });
    }
  }
  // General case: strides of a and b over the output's index space (0 where broadcast).
  int64_t sa[8], sb[8];
  int64_t acc_a = 1, acc_b = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    sa[d] = a_shape[d] == 1 ? 0 : acc_a;
    sb[d] = b_shape[d] == 1 ? 0 : acc_b;
    acc_a *= a_shape[d];
    acc_b *= b_shape[d];
  }
  // Treat the innermost dim as a contiguous row and walk the outer dims with an odometer.
  const int64_t inner = ndim ? out_shape[ndim - 1] : 1;
  const int64_t rows = inner ? n / inner : 0;
  const int64_t ia_in = ndim ? sa[ndim - 1] : 0, ib_in = ndim ? sb[ndim - 1] : 0;
#pragma omp parallel for if (n >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, oa = 0, ob = 0;
    for (int d = ndim - 2; d >= 0; --d) {
      const int64_t i = rem % out_shape[d];
      rem /= out_shape[d];
      oa += i * sa[d];
      ob += i * sb[d];
    }
    T* o = out + r * inner;
    for (int64_t j = 0; j < inner; ++j) o[j] = apply(op, a[oa + j * ia_in], b[ob + j * ib_in]);
  }
}

#define GANTRY_INSTANTIATE(T)                                                                 \
  template void unary_forward<T>(Unary, const T*, T*, int64_t);                               \
  template void unary_backward<T>(Unary, const T*, const T*, const T*, T*, int64_t);          \
  template void leaky_relu_forward<T>(const T*, T*, int64_t, T);                              \
  template void leaky_relu_backward<T>(const T*, const T*, T*, int64_t, T);                   \
  template void clamp_forward<T>(const T*, T*, int64_t, T, T);                                \
  template void clamp_backward<T>(const T*, const T*, T*, int64_t, T, T);                     \
  template void affine<T>(const T*, T*, int64_t, T, T);                                       \
  template void binary_broadcast<T>(Binary, const T*, const int64_t*, const T*, const int64_t*, \
                                    T*, const int64_t*, int);
GANTRY_INSTANTIATE(float)
GANTRY_INSTANTIATE(double)
#undef GANTRY_INSTANTIATE

}  // namespace gantry::cpu

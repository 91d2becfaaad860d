// The AVX-512 build of the Eigen GEMM (see gemm.cpp, which picks it at run time).
//
// The library is compiled for x86-64-v3 (AVX2 + FMA) so that it runs on any AVX2 machine. On
// CPUs with two 512-bit FMA units (Intel Xeon: Skylake-SP and later) Eigen's AVX-512 product
// kernel is ~1.8x faster than its AVX2 one, so this file compiles the same product with AVX-512
// enabled for its functions only (GCC's target pragma), and gemm.cpp calls it when the CPU has
// AVX-512. Two precautions keep the AVX-512 code from leaking into the AVX2 paths:
//   - Eigen's namespace is renamed here, so its templates instantiated in this file have their
//     own symbols and can never be merged with the AVX2 instantiations of gemm.cpp;
//   - the file defines nothing outside that namespace but one function in gantry::cpu::detail.
// The ISA macros are defined by hand because GCC's target pragma does not define them, and
// Eigen selects its packet types by those macros.
#include <cstdint>
// Eigen's standard-library dependencies come first, compiled for the library's own ISA, so no
// inline std:: function is emitted here with AVX-512 code.
#include <algorithm>
#include <cassert>
#include <cerrno>
#include <climits>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iosfwd>
#include <limits>
#include <new>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX512F__)
#define GANTRY_GEMM_AVX512 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#define __AVX512F__ 1
#define __AVX512DQ__ 1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#elif defined(__AVX512F__)
#define GANTRY_GEMM_AVX512 1  // the whole build already targets AVX-512
#endif

#ifdef GANTRY_GEMM_AVX512
// GCC 12's AVX-512 intrinsics headers trip -Wmaybe-uninitialized inside Eigen (a known false
// positive of the _mm512_undefined_* idiom).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#define Eigen gantry_eigen_avx512
#include <Eigen/Core>

namespace gantry::cpu::detail {

bool gemm_avx512_compiled() { return true; }

template <class T>
void gemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                 const T* A, const T* B, T beta, T* C) {
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using CMap = Eigen::Map<const Mat>;
  Eigen::Map<Mat> c(C, M, N);
  if (beta == T(0)) c.setZero();
  else if (beta != T(1)) c *= beta;
  if (K == 0 || M == 0 || N == 0) return;
  if (!trans_a && !trans_b) c.noalias() += alpha * CMap(A, M, K) * CMap(B, K, N);
  else if (trans_a && !trans_b) c.noalias() += alpha * CMap(A, K, M).transpose() * CMap(B, K, N);
  else if (!trans_a && trans_b) c.noalias() += alpha * CMap(A, M, K) * CMap(B, N, K).transpose();
  else c.noalias() += alpha * CMap(A, K, M).transpose() * CMap(B, N, K).transpose();
}

template void gemm_avx512<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*,
                                 const float*, float, float*);
template void gemm_avx512<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*,
                                  const double*, double, double*);

}  // namespace gantry::cpu::detail

#else  // not x86-64 GCC: no AVX-512 build; gemm.cpp checks gemm_avx512_compiled() first.

#include <stdexcept>

namespace gantry::cpu::detail {
bool gemm_avx512_compiled() { return false; }
template <class T>
void gemm_avx512(bool, bool, int64_t, int64_t, int64_t, T, const T*, const T*, T, T*) {
  throw std::logic_error("gemm_avx512: this build has no AVX-512 GEMM (not x86-64 GCC)");
}
template void gemm_avx512<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*,
                                 const float*, float, float*);
template void gemm_avx512<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*,
                                  const double*, double, double*);
}  // namespace gantry::cpu::detail

#endif

// GEMM through Eigen: row-major maps over the caller's buffers (no copies). Eigen's product
// kernel is cache-blocked and vectorized, and splits over OpenMP threads for large products.
//
// Two builds of the same product: the library's own (x86-64-v3: AVX2 + FMA) and an AVX-512 one
// (gemm_avx512.cpp). The AVX-512 one runs where the CPU has AVX-512 and full-width 512-bit FMA
// units: Intel (measured ~1.8x the AVX2 build on a Xeon) and AMD from Zen 5 (family 1Ah;
// SGEMM 2048^3 310 vs 182 GFLOP/s on an EPYC, 2 threads), not Zen 4 (family 19h), whose
// AVX-512 is double-pumped and where Eigen's AVX-512 path measured slower than its AVX2 one.
// A rule on the CPU's identity, not a timing at start-up: the choice (and so the rounding of
// every product) must not change from one run to the next on the same machine.
// GANTRY_CPU_GEMM=avx2|avx512|auto overrides the choice (read once).
#include <Eigen/Core>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "gantry/kernels/cpu/cpu_kernels.h"

namespace gantry::cpu {

namespace detail {
unsigned x86_family(uint32_t cpuid1_eax) {
  const unsigned base = (cpuid1_eax >> 8) & 0xf, extended = (cpuid1_eax >> 20) & 0xff;
  return base == 0xf ? base + extended : base;
}
bool avx512_pays(bool intel, bool amd, unsigned family) { return intel || (amd && family >= 0x1a); }
bool gemm_avx512_compiled();
template <class T>
void gemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                 const T* A, const T* B, T beta, T* C);
}  // namespace detail

namespace {

bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

bool avx512_pays_here() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  return detail::avx512_pays(__builtin_cpu_is("intel"), __builtin_cpu_is("amd"),
                             detail::x86_family(eax));
#else
  return false;
#endif
}

bool decide_avx512() {
  const bool can = detail::gemm_avx512_compiled() && cpu_has_avx512();
  const char* env = std::getenv("GANTRY_CPU_GEMM");
  const std::string want = env ? env : "auto";
  if (want == "avx2") return false;
  if (want == "avx512") {
    if (!can)
      throw std::runtime_error("GANTRY_CPU_GEMM=avx512: this CPU (or build) has no AVX-512; "
                               "use GANTRY_CPU_GEMM=avx2 or auto");
    return true;
  }
  if (want != "auto" && !want.empty())
    throw std::invalid_argument("GANTRY_CPU_GEMM must be avx2, avx512 or auto, got '" + want + "'");
  return can && avx512_pays_here();
}

bool use_avx512() {
  static const bool on = decide_avx512();
  return on;
}

}  // namespace

const char* gemm_isa() { return use_avx512() ? "Eigen AVX-512" : "Eigen AVX2"; }

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          const T* B, T beta, T* C) {
  if (use_avx512()) return detail::gemm_avx512<T>(trans_a, trans_b, M, N, K, alpha, A, B, beta, C);
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using CMap = Eigen::Map<const Mat>;
  Eigen::Map<Mat> c(C, M, N);
  if (beta == T(0)) c.setZero();
  else if (beta != T(1)) c *= beta;
  if (K == 0 || M == 0 || N == 0) return;
  // A stored [K, M] when transposed; likewise B stored [N, K].
  if (!trans_a && !trans_b) c.noalias() += alpha * CMap(A, M, K) * CMap(B, K, N);
  else if (trans_a && !trans_b) c.noalias() += alpha * CMap(A, K, M).transpose() * CMap(B, K, N);
  else if (!trans_a && trans_b) c.noalias() += alpha * CMap(A, M, K) * CMap(B, N, K).transpose();
  else c.noalias() += alpha * CMap(A, K, M).transpose() * CMap(B, N, K).transpose();
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*,
                          const float*, float, float*);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*,
                           const double*, double, double*);

}  // namespace gantry::cpu

// GEMM through Eigen: row-major maps over the caller's buffers (no copies). Eigen's product
// kernel is cache-blocked and vectorized, and splits over OpenMP threads for large products.
#include <Eigen/Core>

#include "gantry/kernels/cpu/cpu_kernels.h"

namespace gantry::cpu {

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          const T* B, T beta, T* C) {
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

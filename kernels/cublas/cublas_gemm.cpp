// GEMM through cuBLAS. cuBLAS is column-major; gantry is row-major. A row-major [M,N] matrix
// has the same bytes as a column-major [N,M] one (its transpose), so
//   C = op(A) op(B)  (row-major)   <=>   C^T = op(B)^T op(A)^T  (column-major)
// and we call cuBLAS with the operands swapped (B first), m = N, n = M, and the same
// transpose flags: no data moves.
//
// TF32: off by default (CUBLAS_COMPUTE_32F, full fp32), as PyTorch's
// torch.backends.cuda.matmul.allow_tf32 = False; set_gemm_allow_tf32(true) selects
// CUBLAS_COMPUTE_32F_FAST_TF32 (tensor cores, 10-bit mantissa inputs, fp32 accumulation).
#include "gantry/core/cuda/internal.h"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda::library {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, const float* B, float beta, float* C) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (beta == 0.f) fill(C, M * N, 0.f);
    else affine(C, C, M * N, beta, 0.f);
    return;
  }
  // Leading dimensions of the stored (row-major) matrices = their row lengths.
  const int lda = static_cast<int>(trans_a ? M : K);  // A stored [K,M] or [M,K]
  const int ldb = static_cast<int>(trans_b ? K : N);  // B stored [N,K] or [K,N]
  const int ldc = static_cast<int>(N);
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasComputeType_t compute =
      gemm_allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  // With beta == 0 cuBLAS does not read C (it may hold anything, NaN included).
  GANTRY_CUBLAS_CHECK(cublasGemmEx(cublas_handle(), op_b, op_a, static_cast<int>(N),
                                   static_cast<int>(M), static_cast<int>(K), &alpha, B, CUDA_R_32F,
                                   ldb, A, CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc, compute,
                                   CUBLAS_GEMM_DEFAULT));
}

}  // namespace gantry::cuda::library

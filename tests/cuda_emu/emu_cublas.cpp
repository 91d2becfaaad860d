// A model of cuBLAS for the CUDA emulator (GANTRY_CUDA_EMU): cublasGemmEx as the cuBLAS
// documentation defines it, so kernels/cublas/cublas_gemm.cpp (unchanged) is tested for the
// way it calls the library: column-major operands, leading dimensions, transpose flags, the
// host-pointer alpha and beta, "C is not read when beta is 0", the TF32 compute type, and the
// stream order. It says nothing about the real library's speed or its rounding: the model sums
// in double and rounds once.
//
// What it checks, as cuBLAS does (CUBLAS_STATUS_INVALID_VALUE): m, n, k >= 0 and
// lda >= max(1, rows of the stored A), likewise ldb and ldc; the data types are CUDA_R_32F
// with a 32F compute type (else CUBLAS_STATUS_NOT_SUPPORTED). Where cuBLAS would read or
// write outside device memory (a host pointer, a leading dimension larger than the buffer),
// the model ends the process with the emulator's fault message, as compute-sanitizer reports
// an illegal address.
#include <cublas_v2.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tf32.h"

struct gemu_cublas {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;  // a user workspace (cublasSetWorkspace), else the default one
  std::size_t workspace_bytes = 0;
};

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new gemu_cublas();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  // The reference: cublasSetStream "unconditionally resets the cuBLAS library workspace back
  // to the default workspace pool".
  handle->workspace = nullptr;
  handle->workspace_bytes = 0;
  return CUBLAS_STATUS_SUCCESS;
}

// A user-owned device buffer used by every later call; its pointer must be aligned to at
// least 256 bytes (CUBLAS_STATUS_INVALID_VALUE otherwise). The model checks at each GEMM that
// it still lies inside one live device allocation (the caller must keep it alive).
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace,
                                  std::size_t workspaceSizeInBytes) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (workspaceSizeInBytes > 0 &&
      (!workspace || reinterpret_cast<std::uintptr_t>(workspace) % 256 != 0))
    return CUBLAS_STATUS_INVALID_VALUE;
  handle->workspace = workspace;
  handle->workspace_bytes = workspaceSizeInBytes;
  return CUBLAS_STATUS_SUCCESS;
}

namespace {

// The elements a column-major rows x cols matrix with leading dimension ld spans.
std::size_t span(int rows, int cols, int ld) {
  if (rows == 0 || cols == 0) return 0;
  return static_cast<std::size_t>(cols - 1) * ld + rows;
}

void check_operand(const char* name, const void* p, std::size_t elements) {
  if (elements == 0) return;
  if (!gemu::device_range(p, elements * sizeof(float))) {
    char msg[200];
    std::snprintf(msg, sizeof msg,
                  "%s (%p, %zu floats as its dimensions and leading dimension span them) is not "
                  "inside one device allocation",
                  name, p, elements);
    gemu::library_fault("cublasGemmEx", msg);
  }
}

}  // namespace

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;  // OP_C is OP_T for reals
  // The stored shapes (column-major): A is m x k, or k x m when transposed; B is k x n or n x k.
  const int a_rows = ta ? k : m, a_cols = ta ? m : k;
  const int b_rows = tb ? n : k, b_cols = tb ? k : n;
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) ||
      ldc < std::max(1, m) || !alpha || !beta)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (Atype != CUDA_R_32F || Btype != CUDA_R_32F || Ctype != CUDA_R_32F ||
      (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_PEDANTIC &&
       computeType != CUBLAS_COMPUTE_32F_FAST_TF32))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  // CUBLAS_POINTER_MODE_HOST (the default): the scalars are read now, at the call.
  const float a_scale = *static_cast<const float*>(alpha);
  const float b_scale = *static_cast<const float*>(beta);
  if (k > 0) {
    check_operand("A", A, span(a_rows, a_cols, lda));
    check_operand("B", B, span(b_rows, b_cols, ldb));
  }
  check_operand("C", C, span(m, n, ldc));
  if (handle->workspace_bytes > 0 && !gemu::device_range(handle->workspace, handle->workspace_bytes))
    gemu::library_fault("cublasGemmEx", "the workspace given to cublasSetWorkspace is not (or no "
                                        "longer) inside one device allocation");
  const bool tf32 = computeType == CUBLAS_COMPUTE_32F_FAST_TF32;
  const float* a = static_cast<const float*>(A);
  const float* b = static_cast<const float*>(B);
  float* c = static_cast<float*>(C);
  gemu::enqueue_library_work("cublasGemmEx", [=] {
    // op(A)(i, l) and op(B)(l, j) of the column-major operands.
    auto a_at = [&](int i, int l) {
      const float v = ta ? a[l + static_cast<std::size_t>(i) * lda] : a[i + static_cast<std::size_t>(l) * lda];
      return tf32 ? gemu::round_to_tf32(v) : v;
    };
    auto b_at = [&](int l, int j) {
      const float v = tb ? b[j + static_cast<std::size_t>(l) * ldb] : b[l + static_cast<std::size_t>(j) * ldb];
      return tf32 ? gemu::round_to_tf32(v) : v;
    };
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n; ++j) {
      std::vector<double> bj(static_cast<std::size_t>(k));
      for (int l = 0; l < k; ++l) bj[l] = b_at(l, j);
      for (int i = 0; i < m; ++i) {
        double sum = 0;
        for (int l = 0; l < k; ++l) sum += static_cast<double>(a_at(i, l)) * bj[l];
        float& out = c[i + static_cast<std::size_t>(j) * ldc];
        // beta == 0: C is not read (it may hold NaN), as the cuBLAS documentation states.
        out = static_cast<float>(a_scale * sum + (b_scale == 0.f ? 0.0 : double(b_scale) * out));
      }
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

// Self-test of the emulator's models of cuDNN and cuBLAS (emu_cudnn.cpp, emu_cublas.cpp): each
// documented behaviour the models claim, on cases small enough to compute by hand, so the
// models are pinned to the documentation independently of gantry's code that calls them.
//
//   emu_library_selftest              the checks below; exit 0 when all hold
//   emu_library_selftest host_pointer a host pointer given to cublasGemmEx: must end the
//                                     process naming the call and the operand
#include <cublas_v2.h>
#include <cudnn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "tf32.h"

namespace {

int failures = 0;
void expect(bool ok, const char* what) {
  std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
  failures += !ok;
}

float* device_copy(const std::vector<float>& h) {
  float* d = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&d), h.size() * sizeof(float));
  cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice);
  return d;
}
std::vector<float> host_copy(const float* d, size_t n) {  // synchronizes (a blocking copy)
  std::vector<float> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost);
  return h;
}
bool near(const std::vector<float>& a, const std::vector<float>& b, float tol = 1e-6f) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(std::fabs(a[i] - b[i]) <= tol)) return false;
  return true;
}
const float kNaN = std::nanf("");

void check_tf32() {
  const float one_and_half_ulp = 1.f + std::ldexp(1.f, -11);  // halfway between two TF32 values
  expect(gemu::round_to_tf32(one_and_half_ulp) == 1.f + std::ldexp(1.f, -10),
         "TF32: a tie rounds away from zero (1 + 2^-11 -> 1 + 2^-10)");
  expect(gemu::round_to_tf32(1.f + std::ldexp(1.f, -12)) == 1.f,
         "TF32: below the tie rounds down (1 + 2^-12 -> 1)");
  expect(gemu::round_to_tf32(-one_and_half_ulp) == -(1.f + std::ldexp(1.f, -10)),
         "TF32: the sign is kept");
}

void check_gemm() {
  cublasHandle_t h = nullptr;
  expect(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
  // Column-major A (2x3) = [1 2 3; 4 5 6] stored by columns, B (3x2) = [1 0; 0 1; 1 1].
  float* A = device_copy({1, 4, 2, 5, 3, 6});
  float* B = device_copy({1, 0, 1, 0, 1, 1});
  float* C = device_copy({kNaN, kNaN, kNaN, kNaN});
  const float one = 1.f, zero = 0.f, two = 2.f;
  expect(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, A, CUDA_R_32F, 2, B, CUDA_R_32F,
                      3, &zero, C, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) ==
             CUBLAS_STATUS_SUCCESS,
         "cublasGemmEx NN");
  // A B = [4 5; 10 11], columns: (4, 10), (5, 11); C held NaN and beta = 0 does not read it.
  expect(near(host_copy(C, 4), {4, 10, 5, 11}), "C = A B column-major, NaN in C ignored with beta 0");
  // C = 2 * A^T' ... : op(A) = A^T of the 3x2 matrix stored [1 2 3; 4 5 6]^T, beta = 1 adds.
  float* At = device_copy({1, 2, 3, 4, 5, 6});  // 3x2 column-major = A^T
  cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, 2, 2, 3, &two, At, CUDA_R_32F, 3, B, CUDA_R_32F, 3,
               &one, C, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  expect(near(host_copy(C, 4), {12, 30, 15, 33}), "op(A) = A^T, alpha 2, beta 1 accumulates");
  expect(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, A, CUDA_R_32F, 1, B, CUDA_R_32F,
                      3, &zero, C, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) ==
             CUBLAS_STATUS_INVALID_VALUE,
         "lda < m is CUBLAS_STATUS_INVALID_VALUE");
  // The work runs in stream order: before a synchronization C still holds the old values.
  float* C2 = device_copy({-1, -1, -1, -1});
  cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, A, CUDA_R_32F, 2, B, CUDA_R_32F, 3,
               &zero, C2, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  float before = 0;
  std::memcpy(&before, C2, sizeof before);  // the emulator's device memory is host memory
  expect(before == -1.f, "the GEMM is queued on the stream, not run at the call");
  expect(near(host_copy(C2, 4), {4, 10, 5, 11}), "and has run after the synchronization");
  // TF32: (1 + 2^-11) * 1 is 1 + 2^-10 with CUBLAS_COMPUTE_32F_FAST_TF32, exact without.
  float* a1 = device_copy({1.f + std::ldexp(1.f, -11)});
  float* b1 = device_copy({1.f});
  float* c1 = device_copy({0.f});
  cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a1, CUDA_R_32F, 1, b1, CUDA_R_32F, 1,
               &zero, c1, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
  expect(host_copy(c1, 1)[0] == 1.f + std::ldexp(1.f, -10), "FAST_TF32 rounds the inputs");
  cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a1, CUDA_R_32F, 1, b1, CUDA_R_32F, 1,
               &zero, c1, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  expect(host_copy(c1, 1)[0] == 1.f + std::ldexp(1.f, -11), "COMPUTE_32F keeps fp32 inputs");
  cublasDestroy(h);
}

struct Conv {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t c = nullptr;
  Conv(cudnnConvolutionMode_t mode, int y_w) {
    cudnnCreateTensorDescriptor(&x);
    cudnnCreateTensorDescriptor(&y);
    cudnnCreateFilterDescriptor(&w);
    cudnnCreateConvolutionDescriptor(&c);
    cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 3, 3);
    cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 1, 1, 2, 2);
    cudnnSetConvolution2dDescriptor(c, 0, 0, 1, 1, 1, 1, mode, CUDNN_DATA_FLOAT);
    cudnnSetConvolutionMathType(c, CUDNN_FMA_MATH);
    cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 2, y_w);
  }
  ~Conv() {
    cudnnDestroyTensorDescriptor(x);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyConvolutionDescriptor(c);
  }
};

void check_conv() {
  cudnnHandle_t h = nullptr;
  expect(cudnnCreate(&h) == CUDNN_STATUS_SUCCESS, "cudnnCreate");
  // x = [1 2 3; 4 5 6; 7 8 9], w = [1 0; 0 2]
  float* x = device_copy({1, 2, 3, 4, 5, 6, 7, 8, 9});
  float* w = device_copy({1, 0, 0, 2});
  float* y = device_copy({kNaN, kNaN, kNaN, kNaN});
  const float one = 1.f, zero = 0.f;
  {
    Conv d(CUDNN_CROSS_CORRELATION, 2);
    expect(cudnnConvolutionForward(h, &one, d.x, x, d.w, w, d.c,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &zero,
                                   d.y, y) == CUDNN_STATUS_SUCCESS,
           "cudnnConvolutionForward (implicit GEMM, no workspace)");
    // cross-correlation: y(i,j) = x(i,j) + 2 x(i+1,j+1) = [11 14; 20 23]
    expect(near(host_copy(y, 4), {11, 14, 20, 23}), "cross-correlation by hand, NaN y ignored");
  }
  {
    Conv d(CUDNN_CONVOLUTION, 2);  // the kernel flipped: y(i,j) = 2 x(i,j) + x(i+1,j+1)
    cudnnConvolutionForward(h, &one, d.x, x, d.w, w, d.c, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                            nullptr, 0, &zero, d.y, y);
    expect(near(host_copy(y, 4), {7, 10, 16, 19}), "CUDNN_CONVOLUTION flips the kernel");
  }
  {
    Conv bad(CUDNN_CROSS_CORRELATION, 3);  // the output is 2x2, not 2x3
    expect(cudnnConvolutionForward(h, &one, bad.x, x, bad.w, w, bad.c,
                                   CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &zero,
                                   bad.y, y) == CUDNN_STATUS_BAD_PARAM,
           "an output descriptor of the wrong shape is CUDNN_STATUS_BAD_PARAM");
  }
  Conv d(CUDNN_CROSS_CORRELATION, 2);
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int n = 0;
  cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.c, d.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                         &n, perf);
  expect(n == CUDNN_CONVOLUTION_FWD_ALGO_COUNT && perf[0].algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM &&
             perf[0].memory == 9 * sizeof(float) && perf[1].memory == 0 &&
             perf[2].status == CUDNN_STATUS_NOT_SUPPORTED,
         "heuristics: GEMM (workspace = a copy of x) first, then implicit GEMM, the rest unsupported");
  // Find with a workspace too small for GEMM: GEMM fails with ALLOC_FAILED, implicit GEMM runs.
  float* ws = device_copy(std::vector<float>(16, 0.f));
  cudnnFindConvolutionForwardAlgorithmEx(h, d.x, x, d.w, w, d.c, d.y, y, 8, &n, perf, ws,
                                         4 * sizeof(float));
  expect(perf[0].algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM &&
             perf[0].status == CUDNN_STATUS_SUCCESS && perf[1].status == CUDNN_STATUS_ALLOC_FAILED,
         "Find*Ex: an insufficient workspace is ALLOC_FAILED, the working algorithms come first");
  const std::vector<float> after_find = host_copy(y, 4);
  expect(std::isnan(after_find[0]) && std::isnan(after_find[3]),
         "Find*Ex leaves its output with arbitrary values (NaN in the model)");
  expect(cudnnConvolutionForward(h, &one, d.x, x, d.w, w, d.c, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, ws,
                                 4 * sizeof(float), &zero, d.y, y) == CUDNN_STATUS_BAD_PARAM,
         "running GEMM with a short workspace is CUDNN_STATUS_BAD_PARAM");
  expect(cudnnConvolutionForward(h, &one, d.x, x, d.w, w, d.c, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, ws,
                                 16 * sizeof(float), &zero, d.y, y) == CUDNN_STATUS_SUCCESS &&
             near(host_copy(y, 4), {11, 14, 20, 23}) && host_copy(ws, 9)[8] == 9.f,
         "GEMM with its workspace: the same answer, x staged in the workspace");
  expect(cudnnConvolutionForward(h, &one, d.x, x + 1, d.w, w, d.c, CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
                                 ws, 16 * sizeof(float), &zero, d.y, y) ==
             CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER,
         "GEMM on a 4-byte aligned view is BAD_PARAM_MISALIGNED_POINTER");
  // Backward data: dx = sum over taps of dy * w; dy = [1 0; 0 0] puts w at the top left.
  float* dy = device_copy({1, 0, 0, 0});
  float* dx = device_copy(std::vector<float>(9, kNaN));
  cudnnConvolutionBackwardData(h, &one, d.w, w, d.y, dy, d.c, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
                               nullptr, 0, &zero, d.x, dx);
  expect(near(host_copy(dx, 9), {1, 0, 0, 0, 2, 0, 0, 0, 0}), "backward data by hand");
  // Backward filter: dw(r,s) = sum of x(i+r, j+s) dy(i,j); dy = ones -> window sums.
  float* ones = device_copy({1, 1, 1, 1});
  float* dw = device_copy({kNaN, kNaN, kNaN, kNaN});
  cudnnConvolutionBackwardFilter(h, &one, d.x, x, d.y, ones, d.c,
                                 CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, nullptr, 0, &zero, d.w, dw);
  expect(near(host_copy(dw, 4), {12, 16, 24, 28}), "backward filter by hand");
  cudnnDestroy(h);
}

void check_batch_norm() {
  cudnnHandle_t h = nullptr;
  cudnnCreate(&h);
  cudnnTensorDescriptor_t xd = nullptr, pd = nullptr;
  cudnnCreateTensorDescriptor(&xd);
  cudnnCreateTensorDescriptor(&pd);
  cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 1, 2, 1);  // 4 values
  cudnnSetTensor4dDescriptor(pd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 1, 1);
  float* x = device_copy({1, 2, 3, 4});
  float* y = device_copy(std::vector<float>(4, kNaN));
  float* gamma = device_copy({2});
  float* beta = device_copy({1});
  float* rmean = device_copy({10});
  float* rvar = device_copy({10});
  float* smean = device_copy({kNaN});
  float* sinv = device_copy({kNaN});
  const float one = 1.f, zero = 0.f;
  expect(cudnnBatchNormalizationForwardTraining(h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd, x, xd,
                                                y, pd, gamma, beta, 0.5, rmean, rvar, 1e-5, smean,
                                                sinv) == CUDNN_STATUS_SUCCESS,
         "cudnnBatchNormalizationForwardTraining");
  // mean 2.5, biased var 1.25, unbiased 5/3; running = 0.5 old + 0.5 new.
  const float invstd = 1.f / std::sqrt(1.25f + 1e-5f);
  expect(near(host_copy(rmean, 1), {6.25f}) && near(host_copy(rvar, 1), {5.f + 5.f / 6.f}, 1e-5f),
         "running mean and the unbiased running variance, blended by the factor");
  expect(near(host_copy(smean, 1), {2.5f}) && near(host_copy(sinv, 1), {invstd}),
         "saved mean and saved 1/sqrt(var + eps)");
  expect(near(host_copy(y, 4), {1 - 3 * invstd, 1 - invstd, 1 + invstd, 1 + 3 * invstd}, 1e-5f),
         "y = gamma * xhat + beta");
  expect(cudnnBatchNormalizationForwardTraining(h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd, x, xd,
                                                y, pd, gamma, beta, 1.0, rmean, nullptr, 1e-5,
                                                nullptr, nullptr) == CUDNN_STATUS_BAD_PARAM,
         "a running mean without a running variance is CUDNN_STATUS_BAD_PARAM");
  float* dy = device_copy({1, 0, 0, 0});
  float* dx = device_copy(std::vector<float>(4, kNaN));
  float* dg = device_copy({kNaN});
  float* db = device_copy({kNaN});
  cudnnBatchNormalizationBackward(h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, xd, x, xd,
                                  dy, xd, dx, pd, gamma, dg, db, 1e-5, smean, sinv);
  // dbeta = sum dy = 1, dgamma = sum dy xhat = -1.5 invstd; dx sums to 0.
  const std::vector<float> g = host_copy(dx, 4);
  expect(near(host_copy(db, 1), {1.f}) && near(host_copy(dg, 1), {-1.5f * invstd}, 1e-5f) &&
             std::fabs(g[0] + g[1] + g[2] + g[3]) < 1e-5f,
         "backward: dbeta, dgamma by hand, dx sums to zero");
  cudnnDestroyTensorDescriptor(xd);
  cudnnDestroyTensorDescriptor(pd);
  cudnnDestroy(h);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "host_pointer") == 0) {
    cublasHandle_t h = nullptr;
    cublasCreate(&h);
    std::vector<float> host(4, 1.f);
    float* C = device_copy({0, 0, 0, 0});
    const float one = 1.f, zero = 0.f;
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, host.data(), CUDA_R_32F, 2, C,
                 CUDA_R_32F, 2, &zero, C, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    std::printf("not reached\n");
    return 0;
  }
  check_tf32();
  check_gemm();
  check_conv();
  check_batch_norm();
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}

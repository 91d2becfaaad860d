// The dispatching entry points of kernels/cuda/cuda_kernels.h: each asks backend_select.h
// which implementation to run. core/ops.cpp calls only these.
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, const float* B, float beta, float* C) {
  if (gemm_impl() == Impl::Library) library::gemm(trans_a, trans_b, M, N, K, alpha, A, B, beta, C);
  else handwritten::gemm(trans_a, trans_b, M, N, K, alpha, A, B, beta, C);
}

void conv2d_forward(const float* x, const float* w, const float* bias, float* y,
                    const Conv2dShape& s) {
  if (conv_impl() == Impl::Library) library::conv2d_forward(x, w, bias, y, s);
  else handwritten::conv2d_forward(x, w, bias, y, s);
}

void conv2d_backward_input(const float* dy, const float* w, float* dx, const Conv2dShape& s) {
  if (conv_impl() == Impl::Library) library::conv2d_backward_input(dy, w, dx, s);
  else handwritten::conv2d_backward_input(dy, w, dx, s);
}

void conv2d_backward_weight(const float* x, const float* dy, float* dw, float* dbias,
                            const Conv2dShape& s) {
  if (conv_impl() == Impl::Library) library::conv2d_backward_weight(x, dy, dw, dbias, s);
  else handwritten::conv2d_backward_weight(x, dy, dw, dbias, s);
}

void batch_norm_forward_train(const float* x, const float* gamma, const float* beta, float* y,
                              float* save_mean, float* save_invstd, float* var_unbiased,
                              int64_t N, int64_t C, int64_t S, float eps, float* running_mean,
                              float* running_var, float momentum) {
  if (bn_impl() == Impl::Library)
    library::batch_norm_forward_train(x, gamma, beta, y, save_mean, save_invstd, var_unbiased, N,
                                      C, S, eps, running_mean, running_var, momentum);
  else
    handwritten::batch_norm_forward_train(x, gamma, beta, y, save_mean, save_invstd, var_unbiased,
                                          N, C, S, eps, running_mean, running_var, momentum);
}

void batch_norm_forward_eval(const float* x, const float* gamma, const float* beta,
                             const float* mean, const float* var, float* y, int64_t N, int64_t C,
                             int64_t S, float eps) {
  if (bn_impl() == Impl::Library)
    library::batch_norm_forward_eval(x, gamma, beta, mean, var, y, N, C, S, eps);
  else
    handwritten::batch_norm_forward_eval(x, gamma, beta, mean, var, y, N, C, S, eps);
}

void batch_norm_backward_train(const float* x, const float* dy, const float* gamma,
                               const float* save_mean, const float* save_invstd, float* dx,
                               float* dgamma, float* dbeta, int64_t N, int64_t C, int64_t S,
                               float eps) {
  if (bn_impl() == Impl::Library)
    library::batch_norm_backward_train(x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, N,
                                       C, S, eps);
  else
    handwritten::batch_norm_backward_train(x, dy, gamma, save_mean, save_invstd, dx, dgamma,
                                           dbeta, N, C, S, eps);
}

}  // namespace gantry::cuda

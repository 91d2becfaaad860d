// Batch norm through cuDNN's legacy API (cudnnBatchNormalizationForwardTraining /
// ForwardInference / Backward; still in cuDNN 9, marked deprecated), in SPATIAL mode: one
// mean and variance per channel over N*H*W, as nn.BatchNorm2d. x [N, C, S] is described as
// the 4-d tensor [N, C, S, 1].
#include <cmath>
#include <stdexcept>

#include "gantry/core/cuda/internal.h"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda::library {

namespace {

struct Desc {
  cudnnTensorDescriptor_t d = nullptr;
  Desc(int64_t n, int64_t c, int64_t h, int64_t w) {
    GANTRY_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
    GANTRY_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                                  static_cast<int>(n), static_cast<int>(c),
                                                  static_cast<int>(h), static_cast<int>(w)));
  }
  ~Desc() { cudnnDestroyTensorDescriptor(d); }
};

// cuDNN needs real scale/bias arrays: when gamma or beta is absent, ones or zeros stand in.
struct Params {
  Scratch ones, zeros;
  const float* gamma;
  const float* beta;
  Params(const float* g, const float* b, int64_t C, bool need_beta = true) : gamma(g), beta(b) {
    if (!gamma) {
      ones = Scratch(static_cast<size_t>(C) * sizeof(float));
      fill(ones.f(), C, 1.f);
      gamma = ones.f();
    }
    if (!beta && need_beta) {
      zeros = Scratch(static_cast<size_t>(C) * sizeof(float));
      fill(zeros.f(), C, 0.f);
      beta = zeros.f();
    }
  }
};

}  // namespace

void batch_norm_forward_train(const float* x, const float* gamma, const float* beta, float* y,
                              float* save_mean, float* save_invstd, float* var_unbiased,
                              int64_t N, int64_t C, int64_t S, float eps, float* running_mean,
                              float* running_var, float momentum) {
  if (C <= 0) return;
  if ((running_mean == nullptr) != (running_var == nullptr))
    throw std::invalid_argument("cuda::batch_norm_forward_train: give both running_mean and running_var or neither");
  Desc xd(N, C, S, 1), pd(1, C, 1, 1);
  Params p(gamma, beta, C);
  const float one = 1.f, zero = 0.f;
  auto run = [&](double factor, float* rmean, float* rvar) {
    GANTRY_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
        cudnn_handle(), CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd.d, x, xd.d, y, pd.d, p.gamma,
        p.beta, factor, rmean, rvar, static_cast<double>(eps), save_mean, save_invstd));
  };
  if (!var_unbiased) {
    // cuDNN updates the running statistics itself: running = (1 - factor) running + factor *
    // stat, with the unbiased variance (n/(n-1)), which is nn.BatchNorm2d's rule.
    run(static_cast<double>(momentum), running_mean, running_var);
    return;
  }
  // The running-average outputs give us the unbiased variance: with factor 1,
  // running = 1 * batch statistic + 0 * old. They are zeroed first because 0 * NaN would still
  // be NaN.
  Scratch run_mean(static_cast<size_t>(C) * sizeof(float));
  fill(run_mean.f(), C, 0.f);
  fill(var_unbiased, C, 0.f);
  run(1.0, run_mean.f(), var_unbiased);
  if (running_mean) {  // both asked for: the update from the outputs (not the ops' path)
    affine(running_mean, running_mean, C, 1.f - momentum, 0.f);
    axpy(running_mean, save_mean, running_mean, C, momentum);
    affine(running_var, running_var, C, 1.f - momentum, 0.f);
    axpy(running_var, var_unbiased, running_var, C, momentum);
  }
}

void batch_norm_forward_eval(const float* x, const float* gamma, const float* beta,
                             const float* mean, const float* var, float* y, int64_t N, int64_t C,
                             int64_t S, float eps) {
  if (N * C * S <= 0) return;
  Desc xd(N, C, S, 1), pd(1, C, 1, 1);
  Params p(gamma, beta, C);
  const float one = 1.f, zero = 0.f;
  GANTRY_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
      cudnn_handle(), CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd.d, x, xd.d, y, pd.d, p.gamma,
      p.beta, mean, var, static_cast<double>(eps)));
}

void batch_norm_backward_train(const float* x, const float* dy, const float* gamma,
                               const float* save_mean, const float* save_invstd, float* dx,
                               float* dgamma, float* dbeta, int64_t N, int64_t C, int64_t S,
                               float eps) {
  if (C <= 0) return;
  Desc xd(N, C, S, 1), pd(1, C, 1, 1);
  // The backward reads no beta: a zeros stand-in here cost a memset and a pool block per batch
  // norm per step.
  Params p(gamma, nullptr, C, /*need_beta=*/false);
  Scratch tmp_dg, tmp_db;  // cuDNN always writes both parameter gradients
  if (!dgamma) {
    tmp_dg = Scratch(static_cast<size_t>(C) * sizeof(float));
    dgamma = tmp_dg.f();
  }
  if (!dbeta) {
    tmp_db = Scratch(static_cast<size_t>(C) * sizeof(float));
    dbeta = tmp_db.f();
  }
  const float one = 1.f, zero = 0.f;
  // The forward's epsilon: the reference asks for "the same epsilon value in forward and
  // backward", saved statistics or not.
  GANTRY_CUDNN_CHECK(cudnnBatchNormalizationBackward(
      cudnn_handle(), CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, xd.d, x, xd.d, dy, xd.d,
      dx, pd.d, p.gamma, dgamma, dbeta, static_cast<double>(eps), save_mean, save_invstd));
}

}  // namespace gantry::cuda::library

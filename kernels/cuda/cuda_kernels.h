#pragma once
// CUDA kernels: the GPU counterpart of kernels/cpu/cpu_kernels.h, in float. Same argument
// order and meaning, but every pointer is a device pointer of the current device and the work
// is queued on its compute stream (nothing here synchronizes unless it says so). Shapes and
// sizes stay on the host. Plain C++: usable without the CUDA headers.
//
// Three families exist in two implementations, picked by backend_select.h:
//   gemm              cuBLAS            | hand-written tiled SGEMM
//   conv2d_*          cuDNN             | im2col/col2im + hand-written SGEMM
//   batch_norm_*      cuDNN             | hand-written per-channel reductions
// The plain names below dispatch; gantry::cuda::handwritten:: and gantry::cuda::library:: call
// one implementation directly (tests and benchmarks use them).
#include <cstdint>

#include "gantry/kernels/cpu/cpu_kernels.h"
#include "gantry/kernels/cuda/backend_select.h"

namespace gantry::cuda {

using cpu::Binary;
using cpu::Conv2dShape;
using cpu::Unary;

// ---- fill and random ----------------------------------------------------------------------
void fill(float* p, int64_t n, float value);
// The Philox-4x32-10 stream of core/random.h: element i uses block(counter_base + i/4, seed)
// word i%4; identical to Generator::fill_uniform / fill_normal on the host (uniform values
// bit for bit; normals to within the last bits of log/sin/cos).
void philox_uniform(float* out, int64_t n, uint64_t seed, uint64_t counter_base, float low,
                    float high);
void philox_normal(float* out, int64_t n, uint64_t seed, uint64_t counter_base, float mean,
                   float std);

// ---- elementwise (kernels/cuda/elementwise.cu) --------------------------------------------
void unary_forward(Unary op, const float* x, float* y, int64_t n);
void unary_backward(Unary op, const float* x, const float* y, const float* dy, float* dx,
                    int64_t n);
void leaky_relu_forward(const float* x, float* y, int64_t n, float slope);
void leaky_relu_backward(const float* x, const float* dy, float* dx, int64_t n, float slope);
void clamp_forward(const float* x, float* y, int64_t n, float lo, float hi);
void clamp_backward(const float* x, const float* dy, float* dx, int64_t n, float lo, float hi);
void affine(const float* x, float* y, int64_t n, float a, float b);  // in place when y == x
// y = x + alpha * other (in place when y == x): Tensor::add_ and gradient accumulation.
void axpy(const float* x, const float* other, float* y, int64_t n, float alpha);
// Shapes right-aligned to ndim (<= 8) dims, as cpu::binary_broadcast.
void binary_broadcast(Binary op, const float* a, const int64_t* a_shape, const float* b,
                      const int64_t* b_shape, float* out, const int64_t* out_shape, int ndim);
// Inverted dropout from uniforms u (philox_uniform): mask = u < p ? 0 : 1/(1-p); y = x*mask.
void dropout_apply(const float* x, const float* u, float* y, float* mask, int64_t n, float p);
// y[N, M] = x[M, N] transposed.
void transpose2d(const float* x, float* y, int64_t M, int64_t N);
// A concatenation along the columns of `rows` rows, in one launch per 64 inputs: input i is
// [rows, widths[i]] (contiguous), out is [rows, sum of widths]; cat along any dim is this with
// rows = the product of the dims before it and widths = size along it times the dims after.
void cat_rows(float* out, const float* const* srcs, const int64_t* widths, int count,
              int64_t rows);
// Copies `rows` rows of `cols` floats from src (row pitch src_pitch) to dst (row pitch
// dst_pitch), all in floats: one input's slab of a split (cat's backward).
void copy_2d(float* dst, int64_t dst_pitch, const float* src, int64_t src_pitch, int64_t rows,
             int64_t cols);

// ---- reductions (kernels/cuda/reduce.cu) --------------------------------------------------
// As cpu::sum_to_shape / cpu::broadcast_to (ndim <= 8).
void sum_to_shape(const float* x, const int64_t* in_shape, float* out, const int64_t* out_shape,
                  int ndim);
void broadcast_to(const float* x, const int64_t* x_shape, float* out, const int64_t* out_shape,
                  int ndim);
// out[0] = scale * sum(x[0..n)) (a device scalar; scale 1/n gives the mean).
void sum_all(const float* x, int64_t n, float* out, float scale = 1.f);
// out[c] = sum over n, s of x[n, c, s] (x viewed as [N, C, S]); the bias gradient of a conv.
void sum_channels(const float* x, float* out, int64_t N, int64_t C, int64_t S);
// y[n, c, s] += bias[c]: a convolution's bias.
void add_channel_bias(float* y, const float* bias, int64_t N, int64_t C, int64_t S);

// ---- losses (kernels/cuda/reduce.cu) ------------------------------------------------------
// The loss is written to the device scalar *out (no host round trip); the backward reads the
// upstream gradient from the device scalar *g.
void bce_forward(const float* p, const float* t, float* out, int64_t n);
void bce_backward(const float* p, const float* t, const float* g, float* dp, int64_t n);
void bce_logits_forward(const float* x, const float* t, float* out, int64_t n);
void bce_logits_backward(const float* x, const float* t, const float* g, float* dx, int64_t n);

// ---- GEMM (row-major, as cpu::gemm) -------------------------------------------------------
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, const float* B, float beta, float* C);

// ---- convolution (as cpu::) ----------------------------------------------------------------
// col[C*kh*kw, OH*OW] of one image; col2im accumulates into x.
void im2col(const float* x, const Conv2dShape& s, float* col);
void col2im(const float* col, const Conv2dShape& s, float* x);
void conv2d_forward(const float* x, const float* w, const float* bias, float* y,
                    const Conv2dShape& s);
void conv2d_backward_input(const float* dy, const float* w, float* dx, const Conv2dShape& s);
void conv2d_backward_weight(const float* x, const float* dy, float* dw, float* dbias,
                            const Conv2dShape& s);

// ---- batch norm (as cpu::) -----------------------------------------------------------------
// Training adds what the CPU leaves to the ops layer: running_mean[C] and running_var[C], when
// given (both or neither), are updated in place in the same call, r = (1 - momentum) r +
// momentum * stat with the unbiased variance, as nn.BatchNorm2d does: on a GPU that saves the
// four small launches of an update by the caller (and cuDNN does it itself).
// The backward takes the forward's eps: cuDNN asks for the same epsilon in forward and backward
// (the hand-written kernel and the CPU need only save_invstd).
void batch_norm_forward_train(const float* x, const float* gamma, const float* beta, float* y,
                              float* save_mean, float* save_invstd, float* var_unbiased,
                              int64_t N, int64_t C, int64_t S, float eps,
                              float* running_mean = nullptr, float* running_var = nullptr,
                              float momentum = 0.f);
void batch_norm_forward_eval(const float* x, const float* gamma, const float* beta,
                             const float* mean, const float* var, float* y, int64_t N, int64_t C,
                             int64_t S, float eps);
void batch_norm_backward_train(const float* x, const float* dy, const float* gamma,
                               const float* save_mean, const float* save_invstd, float* dx,
                               float* dgamma, float* dbeta, int64_t N, int64_t C, int64_t S,
                               float eps);

// ---- Adam, all parameters in one launch (kernels/cuda/adam.cu) -----------------------------
struct AdamTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t numel;
};
// Hyperparameters in double, as AdamOptions and Python floats: the scalar factors (1 - beta2,
// the bias corrections, lr / bc1) are formed in double and rounded to float once, exactly as
// adam_update_cpu does (in float, 1.f - 0.999f is 1.3e-5 relative from float(1 - 0.999)).
// The per-element update is not bit-identical to the CPU's: the first moment is PyTorch's lerp
// (the CPU's is b1 m + (1 - b1) g), and nvcc fuses a*b + c into FMAs (--fmad=true); the tests
// hold it to 1e-6.
struct AdamConfig {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  int64_t step = 1;  // the step being taken (1 for the first), for the bias corrections
};
// torch.optim.Adam (amsgrad off): g += wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). Up to 64 tensors per launch.
void adam_multi_tensor(const AdamTensor* tensors, int count, const AdamConfig& cfg);

// ---- EMA of a model, all tensors in one launch (kernels/cuda/ema.cu) -----------------------
struct EmaTensor {
  float* average;
  const float* source;
  int64_t numel;
  bool copy;  // a buffer: average = source; a parameter: the EMA step below
};
// Per parameter average = fma(float(1 - decay), source, float(decay) * average), rounded as
// EMA::update's mul_ then add_ on the x86-64-v3 CPU build (whose add_ is one FMA); per buffer
// an exact copy. Up to 64 tensors per launch.
void ema_multi_tensor(const EmaTensor* tensors, int count, double decay);

// ---- index width -------------------------------------------------------------------------
// Kernels that decode a flat index into coordinates per element (the hand-written conv's
// im2col/col2im/permutes, broadcasting binary ops, broadcast_to, sum_to_shape) do it in 32
// bits when every index of a launch fits and in 64 bits otherwise (common.cuh).
// set_force_wide_indices(true) makes them all take 64 bits (tests check both instances at
// small shapes); false goes back to the choice.
void set_force_wide_indices(bool force);

// ---- one implementation, explicitly -------------------------------------------------------
// Hand-written: kernels/cuda/gemm.cu, conv.cu, batchnorm.cu.
namespace handwritten {
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, const float* B, float beta, float* C);
void conv2d_forward(const float* x, const float* w, const float* bias, float* y,
                    const Conv2dShape& s);
void conv2d_backward_input(const float* dy, const float* w, float* dx, const Conv2dShape& s);
void conv2d_backward_weight(const float* x, const float* dy, float* dw, float* dbias,
                            const Conv2dShape& s);
void batch_norm_forward_train(const float* x, const float* gamma, const float* beta,
                              float* y, float* save_mean, float* save_invstd,
                              float* var_unbiased, int64_t N, int64_t C, int64_t S,
                              float eps, float* running_mean = nullptr,
                              float* running_var = nullptr, float momentum = 0.f);
void batch_norm_forward_eval(const float* x, const float* gamma, const float* beta,
                             const float* mean, const float* var, float* y, int64_t N,
                             int64_t C, int64_t S, float eps);
void batch_norm_backward_train(const float* x, const float* dy, const float* gamma,
                               const float* save_mean, const float* save_invstd, float* dx,
                               float* dgamma, float* dbeta, int64_t N, int64_t C, int64_t S,
                               float eps);
// The hand-written training batch norm cuts each channel into P slices, one block each, when
// C alone would not fill the GPU (batchnorm.cu). batch_norm_slices says which P a shape gets;
// set_batch_norm_slices(P) forces P (at most 4096, and at most N*S) for every later call
// (tests and benchmarks compare the split against one block per channel), 0 goes back to the
// automatic choice.
int64_t batch_norm_slices(int64_t N, int64_t C, int64_t S);
void set_batch_norm_slices(int64_t slices);
// The hand-written SGEMM splits K over several blocks per tile of C when its tiles alone would
// not fill the GPU (gemm.cu: a convolution's weight gradient). gemm_k_splits says how many
// ranges a product gets; set_gemm_k_splits(S) forces S (tests), 0 goes back to the choice.
int64_t gemm_k_splits(int64_t M, int64_t N, int64_t K);
void set_gemm_k_splits(int64_t splits);
}  // namespace handwritten

// Vendor: kernels/cublas/cublas_gemm.cpp, kernels/cudnn/cudnn_conv.cpp, cudnn_batchnorm.cpp.
namespace library {
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, const float* B, float beta, float* C);
void conv2d_forward(const float* x, const float* w, const float* bias, float* y,
                    const Conv2dShape& s);
void conv2d_backward_input(const float* dy, const float* w, float* dx, const Conv2dShape& s);
void conv2d_backward_weight(const float* x, const float* dy, float* dw, float* dbias,
                            const Conv2dShape& s);
void batch_norm_forward_train(const float* x, const float* gamma, const float* beta,
                              float* y, float* save_mean, float* save_invstd,
                              float* var_unbiased, int64_t N, int64_t C, int64_t S,
                              float eps, float* running_mean = nullptr,
                              float* running_var = nullptr, float momentum = 0.f);
void batch_norm_forward_eval(const float* x, const float* gamma, const float* beta,
                             const float* mean, const float* var, float* y, int64_t N,
                             int64_t C, int64_t S, float eps);
void batch_norm_backward_train(const float* x, const float* dy, const float* gamma,
                               const float* save_mean, const float* save_invstd, float* dx,
                               float* dgamma, float* dbeta, int64_t N, int64_t C, int64_t S,
                               float eps);
}  // namespace library

// ---- pooling, softmax, cross-entropy, spatial gather (kernels/cuda/pool_softmax_gather.cu),
// affine warp (kernels/cuda/warp.cu) ---------------------------------------------------------
// As the cpu:: kernels of the same names. cross_entropy_forward writes the mean loss to the
// device scalar *out; its backward reads the upstream gradient from the device scalar *g.
// spatial_gather_backward and affine_warp_backward scatter with atomicAdd: where several
// outputs read one input (a repeated index, a reflected or magnified warp) the order of the
// adds, hence dx's last bits, can vary from run to run. affine_warp_forward matches the CPU
// bit for bit (kernels/warp_taps.h).
void avg_pool2d_forward(const float* x, float* y, int64_t NC, int64_t H, int64_t W, int k, int s);
void avg_pool2d_backward(const float* dy, float* dx, int64_t NC, int64_t H, int64_t W, int k,
                         int s);
void log_softmax_forward(const float* x, float* y, int64_t M, int64_t C);
void log_softmax_backward(const float* y, const float* dy, float* dx, int64_t M, int64_t C);
void cross_entropy_forward(const float* logits, const float* labels, float* out, int64_t M,
                           int64_t C);
void cross_entropy_backward(const float* logits, const float* labels, const float* g, float* dx,
                            int64_t M, int64_t C);
void spatial_gather_forward(const float* x, const float* idx, float* y, int64_t N, int64_t C,
                            int64_t P_in, int64_t P_out);
void spatial_gather_backward(const float* dy, const float* idx, float* dx, int64_t N, int64_t C,
                             int64_t P_in, int64_t P_out);
void affine_warp_forward(const float* x, const float* theta, float* y, int64_t N, int64_t C,
                         int64_t H, int64_t W);  // kernels/cuda/warp.cu
void affine_warp_backward(const float* dy, const float* theta, float* dx, int64_t N, int64_t C,
                          int64_t H, int64_t W);

}  // namespace gantry::cuda

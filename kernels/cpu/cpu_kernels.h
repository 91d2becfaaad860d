#pragma once
// CPU reference kernels. They know nothing of Tensor or autograd: raw pointers and sizes in,
// results out, so each can be tested (in double, for tight finite-difference checks) and
// benchmarked alone. Every kernel is templated on the scalar type and instantiated for float
// and double. Layouts are contiguous row-major; images are NCHW.
#include <cstdint>

namespace gantry::cpu {

// ---- GEMM (Eigen, multi-threaded with OpenMP) ---------------------------------------------
// C[M,N] = alpha * op(A) * op(B) + beta * C, row-major. op(A) is A[M,K] or, when trans_a,
// A stored as [K,M]; likewise op(B) is B[K,N] or, when trans_b, B stored as [N,K].
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          const T* B, T beta, T* C);
// Which build of the GEMM runs: "Eigen AVX-512" (x86 CPUs with AVX-512 where it pays: Intel,
// AMD Zen 5 and later) or "Eigen AVX2"; the environment variable GANTRY_CPU_GEMM=avx2|avx512|auto
// overrides it.
const char* gemm_isa();
namespace detail {
// The x86 family from CPUID leaf 1's EAX (base family, plus the extended family when it is Fh),
// and whether the AVX-512 GEMM pays on such a CPU (Intel; AMD from family 1Ah, Zen 5).
unsigned x86_family(uint32_t cpuid1_eax);
bool avx512_pays(bool intel, bool amd, unsigned family);
}  // namespace detail

// ---- elementwise --------------------------------------------------------------------------
enum class Unary { Neg, Square, Sqrt, Exp, Log, Abs, Relu, Tanh, Sigmoid };
// y[i] = f(x[i])
template <class T>
void unary_forward(Unary op, const T* x, T* y, int64_t n);
// dx[i] = dy[i] * f'(x[i]); `y` is f(x) (used by Tanh, Sigmoid, Sqrt, Exp).
template <class T>
void unary_backward(Unary op, const T* x, const T* y, const T* dy, T* dx, int64_t n);
template <class T>
void leaky_relu_forward(const T* x, T* y, int64_t n, T slope);
template <class T>
void leaky_relu_backward(const T* x, const T* dy, T* dx, int64_t n, T slope);
template <class T>
void clamp_forward(const T* x, T* y, int64_t n, T lo, T hi);
template <class T>
void clamp_backward(const T* x, const T* dy, T* dx, int64_t n, T lo, T hi);
// y = a*x + b (scalar affine), used for add/mul by a scalar.
template <class T>
void affine(const T* x, T* y, int64_t n, T a, T b);

enum class Binary { Add, Sub, Mul, Div };
// out[i] = a[ia(i)] op b[ib(i)] with NumPy broadcasting. Shapes are given right-aligned to
// `ndim` dims (leading sizes 1); out_shape[d] = max(a_shape[d], b_shape[d]).
template <class T>
void binary_broadcast(Binary op, const T* a, const int64_t* a_shape, const T* b,
                      const int64_t* b_shape, T* out, const int64_t* out_shape, int ndim);

// ---- reductions ---------------------------------------------------------------------------
// Sums x (shape in_shape, ndim dims) into out (shape out_shape, same ndim, each out size
// either the in size or 1: the reduced dims). out is overwritten.
template <class T>
void sum_to_shape(const T* x, const int64_t* in_shape, T* out, const int64_t* out_shape, int ndim);
// out = x broadcast from x_shape to out_shape (the adjoint of sum_to_shape).
template <class T>
void broadcast_to(const T* x, const int64_t* x_shape, T* out, const int64_t* out_shape, int ndim);

// ---- convolution --------------------------------------------------------------------------
struct Conv2dShape {
  int64_t N, C, H, W;  // input
  int64_t O, kh, kw;   // output channels, kernel
  int stride, padding;
  int64_t OH() const { return (H + 2 * padding - kh) / stride + 1; }
  int64_t OW() const { return (W + 2 * padding - kw) / stride + 1; }
};
// col[C*kh*kw, OH*OW] from one image x[C, H, W] (zeros where the window reads padding).
template <class T>
void im2col(const T* x, const Conv2dShape& s, T* col);
// The adjoint: adds col back into x[C, H, W] (x is accumulated into, not overwritten).
template <class T>
void col2im(const T* col, const Conv2dShape& s, T* x);
// How conv2d_* lay out their patch matrix (kernels/cpu/conv.cpp): Cols is the classic im2col
// (col[C*kh*kw, OH*OW], strided copies); Rows transposes each image to channels-last and
// copies runs of C (one row per output pixel). Auto picks Rows when C >= 16. The results agree
// to rounding; the setting exists for tests and benchmarks (GANTRY_CPU_CONV=auto|cols|rows
// sets it for a process). Set it before convolutions run, not during.
enum class ConvLayout { Auto, Cols, Rows };
void set_conv_layout(ConvLayout layout);
ConvLayout conv_layout();
// y[N,O,OH,OW] = conv(x, w[O,C,kh,kw]) + bias[O] (bias may be null).
template <class T>
void conv2d_forward(const T* x, const T* w, const T* bias, T* y, const Conv2dShape& s);
// dx[N,C,H,W] from dy (overwritten).
template <class T>
void conv2d_backward_input(const T* dy, const T* w, T* dx, const Conv2dShape& s);
// dw[O,C,kh,kw] (overwritten) and, when dbias is non-null, dbias[O] (overwritten).
template <class T>
void conv2d_backward_weight(const T* x, const T* dy, T* dw, T* dbias, const Conv2dShape& s);

// ---- batch norm ---------------------------------------------------------------------------
// x viewed as [N, C, S] (S = spatial size). Training: mean/invstd of each channel over N*S,
// biased variance; saves save_mean[C], save_invstd[C] for the backward, and writes the
// unbiased variance into var_unbiased[C] when non-null (for the running stats).
// gamma/beta may be null (1 and 0).
template <class T>
void batch_norm_forward_train(const T* x, const T* gamma, const T* beta, T* y, T* save_mean,
                              T* save_invstd, T* var_unbiased, int64_t N, int64_t C, int64_t S,
                              T eps);
// Eval: y = (x - mean) / sqrt(var + eps) * gamma + beta.
template <class T>
void batch_norm_forward_eval(const T* x, const T* gamma, const T* beta, const T* mean,
                             const T* var, T* y, int64_t N, int64_t C, int64_t S, T eps);
// Training-mode backward: dx (overwritten), and dgamma/dbeta (overwritten, may be null).
template <class T>
void batch_norm_backward_train(const T* x, const T* dy, const T* gamma, const T* save_mean,
                               const T* save_invstd, T* dx, T* dgamma, T* dbeta, int64_t N,
                               int64_t C, int64_t S);

// ---- losses -------------------------------------------------------------------------------
// Mean binary cross-entropy, log clamped at -100. Returns the loss.
template <class T>
T bce_forward(const T* p, const T* t, int64_t n);
// dp = g * (p - t) / max(p (1 - p), eps) / n, with PyTorch's eps 1e-12.
template <class T>
void bce_backward(const T* p, const T* t, T g, T* dp, int64_t n);
template <class T>
T bce_logits_forward(const T* x, const T* t, int64_t n);
// dx = g * (sigmoid(x) - t) / n
template <class T>
void bce_logits_backward(const T* x, const T* t, T g, T* dx, int64_t n);

// ---- pooling, softmax, classification loss, spatial gather, affine warp (kernels/cpu/pool.cpp,
// softmax.cpp, gather.cpp, warp.cpp) ---------------------------------------------------------
// Average pooling of x viewed as [NC, H, W] with a k x k window and stride s, no padding:
// y[NC, OH, OW], OH = (H - k) / s + 1. The backward overwrites dx[NC, H, W] (each input element
// gathers the windows that cover it, so the result is deterministic).
template <class T>
void avg_pool2d_forward(const T* x, T* y, int64_t NC, int64_t H, int64_t W, int k, int s);
template <class T>
void avg_pool2d_backward(const T* dy, T* dx, int64_t NC, int64_t H, int64_t W, int k, int s);
// Row-wise log-softmax of x[M, C]: y = x - max - log(sum exp(x - max)). The backward writes
// dx = dy - exp(y) * sum(dy) (overwritten).
template <class T>
void log_softmax_forward(const T* x, T* y, int64_t M, int64_t C);
template <class T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t M, int64_t C);
// Mean cross-entropy of logits[M, C] against integer class labels (held as T values in
// [0, C)): mean_i (logsumexp(x_i) - x_i[label_i]). Returns the loss. The backward writes
// dx = g / M * (softmax(x) - onehot(label)) (overwritten).
template <class T>
T cross_entropy_forward(const T* logits, const T* labels, int64_t M, int64_t C);
template <class T>
void cross_entropy_backward(const T* logits, const T* labels, T g, T* dx, int64_t M, int64_t C);
// Per-sample spatial gather, the building block of the geometric augmentations (flip,
// translation, rotation, cutout): y[n, c, p] = idx[n, p] >= 0 ? x[n, c, idx[n, p]] : 0 for
// p < P_out, with x viewed as [N, C, P_in]. idx holds integer positions as floats (exact below
// 2^24), -1 for "outside" (zero padding). The backward overwrites dx[N, C, P_in] with the
// scatter-add of dy through the same map.
template <class T>
void spatial_gather_forward(const T* x, const float* idx, T* y, int64_t N, int64_t C,
                            int64_t P_in, int64_t P_out);
template <class T>
void spatial_gather_backward(const T* dy, const float* idx, T* dx, int64_t N, int64_t C,
                             int64_t P_in, int64_t P_out);
// Bilinear resampling of x [N, C, H, W] (H, W >= 2) through one affine map per sample:
// theta [N, 6] = [m00 m01 tx m10 m11 ty] in pixels about the image centre; the taps, their
// weights and the reflection at the borders are kernels/warp_taps.h's. y [N, C, H, W]. The
// backward overwrites dx [N, C, H, W] with the adjoint (each dy added to its four taps).
template <class T>
void affine_warp_forward(const T* x, const float* theta, T* y, int64_t N, int64_t C, int64_t H,
                         int64_t W);
template <class T>
void affine_warp_backward(const T* dy, const float* theta, T* dx, int64_t N, int64_t C,
                          int64_t H, int64_t W);

}  // namespace gantry::cpu

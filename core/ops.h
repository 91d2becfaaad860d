#pragma once
// The functional API: every differentiable op. Each op checks its arguments (throwing
// std::invalid_argument that names the op, the shapes and what would be right), allocates its
// output on the inputs' device, runs the kernel for that device and records its backward.
#include <vector>

#include "gantry/core/tensor.h"

namespace gantry {

// ---- elementwise ------------------------------------------------------------------------
// Binary ops broadcast as NumPy/PyTorch do: shapes are right-aligned and each pair of sizes
// must be equal or one of them 1. The gradient of a broadcast input is summed back to its shape.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, float s);
Tensor mul(const Tensor& a, float s);
Tensor rsub(const Tensor& a, float s);  // s - a
Tensor neg(const Tensor& a);
Tensor square(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor abs(const Tensor& a);  // gradient 0 at 0, as PyTorch
Tensor clamp(const Tensor& a, float lo, float hi);  // gradient 1 inside [lo, hi], else 0

// ---- activations ------------------------------------------------------------------------
Tensor relu(const Tensor& x);
Tensor leaky_relu(const Tensor& x, float negative_slope = 0.01f);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
// Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p).
Tensor dropout(const Tensor& x, float p, bool training, Generator* gen = nullptr);

// ---- reductions -------------------------------------------------------------------------
Tensor sum(const Tensor& x);   // all elements -> shape []
Tensor mean(const Tensor& x);  // all elements -> shape []
// Over the listed dimensions (negative counts from the end); keepdim keeps them as size 1.
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
// Sums a broadcast result back to `shape` (the adjoint of broadcasting).
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- shape ------------------------------------------------------------------------------
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor flatten(const Tensor& x, int64_t start_dim = 1);
// Concatenates along dim; all other sizes must match.
Tensor cat(const std::vector<Tensor>& xs, int64_t dim = 0);
// x's entries [start, start + length) along dim, as a new contiguous tensor (torch.narrow, but
// copied); the range must lie inside x. cat and slice are each other's adjoint.
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t length);
// The adjoint of slice: g [.., length, ..] placed at `start` along dim in zeros of shape `full`
// (torch's slice_backward); differentiable, through cat.
Tensor slice_backward(const Tensor& g, const Shape& full, int64_t dim, int64_t start);
Tensor transpose2d(const Tensor& x);  // [M, N] -> [N, M], a copy

// ---- linear algebra ---------------------------------------------------------------------
Tensor matmul(const Tensor& a, const Tensor& b);  // [M, K] x [K, N] -> [M, N]
// x [N, in], weight [out, in] (PyTorch's layout), bias [out] or undefined -> [N, out]
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- convolution ------------------------------------------------------------------------
// x [N, C, H, W], weight [O, C, kh, kw], bias [O] or undefined.
// Output [N, O, (H + 2p - kh)/s + 1, (W + 2p - kw)/s + 1]. No dilation or groups.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              int stride = 1, int padding = 0);
// The adjoint of conv2d. x [N, C, H, W], weight [C, O, kh, kw] (PyTorch's layout), bias [O].
// Output [N, O, (H-1)s - 2p + kh + output_padding, likewise for W]; output_padding < stride.
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
                        int stride = 1, int padding = 0, int output_padding = 0);

// ---- normalization ----------------------------------------------------------------------
// x [N, C, ...]; weight, bias [C] or undefined; running_mean/var [C] or undefined.
// training: normalizes with the batch statistics (biased variance) and, when running stats are
// given, updates them in place: r = (1 - momentum) r + momentum * stat, with the unbiased
// variance (n/(n-1)) as PyTorch does. Not training: normalizes with the running statistics.
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  float momentum = 0.1f, float eps = 1e-5f);

// torch.nn.functional.group_norm: x [N, C, ...] with C divisible by num_groups; each sample's
// channels are split into num_groups groups of C/num_groups, and each (sample, group) is
// normalized by its own mean and biased variance over its channels and positions; then the
// per-channel affine (weight, bias [C] or undefined). No running statistics: training and eval
// are the same. One value per (sample, group) normalizes to 0 (PyTorch's result). Differentiable
// any number of times.
//   num_groups = 1: layer norm over (C, H, W) with a per-channel affine (WGAN-GP's critic norm)
//   num_groups = C: instance norm
Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), float eps = 1e-5f);
// torch.nn.functional.instance_norm without running statistics: group_norm with one group per
// channel. x [N, C, H, ...] with more than one spatial element (PyTorch refuses one too).
Tensor instance_norm(const Tensor& x, const Tensor& weight = Tensor(), const Tensor& bias = Tensor(),
                     float eps = 1e-5f);

// ---- losses (mean reduction) ------------------------------------------------------------
// p in [0, 1], target the same shape. log is clamped at -100 as in PyTorch. A value outside
// [0, 1] throws; a NaN (a diverged model) gives a NaN loss for the caller to detect.
Tensor binary_cross_entropy(const Tensor& p, const Tensor& target);
// Numerically stable on logits: max(x,0) - x*t + log(1 + exp(-|x|)).
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target);
Tensor mse_loss(const Tensor& input, const Tensor& target);
Tensor l1_loss(const Tensor& input, const Tensor& target);

// ---- pooling, softmax, classification loss, spatial gather, affine warp -----------------
// Average pooling of x [N, C, H, W] over k x k windows with stride `stride` (0 = k), no
// padding: [N, C, (H - k)/stride + 1, (W - k)/stride + 1].
Tensor avg_pool2d(const Tensor& x, int kernel_size, int stride = 0);
// Mean over H and W: [N, C, H, W] -> [N, C] (avg_pool2d with the whole image as the window).
Tensor global_avg_pool2d(const Tensor& x);
// log(softmax(x)) over dim 1 of x [N, C], computed stably (max-shifted).
Tensor log_softmax(const Tensor& x);
// Mean cross-entropy of logits [N, C] against class indices `labels` [N] (float tensor holding
// integers in [0, C); a value outside throws on the CPU): as torch.nn.functional.cross_entropy
// (log-softmax + NLL, mean reduction). No gradient flows into labels.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels);
// Per-sample spatial gather: x [N, C, H, W] and index [N, out_h * out_w] (integer positions
// y * W + x into each sample's H x W plane, as floats; -1 gives 0) -> [N, C, out_h, out_w],
// every channel alike. Flips, translations, 90-degree rotations and cutout are such maps; the
// gradient scatters back through the same map. index must be on x's device.
Tensor spatial_gather(const Tensor& x, const Tensor& index, int64_t out_h, int64_t out_w);
// Per-sample bilinear resampling through an affine map of pixel coordinates: x [N, C, H, W]
// (H, W >= 2) and theta [N, 2, 3] (rows [m00 m01 tx] and [m10 m11 ty], finite, on x's
// device) -> [N, C, H, W], every channel alike. Output pixel (i, j) reads the input at
// (M (j - cx, i - cy) + t) + (cx, cy) about the centre (cx, cy) = ((W - 1) / 2, (H - 1) / 2),
// between the four integer neighbours, which reflect at the borders (torch's "reflect"
// padding). Unlike torch's affine_grid + grid_sample, theta is in pixels, not in [-1, 1].
// Linear in x: the gradient is the adjoint warp, whose own gradient is the warp again, so it
// differentiates any number of times. No gradient flows into theta.
Tensor affine_warp(const Tensor& x, const Tensor& theta);

}  // namespace gantry

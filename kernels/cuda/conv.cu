// Hand-written convolution: im2col + SGEMM (the "explicit GEMM" method).
//
// A convolution is a matrix product once the input windows are laid out as columns:
//   col[C*kh*kw, N*OH*OW]: column (n, oh, ow) holds the C*kh*kw input values its output reads;
//   y[O, N*OH*OW] = W[O, C*kh*kw] * col                      (forward)
//   dcol = W^T * dy  then col2im(dcol) = dx                   (backward, input)
//   dW = dy * col^T                                           (backward, weight)
// The GEMM output is ordered [O, n, s], the tensors [n, O, s], so a cheap permute moves
// between them. Images are processed in chunks so the col buffer stays bounded (~64 MiB).
// cuDNN's implicit-GEMM kernels fuse the gather into the GEMM instead of materialising col:
// less memory traffic; docs/cuda.md compares the two.
#include <algorithm>
#include <cstdint>

#include "gantry/kernels/cuda/common.cuh"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda {
using namespace kern;

namespace {

// Conv2dShape with the output size precomputed (its OH()/OW() are host functions).
struct Geom {
  int64_t N, C, H, W, O, kh, kw, stride, padding, OH, OW;
};
Geom geom(const Conv2dShape& s) {
  return {s.N, s.C, s.H, s.W, s.O, s.kh, s.kw, s.stride, s.padding, s.OH(), s.OW()};
}

// Index arithmetic (common.cuh): im2col divides six times per element, so each kernel here is
// a template on the index type I, and the host picks int32_t whenever every index of the
// launch fits (a chunk's col is capped at 16M floats, so that is every DCGAN layer), int64_t
// otherwise. The image pointers arrive already offset to the chunk's first image, so indices
// stay inside one chunk.

// im2col for the nb images at x: one thread per col element (row ck, column b*S + s). The
// column index runs fastest across threads, so writes are coalesced, and for stride 1 so are
// the reads (neighbouring outputs read neighbouring inputs).
template <class I>
__global__ void im2col_kernel(const float* __restrict__ x, Geom g, int64_t nb,
                              float* __restrict__ col) {
  const I C = static_cast<I>(g.C), H = static_cast<I>(g.H), W = static_cast<I>(g.W);
  const I kw = static_cast<I>(g.kw), khw = static_cast<I>(g.kh * g.kw);
  const I stride = static_cast<I>(g.stride), pad = static_cast<I>(g.padding);
  const I OW = static_cast<I>(g.OW), S = static_cast<I>(g.OH * g.OW);
  const I cols = static_cast<I>(nb * g.OH * g.OW);
  GANTRY_GRID_LOOP(flat, g.C * g.kh * g.kw * nb * g.OH * g.OW) {
    const I i = static_cast<I>(flat);
    const I ck = i / cols, j = i - ck * cols;
    const I b = j / S, sp = j - b * S;
    const I oh = sp / OW, ow = sp - oh * OW;
    const I c = ck / khw, kk = ck - c * khw;
    const I ki = kk / kw, kj = kk - ki * kw;
    const I ih = oh * stride - pad + ki, iw = ow * stride - pad + kj;
    float v = 0.f;  // zero padding
    if (ih >= 0 && ih < H && iw >= 0 && iw < W) v = x[((b * C + c) * H + ih) * W + iw];
    col[i] = v;
  }
}

// col2im as a gather: one thread per input element x[b, c, ih, iw] of the nb images at x adds
// up every col entry that read it. For each kernel tap (ki, kj) the output position is
// oh = (ih + p - ki) / stride when that divides exactly and lands inside the output. Each x
// element is written by exactly one thread, so no atomics are needed (the scatter formulation
// would need them), and the sum order is fixed: results are deterministic.
template <class I>
__global__ void col2im_kernel(const float* __restrict__ col, Geom g, int64_t nb,
                              float* __restrict__ x, bool accumulate) {
  const I C = static_cast<I>(g.C), H = static_cast<I>(g.H), W = static_cast<I>(g.W);
  const I kh = static_cast<I>(g.kh), kw = static_cast<I>(g.kw);
  const I stride = static_cast<I>(g.stride), pad = static_cast<I>(g.padding);
  const I OH = static_cast<I>(g.OH), OW = static_cast<I>(g.OW), S = OH * OW;
  const I cols = static_cast<I>(nb) * S;
  GANTRY_GRID_LOOP(flat, nb * g.C * g.H * g.W) {
    const I i = static_cast<I>(flat);
    const I row_index = i / W, iw = i - row_index * W;  // row_index = (b*C + c)*H + ih
    const I plane = row_index / H, ih = row_index - plane * H;
    const I b = plane / C, c = plane - b * C;
    float acc = 0.f;
    for (I ki = 0; ki < kh; ++ki) {
      const I th = ih + pad - ki;
      if (th < 0 || th % stride != 0) continue;
      const I oh = th / stride;
      if (oh >= OH) continue;
      for (I kj = 0; kj < kw; ++kj) {
        const I tw = iw + pad - kj;
        if (tw < 0 || tw % stride != 0) continue;
        const I ow = tw / stride;
        if (ow >= OW) continue;
        const I row = (c * kh + ki) * kw + kj;
        acc += col[row * cols + b * S + oh * OW + ow];
      }
    }
    x[i] = accumulate ? x[i] + acc : acc;
  }
}

// [O, nb*S] (GEMM order) <-> [nb, O, S] (tensor order), plus an optional bias per channel.
template <class I>
__global__ void gemm_to_nchw_kernel(const float* __restrict__ t, float* __restrict__ y,
                                    const float* __restrict__ bias, int64_t O_, int64_t nb_,
                                    int64_t S_) {
  const I O = static_cast<I>(O_), nb = static_cast<I>(nb_), S = static_cast<I>(S_);
  GANTRY_GRID_LOOP(flat, O_ * nb_ * S_) {  // i indexes y: consecutive threads write consecutive y
    const I i = static_cast<I>(flat);
    const I q = i / S, sp = i - q * S;  // q = b*O + o
    const I b = q / O, o = q - b * O;
    y[i] = t[(o * nb + b) * S + sp] + (bias ? bias[o] : 0.f);
  }
}

template <class I>
__global__ void nchw_to_gemm_kernel(const float* __restrict__ y, float* __restrict__ t,
                                    int64_t O_, int64_t nb_, int64_t S_) {
  const I O = static_cast<I>(O_), nb = static_cast<I>(nb_), S = static_cast<I>(S_);
  GANTRY_GRID_LOOP(flat, O_ * nb_ * S_) {  // i indexes t
    const I i = static_cast<I>(flat);
    const I q = i / S, sp = i - q * S;  // q = o*nb + b
    const I o = q / nb, b = q - o * nb;
    t[i] = y[(b * O + o) * S + sp];
  }
}

// Images per chunk: keeps col (C*kh*kw x nb*S floats) under ~64 MiB, at least one image.
int64_t chunk_images(const Conv2dShape& s) {
  const int64_t per_image = s.C * s.kh * s.kw * s.OH() * s.OW();
  const int64_t budget = int64_t(16) << 20;  // floats
  return std::max<int64_t>(1, std::min<int64_t>(s.N, budget / std::max<int64_t>(1, per_image)));
}

void launch_im2col(const float* x, const Conv2dShape& s, int64_t n0, int64_t nb, float* col) {
  const int64_t total = s.C * s.kh * s.kw * nb * s.OH() * s.OW(), image = s.C * s.H * s.W;
  const float* x0 = x + n0 * image;
  // Padded coordinates (oh*stride - pad + ki) stay within H + 2 pad, W + 2 pad.
  if (index_fits_int32(std::max({total, nb * image, s.H + 2 * s.padding, s.W + 2 * s.padding})))
    im2col_kernel<int32_t><<<blocks_for(total), kThreads, 0, stream()>>>(x0, geom(s), nb, col);
  else
    im2col_kernel<int64_t><<<blocks_for(total), kThreads, 0, stream()>>>(x0, geom(s), nb, col);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void launch_col2im(const float* col, const Conv2dShape& s, int64_t n0, int64_t nb, float* x,
                   bool accumulate) {
  const int64_t total = nb * s.C * s.H * s.W, ncol = s.C * s.kh * s.kw * nb * s.OH() * s.OW();
  float* x0 = x + n0 * s.C * s.H * s.W;
  if (index_fits_int32(std::max({total, ncol, s.H + 2 * s.padding, s.W + 2 * s.padding})))
    col2im_kernel<int32_t><<<blocks_for(total), kThreads, 0, stream()>>>(col, geom(s), nb, x0, accumulate);
  else
    col2im_kernel<int64_t><<<blocks_for(total), kThreads, 0, stream()>>>(col, geom(s), nb, x0, accumulate);
  GANTRY_CUDA_LAUNCH_CHECK();
}

// The permutes between [O, nb*S] and [nb, O, S] (both O*nb*S floats).
void launch_gemm_to_nchw(const float* t, float* y, const float* bias, int64_t O, int64_t nb,
                         int64_t S) {
  const int64_t total = O * nb * S;
  if (index_fits_int32(total))
    gemm_to_nchw_kernel<int32_t><<<blocks_for(total), kThreads, 0, stream()>>>(t, y, bias, O, nb, S);
  else
    gemm_to_nchw_kernel<int64_t><<<blocks_for(total), kThreads, 0, stream()>>>(t, y, bias, O, nb, S);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void launch_nchw_to_gemm(const float* y, float* t, int64_t O, int64_t nb, int64_t S) {
  const int64_t total = O * nb * S;
  if (index_fits_int32(total))
    nchw_to_gemm_kernel<int32_t><<<blocks_for(total), kThreads, 0, stream()>>>(y, t, O, nb, S);
  else
    nchw_to_gemm_kernel<int64_t><<<blocks_for(total), kThreads, 0, stream()>>>(y, t, O, nb, S);
  GANTRY_CUDA_LAUNCH_CHECK();
}

}  // namespace

void im2col(const float* x, const Conv2dShape& s, float* col) { launch_im2col(x, s, 0, 1, col); }

void col2im(const float* col, const Conv2dShape& s, float* x) {
  launch_col2im(col, s, 0, 1, x, /*accumulate=*/true);
}

namespace handwritten {

void conv2d_forward(const float* x, const float* w, const float* bias, float* y,
                    const Conv2dShape& s) {
  const int64_t CK = s.C * s.kh * s.kw, S = s.OH() * s.OW();
  if (s.N * s.O * S == 0) return;
  const int64_t nb_max = chunk_images(s);
  Scratch col(static_cast<size_t>(CK * nb_max * S) * sizeof(float));
  Scratch tmp(static_cast<size_t>(s.O * nb_max * S) * sizeof(float));
  for (int64_t n0 = 0; n0 < s.N; n0 += nb_max) {
    const int64_t nb = std::min(nb_max, s.N - n0);
    launch_im2col(x, s, n0, nb, col.f());
    gemm(false, false, s.O, nb * S, CK, 1.f, w, col.f(), 0.f, tmp.f());  // [O, nb*S]
    launch_gemm_to_nchw(tmp.f(), y + n0 * s.O * S, bias, s.O, nb, S);
  }
}

void conv2d_backward_input(const float* dy, const float* w, float* dx, const Conv2dShape& s) {
  const int64_t CK = s.C * s.kh * s.kw, S = s.OH() * s.OW();
  if (s.N * s.C * s.H * s.W == 0) return;
  if (S == 0 || s.O == 0) {
    fill(dx, s.N * s.C * s.H * s.W, 0.f);
    return;
  }
  const int64_t nb_max = chunk_images(s);
  Scratch col(static_cast<size_t>(CK * nb_max * S) * sizeof(float));
  Scratch dyt(static_cast<size_t>(s.O * nb_max * S) * sizeof(float));
  for (int64_t n0 = 0; n0 < s.N; n0 += nb_max) {
    const int64_t nb = std::min(nb_max, s.N - n0);
    launch_nchw_to_gemm(dy + n0 * s.O * S, dyt.f(), s.O, nb, S);
    // dcol[CK, nb*S] = W^T [CK, O] * dy [O, nb*S]; W is stored [O, CK], hence trans_a.
    gemm(true, false, CK, nb * S, s.O, 1.f, w, dyt.f(), 0.f, col.f());
    launch_col2im(col.f(), s, n0, nb, dx, /*accumulate=*/false);
  }
}

void conv2d_backward_weight(const float* x, const float* dy, float* dw, float* dbias,
                            const Conv2dShape& s) {
  const int64_t CK = s.C * s.kh * s.kw, S = s.OH() * s.OW();
  if (s.O * CK == 0) return;
  if (s.N * S == 0) {
    fill(dw, s.O * CK, 0.f);
    if (dbias) fill(dbias, s.O, 0.f);
    return;
  }
  const int64_t nb_max = chunk_images(s);
  Scratch col(static_cast<size_t>(CK * nb_max * S) * sizeof(float));
  Scratch dyt(static_cast<size_t>(s.O * nb_max * S) * sizeof(float));
  for (int64_t n0 = 0; n0 < s.N; n0 += nb_max) {
    const int64_t nb = std::min(nb_max, s.N - n0);
    launch_im2col(x, s, n0, nb, col.f());
    launch_nchw_to_gemm(dy + n0 * s.O * S, dyt.f(), s.O, nb, S);
    // dW[O, CK] (+)= dy[O, nb*S] * col^T; col is stored [CK, nb*S], hence trans_b. The first
    // chunk overwrites (beta 0), later chunks accumulate (beta 1).
    gemm(false, true, s.O, CK, nb * S, 1.f, dyt.f(), col.f(), n0 == 0 ? 0.f : 1.f, dw);
  }
  if (dbias) sum_channels(dy, dbias, s.N, s.O, S);
}

}  // namespace handwritten
}  // namespace gantry::cuda

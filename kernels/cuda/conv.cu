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

// im2col for images n0 .. n0+nb-1: one thread per col element (row ck, column b*S + s). The
// column index runs fastest across threads, so writes are coalesced, and for stride 1 so are
// the reads (neighbouring outputs read neighbouring inputs).
__global__ void im2col_kernel(const float* __restrict__ x, Geom s, int64_t n0, int64_t nb,
                              float* __restrict__ col) {
  const int64_t OH = s.OH, OW = s.OW, S = OH * OW;
  const int64_t cols = nb * S, total = s.C * s.kh * s.kw * cols;
  GANTRY_GRID_LOOP(i, total) {
    const int64_t ck = i / cols, j = i - ck * cols;
    const int64_t b = j / S, sp = j - b * S;
    const int64_t oh = sp / OW, ow = sp - oh * OW;
    const int64_t c = ck / (s.kh * s.kw), kk = ck - c * s.kh * s.kw;
    const int64_t ki = kk / s.kw, kj = kk - ki * s.kw;
    const int64_t ih = oh * s.stride - s.padding + ki, iw = ow * s.stride - s.padding + kj;
    float v = 0.f;  // zero padding
    if (ih >= 0 && ih < s.H && iw >= 0 && iw < s.W)
      v = x[(((n0 + b) * s.C + c) * s.H + ih) * s.W + iw];
    col[i] = v;
  }
}

// col2im as a gather: one thread per input element x[n, c, ih, iw] adds up every col entry
// that read it. For each kernel tap (ki, kj) the output position is oh = (ih + p - ki) / stride
// when that divides exactly and lands inside the output. Each x element is written by exactly
// one thread, so no atomics are needed (the scatter formulation would need them), and the
// sum order is fixed: results are deterministic.
__global__ void col2im_kernel(const float* __restrict__ col, Geom s, int64_t n0, int64_t nb,
                              float* __restrict__ x, bool accumulate) {
  const int64_t OH = s.OH, OW = s.OW, S = OH * OW, cols = nb * S;
  const int64_t total = nb * s.C * s.H * s.W;
  GANTRY_GRID_LOOP(i, total) {
    const int64_t iw = i % s.W, ih = (i / s.W) % s.H, c = (i / (s.W * s.H)) % s.C;
    const int64_t b = i / (s.W * s.H * s.C);
    float acc = 0.f;
    for (int64_t ki = 0; ki < s.kh; ++ki) {
      const int64_t th = ih + s.padding - ki;
      if (th < 0 || th % s.stride != 0) continue;
      const int64_t oh = th / s.stride;
      if (oh >= OH) continue;
      for (int64_t kj = 0; kj < s.kw; ++kj) {
        const int64_t tw = iw + s.padding - kj;
        if (tw < 0 || tw % s.stride != 0) continue;
        const int64_t ow = tw / s.stride;
        if (ow >= OW) continue;
        const int64_t row = (c * s.kh + ki) * s.kw + kj;
        acc += col[row * cols + b * S + oh * OW + ow];
      }
    }
    float* dst = x + n0 * s.C * s.H * s.W + i;
    *dst = accumulate ? *dst + acc : acc;
  }
}

// [O, nb*S] (GEMM order) <-> [nb, O, S] (tensor order), plus an optional bias per channel.
__global__ void gemm_to_nchw_kernel(const float* __restrict__ t, float* __restrict__ y,
                                    const float* __restrict__ bias, int64_t O, int64_t nb,
                                    int64_t S) {
  GANTRY_GRID_LOOP(i, O * nb * S) {  // i indexes y: consecutive threads write consecutive y
    const int64_t sp = i % S, o = (i / S) % O, b = i / (S * O);
    y[i] = t[o * nb * S + b * S + sp] + (bias ? bias[o] : 0.f);
  }
}

__global__ void nchw_to_gemm_kernel(const float* __restrict__ y, float* __restrict__ t, int64_t O,
                                    int64_t nb, int64_t S) {
  GANTRY_GRID_LOOP(i, O * nb * S) {  // i indexes t
    const int64_t sp = i % S, b = (i / S) % nb, o = i / (S * nb);
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
  const int64_t total = s.C * s.kh * s.kw * nb * s.OH() * s.OW();
  im2col_kernel<<<blocks_for(total), kThreads, 0, stream()>>>(x, geom(s), n0, nb, col);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void launch_col2im(const float* col, const Conv2dShape& s, int64_t n0, int64_t nb, float* x,
                   bool accumulate) {
  const int64_t total = nb * s.C * s.H * s.W;
  col2im_kernel<<<blocks_for(total), kThreads, 0, stream()>>>(col, geom(s), n0, nb, x, accumulate);
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
    float* y0 = y + n0 * s.O * S;
    gemm_to_nchw_kernel<<<blocks_for(s.O * nb * S), kThreads, 0, stream()>>>(tmp.f(), y0, bias,
                                                                            s.O, nb, S);
    GANTRY_CUDA_LAUNCH_CHECK();
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
    nchw_to_gemm_kernel<<<blocks_for(s.O * nb * S), kThreads, 0, stream()>>>(
        dy + n0 * s.O * S, dyt.f(), s.O, nb, S);
    GANTRY_CUDA_LAUNCH_CHECK();
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
    nchw_to_gemm_kernel<<<blocks_for(s.O * nb * S), kThreads, 0, stream()>>>(
        dy + n0 * s.O * S, dyt.f(), s.O, nb, S);
    GANTRY_CUDA_LAUNCH_CHECK();
    // dW[O, CK] (+)= dy[O, nb*S] * col^T; col is stored [CK, nb*S], hence trans_b. The first
    // chunk overwrites (beta 0), later chunks accumulate (beta 1).
    gemm(false, true, s.O, CK, nb * S, 1.f, dyt.f(), col.f(), n0 == 0 ? 0.f : 1.f, dw);
  }
  if (dbias) sum_channels(dy, dbias, s.N, s.O, S);
}

}  // namespace handwritten
}  // namespace gantry::cuda

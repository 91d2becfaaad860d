// A model of cuDNN 9's legacy convolution and batch-norm API for the CUDA emulator
// (GANTRY_CUDA_EMU), written from the cuDNN API reference, so kernels/cudnn/*.cpp (unchanged)
// is tested for the way it drives the library: descriptors, output shapes, cross-correlation,
// the algorithm search and its workspace, math types, the alpha/beta blend ("y is not read
// when beta is 0"), Find*Ex overwriting its output, batch norm's running statistics (unbiased
// variance, the exponential average factor), its saved mean and inverse standard deviation,
// the "both or neither" optional outputs, and the stream order. It says nothing about the
// real library's speed or its rounding: every sum runs in double and is rounded once; TF32
// (tf32.h) is applied to the inputs when the math type allows it.
//
// The algorithms: a few per direction, each with the workspace size the model asks for; the
// ones that need a workspace keep a copy of an input operand there and compute from it, so an
// undersized or aliased workspace gives a wrong answer or a fault. The GEMM-like ones need
// 16-byte aligned buffers (BAD_PARAM_MISALIGNED_POINTER otherwise), as some real kernels do:
// an algorithm chosen on aligned buffers may not run on a view that starts inside a tensor.
// The rest are listed as NOT_SUPPORTED, as cuDNN lists algorithms that do not apply.
//
// Where cuDNN would touch memory outside a device allocation (a host pointer, a buffer
// smaller than its descriptor), the model ends the process with a message, as
// compute-sanitizer reports an illegal address (exit code 3).
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <vector>

#include "tf32.h"

struct gemu_cudnn {
  cudaStream_t stream = nullptr;
};

// A 4-d tensor: dims and element strides (NCHW or NHWC, packed).
struct gemu_cudnn_tensor {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int n = 0, c = 0, h = 0, w = 0;
  int64_t sn = 0, sc = 0, sh = 0, sw = 0;
  int64_t count() const { return int64_t(n) * c * h * w; }
  int64_t at(int in, int ic, int ih, int iw) const { return in * sn + ic * sc + ih * sh + iw * sw; }
};

struct gemu_cudnn_filter {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
  int k = 0, c = 0, h = 0, w = 0;
  int64_t count() const { return int64_t(k) * c * h * w; }
  int64_t at(int ik, int ic, int ih, int iw) const {
    return format == CUDNN_TENSOR_NCHW ? ((int64_t(ik) * c + ic) * h + ih) * w + iw
                                       : ((int64_t(ik) * h + ih) * w + iw) * c + ic;
  }
};

struct gemu_cudnn_conv {
  bool set = false;
  int pad_h = 0, pad_w = 0, u = 1, v = 1, dil_h = 1, dil_w = 1;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

const char* cudnnGetErrorString(cudnnStatus_t s) {
  switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER: return "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER";
    case CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH: return "CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    case CUDNN_STATUS_ALLOC_FAILED: return "CUDNN_STATUS_ALLOC_FAILED";
  }
  return "CUDNN_STATUS_<unknown>";
}

// ---- handle and descriptors -----------------------------------------------------------------

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) {
  if (!handle) return CUDNN_STATUS_BAD_PARAM;
  *handle = new gemu_cudnn();
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
  delete handle;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUDNN_STATUS_BAD_PARAM;
  handle->stream = stream;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* desc) {
  if (!desc) return CUDNN_STATUS_BAD_PARAM;
  *desc = new gemu_cudnn_tensor();
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t desc) {
  delete desc;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w) {
  if (!d || n < 0 || c < 0 || h < 0 || w < 0 ||
      (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC) ||
      (type != CUDNN_DATA_FLOAT && type != CUDNN_DATA_DOUBLE && type != CUDNN_DATA_HALF))
    return CUDNN_STATUS_BAD_PARAM;
  *d = gemu_cudnn_tensor{};
  d->set = true;
  d->type = type;
  d->n = n, d->c = c, d->h = h, d->w = w;
  if (format == CUDNN_TENSOR_NCHW) {
    d->sw = 1, d->sh = w, d->sc = int64_t(h) * w, d->sn = int64_t(c) * h * w;
  } else {
    d->sc = 1, d->sw = c, d->sh = int64_t(w) * c, d->sn = int64_t(h) * w * c;
  }
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* desc) {
  if (!desc) return CUDNN_STATUS_BAD_PARAM;
  *desc = new gemu_cudnn_filter();
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t desc) {
  delete desc;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w) {
  if (!d || k <= 0 || c <= 0 || h <= 0 || w <= 0 ||
      (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC) ||
      (type != CUDNN_DATA_FLOAT && type != CUDNN_DATA_DOUBLE && type != CUDNN_DATA_HALF))
    return CUDNN_STATUS_BAD_PARAM;
  *d = gemu_cudnn_filter{true, type, format, k, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* desc) {
  if (!desc) return CUDNN_STATUS_BAD_PARAM;
  *desc = new gemu_cudnn_conv();
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t desc) {
  delete desc;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h,
                                              int pad_w, int u, int v, int dilation_h,
                                              int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute_type) {
  if (!d || pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0 ||
      (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION))
    return CUDNN_STATUS_BAD_PARAM;
  const cudnnMathType_t math = d->math;  // the math type is a separate setting
  *d = gemu_cudnn_conv{true, pad_h, pad_w, u, v, dilation_h, dilation_w, mode, compute_type, math};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t math) {
  if (!d || (math != CUDNN_DEFAULT_MATH && math != CUDNN_TENSOR_OP_MATH &&
             math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && math != CUDNN_FMA_MATH))
    return CUDNN_STATUS_BAD_PARAM;
  d->math = math;
  return CUDNN_STATUS_SUCCESS;
}

namespace {

// ---- the convolution problem ------------------------------------------------------------------

enum class Dir { Forward, BackwardData, BackwardFilter };

// Everything one convolution needs, copied out of the descriptors at the call: the work runs
// later (on the stream), when the caller may already have destroyed them.
struct Problem {
  gemu_cudnn_tensor x, y;  // y: the output of the forward convolution (dy for the backwards)
  gemu_cudnn_filter w;
  gemu_cudnn_conv conv;
  bool tf32 = false;
};

cudnnStatus_t make_problem(cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                           cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t y,
                           Problem* p) {
  if (!x || !w || !conv || !y || !x->set || !w->set || !conv->set || !y->set)
    return CUDNN_STATUS_BAD_PARAM;
  // fp32 data with fp32 compute ("TRUE_FLOAT_CONFIG") is what the model covers.
  if (x->type != CUDNN_DATA_FLOAT || y->type != CUDNN_DATA_FLOAT || w->type != CUDNN_DATA_FLOAT ||
      conv->compute != CUDNN_DATA_FLOAT)
    return CUDNN_STATUS_NOT_SUPPORTED;
  // Empty tensors are not convolutions cuDNN runs.
  if (x->count() == 0 || y->count() == 0) return CUDNN_STATUS_BAD_PARAM;
  if (w->c != x->c) return CUDNN_STATUS_BAD_PARAM;  // no groups in the model
  // cudnnGetConvolution2dForwardOutputDim: 1 + (in + 2 pad - ((k - 1) dil + 1)) / stride.
  const int eff_h = (w->h - 1) * conv->dil_h + 1, eff_w = (w->w - 1) * conv->dil_w + 1;
  if (x->h + 2 * conv->pad_h < eff_h || x->w + 2 * conv->pad_w < eff_w)
    return CUDNN_STATUS_BAD_PARAM;
  const int oh = 1 + (x->h + 2 * conv->pad_h - eff_h) / conv->u;
  const int ow = 1 + (x->w + 2 * conv->pad_w - eff_w) / conv->v;
  if (y->n != x->n || y->c != w->k || y->h != oh || y->w != ow) return CUDNN_STATUS_BAD_PARAM;
  p->x = *x;
  p->y = *y;
  p->w = *w;
  p->conv = *conv;
  // On Ampere and newer, the default and tensor-op math types let fp32 convolutions run on
  // TF32 tensor cores; CUDNN_FMA_MATH keeps them in full fp32.
  p->tf32 = conv->math != CUDNN_FMA_MATH;
  return CUDNN_STATUS_SUCCESS;
}

// The filter tap (r, s) of the kernel, flipped in CUDNN_CONVOLUTION mode.
inline int tap(int r, int size, cudnnConvolutionMode_t mode) {
  return mode == CUDNN_CONVOLUTION ? size - 1 - r : r;
}

// An algorithm of the model: its workspace and which operand it stages there.
struct Algo {
  int id;
  bool supported;
  bool staged;  // keeps a (TF32-rounded) copy of an operand in the workspace
  cudnnDeterminism_t determinism;
};

const std::vector<Algo>& algos(Dir dir) {
  static const std::vector<Algo> fwd = {
      {CUDNN_CONVOLUTION_FWD_ALGO_GEMM, true, true, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, true, false, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, false, false, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_FWD_ALGO_DIRECT, false, false, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_FWD_ALGO_FFT, false, false, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING, false, false, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD, false, false, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED, false, false, CUDNN_DETERMINISTIC},
  };
  static const std::vector<Algo> bwd_data = {
      {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, true, true, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, true, false, CUDNN_NON_DETERMINISTIC},
      {CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT, false, false, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING, false, false, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD, false, false, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED, false, false, CUDNN_DETERMINISTIC},
  };
  static const std::vector<Algo> bwd_filter = {
      {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, true, true, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, true, false, CUDNN_NON_DETERMINISTIC},
      {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, false, false, CUDNN_NON_DETERMINISTIC},
      {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT, false, false, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD, false, false, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED, false, false, CUDNN_DETERMINISTIC},
      {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING, false, false, CUDNN_DETERMINISTIC},
  };
  return dir == Dir::Forward ? fwd : dir == Dir::BackwardData ? bwd_data : bwd_filter;
}

const Algo* find_algo(Dir dir, int id) {
  for (const Algo& a : algos(dir))
    if (a.id == id) return &a;
  return nullptr;
}

// The operand a staged algorithm copies into its workspace: x for the forward and the
// filter gradient, dy for the data gradient.
int64_t staged_count(Dir dir, const Problem& p) {
  return dir == Dir::BackwardData ? p.y.count() : p.x.count();
}
std::size_t workspace_bytes(Dir dir, const Algo& a, const Problem& p) {
  return a.staged ? static_cast<std::size_t>(staged_count(dir, p)) * sizeof(float) : 0;
}

bool aligned(const void* p, std::size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

void require_device(const char* call, const char* name, const void* p, int64_t floats) {
  if (floats <= 0) return;
  if (!gemu::device_range(p, static_cast<std::size_t>(floats) * sizeof(float))) {
    char msg[240];
    std::snprintf(msg, sizeof msg,
                  "%s (%p, %lld floats by its descriptor) is not inside one device allocation",
                  name, p, static_cast<long long>(floats));
    gemu::library_fault(call, msg);
  }
}

// The status of running algorithm `a` on these buffers (before any work is queued).
cudnnStatus_t can_run(Dir dir, const Algo& a, const Problem& p, const void* in0, const void* in1,
                      const void* out, const void* ws, std::size_t ws_bytes) {
  if (!a.supported) return CUDNN_STATUS_NOT_SUPPORTED;
  if (!aligned(in0, 4) || !aligned(in1, 4) || !aligned(out, 4))
    return CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER;
  if (a.staged && (!aligned(in0, 16) || !aligned(in1, 16) || !aligned(out, 16)))
    return CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER;
  const std::size_t need = workspace_bytes(dir, a, p);
  if (need > 0 && (ws == nullptr || ws_bytes < need)) return CUDNN_STATUS_BAD_PARAM;
  return CUDNN_STATUS_SUCCESS;
}

// The result blended into the output as cuDNN's scaling parameters define it:
// out = alpha * result + beta * out, and out is not read when beta is 0 (it may hold NaN).
inline float blend(double result, float alpha, float beta, float out) {
  return static_cast<float>(alpha * result + (beta == 0.f ? 0.0 : double(beta) * out));
}

// An operand as the algorithm reads it: through the workspace copy when staged, TF32-rounded
// when the math type allows.
const float* prepared(const float* src, int64_t n, bool tf32, float* staging,
                      std::vector<float>& local) {
  float* dst = staging;
  if (!dst) {
    if (!tf32) return src;
    local.resize(static_cast<std::size_t>(n));
    dst = local.data();
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = tf32 ? gemu::round_to_tf32(src[i]) : src[i];
  return dst;
}

// The three directions below accumulate whole output planes in double, one (image, channel)
// pair per iteration of the parallel loop, with the filter tap outermost: the inner loop walks
// a row of the image, so the model is fast enough for the DCGAN shapes of the parity tests.

// The output columns ow whose input column iw = ow * stride - pad + offset is inside [0, W).
inline void column_range(int offset, int stride, int pad, int W, int OW, int* lo, int* hi) {
  const int first = pad - offset;  // ow * stride >= first
  *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  const int last = W - 1 + pad - offset;  // ow * stride <= last
  *hi = last < 0 ? 0 : std::min(OW, last / stride + 1);
}

// y = alpha * conv(x, w) + beta * y
void run_forward(const Problem& p, const float* x_in, const float* w_in, float* y, float* ws,
                 float alpha, float beta) {
  std::vector<float> xl, wl;
  const float* x = prepared(x_in, p.x.count(), p.tf32, ws, xl);
  const float* w = prepared(w_in, p.w.count(), p.tf32, nullptr, wl);
  const auto& c = p.conv;
  const int OH = p.y.h, OW = p.y.w;
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < p.y.n; ++n)
    for (int k = 0; k < p.y.c; ++k) {
      std::vector<double> acc(static_cast<std::size_t>(OH) * OW, 0.0);
      for (int ch = 0; ch < p.x.c; ++ch)
        for (int r = 0; r < p.w.h; ++r)
          for (int s = 0; s < p.w.w; ++s) {
            const double wv = w[p.w.at(k, ch, tap(r, p.w.h, c.mode), tap(s, p.w.w, c.mode))];
            int lo, hi;
            column_range(s * c.dil_w, c.v, c.pad_w, p.x.w, OW, &lo, &hi);
            for (int oh = 0; oh < OH; ++oh) {
              const int ih = oh * c.u - c.pad_h + r * c.dil_h;
              if (ih < 0 || ih >= p.x.h) continue;
              const float* row = x + p.x.at(n, ch, ih, 0);
              double* out = acc.data() + static_cast<std::size_t>(oh) * OW;
              for (int ow = lo; ow < hi; ++ow)
                out[ow] += wv * row[(ow * c.v - c.pad_w + s * c.dil_w) * p.x.sw];
            }
          }
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          float& o = y[p.y.at(n, k, oh, ow)];
          o = blend(acc[static_cast<std::size_t>(oh) * OW + ow], alpha, beta, o);
        }
    }
}

// dx = alpha * conv^T(dy, w) + beta * dx: each dy value scattered through the filter taps.
void run_backward_data(const Problem& p, const float* w_in, const float* dy_in, float* dx,
                       float* ws, float alpha, float beta) {
  std::vector<float> dyl, wl;
  const float* dy = prepared(dy_in, p.y.count(), p.tf32, ws, dyl);
  const float* w = prepared(w_in, p.w.count(), p.tf32, nullptr, wl);
  const auto& c = p.conv;
  const int H = p.x.h, W = p.x.w, OW = p.y.w;
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < p.x.n; ++n)
    for (int ch = 0; ch < p.x.c; ++ch) {
      std::vector<double> acc(static_cast<std::size_t>(H) * W, 0.0);
      for (int k = 0; k < p.y.c; ++k)
        for (int r = 0; r < p.w.h; ++r)
          for (int s = 0; s < p.w.w; ++s) {
            const double wv = w[p.w.at(k, ch, tap(r, p.w.h, c.mode), tap(s, p.w.w, c.mode))];
            int lo, hi;
            column_range(s * c.dil_w, c.v, c.pad_w, W, OW, &lo, &hi);
            for (int oh = 0; oh < p.y.h; ++oh) {
              const int ih = oh * c.u - c.pad_h + r * c.dil_h;
              if (ih < 0 || ih >= H) continue;
              const float* row = dy + p.y.at(n, k, oh, 0);
              double* out = acc.data() + static_cast<std::size_t>(ih) * W;
              for (int ow = lo; ow < hi; ++ow)
                out[ow * c.v - c.pad_w + s * c.dil_w] += wv * row[ow * p.y.sw];
            }
          }
      for (int ih = 0; ih < H; ++ih)
        for (int iw = 0; iw < W; ++iw) {
          float& o = dx[p.x.at(n, ch, ih, iw)];
          o = blend(acc[static_cast<std::size_t>(ih) * W + iw], alpha, beta, o);
        }
    }
}

// dw = alpha * sum over the batch and output pixels of x * dy + beta * dw
void run_backward_filter(const Problem& p, const float* x_in, const float* dy_in, float* dw,
                         float* ws, float alpha, float beta) {
  std::vector<float> xl, dyl;
  const float* x = prepared(x_in, p.x.count(), p.tf32, ws, xl);
  const float* dy = prepared(dy_in, p.y.count(), p.tf32, nullptr, dyl);
  const auto& c = p.conv;
  const int OW = p.y.w;
#pragma omp parallel for collapse(2) schedule(static)
  for (int k = 0; k < p.w.k; ++k)
    for (int ch = 0; ch < p.w.c; ++ch)
      for (int r = 0; r < p.w.h; ++r)
        for (int s = 0; s < p.w.w; ++s) {
          int lo, hi;
          column_range(s * c.dil_w, c.v, c.pad_w, p.x.w, OW, &lo, &hi);
          double sum = 0;
          for (int n = 0; n < p.x.n; ++n)
            for (int oh = 0; oh < p.y.h; ++oh) {
              const int ih = oh * c.u - c.pad_h + r * c.dil_h;
              if (ih < 0 || ih >= p.x.h) continue;
              const float* xrow = x + p.x.at(n, ch, ih, 0);
              const float* dyrow = dy + p.y.at(n, k, oh, 0);
              for (int ow = lo; ow < hi; ++ow)
                sum += double(xrow[(ow * c.v - c.pad_w + s * c.dil_w) * p.x.sw]) * dyrow[ow * p.y.sw];
            }
          float& out = dw[p.w.at(k, ch, tap(r, p.w.h, c.mode), tap(s, p.w.w, c.mode))];
          out = blend(sum, alpha, beta, out);
        }
}

// Queues one convolution of direction `dir` with algorithm `a`.
// in0/in1/out: (x, w, y) forward, (w, dy, dx) backward data, (x, dy, dw) backward filter.
void queue_run(Dir dir, const Algo& a, const Problem& p, const float* in0, const float* in1,
               float* out, void* ws, float alpha, float beta) {
  float* staging = a.staged ? static_cast<float*>(ws) : nullptr;
  static const char* const names[3] = {"cudnnConvolutionForward", "cudnnConvolutionBackwardData",
                                       "cudnnConvolutionBackwardFilter"};
  gemu::enqueue_library_work(names[static_cast<int>(dir)], [=] {
    if (dir == Dir::Forward) run_forward(p, in0, in1, out, staging, alpha, beta);
    else if (dir == Dir::BackwardData) run_backward_data(p, in0, in1, out, staging, alpha, beta);
    else run_backward_filter(p, in0, in1, out, staging, alpha, beta);
  });
}

// The element counts of (in0, in1, out) of a direction.
void counts(Dir dir, const Problem& p, int64_t* c0, int64_t* c1, int64_t* c2) {
  if (dir == Dir::Forward) *c0 = p.x.count(), *c1 = p.w.count(), *c2 = p.y.count();
  else if (dir == Dir::BackwardData) *c0 = p.w.count(), *c1 = p.y.count(), *c2 = p.x.count();
  else *c0 = p.x.count(), *c1 = p.y.count(), *c2 = p.w.count();
}

const char* const kNames[3][3] = {{"x", "w", "y"}, {"w", "dy", "dx"}, {"x", "dy", "dw"}};

void require_buffers(const char* call, Dir dir, const Problem& p, const void* in0,
                     const void* in1, const void* out) {
  int64_t c0, c1, c2;
  counts(dir, p, &c0, &c1, &c2);
  const auto& names = kNames[static_cast<int>(dir)];
  require_device(call, names[0], in0, c0);
  require_device(call, names[1], in1, c1);
  require_device(call, names[2], out, c2);
}

// cudnnGet*Algorithm_v7: every algorithm with the workspace it needs, in the model's order of
// expected speed (the staged ones first); statuses say which apply.
template <class Perf, class AlgoEnum>
cudnnStatus_t heuristics(Dir dir, const Problem& p, int requested, int* returned, Perf* perf,
                         cudnnMathType_t math) {
  if (!returned || !perf || requested <= 0) return CUDNN_STATUS_BAD_PARAM;
  int n = 0;
  for (const Algo& a : algos(dir)) {
    if (n == requested) break;
    Perf r{};
    r.algo = static_cast<AlgoEnum>(a.id);
    r.status = a.supported ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_SUPPORTED;
    r.time = -1.f;  // heuristics do not time
    r.memory = a.supported ? workspace_bytes(dir, a, p) : 0;
    r.determinism = a.determinism;
    r.mathType = math;
    perf[n++] = r;
  }
  *returned = n;
  return CUDNN_STATUS_SUCCESS;
}

// cudnnFind*AlgorithmEx: runs every algorithm that can run on these buffers into the output
// (which the reference says is left with arbitrary values: the model leaves NaN), and
// returns them sorted by the model's time, the failures last.
template <class Perf, class AlgoEnum>
cudnnStatus_t find_ex(const char* call, Dir dir, const Problem& p, const float* in0,
                      const float* in1, float* out, int requested, int* returned, Perf* perf,
                      void* ws, std::size_t ws_bytes) {
  if (!returned || !perf || requested <= 0) return CUDNN_STATUS_BAD_PARAM;
  require_buffers(call, dir, p, in0, in1, out);
  if (ws_bytes > 0) require_device(call, "workSpace", ws, static_cast<int64_t>(ws_bytes / sizeof(float)));
  std::vector<Perf> ok, failed;
  float model_ms = 1.f;
  for (const Algo& a : algos(dir)) {
    Perf r{};
    r.algo = static_cast<AlgoEnum>(a.id);
    r.determinism = a.determinism;
    r.mathType = p.conv.math;
    r.memory = a.supported ? workspace_bytes(dir, a, p) : 0;
    r.status = can_run(dir, a, p, in0, in1, out, ws, ws_bytes);
    // The reference: ALLOC_FAILED when the provided workspace is insufficient.
    if (r.status == CUDNN_STATUS_BAD_PARAM) r.status = CUDNN_STATUS_ALLOC_FAILED;
    if (r.status == CUDNN_STATUS_SUCCESS) {
      queue_run(dir, a, p, in0, in1, out, ws, 1.f, 0.f);
      r.time = model_ms;
      model_ms += 1.f;
      ok.push_back(r);
    } else {
      r.time = -1.f;
      failed.push_back(r);
    }
  }
  const int64_t n_out = dir == Dir::Forward ? p.y.count() : dir == Dir::BackwardData ? p.x.count() : p.w.count();
  gemu::enqueue_library_work("cudnnFind*AlgorithmEx (output left as NaN)", [out, n_out] {
    std::fill(out, out + n_out, std::numeric_limits<float>::quiet_NaN());
  });
  ok.insert(ok.end(), failed.begin(), failed.end());
  const int n = std::min<int>(requested, static_cast<int>(ok.size()));
  std::copy(ok.begin(), ok.begin() + n, perf);
  *returned = n;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t run(const char* call, Dir dir, cudnnHandle_t handle, const void* alpha,
                  const Problem& p, int algo, const void* in0, const void* in1, void* out,
                  void* ws, std::size_t ws_bytes, const void* beta) {
  if (!handle || !alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
  const Algo* a = find_algo(dir, algo);
  if (!a) return CUDNN_STATUS_BAD_PARAM;
  // Fault injection for the caller's fallback (the GPU tests): GANTRY_EMU_CUDNN_FAIL=staged
  // makes the algorithms that use a workspace fail when run, =all every algorithm, with
  // CUDNN_STATUS_EXECUTION_FAILED, as a real kernel may fail at launch; cudnnFind*Ex is not
  // affected, so the search still ranks them first. Read at each call.
  if (const char* fail = std::getenv("GANTRY_EMU_CUDNN_FAIL"))
    if (std::strcmp(fail, "all") == 0 || (std::strcmp(fail, "staged") == 0 && a->staged))
      return CUDNN_STATUS_EXECUTION_FAILED;
  const cudnnStatus_t s = can_run(dir, *a, p, in0, in1, out, ws, ws_bytes);
  if (s != CUDNN_STATUS_SUCCESS) return s;
  require_buffers(call, dir, p, in0, in1, out);
  const std::size_t need = workspace_bytes(dir, *a, p);
  if (need > 0) require_device(call, "workSpace", ws, static_cast<int64_t>(need / sizeof(float)));
  // Scaling parameters are host memory, read at the call (float for float data).
  queue_run(dir, *a, p, static_cast<const float*>(in0), static_cast<const float*>(in1),
            static_cast<float*>(out), ws, *static_cast<const float*>(alpha),
            *static_cast<const float*>(beta));
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

// ---- convolution entry points -----------------------------------------------------------------

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnFilterDescriptor_t wDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc,
    const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perf) {
  Problem p;
  if (!handle) return CUDNN_STATUS_BAD_PARAM;
  if (cudnnStatus_t s = make_problem(xDesc, wDesc, convDesc, yDesc, &p)) return s;
  return heuristics<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
      Dir::Forward, p, requestedAlgoCount, returnedAlgoCount, perf, convDesc->math);
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void* x,
    const cudnnFilterDescriptor_t wDesc, const void* w, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnTensorDescriptor_t yDesc, void* y, const int requestedAlgoCount,
    int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perf, void* workSpace,
    std::size_t workSpaceSizeInBytes) {
  Problem p;
  if (!handle) return CUDNN_STATUS_BAD_PARAM;
  if (cudnnStatus_t s = make_problem(xDesc, wDesc, convDesc, yDesc, &p)) return s;
  return find_ex<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
      "cudnnFindConvolutionForwardAlgorithmEx", Dir::Forward, p, static_cast<const float*>(x),
      static_cast<const float*>(w), static_cast<float*>(y), requestedAlgoCount, returnedAlgoCount,
      perf, workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void* alpha,
                                      const cudnnTensorDescriptor_t xDesc, const void* x,
                                      const cudnnFilterDescriptor_t wDesc, const void* w,
                                      const cudnnConvolutionDescriptor_t convDesc,
                                      cudnnConvolutionFwdAlgo_t algo, void* workSpace,
                                      std::size_t workSpaceSizeInBytes, const void* beta,
                                      const cudnnTensorDescriptor_t yDesc, void* y) {
  Problem p;
  if (cudnnStatus_t s = make_problem(xDesc, wDesc, convDesc, yDesc, &p)) return s;
  return run("cudnnConvolutionForward", Dir::Forward, handle, alpha, p, algo, x, w, y, workSpace,
             workSpaceSizeInBytes, beta);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const cudnnTensorDescriptor_t dyDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc,
    const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t* perf) {
  Problem p;
  if (!handle) return CUDNN_STATUS_BAD_PARAM;
  if (cudnnStatus_t s = make_problem(dxDesc, wDesc, convDesc, dyDesc, &p)) return s;
  return heuristics<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
      Dir::BackwardData, p, requestedAlgoCount, returnedAlgoCount, perf, convDesc->math);
}

cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const void* w,
    const cudnnTensorDescriptor_t dyDesc, const void* dy,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc, void* dx,
    const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t* perf,
    void* workSpace, std::size_t workSpaceSizeInBytes) {
  Problem p;
  if (!handle) return CUDNN_STATUS_BAD_PARAM;
  if (cudnnStatus_t s = make_problem(dxDesc, wDesc, convDesc, dyDesc, &p)) return s;
  return find_ex<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
      "cudnnFindConvolutionBackwardDataAlgorithmEx", Dir::BackwardData, p,
      static_cast<const float*>(w), static_cast<const float*>(dy), static_cast<float*>(dx),
      requestedAlgoCount, returnedAlgoCount, perf, workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void* alpha,
                                           const cudnnFilterDescriptor_t wDesc, const void* w,
                                           const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                           const cudnnConvolutionDescriptor_t convDesc,
                                           cudnnConvolutionBwdDataAlgo_t algo, void* workSpace,
                                           std::size_t workSpaceSizeInBytes, const void* beta,
                                           const cudnnTensorDescriptor_t dxDesc, void* dx) {
  Problem p;
  if (cudnnStatus_t s = make_problem(dxDesc, wDesc, convDesc, dyDesc, &p)) return s;
  return run("cudnnConvolutionBackwardData", Dir::BackwardData, handle, alpha, p, algo, w, dy, dx,
             workSpace, workSpaceSizeInBytes, beta);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnTensorDescriptor_t dyDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t dwDesc,
    const int requestedAlgoCount, int* returnedAlgoCount,
    cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
  Problem p;
  if (!handle) return CUDNN_STATUS_BAD_PARAM;
  if (cudnnStatus_t s = make_problem(xDesc, dwDesc, convDesc, dyDesc, &p)) return s;
  return heuristics<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
      Dir::BackwardFilter, p, requestedAlgoCount, returnedAlgoCount, perf, convDesc->math);
}

cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void* x,
    const cudnnTensorDescriptor_t dyDesc, const void* dy,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t dwDesc, void* dw,
    const int requestedAlgoCount, int* returnedAlgoCount,
    cudnnConvolutionBwdFilterAlgoPerf_t* perf, void* workSpace, std::size_t workSpaceSizeInBytes) {
  Problem p;
  if (!handle) return CUDNN_STATUS_BAD_PARAM;
  if (cudnnStatus_t s = make_problem(xDesc, dwDesc, convDesc, dyDesc, &p)) return s;
  return find_ex<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
      "cudnnFindConvolutionBackwardFilterAlgorithmEx", Dir::BackwardFilter, p,
      static_cast<const float*>(x), static_cast<const float*>(dy), static_cast<float*>(dw),
      requestedAlgoCount, returnedAlgoCount, perf, workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void* alpha,
                                             const cudnnTensorDescriptor_t xDesc, const void* x,
                                             const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                             const cudnnConvolutionDescriptor_t convDesc,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void* workSpace,
                                             std::size_t workSpaceSizeInBytes, const void* beta,
                                             const cudnnFilterDescriptor_t dwDesc, void* dw) {
  Problem p;
  if (cudnnStatus_t s = make_problem(xDesc, dwDesc, convDesc, dyDesc, &p)) return s;
  return run("cudnnConvolutionBackwardFilter", Dir::BackwardFilter, handle, alpha, p, algo, x, dy,
             dw, workSpace, workSpaceSizeInBytes, beta);
}

// ---- batch normalization ------------------------------------------------------------------------
// SPATIAL mode: one mean and variance per channel over N*H*W, parameters described as 1xCx1x1.

namespace {

struct BnShape {
  gemu_cudnn_tensor x;
  int C = 0;
  int64_t M = 0;  // values per channel
};

cudnnStatus_t bn_shape(cudnnHandle_t handle, cudnnBatchNormMode_t mode,
                       std::initializer_list<cudnnTensorDescriptor_t> data,
                       cudnnTensorDescriptor_t param, BnShape* s) {
  if (!handle || !param || !param->set) return CUDNN_STATUS_BAD_PARAM;
  if (mode != CUDNN_BATCHNORM_SPATIAL && mode != CUDNN_BATCHNORM_SPATIAL_PERSISTENT)
    return CUDNN_STATUS_NOT_SUPPORTED;  // per-activation mode is not modelled
  const gemu_cudnn_tensor* first = *data.begin();
  for (cudnnTensorDescriptor_t d : data) {
    if (!d || !d->set) return CUDNN_STATUS_BAD_PARAM;
    if (d->n != first->n || d->c != first->c || d->h != first->h || d->w != first->w)
      return CUDNN_STATUS_BAD_PARAM;
    if (d->type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
  }
  if (first->count() == 0) return CUDNN_STATUS_BAD_PARAM;
  // The parameter descriptor of cudnnDeriveBNTensorDescriptor for SPATIAL: 1 x C x 1 x 1.
  if (param->n != 1 || param->c != first->c || param->h != 1 || param->w != 1 ||
      param->type != CUDNN_DATA_FLOAT)
    return CUDNN_STATUS_BAD_PARAM;
  s->x = *first;
  s->C = first->c;
  s->M = int64_t(first->n) * first->h * first->w;
  return CUDNN_STATUS_SUCCESS;
}

// Per-channel mean and biased variance, in double.
void channel_stats(const BnShape& s, const float* x, int c, double* mean, double* var) {
  double sum = 0, sq = 0;
  for (int n = 0; n < s.x.n; ++n)
    for (int h = 0; h < s.x.h; ++h)
      for (int w = 0; w < s.x.w; ++w) sum += x[s.x.at(n, c, h, w)];
  const double m = sum / double(s.M);
  for (int n = 0; n < s.x.n; ++n)
    for (int h = 0; h < s.x.h; ++h)
      for (int w = 0; w < s.x.w; ++w) {
        const double d = x[s.x.at(n, c, h, w)] - m;
        sq += d * d;
      }
  *mean = m;
  *var = sq / double(s.M);
}

// Both given or both null, as the reference allows for the optional pairs.
bool pair_ok(const void* a, const void* b) { return (a == nullptr) == (b == nullptr); }

// "The same epsilon value should be used in forward and backward functions": the training
// forward remembers, per resultSaveInvVariance buffer, the epsilon it used and the values it
// wrote; a backward whose savedInvVariance still holds exactly those values but that is given
// another epsilon breaks that rule. (A buffer filled some other way, or overwritten since, is
// not checked: nothing says which epsilon it holds.)
struct SavedStats {
  double epsilon;
  std::vector<float> invstd;
};
std::mutex g_saved_mu;
std::map<const void*, SavedStats> g_saved;

void remember_saved(const float* sinv, int C, double epsilon) {
  std::lock_guard<std::mutex> lock(g_saved_mu);
  if (g_saved.size() > 4096) g_saved.clear();  // addresses are reused; keep the map small
  g_saved[sinv] = SavedStats{epsilon, std::vector<float>(sinv, sinv + C)};
}

// The epsilon of the forward that wrote sinv (and still holds its values), or a negative value.
double saved_epsilon(const float* sinv, int C) {
  std::lock_guard<std::mutex> lock(g_saved_mu);
  auto it = g_saved.find(sinv);
  if (it == g_saved.end() || it->second.invstd.size() != static_cast<std::size_t>(C) ||
      std::memcmp(it->second.invstd.data(), sinv, C * sizeof(float)) != 0)
    return -1.0;
  return it->second.epsilon;
}

}  // namespace

cudnnStatus_t cudnnBatchNormalizationForwardTraining(
    cudnnHandle_t handle, cudnnBatchNormMode_t mode, const void* alpha, const void* beta,
    const cudnnTensorDescriptor_t xDesc, const void* x, const cudnnTensorDescriptor_t yDesc,
    void* y, const cudnnTensorDescriptor_t bnScaleBiasMeanVarDesc, const void* bnScale,
    const void* bnBias, double exponentialAverageFactor, void* resultRunningMean,
    void* resultRunningVariance, double epsilon, void* resultSaveMean,
    void* resultSaveInvVariance) {
  BnShape s;
  if (cudnnStatus_t st = bn_shape(handle, mode, {xDesc, yDesc}, bnScaleBiasMeanVarDesc, &s)) return st;
  if (!alpha || !beta || !x || !y || !bnScale || !bnBias) return CUDNN_STATUS_BAD_PARAM;
  if (epsilon < 0.0 /* CUDNN_BN_MIN_EPSILON */ || !pair_ok(resultRunningMean, resultRunningVariance) ||
      !pair_ok(resultSaveMean, resultSaveInvVariance))
    return CUDNN_STATUS_BAD_PARAM;
  const char* call = "cudnnBatchNormalizationForwardTraining";
  require_device(call, "x", x, s.x.count());
  require_device(call, "y", y, s.x.count());
  require_device(call, "bnScale", bnScale, s.C);
  require_device(call, "bnBias", bnBias, s.C);
  if (resultRunningMean) {
    require_device(call, "resultRunningMean", resultRunningMean, s.C);
    require_device(call, "resultRunningVariance", resultRunningVariance, s.C);
  }
  if (resultSaveMean) {
    require_device(call, "resultSaveMean", resultSaveMean, s.C);
    require_device(call, "resultSaveInvVariance", resultSaveInvVariance, s.C);
  }
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  const float* xs = static_cast<const float*>(x);
  float* ys = static_cast<float*>(y);
  const float* gamma = static_cast<const float*>(bnScale);
  const float* bias = static_cast<const float*>(bnBias);
  float* rmean = static_cast<float*>(resultRunningMean);
  float* rvar = static_cast<float*>(resultRunningVariance);
  float* smean = static_cast<float*>(resultSaveMean);
  float* sinv = static_cast<float*>(resultSaveInvVariance);
  const double f = exponentialAverageFactor;
  gemu::enqueue_library_work("cudnnBatchNormalizationForwardTraining", [=] {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < s.C; ++c) {
      double mean, var;
      channel_stats(s, xs, c, &mean, &var);
      // "resultSaveInvVariance" holds 1 / sqrt(var + eps), the inverse standard deviation.
      const double invstd = 1.0 / std::sqrt(var + epsilon);
      for (int n = 0; n < s.x.n; ++n)
        for (int h = 0; h < s.x.h; ++h)
          for (int w = 0; w < s.x.w; ++w) {
            const int64_t i = s.x.at(n, c, h, w);
            ys[i] = blend(double(gamma[c]) * (xs[i] - mean) * invstd + bias[c], a, b, ys[i]);
          }
      if (rmean) {
        // The running variance is the unbiased one (M / (M - 1)); the old value is read even
        // with factor 1, so a NaN there stays NaN (0 * NaN).
        const double unbiased = var * double(s.M) / double(s.M - 1);
        rmean[c] = static_cast<float>(rmean[c] * (1.0 - f) + f * mean);
        rvar[c] = static_cast<float>(rvar[c] * (1.0 - f) + f * unbiased);
      }
      if (smean) {
        smean[c] = static_cast<float>(mean);
        sinv[c] = static_cast<float>(invstd);
      }
    }
    if (sinv) remember_saved(sinv, s.C, epsilon);
  });
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBatchNormalizationForwardInference(
    cudnnHandle_t handle, cudnnBatchNormMode_t mode, const void* alpha, const void* beta,
    const cudnnTensorDescriptor_t xDesc, const void* x, const cudnnTensorDescriptor_t yDesc,
    void* y, const cudnnTensorDescriptor_t bnScaleBiasMeanVarDesc, const void* bnScale,
    const void* bnBias, const void* estimatedMean, const void* estimatedVariance, double epsilon) {
  BnShape s;
  if (cudnnStatus_t st = bn_shape(handle, mode, {xDesc, yDesc}, bnScaleBiasMeanVarDesc, &s)) return st;
  if (!alpha || !beta || !x || !y || !bnScale || !bnBias || !estimatedMean || !estimatedVariance ||
      epsilon < 0.0)
    return CUDNN_STATUS_BAD_PARAM;
  const char* call = "cudnnBatchNormalizationForwardInference";
  require_device(call, "x", x, s.x.count());
  require_device(call, "y", y, s.x.count());
  require_device(call, "bnScale", bnScale, s.C);
  require_device(call, "bnBias", bnBias, s.C);
  require_device(call, "estimatedMean", estimatedMean, s.C);
  require_device(call, "estimatedVariance", estimatedVariance, s.C);
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  const float* xs = static_cast<const float*>(x);
  float* ys = static_cast<float*>(y);
  const float* gamma = static_cast<const float*>(bnScale);
  const float* bias = static_cast<const float*>(bnBias);
  const float* mean = static_cast<const float*>(estimatedMean);
  const float* var = static_cast<const float*>(estimatedVariance);
  gemu::enqueue_library_work("cudnnBatchNormalizationForwardInference", [=] {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < s.C; ++c) {
      const double invstd = 1.0 / std::sqrt(double(var[c]) + epsilon);
      for (int n = 0; n < s.x.n; ++n)
        for (int h = 0; h < s.x.h; ++h)
          for (int w = 0; w < s.x.w; ++w) {
            const int64_t i = s.x.at(n, c, h, w);
            ys[i] = blend(double(gamma[c]) * (xs[i] - double(mean[c])) * invstd + bias[c], a, b, ys[i]);
          }
    }
  });
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBatchNormalizationBackward(
    cudnnHandle_t handle, cudnnBatchNormMode_t mode, const void* alphaDataDiff,
    const void* betaDataDiff, const void* alphaParamDiff, const void* betaParamDiff,
    const cudnnTensorDescriptor_t xDesc, const void* x, const cudnnTensorDescriptor_t dyDesc,
    const void* dy, const cudnnTensorDescriptor_t dxDesc, void* dx,
    const cudnnTensorDescriptor_t dBnScaleBiasDesc, const void* bnScale, void* dBnScaleResult,
    void* dBnBiasResult, double epsilon, const void* savedMean, const void* savedInvVariance) {
  BnShape s;
  if (cudnnStatus_t st = bn_shape(handle, mode, {xDesc, dyDesc, dxDesc}, dBnScaleBiasDesc, &s)) return st;
  if (!alphaDataDiff || !betaDataDiff || !alphaParamDiff || !betaParamDiff || !x || !dy || !dx ||
      !bnScale || !dBnScaleResult || !dBnBiasResult || epsilon < 0.0 ||
      !pair_ok(savedMean, savedInvVariance))
    return CUDNN_STATUS_BAD_PARAM;
  const char* call = "cudnnBatchNormalizationBackward";
  require_device(call, "x", x, s.x.count());
  require_device(call, "dy", dy, s.x.count());
  require_device(call, "dx", dx, s.x.count());
  require_device(call, "bnScale", bnScale, s.C);
  require_device(call, "dBnScaleResult", dBnScaleResult, s.C);
  require_device(call, "dBnBiasResult", dBnBiasResult, s.C);
  if (savedMean) {
    require_device(call, "savedMean", savedMean, s.C);
    require_device(call, "savedInvVariance", savedInvVariance, s.C);
  }
  const float ad = *static_cast<const float*>(alphaDataDiff);
  const float bd = *static_cast<const float*>(betaDataDiff);
  const float ap = *static_cast<const float*>(alphaParamDiff);
  const float bp = *static_cast<const float*>(betaParamDiff);
  const float* xs = static_cast<const float*>(x);
  const float* dys = static_cast<const float*>(dy);
  float* dxs = static_cast<float*>(dx);
  const float* gamma = static_cast<const float*>(bnScale);
  float* dgamma = static_cast<float*>(dBnScaleResult);
  float* dbeta = static_cast<float*>(dBnBiasResult);
  const float* smean = static_cast<const float*>(savedMean);
  const float* sinv = static_cast<const float*>(savedInvVariance);
  gemu::enqueue_library_work("cudnnBatchNormalizationBackward", [=] {
    // Another epsilon than the forward's: the model computes what the reference's formula
    // gives with this epsilon (the statistics recomputed from x), so a caller that passes a
    // different one gets a different gradient, as it may from cuDNN.
    const double forward_eps = sinv ? saved_epsilon(sinv, s.C) : -1.0;
    const bool recompute = !smean || (forward_eps >= 0.0 && forward_eps != epsilon);
    if (smean && recompute)
      std::fprintf(stderr,
                   "gemu cudnn: cudnnBatchNormalizationBackward: epsilon %g, but the forward "
                   "that saved the statistics used %g (the reference: use the same epsilon in "
                   "forward and backward)\n",
                   epsilon, forward_eps);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < s.C; ++c) {
      double mean, invstd;
      if (!recompute) {
        mean = smean[c];
        invstd = sinv[c];
      } else {  // recomputed from x with epsilon
        double var;
        channel_stats(s, xs, c, &mean, &var);
        invstd = 1.0 / std::sqrt(var + epsilon);
      }
      double sum_dy = 0, sum_dy_xhat = 0;
      for (int n = 0; n < s.x.n; ++n)
        for (int h = 0; h < s.x.h; ++h)
          for (int w = 0; w < s.x.w; ++w) {
            const int64_t i = s.x.at(n, c, h, w);
            sum_dy += dys[i];
            sum_dy_xhat += dys[i] * (xs[i] - mean) * invstd;
          }
      // dx = gamma * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))
      const double k = double(gamma[c]) * invstd / double(s.M);
      for (int n = 0; n < s.x.n; ++n)
        for (int h = 0; h < s.x.h; ++h)
          for (int w = 0; w < s.x.w; ++w) {
            const int64_t i = s.x.at(n, c, h, w);
            const double xhat = (xs[i] - mean) * invstd;
            dxs[i] = blend(k * (double(s.M) * dys[i] - sum_dy - xhat * sum_dy_xhat), ad, bd, dxs[i]);
          }
      dgamma[c] = blend(sum_dy_xhat, ap, bp, dgamma[c]);
      dbeta[c] = blend(sum_dy, ap, bp, dbeta[c]);
    }
  });
  return CUDNN_STATUS_SUCCESS;
}

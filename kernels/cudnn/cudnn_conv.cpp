// Convolutions through cuDNN 9's legacy API (cudnnConvolutionForward / BackwardData /
// BackwardFilter). The transposed convolution of core/ops needs no extra entry: its forward
// is conv2d_backward_input and its input gradient is conv2d_forward.
//
// Algorithm choice: the first time a (shape, direction, TF32 setting, device, pointer
// alignment) is seen, every algorithm cuDNN offers is timed on the real buffers
// (cudnnFind*AlgorithmEx, what torch.backends.cudnn.benchmark = True does) and the fastest one
// that succeeded is cached.
// Workspaces come from the stream-ordered pool, so the per-call allocation is free.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "gantry/core/cuda/internal.h"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda::library {

namespace {

// RAII wrappers of the three descriptors (host-side objects; creating them is cheap).
struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc(int64_t n, int64_t c, int64_t h, int64_t w) {
    GANTRY_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
    GANTRY_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                                  static_cast<int>(n), static_cast<int>(c),
                                                  static_cast<int>(h), static_cast<int>(w)));
  }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
};

struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc(int64_t o, int64_t c, int64_t h, int64_t w) {
    GANTRY_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d));
    GANTRY_CUDNN_CHECK(cudnnSetFilter4dDescriptor(d, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                                  static_cast<int>(o), static_cast<int>(c),
                                                  static_cast<int>(h), static_cast<int>(w)));
  }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d); }
};

struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc(int padding, int stride) {
    GANTRY_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d));
    // Cross-correlation (no kernel flip) is what deep-learning "convolution" means.
    GANTRY_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d, padding, padding, stride, stride, 1, 1,
                                                       CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d); }
};

// The descriptors of one convolution: x [N,C,H,W], w [O,C,kh,kw], y [N,O,OH,OW].
struct Descs {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  explicit Descs(const Conv2dShape& s)
      : x(s.N, s.C, s.H, s.W), y(s.N, s.O, s.OH(), s.OW()), w(s.O, s.C, s.kh, s.kw),
        conv(s.padding, s.stride) {}
};

// TF32 on: CUDNN_DEFAULT_MATH lets cuDNN use TF32 tensor cores for fp32 (Ampere and newer).
// TF32 off: CUDNN_FMA_MATH restricts it to full-precision FMA kernels. (PyTorch does the same.)
cudnnMathType_t math_type() { return conv_allow_tf32() ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH; }

enum class Dir { Forward, BackwardData, BackwardFilter };

struct Choice {
  int algo = 0;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  size_t workspace = 0;
};

// The largest of 16, 8, 4, 1 bytes that divides every pointer. Some cuDNN kernels (vectorised
// and tensor-core ones) need aligned buffers, so an algorithm chosen on fresh pool buffers
// (256-byte aligned) may be unsupported for a view that starts inside a tensor (narrow0 of a
// batch): the alignment is part of the key, as in PyTorch's cuDNN plan cache.
int alignment(std::initializer_list<const void*> ptrs) {
  std::uintptr_t bits = 0;
  for (const void* p : ptrs) bits |= reinterpret_cast<std::uintptr_t>(p);
  for (int a : {16, 8, 4})
    if (bits % a == 0) return a;
  return 1;
}

using Key = std::tuple<int, int, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int, int, int>;
Key make_key(Dir dir, const Conv2dShape& s, int align) {
  return Key(static_cast<int>(dir), current_device(), conv_allow_tf32(), s.N, s.C, s.H, s.W, s.O,
             s.kh, s.kw, s.stride, s.padding, align);
}

std::mutex g_mutex;
std::map<Key, Choice> g_cache;

// A workspace budget for the search: the largest any algorithm asks for, capped so the search
// cannot exhaust the GPU (algorithms that need more are skipped by cuDNN).
size_t search_budget(size_t largest) {
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  return std::min<size_t>({largest, free_b / 2, size_t(1) << 30});
}

// Picks the first (fastest) successful result; perf arrays are sorted by time.
template <class Perf>
Choice pick(const Perf* perf, int count, const char* what) {
  for (int i = 0; i < count; ++i) {
    if (perf[i].status == CUDNN_STATUS_SUCCESS)
      return Choice{static_cast<int>(perf[i].algo),
                    conv_allow_tf32() ? perf[i].mathType : CUDNN_FMA_MATH, perf[i].memory};
  }
  throw CudaError(std::string("cuDNN: no ") + what + " algorithm succeeded for this shape");
}

Choice choose_forward(const Descs& d, const float* x, const float* w, float* y) {
  cudnnHandle_t h = cudnn_handle();
  GANTRY_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, math_type()));
  constexpr int kMax = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
  cudnnConvolutionFwdAlgoPerf_t perf[kMax];
  int n = 0;
  GANTRY_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x.d, d.w.d, d.conv.d, d.y.d,
                                                            kMax, &n, perf));
  size_t largest = 0;
  for (int i = 0; i < n; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS) largest = std::max(largest, perf[i].memory);
  Scratch ws(search_budget(largest));
  GANTRY_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, d.x.d, x, d.w.d, w, d.conv.d,
                                                            d.y.d, y, kMax, &n, perf, ws.get(),
                                                            ws.size()));
  return pick(perf, n, "forward");
}

Choice choose_backward_data(const Descs& d, const float* w, const float* dy, float* dx) {
  cudnnHandle_t h = cudnn_handle();
  GANTRY_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, math_type()));
  constexpr int kMax = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
  cudnnConvolutionBwdDataAlgoPerf_t perf[kMax];
  int n = 0;
  GANTRY_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w.d, d.y.d, d.conv.d, d.x.d,
                                                                 kMax, &n, perf));
  size_t largest = 0;
  for (int i = 0; i < n; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS) largest = std::max(largest, perf[i].memory);
  Scratch ws(search_budget(largest));
  GANTRY_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
      h, d.w.d, w, d.y.d, dy, d.conv.d, d.x.d, dx, kMax, &n, perf, ws.get(), ws.size()));
  return pick(perf, n, "backward-data");
}

Choice choose_backward_filter(const Descs& d, const float* x, const float* dy, float* dw) {
  cudnnHandle_t h = cudnn_handle();
  GANTRY_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, math_type()));
  constexpr int kMax = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
  cudnnConvolutionBwdFilterAlgoPerf_t perf[kMax];
  int n = 0;
  GANTRY_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x.d, d.y.d, d.conv.d,
                                                                   d.w.d, kMax, &n, perf));
  size_t largest = 0;
  for (int i = 0; i < n; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS) largest = std::max(largest, perf[i].memory);
  Scratch ws(search_budget(largest));
  GANTRY_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
      h, d.x.d, x, d.y.d, dy, d.conv.d, d.w.d, dw, kMax, &n, perf, ws.get(), ws.size()));
  return pick(perf, n, "backward-filter");
}

// The cached choice, searching on a miss. The search runs outside the lock (it launches GPU
// work); two threads racing on the same new shape both search, which is harmless.
template <class Search>
Choice cached(Dir dir, const Conv2dShape& s, int align, Search search) {
  const Key key = make_key(dir, s, align);
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_cache.find(key);
    if (it != g_cache.end()) return it->second;
  }
  const Choice c = search();
  std::lock_guard<std::mutex> lock(g_mutex);
  g_cache[key] = c;
  return c;
}

}  // namespace

void conv2d_forward(const float* x, const float* w, const float* bias, float* y,
                    const Conv2dShape& s) {
  if (s.N * s.O * s.OH() * s.OW() == 0) return;
  Descs d(s);
  const Choice c = cached(Dir::Forward, s, alignment({x, w, y}),
                          [&] { return choose_forward(d, x, w, y); });
  GANTRY_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
  Scratch ws(c.workspace);
  const float one = 1.f, zero = 0.f;
  GANTRY_CUDNN_CHECK(cudnnConvolutionForward(cudnn_handle(), &one, d.x.d, x, d.w.d, w, d.conv.d,
                                             static_cast<cudnnConvolutionFwdAlgo_t>(c.algo),
                                             ws.get(), ws.size(), &zero, d.y.d, y));
  if (bias) add_channel_bias(y, bias, s.N, s.O, s.OH() * s.OW());
}

void conv2d_backward_input(const float* dy, const float* w, float* dx, const Conv2dShape& s) {
  if (s.N * s.C * s.H * s.W == 0) return;
  Descs d(s);
  const Choice c =
      cached(Dir::BackwardData, s, alignment({dy, w, dx}),
             [&] { return choose_backward_data(d, w, dy, dx); });
  GANTRY_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
  Scratch ws(c.workspace);
  const float one = 1.f, zero = 0.f;
  GANTRY_CUDNN_CHECK(cudnnConvolutionBackwardData(
      cudnn_handle(), &one, d.w.d, w, d.y.d, dy, d.conv.d,
      static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), ws.get(), ws.size(), &zero, d.x.d, dx));
}

void conv2d_backward_weight(const float* x, const float* dy, float* dw, float* dbias,
                            const Conv2dShape& s) {
  if (s.O * s.C * s.kh * s.kw == 0) return;
  if (s.N * s.OH() * s.OW() == 0) {  // an empty batch: cuDNN rejects N = 0; the sums are 0
    fill(dw, s.O * s.C * s.kh * s.kw, 0.f);
    if (dbias) fill(dbias, s.O, 0.f);
    return;
  }
  Descs d(s);
  const Choice c =
      cached(Dir::BackwardFilter, s, alignment({x, dy, dw}),
             [&] { return choose_backward_filter(d, x, dy, dw); });
  GANTRY_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
  Scratch ws(c.workspace);
  const float one = 1.f, zero = 0.f;
  GANTRY_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
      cudnn_handle(), &one, d.x.d, x, d.y.d, dy, d.conv.d,
      static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), ws.get(), ws.size(), &zero, d.w.d, dw));
  if (dbias) sum_channels(dy, dbias, s.N, s.O, s.OH() * s.OW());
}

}  // namespace gantry::cuda::library

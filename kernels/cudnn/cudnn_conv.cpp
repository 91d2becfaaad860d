// Convolutions through cuDNN 9's legacy API (cudnnConvolutionForward / BackwardData /
// BackwardFilter). The transposed convolution of core/ops needs no extra entry: its forward
// is conv2d_backward_input and its input gradient is conv2d_forward.
//
// Algorithm choice: the first time a (shape, direction, TF32 setting, device, pointer
// alignment) is seen, every algorithm cuDNN offers is timed on the real buffers
// (cudnnFind*AlgorithmEx, what torch.backends.cudnn.benchmark = True does) and the ones that
// succeeded are cached, fastest first. A call runs the first; if it fails for a reason other
// than a bad parameter (its workspace does not fit, ALLOC_FAILED, EXECUTION_FAILED,
// NOT_SUPPORTED), that algorithm is dropped from the cache and the next one runs, as PyTorch's
// AlgoIterator::try_all does; only when every one fails does the call throw.
// Workspaces come from the stream-ordered pool, so the per-call allocation is free.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <sstream>
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
using Choices = std::vector<Choice>;  // fastest first

std::string describe(const char* what, const Conv2dShape& s) {
  std::ostringstream os;
  os << "conv2d " << what << " of x [" << s.N << ", " << s.C << ", " << s.H << ", " << s.W
     << "], weight [" << s.O << ", " << s.C << ", " << s.kh << ", " << s.kw << "], stride "
     << s.stride << ", padding " << s.padding << (conv_allow_tf32() ? ", TF32" : ", fp32");
  return os.str();
}

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
std::map<Key, Choices> g_cache;

// A workspace budget for the search: the largest any algorithm asks for, capped so the search
// cannot exhaust the GPU (algorithms that need more are skipped by cuDNN). The pool keeps what
// it frees (release threshold UINT64_MAX): the driver counts that memory as used, but it is
// free for our allocations, so the pool's reserved-but-unused bytes count as free here.
size_t search_budget(size_t largest) {
  size_t free_b = 0, total_b = 0;
  GANTRY_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  uint64_t reserved = 0, used = 0;  // the attributes are cuuint64_t
  GANTRY_CUDA_CHECK(cudaMemPoolGetAttribute(memory_pool(), cudaMemPoolAttrReservedMemCurrent, &reserved));
  GANTRY_CUDA_CHECK(cudaMemPoolGetAttribute(memory_pool(), cudaMemPoolAttrUsedMemCurrent, &used));
  const size_t available = free_b + static_cast<size_t>(reserved > used ? reserved - used : 0);
  return std::min<size_t>({largest, available / 2, size_t(1) << 30});
}

// Every successful result, in cuDNN's order (sorted by time: fastest first).
template <class Perf>
Choices successful(const Perf* perf, int count, const char* what, const Conv2dShape& s) {
  Choices ok;
  for (int i = 0; i < count; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS)
      ok.push_back(Choice{static_cast<int>(perf[i].algo),
                          conv_allow_tf32() ? perf[i].mathType : CUDNN_FMA_MATH, perf[i].memory});
  if (ok.empty())
    throw CudaError("cuDNN: no algorithm succeeded in the search for " + describe(what, s));
  return ok;
}

Choices choose_forward(const Descs& d, const Conv2dShape& s, const float* x, const float* w,
                       float* y) {
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
  return successful(perf, n, "forward", s);
}

Choices choose_backward_data(const Descs& d, const Conv2dShape& s, const float* w,
                             const float* dy, float* dx) {
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
  return successful(perf, n, "backward-data", s);
}

Choices choose_backward_filter(const Descs& d, const Conv2dShape& s, const float* x,
                               const float* dy, float* dw) {
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
  return successful(perf, n, "backward-filter", s);
}

// The cached choices, searching on a miss. The search runs outside the lock (it launches GPU
// work); two threads racing on the same new shape both search, which is harmless.
template <class Search>
Choices cached(const Key& key, Search search) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_cache.find(key);
    if (it != g_cache.end()) return it->second;
  }
  Choices c = search();
  std::lock_guard<std::mutex> lock(g_mutex);
  g_cache[key] = c;
  return c;
}

// Drops a choice that failed; with none left the next call searches again.
void forget(const Key& key, const Choice& failed) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_cache.find(key);
  if (it == g_cache.end()) return;
  Choices& c = it->second;
  c.erase(std::remove_if(c.begin(), c.end(),
                         [&](const Choice& x) { return x.algo == failed.algo && x.math == failed.math; }),
          c.end());
  if (c.empty()) g_cache.erase(it);
}

bool out_of_memory(const CudaError& e) {
  return std::string(e.what()).find("out of memory") != std::string::npos;
}

// Runs the cached algorithms, fastest first, until one succeeds: run(choice, workspace) makes
// the cuDNN call and returns its status. A bad parameter (CUDNN_STATUS_BAD_PARAM and its
// sub-codes) is a wrong call, not the algorithm's fault: it throws at once. Any other failure,
// or a workspace the pool cannot give, drops that algorithm and tries the next.
template <class Search, class Run>
void run_cached(Dir dir, const char* what, const char* call, const Conv2dShape& s, int align,
                Search search, Run run) {
  const Key key = make_key(dir, s, align);
  std::string failures;
  for (const Choice& c : cached(key, search)) {
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    try {
      Scratch ws(c.workspace);
      st = run(c, ws);
    } catch (const CudaError& e) {
      if (!out_of_memory(e)) throw;
      forget(key, c);
      failures += "; algorithm " + std::to_string(c.algo) + ": no memory for its workspace of " +
                  std::to_string(c.workspace) + " bytes";
      continue;
    }
    if (st == CUDNN_STATUS_SUCCESS) return;
    if (CUDNN_STATUS_CATEGORY(st) == CUDNN_STATUS_BAD_PARAM) detail::check(st, call, __FILE__, __LINE__);
    forget(key, c);
    failures += "; algorithm " + std::to_string(c.algo) + ": " + cudnnGetErrorString(st);
  }
  throw CudaError("cuDNN: every algorithm failed in " + std::string(call) + " for " +
                  describe(what, s) + failures);
}

}  // namespace

void conv2d_forward(const float* x, const float* w, const float* bias, float* y,
                    const Conv2dShape& s) {
  if (s.N * s.O * s.OH() * s.OW() == 0) return;
  Descs d(s);
  const float one = 1.f, zero = 0.f;
  run_cached(Dir::Forward, "forward", "cudnnConvolutionForward", s, alignment({x, w, y}),
             [&] { return choose_forward(d, s, x, w, y); },
             [&](const Choice& c, const Scratch& ws) {
               GANTRY_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
               return cudnnConvolutionForward(cudnn_handle(), &one, d.x.d, x, d.w.d, w, d.conv.d,
                                              static_cast<cudnnConvolutionFwdAlgo_t>(c.algo),
                                              ws.get(), ws.size(), &zero, d.y.d, y);
             });
  if (bias) add_channel_bias(y, bias, s.N, s.O, s.OH() * s.OW());
}

void conv2d_backward_input(const float* dy, const float* w, float* dx, const Conv2dShape& s) {
  if (s.N * s.C * s.H * s.W == 0) return;
  Descs d(s);
  const float one = 1.f, zero = 0.f;
  run_cached(Dir::BackwardData, "backward-data", "cudnnConvolutionBackwardData", s,
             alignment({dy, w, dx}), [&] { return choose_backward_data(d, s, w, dy, dx); },
             [&](const Choice& c, const Scratch& ws) {
               GANTRY_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
               return cudnnConvolutionBackwardData(
                   cudnn_handle(), &one, d.w.d, w, d.y.d, dy, d.conv.d,
                   static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), ws.get(), ws.size(), &zero,
                   d.x.d, dx);
             });
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
  const float one = 1.f, zero = 0.f;
  run_cached(Dir::BackwardFilter, "backward-filter", "cudnnConvolutionBackwardFilter", s,
             alignment({x, dy, dw}), [&] { return choose_backward_filter(d, s, x, dy, dw); },
             [&](const Choice& c, const Scratch& ws) {
               GANTRY_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
               return cudnnConvolutionBackwardFilter(
                   cudnn_handle(), &one, d.x.d, x, d.y.d, dy, d.conv.d,
                   static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), ws.get(), ws.size(),
                   &zero, d.w.d, dw);
             });
  if (dbias) sum_channels(dy, dbias, s.N, s.O, s.OH() * s.OW());
}

}  // namespace gantry::cuda::library

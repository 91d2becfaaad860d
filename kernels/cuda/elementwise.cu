// Elementwise kernels: one thread per element (grid-stride loop). These are memory bound:
// each element is read once and written once, consecutive threads touch consecutive
// addresses (coalesced 128-byte transactions), so they run at close to DRAM bandwidth
// without shared memory or other tricks.
#include <climits>
#include <stdexcept>
#include <string>

#include "gantry/kernels/cuda/common.cuh"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda {

namespace {
bool g_force_wide_indices = false;  // tests: the int64_t instances at small shapes
}  // namespace

bool kern::index_fits_int32(int64_t n) { return !g_force_wide_indices && n <= INT32_MAX; }

void set_force_wide_indices(bool force) { g_force_wide_indices = force; }

using namespace kern;

namespace {

// ---- unary ---------------------------------------------------------------------------------
// The op is a template parameter, so each launch compiles to a tight loop with no switch.
template <Unary Op>
__device__ __forceinline__ float unary_f(float x) {
  if constexpr (Op == Unary::Neg) return -x;
  if constexpr (Op == Unary::Square) return x * x;
  if constexpr (Op == Unary::Sqrt) return sqrtf(x);
  if constexpr (Op == Unary::Exp) return expf(x);
  if constexpr (Op == Unary::Log) return logf(x);
  if constexpr (Op == Unary::Abs) return fabsf(x);
  if constexpr (Op == Unary::Relu) return x > 0.f ? x : 0.f;
  if constexpr (Op == Unary::Tanh) return tanhf(x);
  if constexpr (Op == Unary::Sigmoid) return 1.f / (1.f + expf(-x));
  return x;
}

// dx = dy * f'(x), using y = f(x) where that is cheaper (tanh, sigmoid, sqrt, exp).
template <Unary Op>
__device__ __forceinline__ float unary_df(float x, float y, float dy) {
  if constexpr (Op == Unary::Neg) return -dy;
  if constexpr (Op == Unary::Square) return 2.f * x * dy;
  if constexpr (Op == Unary::Sqrt) return dy / (2.f * y);
  if constexpr (Op == Unary::Exp) return dy * y;
  if constexpr (Op == Unary::Log) return dy / x;
  if constexpr (Op == Unary::Abs) return x > 0.f ? dy : (x < 0.f ? -dy : 0.f);
  if constexpr (Op == Unary::Relu) return x > 0.f ? dy : 0.f;
  if constexpr (Op == Unary::Tanh) return dy * (1.f - y * y);
  if constexpr (Op == Unary::Sigmoid) return dy * y * (1.f - y);
  return dy;
}

template <Unary Op>
__global__ void unary_forward_kernel(const float* __restrict__ x, float* __restrict__ y,
                                     int64_t n) {
  GANTRY_GRID_LOOP(i, n) y[i] = unary_f<Op>(x[i]);
}

template <Unary Op>
__global__ void unary_backward_kernel(const float* __restrict__ x, const float* __restrict__ y,
                                      const float* __restrict__ dy, float* __restrict__ dx,
                                      int64_t n) {
  // x or y may be null when the op does not need it (the caller passes what it has).
  GANTRY_GRID_LOOP(i, n) dx[i] = unary_df<Op>(x ? x[i] : 0.f, y ? y[i] : 0.f, dy[i]);
}

template <Unary Op>
void launch_unary_forward(const float* x, float* y, int64_t n) {
  unary_forward_kernel<Op><<<blocks_for(n), kThreads, 0, stream()>>>(x, y, n);
}

template <Unary Op>
void launch_unary_backward(const float* x, const float* y, const float* dy, float* dx,
                           int64_t n) {
  unary_backward_kernel<Op><<<blocks_for(n), kThreads, 0, stream()>>>(x, y, dy, dx, n);
}

// Calls F<op> for the runtime op: the one switch that turns the enum into a template.
#define GANTRY_UNARY_SWITCH(op, CALL)                  \
  switch (op) {                                        \
    case Unary::Neg: CALL(Unary::Neg); break;          \
    case Unary::Square: CALL(Unary::Square); break;    \
    case Unary::Sqrt: CALL(Unary::Sqrt); break;        \
    case Unary::Exp: CALL(Unary::Exp); break;          \
    case Unary::Log: CALL(Unary::Log); break;          \
    case Unary::Abs: CALL(Unary::Abs); break;          \
    case Unary::Relu: CALL(Unary::Relu); break;        \
    case Unary::Tanh: CALL(Unary::Tanh); break;        \
    case Unary::Sigmoid: CALL(Unary::Sigmoid); break;  \
  }

// ---- simple maps ---------------------------------------------------------------------------
__global__ void fill_kernel(float* p, int64_t n, float v) { GANTRY_GRID_LOOP(i, n) p[i] = v; }

__global__ void leaky_relu_forward_kernel(const float* __restrict__ x, float* __restrict__ y,
                                          int64_t n, float slope) {
  GANTRY_GRID_LOOP(i, n) y[i] = x[i] > 0.f ? x[i] : x[i] * slope;
}

__global__ void leaky_relu_backward_kernel(const float* __restrict__ x,
                                           const float* __restrict__ dy, float* __restrict__ dx,
                                           int64_t n, float slope) {
  GANTRY_GRID_LOOP(i, n) dx[i] = x[i] > 0.f ? dy[i] : dy[i] * slope;
}

__global__ void clamp_forward_kernel(const float* __restrict__ x, float* __restrict__ y,
                                     int64_t n, float lo, float hi) {
  // std::min(std::max(x, lo), hi) as the CPU kernel, so NaN stays NaN (as torch.clamp);
  // fminf/fmaxf would return lo for a NaN and hide it.
  GANTRY_GRID_LOOP(i, n) {
    const float t = x[i] < lo ? lo : x[i];
    y[i] = hi < t ? hi : t;
  }
}

__global__ void clamp_backward_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                      float* __restrict__ dx, int64_t n, float lo, float hi) {
  GANTRY_GRID_LOOP(i, n) dx[i] = (x[i] >= lo && x[i] <= hi) ? dy[i] : 0.f;
}

// Not __restrict__: called in place (y == x) for the running statistics and gemm's beta-only
// path; restrict on aliased pointers is undefined (and licenses non-coherent loads of x).
__global__ void affine_kernel(const float* x, float* y, int64_t n, float a, float b) {
  GANTRY_GRID_LOOP(i, n) y[i] = a * x[i] + b;
}

// Not __restrict__: y may alias x (in-place accumulation).
__global__ void axpy_kernel(const float* x, const float* other, float* y, int64_t n,
                            float alpha) {
  GANTRY_GRID_LOOP(i, n) y[i] = x[i] + alpha * other[i];
}

__global__ void dropout_kernel(const float* __restrict__ x, const float* __restrict__ u,
                               float* __restrict__ y, float* __restrict__ mask, int64_t n,
                               float p, float scale) {
  GANTRY_GRID_LOOP(i, n) {
    const float m = u[i] < p ? 0.f : scale;
    if (mask) mask[i] = m;
    y[i] = x[i] * m;
  }
}

__global__ void add_channel_bias_kernel(float* __restrict__ y, const float* __restrict__ bias,
                                        int64_t n, int64_t C, int64_t S) {
  GANTRY_GRID_LOOP(i, n) y[i] += bias[(i / S) % C];
}

// ---- binary with broadcasting --------------------------------------------------------------
template <Binary Op>
__device__ __forceinline__ float binary_f(float a, float b) {
  if constexpr (Op == Binary::Add) return a + b;
  if constexpr (Op == Binary::Sub) return a - b;
  if constexpr (Op == Binary::Mul) return a * b;
  return a / b;
}

// Same shapes: the plain elementwise case (most calls).
template <Binary Op>
__global__ void binary_same_kernel(const float* __restrict__ a, const float* __restrict__ b,
                                   float* __restrict__ out, int64_t n) {
  GANTRY_GRID_LOOP(i, n) out[i] = binary_f<Op>(a[i], b[i]);
}

// General broadcasting. Each thread turns its output index into coordinates (last dim
// fastest) and the coordinates into offsets of a and b, where a broadcast dim (size 1) has
// stride 0: it reads the same element for every coordinate along that dim.
struct BroadcastIndex {
  int ndim;
  int64_t out_size[kMaxDims];
  int64_t a_stride[kMaxDims];
  int64_t b_stride[kMaxDims];
};

template <Binary Op, class I>  // I: the index type (common.cuh, index_fits_int32)
__global__ void binary_broadcast_kernel(const float* __restrict__ a, const float* __restrict__ b,
                                        float* __restrict__ out, int64_t n, BroadcastIndex ix) {
  GANTRY_GRID_LOOP(i, n) {
    I rest = static_cast<I>(i), ia = 0, ib = 0;
    for (int d = ix.ndim - 1; d >= 0; --d) {
      const I size = static_cast<I>(ix.out_size[d]);
      const I next = rest / size, coord = rest - next * size;
      rest = next;
      ia += coord * static_cast<I>(ix.a_stride[d]);
      ib += coord * static_cast<I>(ix.b_stride[d]);
    }
    out[i] = binary_f<Op>(a[ia], b[ib]);
  }
}

template <Binary Op>
void launch_broadcast(const float* a, const float* b, float* out, int64_t n,
                      const BroadcastIndex& ix) {
  // Every offset of a and b is below n (they are no larger than out).
  if (index_fits_int32(n))
    binary_broadcast_kernel<Op, int32_t><<<blocks_for(n), kThreads, 0, stream()>>>(a, b, out, n, ix);
  else
    binary_broadcast_kernel<Op, int64_t><<<blocks_for(n), kThreads, 0, stream()>>>(a, b, out, n, ix);
}

// Strides of a contiguous tensor of `shape` read as `out_shape` (0 along broadcast dims).
BroadcastIndex make_index(const int64_t* a_shape, const int64_t* b_shape,
                          const int64_t* out_shape, int ndim) {
  if (ndim > kMaxDims)
    throw std::invalid_argument("cuda::binary_broadcast: " + std::to_string(ndim) +
                                " dims; at most " + std::to_string(kMaxDims));
  BroadcastIndex ix{};
  ix.ndim = ndim;
  int64_t sa = 1, sb = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    ix.out_size[d] = out_shape[d];
    ix.a_stride[d] = a_shape[d] == 1 ? 0 : sa;
    ix.b_stride[d] = b_shape[d] == 1 ? 0 : sb;
    sa *= a_shape[d];
    sb *= b_shape[d];
  }
  return ix;
}

__global__ void transpose_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t M,
                                 int64_t N) {
  // A 32x32 tile goes through shared memory so that both the read of x (along a row) and the
  // write of y (along a row of y = a column of x) are coalesced. The +1 column of padding
  // shifts each row to a different bank, so the column-wise reads do not conflict.
  // gridDim.y is at most 65535, so row tiles are a grid-stride loop (M may exceed 2M rows);
  // the second barrier keeps the next tile's writes off the tile still being read.
  __shared__ float tile[32][33];
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * 32;
  for (int64_t r0 = static_cast<int64_t>(blockIdx.y) * 32; r0 < M;
       r0 += static_cast<int64_t>(gridDim.y) * 32) {
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
      const int64_t r = r0 + k, c = c0 + threadIdx.x;
      if (r < M && c < N) tile[k][threadIdx.x] = x[r * N + c];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
      const int64_t c = c0 + k, r = r0 + threadIdx.x;  // y[c, r] = x[r, c]
      if (r < M && c < N) y[c * M + r] = tile[threadIdx.x][k];
    }
    __syncthreads();
  }
}

// A whole concatenation in one launch, not one copy per input: the inputs' pointers and their
// column ranges in the output row travel in the argument block (as multi-tensor Adam's), and
// thread i of the grid-stride loop writes output element i of this batch of inputs, reading
// from the input whose range holds its column (a binary search over <= 64 offsets). Writes
// are coalesced; each input's reads are contiguous within a row.
constexpr int kMaxCatParts = 64;
struct CatParts {
  const float* src[kMaxCatParts];
  int64_t first_col[kMaxCatParts + 1];  // column of the output row where each input starts
  int count;
};
static_assert(sizeof(CatParts) + 3 * sizeof(int64_t) <= 4096,
              "a kernel's parameters must fit in 4 KiB");

__global__ void cat_kernel(float* __restrict__ out, int64_t out_row, int64_t rows,
                           const __grid_constant__ CatParts b) {
  const int64_t width = b.first_col[b.count] - b.first_col[0];
  GANTRY_GRID_LOOP(i, rows * width) {
    const int64_t r = i / width, c = b.first_col[0] + i % width;
    int lo = 0, hi = b.count;
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (c >= b.first_col[mid]) lo = mid;
      else hi = mid;
    }
    const int64_t w = b.first_col[lo + 1] - b.first_col[lo];
    out[r * out_row + c] = b.src[lo][r * w + (c - b.first_col[lo])];
  }
}

}  // namespace

// ---- entry points --------------------------------------------------------------------------
void fill(float* p, int64_t n, float value) {
  if (n <= 0) return;
  if (value == 0.f) {
    GANTRY_CUDA_CHECK(cudaMemsetAsync(p, 0, static_cast<size_t>(n) * sizeof(float), stream()));
    return;
  }
  fill_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(p, n, value);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void unary_forward(Unary op, const float* x, float* y, int64_t n) {
  if (n <= 0) return;
#define GANTRY_CALL(OP) launch_unary_forward<OP>(x, y, n)
  GANTRY_UNARY_SWITCH(op, GANTRY_CALL)
#undef GANTRY_CALL
  GANTRY_CUDA_LAUNCH_CHECK();
}

void unary_backward(Unary op, const float* x, const float* y, const float* dy, float* dx,
                    int64_t n) {
  if (n <= 0) return;
#define GANTRY_CALL(OP) launch_unary_backward<OP>(x, y, dy, dx, n)
  GANTRY_UNARY_SWITCH(op, GANTRY_CALL)
#undef GANTRY_CALL
  GANTRY_CUDA_LAUNCH_CHECK();
}

void leaky_relu_forward(const float* x, float* y, int64_t n, float slope) {
  if (n <= 0) return;
  leaky_relu_forward_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(x, y, n, slope);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void leaky_relu_backward(const float* x, const float* dy, float* dx, int64_t n, float slope) {
  if (n <= 0) return;
  leaky_relu_backward_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(x, dy, dx, n, slope);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void clamp_forward(const float* x, float* y, int64_t n, float lo, float hi) {
  if (n <= 0) return;
  clamp_forward_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(x, y, n, lo, hi);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void clamp_backward(const float* x, const float* dy, float* dx, int64_t n, float lo, float hi) {
  if (n <= 0) return;
  clamp_backward_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(x, dy, dx, n, lo, hi);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void affine(const float* x, float* y, int64_t n, float a, float b) {
  if (n <= 0) return;
  affine_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(x, y, n, a, b);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void axpy(const float* x, const float* other, float* y, int64_t n, float alpha) {
  if (n <= 0) return;
  axpy_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(x, other, y, n, alpha);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void dropout_apply(const float* x, const float* u, float* y, float* mask, int64_t n, float p) {
  if (n <= 0) return;
  const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;
  dropout_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(x, u, y, mask, n, p, scale);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void add_channel_bias(float* y, const float* bias, int64_t N, int64_t C, int64_t S) {
  const int64_t n = N * C * S;
  if (n <= 0) return;
  add_channel_bias_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(y, bias, n, C, S);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void binary_broadcast(Binary op, const float* a, const int64_t* a_shape, const float* b,
                      const int64_t* b_shape, float* out, const int64_t* out_shape, int ndim) {
  int64_t n = 1;
  bool same = true;
  for (int d = 0; d < ndim; ++d) {
    n *= out_shape[d];
    same = same && a_shape[d] == out_shape[d] && b_shape[d] == out_shape[d];
  }
  if (n <= 0) return;
  const unsigned blocks = blocks_for(n);
  if (same) {
    switch (op) {
      case Binary::Add: binary_same_kernel<Binary::Add><<<blocks, kThreads, 0, stream()>>>(a, b, out, n); break;
      case Binary::Sub: binary_same_kernel<Binary::Sub><<<blocks, kThreads, 0, stream()>>>(a, b, out, n); break;
      case Binary::Mul: binary_same_kernel<Binary::Mul><<<blocks, kThreads, 0, stream()>>>(a, b, out, n); break;
      case Binary::Div: binary_same_kernel<Binary::Div><<<blocks, kThreads, 0, stream()>>>(a, b, out, n); break;
    }
  } else {
    const BroadcastIndex ix = make_index(a_shape, b_shape, out_shape, ndim);
    switch (op) {
      case Binary::Add: launch_broadcast<Binary::Add>(a, b, out, n, ix); break;
      case Binary::Sub: launch_broadcast<Binary::Sub>(a, b, out, n, ix); break;
      case Binary::Mul: launch_broadcast<Binary::Mul>(a, b, out, n, ix); break;
      case Binary::Div: launch_broadcast<Binary::Div>(a, b, out, n, ix); break;
    }
  }
  GANTRY_CUDA_LAUNCH_CHECK();
}

void transpose2d(const float* x, float* y, int64_t M, int64_t N) {
  if (M <= 0 || N <= 0) return;
  const dim3 block(32, 8);
  const int64_t row_tiles = (M + 31) / 32;
  const dim3 grid(static_cast<unsigned>((N + 31) / 32),
                  static_cast<unsigned>(row_tiles < 65535 ? row_tiles : 65535));
  transpose_kernel<<<grid, block, 0, stream()>>>(x, y, M, N);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void cat_rows(float* out, const float* const* srcs, const int64_t* widths, int count,
              int64_t rows) {
  int64_t out_row = 0;
  for (int i = 0; i < count; ++i) out_row += widths[i];
  if (rows <= 0 || out_row <= 0) return;
  int64_t col = 0;
  for (int start = 0; start < count; start += kMaxCatParts) {
    CatParts b{};
    b.first_col[0] = col;
    for (int i = start; i < count && i < start + kMaxCatParts; ++i) {
      if (widths[i] <= 0) continue;  // an empty input has no columns to write
      b.src[b.count] = srcs[i];
      col += widths[i];
      b.first_col[++b.count] = col;
    }
    if (b.count == 0) continue;
    const int64_t n = rows * (col - b.first_col[0]);
    cat_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(out, out_row, rows, b);
    GANTRY_CUDA_LAUNCH_CHECK();
  }
}

void copy_2d(float* dst, int64_t dst_pitch, const float* src, int64_t src_pitch, int64_t rows,
             int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  // A strided copy is what the copy engine does best: no kernel needed.
  GANTRY_CUDA_CHECK(cudaMemcpy2DAsync(dst, dst_pitch * sizeof(float), src,
                                      src_pitch * sizeof(float), cols * sizeof(float), rows,
                                      cudaMemcpyDeviceToDevice, stream()));
}

}  // namespace gantry::cuda

// Convolution as im2col + GEMM (see docs/ops.md).
//
// For a chunk of nb images, im2col lays every receptive field out as a column of
// col[C*kh*kw, nb*OH*OW]; then the whole chunk is one GEMM with the weight viewed as
// [O, C*kh*kw]. One large GEMM keeps Eigen near its FLOP ceiling, where per-image GEMMs on the
// small late layers (OH*OW = 16) would not. Chunks bound the col buffer's size (and keep it
// in cache between im2col and the GEMM).
//
// The col and GEMM-output buffers are per-thread scratch that only grows: a fresh 64 MiB
// std::vector per call cost a zero-fill plus a page fault per 4 KiB page on every call, which
// measured 20-40% of a DCGAN layer's time (docs/benchmarks.md).
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "gantry/kernels/cpu/cpu_kernels.h"

namespace gantry::cpu {

namespace {

// 4 MiB: small enough that the col chunk written by im2col is still in cache when the GEMM
// reads it (64 MiB measured ~25% slower over the DCGAN's convs), large enough to keep the GEMM's
// N dimension in the hundreds or more. On the chunked layers (D3, D4, G2, G3) 2-4 MiB ran
// 415-425 ms, 8 MiB 431-434 and 1 MiB 438-441 (kernel_bench, Xeon with 2 MiB L2 per core).
constexpr int64_t kColBudgetBytes = 4ll << 20;

// The output columns ow in [lo, hi) whose input column ow*stride - padding + kj is inside
// [0, W): the rest read padding. Hoisting this out of the inner loop leaves it branch-free.
inline void valid_range(const Conv2dShape& s, int64_t kj, int64_t OW, int64_t& lo, int64_t& hi) {
  const int64_t off = kj - s.padding;  // iw = ow * stride + off
  lo = off >= 0 ? 0 : (-off + s.stride - 1) / s.stride;
  hi = s.W - off <= 0 ? 0 : (s.W - off - 1) / s.stride + 1;
  lo = std::min(lo, OW);
  hi = std::max(lo, std::min(hi, OW));
}

// im2col of one image into columns [col0, col0 + OH*OW) of a matrix with leading dim ld.
template <class T>
void im2col_ld(const T* x, const Conv2dShape& s, T* col, int64_t ld, int64_t col0) {
  const int64_t OH = s.OH(), OW = s.OW(), stride = s.stride;
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t ki = 0; ki < s.kh; ++ki)
      for (int64_t kj = 0; kj < s.kw; ++kj) {
        T* row = col + ((c * s.kh + ki) * s.kw + kj) * ld + col0;
        const T* xc = x + c * s.H * s.W;
        int64_t lo, hi;
        valid_range(s, kj, OW, lo, hi);
        const int64_t off = kj - s.padding;
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t ih = oh * stride - s.padding + ki;
          T* dst = row + oh * OW;
          if (ih < 0 || ih >= s.H) {
            std::fill(dst, dst + OW, T(0));
            continue;
          }
          const T* src = xc + ih * s.W + off;
          for (int64_t ow = 0; ow < lo; ++ow) dst[ow] = T(0);
          if (stride == 1) std::memcpy(dst + lo, src + lo, (hi - lo) * sizeof(T));
          else if (stride == 2)
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[2 * ow];
          else
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow * stride];
          for (int64_t ow = hi; ow < OW; ++ow) dst[ow] = T(0);
        }
      }
}

// The adjoint of im2col_ld: accumulates the columns back into one image.
template <class T>
void col2im_ld(const T* col, const Conv2dShape& s, T* x, int64_t ld, int64_t col0) {
  const int64_t OH = s.OH(), OW = s.OW(), stride = s.stride;
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t ki = 0; ki < s.kh; ++ki)
      for (int64_t kj = 0; kj < s.kw; ++kj) {
        const T* row = col + ((c * s.kh + ki) * s.kw + kj) * ld + col0;
        T* xc = x + c * s.H * s.W;
        int64_t lo, hi;
        valid_range(s, kj, OW, lo, hi);
        const int64_t off = kj - s.padding;
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t ih = oh * stride - s.padding + ki;
          if (ih < 0 || ih >= s.H) continue;
          const T* src = row + oh * OW;
          T* dst = xc + ih * s.W + off;
          if (stride == 2)
            for (int64_t ow = lo; ow < hi; ++ow) dst[2 * ow] += src[ow];
          else
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow * stride] += src[ow];
        }
      }
}

// Per-thread scratch buffers (slot 0: col, slot 1: the GEMM's output / gathered dy, slot 2:
// one channels-last image, slot 3: the permuted weight, or a thread's partial weight gradient
// in the backward-weight passes), kept between calls. Contents are garbage on entry; callers
// overwrite what they read.
template <class T>
T* scratch(int slot, int64_t n) {
  thread_local std::vector<T> bufs[4];
  std::vector<T>& b = bufs[slot];
  if (static_cast<int64_t>(b.size()) < n) {
    b = std::vector<T>();  // free first: never hold the old and the new at once
    b.resize(static_cast<size_t>(n));
  }
  return b.data();
}

int64_t chunk_images(const Conv2dShape& s, size_t elem) {
  const int64_t per_image = s.C * s.kh * s.kw * s.OH() * s.OW() * static_cast<int64_t>(elem);
  return std::max<int64_t>(1, std::min<int64_t>(s.N, kColBudgetBytes / std::max<int64_t>(per_image, 1)));
}

// Images per GEMM. Where an image has enough output pixels (P >= 256: the DCGAN's 32x32 and
// 16x16 outputs) each image is its own GEMM, which writes y[n] and reads dy[n] in place: the
// chunk's scatter/gather copies took half as long as the GEMM on the 3-channel layers
// (K = 48), and a one-image GEMM's operands stay in L2 (Eigen, one thread: 138-151 GFLOP/s per
// image against 122-141 per 8-image chunk at D2's shapes). Smaller images are chunked, or
// their GEMMs would be too thin (D4's P = 16: 79 GFLOP/s against 148).
int64_t images_per_gemm(const Conv2dShape& s, size_t elem) {
  return s.OH() * s.OW() >= 256 ? 1 : chunk_images(s, elem);
}

// A conv whose window covers the whole unpadded input (the DCGAN's 4x4 -> 1x1 last D layer,
// and the 1x1 -> 4x4 first G layer as its adjoint) is a fully connected layer: x viewed as
// [N, K] with K = C*kh*kw is already the im2col matrix (transposed), and each pass is one GEMM
// on the caller's buffers, with no copies.
bool fully_connected(const Conv2dShape& s) {
  return s.padding == 0 && s.H == s.kh && s.W == s.kw;  // then OH = OW = 1
}

// The GEMM side of a chunk of cnt images starting at image n0: its output out[O, cnt*P] goes to
// y[n, O, P] (adding the bias), and dy[n, O, P] comes in as g[O, cnt*P]. One image needs
// neither copy: y[n] and dy[n] are [O, P] matrices themselves (gemm_out / gemm_in).
template <class T>
void scatter_chunk(const T* out, const T* bias, T* y, const Conv2dShape& s, int64_t P, int64_t n0,
                   int64_t cnt) {
  const int64_t ld = cnt * P;
  for (int64_t i = 0; i < cnt; ++i)
    for (int64_t o = 0; o < s.O; ++o) {
      const T* src = out + o * ld + i * P;
      T* dst = y + ((n0 + i) * s.O + o) * P;
      const T b = bias ? bias[o] : T(0);
      for (int64_t p = 0; p < P; ++p) dst[p] = src[p] + b;
    }
}

// Where the chunk's GEMM writes: y[n0] itself for one image, else the chunk buffer.
template <class T>
T* gemm_out(T* y, T* chunk, const Conv2dShape& s, int64_t P, int64_t n0, int64_t cnt) {
  return cnt == 1 ? y + n0 * s.O * P : chunk;
}
// After the GEMM: the chunk buffer scattered to y, or the bias added to y[n0] in place.
template <class T>
void finish_out(const T* out, const T* bias, T* y, const Conv2dShape& s, int64_t P, int64_t n0,
                int64_t cnt) {
  if (cnt > 1) return scatter_chunk(out, bias, y, s, P, n0, cnt);
  if (!bias) return;
  T* yn = y + n0 * s.O * P;
  for (int64_t o = 0; o < s.O; ++o)
    for (int64_t p = 0; p < P; ++p) yn[o * P + p] += bias[o];
}
// What the chunk's GEMM reads as g[O, cnt*P]: dy[n0] itself for one image, else a gathered copy.
template <class T>
const T* gemm_in(const T* dy, T* chunk, const Conv2dShape& s, int64_t P, int64_t n0, int64_t cnt) {
  if (cnt == 1) return dy + n0 * s.O * P;
  const int64_t ld = cnt * P;
  for (int64_t i = 0; i < cnt; ++i)
    for (int64_t o = 0; o < s.O; ++o)
      std::memcpy(chunk + o * ld + i * P, dy + ((n0 + i) * s.O + o) * P, P * sizeof(T));
  return chunk;
}

// ---- the channels-last ("rows") layout --------------------------------------------------------
// im2col above writes, for each (c, ki, kj), a row of OH*OW outputs that reads x at a stride:
// for the DCGAN's 4x4 stride-2 layers those rows are 4-16 elements long, so the copy runs at a
// few GB/s and its writes land on K different rows (K x 2 KiB apart: a TLB miss per row). The
// rows layout transposes each image to channels-last first, x[C, H*W] -> xh[H*W, C], and then
// builds the patch matrix A[OH*OW, kh*kw*C]: one row per output pixel, whose pieces are runs of
// C (and, across a valid kj range, kw*C) contiguous floats: plain memcpy, written sequentially.
// The weight is permuted to match, W[O, C, kh, kw] -> W'[O, kh, kw, C] (small next to A).
// The backward-input's scatter-add becomes contiguous vector adds the same way.

// dst[cols, rows] = src[rows, cols]^T, in tiles so both sides stay in cache lines.
template <class T>
void transpose_scalar(const T* src, int64_t rows, int64_t cols, T* dst) {
  constexpr int64_t B = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += B)
    for (int64_t c0 = 0; c0 < cols; c0 += B) {
      const int64_t r1 = std::min(rows, r0 + B), c1 = std::min(cols, c0 + B);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * rows + r] = src[r * cols + c];
    }
}

// Only where AVX is on (the default x86-64-v3 build): without it the compiler splits the
// 256-bit shuffles and GCC's vector transpose measured 2.6x slower than the scalar loop.
#if defined(__AVX__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12))
#define GANTRY_VECTOR_TRANSPOSE 1
// The float transpose in 8x8 blocks of 8-float vectors (GCC/Clang vector extensions, which
// compile to AVX shuffles): the scalar loop moves one float per load and store, and the
// NCHW <-> channels-last transposes were ~4% of a DCGAN step.
typedef float gantry_v8f __attribute__((vector_size(32)));
inline gantry_v8f load8(const float* p) {
  gantry_v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float* p, gantry_v8f v) { std::memcpy(p, &v, sizeof v); }
// The 8x8 block at s (row stride ls) transposed into d (row stride ld): interleave pairs of
// rows, then pairs of pairs, then swap 128-bit halves.
inline void transpose8x8(const float* s, int64_t ls, float* d, int64_t ld) {
  gantry_v8f r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = load8(s + i * ls);
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      u[i + 2 * j] = __builtin_shufflevector(t[i + j], t[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 2 * j + 1] = __builtin_shufflevector(t[i + j], t[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int j = 0; j < 4; ++j) {
    store8(d + j * ld, __builtin_shufflevector(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11));
    store8(d + (j + 4) * ld, __builtin_shufflevector(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15));
  }
}
#endif

template <class T>
void transpose(const T* src, int64_t rows, int64_t cols, T* dst) {
#ifdef GANTRY_VECTOR_TRANSPOSE
  if constexpr (std::is_same_v<T, float>) {
    constexpr int64_t B = 32;  // 32x32 tiles of 8x8 blocks
    const int64_t R8 = rows / 8 * 8, C8 = cols / 8 * 8;
    for (int64_t r0 = 0; r0 < R8; r0 += B)
      for (int64_t c0 = 0; c0 < C8; c0 += B) {
        const int64_t r1 = std::min(R8, r0 + B), c1 = std::min(C8, c0 + B);
        for (int64_t r = r0; r < r1; r += 8)
          for (int64_t c = c0; c < c1; c += 8)
            transpose8x8(src + r * cols + c, cols, dst + c * rows + r, rows);
      }
    // The ragged right columns and bottom rows.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = r < R8 ? C8 : 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
    return;
  }
#endif
  transpose_scalar(src, rows, cols, dst);
}

// The kj in [lo, hi) whose input column ow*stride - padding + kj lies inside [0, W).
inline void valid_kj(const Conv2dShape& s, int64_t ow, int64_t& lo, int64_t& hi) {
  const int64_t iw0 = ow * s.stride - s.padding;
  lo = std::max<int64_t>(0, -iw0);
  hi = std::max(lo, std::min<int64_t>(s.kw, s.W - iw0));
}

// A[P, K'] (rows p of one image, row length K' = kh*kw*C) from the channels-last image xh.
template <class T>
void im2row(const T* xh, const Conv2dShape& s, T* A) {
  const int64_t OH = s.OH(), OW = s.OW(), C = s.C, K = s.kh * s.kw * C;
  for (int64_t oh = 0; oh < OH; ++oh)
    for (int64_t ow = 0; ow < OW; ++ow) {
      T* row = A + (oh * OW + ow) * K;
      int64_t lo, hi;
      valid_kj(s, ow, lo, hi);
      const int64_t iw0 = ow * s.stride - s.padding;
      for (int64_t ki = 0; ki < s.kh; ++ki) {
        T* dst = row + ki * s.kw * C;
        const int64_t ih = oh * s.stride - s.padding + ki;
        if (ih < 0 || ih >= s.H) {
          std::fill(dst, dst + s.kw * C, T(0));
          continue;
        }
        std::fill(dst, dst + lo * C, T(0));
        std::memcpy(dst + lo * C, xh + (ih * s.W + iw0 + lo) * C, (hi - lo) * C * sizeof(T));
        std::fill(dst + hi * C, dst + s.kw * C, T(0));
      }
    }
}

// The adjoint of im2row, as a gather: each pixel of the channels-last image dxh is written
// once, as the sum of the row pieces (output pixel, tap) that read it, so dxh needs no zeroing
// and no read-modify-write pass per tap (a 4x4 stride-2 window reads each pixel 4 times).
template <class T>
void row2im(const T* dA, const Conv2dShape& s, T* dxh) {
  const int64_t OH = s.OH(), OW = s.OW(), C = s.C, K = s.kh * s.kw * C;
  // The taps of each input row and column, found once per call rather than per pixel: the
  // (output index, kernel index) pairs with out * stride - padding + k == in, at most kh (kw)
  // of them, as offsets into dA.
  auto taps = [&](int64_t size, int64_t k_size, int64_t out_size, int64_t out_step,
                  int64_t k_step, std::vector<int64_t>& offset, std::vector<int>& count) {
    offset.assign(static_cast<size_t>(size * k_size), 0);
    count.assign(static_cast<size_t>(size), 0);
    for (int64_t in = 0; in < size; ++in)
      for (int64_t kk = 0; kk < k_size; ++kk) {
        const int64_t t = in + s.padding - kk;
        if (t < 0 || t % s.stride != 0 || t / s.stride >= out_size) continue;
        offset[static_cast<size_t>(in * k_size + count[static_cast<size_t>(in)]++)] =
            t / s.stride * out_step + kk * k_step;
      }
  };
  std::vector<int64_t> row_off, col_off;
  std::vector<int> row_n, col_n;
  taps(s.H, s.kh, OH, OW * K, s.kw * C, row_off, row_n);
  taps(s.W, s.kw, OW, K, C, col_off, col_n);
  for (int64_t ih = 0; ih < s.H; ++ih) {
    const int nh = row_n[static_cast<size_t>(ih)];
    const int64_t* ro = row_off.data() + ih * s.kh;
    for (int64_t iw = 0; iw < s.W; ++iw) {
      const int nw = col_n[static_cast<size_t>(iw)];
      const int64_t* co = col_off.data() + iw * s.kw;
      T* dst = dxh + (ih * s.W + iw) * C;
      if (nh == 0 || nw == 0) {
        std::fill(dst, dst + C, T(0));  // a pixel no window reads
        continue;
      }
      std::memcpy(dst, dA + ro[0] + co[0], C * sizeof(T));
      for (int a = 0; a < nh; ++a)
        for (int b = a == 0 ? 1 : 0; b < nw; ++b) {
          const T* src = dA + ro[a] + co[b];
          for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
        }
    }
  }
}

// W[O, C, kh, kw] <-> W'[O, kh, kw, C]: per output channel a [C, kh*kw] transpose.
template <class T>
void weight_to_rows(const T* w, const Conv2dShape& s, T* wr) {
  const int64_t KK = s.kh * s.kw, K = s.C * KK;
#pragma omp parallel for if (s.O * K > (1 << 16))
  for (int64_t o = 0; o < s.O; ++o) transpose(w + o * K, s.C, KK, wr + o * K);
}
template <class T>
void weight_from_rows(const T* wr, const Conv2dShape& s, T* w) {
  const int64_t KK = s.kh * s.kw, K = s.C * KK;
#pragma omp parallel for if (s.O * K > (1 << 16))
  for (int64_t o = 0; o < s.O; ++o) transpose(wr + o * K, KK, s.C, w + o * K);
}

// Which layout a conv uses. Channels-last pays when its runs of C floats are long enough to
// copy as blocks; the 3-channel layers (D1, and G5 as its adjoint) keep the strided im2col,
// whose rows (OW = 32 there) are the longer runs.
// GANTRY_CPU_CONV=auto|cols|rows sets it for a whole process (benchmarks), read on first use.
ConvLayout layout_from_env() {
  const char* env = std::getenv("GANTRY_CPU_CONV");
  const std::string v = env ? env : "";
  if (v.empty() || v == "auto") return ConvLayout::Auto;
  if (v == "cols") return ConvLayout::Cols;
  if (v == "rows") return ConvLayout::Rows;
  throw std::invalid_argument("GANTRY_CPU_CONV must be auto, cols or rows, got '" + v + "'");
}
std::atomic<int> g_layout{-1};  // -1: not read yet
ConvLayout current_layout() {
  int v = g_layout.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(layout_from_env());
    g_layout.store(v, std::memory_order_relaxed);
  }
  return static_cast<ConvLayout>(v);
}
bool use_rows(const Conv2dShape& s) {
  switch (current_layout()) {
    case ConvLayout::Cols: return false;
    case ConvLayout::Rows: return true;
    default: return s.C >= 16;
  }
}


// ---- the three passes in the rows layout ------------------------------------------------------
// Threads split the batch, not the GEMM: each thread takes a contiguous share of the images and
// runs im2row, a single-threaded GEMM (Eigen runs single-threaded inside a parallel region) and
// the scatter on its own chunks, with its own scratch. Splitting each GEMM instead made the two
// threads meet at Eigen's and OpenMP's barriers several times per chunk: ~15% of a 2-thread
// DCGAN step went to waiting. The backward-weight sums per-thread partial weight gradients
// (in thread order, so a given thread count always gives the same bits).

// Runs body(lo, hi, t) on each thread's share [lo, hi) of the n images (t: thread number) and
// returns how many threads ran. Small batches stay on one thread, whose GEMM Eigen may then
// split itself.
template <class F>
int split_images(int64_t n, F body) {
  constexpr int64_t kMinImagesPerThread = 4;
  const int nt = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), n / kMinImagesPerThread));
  if (nt <= 1 || omp_in_parallel()) {
    body(int64_t(0), n, 0);
    return 1;
  }
  int used = nt;  // OpenMP may give fewer threads than asked for
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), count = omp_get_num_threads();
    if (t == 0) used = count;
    body(n * t / count, n * (t + 1) / count, t);
  }
  return used;
}

template <class T>
void conv2d_forward_rows(const T* x, const T* w, const T* bias, T* y, const Conv2dShape& s) {
  const int64_t P = s.OH() * s.OW(), K = s.C * s.kh * s.kw, CHW = s.C * s.H * s.W;
  T* wr = scratch<T>(3, s.O * K);
  weight_to_rows(w, s, wr);
  const int64_t nb = images_per_gemm(s, sizeof(T));
  split_images(s.N, [&](int64_t lo, int64_t hi, int) {
    T* A = scratch<T>(0, K * nb * P);
    T* chunk = nb > 1 ? scratch<T>(1, s.O * nb * P) : nullptr;
    T* xh = scratch<T>(2, CHW);
    for (int64_t n0 = lo; n0 < hi; n0 += nb) {
      const int64_t cnt = std::min(nb, hi - n0), ld = cnt * P;
      for (int64_t i = 0; i < cnt; ++i) {
        transpose(x + (n0 + i) * CHW, s.C, s.H * s.W, xh);
        im2row(xh, s, A + i * P * K);
      }
      // out[O, cnt*P] = W'[O, K] A^T[K, cnt*P]
      T* out = gemm_out(y, chunk, s, P, n0, cnt);
      gemm<T>(false, true, s.O, ld, K, T(1), wr, A, T(0), out);
      finish_out(out, bias, y, s, P, n0, cnt);
    }
  });
}

template <class T>
void conv2d_backward_input_rows(const T* dy, const T* w, T* dx, const Conv2dShape& s) {
  const int64_t P = s.OH() * s.OW(), K = s.C * s.kh * s.kw, CHW = s.C * s.H * s.W;
  T* wr = scratch<T>(3, s.O * K);
  weight_to_rows(w, s, wr);
  const int64_t nb = images_per_gemm(s, sizeof(T));
  split_images(s.N, [&](int64_t lo, int64_t hi, int) {
    T* dA = scratch<T>(0, K * nb * P);
    T* chunk = nb > 1 ? scratch<T>(1, s.O * nb * P) : nullptr;
    T* dxh = scratch<T>(2, CHW);
    for (int64_t n0 = lo; n0 < hi; n0 += nb) {
      const int64_t cnt = std::min(nb, hi - n0), ld = cnt * P;
      const T* g = gemm_in(dy, chunk, s, P, n0, cnt);
      // dA[cnt*P, K] = g^T[cnt*P, O] W'[O, K]
      gemm<T>(true, false, ld, K, s.O, T(1), g, wr, T(0), dA);
      for (int64_t i = 0; i < cnt; ++i) {
        row2im(dA + i * P * K, s, dxh);
        transpose(dxh, s.H * s.W, s.C, dx + (n0 + i) * CHW);
      }
    }
  });
}

template <class T>
void conv2d_backward_weight_rows(const T* x, const T* dy, T* dw, const Conv2dShape& s) {
  const int64_t P = s.OH() * s.OW(), K = s.C * s.kh * s.kw, CHW = s.C * s.H * s.W;
  const int64_t nb = images_per_gemm(s, sizeof(T));
  std::vector<T*> partial(static_cast<size_t>(omp_get_max_threads()), nullptr);
  const int nt = split_images(s.N, [&](int64_t lo, int64_t hi, int t) {
    T* dwr = scratch<T>(3, s.O * K);  // this thread's dW'[O, K]
    partial[static_cast<size_t>(t)] = dwr;
    std::fill(dwr, dwr + s.O * K, T(0));
    T* A = scratch<T>(0, K * nb * P);
    T* chunk = nb > 1 ? scratch<T>(1, s.O * nb * P) : nullptr;
    T* xh = scratch<T>(2, CHW);
    for (int64_t n0 = lo; n0 < hi; n0 += nb) {
      const int64_t cnt = std::min(nb, hi - n0), ld = cnt * P;
      for (int64_t i = 0; i < cnt; ++i) {
        transpose(x + (n0 + i) * CHW, s.C, s.H * s.W, xh);
        im2row(xh, s, A + i * P * K);
      }
      const T* g = gemm_in(dy, chunk, s, P, n0, cnt);
      // dW'[O, K] += g[O, cnt*P] A[cnt*P, K]
      gemm<T>(false, false, s.O, K, ld, T(1), g, A, T(1), dwr);
    }
  });
  T* total = partial[0];  // the calling thread's (thread 0's) buffer
#pragma omp parallel for if (nt > 1 && s.O * K > (1 << 16))
  for (int64_t o = 0; o < s.O; ++o)
    for (int t = 1; t < nt; ++t) {
      const T* part = partial[static_cast<size_t>(t)] + o * K;
      T* dst = total + o * K;
      for (int64_t k = 0; k < K; ++k) dst[k] += part[k];
    }
  weight_from_rows(total, s, dw);
}

}  // namespace

void set_conv_layout(ConvLayout layout) { g_layout.store(static_cast<int>(layout)); }
ConvLayout conv_layout() { return current_layout(); }

template <class T>
void im2col(const T* x, const Conv2dShape& s, T* col) {
  im2col_ld(x, s, col, s.OH() * s.OW(), 0);
}

template <class T>
void col2im(const T* col, const Conv2dShape& s, T* x) {
  col2im_ld(col, s, x, s.OH() * s.OW(), 0);
}

template <class T>
void conv2d_forward(const T* x, const T* w, const T* bias, T* y, const Conv2dShape& s) {
  const int64_t P = s.OH() * s.OW(), K = s.C * s.kh * s.kw;
  if (fully_connected(s)) {  // y[N, O] = x[N, K] W^T[K, O] (+ bias)
    gemm<T>(false, true, s.N, s.O, K, T(1), x, w, T(0), y);
    if (bias)
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t o = 0; o < s.O; ++o) y[n * s.O + o] += bias[o];
    return;
  }
  if (use_rows(s)) return conv2d_forward_rows(x, w, bias, y, s);
  // Threads split the batch here too (see split_images): Eigen's own split of these GEMMs
  // (O x 48 patches on the 3-channel layers) ran at one thread's speed.
  const int64_t nb = images_per_gemm(s, sizeof(T)), CHW = s.C * s.H * s.W;
  split_images(s.N, [&](int64_t lo, int64_t hi, int) {
    T* col = scratch<T>(0, K * nb * P);
    T* chunk = nb > 1 ? scratch<T>(1, s.O * nb * P) : nullptr;
    for (int64_t n0 = lo; n0 < hi; n0 += nb) {
      const int64_t cnt = std::min(nb, hi - n0), ld = cnt * P;
      for (int64_t i = 0; i < cnt; ++i) im2col_ld(x + (n0 + i) * CHW, s, col, ld, i * P);
      T* out = gemm_out(y, chunk, s, P, n0, cnt);
      gemm<T>(false, false, s.O, ld, K, T(1), w, col, T(0), out);
      finish_out(out, bias, y, s, P, n0, cnt);
    }
  });
}

template <class T>
void conv2d_backward_input(const T* dy, const T* w, T* dx, const Conv2dShape& s) {
  const int64_t P = s.OH() * s.OW(), K = s.C * s.kh * s.kw;
  if (fully_connected(s)) {  // dx[N, K] = dy[N, O] W[O, K]
    gemm<T>(false, false, s.N, K, s.O, T(1), dy, w, T(0), dx);
    return;
  }
  if (use_rows(s)) return conv2d_backward_input_rows(dy, w, dx, s);
  const int64_t nb = images_per_gemm(s, sizeof(T)), CHW = s.C * s.H * s.W;
  split_images(s.N, [&](int64_t lo, int64_t hi, int) {
    T* col = scratch<T>(0, K * nb * P);
    T* chunk = nb > 1 ? scratch<T>(1, s.O * nb * P) : nullptr;
    std::fill(dx + lo * CHW, dx + hi * CHW, T(0));
    for (int64_t n0 = lo; n0 < hi; n0 += nb) {
      const int64_t cnt = std::min(nb, hi - n0), ld = cnt * P;
      const T* g = gemm_in(dy, chunk, s, P, n0, cnt);
      // dcol[K, cnt*P] = W^T[K, O] g[O, cnt*P]
      gemm<T>(true, false, K, ld, s.O, T(1), w, g, T(0), col);
      for (int64_t i = 0; i < cnt; ++i) col2im_ld(col, s, dx + (n0 + i) * CHW, ld, i * P);
    }
  });
}

// The general backward-weight: per chunk, im2col of x and dW += g col^T, each thread on its
// share of the batch into its own partial dW (summed in thread order, as the rows layout).
template <class T>
void conv2d_backward_weight_im2col(const T* x, const T* dy, T* dw, const Conv2dShape& s,
                                   int64_t P, int64_t K) {
  const int64_t nb = images_per_gemm(s, sizeof(T)), CHW = s.C * s.H * s.W;
  std::vector<T*> partial(static_cast<size_t>(omp_get_max_threads()), nullptr);
  const int nt = split_images(s.N, [&](int64_t lo, int64_t hi, int t) {
    // Thread 0 accumulates straight into dw; the others into their own scratch.
    T* dwt = t == 0 ? dw : scratch<T>(3, s.O * K);
    partial[static_cast<size_t>(t)] = dwt;
    std::fill(dwt, dwt + s.O * K, T(0));
    T* col = scratch<T>(0, K * nb * P);
    T* chunk = nb > 1 ? scratch<T>(1, s.O * nb * P) : nullptr;
    for (int64_t n0 = lo; n0 < hi; n0 += nb) {
      const int64_t cnt = std::min(nb, hi - n0), ld = cnt * P;
      for (int64_t i = 0; i < cnt; ++i) im2col_ld(x + (n0 + i) * CHW, s, col, ld, i * P);
      const T* g = gemm_in(dy, chunk, s, P, n0, cnt);
      // dW[O, K] += g[O, cnt*P] col^T[cnt*P, K]
      gemm<T>(false, true, s.O, K, ld, T(1), g, col, T(1), dwt);
    }
  });
  for (int t = 1; t < nt; ++t) {
    const T* part = partial[static_cast<size_t>(t)];
    for (int64_t i = 0; i < s.O * K; ++i) dw[i] += part[i];
  }
}

template <class T>
void conv2d_backward_weight(const T* x, const T* dy, T* dw, T* dbias, const Conv2dShape& s) {
  const int64_t P = s.OH() * s.OW(), K = s.C * s.kh * s.kw;
  if (fully_connected(s)) {  // dW[O, K] = dy^T[O, N] x[N, K]
    gemm<T>(true, false, s.O, K, s.N, T(1), dy, x, T(0), dw);
  } else if (use_rows(s)) {
    conv2d_backward_weight_rows(x, dy, dw, s);
  } else {
    conv2d_backward_weight_im2col(x, dy, dw, s, P, K);
  }
  if (dbias) {
    for (int64_t o = 0; o < s.O; ++o) {
      double acc = 0;
      for (int64_t n = 0; n < s.N; ++n) {
        const T* src = dy + (n * s.O + o) * P;
        for (int64_t p = 0; p < P; ++p) acc += src[p];
      }
      dbias[o] = static_cast<T>(acc);
    }
  }
}

#define GANTRY_INSTANTIATE(T)                                                           \
  template void im2col<T>(const T*, const Conv2dShape&, T*);                            \
  template void col2im<T>(const T*, const Conv2dShape&, T*);                            \
  template void conv2d_forward<T>(const T*, const T*, const T*, T*, const Conv2dShape&); \
  template void conv2d_backward_input<T>(const T*, const T*, T*, const Conv2dShape&);    \
  template void conv2d_backward_weight<T>(const T*, const T*, T*, T*, const Conv2dShape&);
GANTRY_INSTANTIATE(float)
GANTRY_INSTANTIATE(double)
#undef GANTRY_INSTANTIATE

}  // namespace gantry::cpu

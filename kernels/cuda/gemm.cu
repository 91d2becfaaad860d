// Hand-written SGEMM, row-major as cpu::gemm: C[M,N] = alpha op(A) op(B) + beta C.
//
// The classic shared-memory tiling with register blocking:
//  * A block of 16x16 = 256 threads computes a 64x64 tile of C.
//  * It walks K in steps of 16: the 64x16 slice of op(A) and the 16x64 slice of op(B) are
//    copied into shared memory once (each thread loads 4 + 4 values), then every thread reads
//    them from there 64 times; global memory traffic drops by the tile size.
//  * Each thread keeps a 4x4 block of C in registers: rows ty + 16 i and columns tx + 16 j.
//    Per k step it loads 4 values of A and 4 of B from shared memory and does 16 FMAs, so
//    shared-memory bandwidth is not the limit. The strided (not contiguous) 4x4 pattern
//    makes the 16 threads of a half-warp read 16 consecutive floats of the B tile (no bank
//    conflicts) and a single broadcast value of the A tile.
//  * Loads follow the memory layout: for A stored [M,K] consecutive threads load consecutive
//    k; for A stored [K,M] (trans_a) consecutive m. Both are coalesced. The tile in shared
//    memory is always As[k][m], Bs[k][n], so the compute loop does not care about transposes.
//  * Edges: out-of-range loads read 0 and out-of-range stores are skipped, so any M, N, K work.
//  * Split-K: a product with few tiles of C and a long K (a convolution's weight gradient:
//    C is O x C*kh*kw, K = N*OH*OW, the DCGAN's first layer 64 x 48 over 131072) would run on
//    a handful of SMs. Then blockIdx.z cuts K into `splits` ranges, each block writes its
//    partial tile to a workspace, and a second kernel adds the partials in order (z = 0, 1,
//    ...: deterministic, unlike atomicAdd into C) and applies alpha and beta.
// This reaches a fraction of cuBLAS (no tensor cores, no double buffering, no vector loads);
// docs/cuda.md discusses the gap.
#include "gantry/kernels/cuda/common.cuh"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda {
using namespace kern;

namespace {

constexpr int BM = 64, BN = 64, BK = 16;
constexpr int TM = 4, TN = 4;  // per-thread tile: 4x4
constexpr int TX = BN / TN, TY = BM / TM;  // 16 x 16 threads

// k_len: the K range of one split (a multiple of BK); partial: null without split-K, else the
// [splits, M, N] workspace that gets the raw sums instead of C.
__global__ void __launch_bounds__(TX * TY)
sgemm_kernel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
             const float* __restrict__ A, const float* __restrict__ B, float beta,
             float* __restrict__ C, int64_t k_len, float* __restrict__ partial) {
  __shared__ float As[BK][BM + 4];  // +4: keeps rows 16-byte aligned, staggers banks
  __shared__ float Bs[BK][BN + 4];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int tid = ty * TX + tx;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * BN;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * k_len;
  const int64_t k_end = k_begin + k_len < K ? k_begin + k_len : K;
  // gridDim.y is at most 65535: row tiles beyond it are a grid-stride loop (M > 4M rows).
  // The loop is uniform across the block, so the barriers inside stay non-divergent.
  for (int64_t m0 = static_cast<int64_t>(blockIdx.y) * BM; m0 < M;
       m0 += static_cast<int64_t>(gridDim.y) * BM) {
    float acc[TM][TN] = {};
    for (int64_t k0 = k_begin; k0 < k_end; k0 += BK) {
      // Load op(A)[m0:m0+64, k0:k0+16] and op(B)[k0:k0+16, n0:n0+64]: 1024 values each.
#pragma unroll
      for (int e = tid; e < BM * BK; e += TX * TY) {
        int mm, kk;
        if (!trans_a) { kk = e % BK; mm = e / BK; }  // A[m, k] at m*K + k: k fastest
        else          { mm = e % BM; kk = e / BM; }  // A[k, m] at k*M + m: m fastest
        const int64_t m = m0 + mm, k = k0 + kk;
        float v = 0.f;
        if (m < M && k < k_end) v = trans_a ? A[k * M + m] : A[m * K + k];
        As[kk][mm] = v;
      }
#pragma unroll
      for (int e = tid; e < BK * BN; e += TX * TY) {
        int nn, kk;
        if (!trans_b) { nn = e % BN; kk = e / BN; }  // B[k, n] at k*N + n: n fastest
        else          { kk = e % BK; nn = e / BK; }  // B[n, k] at n*K + k: k fastest
        const int64_t n = n0 + nn, k = k0 + kk;
        float v = 0.f;
        if (n < N && k < k_end) v = trans_b ? B[n * K + k] : B[k * N + n];
        Bs[kk][nn] = v;
      }
      __syncthreads();  // the tiles are complete before anyone reads them

#pragma unroll
      for (int kk = 0; kk < BK; ++kk) {
        float a[TM], b[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i) a[i] = As[kk][ty + TY * i];
#pragma unroll
        for (int j = 0; j < TN; ++j) b[j] = Bs[kk][tx + TX * j];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      __syncthreads();  // everyone is done with the tiles before they are overwritten
    }

#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int64_t m = m0 + ty + TY * i;
      if (m >= M) continue;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const int64_t n = n0 + tx + TX * j;
        if (n >= N) continue;
        if (partial) {
          partial[(blockIdx.z * M + m) * N + n] = acc[i][j];
          continue;
        }
        float* c = C + m * N + n;
        // beta == 0 must not read C: it may hold garbage (even NaN, and NaN * 0 is NaN).
        *c = beta == 0.f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *c;
      }
    }
  }  // row tiles
}

// Split-K's second kernel: C = alpha * (partial[0] + partial[1] + ...) + beta * C.
__global__ void splitk_sum_kernel(const float* __restrict__ partial, int64_t splits, int64_t MN,
                                  float alpha, float beta, float* __restrict__ C) {
  GANTRY_GRID_LOOP(i, MN) {
    float sum = 0.f;
    for (int64_t z = 0; z < splits; ++z) sum += partial[z * MN + i];
    C[i] = beta == 0.f ? alpha * sum : alpha * sum + beta * C[i];
  }
}

int64_t g_forced_splits = 0;  // tests: > 0 forces that many K ranges
// A split gets at least this many BK steps of K (256 values): below, the workspace's write
// and read cost more than the idle SMs.
constexpr int64_t kMinKTilesPerSplit = 16;
// The workspace stays under 64 MiB: a C that large has tiles enough to fill the GPU anyway.
constexpr int64_t kMaxWorkspaceFloats = int64_t(16) << 20;

struct KSplit {
  int64_t splits, k_len;
};

KSplit split_k(int64_t M, int64_t N, int64_t K, int64_t tiles) {
  const int64_t k_tiles = (K + BK - 1) / BK;
  int64_t splits = g_forced_splits;
  if (splits <= 0) {
    // 2 blocks per SM: the kernel's 98 registers x 256 threads allow 2 on sm_80/sm_90.
    const int64_t target = 2 * static_cast<int64_t>(multiprocessor_count());
    splits = tiles >= target ? 1 : (target + tiles - 1) / tiles;
    if (splits > k_tiles / kMinKTilesPerSplit) splits = k_tiles / kMinKTilesPerSplit;
  }
  if (splits > kMaxWorkspaceFloats / (M * N)) splits = kMaxWorkspaceFloats / (M * N);
  if (splits > k_tiles) splits = k_tiles;
  if (splits > 65535) splits = 65535;  // gridDim.z
  if (splits < 1) splits = 1;
  const int64_t k_len = (k_tiles + splits - 1) / splits * BK;
  return {(K + k_len - 1) / k_len, k_len};  // no empty range
}

}  // namespace

namespace handwritten {

void set_gemm_k_splits(int64_t splits) { g_forced_splits = splits > 0 ? splits : 0; }

int64_t gemm_k_splits(int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0 || K <= 0) return 1;
  const int64_t row_tiles = (M + BM - 1) / BM;
  return split_k(M, N, K, ((N + BN - 1) / BN) * (row_tiles < 65535 ? row_tiles : 65535)).splits;
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, const float* B, float beta, float* C) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // op(A) op(B) is all zeros: C = beta C
    if (beta == 0.f) fill(C, M * N, 0.f);
    else affine(C, C, M * N, beta, 0.f);
    return;
  }
  const dim3 block(TX, TY);
  const int64_t row_tiles = (M + BM - 1) / BM;
  const int64_t col_tiles = (N + BN - 1) / BN, rows = row_tiles < 65535 ? row_tiles : 65535;
  const KSplit ks = split_k(M, N, K, col_tiles * rows);
  const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(rows),
                  static_cast<unsigned>(ks.splits));
  if (ks.splits == 1) {
    sgemm_kernel<<<grid, block, 0, stream()>>>(trans_a, trans_b, M, N, K, alpha, A, B, beta, C,
                                               ks.k_len, nullptr);
    GANTRY_CUDA_LAUNCH_CHECK();
    return;
  }
  Scratch partial(static_cast<size_t>(ks.splits * M * N) * sizeof(float));
  sgemm_kernel<<<grid, block, 0, stream()>>>(trans_a, trans_b, M, N, K, alpha, A, B, beta, C,
                                             ks.k_len, partial.f());
  GANTRY_CUDA_LAUNCH_CHECK();
  splitk_sum_kernel<<<blocks_for(M * N), kThreads, 0, stream()>>>(partial.f(), ks.splits, M * N,
                                                                  alpha, beta, C);
  GANTRY_CUDA_LAUNCH_CHECK();
}

}  // namespace handwritten
}  // namespace gantry::cuda

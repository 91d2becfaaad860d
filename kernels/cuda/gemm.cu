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

__global__ void __launch_bounds__(TX * TY)
sgemm_kernel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
             const float* __restrict__ A, const float* __restrict__ B, float beta,
             float* __restrict__ C) {
  __shared__ float As[BK][BM + 4];  // +4: keeps rows 16-byte aligned, staggers banks
  __shared__ float Bs[BK][BN + 4];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int tid = ty * TX + tx;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * BN;
  // gridDim.y is at most 65535: row tiles beyond it are a grid-stride loop (M > 4M rows).
  // The loop is uniform across the block, so the barriers inside stay non-divergent.
  for (int64_t m0 = static_cast<int64_t>(blockIdx.y) * BM; m0 < M;
       m0 += static_cast<int64_t>(gridDim.y) * BM) {
    float acc[TM][TN] = {};
    for (int64_t k0 = 0; k0 < K; k0 += BK) {
      // Load op(A)[m0:m0+64, k0:k0+16] and op(B)[k0:k0+16, n0:n0+64]: 1024 values each.
#pragma unroll
      for (int e = tid; e < BM * BK; e += TX * TY) {
        int mm, kk;
        if (!trans_a) { kk = e % BK; mm = e / BK; }  // A[m, k] at m*K + k: k fastest
        else          { mm = e % BM; kk = e / BM; }  // A[k, m] at k*M + m: m fastest
        const int64_t m = m0 + mm, k = k0 + kk;
        float v = 0.f;
        if (m < M && k < K) v = trans_a ? A[k * M + m] : A[m * K + k];
        As[kk][mm] = v;
      }
#pragma unroll
      for (int e = tid; e < BK * BN; e += TX * TY) {
        int nn, kk;
        if (!trans_b) { nn = e % BN; kk = e / BN; }  // B[k, n] at k*N + n: n fastest
        else          { kk = e % BK; nn = e / BK; }  // B[n, k] at n*K + k: k fastest
        const int64_t n = n0 + nn, k = k0 + kk;
        float v = 0.f;
        if (n < N && k < K) v = trans_b ? B[n * K + k] : B[k * N + n];
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
        float* c = C + m * N + n;
        // beta == 0 must not read C: it may hold garbage (even NaN, and NaN * 0 is NaN).
        *c = beta == 0.f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *c;
      }
    }
  }  // row tiles
}

}  // namespace

namespace handwritten {

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
  const dim3 grid(static_cast<unsigned>((N + BN - 1) / BN),
                  static_cast<unsigned>(row_tiles < 65535 ? row_tiles : 65535));
  sgemm_kernel<<<grid, block, 0, stream()>>>(trans_a, trans_b, M, N, K, alpha, A, B, beta, C);
  GANTRY_CUDA_LAUNCH_CHECK();
}

}  // namespace handwritten
}  // namespace gantry::cuda

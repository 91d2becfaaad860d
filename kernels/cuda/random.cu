// Philox-4x32-10 fills: the same counter-based stream as core/random.cpp, evaluated with one
// thread per Philox block. A counter-based generator has no sequential state, so thread j
// simply computes block(counter_base + j, seed) and writes elements 4j .. 4j+3: the result
// is independent of the launch shape and identical to the host loop.
#include "gantry/kernels/cuda/common.cuh"
#include "gantry/kernels/cuda/cuda_kernels.h"

namespace gantry::cuda {
using namespace kern;

namespace {

// One Philox-4x32-10 block; a line-by-line copy of philox::block in core/random.cpp.
__device__ __forceinline__ void philox_block(uint64_t counter, uint64_t key, uint32_t out[4]) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    // __umulhi gives the high 32 bits of the 64-bit product; the low half is a plain multiply.
    const uint32_t hi0 = __umulhi(kM0, c0), lo0 = kM0 * c0;
    const uint32_t hi1 = __umulhi(kM1, c2), lo1 = kM1 * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += kW0; k1 += kW1;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

__device__ __forceinline__ float to_unit(uint32_t x) {
  return static_cast<float>(x >> 8) * (1.0f / 16777216.0f);  // exact: 24 bits into a float
}

// The host's `low + scale * u` (core/random.cpp) is compiled to one FMA, a single rounding:
// GCC contracts a*b+c by default and the x86 build targets x86-64-v3 (FMA); the object code
// has vfmadd, and 38% of uniform(-2, 3) values differ in the last bit from two roundings.
// __fmaf_rn is that single rounding, explicitly. (A host build without FMA, e.g.
// GANTRY_NATIVE_ISA=OFF, rounds twice unless core/random.cpp spells out std::fma.)
__global__ void philox_uniform_kernel(float* __restrict__ out, int64_t n, uint64_t seed,
                                      uint64_t base, float low, float scale) {
  const int64_t blocks = (n + 3) / 4;
  GANTRY_GRID_LOOP(j, blocks) {
    uint32_t r[4];
    philox_block(base + static_cast<uint64_t>(j), seed, r);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * j + k;
      if (i < n) out[i] = __fmaf_rn(scale, to_unit(r[k]), low);
    }
  }
}

// Box-Muller on (r0, r1) and (r2, r3): radius sqrt(-2 log u1), angle 2 pi u2; cos for the even
// element, sin for the odd one. log/cos/sin are evaluated in double and rounded to float,
// which matches the host's correctly rounded-or-nearly float functions in almost every case
// (the test allows for a last-bit difference).
__global__ void philox_normal_kernel(float* __restrict__ out, int64_t n, uint64_t seed,
                                     uint64_t base, float mean, float std) {
  constexpr float kTwoPi = 6.283185307179586f;
  const int64_t blocks = (n + 3) / 4;
  GANTRY_GRID_LOOP(j, blocks) {
    uint32_t r[4];
    philox_block(base + static_cast<uint64_t>(j), seed, r);
#pragma unroll
    for (int pair = 0; pair < 2; ++pair) {
      const float u1 = __fsub_rn(1.0f, to_unit(r[2 * pair]));  // (0, 1]: log is finite
      const float u2 = to_unit(r[2 * pair + 1]);
      const float lg = static_cast<float>(log(static_cast<double>(u1)));
      const float radius = __fsqrt_rn(__fmul_rn(-2.0f, lg));
      const float theta = __fmul_rn(kTwoPi, u2);
      const float c = static_cast<float>(cos(static_cast<double>(theta)));
      const float s = static_cast<float>(sin(static_cast<double>(theta)));
      const int64_t i = 4 * j + 2 * pair;
      // host: mean + std * radius * cos == fma(std * radius, cos, mean) as compiled (one FMA,
      // see the uniform kernel); the product std * radius is rounded on its own.
      const float sr = __fmul_rn(std, radius);
      if (i < n) out[i] = __fmaf_rn(sr, c, mean);
      if (i + 1 < n) out[i + 1] = __fmaf_rn(sr, s, mean);
    }
  }
}

}  // namespace

void philox_uniform(float* out, int64_t n, uint64_t seed, uint64_t counter_base, float low,
                    float high) {
  if (n <= 0) return;
  philox_uniform_kernel<<<blocks_for((n + 3) / 4), kThreads, 0, stream()>>>(
      out, n, seed, counter_base, low, high - low);
  GANTRY_CUDA_LAUNCH_CHECK();
}

void philox_normal(float* out, int64_t n, uint64_t seed, uint64_t counter_base, float mean,
                   float std) {
  if (n <= 0) return;
  philox_normal_kernel<<<blocks_for((n + 3) / 4), kThreads, 0, stream()>>>(out, n, seed,
                                                                          counter_base, mean, std);
  GANTRY_CUDA_LAUNCH_CHECK();
}

}  // namespace gantry::cuda

#include "gantry/core/random.h"

#include <cmath>

namespace gantry {

namespace philox {

// Philox-4x32-10: ten rounds of two 32x32->64-bit multiplies mixing a 128-bit counter with a
// 64-bit key that is bumped by the Weyl constants each round.
void block(uint64_t counter, uint64_t key, uint32_t out[4]) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n1 = static_cast<uint32_t>(p1);
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    const uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += kW0; k1 += kW1;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

}  // namespace philox

void Generator::fill_uniform(float* out, int64_t n, float low, float high) {
  const uint64_t base = reserve(n);
  const float scale = high - low;
  for (int64_t i = 0; i < n; i += 4) {
    uint32_t r[4];
    philox::block(base + static_cast<uint64_t>(i / 4), seed_, r);
    for (int j = 0; j < 4 && i + j < n; ++j) out[i + j] = std::fma(scale, philox::to_unit(r[j]), low);
  }
}

// Box-Muller on the pairs (r0, r1) and (r2, r3) of each block: element i uses block i/4 and
// is the cos (even i) or sin (odd i) branch of its pair. u1 is shifted into (0, 1] so log is finite.
void Generator::fill_normal(float* out, int64_t n, float mean, float std) {
  const uint64_t base = reserve(n);
  constexpr float kTwoPi = 6.283185307179586f;
  for (int64_t i = 0; i < n; i += 4) {
    uint32_t r[4];
    philox::block(base + static_cast<uint64_t>(i / 4), seed_, r);
    for (int pair = 0; pair < 2; ++pair) {
      const float u1 = 1.0f - philox::to_unit(r[2 * pair]);  // (0, 1]
      const float u2 = philox::to_unit(r[2 * pair + 1]);
      const float radius = std::sqrt(-2.0f * std::log(u1));
      const float theta = kTwoPi * u2;
      const int64_t k = i + 2 * pair;
      // One rounding (fma), written out: the compiler would contract it under -mfma anyway, and
      // the GPU kernel (kernels/cuda/random.cu) uses the same fused form, so every build agrees.
      const float sr = std * radius;
      if (k < n) out[k] = std::fma(sr, std::cos(theta), mean);
      if (k + 1 < n) out[k + 1] = std::fma(sr, std::sin(theta), mean);
    }
  }
}

Generator& default_generator() {
  static Generator gen;
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

}  // namespace gantry

#pragma once
// Generator: a counter-based Philox-4x32-10 random stream (Salmon et al., SC'11).
//
// Reproducibility contract: a generator's output depends only on (seed, offset). Each fill of
// n values draws from counters offset .. offset+ceil(n/4)-1 and then advances offset by that
// many, so the same seed and the same sequence of calls give the same numbers on every
// compiler, thread count and device (the CUDA backend evaluates the same formula per element).
// Normals use Box-Muller on pairs of uniforms. The state is two integers, saved in checkpoints.
#include <cstdint>

namespace gantry {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0x5eed) : seed_(seed) {}
  void manual_seed(uint64_t seed) { seed_ = seed; offset_ = 0; }
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }

  // Reserves ceil(n/4) counters and returns the first one (the base for an n-value fill).
  uint64_t reserve(int64_t n) {
    uint64_t base = offset_;
    offset_ += static_cast<uint64_t>((n + 3) / 4);
    return base;
  }

  // Host-side fills (the CPU path of Tensor::randn/rand/normal_/uniform_).
  void fill_uniform(float* out, int64_t n, float low, float high);
  void fill_normal(float* out, int64_t n, float mean, float std);

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// The process-wide default generator (used when a function takes a null Generator*).
Generator& default_generator();
void manual_seed(uint64_t seed);

namespace philox {
// One Philox-4x32-10 block: four 32-bit outputs for (counter, key). Exposed for tests and so
// the CUDA kernel can be checked against it.
void block(uint64_t counter, uint64_t key, uint32_t out[4]);
// Maps a 32-bit integer to a float in [0, 1) (24 high bits, exact in float).
inline float to_unit(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }
}  // namespace philox

}  // namespace gantry

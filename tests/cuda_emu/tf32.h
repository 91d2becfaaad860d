#pragma once
// TF32 as the tensor cores take fp32 inputs: the mantissa rounded to 10 bits, to nearest with
// ties away from zero (PTX cvt.rna.tf32.f32); exponent and sign unchanged. The models of
// cuDNN and cuBLAS apply it to the inputs when TF32 is allowed, so the TF32 tolerances of the
// parity tests are measured against a real loss of precision, not against exact products.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace gemu {

inline float round_to_tf32(float v) {
  if (!std::isfinite(v)) return v;
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  u += 0x1000u;  // half of the 13 dropped bits, added to the magnitude: ties go away from zero
  u &= 0xffffe000u;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

}  // namespace gemu

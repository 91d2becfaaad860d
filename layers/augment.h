#pragma once
// Differentiable image augmentations and adaptive discriminator augmentation (ADA, Karras et
// al., "Training Generative Adversarial Networks with Limited Data", NeurIPS 2020).
//
// Every augmentation is a differentiable function of the images, so when D sees augmented fakes
// the generator's gradient flows back through the augmentation (that is what keeps the
// augmentations from "leaking" into G's output). Per-sample choices are drawn on the host from
// a seeded Generator, so a run is reproducible and, with the generator state saved, resumable.
//
//   geometric (one spatial_gather op per batch; images must be square):
//     x-flip            out[i][j] = in[i][S-1-j]
//     rotation k * 90   torch.rot90(k, dims=(2, 3)): for k = 1 out[i][j] = in[j][S-1-i]
//     translation       by integers (tx, ty) in [-S/8, S/8], zero padded: out[i][j] = in[i-ty][j-tx]
//   color (elementwise ops with per-sample factors [N, 1, 1, 1]):
//     brightness        x + b,                 b ~ N(0, 0.2)
//     contrast          (x - m) c + m,         c = 2^N(0, 0.5), m = the image's mean
//     saturation        (x - g) s + g,         s = 2^N(0, 1),   g = the per-pixel channel mean
//                                                                (only for 3 channels)
//   general geometry (only with AdaOptions::geometric / augment_images(..., geometric = true);
//   StyleGAN2-ADA's "geom" group, after the integer geometry): one bilinear warp per batch with
//   reflection padding (four spatial_gathers weighted per pixel), of
//     isotropic scaling   by 2^N(0, 0.2)
//     rotation            by U(-pi, pi), with probability 1 - sqrt(1 - p), before and after:
//     anisotropic scaling x by 2^N(0, 0.2), y by its inverse
//     fractional translation by N(0, 0.125) of the image size in x and in y
//   cutout              x * mask, mask 0 on an S/2 x S/2 square centred uniformly at random
// applied in that order, each to each sample with probability p (independently).
#include <cstdint>
#include <string>
#include <vector>

#include "gantry/core/random.h"
#include "gantry/core/tensor.h"

namespace gantry {

namespace augment {

struct Geometry {
  bool xflip = false;
  int rot90 = 0;       // quarter turns, 0..3
  int tx = 0, ty = 0;  // translation in pixels (right, down)
};
// The gather map of spatial_gather for square images of side `size`: [N, size*size].
Tensor geometry_index(const std::vector<Geometry>& g, int64_t size);
// x [N, C, S, S] with one Geometry per sample.
Tensor apply_geometry(const Tensor& x, const std::vector<Geometry>& g);
// A general affine warp: output pixel (row i, column j) reads the input at
//   [x_in, y_in] = M [j - c, i - c] + [tx, ty] + [c, c],   c = (S - 1) / 2   (pixels),
// bilinearly, with reflection padding (torch's "reflect": -1 reads 1, S reads S - 2, repeated).
struct Warp {
  float m00 = 1, m01 = 0, m10 = 0, m11 = 1;
  float tx = 0, ty = 0;
};
// x [N, C, S, S] with one Warp per sample (S >= 2): core's affine_warp, differentiable in x any
// number of times (the map is fixed).
Tensor warp(const Tensor& x, const std::vector<Warp>& w);
// Per-sample factors, one value per sample (identity: 0 for brightness, 1 for the others).
Tensor brightness(const Tensor& x, const std::vector<float>& b);
Tensor contrast(const Tensor& x, const std::vector<float>& c);
Tensor saturation(const Tensor& x, const std::vector<float>& s);  // no-op for 1 channel
// Cutout: zeroes, in sample n, the square of side round(frac * S) centred at (cx[n], cy[n])
// (in [0, 1) of the image size); a negative cx leaves the sample untouched.
Tensor cutout(const Tensor& x, const std::vector<float>& cx, const std::vector<float>& cy,
              float frac = 0.5f);

}  // namespace augment

// The full pipeline above at probability p, drawing its choices from `gen` (a fixed number of
// values per call whatever p is, so the stream position depends only on the call count). The
// general geometry draws its values after the others, so without it the stream is what it was
// before it existed.
Tensor augment_images(const Tensor& x, float p, Generator& gen, bool geometric = false);

struct AdaOptions {
  double target = 0.6;      // wanted E[sign(D logit on reals)]
  double speed = 10000;     // images for p to go from 0 to 1 (StyleGAN2-ADA: 500k; small runs need less)
  int64_t interval = 4;     // training steps between adjustments
  double initial_p = 0.0;
  bool geometric = false;   // add the general geometry (StyleGAN2-ADA's "geom" group) to the pipeline
};

// Adaptive augmentation: p follows the overfitting heuristic r_t = E[sign(D_logit(real))].
// D outputs probabilities (a Sigmoid), so sign(logit) = sign(D(x) - 0.5).
class AdaptiveAugment {
 public:
  AdaptiveAugment(const AdaOptions& options, uint64_t seed);
  Tensor apply(const Tensor& x) { return augment_images(x, static_cast<float>(p_), gen_, opt_.geometric); }
  // Adds the signs of D's outputs on a real batch (probabilities, any device) to the tally.
  void observe_real(const Tensor& d_real);
  // The same for n outputs already in host memory (the trainer reads them back together with
  // its losses, in one copy).
  void observe_real(const float* d_real, int64_t n);
  // Ends a training step; every `interval` steps moves p by
  //   sign(r_t - target) * (images observed) / speed, clamped to [0, 1], and clears the tally.
  void end_step();
  double p() const { return p_; }
  double last_rt() const { return last_rt_; }
  const AdaOptions& options() const { return opt_; }

  // The complete state (p, the tally, the random stream) as JSON text, and back.
  std::string state_json() const;
  void load_state_json(const std::string& text);

 private:
  AdaOptions opt_;
  Generator gen_;
  double p_;
  double sign_sum_ = 0;
  int64_t sign_count_ = 0;
  int64_t steps_ = 0;  // steps since the last adjustment
  double last_rt_ = 0;
};

}  // namespace gantry

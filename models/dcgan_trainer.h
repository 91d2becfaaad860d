#pragma once
// DCGANTrainer: one training step of the PyTorch DCGAN example (and of the seeds), shared by
// dcgan_train, the dcgan_step benchmark and the tests.
//
// step(real) does, with BCE and the labels of the example (real 1, fake 0):
//   1. D update:  loss_d = BCE(D(real), 1) + BCE(D(G(z).detach()), 0);  optimizer_d.step()
//   2. G update:  loss_g = BCE(D(G(z)), 1)  with the D just updated;     optimizer_g.step()
// and reports d_x = mean D(real), d_g_z1 = mean D(fake) before D's update, d_g_z2 after it.
// The fake batch is made once and used twice (detached for D, attached for G), as in PyTorch.
//
// One difference from the example that changes no result: during the G update D's parameters
// are frozen (requires_grad off), so the backward skips D's weight gradients, which the example
// computes and then throws away at the next zero_grad().
//
// Options (off by default; a trainer without them is the example's step exactly):
// - enable_ema(decay): keeps an EMA generator (optim/ema.h), updated after every G step;
//   sample() uses it.
// - enable_ada(options, seed): adaptive discriminator augmentation (layers/augment.h): every
//   image D sees (real, fake for D, fake for G) goes through augment_images at the current p,
//   differentiably, and p follows sign(D(real) - 0.5) every `interval` steps.
#include <cstdint>
#include <memory>

#include "gantry/core/random.h"
#include "gantry/core/tensor.h"
#include "gantry/layers/augment.h"
#include "gantry/models/dcgan.h"
#include "gantry/optim/adam.h"
#include "gantry/optim/ema.h"

namespace gantry {

struct DCGANConfig {
  int64_t nz = 100, ngf = 64, ndf = 64, nc = 3;
  int image_size = 64;
  double lr = 2e-4, beta1 = 0.5, beta2 = 0.999;
};

struct StepStats {
  float loss_d = 0, loss_g = 0;  // loss_d = errD_real + errD_fake
  float d_x = 0, d_g_z1 = 0, d_g_z2 = 0;
  float ada_p = 0;  // the augmentation probability after this step (0 without ADA)
};

class DCGANTrainer {
 public:
  // Builds G and D with the DCGAN init from `init_gen` (null: the default generator) on `device`.
  DCGANTrainer(const DCGANConfig& config, Device device, Generator* init_gen = nullptr);

  // One step on a real batch [N, nc, S, S] in [-1, 1] (any device; moved to the trainer's).
  // The latent batch is drawn from `noise_gen` ([N, nz, 1, 1] standard normal).
  StepStats step(const Tensor& real, Generator& noise_gen);

  // Images from a latent batch [N, nz, 1, 1], without recording gradients. eval = true uses
  // BN's running statistics (netG.eval()); eval = false uses the batch's statistics, as the
  // PyTorch example's fixed-noise samples do, but leaves the running statistics as they were
  // (sampling must not change the model, or a resumed run would diverge).
  // With an EMA generator the images come from it unless use_ema is false.
  Tensor sample(const Tensor& z, bool eval, bool use_ema = true);

  // Keeps an EMA copy of G from now on (starting as G's current weights).
  void enable_ema(double decay);
  bool has_ema() const { return g_ema_ != nullptr; }
  DCGANGenerator& generator_ema();  // throws std::logic_error without enable_ema
  EMA* ema() { return ema_.get(); }
  // Turns on adaptive discriminator augmentation.
  void enable_ada(const AdaOptions& options, uint64_t seed);
  AdaptiveAugment* ada() { return ada_.get(); }

  DCGANGenerator& generator() { return *g_; }
  DCGANDiscriminator& discriminator() { return *d_; }
  Adam& optimizer_g() { return *opt_g_; }
  Adam& optimizer_d() { return *opt_d_; }
  const DCGANConfig& config() const { return config_; }
  Device device() const { return device_; }

 private:
  DCGANConfig config_;
  Device device_;
  std::shared_ptr<DCGANGenerator> g_;
  std::shared_ptr<DCGANDiscriminator> d_;
  std::unique_ptr<Adam> opt_g_, opt_d_;
  std::shared_ptr<DCGANGenerator> g_ema_;
  std::unique_ptr<EMA> ema_;
  std::unique_ptr<AdaptiveAugment> ada_;
  // BCE's targets (all ones, all zeros) for the last batch size: made once, not twice a step.
  Tensor real_labels_, fake_labels_;
};

}  // namespace gantry

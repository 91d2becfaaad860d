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
#include <cstdint>
#include <memory>

#include "gantry/core/random.h"
#include "gantry/core/tensor.h"
#include "gantry/models/dcgan.h"
#include "gantry/optim/adam.h"

namespace gantry {

struct DCGANConfig {
  int64_t nz = 100, ngf = 64, ndf = 64, nc = 3;
  int image_size = 64;
  double lr = 2e-4, beta1 = 0.5, beta2 = 0.999;
};

struct StepStats {
  float loss_d = 0, loss_g = 0;  // loss_d = errD_real + errD_fake
  float d_x = 0, d_g_z1 = 0, d_g_z2 = 0;
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
  Tensor sample(const Tensor& z, bool eval);

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
};

}  // namespace gantry

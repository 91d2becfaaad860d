#pragma once
// DCGANTrainer: one training step of the PyTorch DCGAN example (and of the seeds), shared by
// dcgan_train, the dcgan_step benchmark and the tests.
//
// step(real) does, with the default loss (BCE, labels real 1, fake 0, as the example):
//   1. D update:  loss_d = BCE(D(real), 1) + BCE(D(G(z).detach()), 0);  optimizer_d.step()
//   2. G update:  loss_g = BCE(D(G(z)), 1)  with the D just updated;     optimizer_g.step()
// and reports d_x = mean D(real), d_g_z1 = mean D(fake) before D's update, d_g_z2 after it.
// The fake batch is made once and used twice (detached for D, attached for G), as in PyTorch.
//
// One difference from the example that changes no result: during the G update D's parameters
// are frozen (requires_grad off), so the backward skips D's weight gradients, which the example
// computes and then throws away at the next zero_grad().
//
// The loss (DCGANConfig::loss), with s = D's raw score (forward_logits, no Sigmoid) and
// t = real_label:
//   bce    (default)  D: BCE(sigmoid(s_real), t) + BCE(sigmoid(s_fake), 0)
//                     G: BCE(sigmoid(s_fake), 1)                     (the non-saturating loss)
//   hinge             D: mean(relu(1 - s_real)) + mean(relu(1 + s_fake))
//                     G: -mean(s_fake)                               (Lim & Ye 2017; SNGAN, BigGAN)
//   lsgan             D: 0.5 mean((s_real - t)^2) + 0.5 mean(s_fake^2)
//                     G: 0.5 mean((s_fake - 1)^2)                    (Mao et al. 2017, a=0, b=t, c=1)
//   wgan              D: mean(s_fake) - mean(s_real)
//                     G: -mean(s_fake)                   (Arjovsky et al. 2017; with gp_lambda: WGAN-GP)
// bce runs D with its Sigmoid and BCE on the probabilities, exactly as the example does. For
// every loss d_x, d_g_z1 and d_g_z2 are means of sigmoid(s), so they read alike: near 1, D calls
// the images real. real_label < 1 is one-sided label smoothing (Salimans et al. 2016): only D's
// target for real images moves; G's target stays 1. The hinge loss has no target to smooth.
// lr_g / lr_d give G and D their own learning rates (TTUR, Heusel et al. 2017); 0 = lr.
// spectral_norm builds D with every conv spectrally normalized (Miyato et al. 2018; SNGAN pairs
// it with the hinge loss). d_norm picks D's normalization layers (DiscriminatorNorm, dcgan.h):
// batch (the example's), instance, layer (WGAN-GP's) or none.
// d_steps = K > 1 updates D K times per G update (WGAN's n_critic, SNGAN's n_dis): D update k
// takes real batch k and latent batch k; G's update then goes through the fake batch of the last
// D update, as the K = 1 step (the example's) does, so a step consumes K real batches and K
// latent batches. The reported loss_d, d_x and d_g_z1 are the last D update's; ADA tallies the
// real batches of all K.
//
// Gradient penalties (0 = off), added to D's loss at every D update; both differentiate D's
// input gradient (grad with create_graph, core/autograd.h): each costs about two more D
// backwards per update, and WGAN-GP one more D forward (on x^):
//   r1_gamma   R1 (Mescheder et al. 2018): (gamma/2) mean_n |d s(aug(x_n)) / d x_n|^2 on the
//              real batch x. StyleGAN2 uses 10 at 1024^2; small images want less (0.1-1 at
//              64^2). With ADA on, the gradient is taken at the real images themselves, through
//              the augmentation, as StyleGAN2-ADA does (r1_through_augment; false: at the
//              augmented images D sees, what gantry did before).
//   gp_lambda  WGAN-GP (Gulrajani et al. 2017): lambda mean_n (|d s(x^_n) / d x^_n| - 1)^2 at
//              x^ = e x_real + (1 - e) x_fake, e ~ U[0, 1] per image (the images as D sees
//              them); the paper uses 10 with the wgan loss, d_steps 5 and Adam(1e-4, 0, 0.9).
//              The paper's critic has layer norm, not batch norm (each image's gradient then
//              depends on that image alone): d_norm = DiscriminatorNorm::Layer. With D's default
//              batch norm the penalty is still well defined, and the extra D forward on x^
//              updates BN's running statistics once more.
// r1_every = k > 1 is StyleGAN2's lazy regularization (Karras et al. 2020): R1 only on every
// k-th D update, weighted k*gamma so that its average pull is the same, for about 1/k of its
// cost. The count is of D updates since the start (d_updates(); a resumed run restores it with
// set_d_updates, e.g. step * d_steps), so update n gets R1 when n % k == 0. StyleGAN2 runs the
// penalty as a separate optimizer step and rescales Adam's lr and betas for it; here it joins
// D's loss of that update, so Adam needs no change.
// StepStats::penalty reports the sum of both, averaged over the step's D updates (an update
// without R1 counts 0; with d_steps 1, the update's own).
//
// Options (off by default; a trainer without them is the example's step exactly):
// - enable_ema(decay, rampup): keeps an EMA generator (optim/ema.h), updated after every G
//   step (with StyleGAN2-ADA's ramp-up of the decay when rampup > 0); sample() uses it.
// - enable_ada(options, seed): adaptive discriminator augmentation (layers/augment.h): every
//   image D sees (real, fake for D, fake for G) goes through augment_images at the current p,
//   differentiably, and p follows sign(D(real) - 0.5) every `interval` steps.
#include <cstdint>
#include <memory>
#include <string>

#include "gantry/core/random.h"
#include "gantry/core/tensor.h"
#include "gantry/layers/augment.h"
#include "gantry/models/dcgan.h"
#include "gantry/optim/adam.h"
#include "gantry/optim/ema.h"

namespace gantry {

enum class GANLoss { BCE, Hinge, LeastSquares, Wasserstein };

// "bce", "hinge", "lsgan", "wgan" (the dcgan_train --loss values) and back. gan_loss_from_name throws
// std::invalid_argument naming the accepted values.
GANLoss gan_loss_from_name(const std::string& name);
const char* gan_loss_name(GANLoss loss);

struct DCGANConfig {
  int64_t nz = 100, ngf = 64, ndf = 64, nc = 3;
  int image_size = 64;
  double lr = 2e-4, beta1 = 0.5, beta2 = 0.999;
  double lr_g = 0, lr_d = 0;  // G's and D's own learning rates (TTUR); 0 = lr
  GANLoss loss = GANLoss::BCE;
  double real_label = 1.0;  // D's target for real images: bce and lsgan, in (0, 1]; hinge: 1
  bool spectral_norm = false;  // D's convs spectrally normalized (SNGAN; DCGANDiscriminator)
  SpectralNormForm spectral_norm_form = SpectralNormForm::Classic;  // which PyTorch one (layers.h)
  DiscriminatorNorm d_norm = DiscriminatorNorm::Batch;  // D's norm layers (dcgan.h)
  int d_steps = 1;             // D updates per G update (n_critic); >= 1
  double r1_gamma = 0;         // R1 penalty weight on real images; 0 = off
  int r1_every = 1;            // lazy R1: on every k-th D update, weighted k * r1_gamma; >= 1
  bool r1_through_augment = true;  // with ADA: R1's gradient at the reals, through the augmentation (StyleGAN2-ADA)
  double gp_lambda = 0;        // WGAN-GP penalty weight at real/fake interpolates; 0 = off
  double generator_lr() const { return lr_g > 0 ? lr_g : lr; }
  double discriminator_lr() const { return lr_d > 0 ? lr_d : lr; }
};

struct StepStats {
  float loss_d = 0, loss_g = 0;  // loss_d = errD_real + errD_fake
  float d_x = 0, d_g_z1 = 0, d_g_z2 = 0;
  float ada_p = 0;  // the augmentation probability after this step (0 without ADA)
  float penalty = 0;  // R1 + gradient penalty as added to D's loss, the mean over the step's D updates (0 when off)
};

class DCGANTrainer {
 public:
  // Builds G and D with the DCGAN init from `init_gen` (null: the default generator) on `device`.
  // Throws std::invalid_argument for a learning rate <= 0, real_label outside (0, 1], a
  // real_label other than 1 with the hinge or wgan loss, d_steps < 1, a negative penalty
  // weight, r1_every < 1 (or > 1 without r1_gamma), or the wgan loss with nothing that keeps D Lipschitz (gp_lambda or spectral_norm).
  DCGANTrainer(const DCGANConfig& config, Device device, Generator* init_gen = nullptr);

  // One step on a real batch [N, nc, S, S] in [-1, 1] (any device; moved to the trainer's).
  // The latent batch is drawn from `noise_gen` ([N, nz, 1, 1] standard normal).
  StepStats step(const Tensor& real, Generator& noise_gen);
  // The same step with the latent batch given: z [N, nz, 1, 1] (or [N, nz]), N = real's N;
  // with gp_lambda also the interpolation weights `mix` [N] in [0, 1].
  StepStats step(const Tensor& real, const Tensor& z, const Tensor& mix = Tensor());
  // The step with d_steps D updates: `reals` holds d_steps real batches of one shape (the
  // single-batch forms above need d_steps = 1); the latent batches are drawn from `noise_gen`
  // in order, or given in `zs` (one per real batch). With gp_lambda the interpolation weights
  // are drawn from `noise_gen` too (after each latent batch: [N] uniform), or given in `mix`
  // (one [N] tensor per real batch; required then).
  StepStats step(const std::vector<Tensor>& reals, Generator& noise_gen);
  StepStats step(const std::vector<Tensor>& reals, const std::vector<Tensor>& zs,
                 const std::vector<Tensor>& mix = {});

  // Images from a latent batch [N, nz, 1, 1], without recording gradients. eval = true uses
  // BN's running statistics (netG.eval()); eval = false uses the batch's statistics, as the
  // PyTorch example's fixed-noise samples do, but leaves the running statistics as they were
  // (sampling must not change the model, or a resumed run would diverge).
  // With an EMA generator the images come from it unless use_ema is false.
  Tensor sample(const Tensor& z, bool eval, bool use_ema = true);

  // Keeps an EMA copy of G from now on (starting as G's current weights).
  // rampup > 0: StyleGAN2-ADA's EMA ramp-up (optim/ema.h), counted in G steps; a resumed run
  // restores the count with ema()->set_updates(step).
  void enable_ema(double decay, double rampup = 0);
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
  // D updates done so far (lazy R1's count); set it when continuing a run (step * d_steps).
  int64_t d_updates() const { return d_updates_; }
  void set_d_updates(int64_t n);
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
  // The loss targets for the last batch size (D's real_label, 0, G's 1): made once, not each step.
  Tensor real_labels_, fake_labels_, g_labels_;
  int64_t d_updates_ = 0;
};

}  // namespace gantry

#include "gantry/models/dcgan_trainer.h"

#include <stdexcept>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"

namespace gantry {

GANLoss gan_loss_from_name(const std::string& name) {
  if (name == "bce") return GANLoss::BCE;
  if (name == "hinge") return GANLoss::Hinge;
  if (name == "lsgan") return GANLoss::LeastSquares;
  if (name == "wgan") return GANLoss::Wasserstein;
  throw std::invalid_argument("GAN loss '" + name + "': must be bce, hinge, lsgan or wgan");
}

const char* gan_loss_name(GANLoss loss) {
  switch (loss) {
    case GANLoss::BCE: return "bce";
    case GANLoss::Hinge: return "hinge";
    case GANLoss::LeastSquares: return "lsgan";
    case GANLoss::Wasserstein: return "wgan";
  }
  return "?";
}

DCGANTrainer::DCGANTrainer(const DCGANConfig& config, Device device, Generator* init_gen)
    : config_(config), device_(device) {
  if (!(config.generator_lr() > 0) || !(config.discriminator_lr() > 0))
    throw std::invalid_argument("DCGANTrainer: learning rates must be positive (lr " + std::to_string(config.lr) +
                                ", lr_g " + std::to_string(config.lr_g) + ", lr_d " + std::to_string(config.lr_d) + ")");
  if (!(config.real_label > 0 && config.real_label <= 1))
    throw std::invalid_argument("DCGANTrainer: real_label " + std::to_string(config.real_label) +
                                " must be in (0, 1] (0.9 is the usual one-sided label smoothing)");
  if ((config.loss == GANLoss::Hinge || config.loss == GANLoss::Wasserstein) && config.real_label != 1.0)
    throw std::invalid_argument(std::string("DCGANTrainer: the ") + gan_loss_name(config.loss) +
                                " loss has no label to smooth (real_label " + std::to_string(config.real_label) +
                                "); use bce or lsgan, or real_label 1");
  if (!(config.r1_gamma >= 0) || !(config.gp_lambda >= 0))
    throw std::invalid_argument("DCGANTrainer: penalty weights must be >= 0 (r1_gamma " + std::to_string(config.r1_gamma) +
                                ", gp_lambda " + std::to_string(config.gp_lambda) + "); 0 turns a penalty off");
  if (config.loss == GANLoss::Wasserstein && config.gp_lambda == 0 && !config.spectral_norm)
    throw std::invalid_argument("DCGANTrainer: the wgan loss needs D kept Lipschitz: a gradient penalty "
                                "(gp_lambda, WGAN-GP uses 10) or spectral_norm; without either D's scores grow without bound");
  if (config.r1_every < 1 || (config.r1_every > 1 && config.r1_gamma == 0))
    throw std::invalid_argument("DCGANTrainer: r1_every " + std::to_string(config.r1_every) +
                                " must be at least 1, and above 1 only with r1_gamma (lazy R1: the penalty on every "
                                "k-th D update; StyleGAN2 uses 16)");
  if (config.d_steps < 1)
    throw std::invalid_argument("DCGANTrainer: d_steps " + std::to_string(config.d_steps) +
                                " must be at least 1 (D updates per G update; 1 is the DCGAN example's step)");
  g_ = make_generator(config.nz, config.ngf, config.nc, config.image_size, init_gen);
  d_ = make_discriminator(config.nc, config.ndf, config.image_size, init_gen, config.spectral_norm,
                          config.spectral_norm_form, config.d_norm);
  g_->to(device);
  d_->to(device);
  AdamOptions opt;
  opt.beta1 = config.beta1;
  opt.beta2 = config.beta2;
  opt.lr = config.generator_lr();
  opt_g_ = std::make_unique<Adam>(g_->parameters(), opt);
  opt.lr = config.discriminator_lr();
  opt_d_ = std::make_unique<Adam>(d_->parameters(), opt);
}

namespace {
void set_requires_grad(const std::vector<Tensor>& params, bool on) {
  for (const Tensor& p : params) {
    Tensor handle = p;
    handle.requires_grad_(on);
  }
}

// D's loss on one batch of its outputs (probabilities for bce, raw scores otherwise) against
// `target` (the real label, or 0 for fakes); `real` picks hinge's side.
Tensor discriminator_loss(GANLoss loss, const Tensor& out, const Tensor& target, bool real) {
  switch (loss) {
    case GANLoss::BCE: return binary_cross_entropy(out, target);
    case GANLoss::Hinge: return mean(relu(real ? rsub(out, 1.f) : add(out, 1.f)));
    case GANLoss::LeastSquares: return mul(mse_loss(out, target), 0.5f);
    case GANLoss::Wasserstein: return real ? neg(mean(out)) : mean(out);
  }
  throw std::logic_error("discriminator_loss: unknown loss");
}

// G's loss on D's outputs for its fakes (`ones`: G's target, 1).
Tensor generator_loss(GANLoss loss, const Tensor& out, const Tensor& ones) {
  switch (loss) {
    case GANLoss::BCE: return binary_cross_entropy(out, ones);
    case GANLoss::Hinge: return neg(mean(out));
    case GANLoss::LeastSquares: return mul(mse_loss(out, ones), 0.5f);
    case GANLoss::Wasserstein: return neg(mean(out));
  }
  throw std::logic_error("generator_loss: unknown loss");
}

// mean_n |d sum(s) / d x_n|^2 per image, for `x` (requires grad) and D's scores s on it: the
// gradient is recorded (create_graph) so the penalty's own backward reaches D's weights.
// Returns the per-image squared norms [N].
Tensor input_grad_sq_norms(const Tensor& scores, const Tensor& x) {
  GradOptions opt;
  opt.create_graph = true;
  const Tensor g = grad({sum(scores)}, {x}, {}, opt)[0];
  return sum(square(g), {1, 2, 3});
}
}  // namespace

StepStats DCGANTrainer::step(const Tensor& real, Generator& noise_gen) {
  return step(std::vector<Tensor>{real}, noise_gen);
}

StepStats DCGANTrainer::step(const Tensor& real, const Tensor& z, const Tensor& mix) {
  return step(std::vector<Tensor>{real}, std::vector<Tensor>{z},
              mix.defined() ? std::vector<Tensor>{mix} : std::vector<Tensor>{});
}

StepStats DCGANTrainer::step(const std::vector<Tensor>& reals, Generator& noise_gen) {
  std::vector<Tensor> zs, mix;
  for (const Tensor& real : reals) {
    zs.push_back(Tensor::randn({real.shape().at(0), config_.nz, 1, 1}, &noise_gen, device_));
    if (config_.gp_lambda > 0) mix.push_back(Tensor::rand({real.shape().at(0)}, &noise_gen, device_));
  }
  return step(reals, zs, mix);
}

StepStats DCGANTrainer::step(const std::vector<Tensor>& reals_in, const std::vector<Tensor>& zs_in,
                             const std::vector<Tensor>& mix_in) {
  const size_t k_steps = static_cast<size_t>(config_.d_steps);
  if (reals_in.size() != k_steps || zs_in.size() != k_steps)
    throw std::invalid_argument("DCGANTrainer::step: d_steps is " + std::to_string(k_steps) + ", so a step takes " +
                                std::to_string(k_steps) + " real batches and as many latent batches; got " +
                                std::to_string(reals_in.size()) + " and " + std::to_string(zs_in.size()));
  const int64_t n = reals_in[0].shape().at(0);
  std::vector<Tensor> reals, zs;
  for (size_t k = 0; k < k_steps; ++k) {
    if (reals_in[k].shape() != reals_in[0].shape())
      throw std::invalid_argument("DCGANTrainer::step: the real batches of one step must have one shape; batch " +
                                  std::to_string(k) + " is " + shape_str(reals_in[k].shape()) + ", batch 0 " +
                                  shape_str(reals_in[0].shape()));
    const Tensor& z = zs_in[k];
    const bool z_ok = (z.dim() == 4 && z.size(2) == 1 && z.size(3) == 1) || z.dim() == 2;
    if (!z_ok || z.size(0) != n || z.size(1) != config_.nz)
      throw std::invalid_argument("DCGANTrainer::step: z must be [" + std::to_string(n) + ", " + std::to_string(config_.nz) +
                                  ", 1, 1] (the real batch's size, nz), got " + shape_str(z.shape()));
    reals.push_back(reals_in[k].to(device_));
    zs.push_back(z.to(device_));
  }
  const bool gp = config_.gp_lambda > 0, r1 = config_.r1_gamma > 0;
  if (!gp && !mix_in.empty())
    throw std::invalid_argument("DCGANTrainer::step: interpolation weights (mix) given, but gp_lambda is 0");
  if (gp && mix_in.size() != k_steps)
    throw std::invalid_argument("DCGANTrainer::step: gp_lambda is on, so a step takes " + std::to_string(k_steps) +
                                " interpolation-weight batches (mix, [N] in [0, 1]); got " + std::to_string(mix_in.size()));
  std::vector<Tensor> mixes;
  for (size_t k = 0; gp && k < k_steps; ++k) {
    if (mix_in[k].shape() != Shape{n})
      throw std::invalid_argument("DCGANTrainer::step: mix must be [" + std::to_string(n) + "] (one weight per image), got " +
                                  shape_str(mix_in[k].shape()));
    mixes.push_back(mix_in[k].to(device_));
  }
  StepStats st;
  g_->train();
  d_->train();
  if (!real_labels_.defined() || real_labels_.numel() != n) {
    real_labels_ = Tensor::full({n}, static_cast<float>(config_.real_label), device_);
    fake_labels_ = Tensor::zeros({n}, device_);
    g_labels_ = Tensor::ones({n}, device_);
  }
  const GANLoss loss = config_.loss;
  // D sees every image through the augmentation when ADA is on (differentiably, so G's
  // gradient passes through it in (2)). bce takes D's probabilities, the others its scores.
  auto seen_by_d = [&](const Tensor& x) { return ada_ ? ada_->apply(x) : x; };
  auto score = [&](const Tensor& seen) {
    return loss == GANLoss::BCE ? d_->forward(seen) : d_->forward_logits(seen);
  };
  auto D = [&](const Tensor& x) { return score(seen_by_d(x)); };
  auto prob = [&](const Tensor& out) { return loss == GANLoss::BCE ? out : sigmoid(out); };

  // (1) D, d_steps times: maximize log D(x) + log(1 - D(G(z))) (or the hinge / least-squares
  // form of it), each time on its own real and latent batch.
  Tensor out_real, err_real, fake, out_fake, err_fake, step_penalty;
  std::vector<Tensor> earlier_p_real;  // ADA's tally of the updates before the last one
  for (size_t k = 0; k < k_steps; ++k) {
    const bool last = k + 1 == k_steps;
    opt_d_->zero_grad();
    Tensor penalty;  // R1 + gradient penalty, added to D's loss
    const bool r1_now = r1 && d_updates_ % config_.r1_every == 0;  // lazy R1: every r1_every-th update
    // R1 differentiates D's raw scores at the real images: with ADA, at the reals before the
    // augmentation, through it (StyleGAN2-ADA), or at the augmented ones D sees.
    const bool r1_at_reals = r1_now && ada_ && config_.r1_through_augment;
    Tensor r1_at;
    if (r1_at_reals) r1_at = reals[k].detach().requires_grad_(true);
    Tensor real_seen = seen_by_d(r1_at_reals ? r1_at : reals[k]);
    if ((r1_now || gp) && !r1_at_reals) real_seen = real_seen.detach();
    if (r1_now) {
      if (!r1_at_reals) r1_at = real_seen.requires_grad_(true);
      const Tensor s_real = d_->forward_logits(real_seen);
      out_real = loss == GANLoss::BCE ? sigmoid(s_real) : s_real;
      penalty = mul(mean(input_grad_sq_norms(s_real, r1_at)),
                    static_cast<float>(config_.r1_gamma * config_.r1_every / 2));
      r1_at.requires_grad_(false);  // the loss's backward needs D's weights, not the images
    } else {
      out_real = score(real_seen);
    }
    err_real = discriminator_loss(loss, out_real, real_labels_, /*real=*/true);
    (penalty.defined() ? add(err_real, penalty) : err_real).backward();
    if (last) {
      fake = g_->forward(zs[k]);
    } else {  // only the detached fake is used: no graph through G
      NoGradGuard guard;
      fake = g_->forward(zs[k]);
    }
    const Tensor fake_seen = seen_by_d(fake.detach());
    out_fake = score(fake_seen);
    err_fake = discriminator_loss(loss, out_fake, fake_labels_, /*real=*/false);
    err_fake.backward();
    if (gp) {
      // WGAN-GP at x^ = e x_real + (1 - e) x_fake: lambda mean (|grad s(x^)| - 1)^2. The 1e-12
      // keeps sqrt's gradient finite where a gradient is exactly 0.
      const Tensor e = mixes[k].reshape({n, 1, 1, 1});
      const Tensor x_hat = add(mul(real_seen.detach(), e), mul(fake_seen.detach(), rsub(e, 1.f))).detach().requires_grad_(true);
      const Tensor norms = sqrt(add(input_grad_sq_norms(d_->forward_logits(x_hat), x_hat), 1e-12f));
      const Tensor gp_term = mul(mean(square(add(norms, -1.f))), static_cast<float>(config_.gp_lambda));
      gp_term.backward();
      penalty = penalty.defined() ? add(penalty.detach(), gp_term.detach()) : gp_term.detach();
    }
    // The step reports the mean over its D updates: a lazy R1 off the last update still shows.
    if (penalty.defined()) {
      const Tensor part = mul(penalty.detach(), 1.f / static_cast<float>(k_steps));
      step_penalty = step_penalty.defined() ? add(step_penalty, part) : part;
    }
    opt_d_->step();
    ++d_updates_;
    if (ada_ && !last) {
      NoGradGuard guard;
      earlier_p_real.push_back(prob(out_real.detach()));
    }
  }

  // (2) G: maximize log D(G(z)), through the updated D, on the last D update's fake batch; D's
  // own gradients are not needed.
  opt_g_->zero_grad();
  set_requires_grad(d_->parameters(), false);
  Tensor out_g = D(fake);
  Tensor err_g = generator_loss(loss, out_g, g_labels_);
  err_g.backward();
  set_requires_grad(d_->parameters(), true);
  opt_g_->step();
  if (ema_) ema_->update();

  // Read the six scalars (and, with ADA, D's outputs on the reals) back in one copy, after all
  // the work is queued: one wait for the device per step on a GPU. Read one by one they
  // waited four times (each mean() is a new launch behind the previous read), and ADA's
  // tally a fifth.
  NoGradGuard guard;
  const Tensor p_real = prob(out_real);
  std::vector<Tensor> parts = {err_real.reshape({1}),          err_fake.reshape({1}),
                               err_g.reshape({1}),             mean(p_real).reshape({1}),
                               mean(prob(out_fake)).reshape({1}), mean(prob(out_g)).reshape({1})};
  if (r1 || gp) parts.push_back(step_penalty.defined() ? step_penalty.reshape({1}) : Tensor::zeros({1}, device_));
  if (ada_) {
    earlier_p_real.push_back(p_real);
    for (const Tensor& p : earlier_p_real) parts.push_back(p.reshape({p.numel()}));
  }
  const Tensor host = cat(parts).cpu();
  const float* v = host.data();
  int64_t next = 6;
  if (r1 || gp) st.penalty = v[next++];
  st.loss_d = v[0] + v[1];
  st.loss_g = v[2];
  st.d_x = v[3];
  st.d_g_z1 = v[4];
  st.d_g_z2 = v[5];
  if (ada_) {  // p changes for the next step's augmentation, as before
    ada_->observe_real(v + next, host.numel() - next);
    ada_->end_step();
    st.ada_p = static_cast<float>(ada_->p());
  }
  return st;
}

void DCGANTrainer::set_d_updates(int64_t n) {
  if (n < 0) throw std::invalid_argument("DCGANTrainer::set_d_updates: " + std::to_string(n) + " must be >= 0");
  d_updates_ = n;
}

void DCGANTrainer::enable_ema(double decay, double rampup) {
  Generator scratch(0);  // the init is overwritten by the copy; keep the default stream untouched
  g_ema_ = make_generator(config_.nz, config_.ngf, config_.nc, config_.image_size, &scratch);
  g_ema_->to(device_);
  ema_ = std::make_unique<EMA>(*g_, *g_ema_, decay, rampup);
}

DCGANGenerator& DCGANTrainer::generator_ema() {
  if (!g_ema_) throw std::logic_error("DCGANTrainer::generator_ema: no EMA generator (call enable_ema first)");
  return *g_ema_;
}

void DCGANTrainer::enable_ada(const AdaOptions& options, uint64_t seed) {
  ada_ = std::make_unique<AdaptiveAugment>(options, seed);
}

Tensor DCGANTrainer::sample(const Tensor& z, bool eval, bool use_ema) {
  NoGradGuard guard;
  DCGANGenerator* g = use_ema && g_ema_ ? g_ema_.get() : g_.get();
  const bool was_training = g->is_training();
  std::vector<Tensor> saved;
  if (!eval)
    for (auto& [name, buffer] : g->named_buffers()) saved.push_back(buffer.clone());
  g->train(!eval);
  Tensor images = g->forward(z.to(device_));
  g->train(was_training);
  if (!eval) {
    size_t i = 0;
    for (auto& [name, buffer] : g->named_buffers()) {
      Tensor b = buffer;
      b.copy_(saved[i++]);
    }
  }
  return images;
}

}  // namespace gantry

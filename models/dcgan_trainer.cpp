#include "gantry/models/dcgan_trainer.h"

#include <stdexcept>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"

namespace gantry {

DCGANTrainer::DCGANTrainer(const DCGANConfig& config, Device device, Generator* init_gen)
    : config_(config), device_(device) {
  g_ = make_generator(config.nz, config.ngf, config.nc, config.image_size, init_gen);
  d_ = make_discriminator(config.nc, config.ndf, config.image_size, init_gen);
  g_->to(device);
  d_->to(device);
  AdamOptions opt;
  opt.lr = config.lr;
  opt.beta1 = config.beta1;
  opt.beta2 = config.beta2;
  opt_g_ = std::make_unique<Adam>(g_->parameters(), opt);
  opt_d_ = std::make_unique<Adam>(d_->parameters(), opt);
}

namespace {
void set_requires_grad(const std::vector<Tensor>& params, bool on) {
  for (const Tensor& p : params) {
    Tensor handle = p;
    handle.requires_grad_(on);
  }
}
}  // namespace

StepStats DCGANTrainer::step(const Tensor& real_in, Generator& noise_gen) {
  const Tensor real = real_in.to(device_);
  const int64_t n = real.shape()[0];
  StepStats st;
  g_->train();
  d_->train();
  if (!real_labels_.defined() || real_labels_.numel() != n) {
    real_labels_ = Tensor::ones({n}, device_);
    fake_labels_ = Tensor::zeros({n}, device_);
  }
  const Tensor& ones = real_labels_;
  const Tensor& zeros = fake_labels_;
  // D sees every image through the augmentation when ADA is on (differentiably, so G's
  // gradient passes through it in (2)).
  auto D = [&](const Tensor& x) { return d_->forward(ada_ ? ada_->apply(x) : x); };

  // (1) D: maximize log D(x) + log(1 - D(G(z))).
  opt_d_->zero_grad();
  Tensor out_real = D(real);
  Tensor err_real = binary_cross_entropy(out_real, ones);
  err_real.backward();
  Tensor z = Tensor::randn({n, config_.nz, 1, 1}, &noise_gen, device_);
  Tensor fake = g_->forward(z);
  Tensor out_fake = D(fake.detach());
  Tensor err_fake = binary_cross_entropy(out_fake, zeros);
  err_fake.backward();
  opt_d_->step();

  // (2) G: maximize log D(G(z)), through the updated D; D's own gradients are not needed.
  opt_g_->zero_grad();
  set_requires_grad(d_->parameters(), false);
  Tensor out_g = D(fake);
  Tensor err_g = binary_cross_entropy(out_g, ones);
  err_g.backward();
  set_requires_grad(d_->parameters(), true);
  opt_g_->step();
  if (ema_) ema_->update();

  // Read the six scalars (and, with ADA, D's outputs on the reals) back in one copy, after all
  // the work is queued: one wait for the device per step on a GPU. Read one by one they
  // waited four times (each mean() is a new launch behind the previous read), and ADA's
  // tally a fifth.
  NoGradGuard guard;
  std::vector<Tensor> parts = {err_real.reshape({1}),        err_fake.reshape({1}),
                               err_g.reshape({1}),           mean(out_real).reshape({1}),
                               mean(out_fake).reshape({1}), mean(out_g).reshape({1})};
  if (ada_) parts.push_back(out_real.reshape({out_real.numel()}));
  const Tensor host = cat(parts).cpu();
  const float* v = host.data();
  st.loss_d = v[0] + v[1];
  st.loss_g = v[2];
  st.d_x = v[3];
  st.d_g_z1 = v[4];
  st.d_g_z2 = v[5];
  if (ada_) {  // p changes for the next step's augmentation, as before
    ada_->observe_real(v + 6, out_real.numel());
    ada_->end_step();
    st.ada_p = static_cast<float>(ada_->p());
  }
  return st;
}

void DCGANTrainer::enable_ema(double decay) {
  Generator scratch(0);  // the init is overwritten by the copy; keep the default stream untouched
  g_ema_ = make_generator(config_.nz, config_.ngf, config_.nc, config_.image_size, &scratch);
  g_ema_->to(device_);
  ema_ = std::make_unique<EMA>(*g_, *g_ema_, decay);
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

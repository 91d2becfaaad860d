#include "gantry/models/dcgan_trainer.h"

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
  const Tensor ones = Tensor::ones({n}, device_), zeros = Tensor::zeros({n}, device_);

  // (1) D: maximize log D(x) + log(1 - D(G(z))).
  opt_d_->zero_grad();
  Tensor out_real = d_->forward(real);
  Tensor err_real = binary_cross_entropy(out_real, ones);
  err_real.backward();
  Tensor z = Tensor::randn({n, config_.nz, 1, 1}, &noise_gen, device_);
  Tensor fake = g_->forward(z);
  Tensor out_fake = d_->forward(fake.detach());
  Tensor err_fake = binary_cross_entropy(out_fake, zeros);
  err_fake.backward();
  opt_d_->step();

  // (2) G: maximize log D(G(z)), through the updated D; D's own gradients are not needed.
  opt_g_->zero_grad();
  set_requires_grad(d_->parameters(), false);
  Tensor out_g = d_->forward(fake);
  Tensor err_g = binary_cross_entropy(out_g, ones);
  err_g.backward();
  set_requires_grad(d_->parameters(), true);
  opt_g_->step();

  // Read the scalars back once, after all the work is queued (one sync on a GPU).
  NoGradGuard guard;
  st.loss_d = err_real.item() + err_fake.item();
  st.loss_g = err_g.item();
  st.d_x = mean(out_real).item();
  st.d_g_z1 = mean(out_fake).item();
  st.d_g_z2 = mean(out_g).item();
  return st;
}

Tensor DCGANTrainer::sample(const Tensor& z, bool eval) {
  NoGradGuard guard;
  const bool was_training = g_->is_training();
  std::vector<Tensor> saved;
  if (!eval)
    for (auto& [name, buffer] : g_->named_buffers()) saved.push_back(buffer.clone());
  g_->train(!eval);
  Tensor images = g_->forward(z.to(device_));
  g_->train(was_training);
  if (!eval) {
    size_t i = 0;
    for (auto& [name, buffer] : g_->named_buffers()) {
      Tensor b = buffer;
      b.copy_(saved[i++]);
    }
  }
  return images;
}

}  // namespace gantry

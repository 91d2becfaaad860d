// End-to-end training sanity check on the CPU: a small DCGAN (image 32, nc 1, widths 8) on a
// tiny fixed batch, with BCE and Adam as in the PyTorch DCGAN example.
//   1. The discriminator learns to separate the real batch from the generator's output:
//      D(x) goes up, D(G(z)) goes down.
//   2. With D frozen, the generator's loss falls: this needs the gradient to flow from D's
//      output back through the fake images into G, so a detached fake (or a broken backward
//      of any layer in between) fails the test.
// Then the GAN losses, label smoothing, TTUR and spectral norm against one step of PyTorch.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/core/safetensors.h"
#include "gantry/core/torch_checkpoint.h"
#include "gantry/layers/loss.h"
#include "gantry/models/dcgan.h"
#include "gantry/models/dcgan_trainer.h"
#include "gantry/optim/adam.h"

using namespace gantry;
using Catch::Matchers::Contains;

namespace {

constexpr int kBatch = 8, kNz = 16, kSize = 32;

// "Real" images: a bright disc on a dark background, its centre moving with the sample index,
// in [-1, 1] like the data pipeline's output.
Tensor real_batch() {
  std::vector<float> v(kBatch * kSize * kSize);
  for (int n = 0; n < kBatch; ++n)
    for (int y = 0; y < kSize; ++y)
      for (int x = 0; x < kSize; ++x) {
        const float cx = 10.f + 1.5f * n, cy = 16.f, r = 7.f;
        const float d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
        v[(n * kSize + y) * kSize + x] = d2 < r * r ? 0.9f : -0.9f;
      }
  return Tensor::from_vector(v, {kBatch, 1, kSize, kSize});
}

float mean_value(const Tensor& t) { return mean(t).item(); }

}  // namespace

TEST_CASE("DCGAN training: D learns to separate, then G's loss falls with D frozen") {
  const auto t0 = std::chrono::steady_clock::now();
  Generator rng(2024);
  auto G = make_generator(kNz, 8, 1, kSize, &rng);
  auto D = make_discriminator(1, 8, kSize, &rng);
  const Tensor x = real_batch();
  const Tensor z = Tensor::randn({kBatch, kNz, 1, 1}, &rng);
  const Tensor ones = Tensor::ones({kBatch}), zeros = Tensor::zeros({kBatch});
  BCELoss bce;
  Adam optD(D->parameters(), AdamOptions{2e-4, 0.5, 0.999});
  Adam optG(G->parameters(), AdamOptions{2e-4, 0.5, 0.999});

  // ---- 1. D steps, exactly as in the DCGAN example (real batch, then detached fake batch) ----
  float d_real0, d_fake0;
  {
    NoGradGuard ng;
    d_real0 = mean_value(D->forward(x));
    d_fake0 = mean_value(D->forward(G->forward(z)));
  }
  for (int step = 0; step < 80; ++step) {
    optD.zero_grad();
    Tensor err_real = bce(D->forward(x), ones);
    err_real.backward();
    Tensor fake = G->forward(z);
    Tensor err_fake = bce(D->forward(fake.detach()), zeros);
    err_fake.backward();
    optD.step();
  }
  float d_real1, d_fake1;
  {
    NoGradGuard ng;
    d_real1 = mean_value(D->forward(x));
    d_fake1 = mean_value(D->forward(G->forward(z)));
  }
  INFO("D(x) " << d_real0 << " -> " << d_real1 << ", D(G(z)) " << d_fake0 << " -> " << d_fake1);
  CHECK(d_real1 > d_real0);
  CHECK(d_fake1 < d_fake0);
  CHECK(d_real1 > 0.8f);
  CHECK(d_fake1 < 0.2f);

  // ---- 2. G steps against the frozen D (its optimizer never steps again) ----
  const StateDict d_before = D->state_dict();
  std::vector<std::vector<float>> d_weights;
  for (const auto& p : D->parameters()) d_weights.push_back(p.to_vector());
  auto g_loss = [&]() { return bce(D->forward(G->forward(z)), ones); };
  float g_loss0;
  {
    NoGradGuard ng;
    g_loss0 = g_loss().item();
  }
  float g_loss_last = g_loss0;
  for (int step = 0; step < 80; ++step) {
    optG.zero_grad();
    D->zero_grad();
    Tensor err_g = g_loss();
    err_g.backward();
    if (step == 0) {
      // The gradient reached every generator parameter through D and the fake images.
      for (const auto& [name, p] : G->named_parameters()) {
        INFO(name);
        REQUIRE(p.grad().defined());
        double norm = 0;
        for (float g : p.grad().to_vector()) norm += double(g) * g;
        CHECK(norm > 0);
      }
    }
    optG.step();
    g_loss_last = err_g.item();
  }
  float g_loss1;
  {
    NoGradGuard ng;
    g_loss1 = g_loss().item();
  }
  INFO("G loss " << g_loss0 << " -> " << g_loss1 << " (last step " << g_loss_last << ")");
  CHECK(g_loss1 < 0.5f * g_loss0);
  // D really was frozen: its parameters did not move.
  const auto d_params = D->parameters();
  for (std::size_t i = 0; i < d_params.size(); ++i) CHECK(d_params[i].to_vector() == d_weights[i]);

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("D(x) " << d_real0 << " -> " << d_real1 << ", D(G(z)) " << d_fake0 << " -> " << d_fake1
               << "; G loss " << g_loss0 << " -> " << g_loss1 << "; " << secs << " s");
}

// ---- The GAN losses of DCGANTrainer (bce with one-sided label smoothing, hinge, lsgan), spectral
// norm and separate learning rates for G and D (TTUR), each checked against one step of real
// PyTorch 1.13 from the same weights, real batch and latent batch (tests/data/torch_1_13_gan_losses.pth, written by
// tests/interop/make_gan_loss_fixtures.py: the losses there are written out in plain torch).

namespace {

std::string fixture(const std::string& name) { return std::string(GANTRY_TEST_DATA) + "/" + name; }

const Tensor& entry(const StateDict& sd, const std::string& name) {
  const NamedTensor* t = find_tensor(sd, name);
  if (!t) FAIL("the fixture has no tensor " << name);
  return t->tensor;
}

double rel_error(const Tensor& a, const Tensor& b) {
  const double diff = std::sqrt(sum(square(sub(a, b))).item());
  const double ref = std::sqrt(sum(square(b)).item());
  return ref > 0 ? diff / ref : diff;
}

DCGANConfig small_config() {
  DCGANConfig c;
  c.nz = 8;
  c.ngf = 4;
  c.ndf = 4;
  c.nc = 1;
  c.image_size = 32;
  return c;
}

// Runs one step of `config` from the fixture's start and compares everything PyTorch wrote
// under `key`.
void check_against_pytorch(const StateDict& fx, const std::string& key, const DCGANConfig& config) {
  INFO("loss " << key);
  const std::string d_start = config.d_norm == DiscriminatorNorm::Layer      ? "netD_ln"
                              : config.d_norm == DiscriminatorNorm::Instance ? "netD_in"
                              : config.d_norm == DiscriminatorNorm::None     ? "netD_none"
                              : !config.spectral_norm                        ? "netD"
                              : config.spectral_norm_form == SpectralNormForm::Classic ? "netD_sn"
                                                                                       : "netD_psn";
  DCGANTrainer trainer(config, Device::cpu());
  trainer.generator().load_state_dict(sub_state_dict(fx, "netG"));
  trainer.discriminator().load_state_dict(sub_state_dict(fx, d_start));
  // d_steps D updates on the fixture's real, real2, real3 and z, z2, z3.
  std::vector<Tensor> reals, zs;
  for (int k = 0; k < config.d_steps; ++k) {
    const std::string suffix = k == 0 ? "" : std::to_string(k + 1);
    reals.push_back(entry(fx, "real" + suffix));
    zs.push_back(entry(fx, "z" + suffix));
  }
  std::vector<Tensor> mix;
  if (config.gp_lambda > 0) mix.push_back(entry(fx, "mix"));
  const StepStats st = trainer.step(reals, zs, mix);
  const StateDict want = sub_state_dict(fx, key);
  if (config.r1_gamma > 0 || config.gp_lambda > 0) {
    CHECK(st.penalty > 0);
    CHECK(st.penalty == Approx(entry(want, "penalty").item()).epsilon(1e-4));
  } else {
    CHECK(st.penalty == 0);
  }

  CHECK(st.loss_d == Approx(entry(want, "loss_d").item()).epsilon(1e-5));
  CHECK(st.loss_g == Approx(entry(want, "loss_g").item()).epsilon(1e-5));
  CHECK(st.d_x == Approx(entry(want, "d_x").item()).epsilon(1e-5));
  CHECK(st.d_g_z1 == Approx(entry(want, "d_g_z1").item()).epsilon(1e-5));
  CHECK(st.d_g_z2 == Approx(entry(want, "d_g_z2").item()).epsilon(1e-5));

  // Gradients: D's from its (last) update (G's update leaves them alone), G's from its update.
  for (const auto& [name, p] : trainer.discriminator().named_parameters()) {
    INFO("D gradient " << name);
    CHECK(rel_error(p.grad(), entry(want, "d_grad." + name)) < 1e-4);
  }
  for (const auto& [name, p] : trainer.generator().named_parameters()) {
    INFO("G gradient " << name);
    CHECK(rel_error(p.grad(), entry(want, "g_grad." + name)) < 1e-4);
  }
  // After the step: Adam's first update is about lr * sign(grad) per element, so these compare
  // the learning rate each model got as much as the gradients; BN's running statistics too.
  auto compare_state = [&](const StateDict& got, const std::string& model, const StateDict& start) {
    for (const NamedTensor& t : got) {
      INFO(model << " after the step: " << t.name);
      const Tensor& ref = entry(want, model + "." + t.name);
      const Tensor& before = entry(start, t.name);
      if (t.dtype == DType::I64) {
        CHECK(t.tensor.item() == ref.item());
        continue;
      }
      const std::string& n = t.name;
      auto ends_with = [&](const std::string& tail) {
        return n.size() > tail.size() && n.compare(n.size() - tail.size(), tail.size(), tail) == 0;
      };
      if (ends_with(".weight_u") || ends_with(".weight_v") || ends_with("._u") || ends_with("._v")) {
        CHECK(rel_error(t.tensor, ref) < 1e-5);  // the power iteration's vectors, d_steps + 2 steps on
        continue;
      }
      CHECK(rel_error(sub(t.tensor, before), sub(ref, before)) < 1e-3);
    }
  };
  compare_state(trainer.generator().state_dict(), "netG", sub_state_dict(fx, "netG"));
  compare_state(trainer.discriminator().state_dict(), "netD", sub_state_dict(fx, d_start));
}

}  // namespace

TEST_CASE("GAN losses: one step of bce+smoothing+TTUR, hinge, lsgan, hinge+spectral norm (both forms) and D steps equals PyTorch's") {
  if (!torch_checkpoint_supported()) {  // a build without libzip (the GPU machines' staged build)
    CHECK_THROWS_WITH(load_torch_checkpoint(fixture("torch_1_13_gan_losses.pth")), Contains("libzip"));
    return;
  }
  const StateDict fx = load_torch_checkpoint(fixture("torch_1_13_gan_losses.pth")).tensors;

  DCGANConfig bce = small_config();
  bce.real_label = 0.9;
  bce.lr_g = 1e-4;
  bce.lr_d = 4e-4;
  check_against_pytorch(fx, "bce_smooth_ttur", bce);

  DCGANConfig hinge = small_config();
  hinge.loss = GANLoss::Hinge;
  hinge.lr_g = 1e-4;
  hinge.lr_d = 4e-4;
  check_against_pytorch(fx, "hinge", hinge);

  DCGANConfig lsgan = small_config();
  lsgan.loss = GANLoss::LeastSquares;
  lsgan.real_label = 0.9;
  check_against_pytorch(fx, "lsgan", lsgan);

  DCGANConfig sn = small_config();  // SNGAN's pair: hinge loss, spectrally normalized D
  sn.loss = GANLoss::Hinge;
  sn.spectral_norm = true;
  check_against_pytorch(fx, "hinge_sn", sn);

  DCGANConfig critic3 = small_config();  // n_critic 3: three D updates, then G's
  critic3.d_steps = 3;
  check_against_pytorch(fx, "bce_dsteps3", critic3);
  sn.d_steps = 2;
  check_against_pytorch(fx, "hinge_sn_dsteps2", sn);

  DCGANConfig psn = small_config();  // torch.nn.utils.parametrizations.spectral_norm (PyTorch 2's)
  psn.loss = GANLoss::Hinge;
  psn.spectral_norm = true;
  psn.spectral_norm_form = SpectralNormForm::Parametrization;
  check_against_pytorch(fx, "hinge_psn", psn);
}

TEST_CASE("Gradient penalties: one step with R1 and one of WGAN-GP equal PyTorch's (torch.autograd.grad, create_graph)") {
  if (!torch_checkpoint_supported()) return;  // the test above says why
  const StateDict fx = load_torch_checkpoint(fixture("torch_1_13_gan_losses.pth")).tensors;
  // The penalties' gradients reach D's weights only through the double backward of every op of
  // D (convs, batch norm with its batch statistics, leaky ReLU): all of D's gradients compared.
  DCGANConfig r1 = small_config();
  r1.r1_gamma = 1.0;
  check_against_pytorch(fx, "bce_r1", r1);

  DCGANConfig wgan = small_config();
  wgan.loss = GANLoss::Wasserstein;
  wgan.gp_lambda = 10;
  wgan.lr = 1e-4;
  check_against_pytorch(fx, "wgan_gp", wgan);
}

TEST_CASE("D's norm: WGAN-GP with layer norm (GroupNorm(1, C)) or none and R1 with instance norm equal PyTorch's") {
  if (!torch_checkpoint_supported()) return;  // the test above says why
  const StateDict fx = load_torch_checkpoint(fixture("torch_1_13_gan_losses.pth")).tensors;
  // The penalties differentiate the per-image statistics of the norm twice; the fixture's GN/IN
  // biases are random, so a norm without its affine (or with it in the wrong place) fails.
  DCGANConfig ln = small_config();
  ln.loss = GANLoss::Wasserstein;
  ln.gp_lambda = 10;
  ln.lr = 1e-4;
  ln.d_norm = DiscriminatorNorm::Layer;
  check_against_pytorch(fx, "wgan_gp_ln", ln);

  DCGANConfig none = ln;
  none.d_norm = DiscriminatorNorm::None;
  check_against_pytorch(fx, "wgan_gp_none", none);

  DCGANConfig in = small_config();
  in.r1_gamma = 1.0;
  in.d_norm = DiscriminatorNorm::Instance;
  check_against_pytorch(fx, "bce_r1_in", in);
}

TEST_CASE("Gradient penalties: settings that cannot work are refused; the noise stream draws the mix") {
  DCGANConfig c = small_config();
  c.loss = GANLoss::Wasserstein;
  CHECK_THROWS_WITH(DCGANTrainer(c, Device::cpu()), Contains("wgan loss needs D kept Lipschitz"));
  c.spectral_norm = true;  // SN alone keeps D Lipschitz: allowed
  CHECK_NOTHROW(DCGANTrainer(c, Device::cpu()));
  c.gp_lambda = 10;
  c.real_label = 0.9;
  CHECK_THROWS_WITH(DCGANTrainer(c, Device::cpu()), Contains("wgan loss has no label to smooth"));
  c.real_label = 1;
  c.r1_gamma = -1;
  CHECK_THROWS_WITH(DCGANTrainer(c, Device::cpu()), Contains("penalty weights must be >= 0"));
  c.r1_gamma = 0;
  CHECK(gan_loss_from_name("wgan") == GANLoss::Wasserstein);
  CHECK(std::string(gan_loss_name(GANLoss::Wasserstein)) == "wgan");

  Generator init_a(5), init_b(5), noise_a(9), noise_b(9), data(3);
  DCGANTrainer a(c, Device::cpu(), &init_a), b(c, Device::cpu(), &init_b);
  const Tensor real = add(mul(Tensor::rand({4, 1, 32, 32}, &data), 2.f), -1.f);
  const Tensor z = Tensor::randn({4, 8, 1, 1}, &noise_b);
  CHECK_THROWS_WITH(b.step(real, z), Contains("gp_lambda is on") && Contains("mix"));
  CHECK_THROWS_WITH(b.step(real, z, Tensor::rand({3})), Contains("mix must be [4]"));
  // From a generator: z, then the mix, from the same stream.
  const Tensor mix = Tensor::rand({4}, &noise_b);
  const StepStats sa = a.step(real, noise_a);
  const StepStats sb = b.step(real, z, mix);
  CHECK(sa.penalty > 0);
  CHECK(sa.penalty == sb.penalty);
  CHECK(sa.loss_d == sb.loss_d);
  CHECK(noise_a.offset() == noise_b.offset());
  DCGANTrainer plain(small_config(), Device::cpu(), &init_a);
  CHECK_THROWS_WITH(plain.step(real, z, mix), Contains("gp_lambda is 0"));
}

TEST_CASE("Lazy R1: the penalty on every k-th D update, weighted k; the count survives a resume") {
  DCGANConfig c = small_config();
  c.r1_gamma = 0.5;
  c.r1_every = 0;
  CHECK_THROWS_WITH(DCGANTrainer(c, Device::cpu()), Contains("r1_every 0 must be at least 1"));
  c.r1_every = 3;
  c.r1_gamma = 0;
  CHECK_THROWS_WITH(DCGANTrainer(c, Device::cpu()), Contains("above 1 only with r1_gamma"));
  c.r1_gamma = 0.5;
  DCGANConfig eager = c;  // R1 at every update with 3x the weight: lazy's first update exactly
  eager.r1_every = 1;
  eager.r1_gamma = 1.5;
  Generator init_a(5), init_b(5), data(3), zs(4);
  DCGANTrainer lazy(c, Device::cpu(), &init_a), every(eager, Device::cpu(), &init_b);
  std::vector<Tensor> reals, z;
  for (int i = 0; i < 4; ++i) {
    reals.push_back(add(mul(Tensor::rand({4, 1, 32, 32}, &data), 2.f), -1.f));
    z.push_back(Tensor::randn({4, 8, 1, 1}, &zs));
  }
  const StepStats l1 = lazy.step(reals[0], z[0]), e1 = every.step(reals[0], z[0]);
  CHECK(l1.penalty > 0);
  CHECK(l1.penalty == e1.penalty);  // update 0: 3 * 0.5 = 1.5, the same step
  CHECK(l1.d_g_z2 == e1.d_g_z2);
  // Update 1: lazy skips R1. The scores before D's update agree (same weights), the penalty and
  // what D's update did do not.
  const StepStats l2 = lazy.step(reals[1], z[1]), e2 = every.step(reals[1], z[1]);
  CHECK(l2.penalty == 0);
  CHECK(e2.penalty > 0);
  CHECK(l2.loss_d == e2.loss_d);
  CHECK(l2.d_x == e2.d_x);
  CHECK(l2.d_g_z2 != e2.d_g_z2);
  CHECK(lazy.step(reals[2], z[2]).penalty == 0);
  CHECK(lazy.d_updates() == 3);
  CHECK(lazy.step(reals[3], z[3]).penalty > 0);  // update 3: R1 again
  // A trainer continuing at update 1 (set_d_updates, as a resumed run) skips R1 at first.
  Generator init_c(5);
  DCGANTrainer resumed(c, Device::cpu(), &init_c);
  resumed.set_d_updates(1);
  CHECK(resumed.step(reals[0], z[0]).penalty == 0);
  CHECK_THROWS_WITH(resumed.set_d_updates(-1), Contains("must be >= 0"));
  // With d_steps 2 the count is of D updates, and a step reports the mean over its updates: with
  // r1_every 4, R1 falls on updates 0, 4, 8 (each the first of its step), so steps 1 and 3 show it
  // and step 2 does not.
  DCGANConfig two = c;
  two.d_steps = 2;
  two.r1_every = 4;
  Generator init_d(5), zd(6);
  DCGANTrainer k2(two, Device::cpu(), &init_d);
  CHECK(k2.step({reals[0], reals[1]}, zd).penalty > 0);
  CHECK(k2.step({reals[2], reals[3]}, zd).penalty == 0);
  CHECK(k2.step({reals[0], reals[1]}, zd).penalty > 0);
  CHECK(k2.d_updates() == 6);
}

TEST_CASE("D steps: the single-batch step is d_steps 1; a step with the wrong number of batches is refused") {
  DCGANConfig c = small_config();
  c.d_steps = 0;
  CHECK_THROWS_WITH(DCGANTrainer(c, Device::cpu()), Contains("d_steps 0 must be at least 1"));
  c.d_steps = 2;
  DCGANTrainer t(c, Device::cpu());
  const Tensor real = Tensor::zeros({4, 1, 32, 32}), z = Tensor::zeros({4, 8, 1, 1});
  CHECK_THROWS_WITH(t.step(real, z), Contains("d_steps is 2") && Contains("got 1 and 1"));
  CHECK_THROWS_WITH(t.step(std::vector<Tensor>{real, Tensor::zeros({3, 1, 32, 32})}, std::vector<Tensor>{z, z}),
                    Contains("one shape") && Contains("[3, 1, 32, 32]"));
  CHECK_THROWS_WITH(t.step(std::vector<Tensor>{real, real}, std::vector<Tensor>{z, Tensor::zeros({4, 7, 1, 1})}),
                    Contains("z must be [4, 8, 1, 1]"));

  // Drawn from a generator, the latent batches are z_1, z_2 in order from it.
  Generator init_a(5), init_b(5), init_c(5), noise_a(9), noise_b(9), data(3);
  DCGANTrainer a(c, Device::cpu(), &init_a), b(c, Device::cpu(), &init_b);
  const std::vector<Tensor> xs = {add(mul(Tensor::rand({4, 1, 32, 32}, &data), 2.f), -1.f),
                                  add(mul(Tensor::rand({4, 1, 32, 32}, &data), 2.f), -1.f)};
  const StepStats sa = a.step(xs, noise_a);
  const Tensor z1 = Tensor::randn({4, 8, 1, 1}, &noise_b), z2 = Tensor::randn({4, 8, 1, 1}, &noise_b);
  const StepStats sb = b.step(xs, std::vector<Tensor>{z1, z2});
  CHECK(sa.loss_d == sb.loss_d);
  CHECK(sa.loss_g == sb.loss_g);
  CHECK(sa.d_g_z2 == sb.d_g_z2);
  const StepStats swapped = DCGANTrainer(c, Device::cpu(), &init_c).step(xs, std::vector<Tensor>{z2, z1});
  CHECK(swapped.loss_g != sb.loss_g);
  CHECK(noise_a.offset() == noise_b.offset());
}

TEST_CASE("GAN losses: the learning rates reach the optimizers; a wrong lr changes the step") {
  DCGANConfig c = small_config();
  c.lr_g = 1e-4;
  c.lr_d = 4e-4;
  DCGANTrainer ttur(c, Device::cpu());
  CHECK(ttur.optimizer_g().options().lr == 1e-4);
  CHECK(ttur.optimizer_d().options().lr == 4e-4);
  c.lr_g = c.lr_d = 0;  // 0 = lr for both
  DCGANTrainer plain(c, Device::cpu());
  CHECK(plain.optimizer_g().options().lr == c.lr);
  CHECK(plain.optimizer_d().options().lr == c.lr);

  // The fixture test above would notice a swapped pair: D's update with G's lr is 4x too small.
  if (torch_checkpoint_supported()) {
    const StateDict fx = load_torch_checkpoint(fixture("torch_1_13_gan_losses.pth")).tensors;
    DCGANConfig swapped = small_config();
    swapped.real_label = 0.9;
    swapped.lr_g = 4e-4;
    swapped.lr_d = 1e-4;
    DCGANTrainer t(swapped, Device::cpu());
    t.generator().load_state_dict(sub_state_dict(fx, "netG"));
    t.discriminator().load_state_dict(sub_state_dict(fx, "netD"));
    t.step(entry(fx, "real"), entry(fx, "z"));
    const Tensor& w0 = entry(fx, "netD.main.0.weight");
    const Tensor& want = entry(fx, "bce_smooth_ttur.netD.main.0.weight");
    CHECK(rel_error(sub(t.discriminator().state_dict()[0].tensor, w0), sub(want, w0)) > 0.5);
  }
}

TEST_CASE("GAN losses: names, and settings that cannot work are refused") {
  CHECK(gan_loss_from_name("bce") == GANLoss::BCE);
  CHECK(gan_loss_from_name("hinge") == GANLoss::Hinge);
  CHECK(gan_loss_from_name("lsgan") == GANLoss::LeastSquares);
  for (GANLoss l : {GANLoss::BCE, GANLoss::Hinge, GANLoss::LeastSquares, GANLoss::Wasserstein})
    CHECK(gan_loss_from_name(gan_loss_name(l)) == l);
  CHECK_THROWS_WITH(gan_loss_from_name("wgan-gp"), Contains("'wgan-gp'") && Contains("bce, hinge, lsgan or wgan"));

  DCGANConfig c = small_config();
  c.loss = GANLoss::Hinge;
  c.real_label = 0.9;
  CHECK_THROWS_WITH(DCGANTrainer(c, Device::cpu()), Contains("hinge loss has no label to smooth"));
  c = small_config();
  c.real_label = 0;
  CHECK_THROWS_WITH(DCGANTrainer(c, Device::cpu()), Contains("real_label") && Contains("(0, 1]"));
  c = small_config();
  c.lr = -1;
  CHECK_THROWS_WITH(DCGANTrainer(c, Device::cpu()), Contains("learning rates must be positive"));
  c.lr_g = c.lr_d = 1e-4;  // both own lrs given: lr itself is not used
  CHECK_NOTHROW(DCGANTrainer(c, Device::cpu()));

  DCGANTrainer t(small_config(), Device::cpu());
  CHECK_THROWS_WITH(t.step(Tensor::zeros({4, 1, 32, 32}), Tensor::zeros({3, 8, 1, 1})),
                    Contains("z must be [4, 8, 1, 1]") && Contains("[3, 8, 1, 1]"));
}

TEST_CASE("GAN losses: the discriminator's scores are the logits of its probabilities") {
  DCGANTrainer t(small_config(), Device::cpu());
  t.discriminator().train();
  const Tensor x = Tensor::rand({3, 1, 32, 32});
  Tensor p = t.discriminator().forward(x);
  Tensor s = t.discriminator().forward_logits(x);
  CHECK(s.shape() == Shape{3});
  CHECK(rel_error(sigmoid(s), p) < 1e-6);
  CHECK_THROWS_WITH(t.discriminator().forward_logits(Tensor::zeros({3, 3, 32, 32})), Contains("expected images [N, 1, 32, 32]"));
}

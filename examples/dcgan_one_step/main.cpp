// dcgan_one_step: gantry used as a library. Builds the DCGAN of the PyTorch example, runs one
// training step (the example's D step, then G step), saves generator, discriminator and
// optimizer state as safetensors files, rebuilds the generator from its file alone and checks
// that it computes the same images.
//
// Usage: dcgan_one_step [output folder (default: the current one)]
// Exit status 0 when the reloaded generator matches.
#include <gantry/gantry.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <string>

int main(int argc, char** argv) try {
  using namespace gantry;
  const std::string out = argc > 1 ? argv[1] : ".";
  const int64_t nz = 100, ngf = 32, ndf = 32, nc = 3, batch = 8;
  const int image_size = 32;  // 32, 64 or 128; 64 with ngf = ndf = 64 is the paper's setting
  const Device device = cuda_available() ? Device::cuda() : Device::cpu();

  manual_seed(1);
  auto netG = make_generator(nz, ngf, nc, image_size);  // with the DCGAN weights_init
  auto netD = make_discriminator(nc, ndf, image_size);
  netG->to(device);
  netD->to(device);
  std::printf("%s\n%s\n", netG->repr().c_str(), netD->repr().c_str());

  Adam optG(netG->parameters(), AdamOptions{2e-4, 0.5, 0.999});
  Adam optD(netD->parameters(), AdamOptions{2e-4, 0.5, 0.999});
  BCELoss criterion;

  // A stand-in for one batch from a data loader: images in [-1, 1].
  const Tensor real = (Tensor::rand({batch, nc, image_size, image_size}) * 2.f - 1.f).to(device);
  const Tensor noise = Tensor::randn({batch, nz, 1, 1}, nullptr, device);
  const Tensor real_label = Tensor::ones({batch}, device), fake_label = Tensor::zeros({batch}, device);

  // (1) Update D: maximize log(D(x)) + log(1 - D(G(z))).
  optD.zero_grad();
  Tensor errD_real = criterion(netD->forward(real), real_label);
  errD_real.backward();
  Tensor fake = netG->forward(noise);
  Tensor errD_fake = criterion(netD->forward(fake.detach()), fake_label);  // no gradient into G
  errD_fake.backward();
  optD.step();

  // (2) Update G: maximize log(D(G(z))), through the just-updated D.
  optG.zero_grad();
  Tensor errG = criterion(netD->forward(fake), real_label);
  errG.backward();
  optG.step();
  std::printf("Loss_D: %.4f Loss_G: %.4f\n", errD_real.item() + errD_fake.item(), errG.item());

  // Save: PyTorch-compatible state_dicts (netG.state_dict() keys), plus the optimizer state.
  const Metadata meta = {{"nz", std::to_string(nz)}, {"image_size", std::to_string(image_size)}};
  save_safetensors(out + "/netG.safetensors", netG->state_dict(), meta);
  save_safetensors(out + "/netD.safetensors", netD->state_dict(), meta);
  optG.save(out + "/optG.safetensors");
  optD.save(out + "/optD.safetensors");

  // Reload: the checkpoint alone determines the architecture.
  auto netG2 = generator_from_state_dict(load_safetensors(out + "/netG.safetensors").tensors);
  netG2->to(device);
  Adam optG2(netG2->parameters(), AdamOptions{2e-4, 0.5, 0.999});
  optG2.load(out + "/optG.safetensors");

  netG->eval();
  netG2->eval();
  NoGradGuard no_grad;
  const std::vector<float> a = netG->forward(noise).to_vector(), b = netG2->forward(noise).to_vector();
  float worst = 0.f;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::fmax(worst, std::fabs(a[i] - b[i]));
  std::printf("reloaded generator (nz=%lld, ngf=%lld, nc=%lld, %dx%d): max difference %g\n",
              static_cast<long long>(netG2->nz), static_cast<long long>(netG2->ngf),
              static_cast<long long>(netG2->nc), netG2->image_size, netG2->image_size, worst);
  return worst == 0.f ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "dcgan_one_step: %s\n", e.what());
  return 1;
}

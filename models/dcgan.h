#pragma once
// The DCGAN generator and discriminator of the PyTorch DCGAN example
// (github.com/pytorch/examples, dcgan/main.py), with identical state_dict keys, shapes and order,
// so checkpoints move between gantry and PyTorch unchanged. Both wrap `main`, a Sequential.
//
// Generator, image_size 64 (nz -> nc x 64 x 64), no conv biases:
//   main.0  ConvTranspose2d(nz, 8g, 4, 1, 0)   main.1 BatchNorm2d(8g)  main.2 ReLU      4x4
//   main.3  ConvTranspose2d(8g, 4g, 4, 2, 1)   main.4 BatchNorm2d(4g)  main.5 ReLU      8x8
//   main.6  ConvTranspose2d(4g, 2g, 4, 2, 1)   main.7 BatchNorm2d(2g)  main.8 ReLU      16x16
//   main.9  ConvTranspose2d(2g, g, 4, 2, 1)    main.10 BatchNorm2d(g)  main.11 ReLU     32x32
//   main.12 ConvTranspose2d(g, nc, 4, 2, 1)    main.13 Tanh                              64x64
// Discriminator, image_size 64 (nc x 64 x 64 -> probability that the image is real):
//   main.0  Conv2d(nc, d, 4, 2, 1)   main.1 LeakyReLU(0.2)                              32x32
//   main.2  Conv2d(d, 2d, 4, 2, 1)   main.3 BatchNorm2d(2d)  main.4 LeakyReLU(0.2)      16x16
//   main.5  Conv2d(2d, 4d, 4, 2, 1)  main.6 BatchNorm2d(4d)  main.7 LeakyReLU(0.2)      8x8
//   main.8  Conv2d(4d, 8d, 4, 2, 1)  main.9 BatchNorm2d(8d)  main.10 LeakyReLU(0.2)     4x4
//   main.11 Conv2d(8d, 1, 4, 1, 0)   main.12 Sigmoid                                    1x1
// With spectral_norm every Conv2d of D is torch.nn.utils.spectral_norm(Conv2d(...)) (SNGAN's
// normalization; the BatchNorms stay, as in the example with its convs wrapped): keys
// main.<i>.weight_orig, main.<i>.weight_u, main.<i>.weight_v instead of main.<i>.weight; with
// SpectralNormForm::Parametrization torch.nn.utils.parametrizations.spectral_norm(Conv2d(...)):
// main.<i>.parametrizations.weight.original, main.<i>.parametrizations.weight.0._u and ._v.
// DiscriminatorNorm picks the layer after each middle conv of D (main.3, main.6, ...):
//   Batch     BatchNorm2d(C), the example's (and the default)
//   Instance  InstanceNorm2d(C, affine=True): keys main.<i>.weight, .bias, no running statistics
//   Layer     GroupNorm(1, C): layer norm over (C, H, W) with a per-channel affine, what the
//             WGAN-GP paper uses in its critic (same keys as Instance)
//   None      Identity (no keys), as a PyTorch script with nn.Identity() in BatchNorm2d's place
// The gradient penalties (R1, WGAN-GP) are per-image quantities; batch norm couples the images
// of a batch, which the WGAN-GP paper advises against.
// image_size 32 has one middle stage fewer (G starts at 4g, D ends at 4d); 128 one more (G
// starts at 16g, D ends at 16d). Supported sizes: 32, 64, 128.
//
// The builders apply dcgan_init (conv weights N(0, 0.02), BN weight N(1, 0.02), BN bias 0)
// with `gen` (null = the default generator). Instance and group norms keep weight 1, bias 0, as
// the example's weights_init (which matches "BatchNorm" in the class name) leaves them.
#include <cstdint>
#include <memory>
#include <string>

#include "gantry/core/random.h"
#include "gantry/core/safetensors.h"
#include "gantry/layers/layers.h"

namespace gantry {

enum class DiscriminatorNorm { Batch, Instance, Layer, None };
// "batch" / "instance" / "layer" / "none" (dcgan_train --d-norm) and back; the parser throws
// std::invalid_argument listing the four.
DiscriminatorNorm discriminator_norm_from_name(const std::string& name);
const char* discriminator_norm_name(DiscriminatorNorm norm);

class DCGANGenerator : public Module {
 public:
  DCGANGenerator(int64_t nz, int64_t ngf, int64_t nc, int image_size, Generator* gen = nullptr);
  // z [N, nz, 1, 1] or [N, nz] -> images [N, nc, image_size, image_size] in [-1, 1].
  Tensor forward(const Tensor& z) override;
  std::string type_name() const override { return "Generator"; }

  const int64_t nz, ngf, nc;
  const int image_size;
  std::shared_ptr<Sequential> main;
};

class DCGANDiscriminator : public Module {
 public:
  DCGANDiscriminator(int64_t nc, int64_t ndf, int image_size, Generator* gen = nullptr,
                     bool spectral_norm = false, SpectralNormForm form = SpectralNormForm::Classic,
                     DiscriminatorNorm norm = DiscriminatorNorm::Batch);
  // images [N, nc, image_size, image_size] -> [N] probabilities (PyTorch: view(-1, 1).squeeze(1)).
  Tensor forward(const Tensor& x) override;
  // The same without the final Sigmoid: [N] raw scores (logits), what the hinge and
  // least-squares GAN losses take. sigmoid(forward_logits(x)) == forward(x).
  Tensor forward_logits(const Tensor& x);
  std::string type_name() const override { return "Discriminator"; }

  const int64_t nc, ndf;
  const int image_size;
  const bool spectral_norm;
  const SpectralNormForm spectral_norm_form;  // which PyTorch spectral norm (when spectral_norm)
  const DiscriminatorNorm norm;               // the layer after each middle conv
  std::shared_ptr<Sequential> main;
};

// Builds and initializes (dcgan_init) the models. Throws std::invalid_argument for an image
// size other than 32, 64 or 128 or a non-positive width.
std::shared_ptr<DCGANGenerator> make_generator(int64_t nz, int64_t ngf, int64_t nc, int image_size,
                                               Generator* gen = nullptr);
std::shared_ptr<DCGANDiscriminator> make_discriminator(int64_t nc, int64_t ndf, int image_size,
                                                       Generator* gen = nullptr, bool spectral_norm = false,
                                                       SpectralNormForm form = SpectralNormForm::Classic,
                                                       DiscriminatorNorm norm = DiscriminatorNorm::Batch);

// Rebuilds a model from a checkpoint alone: nz, ngf/ndf, nc and image_size are read off the
// tensor shapes (a discriminator with weight_orig/weight_u/weight_v keys is rebuilt with
// spectral norm, one with parametrizations.weight.original/... keys with its Parametrization
// form); D's norm from the keys at main.3: running statistics for Batch, none for None, and a
// weight and bias alone for Instance or Layer, which have the same keys and shapes, so
// `norm_if_ambiguous` says which (Batch or None there throws, naming both). A norm without
// affine (PyTorch InstanceNorm2d's default) leaves no keys and reads as None. Then the state is
// loaded strictly. A state dict that is not a DCGAN of this layout throws
// std::invalid_argument saying what was expected and what was found. Does not touch the
// default random generator.
std::shared_ptr<DCGANGenerator> generator_from_state_dict(const StateDict& sd);
std::shared_ptr<DCGANDiscriminator> discriminator_from_state_dict(
    const StateDict& sd, DiscriminatorNorm norm_if_ambiguous = DiscriminatorNorm::Batch);

// Latent vectors of `shape` (e.g. [n, nz, 1, 1]) on the host, N(0, 1) from `gen`: the same
// values as Tensor::randn(shape, &gen). With truncation T > 0, BigGAN's truncation trick (Brock
// et al. 2019, "resampling the values with magnitude above a chosen threshold"): entries with
// |z| > T are drawn again from `gen`, in index order, until none is left, so each entry follows
// N(0, 1) restricted to [-T, T]. Deterministic for a generator state. Requires T >= 0 (0 = off).
Tensor sample_latents(const Shape& shape, Generator& gen, float truncation = 0);

}  // namespace gantry

// DCGAN generator and discriminator builders. See dcgan.h for the architecture.
#include "gantry/models/dcgan.h"

#include <cmath>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "gantry/layers/init.h"

namespace gantry {

namespace {

// Number of (transposed) convolutions for an image size: one per doubling from 1x1 to 4x4
// (the first), then one per doubling up to the image size. 32 -> 4, 64 -> 5, 128 -> 6.
int num_convs(const char* who, int image_size) {
  switch (image_size) {
    case 32: return 4;
    case 64: return 5;
    case 128: return 6;
    default:
      throw std::invalid_argument(std::string(who) + ": image_size must be 32, 64 or 128, got " +
                                  std::to_string(image_size));
  }
}

void check_width(const char* who, const char* what, int64_t v) {
  if (v <= 0)
    throw std::invalid_argument(std::string(who) + ": " + what + " must be positive, got " + std::to_string(v));
}

// The 4-D tensors "main.<i><post>" of a state dict, by index i (the conv weights; post is
// ".weight", or ".weight_orig" for spectrally normalized convs).
std::map<int, const NamedTensor*> conv_weights(const StateDict& sd, const std::string& post = ".weight") {
  std::map<int, const NamedTensor*> out;
  const std::string pre = "main.";
  for (const auto& e : sd) {
    const std::string& k = e.name;
    if (k.size() <= pre.size() + post.size() || k.compare(0, pre.size(), pre) != 0 ||
        k.compare(k.size() - post.size(), post.size(), post) != 0)
      continue;
    const std::string idx = k.substr(pre.size(), k.size() - pre.size() - post.size());
    if (idx.empty() || idx.size() > 6 || idx.find_first_not_of("0123456789") != std::string::npos) continue;
    if (e.tensor.defined() && e.tensor.dim() == 4) out[std::stoi(idx)] = &e;
  }
  return out;
}

std::string index_list(const std::map<int, const NamedTensor*>& w) {
  std::string s;
  for (const auto& [i, e] : w) s += (s.empty() ? "" : ", ") + e->name + " " + shape_str(e->tensor.shape());
  return s.empty() ? "none" : s;
}

}  // namespace

DiscriminatorNorm discriminator_norm_from_name(const std::string& name) {
  for (DiscriminatorNorm n : {DiscriminatorNorm::Batch, DiscriminatorNorm::Instance, DiscriminatorNorm::Layer,
                              DiscriminatorNorm::None})
    if (name == discriminator_norm_name(n)) return n;
  throw std::invalid_argument("discriminator norm must be batch, instance, layer or none, got '" + name + "'");
}

const char* discriminator_norm_name(DiscriminatorNorm norm) {
  switch (norm) {
    case DiscriminatorNorm::Batch: return "batch";
    case DiscriminatorNorm::Instance: return "instance";
    case DiscriminatorNorm::Layer: return "layer";
    case DiscriminatorNorm::None: return "none";
  }
  return "?";
}

// ---- Generator ------------------------------------------------------------------------------

DCGANGenerator::DCGANGenerator(int64_t nz_, int64_t ngf_, int64_t nc_, int image_size_, Generator* gen)
    : nz(nz_), ngf(ngf_), nc(nc_), image_size(image_size_) {
  const int L = num_convs("make_generator", image_size);
  check_width("make_generator", "nz", nz);
  check_width("make_generator", "ngf", ngf);
  check_width("make_generator", "nc", nc);
  main = register_module("main", std::make_shared<Sequential>());
  int64_t mult = int64_t{1} << (L - 2);  // 8 for 64x64
  // 1x1 -> 4x4
  main->push_back(make<ConvTranspose2d>(nz, ngf * mult, 4, 1, 0, 0, false, gen));
  main->push_back(make<BatchNorm2d>(ngf * mult));
  main->push_back(make<ReLU>());
  // each stage doubles the resolution and halves the width
  for (; mult > 1; mult /= 2) {
    main->push_back(make<ConvTranspose2d>(ngf * mult, ngf * mult / 2, 4, 2, 1, 0, false, gen));
    main->push_back(make<BatchNorm2d>(ngf * mult / 2));
    main->push_back(make<ReLU>());
  }
  main->push_back(make<ConvTranspose2d>(ngf, nc, 4, 2, 1, 0, false, gen));
  main->push_back(make<Tanh>());
}

Tensor DCGANGenerator::forward(const Tensor& z) {
  const bool flat = z.dim() == 2 && z.size(1) == nz;
  const bool image = z.dim() == 4 && z.size(1) == nz && z.size(2) == 1 && z.size(3) == 1;
  if (!flat && !image)
    throw std::invalid_argument("Generator: expected noise [N, " + std::to_string(nz) + ", 1, 1] or [N, " +
                                std::to_string(nz) + "], got " + shape_str(z.shape()));
  return main->forward(flat ? z.reshape({z.size(0), nz, 1, 1}) : z);
}

// ---- Discriminator --------------------------------------------------------------------------

DCGANDiscriminator::DCGANDiscriminator(int64_t nc_, int64_t ndf_, int image_size_, Generator* gen, bool sn,
                                       SpectralNormForm form, DiscriminatorNorm norm_)
    : nc(nc_), ndf(ndf_), image_size(image_size_), spectral_norm(sn), spectral_norm_form(form), norm(norm_) {
  const int L = num_convs("make_discriminator", image_size);
  check_width("make_discriminator", "nc", nc);
  check_width("make_discriminator", "ndf", ndf);
  main = register_module("main", std::make_shared<Sequential>());
  main->push_back(make<Conv2d>(nc, ndf, 4, 2, 1, false, gen, sn, form));
  main->push_back(make<LeakyReLU>(0.2f));
  int64_t mult = 1;
  for (int s = 0; s < L - 2; ++s, mult *= 2) {
    main->push_back(make<Conv2d>(ndf * mult, ndf * mult * 2, 4, 2, 1, false, gen, sn, form));
    const int64_t c = ndf * mult * 2;
    switch (norm) {
      case DiscriminatorNorm::Batch: main->push_back(make<BatchNorm2d>(c)); break;
      case DiscriminatorNorm::Instance: main->push_back(make<InstanceNorm2d>(c, 1e-5f, /*affine=*/true)); break;
      case DiscriminatorNorm::Layer: main->push_back(make<GroupNorm>(1, c)); break;
      case DiscriminatorNorm::None: main->push_back(make<Identity>()); break;
    }
    main->push_back(make<LeakyReLU>(0.2f));
  }
  main->push_back(make<Conv2d>(ndf * mult, 1, 4, 1, 0, false, gen, sn, form));
  main->push_back(make<Sigmoid>());
}

namespace {
void check_discriminator_input(const DCGANDiscriminator& d, const Tensor& x) {
  if (x.dim() != 4 || x.size(1) != d.nc || x.size(2) != d.image_size || x.size(3) != d.image_size)
    throw std::invalid_argument("Discriminator: expected images [N, " + std::to_string(d.nc) + ", " +
                                std::to_string(d.image_size) + ", " + std::to_string(d.image_size) +
                                "], got " + shape_str(x.shape()));
}
}  // namespace

Tensor DCGANDiscriminator::forward(const Tensor& x) {
  check_discriminator_input(*this, x);
  return main->forward(x).reshape({x.size(0)});
}

Tensor DCGANDiscriminator::forward_logits(const Tensor& x) {
  check_discriminator_input(*this, x);
  Tensor h = x;
  for (std::size_t i = 0; i + 1 < main->size(); ++i) h = (*main)[i]->forward(h);  // all but the Sigmoid
  return h.reshape({x.size(0)});
}

// ---- builders -------------------------------------------------------------------------------

std::shared_ptr<DCGANGenerator> make_generator(int64_t nz, int64_t ngf, int64_t nc, int image_size,
                                               Generator* gen) {
  auto g = std::make_shared<DCGANGenerator>(nz, ngf, nc, image_size, gen);
  dcgan_init(*g, gen);
  return g;
}

std::shared_ptr<DCGANDiscriminator> make_discriminator(int64_t nc, int64_t ndf, int image_size,
                                                       Generator* gen, bool spectral_norm, SpectralNormForm form,
                                                       DiscriminatorNorm norm) {
  auto d = std::make_shared<DCGANDiscriminator>(nc, ndf, image_size, gen, spectral_norm, form, norm);
  dcgan_init(*d, gen);
  return d;
}

std::shared_ptr<DCGANGenerator> generator_from_state_dict(const StateDict& sd) {
  const char* who = "generator_from_state_dict";
  const auto w = conv_weights(sd);
  // Transposed convolutions sit at main.0, main.3, ..., main.3(L-1).
  const int L = static_cast<int>(w.size());
  bool layout = L >= 4 && L <= 6;
  int k = 0;
  for (const auto& [i, e] : w) layout = layout && i == 3 * k++ && e->tensor.size(2) == 4 && e->tensor.size(3) == 4;
  if (!layout)
    throw std::invalid_argument(
        std::string(who) + ": not a DCGAN generator: expected 4, 5 or 6 transposed-convolution "
        "weights [in, out, 4, 4] at main.0, main.3, main.6, ... (for 32, 64, 128 pixels); found " +
        index_list(w));
  const Tensor& first = w.at(0)->tensor;
  const Tensor& last = w.at(3 * (L - 1))->tensor;
  const int64_t nz = first.size(0), ngf = last.size(0), nc = last.size(1);
  const int image_size = 1 << (L + 1);
  Generator scratch(0);  // the random init is overwritten: leave the default stream alone
  auto g = std::make_shared<DCGANGenerator>(nz, ngf, nc, image_size, &scratch);
  try {
    g->load_state_dict(sd, true);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(who) + ": the checkpoint looks like a DCGAN generator with nz=" +
                                std::to_string(nz) + ", ngf=" + std::to_string(ngf) + ", nc=" +
                                std::to_string(nc) + ", image_size=" + std::to_string(image_size) +
                                " but does not match it:\n" + e.what());
  }
  return g;
}

std::shared_ptr<DCGANDiscriminator> discriminator_from_state_dict(const StateDict& sd,
                                                                  DiscriminatorNorm norm_if_ambiguous) {
  const char* who = "discriminator_from_state_dict";
  const char* parametrized = ".parametrizations.weight.original";
  const bool sn_param = !conv_weights(sd, parametrized).empty();
  const bool sn = sn_param || !conv_weights(sd, ".weight_orig").empty();
  const SpectralNormForm form = sn_param ? SpectralNormForm::Parametrization : SpectralNormForm::Classic;
  const auto w = conv_weights(sd, sn_param ? parametrized : sn ? ".weight_orig" : ".weight");
  // Convolutions sit at main.0, then main.2, main.5, ..., main.2+3(L-2).
  const int L = static_cast<int>(w.size());
  bool layout = L >= 4 && L <= 6;
  int k = 0;
  for (const auto& [i, e] : w) {
    const int want = k == 0 ? 0 : 2 + 3 * (k - 1);
    layout = layout && i == want && e->tensor.size(2) == 4 && e->tensor.size(3) == 4;
    ++k;
  }
  if (!layout)
    throw std::invalid_argument(
        std::string(who) + ": not a DCGAN discriminator: expected 4, 5 or 6 convolution weights "
        "[out, in, 4, 4] at main.0, main.2, main.5, main.8, ... (for 32, 64, 128 pixels; .weight, or "
        ".weight_orig / .parametrizations.weight.original with spectral norm); found " +
        index_list(w));
  const Tensor& first = w.at(0)->tensor;
  const int64_t ndf = first.size(0), nc = first.size(1);
  const int image_size = 1 << (L + 1);
  // The first norm sits at main.3: its keys tell batch norm, none, or instance/layer norm.
  auto has = [&sd](const std::string& k) {
    for (const auto& e : sd)
      if (e.name == k) return true;
    return false;
  };
  DiscriminatorNorm norm = DiscriminatorNorm::Batch;
  if (!has("main.3.running_mean")) {
    if (!has("main.3.weight")) {
      norm = DiscriminatorNorm::None;
    } else if (norm_if_ambiguous == DiscriminatorNorm::Instance || norm_if_ambiguous == DiscriminatorNorm::Layer) {
      norm = norm_if_ambiguous;
    } else {
      throw std::invalid_argument(
          std::string(who) + ": main.3 has a weight and a bias but no running statistics: an "
          "InstanceNorm2d(affine=True) or a GroupNorm(1, C), which have the same keys; say which "
          "(dcgan_train/dcgan_generate: --d-norm instance or --d-norm layer)");
    }
  }
  Generator scratch(0);
  auto d = std::make_shared<DCGANDiscriminator>(nc, ndf, image_size, &scratch, sn, form, norm);
  try {
    d->load_state_dict(sd, true);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(who) + ": the checkpoint looks like a DCGAN discriminator with nc=" +
                                std::to_string(nc) + ", ndf=" + std::to_string(ndf) + ", image_size=" +
                                std::to_string(image_size) +
                                (sn ? std::string(", spectral norm (") + spectral_norm_form_name(form) + ")" : "") +
                                ", " + discriminator_norm_name(norm) + " norm" +
                                " but does not match it:\n" + e.what());
  }
  return d;
}

// ---- Latents ----------------------------------------------------------------------------------

Tensor sample_latents(const Shape& shape, Generator& gen, float truncation) {
  if (!(truncation >= 0))
    throw std::invalid_argument("sample_latents: truncation must be 0 (off) or positive, got " + std::to_string(truncation));
  Tensor z = Tensor::randn(shape, &gen);
  if (truncation == 0) return z;
  float* p = z.data();
  std::vector<int64_t> outside;  // indices still beyond the threshold
  for (int64_t i = 0; i < z.numel(); ++i)
    if (std::fabs(p[i]) > truncation) outside.push_back(i);
  std::vector<float> redraw;
  while (!outside.empty()) {
    redraw.resize(outside.size());
    gen.fill_normal(redraw.data(), static_cast<int64_t>(redraw.size()), 0.f, 1.f);
    size_t still = 0;
    for (size_t j = 0; j < outside.size(); ++j) {
      if (std::fabs(redraw[j]) > truncation) outside[still++] = outside[j];
      else p[outside[j]] = redraw[j];
    }
    outside.resize(still);
  }
  return z;
}

}  // namespace gantry

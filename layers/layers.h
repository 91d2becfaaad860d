#pragma once
// The standard layers, each equal to its torch.nn namesake in arguments, parameter names and
// shapes, default initialization (distribution, not the random stream) and forward.
//
//   Sequential        children "0", "1", ... applied in order
//   Conv2d            weight [out, in, k, k], bias [out]            (no dilation, no groups)
//                     spectral_norm: torch.nn.utils.spectral_norm(Conv2d(...)) instead: bias,
//                     weight_orig [out, in, k, k]; buffers weight_u [out], weight_v [in*k*k];
//                     or, SpectralNormForm::Parametrization, torch.nn.utils.parametrizations.
//                     spectral_norm(Conv2d(...)): bias, parametrizations.weight.original,
//                     parametrizations.weight.0._u, parametrizations.weight.0._v
//   ConvTranspose2d   weight [in, out, k, k], bias [out]
//   BatchNorm2d       weight, bias [C]; buffers running_mean, running_var [C],
//                     num_batches_tracked [] (stored as I64); eps 1e-5, momentum 0.1
//   GroupNorm         weight, bias [C] (affine, the default); eps 1e-5; no buffers
//   InstanceNorm2d    weight, bias [C] only with affine (default off, as PyTorch); no running
//                     statistics (PyTorch's default track_running_stats=False)
//   Identity          nothing: a placeholder that keeps a Sequential's indices
//   Linear            weight [out, in], bias [out]
//   ReLU, LeakyReLU(0.01), Tanh, Sigmoid, Flatten(start_dim 1), Dropout(p 0.5)
//
// Default initialization as PyTorch's reset_parameters(): Conv/ConvT/Linear weights and biases
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5) reduces to that bound);
// BatchNorm/GroupNorm/InstanceNorm weight 1, bias 0, running_mean 0, running_var 1. `gen` null = default generator.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "gantry/core/random.h"
#include "gantry/layers/module.h"

namespace gantry {

class Sequential : public Module {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<ModulePtr> modules);
  explicit Sequential(const std::vector<ModulePtr>& modules);

  // Appends a module, named by its index ("0", "1", ...).
  void push_back(ModulePtr m);
  std::size_t size() const { return layers_.size(); }
  const ModulePtr& operator[](std::size_t i) const;  // throws std::out_of_range
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Sequential"; }

 private:
  std::vector<ModulePtr> layers_;
};

// The two PyTorch spectral norms, which differ in their state-dict names and in the order of
// the power iteration's two half-steps (docs/ops.md section 8):
//   Classic          torch.nn.utils.spectral_norm               v = n(W^T u), then u = n(W v)
//   Parametrization  torch.nn.utils.parametrizations.spectral_norm  u = n(W v), then v = n(W^T u)
// Both then use sigma = u . (W v) with u, v held constant in the backward.
enum class SpectralNormForm { Classic, Parametrization };
// "classic" / "parametrizations" (dcgan_train --spectral-norm-form) and back; the parser throws
// std::invalid_argument naming both.
SpectralNormForm spectral_norm_form_from_name(const std::string& name);
const char* spectral_norm_form_name(SpectralNormForm form);

class Conv2d : public Module {
 public:
  // spectral_norm = true is torch.nn.utils.spectral_norm(conv) (Miyato et al. 2018, SNGAN): the
  // convolution uses weight / sigma, sigma the largest singular value of weight as a matrix
  // [out, in*k*k], estimated by one power iteration per training forward:
  //   v = normalize(W^T u), u = normalize(W v)   (no gradient; u, v kept as buffers)
  //   sigma = u . (W v)                          (differentiated: the gradient sees sigma(W))
  // In eval mode u and v stay as they are. The state dict then has PyTorch's names: bias (if
  // any), weight_orig, weight_u, weight_v, and `weight` is weight_orig's handle. u and v start as
  // normalized N(0, 1) draws from `gen`.
  // form = Parametrization is torch.nn.utils.parametrizations.spectral_norm(conv) instead (PyTorch
  // 2's recommended one): u first in each iteration, the tensors in PyTorch's module tree
  // (children parametrizations -> weight -> 0, type names ModuleDict, ParametrizationList,
  // _SpectralNorm), so the names are parametrizations.weight.original and
  // parametrizations.weight.0._u / ._v; u and v start with 15 iterations, as PyTorch's do.
  Conv2d(int64_t in_channels, int64_t out_channels, int kernel_size, int stride = 1,
         int padding = 0, bool bias = true, Generator* gen = nullptr, bool spectral_norm = false,
         SpectralNormForm form = SpectralNormForm::Classic);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override {
    return spectral_norm && spectral_norm_form == SpectralNormForm::Parametrization ? "ParametrizedConv2d" : "Conv2d";
  }
  std::string extra_repr() const override;
  // The weight the convolution uses: weight, or weight / sigma with spectral norm (which, in
  // training mode, advances the power iteration by one step).
  Tensor effective_weight();

  int64_t in_channels, out_channels;
  int kernel_size, stride, padding;
  bool spectral_norm;
  SpectralNormForm spectral_norm_form;
  Tensor weight;  // [out, in, k, k] (with spectral norm: weight_orig, or parametrizations.weight.original)
  Tensor bias;    // [out], undefined when bias = false
  Tensor weight_u, weight_v;  // spectral norm's power-iteration vectors [out], [in*k*k]
};

class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, int kernel_size, int stride = 1,
                  int padding = 0, int output_padding = 0, bool bias = true,
                  Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "ConvTranspose2d"; }
  std::string extra_repr() const override;

  int64_t in_channels, out_channels;
  int kernel_size, stride, padding, output_padding;
  Tensor weight;  // [in, out, k, k] (PyTorch's layout)
  Tensor bias;    // [out], undefined when bias = false
};

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, float eps = 1e-5f, float momentum = 0.1f);
  // Training: batch statistics; running stats updated in place and num_batches_tracked += 1.
  // Eval: the running statistics.
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "BatchNorm2d"; }
  std::string extra_repr() const override;

  int64_t num_features;
  float eps, momentum;
  Tensor weight, bias;                     // [C]
  Tensor running_mean, running_var;        // [C]
  Tensor num_batches_tracked;              // [] (float here, I64 on disk)
};

// torch.nn.GroupNorm(num_groups, num_channels, eps, affine): the same statistics in training and
// eval (group_norm in ops.h). GroupNorm(1, C) is layer norm over (C, H, W) with a per-channel
// affine, the critic normalization of WGAN-GP (Gulrajani et al. 2017).
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, float eps = 1e-5f, bool affine = true);
  Tensor forward(const Tensor& x) override;  // x [N, C, ...]
  std::string type_name() const override { return "GroupNorm"; }
  std::string extra_repr() const override;

  int64_t num_groups, num_channels;
  float eps;
  Tensor weight, bias;  // [C], undefined without affine
};

// torch.nn.InstanceNorm2d(num_features, eps, affine) with track_running_stats=False (PyTorch's
// default): every image and channel normalized by its own statistics, in training and eval.
class InstanceNorm2d : public Module {
 public:
  explicit InstanceNorm2d(int64_t num_features, float eps = 1e-5f, bool affine = false);
  Tensor forward(const Tensor& x) override;  // x [N, C, H, W]
  std::string type_name() const override { return "InstanceNorm2d"; }
  std::string extra_repr() const override;

  int64_t num_features;
  float eps;
  Tensor weight, bias;  // [C], undefined without affine
};

// torch.nn.Identity.
class Identity : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
  std::string type_name() const override { return "Identity"; }
};

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;  // x [N, in] -> [N, out]
  std::string type_name() const override { return "Linear"; }
  std::string extra_repr() const override;

  int64_t in_features, out_features;
  Tensor weight;  // [out, in]
  Tensor bias;    // [out] or undefined
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "ReLU"; }
};

class LeakyReLU : public Module {
 public:
  explicit LeakyReLU(float negative_slope = 0.01f) : negative_slope(negative_slope) {}
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "LeakyReLU"; }
  std::string extra_repr() const override;
  float negative_slope;
};

class Tanh : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Tanh"; }
};

class Sigmoid : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Sigmoid"; }
};

class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1) : start_dim(start_dim) {}
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Flatten"; }
  int64_t start_dim;
};

// Zeroes elements with probability p in training mode (scaling the rest by 1/(1-p));
// the identity in eval mode.
class Dropout : public Module {
 public:
  explicit Dropout(float p = 0.5f, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Dropout"; }
  std::string extra_repr() const override;
  float p;

 private:
  Generator* gen_;
};

}  // namespace gantry

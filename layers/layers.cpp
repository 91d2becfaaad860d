// The standard layers. See layers.h.
#include "gantry/layers/layers.h"

#include <cmath>
#include <sstream>
#include <utility>
#include <stdexcept>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"

namespace gantry {

namespace {

// PyTorch's reset_parameters() for Conv/ConvT/Linear: kaiming_uniform_(a=sqrt(5)) gives the
// bound gain*sqrt(3/fan_in) with gain = sqrt(2/(1+5)) = sqrt(1/3), i.e. 1/sqrt(fan_in); the
// bias uses the same bound.
float default_bound(int64_t fan_in) { return fan_in > 0 ? 1.f / std::sqrt(static_cast<float>(fan_in)) : 0.f; }

void check_positive(const char* layer, const char* what, int64_t v) {
  if (v <= 0)
    throw std::invalid_argument(std::string(layer) + ": " + what + " must be positive, got " +
                                std::to_string(v));
}

void check_image(const char* layer, const Tensor& x, int64_t channels) {
  if (x.dim() != 4 || x.size(1) != channels)
    throw std::invalid_argument(std::string(layer) + ": expected input [N, " +
                                std::to_string(channels) + ", H, W], got " + shape_str(x.shape()));
}

// x / max(||x||, 1e-12): torch.nn.functional.normalize(x, dim=0), as spectral_norm uses it.
Tensor normalized(const Tensor& x) { return div(x, clamp(sqrt(sum(square(x))), 1e-12f, INFINITY)); }

// A module that only holds tensors, standing in for the containers PyTorch's parametrizations
// put around a weight (ModuleDict, ParametrizationList, _SpectralNorm): it gives their tensors
// PyTorch's dotted names and order, and is never called.
class TensorHolder : public Module {
 public:
  explicit TensorHolder(std::string type) : type_(std::move(type)) {}
  Tensor forward(const Tensor&) override { throw std::logic_error(type_ + " holds tensors and is not called"); }
  std::string type_name() const override { return type_; }
  Tensor add_parameter(const std::string& name, Tensor t) { return register_parameter(name, std::move(t)); }
  Tensor add_buffer(const std::string& name, Tensor t) { return register_buffer(name, std::move(t)); }
  void add_module(const std::string& name, ModulePtr m) { register_module(name, std::move(m)); }

 private:
  std::string type_;
};

// One power-iteration step for W [rows, cols] in `form`'s order; writes u and v in place.
void power_iteration(SpectralNormForm form, const Tensor& w, Tensor& u_buf, Tensor& v_buf) {
  const int64_t rows = w.size(0), cols = w.size(1);
  NoGradGuard no_grad;
  if (form == SpectralNormForm::Classic) {
    const Tensor v = normalized(matmul(u_buf.reshape({1, rows}), w).reshape({cols}));
    const Tensor u = normalized(matmul(w, v.reshape({cols, 1})).reshape({rows}));
    v_buf.copy_(v);
    u_buf.copy_(u);
  } else {
    const Tensor u = normalized(matmul(w, v_buf.reshape({cols, 1})).reshape({rows}));
    const Tensor v = normalized(matmul(u.reshape({1, rows}), w).reshape({cols}));
    u_buf.copy_(u);
    v_buf.copy_(v);
  }
}

}  // namespace

SpectralNormForm spectral_norm_form_from_name(const std::string& name) {
  if (name == "classic") return SpectralNormForm::Classic;
  if (name == "parametrizations") return SpectralNormForm::Parametrization;
  throw std::invalid_argument("spectral norm form '" + name +
                              "': must be classic (torch.nn.utils.spectral_norm) or parametrizations "
                              "(torch.nn.utils.parametrizations.spectral_norm)");
}

const char* spectral_norm_form_name(SpectralNormForm form) {
  return form == SpectralNormForm::Classic ? "classic" : "parametrizations";
}

// ---- Sequential -----------------------------------------------------------------------------

Sequential::Sequential(std::initializer_list<ModulePtr> modules) {
  for (const auto& m : modules) push_back(m);
}

Sequential::Sequential(const std::vector<ModulePtr>& modules) {
  for (const auto& m : modules) push_back(m);
}

void Sequential::push_back(ModulePtr m) {
  register_module(std::to_string(layers_.size()), m);
  layers_.push_back(std::move(m));
}

const ModulePtr& Sequential::operator[](std::size_t i) const {
  if (i >= layers_.size())
    throw std::out_of_range("Sequential: index " + std::to_string(i) + " out of range (size " +
                            std::to_string(layers_.size()) + ")");
  return layers_[i];
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (const auto& m : layers_) y = m->forward(y);
  return y;
}

// ---- Conv2d ---------------------------------------------------------------------------------

Conv2d::Conv2d(int64_t in, int64_t out, int k, int s, int p, bool with_bias, Generator* gen, bool sn,
               SpectralNormForm form)
    : in_channels(in), out_channels(out), kernel_size(k), stride(s), padding(p), spectral_norm(sn),
      spectral_norm_form(form) {
  check_positive("Conv2d", "in_channels", in);
  check_positive("Conv2d", "out_channels", out);
  check_positive("Conv2d", "kernel_size", k);
  check_positive("Conv2d", "stride", s);
  const float bound = default_bound(in * k * k);
  weight = Tensor::empty({out, in, k, k});
  weight.uniform_(-bound, bound, gen);
  if (with_bias) {
    bias = Tensor::empty({out});
    bias.uniform_(-bound, bound, gen);
  }
  if (!sn) {
    weight = register_parameter("weight", weight);
    if (with_bias) bias = register_parameter("bias", bias);
    return;
  }
  // PyTorch's spectral norms remove `weight` and append their own tensors, so bias comes first.
  if (with_bias) bias = register_parameter("bias", bias);
  NoGradGuard no_grad;
  Tensor u = normalized(Tensor::randn({out}, gen)), v = normalized(Tensor::randn({in * k * k}, gen));
  if (form == SpectralNormForm::Classic) {
    weight = register_parameter("weight_orig", weight);
    weight_u = register_buffer("weight_u", u);
    weight_v = register_buffer("weight_v", v);
    return;
  }
  auto norm = std::make_shared<TensorHolder>("_SpectralNorm");
  weight_u = norm->add_buffer("_u", u);
  weight_v = norm->add_buffer("_v", v);
  auto list = std::make_shared<TensorHolder>("ParametrizationList");
  weight = list->add_parameter("original", weight);
  list->add_module("0", norm);
  auto dict = std::make_shared<TensorHolder>("ModuleDict");
  dict->add_module("weight", list);
  register_module("parametrizations", dict);
  // PyTorch's _SpectralNorm starts u and v with 15 iterations on the weight it is given.
  const Tensor w = weight.reshape({out, in * k * k});
  for (int i = 0; i < 15; ++i) power_iteration(form, w, weight_u, weight_v);
}

Tensor Conv2d::effective_weight() {
  if (!spectral_norm) return weight;
  const int64_t rows = out_channels, cols = weight.numel() / out_channels;
  const Tensor w = weight.reshape({rows, cols});
  if (is_training()) power_iteration(spectral_norm_form, w, weight_u, weight_v);  // one step (eps 1e-12)
  // Copies, so the next forward's update of the buffers cannot reach this forward's backward.
  const Tensor u = weight_u.clone(), v = weight_v.clone();
  const Tensor sigma = sum(mul(u, matmul(w, v.reshape({cols, 1})).reshape({rows})));
  return div(weight, sigma);
}

Tensor Conv2d::forward(const Tensor& x) {
  check_image("Conv2d", x, in_channels);
  return conv2d(x, effective_weight(), bias, stride, padding);
}

std::string Conv2d::extra_repr() const {
  std::ostringstream os;
  os << in_channels << ", " << out_channels << ", kernel_size=(" << kernel_size << ", "
     << kernel_size << "), stride=(" << stride << ", " << stride << ")";
  if (padding) os << ", padding=(" << padding << ", " << padding << ")";
  if (!bias.defined()) os << ", bias=False";
  if (spectral_norm && spectral_norm_form == SpectralNormForm::Classic) os << ", spectral_norm";
  return os.str();
}

// ---- ConvTranspose2d ------------------------------------------------------------------------

ConvTranspose2d::ConvTranspose2d(int64_t in, int64_t out, int k, int s, int p, int op,
                                 bool with_bias, Generator* gen)
    : in_channels(in), out_channels(out), kernel_size(k), stride(s), padding(p), output_padding(op) {
  check_positive("ConvTranspose2d", "in_channels", in);
  check_positive("ConvTranspose2d", "out_channels", out);
  check_positive("ConvTranspose2d", "kernel_size", k);
  check_positive("ConvTranspose2d", "stride", s);
  // PyTorch computes fan_in from dim 1 of the [in, out, k, k] weight, i.e. out * k * k.
  const float bound = default_bound(out * k * k);
  weight = register_parameter("weight", Tensor::empty({in, out, k, k}));
  weight.uniform_(-bound, bound, gen);
  if (with_bias) {
    bias = register_parameter("bias", Tensor::empty({out}));
    bias.uniform_(-bound, bound, gen);
  }
}

Tensor ConvTranspose2d::forward(const Tensor& x) {
  check_image("ConvTranspose2d", x, in_channels);
  return conv_transpose2d(x, weight, bias, stride, padding, output_padding);
}

std::string ConvTranspose2d::extra_repr() const {
  std::ostringstream os;
  os << in_channels << ", " << out_channels << ", kernel_size=(" << kernel_size << ", "
     << kernel_size << "), stride=(" << stride << ", " << stride << ")";
  if (padding) os << ", padding=(" << padding << ", " << padding << ")";
  if (output_padding) os << ", output_padding=(" << output_padding << ", " << output_padding << ")";
  if (!bias.defined()) os << ", bias=False";
  return os.str();
}

// ---- BatchNorm2d ----------------------------------------------------------------------------

BatchNorm2d::BatchNorm2d(int64_t c, float eps_, float momentum_)
    : num_features(c), eps(eps_), momentum(momentum_) {
  check_positive("BatchNorm2d", "num_features", c);
  weight = register_parameter("weight", Tensor::ones({c}));
  bias = register_parameter("bias", Tensor::zeros({c}));
  running_mean = register_buffer("running_mean", Tensor::zeros({c}));
  running_var = register_buffer("running_var", Tensor::ones({c}));
  // PyTorch keeps an int64 scalar; here a float scalar (exact to 2^24 steps), saved as I64.
  num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}), DType::I64);
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  check_image("BatchNorm2d", x, num_features);
  if (is_training()) {
    NoGradGuard no_grad;
    // += 1 on the buffer's own device, without a host round trip (keeps a GPU step capturable).
    num_batches_tracked.add_(1.f);
  }
  return batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum, eps);
}

std::string BatchNorm2d::extra_repr() const {
  std::ostringstream os;
  os << num_features << ", eps=" << eps << ", momentum=" << momentum
     << ", affine=True, track_running_stats=True";
  return os.str();
}

// ---- GroupNorm, InstanceNorm2d -----------------------------------------------------------------

GroupNorm::GroupNorm(int64_t groups, int64_t c, float eps_, bool affine)
    : num_groups(groups), num_channels(c), eps(eps_) {
  check_positive("GroupNorm", "num_groups", groups);
  check_positive("GroupNorm", "num_channels", c);
  if (c % groups != 0)
    throw std::invalid_argument("GroupNorm: num_channels (" + std::to_string(c) +
                                ") must be divisible by num_groups (" + std::to_string(groups) + ")");
  if (affine) {
    weight = register_parameter("weight", Tensor::ones({c}));
    bias = register_parameter("bias", Tensor::zeros({c}));
  }
}

Tensor GroupNorm::forward(const Tensor& x) {
  if (x.dim() < 2 || x.size(1) != num_channels)
    throw std::invalid_argument("GroupNorm: expected input [N, " + std::to_string(num_channels) + ", ...], got " +
                                shape_str(x.shape()));
  return group_norm(x, num_groups, weight, bias, eps);
}

std::string GroupNorm::extra_repr() const {
  std::ostringstream os;
  os << num_groups << ", " << num_channels << ", eps=" << eps << ", affine=" << (weight.defined() ? "True" : "False");
  return os.str();
}

InstanceNorm2d::InstanceNorm2d(int64_t c, float eps_, bool affine) : num_features(c), eps(eps_) {
  check_positive("InstanceNorm2d", "num_features", c);
  if (affine) {
    weight = register_parameter("weight", Tensor::ones({c}));
    bias = register_parameter("bias", Tensor::zeros({c}));
  }
}

Tensor InstanceNorm2d::forward(const Tensor& x) {
  check_image("InstanceNorm2d", x, num_features);
  return instance_norm(x, weight, bias, eps);
}

std::string InstanceNorm2d::extra_repr() const {
  std::ostringstream os;
  os << num_features << ", eps=" << eps << ", momentum=0.1, affine=" << (weight.defined() ? "True" : "False")
     << ", track_running_stats=False";
  return os.str();
}

// ---- Linear ---------------------------------------------------------------------------------

Linear::Linear(int64_t in, int64_t out, bool with_bias, Generator* gen)
    : in_features(in), out_features(out) {
  check_positive("Linear", "in_features", in);
  check_positive("Linear", "out_features", out);
  const float bound = default_bound(in);
  weight = register_parameter("weight", Tensor::empty({out, in}));
  weight.uniform_(-bound, bound, gen);
  if (with_bias) {
    bias = register_parameter("bias", Tensor::empty({out}));
    bias.uniform_(-bound, bound, gen);
  }
}

Tensor Linear::forward(const Tensor& x) {
  if (x.dim() != 2 || x.size(1) != in_features)
    throw std::invalid_argument("Linear: expected input [N, " + std::to_string(in_features) +
                                "], got " + shape_str(x.shape()) + " (Flatten first?)");
  return linear(x, weight, bias);
}

std::string Linear::extra_repr() const {
  return "in_features=" + std::to_string(in_features) + ", out_features=" +
         std::to_string(out_features) + ", bias=" + (bias.defined() ? "True" : "False");
}

// ---- activations and the rest ---------------------------------------------------------------

Tensor ReLU::forward(const Tensor& x) { return relu(x); }
Tensor LeakyReLU::forward(const Tensor& x) { return leaky_relu(x, negative_slope); }
std::string LeakyReLU::extra_repr() const {
  std::ostringstream os;
  os << "negative_slope=" << negative_slope;
  return os.str();
}
Tensor Tanh::forward(const Tensor& x) { return tanh(x); }
Tensor Sigmoid::forward(const Tensor& x) { return sigmoid(x); }
Tensor Flatten::forward(const Tensor& x) { return flatten(x, start_dim); }

Dropout::Dropout(float p_, Generator* gen) : p(p_), gen_(gen) {
  if (!(p >= 0.f && p <= 1.f))
    throw std::invalid_argument("Dropout: p must be in [0, 1], got " + std::to_string(p));
}
Tensor Dropout::forward(const Tensor& x) { return dropout(x, p, is_training(), gen_); }
std::string Dropout::extra_repr() const {
  std::ostringstream os;
  os << "p=" << p;
  return os.str();
}

}  // namespace gantry

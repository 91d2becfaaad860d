// SGD with momentum. See sgd.h for the update rule.
#include "gantry/optim/sgd.h"

#include <stdexcept>

#include "gantry/core/autograd.h"

namespace gantry {

void sgd_update_cpu(float* param, const float* grad, float* buf, int64_t n, bool first,
                    const SGDOptions& o) {
  const float lr = static_cast<float>(o.lr), wd = static_cast<float>(o.weight_decay);
  const float mom = static_cast<float>(o.momentum);
  const float one_minus_damp = static_cast<float>(1.0 - o.dampening);
  for (int64_t i = 0; i < n; ++i) {
    float g = wd != 0.f ? grad[i] + wd * param[i] : grad[i];
    if (buf) {
      const float b = first ? g : buf[i] * mom + one_minus_damp * g;
      buf[i] = b;
      g = o.nesterov ? g + mom * b : b;
    }
    param[i] -= lr * g;
  }
}

SGD::SGD(std::vector<Tensor> params, SGDOptions options)
    : Optimizer(std::move(params), options.lr, "SGD"), opt_(options), momentum_buffer_(params_.size()) {
  if (opt_.momentum < 0.0) throw std::invalid_argument("SGD: invalid momentum " + std::to_string(opt_.momentum));
  if (opt_.weight_decay < 0.0)
    throw std::invalid_argument("SGD: invalid weight_decay " + std::to_string(opt_.weight_decay));
  if (opt_.nesterov && (opt_.momentum <= 0.0 || opt_.dampening != 0.0))
    throw std::invalid_argument("SGD: nesterov momentum requires a momentum > 0 and zero dampening");
}

void SGD::step() {
  NoGradGuard no_grad;
  opt_.lr = lr_;
  const bool use_momentum = opt_.momentum != 0.0;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Tensor p = params_[i];  // a handle: in-place updates write through
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.shape() != p.shape())
      throw std::invalid_argument("SGD: parameter " + std::to_string(i) + " has shape " +
                                  shape_str(p.shape()) + " but its grad " + shape_str(g.shape()));
    Tensor& buf = momentum_buffer_[i];
    const bool first = use_momentum && !buf.defined();
    if (first) buf = Tensor::zeros(p.shape(), p.device());
    if (p.device().is_cpu()) {
      p.bump_version();  // written through data(): count it as an in-place write
      sgd_update_cpu(p.data(), g.data(), use_momentum ? buf.data() : nullptr, p.numel(), first, opt_);
    } else {
      // No device kernel yet: a correct (slow) round trip through host memory.
      Tensor hp = p.cpu(), hg = g.cpu(), hb = use_momentum ? buf.cpu() : Tensor();
      sgd_update_cpu(hp.data(), hg.data(), use_momentum ? hb.data() : nullptr, p.numel(), first, opt_);
      p.copy_(hp);
      if (use_momentum) buf.copy_(hb);
    }
  }
}

StateDict SGD::state_dict() const {
  StateDict sd;
  for (std::size_t i = 0; i < momentum_buffer_.size(); ++i)
    if (momentum_buffer_[i].defined())
      sd.push_back({"state." + std::to_string(i) + ".momentum_buffer", momentum_buffer_[i].detach(), DType::F32});
  return sd;
}

void SGD::load_state_dict(const StateDict& sd) {
  std::vector<std::string> problems;
  std::vector<Tensor> found(params_.size());
  for (const auto& e : sd) {
    std::size_t i;
    std::string field;
    if (!parse_state_key(e, {"momentum_buffer"}, &i, &field, problems)) continue;
    if (e.tensor.shape() != params_[i].shape()) {
      problems.push_back("\"" + e.name + "\" has shape " + shape_str(e.tensor.shape()) +
                         ", expected " + shape_str(params_[i].shape()));
      continue;
    }
    found[i] = e.tensor;
  }
  if (!problems.empty()) throw_problems(problems);
  NoGradGuard no_grad;
  std::vector<Tensor> fresh(params_.size());
  for (std::size_t i = 0; i < found.size(); ++i) {
    if (!found[i].defined()) continue;
    fresh[i] = Tensor::zeros(params_[i].shape(), params_[i].device());
    fresh[i].copy_(found[i]);
  }
  momentum_buffer_ = std::move(fresh);
}

}  // namespace gantry

// Adam. See adam.h for the update rule.
#include "gantry/optim/adam.h"

#include <cmath>
#include <map>
#include <stdexcept>

#include "gantry/core/autograd.h"

#ifdef GANTRY_WITH_CUDA
#include "gantry/kernels/cuda/cuda_kernels.h"
#endif

namespace gantry {

void adam_update_cpu(float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                     int64_t n, int64_t step, const AdamOptions& o) {
  // Scalar factors in double (as Python computes them), cast once to float.
  const double bias_correction1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(o.beta2, static_cast<double>(step));
  const float step_size = static_cast<float>(o.lr / bias_correction1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float b1 = static_cast<float>(o.beta1), one_minus_b1 = static_cast<float>(1.0 - o.beta1);
  const float b2 = static_cast<float>(o.beta2), one_minus_b2 = static_cast<float>(1.0 - o.beta2);
  const float eps = static_cast<float>(o.eps), wd = static_cast<float>(o.weight_decay);
  // Elementwise and memory-bound: split over threads for the large tensors.
#pragma omp parallel for simd if (n >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const float g = wd != 0.f ? grad[i] + wd * param[i] : grad[i];
    const float m = exp_avg[i] * b1 + one_minus_b1 * g;
    const float v = exp_avg_sq[i] * b2 + one_minus_b2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    const float denom = std::sqrt(v) / bc2_sqrt + eps;
    param[i] -= step_size * (m / denom);  // addcdiv: value * (t1 / t2)
  }
}

#ifdef GANTRY_WITH_CUDA
cuda::AdamConfig adam_cuda_config(const AdamOptions& o, int64_t step) {
  cuda::AdamConfig cfg;
  cfg.lr = o.lr;
  cfg.beta1 = o.beta1;
  cfg.beta2 = o.beta2;
  cfg.eps = o.eps;
  cfg.weight_decay = o.weight_decay;
  cfg.step = step;
  return cfg;
}
#endif

Adam::Adam(std::vector<Tensor> params, AdamOptions options)
    : Optimizer(std::move(params), options.lr, "Adam"), opt_(options), state_(params_.size()) {
  auto check = [&](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument("Adam: invalid " + what);
  };
  check(opt_.beta1 >= 0.0 && opt_.beta1 < 1.0, "beta1 " + std::to_string(opt_.beta1) + " (need 0 <= beta1 < 1)");
  check(opt_.beta2 >= 0.0 && opt_.beta2 < 1.0, "beta2 " + std::to_string(opt_.beta2) + " (need 0 <= beta2 < 1)");
  check(opt_.eps >= 0.0, "eps " + std::to_string(opt_.eps) + " (need >= 0)");
  check(opt_.weight_decay >= 0.0, "weight_decay " + std::to_string(opt_.weight_decay) + " (need >= 0)");
}

void Adam::step() {
  NoGradGuard no_grad;
  opt_.lr = lr_;  // set_lr() may have changed it (a schedule)
#ifdef GANTRY_WITH_CUDA
  // GPU parameters are updated together, one fused launch per group of equal step count
  // (normally one group: every parameter steps together).
  std::map<int64_t, std::vector<cuda::AdamTensor>> gpu_groups;
#endif
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Tensor p = params_[i];  // a handle: in-place updates write through
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.shape() != p.shape())
      throw std::invalid_argument("Adam: parameter " + std::to_string(i) + " has shape " +
                                  shape_str(p.shape()) + " but its grad " + shape_str(g.shape()));
    State& s = state_[i];
    if (!s.exp_avg.defined()) {
      s.exp_avg = Tensor::zeros(p.shape(), p.device());
      s.exp_avg_sq = Tensor::zeros(p.shape(), p.device());
    }
    ++s.step;
    p.bump_version();  // an in-place update: graphs that saved p must not backward through it
    if (p.device().is_cpu()) {
      adam_update_cpu(p.data(), g.data(), s.exp_avg.data(), s.exp_avg_sq.data(), p.numel(), s.step, opt_);
    } else {
#ifdef GANTRY_WITH_CUDA
      gpu_groups[s.step].push_back({p.data(), g.data(), s.exp_avg.data(), s.exp_avg_sq.data(), p.numel()});
#else
      throw std::runtime_error("Adam: parameter " + std::to_string(i) + " is on " + p.device().str() +
                               " but gantry was built without CUDA");
#endif
    }
  }
#ifdef GANTRY_WITH_CUDA
  for (const auto& [step, tensors] : gpu_groups)
    cuda::adam_multi_tensor(tensors.data(), static_cast<int>(tensors.size()),
                            adam_cuda_config(opt_, step));
#endif
}

StateDict Adam::state_dict() const {
  StateDict sd;
  for (std::size_t i = 0; i < state_.size(); ++i) {
    const State& s = state_[i];
    if (!s.exp_avg.defined()) continue;
    const std::string k = "state." + std::to_string(i) + ".";
    sd.push_back({k + "step", Tensor::full({}, static_cast<float>(s.step)), DType::I64});
    sd.push_back({k + "exp_avg", s.exp_avg.detach(), DType::F32});
    sd.push_back({k + "exp_avg_sq", s.exp_avg_sq.detach(), DType::F32});
  }
  return sd;
}

void Adam::load_state_dict(const StateDict& sd) {
  std::vector<std::string> problems;
  std::map<std::size_t, std::map<std::string, Tensor>> found;
  std::map<std::size_t, bool> had_problem;  // no follow-on "incomplete" report for these
  for (const auto& e : sd) {
    std::size_t i;
    std::string field;
    if (!parse_state_key(e, {"step", "exp_avg", "exp_avg_sq"}, &i, &field, problems)) continue;
    const Shape want = field == "step" ? Shape{} : params_[i].shape();
    if (e.tensor.shape() != want && !(field == "step" && e.tensor.numel() == 1)) {
      problems.push_back("\"" + e.name + "\" has shape " + shape_str(e.tensor.shape()) +
                         ", expected " + shape_str(want));
      had_problem[i] = true;
      continue;
    }
    if (field == "step") {
      const float v = e.tensor.item();
      if (!(v >= 1.f) || v != std::floor(v)) {
        problems.push_back("\"" + e.name + "\" = " + std::to_string(v) + " is not a step count >= 1");
        had_problem[i] = true;
        continue;
      }
    }
    found[i][field] = e.tensor;
  }
  for (const auto& [i, fields] : found)
    if (fields.size() != 3 && !had_problem.count(i))
      problems.push_back("parameter " + std::to_string(i) +
                         ": state needs step, exp_avg and exp_avg_sq together");
  if (!problems.empty()) throw_problems(problems);

  NoGradGuard no_grad;
  std::vector<State> fresh(params_.size());
  for (const auto& [i, fields] : found) {
    const Tensor& p = params_[i];
    fresh[i].step = static_cast<int64_t>(fields.at("step").item());
    fresh[i].exp_avg = Tensor::zeros(p.shape(), p.device());
    fresh[i].exp_avg.copy_(fields.at("exp_avg"));
    fresh[i].exp_avg_sq = Tensor::zeros(p.shape(), p.device());
    fresh[i].exp_avg_sq.copy_(fields.at("exp_avg_sq"));
  }
  state_ = std::move(fresh);
}

}  // namespace gantry

// Adam. See adam.h for the update rule.
#include "gantry/optim/adam.h"

#include <cmath>
#include <cstdlib>
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

// ---- PyTorch's form ------------------------------------------------------------------------

TorchValue adam_state_to_torch(const StateDict& state, std::size_t num_params, const AdamOptions& o) {
  TorchValue per_param = TorchValue::dict();
  std::map<std::size_t, TorchValue> by_index;
  for (const auto& e : state) {
    const std::size_t dot1 = e.name.find('.'), dot2 = e.name.find('.', dot1 + 1);
    if (e.name.rfind("state.", 0) != 0 || dot2 == std::string::npos)
      throw std::invalid_argument("adam_state_to_torch: \"" + e.name + "\" is not a state.<i>.<field> name");
    const std::size_t i = std::strtoull(e.name.c_str() + dot1 + 1, nullptr, 10);
    if (i >= num_params)
      throw std::invalid_argument("adam_state_to_torch: \"" + e.name + "\" is for parameter " + std::to_string(i) +
                                  ", but the optimizer has " + std::to_string(num_params));
    const std::string field = e.name.substr(dot2 + 1);
    auto [it, fresh] = by_index.try_emplace(i, TorchValue::dict());
    (void)fresh;
    // PyTorch keeps the step as a float32 scalar tensor (since 1.12; capturable/fused need it so).
    it->second.set(field, field == "step" ? TorchValue::tensor(e.tensor.reshape({}), DType::F32)
                                          : TorchValue::tensor(e.tensor, DType::F32));
  }
  for (auto& [i, fields] : by_index) per_param.set(static_cast<int64_t>(i), std::move(fields));

  TorchValue group = TorchValue::dict();
  group.set("lr", TorchValue::real(o.lr));
  group.set("betas", TorchValue::tuple({TorchValue::real(o.beta1), TorchValue::real(o.beta2)}));
  group.set("eps", TorchValue::real(o.eps));
  group.set("weight_decay", TorchValue::real(o.weight_decay));
  // The rest of torch.optim.Adam's defaults (PyTorch 1.13), so its load_state_dict sets them as
  // its own constructor would.
  group.set("amsgrad", TorchValue::boolean(false));
  group.set("maximize", TorchValue::boolean(false));
  group.set("foreach", TorchValue());
  group.set("capturable", TorchValue::boolean(false));
  group.set("differentiable", TorchValue::boolean(false));
  group.set("fused", TorchValue());
  TorchValue params = TorchValue::list();
  for (std::size_t i = 0; i < num_params; ++i) params.push(TorchValue::integer(static_cast<int64_t>(i)));
  group.set("params", std::move(params));

  TorchValue sd = TorchValue::dict();
  sd.set("state", std::move(per_param));
  sd.set("param_groups", TorchValue::list({std::move(group)}));
  return sd;
}

namespace {

// A number of the flattened file: metadata text ("0.0002", "5", "True") or a one-element tensor.
bool torch_number(const SafetensorsContents& c, const std::string& name, double* out) {
  auto m = c.metadata.find(name);
  if (m != c.metadata.end()) {
    if (m->second == "True" || m->second == "False") {
      *out = m->second == "True";
      return true;
    }
    char* end = nullptr;
    const double v = std::strtod(m->second.c_str(), &end);
    if (end == m->second.c_str() || *end != '\0') return false;
    *out = v;
    return true;
  }
  for (const auto& e : c.tensors)
    if (e.name == name && e.tensor.numel() == 1) {
      *out = e.tensor.item();
      return true;
    }
  return false;
}

}  // namespace

bool is_torch_optimizer_state(const SafetensorsContents& c, const std::string& prefix) {
  double lr;
  return torch_number(c, prefix + ".param_groups.0.lr", &lr);
}

TorchAdamState adam_state_from_torch(const SafetensorsContents& c, const std::string& prefix) {
  auto bad = [&](const std::string& why) {
    throw std::invalid_argument("optimizer '" + prefix + "': " + why);
  };
  const std::string group = prefix + ".param_groups.0.";
  auto number = [&](const std::string& field, double fallback) {
    double v = fallback;
    if (!torch_number(c, group + field, &v) && (c.metadata.count(group + field) || field == "lr"))
      bad("param_groups[0]['" + field + "'] is not a number");
    return v;
  };
  TorchAdamState r;
  r.options.lr = number("lr", 0);
  r.options.beta1 = number("betas.0", r.options.beta1);
  r.options.beta2 = number("betas.1", r.options.beta2);
  r.options.eps = number("eps", r.options.eps);
  r.options.weight_decay = number("weight_decay", 0);
  if (number("amsgrad", 0) != 0) bad("amsgrad=True; gantry's Adam is amsgrad=False");
  if (number("maximize", 0) != 0) bad("maximize=True; gantry's Adam minimizes");
  if (!(r.options.lr > 0) || !(r.options.beta1 >= 0 && r.options.beta1 < 1) ||
      !(r.options.beta2 >= 0 && r.options.beta2 < 1) || !(r.options.eps >= 0))
    bad("its lr/betas/eps are not an Adam's (lr > 0, betas in [0, 1), eps >= 0)");
  const std::string more = prefix + ".param_groups.1.";
  for (const auto& [k, v] : c.metadata)
    if (k.rfind(more, 0) == 0) bad("it has more than one param group; gantry's Adam has one per model");
  // The group's parameter indices: torch packs them as 0, 1, ..., n-1.
  for (;; ++r.num_params) {
    double idx;
    if (!torch_number(c, group + "params." + std::to_string(r.num_params), &idx)) break;
    if (idx != static_cast<double>(r.num_params))
      bad("param_groups[0]['params'][" + std::to_string(r.num_params) + "] is " + std::to_string(idx) +
          " (a state_dict numbers them 0, 1, ...)");
  }
  if (r.num_params == 0) bad("param_groups[0]['params'] is missing or empty");

  // The per-parameter state: tensors, and the step where an old PyTorch saved it as an int.
  const std::string state = prefix + ".state.";
  auto add = [&](const std::string& name, const Tensor& t, DType dtype) {
    const std::string rest = name.substr(state.size());  // "<i>.<field>"
    const std::size_t dot = rest.find('.');
    char* end = nullptr;
    const unsigned long long i = std::strtoull(rest.c_str(), &end, 10);
    if (dot == std::string::npos || end != rest.c_str() + dot || dot == 0)
      bad("'" + name + "' is not state.<index>.<field>");
    const std::string field = rest.substr(dot + 1);
    if (field != "step" && field != "exp_avg" && field != "exp_avg_sq")
      bad("its state holds '" + field + "' (" + name + "); gantry's Adam keeps step, exp_avg and exp_avg_sq");
    if (i >= r.num_params)
      bad("state index " + std::to_string(i) + " but the param group has " + std::to_string(r.num_params) +
          " parameters");
    if (field == "step") r.max_step = std::max(r.max_step, static_cast<int64_t>(t.item()));
    r.state.push_back({"state." + rest, t, dtype});
  };
  for (const auto& e : c.tensors)
    if (e.name.rfind(state, 0) == 0) add(e.name, e.tensor, e.dtype);
  for (const auto& [k, v] : c.metadata) {
    if (k.rfind(state, 0) != 0) continue;  // a name is a tensor or metadata, never both
    double step;
    if (!torch_number(c, k, &step)) bad("'" + k + "' = " + v + " is not a tensor or a step count");
    add(k, Tensor::full({}, static_cast<float>(step)), DType::I64);
  }
  return r;
}

}  // namespace gantry

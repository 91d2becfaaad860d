#pragma once
// Optimizer: the base of Adam and SGD, following torch.optim.
//
// Contract:
// - Built on a list of parameters (leaf tensors; usually module.parameters()). step() updates
//   each parameter that has a .grad in place, outside autograd; parameters without a .grad are
//   skipped (as PyTorch does). zero_grad() drops every .grad (set_to_none=True).
// - Per-parameter state (moments, step counts) is created lazily on the first step that sees a
//   gradient, on the parameter's device.
// - state_dict() returns that state as named tensors, one group per parameter index, mirroring
//   PyTorch's optimizer.state_dict()["state"]: "state.<i>.<field>" (e.g. "state.0.exp_avg",
//   "state.0.step" stored as I64). It can be saved with save_safetensors(). Hyperparameters are
//   not part of it: they belong to the run's configuration (construct the optimizer with them).
// - load_state_dict() checks everything first (parameter index in range, known field, shape equal
//   to the parameter's) and throws std::invalid_argument listing the problems; only a fully valid
//   state is applied.
#include <cstdint>
#include <string>
#include <vector>

#include "gantry/core/safetensors.h"
#include "gantry/core/tensor.h"

namespace gantry {

class Optimizer {
 public:
  Optimizer(std::vector<Tensor> params, double lr, const char* name);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual void step() = 0;
  void zero_grad();

  double lr() const { return lr_; }
  void set_lr(double lr);
  const std::vector<Tensor>& params() const { return params_; }

  virtual StateDict state_dict() const = 0;
  virtual void load_state_dict(const StateDict& sd) = 0;
  // Convenience: state_dict() to / from a safetensors file.
  void save(const std::string& path, const Metadata& metadata = {}) const;
  void load(const std::string& path);

 protected:
  // Splits "state.<i>.<field>" into (i, field) after checking i < params().size() and that
  // `field` is one of `fields`; on failure appends a description to `problems`.
  bool parse_state_key(const NamedTensor& e, const std::vector<std::string>& fields,
                       std::size_t* index, std::string* field,
                       std::vector<std::string>& problems) const;
  [[noreturn]] void throw_problems(const std::vector<std::string>& problems) const;

  std::vector<Tensor> params_;
  double lr_;
  std::string name_;  // "Adam", "SGD": prefixes error messages
};

}  // namespace gantry

#pragma once
// Module: the base of every layer and model, following torch.nn.Module.
//
// Contract:
// - A module owns named parameters (trainable, requires_grad), named buffers (state that is
//   saved but not trained, e.g. BatchNorm's running statistics) and named child modules, each
//   kept in registration order. Children are held as std::shared_ptr.
// - state_dict() lists, for this module, its parameters then its buffers, then recurses into the
//   children in registration order, with PyTorch's dotted names ("main.1.running_mean"). So the
//   keys, their order and their shapes equal PyTorch's state_dict() of the same architecture.
//   Each entry carries the dtype it is stored as (num_batches_tracked: I64, everything else F32).
//   The tensors in it share storage with the module (as PyTorch's do); clone() to snapshot.
// - load_state_dict() copies values in place (parameters keep their identity, so an optimizer
//   built earlier keeps working). Strict (the default): any missing key, unexpected key or shape
//   mismatch is one std::invalid_argument listing all of them. Non-strict: missing/unexpected
//   keys are returned instead, but a shape mismatch is still an error (as in PyTorch).
// - to(device) moves every parameter and buffer in place: the Tensor handles (held by the layer
//   and by optimizers) stay valid and now refer to memory on `device`. Gradients are dropped.
// - Layers keep their tensors as public handles (conv->weight) for reading and in-place updates;
//   assigning a new Tensor to such a member would detach it from the module: use copy_().
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gantry/core/device.h"
#include "gantry/core/safetensors.h"
#include "gantry/core/tensor.h"

namespace gantry {

class Module;
using ModulePtr = std::shared_ptr<Module>;

// What a non-strict load_state_dict() skipped.
struct LoadResult {
  std::vector<std::string> missing_keys;     // in the module, not in the state dict
  std::vector<std::string> unexpected_keys;  // in the state dict, not in the module
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The computation. Layers with several inputs (losses) are not Modules.
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }

  // The class name as PyTorch prints it ("Conv2d") and the details inside the parentheses.
  virtual std::string type_name() const = 0;
  virtual std::string extra_repr() const { return ""; }
  // A PyTorch-like multi-line description of the module tree.
  std::string repr() const;

  // ---- parameters, buffers, children --------------------------------------------------------
  std::vector<Tensor> parameters() const;  // recursive, state_dict order
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  std::vector<std::pair<std::string, ModulePtr>> named_children() const;
  // This module's direct parameters (not recursive), e.g. for an init function.
  const std::vector<std::pair<std::string, Tensor>>& own_parameters() const { return params_; }
  // Every module of the tree, pre-order, as {dotted prefix, module}; this one is {"", this}.
  std::vector<std::pair<std::string, Module*>> named_modules();
  // The direct child called `name` (throws std::out_of_range listing the children if none).
  ModulePtr child(const std::string& name) const;
  int64_t num_parameters() const;  // total elements of all parameters

  // ---- state -----------------------------------------------------------------------------
  StateDict state_dict() const;
  LoadResult load_state_dict(const StateDict& sd, bool strict = true);

  // ---- modes and devices -----------------------------------------------------------------
  void train(bool on = true);  // recursive
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void to(Device device);  // recursive, in place (see the contract)
  void zero_grad();        // drops every parameter's .grad (set_to_none, as PyTorch's default)

 protected:
  // Registration: the name must be unique within this module and contain no '.'.
  // A parameter is made a leaf that requires grad. Returns the tensor (the same handle).
  Tensor register_parameter(const std::string& name, Tensor t);
  Tensor register_buffer(const std::string& name, Tensor t, DType dtype = DType::F32);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

 private:
  void add_child(const std::string& name, ModulePtr m);
  void check_new_name(const std::string& name) const;
  void collect_state(const std::string& prefix, StateDict& out) const;
  void repr_into(std::string& out, int indent) const;

  struct Buffer {
    std::string name;
    Tensor tensor;
    DType dtype;
  };
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<Buffer> buffers_;
  std::vector<std::pair<std::string, ModulePtr>> children_;
  bool training_ = true;
};

// Makes a module: make<Conv2d>(3, 64, 4, 2, 1).
template <class M, class... Args>
std::shared_ptr<M> make(Args&&... args) {
  return std::make_shared<M>(std::forward<Args>(args)...);
}

}  // namespace gantry

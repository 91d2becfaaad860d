// Module: registration, traversal, state_dict, modes and devices. See module.h.
#include "gantry/layers/module.h"

#include <map>
#include <sstream>
#include <stdexcept>

#include "gantry/core/autograd.h"

namespace gantry {

namespace {

std::string join_name(const std::string& prefix, const std::string& name) {
  if (name.empty()) return prefix;
  return prefix.empty() ? name : prefix + "." + name;
}

std::string shape_text(const Tensor& t) { return shape_str(t.shape()); }

// Re-points `dst` at the memory of `src` (same shape), keeping `dst`'s TensorImpl. Every
// holder of the handle (the layer, an optimizer) sees the move; this is what PyTorch's
// module.to() achieves by swapping param.data. Only for leaves outside autograd.
void rebind_storage(const Tensor& dst, const Tensor& src) {
  TensorImpl& d = *dst.impl();
  d.storage = src.impl()->storage;
  d.offset = src.impl()->offset;
  d.grad.reset();
}

}  // namespace

// ---- registration ---------------------------------------------------------------------------

void Module::check_new_name(const std::string& name) const {
  if (name.empty() || name.find('.') != std::string::npos)
    throw std::invalid_argument(type_name() + ": invalid member name '" + name +
                                "' (it must be non-empty and contain no '.')");
  bool taken = false;
  for (const auto& p : params_) taken |= p.first == name;
  for (const auto& b : buffers_) taken |= b.name == name;
  for (const auto& c : children_) taken |= c.first == name;
  if (taken)
    throw std::invalid_argument(type_name() + ": a parameter, buffer or child named '" + name +
                                "' is already registered");
}

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  check_new_name(name);
  if (!t.defined())
    throw std::invalid_argument(type_name() + ": parameter '" + name + "' is undefined");
  if (!t.is_leaf())
    throw std::invalid_argument(type_name() + ": parameter '" + name +
                                "' must be a leaf tensor (detach() it first)");
  t.requires_grad_(true);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t, DType dtype) {
  check_new_name(name);
  if (!t.defined())
    throw std::invalid_argument(type_name() + ": buffer '" + name + "' is undefined");
  buffers_.push_back({name, t, dtype});
  return t;
}

void Module::add_child(const std::string& name, ModulePtr m) {
  check_new_name(name);
  if (!m) throw std::invalid_argument(type_name() + ": child module '" + name + "' is null");
  children_.emplace_back(name, std::move(m));
}

// ---- traversal ------------------------------------------------------------------------------

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, m] : const_cast<Module*>(this)->named_modules())
    for (const auto& p : m->params_) out.emplace_back(join_name(name, p.first), p.second);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& p : named_parameters()) out.push_back(p.second);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, m] : const_cast<Module*>(this)->named_modules())
    for (const auto& b : m->buffers_) out.emplace_back(join_name(name, b.name), b.tensor);
  return out;
}

std::vector<std::pair<std::string, ModulePtr>> Module::named_children() const { return children_; }

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (const auto& [name, child] : children_)
    for (const auto& [sub, m] : child->named_modules()) out.emplace_back(join_name(name, sub), m);
  return out;
}

ModulePtr Module::child(const std::string& name) const {
  std::string names;
  for (const auto& c : children_) {
    if (c.first == name) return c.second;
    names += (names.empty() ? "" : ", ") + c.first;
  }
  throw std::out_of_range(type_name() + ": no child module '" + name + "' (children: " +
                          (names.empty() ? "none" : names) + ")");
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

// ---- state ----------------------------------------------------------------------------------

void Module::collect_state(const std::string& prefix, StateDict& out) const {
  // PyTorch's order: this module's parameters, then its buffers, then each child in turn.
  for (const auto& p : params_) out.push_back({join_name(prefix, p.first), p.second.detach(), DType::F32});
  for (const auto& b : buffers_) out.push_back({join_name(prefix, b.name), b.tensor.detach(), b.dtype});
  for (const auto& c : children_) c.second->collect_state(join_name(prefix, c.first), out);
}

StateDict Module::state_dict() const {
  StateDict out;
  collect_state("", out);
  return out;
}

LoadResult Module::load_state_dict(const StateDict& sd, bool strict) {
  StateDict mine = state_dict();  // handles sharing storage with the module
  std::map<std::string, const NamedTensor*> given;
  for (const auto& e : sd) given[e.name] = &e;

  LoadResult result;
  std::vector<std::string> mismatches;
  std::map<std::string, bool> known;
  for (const auto& e : mine) {
    known[e.name] = true;
    auto it = given.find(e.name);
    if (it == given.end()) {
      result.missing_keys.push_back(e.name);
    } else if (!it->second->tensor.defined()) {
      mismatches.push_back(e.name + ": checkpoint tensor is undefined");
    } else if (it->second->tensor.shape() != e.tensor.shape()) {
      mismatches.push_back(e.name + ": checkpoint has shape " + shape_text(it->second->tensor) +
                           ", the model has " + shape_text(e.tensor));
    }
  }
  for (const auto& e : sd)
    if (!known.count(e.name)) result.unexpected_keys.push_back(e.name);

  const bool key_problems = strict && (!result.missing_keys.empty() || !result.unexpected_keys.empty());
  if (key_problems || !mismatches.empty()) {
    std::ostringstream os;
    os << "load_state_dict: error(s) loading state_dict for " << type_name() << ":";
    auto list = [&](const char* what, const std::vector<std::string>& keys) {
      if (keys.empty()) return;
      os << "\n  " << what << " (" << keys.size() << "): ";
      for (std::size_t i = 0; i < keys.size(); ++i) os << (i ? ", " : "") << '"' << keys[i] << '"';
    };
    if (strict) {
      list("missing key(s)", result.missing_keys);
      list("unexpected key(s)", result.unexpected_keys);
    }
    for (const auto& m : mismatches) os << "\n  size mismatch for " << m;
    throw std::invalid_argument(os.str());
  }

  // All checks passed: only now change anything, so a failed load leaves the module intact.
  NoGradGuard no_grad;
  for (const auto& e : mine) {
    auto it = given.find(e.name);
    if (it != given.end()) Tensor(e.tensor).copy_(it->second->tensor);  // a handle: writes through
  }
  return result;
}

// ---- modes and devices ----------------------------------------------------------------------

void Module::train(bool on) {
  for (const auto& m : named_modules()) m.second->training_ = on;
}

void Module::to(Device device) {
  NoGradGuard no_grad;
  for (const auto& [name, m] : named_modules()) {
    for (const auto& p : m->params_)
      if (p.second.device() != device) rebind_storage(p.second, p.second.detach().to(device));
    for (const auto& b : m->buffers_)
      if (b.tensor.device() != device) rebind_storage(b.tensor, b.tensor.detach().to(device));
  }
}

void Module::zero_grad() {
  for (const auto& p : parameters()) p.zero_grad();
}

// ---- printing -------------------------------------------------------------------------------

void Module::repr_into(std::string& out, int indent) const {
  out += type_name() + "(" + extra_repr();
  if (!children_.empty()) {
    out += "\n";
    for (const auto& [name, child] : children_) {
      out += std::string(indent + 2, ' ') + "(" + name + "): ";
      child->repr_into(out, indent + 2);
      out += "\n";
    }
    out += std::string(indent, ' ');
  }
  out += ")";
}

std::string Module::repr() const {
  std::string out;
  repr_into(out, 0);
  return out;
}

}  // namespace gantry

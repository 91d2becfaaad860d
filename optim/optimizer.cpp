// Optimizer base: parameter checks, zero_grad, state keys and file round trips.
#include "gantry/optim/optimizer.h"

#include <set>
#include <sstream>
#include <stdexcept>

namespace gantry {

Optimizer::Optimizer(std::vector<Tensor> params, double lr, const char* name)
    : params_(std::move(params)), lr_(lr), name_(name) {
  if (params_.empty()) throw std::invalid_argument(name_ + ": got an empty parameter list");
  std::set<const TensorImpl*> seen;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    const std::string which = name_ + ": parameter " + std::to_string(i);
    if (!p.defined()) throw std::invalid_argument(which + " is undefined");
    if (!p.is_leaf())
      throw std::invalid_argument(which + " is not a leaf tensor (can't optimize a computed value)");
    if (!seen.insert(p.impl().get()).second)
      throw std::invalid_argument(which + " appears more than once in the parameter list");
  }
  set_lr(lr);
}

void Optimizer::set_lr(double lr) {
  if (!(lr >= 0.0)) throw std::invalid_argument(name_ + ": invalid learning rate " + std::to_string(lr));
  lr_ = lr;
}

void Optimizer::zero_grad() {
  for (const auto& p : params_) p.zero_grad();
}

void Optimizer::save(const std::string& path, const Metadata& metadata) const {
  Metadata m = metadata;
  m.emplace("optimizer", name_);
  save_safetensors(path, state_dict(), m);
}

void Optimizer::load(const std::string& path) {
  SafetensorsContents c = load_safetensors(path);
  auto it = c.metadata.find("optimizer");
  if (it != c.metadata.end() && it->second != name_)
    throw std::invalid_argument(name_ + ": '" + path + "' holds the state of a " + it->second +
                                " optimizer, not " + name_);
  try {
    load_state_dict(c.tensors);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(e.what()) + "\n  (while loading '" + path + "')");
  }
}

bool Optimizer::parse_state_key(const NamedTensor& e, const std::vector<std::string>& fields,
                                std::size_t* index, std::string* field,
                                std::vector<std::string>& problems) const {
  const std::string& k = e.name;
  const std::string prefix = "state.";
  const auto dot = k.find('.', prefix.size());
  if (k.compare(0, prefix.size(), prefix) != 0 || dot == std::string::npos || dot == prefix.size()) {
    problems.push_back("unexpected key \"" + k + "\" (expected state.<param index>.<field>)");
    return false;
  }
  const std::string num = k.substr(prefix.size(), dot - prefix.size());
  if (num.find_first_not_of("0123456789") != std::string::npos || num.size() > 9) {
    problems.push_back("key \"" + k + "\": \"" + num + "\" is not a parameter index");
    return false;
  }
  *index = std::stoul(num);
  *field = k.substr(dot + 1);
  if (*index >= params_.size()) {
    problems.push_back("key \"" + k + "\": parameter index " + num + " out of range (the optimizer has " +
                       std::to_string(params_.size()) + " parameters)");
    return false;
  }
  bool known = false;
  std::string list;
  for (const auto& f : fields) {
    known |= f == *field;
    list += (list.empty() ? "" : ", ") + f;
  }
  if (!known) {
    problems.push_back("key \"" + k + "\": unknown field \"" + *field + "\" (known: " + list + ")");
    return false;
  }
  if (!e.tensor.defined()) {
    problems.push_back("key \"" + k + "\" holds an undefined tensor");
    return false;
  }
  return true;
}

void Optimizer::throw_problems(const std::vector<std::string>& problems) const {
  std::ostringstream os;
  os << name_ << ".load_state_dict: " << problems.size() << " problem(s):";
  for (const auto& p : problems) os << "\n  " << p;
  throw std::invalid_argument(os.str());
}

}  // namespace gantry

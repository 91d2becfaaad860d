#include "gantry/core/autograd.h"

#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "gantry/core/ops.h"

namespace gantry {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

Tensor record(Tensor output, const char* name, std::vector<Tensor> inputs, BackwardFn backward) {
  return record(std::move(output), name, std::move(inputs), {}, std::move(backward));
}

Tensor record(Tensor output, const char* name, std::vector<Tensor> inputs,
              std::vector<Tensor> saved, BackwardFn backward) {
  if (!g_grad_enabled) return output;
  bool any = false;
  for (const Tensor& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any) return output;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  for (Tensor& t : saved)
    if (t.defined()) node->saved.emplace_back(t.detach(), t.version());
  output.impl()->grad_fn = std::move(node);
  output.impl()->requires_grad = true;
  return output;
}

namespace {

// Adds g into *slot (creating it on first use). The first gradient is taken as it is when
// nothing else holds it or its storage (as PyTorch's AccumulateGrad steals it); otherwise
// copied, so a gradient handed to two inputs, or a view of another tensor, is never aliased
// and later accumulated into twice.
void accumulate(std::shared_ptr<TensorImpl>& slot, const Tensor& g) {
  if (!slot) {
    const auto& impl = g.impl();
    const bool sole_owner = impl.use_count() == 1 && impl->storage.use_count() == 1 &&
                            impl->offset == 0 && !impl->grad_fn && !impl->requires_grad;
    slot = sole_owner ? impl : g.clone().detach().impl();
  } else {
    Tensor(slot).add_(g);
  }
}

}  // namespace

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  if (!requires_grad())
    throw std::logic_error("backward: tensor of shape " + shape_str(shape()) +
                           " does not require grad (did you detach() it or run under "
                           "NoGradGuard?)");
  Tensor seed = gradient;
  if (!seed.defined()) {
    if (numel() != 1)
      throw std::invalid_argument("backward: tensor of shape " + shape_str(shape()) +
                                  " is not a scalar; pass a gradient of the same shape");
    seed = Tensor::ones(shape(), device());
  } else if (seed.shape() != shape()) {
    throw std::invalid_argument("backward: gradient shape " + shape_str(seed.shape()) +
                                " does not match tensor shape " + shape_str(shape()));
  }

  NoGradGuard no_grad;  // the backward pass itself is not recorded
  if (is_leaf()) {
    accumulate(impl()->grad, seed);
    return;
  }

  // Reverse topological order of the nodes reachable from this tensor (iterative DFS, so a
  // deep graph cannot overflow the stack).
  // Owning pointers: releasing a node's inputs below may drop the last other owner of a node
  // still to be visited.
  std::vector<std::shared_ptr<Node>> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack{{grad_fn(), 0}};
  seen.insert(grad_fn().get());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (node->released)
      throw std::logic_error("backward: the graph through '" + node->name +
                             "' was already freed by an earlier backward; pass "
                             "retain_graph=true to the first backward to go through it twice");
    if (next < node->inputs.size()) {
      const Tensor& in = node->inputs[next++];
      if (in.defined() && in.requires_grad() && in.grad_fn() &&
          seen.insert(in.grad_fn().get()).second)
        stack.push_back({in.grad_fn(), 0});
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }

  std::unordered_map<Node*, std::shared_ptr<TensorImpl>> pending;
  // No copy of the seed: pending gradients are summed out of place, and a leaf takes one
  // over only when nothing else (here: `seed`, or the caller's `gradient`) holds it.
  pending[grad_fn().get()] = seed.impl();
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = it->get();
    auto found = pending.find(node);
    if (found == pending.end()) continue;  // no gradient reached it
    Tensor g(found->second);
    pending.erase(found);
    for (const auto& [t, version] : node->saved)
      if (t.version() != version)
        throw std::runtime_error(
            "backward through '" + node->name + "': a tensor of shape " + shape_str(t.shape()) +
            " that '" + node->name + "' saved for its backward was modified in place after it " +
            "ran (version " + std::to_string(version) + ", now " + std::to_string(t.version()) +
            "); modify a clone() of it instead, or modify it after backward()");
    std::vector<Tensor> grads = node->backward(g);
    if (grads.size() != node->inputs.size())
      throw std::logic_error("backward of '" + node->name + "' returned " +
                             std::to_string(grads.size()) + " gradients for " +
                             std::to_string(node->inputs.size()) + " inputs");
    for (size_t i = 0; i < grads.size(); ++i) {
      const Tensor& in = node->inputs[i];
      if (!grads[i].defined() || !in.defined() || !in.requires_grad()) continue;
      if (grads[i].shape() != in.shape())
        throw std::logic_error("backward of '" + node->name + "': gradient " +
                               shape_str(grads[i].shape()) + " for input " + std::to_string(i) +
                               " of shape " + shape_str(in.shape()));
      if (in.grad_fn()) {
        auto& slot = pending[in.grad_fn().get()];
        // A tensor used twice gets the sum. Out of place: a backward may hand the same
        // gradient tensor to several inputs, so it must never be modified.
        if (!slot) slot = grads[i].impl();
        else slot = (Tensor(slot) + grads[i]).impl();
      } else {
        accumulate(in.impl()->grad, grads[i]);
      }
    }
    if (!retain_graph) {
      node->released = true;
      node->backward = nullptr;  // frees the saved tensors now
      node->saved.clear();
      node->inputs.clear();      // and the activations the graph held
    }
  }
}

}  // namespace gantry

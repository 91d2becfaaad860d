#include "gantry/core/autograd.h"

#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "gantry/core/ops.h"

namespace gantry {

namespace {
thread_local bool g_grad_enabled = true;
// The running backward function's inputs that the pass needs (null: all of them).
thread_local const std::vector<bool>* g_needed_inputs = nullptr;
}

bool backward_needs_input(size_t i) {
  return !g_needed_inputs || (i < g_needed_inputs->size() && (*g_needed_inputs)[i]);
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

Tensor set_graph_backward(Tensor output, GraphBackwardFn fn) {
  if (output.defined() && output.grad_fn()) output.grad_fn()->graph_backward = std::move(fn);
  return output;
}

Tensor mark_linear_backward(Tensor output) {
  if (output.defined() && output.grad_fn()) output.grad_fn()->linear_backward = true;
  return output;
}

namespace {

// Where the gradients of a backward pass go: into the leaves' .grad (Tensor::backward), or,
// for grad(), into `results` for the requested inputs only.
struct Targets {
  bool to_leaves = true;
  std::unordered_map<const TensorImpl*, size_t> leaves;  // leaf input -> index in results
  std::unordered_map<const Node*, size_t> nodes;         // non-leaf input's node -> index
  std::vector<Tensor> results;
  bool met_freed = false;  // the walk reached a node an earlier backward freed
};

[[noreturn]] void throw_freed(const Node& node) {
  throw std::logic_error("backward: the graph through '" + node.name +
                         "' was already freed by an earlier backward; pass "
                         "retain_graph=true to the first backward to go through it twice");
}

void add_into(Tensor& slot, const Tensor& g) { slot = slot.defined() ? slot + g : g; }

// The backward pass shared by Tensor::backward and grad(): seeds the roots' nodes, walks the
// nodes that lead to a target in reverse topological order, and hands each input its gradient.
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& seeds,
                  bool retain_graph, bool create_graph, Targets& targets) {
  // The backward pass itself is recorded only for create_graph.
  NoGradGuard no_grad;
  if (create_graph) set_grad_enabled(true);

  // Reverse topological order of the nodes reachable from the roots (iterative DFS, so a deep
  // graph cannot overflow the stack). Owning pointers: releasing a node's inputs below may
  // drop the last other owner of a node still to be visited. `leads` marks the nodes from
  // which a target is reachable; only they run (all of them for Tensor::backward).
  std::vector<std::shared_ptr<Node>> order;
  std::unordered_set<Node*> seen;
  std::unordered_map<Node*, bool> leads;
  // A target node leads on only if something asked for lies behind it (its own gradient is
  // taken as it arrives). A node an earlier backward freed has no inputs left to follow: it
  // counts as leading only for Tensor::backward, where reaching it is the error.
  auto leads_on = [&](const Tensor& in) {
    if (!in.defined() || !in.requires_grad()) return false;
    if (!in.grad_fn()) return targets.to_leaves || targets.leaves.count(in.impl().get()) > 0;
    return leads[in.grad_fn().get()] || targets.nodes.count(in.grad_fn().get()) > 0;
  };
  // Each root's walk runs to its end before the next root's starts, so a root that depends on
  // another root still comes after it in the order.
  for (const Tensor& r : roots) {
    if (!r.grad_fn() || !seen.insert(r.grad_fn().get()).second) continue;
    std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack{{r.grad_fn(), 0}};
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (node->released) {
        targets.met_freed = true;
        leads[node.get()] = targets.to_leaves;
        order.push_back(node);
        stack.pop_back();
        continue;
      }
      if (next < node->inputs.size()) {
        const Tensor& in = node->inputs[next++];
        if (in.defined() && in.requires_grad() && in.grad_fn() &&
            seen.insert(in.grad_fn().get()).second)
          stack.push_back({in.grad_fn(), 0});
      } else {
        // A node leads somewhere only through an input that does: a graph whose leaf stopped
        // requiring grad after it was recorded (R1's images) is not walked for nothing.
        bool lead = false;
        for (const Tensor& in : node->inputs) lead = lead || leads_on(in);
        leads[node.get()] = lead;
        order.push_back(node);
        stack.pop_back();
      }
    }
  }

  std::unordered_map<Node*, Tensor> pending;
  // No copy of the seed: pending gradients are summed out of place, and a leaf takes one
  // over only when nothing else (here: `seeds`, or the caller's gradient) holds it.
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    if (r.grad_fn()) {
      add_into(pending[r.grad_fn().get()], seeds[i]);
    } else if (targets.to_leaves) {
      accumulate(r.impl()->grad, seeds[i]);
    } else if (auto t = targets.leaves.find(r.impl().get()); t != targets.leaves.end()) {
      add_into(targets.results[t->second], seeds[i]);
    }
  }
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = it->get();
    auto found = pending.find(node);
    if (found == pending.end()) continue;  // no gradient reached it
    Tensor g = found->second;
    pending.erase(found);
    if (auto t = targets.nodes.find(node); t != targets.nodes.end()) add_into(targets.results[t->second], g);
    if (!leads[node]) continue;  // nothing asked for lies behind it
    if (node->released) throw_freed(*node);
    for (const auto& [t, version] : node->saved)
      if (t.version() != version)
        throw std::runtime_error(
            "backward through '" + node->name + "': a tensor of shape " + shape_str(t.shape()) +
            " that '" + node->name + "' saved for its backward was modified in place after it " +
            "ran (version " + std::to_string(version) + ", now " + std::to_string(t.version()) +
            "); modify a clone() of it instead, or modify it after backward()");
    std::vector<bool> needed(node->inputs.size(), false);
    for (size_t i = 0; i < needed.size(); ++i) needed[i] = leads_on(node->inputs[i]);
    struct NeededScope {  // restores the outer value, also when a backward throws
      const std::vector<bool>* previous;
      explicit NeededScope(const std::vector<bool>* now) : previous(g_needed_inputs) { g_needed_inputs = now; }
      ~NeededScope() { g_needed_inputs = previous; }
    } scope(&needed);
    std::vector<Tensor> grads;
    if (!create_graph) {
      grads = node->backward(g);
    } else if (node->graph_backward) {
      grads = node->graph_backward(g, node->inputs);
    } else if (node->linear_backward) {
      grads = node->backward(g);
    } else {
      throw std::logic_error("grad(create_graph): the backward of '" + node->name +
                             "' cannot be differentiated again in gantry yet (docs/ops.md, "
                             "\"Double backward\", lists the ops that can)");
    }
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
        // A tensor used twice gets the sum. Out of place: a backward may hand the same
        // gradient tensor to several inputs, so it must never be modified.
        if (leads_on(in)) add_into(pending[in.grad_fn().get()], grads[i]);
      } else if (targets.to_leaves) {
        accumulate(in.impl()->grad, grads[i]);
      } else if (auto t = targets.leaves.find(in.impl().get()); t != targets.leaves.end()) {
        add_into(targets.results[t->second], grads[i]);
      }
    }
    if (!retain_graph) {
      node->released = true;
      node->backward = nullptr;  // frees the saved tensors now
      node->graph_backward = nullptr;
      node->saved.clear();
      node->inputs.clear();      // and the activations the graph held
    }
  }
}

// The seed of `t`'s backward: `gradient`, or ones for a scalar.
Tensor seed_for(const char* who, const Tensor& t, const Tensor& gradient) {
  if (!gradient.defined()) {
    if (t.numel() != 1)
      throw std::invalid_argument(std::string(who) + ": tensor of shape " + shape_str(t.shape()) +
                                  " is not a scalar; pass a gradient of the same shape");
    return Tensor::ones(t.shape(), t.device());
  }
  if (gradient.shape() != t.shape())
    throw std::invalid_argument(std::string(who) + ": gradient shape " + shape_str(gradient.shape()) +
                                " does not match tensor shape " + shape_str(t.shape()));
  return gradient;
}

// grad()'s outputs and inputs must require grad: `what` 0 of shape [..] does not, and `hint`.
void check_requires_grad(const char* what, size_t i, const Tensor& t, const char* hint) {
  if (t.defined() && t.requires_grad()) return;
  throw std::logic_error(std::string("grad: ") + what + " " + std::to_string(i) +
                         (t.defined() ? " of shape " + shape_str(t.shape()) : std::string()) +
                         " does not require grad (" + hint + ")");
}

}  // namespace

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  if (!requires_grad())
    throw std::logic_error("backward: tensor of shape " + shape_str(shape()) +
                           " does not require grad (did you detach() it or run under "
                           "NoGradGuard?)");
  Targets to_leaves;
  run_backward({*this}, {seed_for("backward", *this, gradient)}, retain_graph, false, to_leaves);
}

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs, const GradOptions& options) {
  if (outputs.empty()) throw std::invalid_argument("grad: no outputs given");
  if (!grad_outputs.empty() && grad_outputs.size() != outputs.size())
    throw std::invalid_argument("grad: " + std::to_string(grad_outputs.size()) + " grad_outputs for " +
                                std::to_string(outputs.size()) + " outputs (give one per output, or none)");
  std::vector<Tensor> seeds;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& out = outputs[i];
    check_requires_grad("output", i, out, "did you detach() it or run under NoGradGuard?");
    seeds.push_back(seed_for("grad", out, grad_outputs.empty() ? Tensor() : grad_outputs[i]));
  }
  Targets targets;
  targets.to_leaves = false;
  targets.results.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& in = inputs[i];
    check_requires_grad("input", i, in, "call requires_grad_(true) on it before the forward");
    if (in.grad_fn()) targets.nodes.emplace(in.grad_fn().get(), i);
    else targets.leaves.emplace(in.impl().get(), i);
  }
  if (targets.nodes.size() + targets.leaves.size() != inputs.size())
    throw std::invalid_argument("grad: the same tensor is given twice in inputs");
  run_backward(outputs, seeds, options.retain_graph || options.create_graph, options.create_graph, targets);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (targets.results[i].defined()) continue;
    if (!options.allow_unused)
      throw std::logic_error("grad: input " + std::to_string(i) + " of shape " + shape_str(inputs[i].shape()) +
                             " is not used by the outputs" +
                             (targets.met_freed ? std::string(", or lies behind a part of the graph an earlier backward "
                                                              "freed (pass retain_graph to that one)")
                                                : std::string()) +
                             " (set GradOptions::allow_unused to get an undefined gradient for it instead)");
  }
  return targets.results;
}

}  // namespace gantry

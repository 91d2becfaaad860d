#pragma once
// Define-by-run autograd. Every op whose inputs require grad records a Node holding its inputs
// and a backward function; Tensor::backward() walks those nodes in reverse topological order
// and accumulates gradients into the leaves' .grad.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gantry/core/tensor.h"

namespace gantry {

// Given the gradient of the op's output, returns one gradient per input (an undefined Tensor
// where an input needs none). Runs with grad mode off.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

// The same gradients built from recorded ops on the op's own inputs (not detached copies), so
// that they can be differentiated again: what grad(..., create_graph) runs. Runs with grad mode
// on; `inputs` are the node's inputs as the op received them.
using GraphBackwardFn =
    std::function<std::vector<Tensor>(const Tensor& grad_output, const std::vector<Tensor>& inputs)>;

struct Node {
  std::string name;            // the op, e.g. "conv2d" (shows in errors and graph dumps)
  std::vector<Tensor> inputs;  // what the op read; gradients flow back to these
  BackwardFn backward;
  // The tensors `backward` reads, with their storage's version when the op ran: a backward
  // that finds a version changed (an in-place write in between) throws instead of computing
  // a wrong gradient from the new values, as PyTorch does.
  std::vector<std::pair<Tensor, uint64_t>> saved;
  // For double backward (grad with create_graph): graph_backward when the op has one, or
  // `backward` itself when linear_backward says it is made of recorded ops on grad_output
  // alone (add, reshape, expand, ...). An op with neither cannot be differentiated twice.
  GraphBackwardFn graph_backward;
  bool linear_backward = false;
  // Cleared after a backward without retain_graph, so a second backward is a clear error.
  bool released = false;
};

// Grad mode is per thread, on by default. NoGradGuard turns it off for a scope.
bool grad_enabled();
void set_grad_enabled(bool on);

class NoGradGuard {
 public:
  NoGradGuard() : previous_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Attaches a Node to `output` when grad mode is on and any input requires grad; returns output.
// Save outputs needed by the backward as output.detach() inside `backward`'s captures: capturing
// the output handle itself would make a reference cycle (output -> node -> output).
// `saved`: the tensors the backward reads (captured detached), checked for in-place writes
// before it runs. The 4-argument form saves nothing (no check).
Tensor record(Tensor output, const char* name, std::vector<Tensor> inputs,
              std::vector<Tensor> saved, BackwardFn backward);
Tensor record(Tensor output, const char* name, std::vector<Tensor> inputs, BackwardFn backward);

// True when an op on these inputs would be recorded.
bool needs_grad(std::initializer_list<const Tensor*> inputs);

// Gives the node of `output` (if one was recorded) a differentiable backward; returns output.
Tensor set_graph_backward(Tensor output, GraphBackwardFn fn);
// Marks the node of `output` as one whose `backward` is linear in grad_output and built of
// recorded ops (so it is its own graph backward); returns output.
Tensor mark_linear_backward(Tensor output);

// Inside a backward function: whether the pass will use the gradient of input i. False for an
// input that leads to nothing grad() asked for (R1 asks for D's input only, so D's weight
// gradients can be skipped); true in Tensor::backward and outside any backward.
bool backward_needs_input(size_t i);

struct GradOptions {
  // Record the backward itself, so the returned gradients can be differentiated again
  // (gradient penalties: WGAN-GP, R1). Implies retain_graph.
  bool create_graph = false;
  // Keep the graph for another backward through it (PyTorch's retain_graph).
  bool retain_graph = false;
  // An input that no output depends on gets an undefined Tensor instead of an error.
  bool allow_unused = false;
};

// torch.autograd.grad: the gradients of `outputs` with respect to `inputs`, returned (one per
// input, in order) rather than accumulated into .grad, which stays untouched. `grad_outputs`
// seeds each output (empty: ones for scalar outputs, as backward()). Only the part of the graph
// between the outputs and the inputs runs. Inputs may be leaves or intermediate tensors; each
// must require grad. With create_graph, an op whose backward is not differentiable in gantry
// throws std::logic_error naming it (docs/ops.md lists those that are).
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs = {}, const GradOptions& options = {});

}  // namespace gantry

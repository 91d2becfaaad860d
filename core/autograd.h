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

struct Node {
  std::string name;            // the op, e.g. "conv2d" (shows in errors and graph dumps)
  std::vector<Tensor> inputs;  // what the op read; gradients flow back to these
  BackwardFn backward;
  // The tensors `backward` reads, with their storage's version when the op ran: a backward
  // that finds a version changed (an in-place write in between) throws instead of computing
  // a wrong gradient from the new values, as PyTorch does.
  std::vector<std::pair<Tensor, uint64_t>> saved;
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

}  // namespace gantry

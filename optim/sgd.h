#pragma once
// Stochastic gradient descent with momentum, exactly torch.optim.SGD's update:
//   g = grad + weight_decay * param
//   momentum > 0:  buf = g on the first step, else buf = momentum * buf + (1 - dampening) * g
//                  g = nesterov ? g + momentum * buf : buf
//   param -= lr * g
#include <cstdint>
#include <vector>

#include "gantry/optim/optimizer.h"

namespace gantry {

struct SGDOptions {
  double lr = 1e-2;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;  // needs momentum > 0 and dampening 0 (as PyTorch)
};

// One SGD step on n contiguous host floats. `momentum_buffer` is null when momentum is 0;
// `first` says the buffer has no history yet (it is then set to the gradient).
void sgd_update_cpu(float* param, const float* grad, float* momentum_buffer, int64_t n,
                    bool first, const SGDOptions& opt);

class SGD : public Optimizer {
 public:
  explicit SGD(std::vector<Tensor> params, SGDOptions options = {});
  void step() override;
  StateDict state_dict() const override;  // state.<i>.momentum_buffer (when momentum > 0)
  void load_state_dict(const StateDict& sd) override;
  const SGDOptions& options() const { return opt_; }

 private:
  SGDOptions opt_;
  std::vector<Tensor> momentum_buffer_;  // undefined until the first step
};

}  // namespace gantry

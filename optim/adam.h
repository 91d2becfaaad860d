#pragma once
// Adam (Kingma & Ba), exactly torch.optim.Adam's update (amsgrad=False, maximize=False):
//   g  = grad + weight_decay * param                  (L2 penalty added to the gradient)
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g * g
//   param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// with t the 1-based step count of that parameter. Hyperparameters are doubles, as Python's
// floats are; the scalar factors are formed in double and the per-element math runs in float,
// which is what PyTorch's CPU kernels do.
#include <cstdint>
#include <vector>

#include "gantry/core/torch_checkpoint.h"
#include "gantry/optim/optimizer.h"

namespace gantry {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

// One Adam step on n contiguous host floats; `step` is the 1-based count after this step.
// The single place the update math lives: a device backend (e.g. a fused multi-tensor CUDA
// kernel) replaces this function and nothing else.
void adam_update_cpu(float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                     int64_t n, int64_t step, const AdamOptions& opt);

#ifdef GANTRY_WITH_CUDA
namespace cuda {
struct AdamConfig;  // kernels/cuda/cuda_kernels.h
}
// The fused GPU kernel's settings for `step`, from o as they are (doubles: the kernel forms its
// factors as adam_update_cpu does). The one place that maps the two; Adam::step uses it.
cuda::AdamConfig adam_cuda_config(const AdamOptions& o, int64_t step);
#endif

class Adam : public Optimizer {
 public:
  explicit Adam(std::vector<Tensor> params, AdamOptions options = {});
  void step() override;
  StateDict state_dict() const override;  // state.<i>.step (I64), .exp_avg, .exp_avg_sq
  void load_state_dict(const StateDict& sd) override;

  const AdamOptions& options() const { return opt_; }
  // The step count of parameter i (0 before its first update).
  int64_t step_count(std::size_t i) const { return state_.at(i).step; }

 private:
  struct State {
    int64_t step = 0;
    Tensor exp_avg, exp_avg_sq;  // undefined until the first step
  };
  AdamOptions opt_;
  std::vector<State> state_;
};

// ---- PyTorch's form of the same state -------------------------------------------------------
// torch.optim.Adam's state_dict() is
//   {"state": {i: {"step": tensor(float), "exp_avg": ..., "exp_avg_sq": ...}, ...},
//    "param_groups": [{"lr": ..., "betas": (b1, b2), "eps": ..., "weight_decay": ...,
//                      "amsgrad": False, ..., "params": [0, 1, ..., n-1]}]}
// with i the index in the param group (model.parameters() order, which is gantry's order too).

// That object from gantry's state_dict() form ("state.<i>.<field>") of an Adam over
// `num_params` parameters, for torch.save; optimizer.load_state_dict() in PyTorch takes it.
// Throws std::invalid_argument for a state index >= num_params.
TorchValue adam_state_to_torch(const StateDict& state, std::size_t num_params, const AdamOptions& options);

struct TorchAdamState {
  AdamOptions options;         // the param group's lr, betas, eps, weight_decay
  std::size_t num_params = 0;  // parameters in the group
  StateDict state;             // gantry's form: Adam::load_state_dict takes it
  int64_t max_step = 0;        // the largest step count (0: no step taken)
};

// Whether the entries under `prefix` of a flattened torch.save file (load_torch_checkpoint's
// names, e.g. "optimizerG.param_groups.0.lr") are an optimizer's state_dict.
bool is_torch_optimizer_state(const SafetensorsContents& c, const std::string& prefix);
// Reads a torch.optim.Adam state_dict from there. A step saved as an int (PyTorch < 1.12) or as
// a tensor (since) both work. Throws std::invalid_argument naming `prefix` and saying why for
// what gantry's Adam cannot continue: more than one param group, amsgrad or maximize on, a
// state field other than step/exp_avg/exp_avg_sq, a state index outside the group.
TorchAdamState adam_state_from_torch(const SafetensorsContents& c, const std::string& prefix);

}  // namespace gantry

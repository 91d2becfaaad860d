#pragma once
// EMA: an exponential moving average of a model's weights (Polyak averaging), as the EMA
// generators of progressive GANs / StyleGAN keep: after each optimizer step of `source`,
//   ema_param = decay * ema_param + (1 - decay) * param        (every parameter)
//   ema_buffer = buffer                                          (every buffer, e.g. BN stats)
// `target` is a second model of the same architecture (same state_dict keys and shapes) that
// holds the average; it starts as an exact copy of `source`. Updates run outside autograd, in
// place, on the models' device: on the CPU tensor by tensor (mul_, add_, copy_), on a GPU in
// one launch for the whole model (cuda::ema_multi_tensor, the same roundings).
#include <string>
#include <utility>
#include <vector>

#include "gantry/core/tensor.h"
#include "gantry/layers/module.h"

namespace gantry {

class EMA {
 public:
  // Pairs source's parameters and buffers with target's by name (throws std::invalid_argument
  // naming the first mismatch) and copies source into target.
  EMA(Module& source, Module& target, double decay);
  void update();        // one averaging step (call after each optimizer step of source)
  void copy_from_source();  // target = source exactly (e.g. to restart the average)
  double decay() const { return decay_; }

 private:
  double decay_;
  std::vector<std::pair<Tensor, Tensor>> params_, buffers_;  // {source, target}
};

}  // namespace gantry

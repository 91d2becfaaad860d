#pragma once
// EMA: an exponential moving average of a model's weights (Polyak averaging), as the EMA
// generators of progressive GANs / StyleGAN keep: after each optimizer step of `source`,
//   ema_param = decay * ema_param + (1 - decay) * param        (every parameter)
//   ema_buffer = buffer                                          (every buffer, e.g. BN stats)
// `target` is a second model of the same architecture (same state_dict keys and shapes) that
// holds the average; it starts as an exact copy of `source`.
// With a ramp-up r > 0 (StyleGAN2-ADA's ema_rampup, 0.05 there) the decay of update t (t = 0, 1,
// ... updates before it) is min(decay, 0.5^(1 / (r t))): the average's half-life is r t steps
// until it reaches decay's, so early in training, when the weights move fast, the average does
// not trail far behind them. StyleGAN2-ADA writes it in images, 0.5^(batch / (r * images seen));
// with a fixed batch that is the same number. Updates run outside autograd, in
// place, on the models' device: on the CPU tensor by tensor (mul_, add_, copy_), on a GPU in
// one launch for the whole model (cuda::ema_multi_tensor, the same roundings).
#include <cstdint>
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
  EMA(Module& source, Module& target, double decay, double rampup = 0);
  void update();        // one averaging step (call after each optimizer step of source)
  void copy_from_source();  // target = source exactly (e.g. to restart the average)
  double decay() const { return decay_; }
  double rampup() const { return rampup_; }
  // The decay the next update() uses (decay() without a ramp-up).
  double current_decay() const;
  // Updates made so far; a resumed run restores the count so the ramp-up continues.
  int64_t updates() const { return updates_; }
  void set_updates(int64_t n);

 private:
  double decay_, rampup_;
  int64_t updates_ = 0;
  std::vector<std::pair<Tensor, Tensor>> params_, buffers_;  // {source, target}
};

}  // namespace gantry

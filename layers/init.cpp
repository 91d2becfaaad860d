// Initialization helpers. See init.h.
#include "gantry/layers/init.h"

#include "gantry/core/autograd.h"
#include "gantry/layers/layers.h"

namespace gantry {

namespace init {
Tensor& normal_(Tensor& t, float mean, float std, Generator* gen) {
  NoGradGuard no_grad;
  t.normal_(mean, std, gen);
  return t;
}
Tensor& uniform_(Tensor& t, float low, float high, Generator* gen) {
  NoGradGuard no_grad;
  t.uniform_(low, high, gen);
  return t;
}
Tensor& zeros_(Tensor& t) { return constant_(t, 0.f); }
Tensor& ones_(Tensor& t) { return constant_(t, 1.f); }
Tensor& constant_(Tensor& t, float value) {
  NoGradGuard no_grad;
  t.fill_(value);
  return t;
}
}  // namespace init

void dcgan_init(Module& root, Generator* gen) {
  // weights_init matches class names containing "Conv" (Conv2d and ConvTranspose2d alike) and
  // "BatchNorm"; a dynamic_cast is the typed equivalent.
  for (const auto& [name, m] : root.named_modules()) {
    if (auto* c = dynamic_cast<Conv2d*>(m)) {
      init::normal_(c->weight, 0.f, 0.02f, gen);
    } else if (auto* ct = dynamic_cast<ConvTranspose2d*>(m)) {
      init::normal_(ct->weight, 0.f, 0.02f, gen);
    } else if (auto* bn = dynamic_cast<BatchNorm2d*>(m)) {
      init::normal_(bn->weight, 1.f, 0.02f, gen);
      init::zeros_(bn->bias);
    }
  }
}

}  // namespace gantry

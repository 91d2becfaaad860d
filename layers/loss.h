#pragma once
// Loss functions as objects, like torch.nn's BCELoss & co. Each takes (input, target) of the
// same shape and returns the mean over all elements (PyTorch's default reduction='mean') as a
// scalar tensor [] that can be back-propagated. They wrap the functional ops in core/ops.h.
#include "gantry/core/ops.h"
#include "gantry/core/tensor.h"

namespace gantry {

// Binary cross-entropy on probabilities in [0, 1] (after a Sigmoid); log clamped at -100.
struct BCELoss {
  Tensor forward(const Tensor& input, const Tensor& target) const {
    return binary_cross_entropy(input, target);
  }
  Tensor operator()(const Tensor& input, const Tensor& target) const { return forward(input, target); }
};

// Binary cross-entropy on logits (a Sigmoid fused in, numerically stable).
struct BCEWithLogitsLoss {
  Tensor forward(const Tensor& input, const Tensor& target) const {
    return binary_cross_entropy_with_logits(input, target);
  }
  Tensor operator()(const Tensor& input, const Tensor& target) const { return forward(input, target); }
};

// Mean squared error.
struct MSELoss {
  Tensor forward(const Tensor& input, const Tensor& target) const { return mse_loss(input, target); }
  Tensor operator()(const Tensor& input, const Tensor& target) const { return forward(input, target); }
};

// Mean absolute error.
struct L1Loss {
  Tensor forward(const Tensor& input, const Tensor& target) const { return l1_loss(input, target); }
  Tensor operator()(const Tensor& input, const Tensor& target) const { return forward(input, target); }
};

}  // namespace gantry

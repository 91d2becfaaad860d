#pragma once
// Initialization helpers, as torch.nn.init. Each fills a tensor in place, outside autograd,
// and returns it. `gen` null = the default generator.
#include "gantry/core/random.h"
#include "gantry/core/tensor.h"

namespace gantry {

class Module;

namespace init {
Tensor& normal_(Tensor& t, float mean = 0.f, float std = 1.f, Generator* gen = nullptr);
Tensor& uniform_(Tensor& t, float low = 0.f, float high = 1.f, Generator* gen = nullptr);
Tensor& zeros_(Tensor& t);
Tensor& ones_(Tensor& t);
Tensor& constant_(Tensor& t, float value);
}  // namespace init

// The PyTorch DCGAN example's weights_init, applied to every module of the tree in
// named_modules() order: Conv2d and ConvTranspose2d weights ~ N(0, 0.02) (biases untouched);
// BatchNorm2d weight ~ N(1, 0.02), bias = 0. Other modules are left as they are.
void dcgan_init(Module& root, Generator* gen = nullptr);

}  // namespace gantry

// Built against an installed gantry: includes the umbrella header, trains one parameter.
#include <gantry/gantry.h>

#include <cstdio>

int main() {
  using namespace gantry;
  Tensor w = Tensor::zeros({1}).requires_grad_();
  for (int step = 0; step < 50; ++step) {
    w.zero_grad();
    Tensor loss = mse_loss(w, Tensor::full({1}, 3.f));
    loss.backward();
    NoGradGuard guard;
    w.add_(w.grad(), -0.1f);
  }
  // The weight through PyTorch's checkpoint format, where this gantry has it (built with libzip).
  if (torch_checkpoint_supported()) {
    save_torch_checkpoint("consumer_w.pth", {{"w", w.detach(), DType::F32}});
    if (load_tensor_file("consumer_w.pth").tensors.at(0).tensor.item() != w.item()) return 2;
  }
  std::printf("gantry %s: w = %.4f (expected 3)\n", version(), w.item());
  return std::abs(w.item() - 3.f) < 1e-3f ? 0 : 1;
}

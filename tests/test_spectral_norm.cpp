// Conv2d with spectral_norm = true, torch.nn.utils.spectral_norm's contract: PyTorch's state dict
// names and order, the power iteration finding the largest singular value, eval mode leaving u
// and v alone, and the gradient through sigma(W) by finite differences. (Against PyTorch itself:
// the hinge_sn case of tests/test_gan_losses.cpp.)
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/layers/layers.h"
#include "gradcheck.h"

using namespace gantry;

namespace {

double norm(const Tensor& t) { return std::sqrt(sum(square(t)).item()); }

}  // namespace

TEST_CASE("spectral norm: PyTorch's state dict (bias, weight_orig, weight_u, weight_v), unit u and v") {
  Generator g(3);
  Conv2d conv(3, 4, 3, 1, 1, /*bias=*/true, &g, /*spectral_norm=*/true);
  const StateDict sd = conv.state_dict();
  REQUIRE(sd.size() == 4);
  CHECK(sd[0].name == "bias");
  CHECK(sd[1].name == "weight_orig");
  CHECK(sd[2].name == "weight_u");
  CHECK(sd[3].name == "weight_v");
  CHECK(sd[1].tensor.shape() == Shape{4, 3, 3, 3});
  CHECK(sd[2].tensor.shape() == Shape{4});
  CHECK(sd[3].tensor.shape() == Shape{27});
  const auto params = conv.named_parameters();
  REQUIRE(params.size() == 2);  // u and v are buffers: not trained
  CHECK(params[0].first == "bias");
  CHECK(params[1].first == "weight_orig");
  CHECK(norm(conv.weight_u) == Approx(1.0).epsilon(1e-6));
  CHECK(norm(conv.weight_v) == Approx(1.0).epsilon(1e-6));
  CHECK(conv.repr().find("spectral_norm") != std::string::npos);
  Conv2d plain(3, 4, 3, 1, 1, false, &g);
  CHECK(plain.state_dict().size() == 1);
  CHECK(plain.state_dict()[0].name == "weight");
}

TEST_CASE("spectral norm: the power iteration finds the largest singular value; eval keeps u, v") {
  Generator g(5);
  Conv2d conv(1, 4, 2, 1, 0, false, &g, true);  // W as a matrix: [4, 4]
  {
    NoGradGuard no_grad;
    // Singular values 3, 2, 1, 0.5: a diagonal matrix with a permutation, so sigma = 3.
    std::vector<float> w(16, 0.f);
    w[0 * 4 + 2] = 2.f;
    w[1 * 4 + 0] = 3.f;
    w[2 * 4 + 3] = 0.5f;
    w[3 * 4 + 1] = 1.f;
    conv.weight.copy_(Tensor::from_vector(w, {4, 1, 2, 2}));
  }
  conv.train();
  Tensor eff;
  for (int i = 0; i < 40; ++i) eff = conv.effective_weight();  // error shrinks as (2/3)^(2i)
  const float sigma = conv.weight.data()[4] / eff.data()[4];      // the entry 3 at [1][0]
  CHECK(sigma == Approx(3.0).epsilon(1e-5));
  // u and v are the top singular vectors: e_1 and e_0 up to sign.
  CHECK(std::abs(conv.weight_u.data()[1]) == Approx(1.0).epsilon(1e-5));
  CHECK(std::abs(conv.weight_v.data()[0]) == Approx(1.0).epsilon(1e-5));

}

TEST_CASE("spectral norm: eval mode leaves u and v as they are, training advances them") {
  Generator g(6);
  Conv2d conv(2, 3, 3, 1, 1, false, &g, true);
  const std::vector<float> u = conv.weight_u.to_vector(), v = conv.weight_v.to_vector();
  const Tensor x = test::rnd({2, 2, 5, 5}, 7);
  NoGradGuard no_grad;
  conv.eval();
  const Tensor y_eval = conv.forward(x);
  CHECK(conv.weight_u.to_vector() == u);
  CHECK(conv.weight_v.to_vector() == v);
  // Eval divides by u . (W v) with the stored vectors.
  const Tensor w = conv.weight.reshape({3, 18});
  const float sigma = sum(mul(conv.weight_u, matmul(w, conv.weight_v.reshape({18, 1})).reshape({3}))).item();
  const Tensor want = conv2d(x, div(conv.weight, Tensor::full({}, sigma)), Tensor(), 1, 1);
  CHECK(sum(square(sub(y_eval, want))).item() < 1e-10 * sum(square(want)).item());
  conv.train();
  conv.forward(x);
  CHECK(conv.weight_u.to_vector() != u);  // a random start is not the top singular vector
  CHECK(conv.weight_v.to_vector() != v);
}

TEST_CASE("spectral norm: the gradient of weight_orig includes sigma(W)'s, by finite differences") {
  Generator g(8);
  Conv2d conv(2, 3, 3, 1, 1, true, &g, true);
  conv.eval();  // u and v fixed, so the loss is a function of the weights alone
  const Tensor x = test::rnd({2, 2, 4, 4}, 9);
  const Tensor w_out = test::rnd({2, 3, 4, 4}, 10);
  auto loss = [&] { return sum(mul(conv.forward(x), w_out)); };
  conv.zero_grad();
  loss().backward();
  const std::vector<float> analytic = conv.weight.grad().to_vector();
  // What W / sigma would give with sigma held constant (no gradient through it).
  const Tensor w = conv.weight.detach().reshape({3, 18});
  const float sigma = sum(mul(conv.weight_u, matmul(w, conv.weight_v.reshape({18, 1})).reshape({3}))).item();
  Tensor wl = conv.weight.detach().clone();
  wl.requires_grad_(true);
  sum(mul(conv2d(x, div(wl, Tensor::full({}, sigma)), conv.bias.detach(), 1, 1), w_out)).backward();
  const std::vector<float> constant_sigma = wl.grad().to_vector();

  NoGradGuard no_grad;
  double worst = 0, worst_constant = 0;
  // W / sigma(W) curves strongly (sigma is ~the weights' size): the central difference's error
  // falls as h^2 (7.5e-3 at h = 5e-3, 1.2e-3 at 2e-3, measured), below 1e-3 float rounding grows.
  const float h = 2e-3f;
  for (int64_t i = 0; i < conv.weight.numel(); ++i) {
    float& p = conv.weight.data()[i];
    const float keep = p;
    p = keep + h;
    const double up = loss().item();
    p = keep - h;
    const double down = loss().item();
    p = keep;
    const double numeric = (up - down) / (2.0 * h);
    worst = std::max(worst, std::abs(analytic[i] - numeric) / std::max(1.0, std::abs(numeric)));
    worst_constant = std::max(worst_constant, std::abs(constant_sigma[i] - numeric) / std::max(1.0, std::abs(numeric)));
  }
  INFO("worst " << worst << ", with sigma held constant " << worst_constant);
  CHECK(worst < 3e-3);
  CHECK(worst_constant > 10 * worst);  // the check can tell the two apart
}

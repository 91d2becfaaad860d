// grad() (torch.autograd.grad) and double backward: each op's recorded backward checked by
// finite differences of its first-order gradient (gradgradcheck_op), then the gradient
// penalties built on them (R1, WGAN-GP) through a small DCGAN-like discriminator.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/core/tensor.h"
#include "gradcheck.h"

using namespace gantry;
using gantry::test::gradgradcheck_op;
using gantry::test::rnd;

namespace {
using Inputs = std::vector<Tensor>;

// Values in [lo, hi] with random signs: away from the kinks of relu, abs, clamp, leaky_relu by
// more than a finite-difference step, so their second derivative is the 0 they have there.
Tensor away_from_zero(const Shape& s, uint64_t seed, float lo = 0.2f, float hi = 1.f) {
  Tensor mag = rnd(s, seed, lo, hi), sign = rnd(s, seed + 1000);
  for (int64_t i = 0; i < sign.numel(); ++i) mag.data()[i] *= sign.data()[i] < 0 ? -1.f : 1.f;
  return mag;
}
}  // namespace

TEST_CASE("grad returns the gradients and leaves .grad alone", "[autograd][grad]") {
  Tensor x = Tensor::from_vector({1, 2, 3}, {3}).requires_grad_();
  Tensor y = Tensor::from_vector({4, 5, 6}, {3}).requires_grad_();
  Tensor loss = sum(x * x * y);  // d/dx = 2xy, d/dy = x^2
  auto g = grad({loss}, {x, y});
  REQUIRE(g.size() == 2);
  CHECK(g[0].to_vector() == std::vector<float>{8, 20, 36});
  CHECK(g[1].to_vector() == std::vector<float>{1, 4, 9});
  CHECK_FALSE(x.grad().defined());
  CHECK_FALSE(y.grad().defined());
  CHECK_FALSE(g[0].requires_grad());  // no create_graph: plain tensors

  // Without retain_graph the graph is freed, as after backward().
  CHECK_THROWS_WITH(loss.backward(), Catch::Contains("already freed"));
}

TEST_CASE("grad: only the inputs asked for, intermediate inputs, several outputs", "[autograd][grad]") {
  Tensor x = Tensor::from_vector({1, -2}, {2}).requires_grad_();
  Tensor w = Tensor::from_vector({3, 4}, {2}).requires_grad_();
  Tensor h = x * w;               // an intermediate tensor
  Tensor a = sum(h * h), b = sum(h);  // da/dh = 2h, db/dh = 1
  GradOptions keep;
  keep.retain_graph = true;
  auto gh = grad({a, b}, {h}, {}, keep);
  CHECK(gh[0].to_vector() == std::vector<float>{7, -15});  // 2h + 1, h = (3, -8)
  auto gx = grad({a}, {x}, {}, keep);
  CHECK(gx[0].to_vector() == std::vector<float>{18, -64});  // 2 h w
  // Seeds for the outputs: 2 da + 0 db.
  auto gs = grad({a, b}, {w}, {Tensor::full({}, 2.f), Tensor::full({}, 0.f)});
  CHECK(gs[0].to_vector() == std::vector<float>{12, 64});  // 2 * 2 h x
}

TEST_CASE("grad: outputs that depend on each other, and intermediate inputs stop the walk", "[autograd][grad]") {
  Tensor x = Tensor::from_vector({1}, {1}).requires_grad_();
  GradOptions keep;
  keep.retain_graph = true;
  {
    Tensor y = x * 2.f, z = y * 3.f;  // d(y + z)/dx = 2 + 6, whichever output comes first
    CHECK(grad({sum(y), sum(z)}, {x}, {}, keep)[0].item() == 8.f);
    CHECK(grad({sum(z), sum(y)}, {x}, {}, keep)[0].item() == 8.f);
    CHECK(grad({y, z}, {x}, {Tensor::ones({1}), Tensor::ones({1})}, keep)[0].item() == 8.f);
  }
  // The gradient w.r.t. an intermediate h does not run h's own backward (cat's is not reached
  // with create_graph), and without retain_graph the graph before h is still there for a
  // backward through it.
  Tensor a = Tensor::from_vector({1, 2}, {2}).requires_grad_();
  Tensor h = cat({a, a * 3.f});
  GradOptions twice;
  twice.create_graph = true;
  Tensor gh = grad({sum(h * h)}, {h}, {}, twice)[0];  // 2h
  CHECK(gh.to_vector() == std::vector<float>{2, 4, 6, 12});
  Tensor h2 = cat({a, a});
  Tensor g2 = grad({sum(h2 * h2)}, {h2})[0];
  h2.backward(g2);  // through cat's node, which grad() left alone
  CHECK(a.grad().to_vector() == std::vector<float>{4, 8});
  // A part of the graph freed by an earlier pass is no obstacle when nothing asked for lies
  // behind it, and named when something does.
  Tensor w = Tensor::from_vector({2}, {1}).requires_grad_();
  Tensor v = Tensor::from_vector({5}, {1}).requires_grad_();
  Tensor hw = x * w;
  grad({sum(hw)}, {w});  // frees hw's node
  CHECK(grad({sum(hw * v)}, {v})[0].item() == 2.f);
  Tensor hw2 = x * w;
  grad({sum(hw2)}, {w});
  CHECK_THROWS_WITH(grad({sum(hw2 * v)}, {w}), Catch::Contains("earlier backward freed"));
  CHECK_THROWS_WITH(sum(hw2 * v).backward(), Catch::Contains("already freed"));
}

TEST_CASE("backward skips the nodes behind a leaf that stopped requiring grad (R1's images)", "[autograd]") {
  // x requires grad while the graph is recorded, then stops (as the trainer's R1 does after
  // taking the input gradient): the loss's backward must not run the ops between x and w.
  int calls = 0;
  Tensor x = rnd({4}, 89).requires_grad_(true);
  Tensor w = rnd({4}, 90).requires_grad_(true);
  Tensor probe = record(mul(x.detach(), 2.f), "probe", {x}, [&calls](const Tensor& g) {
    ++calls;
    return std::vector<Tensor>{mul(g, 2.f)};
  });
  Tensor loss = sum(mul(probe, w));
  x.requires_grad_(false);
  loss.backward();
  CHECK(calls == 0);
  CHECK(w.grad().defined());
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("grad: errors name what is wrong", "[autograd][grad]") {
  Tensor x = Tensor::from_vector({1, 2}, {2}).requires_grad_();
  Tensor unused = Tensor::from_vector({1, 2}, {2}).requires_grad_();
  Tensor plain = Tensor::from_vector({1, 2}, {2});
  GradOptions keep;
  keep.retain_graph = true;
  Tensor loss = sum(x * x);
  CHECK_THROWS_WITH(grad({loss}, {plain}, {}, keep), Catch::Contains("input 0") && Catch::Contains("does not require grad"));
  CHECK_THROWS_WITH(grad({loss}, {x, unused}, {}, keep), Catch::Contains("input 1") && Catch::Contains("not used"));
  GradOptions unused_ok = keep;
  unused_ok.allow_unused = true;
  auto g = grad({loss}, {x, unused}, {}, unused_ok);
  CHECK(g[0].defined());
  CHECK_FALSE(g[1].defined());
  CHECK_THROWS_WITH(grad({x * x}, {x}, {}, keep), Catch::Contains("not a scalar"));
  CHECK_THROWS_WITH(grad({loss}, {x, x}, {}, keep), Catch::Contains("twice"));
  CHECK_THROWS_WITH(grad({plain}, {x}), Catch::Contains("output 0") && Catch::Contains("does not require grad"));
  // An op whose backward is not differentiable (every op of ops.h is; a user's record() without
  // a graph backward is not) says which one.
  Tensor xm = Tensor::from_vector({0.2f, 0.7f}, {2}).requires_grad_();
  Tensor doubled = record(mul(xm.detach(), 2.f), "my_op", {xm}, [](const Tensor& g) {
    return std::vector<Tensor>{mul(g, 2.f)};
  });
  GradOptions twice;
  twice.create_graph = true;
  CHECK_THROWS_WITH(grad({sum(square(doubled))}, {xm}, {}, twice), Catch::Contains("'my_op'") &&
                                                                      Catch::Contains("cannot be differentiated again"));
}

TEST_CASE("grad: a backward function learns which inputs the pass needs", "[autograd][grad]") {
  Tensor a = Tensor::from_vector({1, 2}, {2}).requires_grad_();
  Tensor b = Tensor::from_vector({3, 4}, {2}).requires_grad_();
  std::vector<bool> seen;
  auto op = [&] {
    Tensor y = Tensor::from_vector({0, 0}, {2});
    return record(y, "probe", {a, b}, [&seen](const Tensor& g) {
      seen = {backward_needs_input(0), backward_needs_input(1)};
      return std::vector<Tensor>{g, g};
    });
  };
  grad({sum(op())}, {a});
  CHECK(seen == std::vector<bool>{true, false});  // conv's weight gradient is skipped this way
  grad({sum(op())}, {b});
  CHECK(seen == std::vector<bool>{false, true});
  sum(op()).backward();
  CHECK(seen == std::vector<bool>{true, true});
  CHECK(backward_needs_input(0));  // outside a backward
}

TEST_CASE("create_graph: a gradient that is differentiated again", "[autograd][grad]") {
  // y = x^3: dy/dx = 3x^2, d2y/dx2 = 6x.
  Tensor x = Tensor::from_vector({1, 2, -1}, {3}).requires_grad_();
  GradOptions twice;
  twice.create_graph = true;
  Tensor g = grad({sum(x * x * x)}, {x}, {}, twice)[0];
  CHECK(g.requires_grad());
  CHECK(g.to_vector() == std::vector<float>{3, 12, 3});
  sum(g).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{6, 12, -6});
}

TEST_CASE("double backward of the elementwise ops and reductions", "[autograd][grad]") {
  const float tol = 2e-2f;
  auto one = [](Tensor (*op)(const Tensor&)) {
    return [op](const Inputs& in) { return op(in[0]); };
  };
  CHECK(gradgradcheck_op([](const Inputs& in) { return add(in[0], in[1]); }, {rnd({2, 3}, 1), rnd({3}, 2)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return sub(in[0], in[1]); }, {rnd({2, 3}, 3), rnd({2, 1}, 4)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return mul(in[0], in[1]); }, {rnd({2, 3}, 5), rnd({3}, 6)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return div(in[0], in[1]); },
                         {rnd({2, 3}, 7), rnd({2, 3}, 8, 1.f, 2.f)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return add(mul(in[0], 3.f), 1.f); }, {rnd({4}, 9)}) < tol);
  CHECK(gradgradcheck_op(one(neg), {rnd({5}, 10)}) < tol);
  CHECK(gradgradcheck_op(one(square), {rnd({5}, 11)}) < tol);
  CHECK(gradgradcheck_op(one(gantry::sqrt), {rnd({5}, 12, 0.5f, 2.f)}) < tol);
  CHECK(gradgradcheck_op(one(gantry::exp), {rnd({5}, 13)}) < tol);
  CHECK(gradgradcheck_op(one(gantry::log), {rnd({5}, 14, 0.5f, 2.f)}) < tol);
  CHECK(gradgradcheck_op(one(gantry::tanh), {rnd({5}, 15)}) < tol);
  CHECK(gradgradcheck_op(one(sigmoid), {rnd({5}, 16, -3.f, 3.f)}) < tol);
  CHECK(gradgradcheck_op(one(gantry::abs), {away_from_zero({6}, 17)}) < tol);
  CHECK(gradgradcheck_op(one(relu), {away_from_zero({6}, 18)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return leaky_relu(in[0], 0.2f); }, {away_from_zero({6}, 19)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return clamp(in[0], -0.5f, 0.5f); },
                         {away_from_zero({8}, 20, 0.1f, 0.4f)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return sum(square(in[0])); }, {rnd({2, 3}, 21)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return mean(square(in[0])); }, {rnd({2, 3}, 22)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return sum(square(in[0]), {0, 2}, true); }, {rnd({2, 3, 2}, 23)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return mean(square(in[0]), {1}); }, {rnd({2, 3, 2}, 24)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return square(in[0]).reshape({6}).flatten(0); }, {rnd({2, 3}, 25)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return square(transpose2d(in[0])); }, {rnd({2, 3}, 26)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return square(in[0].clone()); }, {rnd({3}, 27)}) < tol);
}

TEST_CASE("double backward of matmul, linear, conv2d, conv_transpose2d", "[autograd][grad]") {
  const float tol = 2e-2f;
  CHECK(gradgradcheck_op([](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({2, 3}, 31), rnd({3, 4}, 32)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return linear(in[0], in[1], in[2]); },
                         {rnd({2, 3}, 33), rnd({4, 3}, 34), rnd({4}, 35)}) < tol);
  // The DCGAN's down-sampling conv (4x4, stride 2, padding 1), with a bias.
  CHECK(gradgradcheck_op([](const Inputs& in) { return conv2d(in[0], in[1], in[2], 2, 1); },
                         {rnd({2, 2, 6, 6}, 36), rnd({3, 2, 4, 4}, 37), rnd({3}, 38)}) < tol);
  // An odd size whose last rows the stride skips (7 -> 3 at 3x3, stride 2, no padding), non-square.
  CHECK(gradgradcheck_op([](const Inputs& in) { return conv2d(in[0], in[1], Tensor(), 2, 0); },
                         {rnd({1, 2, 7, 6}, 39), rnd({2, 2, 3, 3}, 40)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return conv_transpose2d(in[0], in[1], in[2], 2, 1); },
                         {rnd({2, 3, 3, 3}, 41), rnd({3, 2, 4, 4}, 42), rnd({2}, 43)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return conv_transpose2d(in[0], in[1], Tensor(), 2, 0, 1); },
                         {rnd({1, 2, 3, 2}, 44), rnd({2, 2, 3, 3}, 45)}) < tol);
}

TEST_CASE("double backward of group norm and instance norm (WGAN-GP's critic norms)", "[autograd][grad]") {
  const float tol = 2e-2f;
  CHECK(gradgradcheck_op([](const Inputs& in) { return group_norm(in[0], 1, in[1], in[2]); },
                         {rnd({2, 4, 2, 2}, 61), rnd({4}, 62, 0.5f, 1.5f), rnd({4}, 63)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return group_norm(in[0], 2); }, {rnd({3, 4, 3, 1}, 64)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return instance_norm(in[0], in[1], in[2]); },
                         {rnd({2, 3, 2, 3}, 65), rnd({3}, 66, 0.5f, 1.5f), rnd({3}, 67)}) < tol);
}

TEST_CASE("double backward of cat, slice, narrow0, pooling, log-softmax and the losses", "[autograd][grad]") {
  // The linear ops (cat, slice, narrow0, avg_pool2d) get a square() after them so the input
  // gradient depends on x; gradgradcheck_op also differentiates along the incoming gradient w.
  const float tol = 2e-2f;
  CHECK(gradgradcheck_op([](const Inputs& in) { return square(cat({in[0], in[1]}, 1)); },
                         {rnd({2, 3, 2}, 71), rnd({2, 1, 2}, 72)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return square(cat({in[0], mul(in[0], in[1]), in[1]}, 0)); },
                         {rnd({2, 3}, 73), rnd({2, 3}, 74)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return square(slice(in[0], 1, 1, 2)); }, {rnd({2, 4, 3}, 75)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return square(slice(in[0], 0, 0, 3)); }, {rnd({3, 2}, 76)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return square(in[0].narrow0(1, 2)); }, {rnd({4, 3}, 77)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return square(avg_pool2d(in[0], 2)); }, {rnd({2, 2, 4, 4}, 78)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return square(avg_pool2d(in[0], 3, 2)); }, {rnd({1, 2, 7, 5}, 79)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return square(global_avg_pool2d(in[0])); }, {rnd({2, 3, 3, 3}, 80)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return log_softmax(in[0]); }, {rnd({3, 4}, 81, -2.f, 2.f)}) < tol);
  const Tensor labels = Tensor::from_vector({2, 0, 3}, {3});
  CHECK(gradgradcheck_op([labels](const Inputs& in) { return cross_entropy(in[0], labels); }, {rnd({3, 4}, 82, -2.f, 2.f)}) < tol);
  const Tensor t = Tensor::from_vector({1, 0, 0.9f, 0, 1, 0.5f}, {2, 3});
  CHECK(gradgradcheck_op([t](const Inputs& in) { return binary_cross_entropy(in[0], t); }, {rnd({2, 3}, 83, 0.2f, 0.8f)}) < tol);
  CHECK(gradgradcheck_op([t](const Inputs& in) { return binary_cross_entropy_with_logits(in[0], t); }, {rnd({2, 3}, 84, -2.f, 2.f)}) < tol);
  CHECK(gradgradcheck_op([t](const Inputs& in) { return mse_loss(in[0], t); }, {rnd({2, 3}, 85)}) < tol);
}

TEST_CASE("slice and slice_backward: values, the adjoint identity, errors", "[autograd][grad]") {
  const Tensor x = Tensor::arange(24).reshape({2, 3, 4});
  CHECK(slice(x, 1, 1, 2).to_vector() == std::vector<float>{4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23});
  CHECK(slice(x, -1, 3, 1).to_vector() == std::vector<float>{3, 7, 11, 15, 19, 23});
  CHECK(slice(x, 0, 2, 0).numel() == 0);
  const Tensor g = rnd({2, 2, 4}, 86), h = rnd({2, 3, 4}, 87);
  const Tensor up = slice_backward(g, {2, 3, 4}, 1, 1);
  CHECK(up.shape() == Shape{2, 3, 4});
  CHECK(sum(mul(up, h)).item() == Approx(sum(mul(g, slice(h, 1, 1, 2))).item()));  // <S^T g, h> = <g, S h>
  CHECK(slice(up, 1, 0, 1).to_vector() == std::vector<float>(8, 0.f));
  // Empty slices: the gradient of an empty piece is zeros of the whole shape.
  Tensor xr = rnd({3, 2}, 88).requires_grad_(true);
  add(sum(slice(xr, 0, 1, 0)), sum(xr.narrow0(2, 0))).backward();
  CHECK(xr.grad().to_vector() == std::vector<float>(6, 0.f));
  CHECK(slice_backward(Tensor::zeros({3, 0}), {3, 2}, 1, 2).to_vector() == std::vector<float>(6, 0.f));
  CHECK_THROWS_WITH(slice(x, 1, 2, 2), Catch::Contains("[2, 4) along dim 1 is out of range for shape [2, 3, 4]"));
  CHECK_THROWS_WITH(slice_backward(g, {2, 3, 4}, 1, 2), Catch::Contains("does not fit in [2, 3, 4]"));
}

TEST_CASE("double backward of batch norm, training and eval", "[autograd][grad]") {
  const float tol = 2e-2f;
  Tensor rm = rnd({3}, 51, -0.2f, 0.2f), rv = rnd({3}, 52, 0.5f, 1.5f);
  // Training: the statistics depend on x, so dx does too (not only through g).
  CHECK(gradgradcheck_op([](const Inputs& in) { return batch_norm(in[0], in[1], in[2], Tensor(), Tensor(), true); },
                         {rnd({4, 3, 2, 2}, 53), rnd({3}, 54, 0.5f, 1.5f), rnd({3}, 55)}) < tol);
  CHECK(gradgradcheck_op([](const Inputs& in) { return batch_norm(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true); },
                         {rnd({5, 2}, 56)}) < tol);
  CHECK(gradgradcheck_op([rm, rv](const Inputs& in) { return batch_norm(in[0], in[1], in[2], rm, rv, false); },
                         {rnd({2, 3, 2, 2}, 57), rnd({3}, 58, 0.5f, 1.5f), rnd({3}, 59)}) < tol);
}

namespace {
// A small DCGAN-like discriminator as plain ops: conv -> act -> conv -> batch norm -> act -> conv
// (4x4 stride 2 padding 1 twice, 8x8 -> 2x2, then 2x2 -> 1x1): raw scores [N].
Tensor small_d(const Tensor& x, const std::vector<Tensor>& p, Tensor (*act)(const Tensor&)) {
  Tensor h = act(conv2d(x, p[0], Tensor(), 2, 1));
  h = act(batch_norm(conv2d(h, p[1], Tensor(), 2, 1), p[2], p[3], Tensor(), Tensor(), true));
  return conv2d(h, p[4], Tensor(), 1, 0).reshape({x.size(0)});
}

std::vector<Tensor> small_d_params() {
  std::vector<Tensor> p = {rnd({4, 2, 4, 4}, 61, -0.5f, 0.5f), rnd({6, 4, 4, 4}, 62, -0.3f, 0.3f),
                           rnd({6}, 63, 0.8f, 1.2f), rnd({6}, 64, -0.1f, 0.1f),
                           rnd({1, 6, 2, 2}, 65, -0.5f, 0.5f)};
  for (Tensor& t : p) t.requires_grad_(true);
  return p;
}

// R1 (Mescheder et al. 2018): mean over the batch of |d D(x_n) / d x_n|^2.
Tensor r1_penalty(const Tensor& x, const std::vector<Tensor>& p, Tensor (*act)(const Tensor&), bool create_graph) {
  Tensor xi = x.detach().requires_grad_(true);
  GradOptions opt;
  opt.create_graph = create_graph;
  Tensor g = grad({sum(small_d(xi, p, act))}, {xi}, {}, opt)[0];
  return mul(sum(square(g)), 1.f / static_cast<float>(x.size(0)));
}

Tensor tanh_act(const Tensor& x) { return gantry::tanh(x); }
Tensor leaky_act(const Tensor& x) { return leaky_relu(x, 0.2f); }
}  // namespace

TEST_CASE("R1 through a DCGAN-like discriminator: its gradient by finite differences", "[autograd][grad][penalty]") {
  // tanh keeps the penalty smooth, so central differences see its true gradient everywhere.
  const Tensor x = rnd({3, 2, 8, 8}, 66);
  std::vector<Tensor> p = small_d_params();
  const float r1 = r1_penalty(x, p, tanh_act, true).item();
  CHECK(r1 > 0.f);
  auto analytic = grad({r1_penalty(x, p, tanh_act, true)}, p);
  const float h = 1e-2f;
  double worst = 0;
  for (size_t j = 0; j < p.size(); ++j) {
    const std::vector<float> a = analytic[j].to_vector();
    for (int64_t i = 0; i < p[j].numel(); i += 3) {  // every third element: enough, and quick
      float& v = p[j].data()[i];
      const float keep = v;
      v = keep + h;
      const double up = r1_penalty(x, p, tanh_act, false).item();
      v = keep - h;
      const double down = r1_penalty(x, p, tanh_act, false).item();
      v = keep;
      const double numeric = (up - down) / (2.0 * h);
      worst = std::max(worst, std::abs(a[static_cast<size_t>(i)] - numeric) / std::max(1.0, std::abs(numeric)));
    }
  }
  CHECK(worst < 2e-2);
}

TEST_CASE("R1 with leaky ReLU: the penalty's gradient through batch norm's statistics", "[autograd][grad][penalty]") {
  // Leaky ReLU is positively homogeneous (act(c z) = c act(z)), which gives exact checks on
  // <d penalty / d w, w> = d/dc penalty(c w) at c = 1 without finite differences across its kink:
  // - the batch-norm weight p[2] and the last conv p[4] scale D, hence dD/dx, by c: 2 * penalty;
  // - the first two convs p[0], p[1] feed the batch norm, which removes their scale: 0 (up to
  //   eps / var, here < 1e-3). Were the batch statistics taken as constants in the double
  //   backward, p[0] and p[1] would give 2 * penalty too.
  const Tensor x = rnd({3, 2, 8, 8}, 67);
  std::vector<Tensor> p = small_d_params();
  const Tensor r1 = r1_penalty(x, p, leaky_act, true);
  GradOptions opt;
  opt.allow_unused = true;  // batch norm's bias p[3] only moves the kinks: no path to the penalty
  auto g = grad({r1}, p, {}, opt);
  CHECK_FALSE(g[3].defined());
  const double value = r1.item();
  REQUIRE(value > 0);
  for (size_t j : {size_t(0), size_t(1), size_t(2), size_t(4)}) {
    double dot = 0;
    const std::vector<float> gv = g[j].to_vector(), wv = p[j].to_vector();
    for (size_t i = 0; i < gv.size(); ++i) dot += double(gv[i]) * wv[i];
    INFO("parameter " << j << ": <grad, w> = " << dot << ", penalty " << value);
    if (j < 2) CHECK(std::abs(dot) < 2e-3 * value);
    else CHECK(dot == Approx(2 * value).epsilon(1e-3));
  }
}

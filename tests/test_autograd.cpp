#include <catch2/catch.hpp>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/core/tensor.h"
#include "gantry/optim/adam.h"

using namespace gantry;

TEST_CASE("backward through a small expression", "[autograd]") {
  Tensor x = Tensor::from_vector({1, 2, 3}, {3}).requires_grad_();
  Tensor y = sum(x * x * 3.f + x);  // dy/dx = 6x + 1
  y.backward();
  REQUIRE(x.grad().to_vector() == std::vector<float>{7, 13, 19});
  REQUIRE(x.is_leaf());
  REQUIRE_FALSE(y.is_leaf());
  REQUIRE(y.grad_fn() != nullptr);
}

TEST_CASE("gradients accumulate until zero_grad", "[autograd]") {
  Tensor w = Tensor::from_vector({2}, {1}).requires_grad_();
  sum(w * 5.f).backward();
  sum(w * 5.f).backward();
  REQUIRE(w.grad().item() == 10.f);
  w.zero_grad();
  REQUIRE_FALSE(w.grad().defined());
  sum(w * 5.f).backward();
  REQUIRE(w.grad().item() == 5.f);
}

TEST_CASE("a tensor used twice gets the sum of both paths", "[autograd]") {
  // z = a*b + a: dz/da = b + 1, through two uses of `a` (and of the shared product).
  Tensor a = Tensor::from_vector({3}, {1}).requires_grad_();
  Tensor b = Tensor::from_vector({4}, {1}).requires_grad_();
  Tensor p = a * b;
  Tensor z = sum(p + a + p);  // p used twice: dz/da = 2b + 1, dz/db = 2a
  z.backward();
  REQUIRE(a.grad().item() == 9.f);
  REQUIRE(b.grad().item() == 6.f);
}

TEST_CASE("the DCGAN pattern: D on a detached fake, then on the fake", "[autograd]") {
  Tensor g_w = Tensor::from_vector({2}, {1}).requires_grad_();  // "generator"
  Tensor d_w = Tensor::from_vector({3}, {1}).requires_grad_();  // "discriminator"
  Tensor fake = g_w * 5.f;
  // D step: the fake is detached, so only D gets a gradient.
  sum(fake.detach() * d_w).backward();
  REQUIRE(d_w.grad().item() == 10.f);
  REQUIRE_FALSE(g_w.grad().defined());
  // G step: the same fake, not detached, now reaches G.
  sum(fake * d_w).backward();
  REQUIRE(g_w.grad().item() == 15.f);
  REQUIRE(d_w.grad().item() == 20.f);
}

TEST_CASE("NoGradGuard records nothing; detach cuts the graph", "[autograd]") {
  Tensor x = Tensor::ones({2}).requires_grad_();
  {
    NoGradGuard guard;
    Tensor y = x * 2.f;
    REQUIRE_FALSE(y.requires_grad());
    REQUIRE(y.grad_fn() == nullptr);
  }
  REQUIRE(grad_enabled());
  Tensor y = x * 2.f;
  REQUIRE(y.requires_grad());
  REQUIRE_FALSE(y.detach().requires_grad());
  REQUIRE_THROWS_WITH(sum(y.detach()).backward(), Catch::Contains("does not require grad"));
}

TEST_CASE("backward errors are clear", "[autograd]") {
  Tensor x = Tensor::ones({2}).requires_grad_();
  Tensor y = x * 2.f;
  REQUIRE_THROWS_WITH(y.backward(), Catch::Contains("not a scalar"));
  REQUIRE_THROWS_WITH(y.backward(Tensor::ones({3})), Catch::Contains("[3]"));
  Tensor s = sum(y);
  s.backward();
  REQUIRE_THROWS_WITH(s.backward(), Catch::Contains("retain_graph"));
  Tensor t = sum(x * 3.f);
  t.backward(Tensor(), true);
  t.backward();
  REQUIRE(x.grad().to_vector() == std::vector<float>{8, 8});
  REQUIRE_THROWS_WITH(y.requires_grad_(false), Catch::Contains("leaf"));
}

TEST_CASE("non-scalar backward with an explicit gradient, and views", "[autograd]") {
  Tensor x = Tensor::arange(6).requires_grad_();
  Tensor y = x.reshape({2, 3}) * 2.f;
  y.backward(Tensor::full({2, 3}, 0.5f));
  REQUIRE(x.grad().to_vector() == std::vector<float>(6, 1.f));
  Tensor z = Tensor::arange(6).requires_grad_();
  sum(z.narrow0(2, 3) * 4.f).backward();
  REQUIRE(z.grad().to_vector() == std::vector<float>{0, 0, 4, 4, 4, 0});
}

TEST_CASE("a tensor saved for backward and then modified in place is an error", "[autograd][version]") {
  // The output of tanh is what its backward reads: changing it in place after the forward
  // would silently give the gradient of a different function.
  Tensor x = Tensor::from_vector({0.1f, -0.4f, 0.7f}, {3}).requires_grad_();
  Tensor y = tanh(x);
  Tensor loss = sum(y);
  const uint64_t v = y.version();
  y.mul_(2.f);
  REQUIRE(y.version() == v + 1);
  try {
    loss.backward();
    FAIL("backward through a modified saved tensor did not throw");
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("'tanh'") != std::string::npos);
    CHECK(msg.find("[3]") != std::string::npos);
    CHECK(msg.find("modified in place") != std::string::npos);
  }
  // A weight changed in place between forward and backward (here by hand; an optimizer step
  // counts the same way) is caught at the op that saved it.
  Tensor w = Tensor::from_vector({1, 2, 3, 4}, {2, 2}).requires_grad_();
  Tensor a = Tensor::from_vector({1, 0, 0, 1}, {2, 2});
  Tensor out = sum(matmul(a, w));
  w.fill_(0.f);
  CHECK_THROWS_WITH(out.backward(), Catch::Contains("'matmul'"));
}

TEST_CASE("in-place writes to tensors no backward reads are allowed", "[autograd][version]") {
  // add saves nothing (its gradient is the incoming one), so changing an input afterwards is
  // fine, as in PyTorch.
  Tensor x = Tensor::from_vector({1, 2}, {2}).requires_grad_();
  Tensor b = Tensor::from_vector({5, 5}, {2});
  Tensor y = sum(x + b);
  b.add_(Tensor::from_vector({1, 1}, {2}));
  REQUIRE_NOTHROW(y.backward());
  REQUIRE(x.grad().to_vector() == std::vector<float>{1, 1});
  // A fresh forward after the write records the new version: no error.
  Tensor w = Tensor::from_vector({2, 3}, {2}).requires_grad_();
  Tensor l1 = sum(x * w);
  l1.backward();
  w.mul_(0.5f);
  Tensor l2 = sum(x * w);
  REQUIRE_NOTHROW(l2.backward());
}

TEST_CASE("an optimizer step between two backwards of one graph is caught", "[autograd][version]") {
  Tensor w = Tensor::from_vector({1, -1}, {2}).requires_grad_();
  Tensor x = Tensor::from_vector({3, 4}, {2});
  Tensor loss = sum(x * w * w);  // mul saves w
  loss.backward(Tensor(), /*retain_graph=*/true);
  Adam opt({w}, AdamOptions{});
  opt.step();
  CHECK_THROWS_WITH(loss.backward(), Catch::Contains("modified in place"));
}

TEST_CASE("a leaf's first gradient is taken without a copy only when nothing else holds it",
          "[autograd]") {
  // add's backward hands the same gradient tensor to both inputs: each leaf must get its own
  // buffer, or the second backward's accumulation into a.grad would also change b.grad.
  Tensor a = Tensor::from_vector({1, 2}, {2}).requires_grad_();
  Tensor b = Tensor::from_vector({3, 4}, {2}).requires_grad_();
  Tensor c = Tensor::from_vector({5, 6}, {2}).requires_grad_();
  sum(add(a, b)).backward();
  REQUIRE(a.grad().data() != b.grad().data());
  sum(a * 3.f).backward();
  REQUIRE(a.grad().to_vector() == std::vector<float>{4, 4});
  REQUIRE(b.grad().to_vector() == std::vector<float>{1, 1});
  // The gradient of c * 2 is a fresh tensor nothing else holds: it becomes c.grad as it is,
  // and accumulating into it later is still right.
  sum(c * 2.f).backward();
  sum(c * 2.f).backward();
  REQUIRE(c.grad().to_vector() == std::vector<float>{4, 4});
  // A view of a tensor the graph still holds (reshape's backward) is copied, not aliased.
  Tensor d = Tensor::from_vector({1, 2, 3, 4}, {2, 2}).requires_grad_();
  Tensor e = d.reshape({4});
  Tensor g = Tensor::from_vector({1, 1, 1, 1}, {4});
  e.backward(g, /*retain_graph=*/true);
  REQUIRE(d.grad().data() != g.data());
  e.backward(g);
  REQUIRE(d.grad().to_vector() == std::vector<float>{2, 2, 2, 2});
  REQUIRE(g.to_vector() == std::vector<float>{1, 1, 1, 1});
  // The caller's gradient, passed through add unchanged, is not taken over either: changing it
  // afterwards leaves x.grad alone.
  Tensor x = Tensor::from_vector({1, 2}, {2}).requires_grad_();
  Tensor gy = Tensor::from_vector({0.5f, 2}, {2});
  (x + Tensor::from_vector({3, 3}, {2})).backward(gy);
  REQUIRE(x.grad().data() != gy.data());
  gy.fill_(9.f);
  REQUIRE(x.grad().to_vector() == std::vector<float>{0.5f, 2});
}

TEST_CASE("in-place add_ and mul_ write through, bump the version and check their input",
          "[autograd][version]") {
  Tensor t = Tensor::from_vector({1, 2, 3}, {3});
  Tensor view = t.reshape({3});
  const uint64_t v0 = t.version();
  t.add_(Tensor::from_vector({1, 1, 1}, {3}), 0.5f);
  t.mul_(2.f);
  t.add_(1.f);
  REQUIRE(view.to_vector() == std::vector<float>{4, 6, 8});
  REQUIRE(t.version() == v0 + 3);
  REQUIRE_THROWS_WITH(t.add_(Tensor::ones({2})), Catch::Contains("does not match"));
}

// Every op: forward against a naive reference on small cases, backward by finite differences
// (kernel level in double, op level through autograd in float), and argument errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "gantry/kernels/cpu/cpu_kernels.h"
#include "gradcheck.h"

using namespace gantry;
using namespace gantry::test;

namespace {

// Direct-loop convolution: the reference every fast path is held to.
std::vector<double> naive_conv2d(const std::vector<double>& x, const std::vector<double>& w,
                                 const cpu::Conv2dShape& s) {
  std::vector<double> y(s.N * s.O * s.OH() * s.OW(), 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.O; ++o)
      for (int64_t oh = 0; oh < s.OH(); ++oh)
        for (int64_t ow = 0; ow < s.OW(); ++ow) {
          double acc = 0;
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t i = 0; i < s.kh; ++i)
              for (int64_t j = 0; j < s.kw; ++j) {
                const int64_t ih = oh * s.stride - s.padding + i, iw = ow * s.stride - s.padding + j;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                acc += x[((n * s.C + c) * s.H + ih) * s.W + iw] * w[((o * s.C + c) * s.kh + i) * s.kw + j];
              }
          y[((n * s.O + o) * s.OH() + oh) * s.OW() + ow] = acc;
        }
  return y;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * double(a[i] - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace

TEST_CASE("elementwise forward, broadcasting and errors", "[ops]") {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor row = Tensor::from_vector({10, 20, 30}, {3});
  Tensor col = Tensor::from_vector({100, 200}, {2, 1});
  REQUIRE((a + row).to_vector() == std::vector<float>{11, 22, 33, 14, 25, 36});
  REQUIRE((a * col).to_vector() == std::vector<float>{100, 200, 300, 800, 1000, 1200});
  REQUIRE((a - 1.f).to_vector() == std::vector<float>{0, 1, 2, 3, 4, 5});
  REQUIRE((1.f - a).to_vector() == std::vector<float>{0, -1, -2, -3, -4, -5});
  REQUIRE((a / 2.f).to_vector() == std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3});
  REQUIRE((row / col).shape() == Shape{2, 3});
  REQUIRE(relu(Tensor::from_vector({-1, 0, 2}, {3})).to_vector() == std::vector<float>{0, 0, 2});
  REQUIRE(leaky_relu(Tensor::from_vector({-1, 2}, {2}), 0.2f).to_vector() == std::vector<float>{-0.2f, 2});
  REQUIRE(clamp(Tensor::from_vector({-3, 0.5f, 3}, {3}), -1, 1).to_vector() == std::vector<float>{-1, 0.5f, 1});
  REQUIRE(std::abs(sigmoid(Tensor::full({1}, 0.f)).item() - 0.5f) < 1e-7);
  REQUIRE(std::abs(tanh(Tensor::full({1}, 1.f)).item() - std::tanh(1.f)) < 1e-7);
  // Extreme logits stay finite.
  REQUIRE(sigmoid(Tensor::full({1}, -200.f)).item() == 0.f);
  REQUIRE(sigmoid(Tensor::full({1}, 200.f)).item() == 1.f);
  REQUIRE_THROWS_WITH(Tensor::zeros({2, 3}) + Tensor::zeros({4}),
                      Catch::Contains("add") && Catch::Contains("[2, 3]") && Catch::Contains("[4]"));
}

TEST_CASE("reductions", "[ops]") {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  REQUIRE(sum(a).item() == 21.f);
  REQUIRE(mean(a).item() == 3.5f);
  REQUIRE(sum(a).shape() == Shape{});
  REQUIRE(sum(a, {0}).to_vector() == std::vector<float>{5, 7, 9});
  REQUIRE(sum(a, {1}).to_vector() == std::vector<float>{6, 15});
  REQUIRE(sum(a, {-1}, true).shape() == Shape{2, 1});
  REQUIRE(mean(a, {0}).to_vector() == std::vector<float>{2.5f, 3.5f, 4.5f});
  Tensor b = Tensor::arange(24).reshape({2, 3, 4});
  REQUIRE(sum(b, {0, 2}).to_vector() == std::vector<float>{60, 92, 124});
  REQUIRE_THROWS_WITH(sum(a, {2}), Catch::Contains("dim 2 out of range"));
}

TEST_CASE("cat and matmul", "[ops]") {
  Tensor a = Tensor::from_vector({1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from_vector({5, 6}, {1, 2});
  REQUIRE(cat({a, b}, 0).to_vector() == std::vector<float>{1, 2, 3, 4, 5, 6});
  REQUIRE(cat({a, a}, 1).to_vector() == std::vector<float>{1, 2, 1, 2, 3, 4, 3, 4});
  REQUIRE_THROWS_WITH(cat({a, b}, 1), Catch::Contains("tensor 1 has shape [1, 2]"));
  Tensor m = matmul(a, Tensor::from_vector({1, 0, 1, 1, 1, 0}, {2, 3}));
  REQUIRE(m.to_vector() == std::vector<float>{3, 2, 1, 7, 4, 3});
  REQUIRE(transpose2d(a).to_vector() == std::vector<float>{1, 3, 2, 4});
  REQUIRE_THROWS_WITH(matmul(a, b), Catch::Contains("[2, 2] x [1, 2]"));
  Tensor y = linear(Tensor::from_vector({1, 2}, {1, 2}), Tensor::from_vector({1, 1, 2, -1}, {2, 2}),
                    Tensor::from_vector({10, 20}, {2}));
  REQUIRE(y.to_vector() == std::vector<float>{13, 20});
}

TEST_CASE("conv2d forward matches direct loops", "[ops][conv]") {
  for (auto [stride, padding, k] : {std::tuple{1, 0, 3}, {2, 1, 4}, {1, 1, 3}, {3, 2, 2}}) {
    cpu::Conv2dShape s{2, 3, 7, 6, 4, k, k, stride, padding};
    Tensor x = rnd({2, 3, 7, 6}, 1), w = rnd({4, 3, k, k}, 2), b = rnd({4}, 3);
    Tensor y = conv2d(x, w, b, stride, padding);
    REQUIRE(y.shape() == Shape{2, 4, s.OH(), s.OW()});
    std::vector<float> xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector();
    std::vector<double> ref = naive_conv2d({xv.begin(), xv.end()}, {wv.begin(), wv.end()}, s);
    std::vector<float> yv = y.to_vector();
    const int64_t P = s.OH() * s.OW();
    for (size_t i = 0; i < ref.size(); ++i)
      REQUIRE(std::abs(yv[i] - (ref[i] + bv[(i / P) % 4])) < 1e-5);
  }
}

TEST_CASE("conv_transpose2d is the adjoint of conv2d", "[ops][conv]") {
  // <convT(x), y> == <x, conv(y)> for the same weight: the defining property.
  for (auto [stride, padding, outpad] : {std::tuple{2, 1, 0}, {1, 0, 0}, {2, 1, 1}, {3, 0, 2}}) {
    Tensor x = rnd({2, 5, 4, 3}, 11), w = rnd({5, 3, 4, 4}, 12);
    Tensor y = conv_transpose2d(x, w, Tensor(), stride, padding, outpad);
    REQUIRE(y.shape()[2] == (4 - 1) * stride - 2 * padding + 4 + outpad);
    Tensor r = rnd(y.shape(), 13);
    Tensor back = conv2d(r, w, Tensor(), stride, padding);
    REQUIRE(back.shape() == x.shape());
    const double lhs = sum(mul(y, r)).item(), rhs = sum(mul(x, back)).item();
    REQUIRE(std::abs(lhs - rhs) < 1e-3 * std::max(1.0, std::abs(lhs)));
  }
  // And a hand-checkable case: 1x1 input, stride 1, 2x2 kernel -> the kernel itself, scaled.
  Tensor one = Tensor::full({1, 1, 1, 1}, 2.f);
  Tensor k = Tensor::from_vector({1, 2, 3, 4}, {1, 1, 2, 2});
  REQUIRE(conv_transpose2d(one, k).to_vector() == std::vector<float>{2, 4, 6, 8});
  REQUIRE(conv_transpose2d(one, k, Tensor::full({1}, 1.f)).to_vector() == std::vector<float>{3, 5, 7, 9});
}

TEST_CASE("conv kernels: finite-difference gradients in double", "[ops][conv][gradcheck]") {
  cpu::Conv2dShape s{2, 3, 5, 6, 2, 3, 3, 2, 1};
  std::vector<double> x = random_doubles(2 * 3 * 5 * 6, 1), w = random_doubles(2 * 3 * 9, 2);
  std::vector<double> b = random_doubles(2, 3);
  const size_t ny = s.N * s.O * s.OH() * s.OW();
  std::vector<double> r = random_doubles(ny, 4), y(ny);
  auto loss = [&] {
    cpu::conv2d_forward<double>(x.data(), w.data(), b.data(), y.data(), s);
    return dot(y, r);
  };
  std::vector<double> dx(x.size()), dw(w.size()), db(2);
  cpu::conv2d_backward_input<double>(r.data(), w.data(), dx.data(), s);
  cpu::conv2d_backward_weight<double>(x.data(), r.data(), dw.data(), db.data(), s);
  CHECK(max_rel_err(dx, numeric_grad(x, loss)) < 1e-7);
  CHECK(max_rel_err(dw, numeric_grad(w, loss)) < 1e-7);
  CHECK(max_rel_err(db, numeric_grad(b, loss)) < 1e-7);
}

TEST_CASE("batch-norm kernels: statistics and finite-difference gradients in double", "[ops][bn][gradcheck]") {
  const int64_t N = 3, C = 2, S = 5;
  std::vector<double> x = random_doubles(N * C * S, 5, -2, 2), gamma = random_doubles(C, 6);
  std::vector<double> beta = random_doubles(C, 7), r = random_doubles(N * C * S, 8);
  std::vector<double> y(x.size()), mean(C), invstd(C), var_u(C);
  auto loss = [&] {
    cpu::batch_norm_forward_train<double>(x.data(), gamma.data(), beta.data(), y.data(), mean.data(),
                                          invstd.data(), var_u.data(), N, C, S, 1e-5);
    return dot(y, r);
  };
  loss();
  // Per-channel mean of the output is beta; variance is gamma^2 (up to eps).
  for (int64_t c = 0; c < C; ++c) {
    double m = 0, v = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < S; ++i) m += y[(n * C + c) * S + i];
    m /= N * S;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < S; ++i) v += std::pow(y[(n * C + c) * S + i] - m, 2);
    v /= N * S;
    CHECK(std::abs(m - beta[c]) < 1e-12);
    CHECK(std::abs(v - gamma[c] * gamma[c]) < 1e-4);
  }
  std::vector<double> dx(x.size()), dg(C), dbeta(C);
  cpu::batch_norm_backward_train<double>(x.data(), r.data(), gamma.data(), mean.data(), invstd.data(),
                                         dx.data(), dg.data(), dbeta.data(), N, C, S);
  CHECK(max_rel_err(dx, numeric_grad(x, loss)) < 1e-6);
  CHECK(max_rel_err(dg, numeric_grad(gamma, loss)) < 1e-7);
  CHECK(max_rel_err(dbeta, numeric_grad(beta, loss)) < 1e-7);
}

TEST_CASE("loss kernels: values and finite-difference gradients in double", "[ops][loss][gradcheck]") {
  std::vector<double> p = random_doubles(7, 9, 0.05, 0.95), t = random_doubles(7, 10, 0, 1);
  std::vector<double> logits = random_doubles(7, 11, -4, 4);
  auto bce = [&] { return cpu::bce_forward<double>(p.data(), t.data(), 7); };
  auto bcel = [&] { return cpu::bce_logits_forward<double>(logits.data(), t.data(), 7); };
  std::vector<double> dp(7), dl(7);
  cpu::bce_backward<double>(p.data(), t.data(), 1.0, dp.data(), 7);
  cpu::bce_logits_backward<double>(logits.data(), t.data(), 1.0, dl.data(), 7);
  CHECK(max_rel_err(dp, numeric_grad(p, bce)) < 1e-7);
  CHECK(max_rel_err(dl, numeric_grad(logits, bcel)) < 1e-7);
  // Hand-checked values: BCE(0.5, 1) = log 2; clamping keeps p = 0 finite (100 per element).
  Tensor half = Tensor::full({1}, 0.5f), one = Tensor::full({1}, 1.f), zero = Tensor::zeros({1});
  CHECK(std::abs(binary_cross_entropy(half, one).item() - std::log(2.f)) < 1e-6);
  CHECK(binary_cross_entropy(zero, one).item() == Approx(100.f));
  CHECK(std::abs(binary_cross_entropy_with_logits(zero, one).item() - std::log(2.f)) < 1e-6);
  // Stable at extreme logits: log(1 + e^-1000) is 0, not inf.
  CHECK(binary_cross_entropy_with_logits(Tensor::full({1}, 1000.f), one).item() == 0.f);
  CHECK(binary_cross_entropy_with_logits(Tensor::full({1}, -1000.f), one).item() == Approx(1000.f));
  REQUIRE_THROWS_WITH(binary_cross_entropy(Tensor::full({1}, 1.5f), one), Catch::Contains("[0, 1]"));
  REQUIRE_THROWS_WITH(binary_cross_entropy(half, Tensor::ones({2})), Catch::Contains("same shape"));
  CHECK(mse_loss(Tensor::from_vector({1, 3}, {2}), Tensor::from_vector({0, 0}, {2})).item() == 5.f);
  CHECK(l1_loss(Tensor::from_vector({1, -3}, {2}), Tensor::from_vector({0, 0}, {2})).item() == 2.f);
}

TEST_CASE("elementwise kernels: finite-difference gradients in double", "[ops][gradcheck]") {
  using cpu::Unary;
  for (Unary op : {Unary::Neg, Unary::Square, Unary::Sqrt, Unary::Exp, Unary::Log, Unary::Abs,
                   Unary::Relu, Unary::Tanh, Unary::Sigmoid}) {
    std::vector<double> x = random_doubles(9, 20, 0.1, 2);  // positive: sqrt/log defined
    for (size_t i = 0; i < x.size(); i += 2) x[i] = -x[i] * (op == Unary::Sqrt || op == Unary::Log ? -1 : 1);
    std::vector<double> r = random_doubles(9, 21), y(9), dx(9);
    auto loss = [&] {
      cpu::unary_forward<double>(op, x.data(), y.data(), 9);
      return dot(y, r);
    };
    loss();
    cpu::unary_backward<double>(op, x.data(), y.data(), r.data(), dx.data(), 9);
    INFO("unary op " << static_cast<int>(op));
    CHECK(max_rel_err(dx, numeric_grad(x, loss)) < 1e-7);
  }
  std::vector<double> x = random_doubles(9, 22), r = random_doubles(9, 23), y(9), dx(9);
  auto loss = [&] {
    cpu::leaky_relu_forward<double>(x.data(), y.data(), 9, 0.2);
    return dot(y, r);
  };
  cpu::leaky_relu_backward<double>(x.data(), r.data(), dx.data(), 9, 0.2);
  CHECK(max_rel_err(dx, numeric_grad(x, loss)) < 1e-7);
}

TEST_CASE("op gradients through autograd (float, finite differences)", "[ops][gradcheck]") {
  using V = std::vector<Tensor>;
  const double tol = 2e-2;  // float central differences with h = 1e-2
  CHECK(gradcheck_op([](const V& v) { return v[0] + v[1]; }, {rnd({2, 3}, 1), rnd({3}, 2)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return v[0] - v[1]; }, {rnd({2, 1}, 1), rnd({1, 3}, 2)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return v[0] * v[1]; }, {rnd({2, 3}, 3), rnd({2, 1}, 4)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return v[0] / v[1]; }, {rnd({2, 3}, 5), rnd({3}, 6, 1, 2)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return relu(v[0]) + leaky_relu(v[0], 0.2f); }, {rnd({7}, 7)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return tanh(v[0]) * sigmoid(v[0]); }, {rnd({7}, 8)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return exp(v[0]) + log(v[1]) + sqrt(v[1]); }, {rnd({5}, 9), rnd({5}, 10, 1, 2)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return sum(v[0], {0, 2}) ; }, {rnd({2, 3, 4}, 11)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return mean(v[0], {1}, true) * v[0]; }, {rnd({3, 4}, 12)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return cat({v[0], v[1]}, 1); }, {rnd({2, 2, 3}, 13), rnd({2, 1, 3}, 14)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return matmul(v[0], v[1]); }, {rnd({3, 4}, 15), rnd({4, 2}, 16)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return linear(v[0], v[1], v[2]); }, {rnd({3, 4}, 17), rnd({2, 4}, 18), rnd({2}, 19)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return transpose2d(v[0]).flatten(0); }, {rnd({3, 4}, 20)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return conv2d(v[0], v[1], v[2], 2, 1); },
                     {rnd({2, 3, 5, 5}, 21), rnd({4, 3, 3, 3}, 22), rnd({4}, 23)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return conv_transpose2d(v[0], v[1], v[2], 2, 1, 1); },
                     {rnd({2, 3, 3, 3}, 24), rnd({3, 2, 4, 4}, 25), rnd({2}, 26)}) < tol);
  CHECK(gradcheck_op([](const V& v) {
          return batch_norm(v[0], v[1], v[2], Tensor(), Tensor(), true);
        }, {rnd({4, 3, 2, 2}, 27, -2, 2), rnd({3}, 28), rnd({3}, 29)}) < tol);
  Tensor rm = rnd({3}, 30), rv = rnd({3}, 31, 0.5f, 1.5f);
  CHECK(gradcheck_op([&](const V& v) {
          return batch_norm(v[0], v[1], v[2], rm, rv, false);
        }, {rnd({4, 3, 2, 2}, 32), rnd({3}, 33), rnd({3}, 34)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return binary_cross_entropy(sigmoid(v[0]), Tensor::full({6}, 0.7f)); },
                     {rnd({6}, 35)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return binary_cross_entropy_with_logits(v[0], Tensor::full({6}, 0.3f)); },
                     {rnd({6}, 36, -3, 3)}) < tol);
  CHECK(gradcheck_op([](const V& v) { return mse_loss(v[0], v[1]); }, {rnd({5}, 37), rnd({5}, 38)}) < tol);
}

TEST_CASE("batch_norm running statistics follow PyTorch", "[ops][bn]") {
  // x over one channel: values 1..4 -> batch mean 2.5, biased var 1.25, unbiased 5/3.
  Tensor x = Tensor::from_vector({1, 2, 3, 4}, {4, 1, 1, 1});
  Tensor rm = Tensor::zeros({1}), rv = Tensor::ones({1});
  Tensor y = batch_norm(x, Tensor(), Tensor(), rm, rv, true, 0.1f, 1e-5f);
  CHECK(rm.item() == Approx(0.25f));
  CHECK(rv.item() == Approx(0.9f + 0.1f * 5.f / 3.f));
  CHECK(y.at({0, 0, 0, 0}) == Approx(-1.5f / std::sqrt(1.25f + 1e-5f)));
  Tensor ye = batch_norm(x, Tensor(), Tensor(), rm, rv, false);
  CHECK(ye.at({3, 0, 0, 0}) == Approx((4.f - 0.25f) / std::sqrt(rv.item() + 1e-5f)));
  REQUIRE_THROWS_WITH(batch_norm(x, Tensor::ones({2}), Tensor(), rm, rv, true),
                      Catch::Contains("[2]") && Catch::Contains("[1]"));
}

TEST_CASE("conv argument errors name the shapes and the fix", "[ops][conv]") {
  Tensor x = Tensor::zeros({1, 3, 8, 8});
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros({4, 1, 3, 3})),
                      Catch::Contains("input has 3 channels but weight expects 1") &&
                          Catch::Contains("[4, 1, 3, 3]"));
  REQUIRE_THROWS_WITH(conv2d(Tensor::zeros({3, 8, 8}), Tensor::zeros({4, 3, 3, 3})),
                      Catch::Contains("[N, C, H, W]"));
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros({4, 3, 3, 3}), Tensor::zeros({5})), Catch::Contains("[4]"));
  REQUIRE_THROWS_WITH(conv_transpose2d(x, Tensor::zeros({3, 2, 4, 4}), Tensor(), 2, 1, 2),
                      Catch::Contains("output_padding"));
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros({4, 3, 11, 11})), Catch::Contains("larger"));
}

TEST_CASE("float conv paths agree with the double kernels at a DCGAN shape", "[ops][conv]") {
  // Discriminator layer 2 of the 64x64 model at batch 2: [2, 64, 32, 32] -> [2, 128, 16, 16].
  Tensor x = rnd({2, 64, 32, 32}, 40), w = rnd({128, 64, 4, 4}, 41, -0.05f, 0.05f);
  Tensor y = conv2d(x, w, Tensor(), 2, 1);
  cpu::Conv2dShape s{2, 64, 32, 32, 128, 4, 4, 2, 1};
  std::vector<float> xv = x.to_vector(), wv = w.to_vector();
  std::vector<double> xd(xv.begin(), xv.end()), wd(wv.begin(), wv.end()), yd(y.numel());
  cpu::conv2d_forward<double>(xd.data(), wd.data(), nullptr, yd.data(), s);
  CHECK(rel_l2(y.to_vector(), std::vector<float>(yd.begin(), yd.end())) < 1e-6);
}

TEST_CASE("dropout: inverted scaling, seeded, gradient through the same mask", "[ops]") {
  Generator g(3);
  Tensor x = Tensor::full({10000}, 2.f).requires_grad_();
  Tensor y = dropout(x, 0.25f, /*training=*/true, &g);
  std::vector<float> yv = y.to_vector();
  int64_t zeros = 0;
  for (float v : yv) {
    REQUIRE((v == 0.f || std::abs(v - 2.f / 0.75f) < 1e-6f));
    zeros += v == 0.f;
  }
  CHECK(std::abs(zeros / 10000.0 - 0.25) < 0.02);
  sum(y).backward();
  std::vector<float> gv = x.grad().to_vector();
  for (size_t i = 0; i < gv.size(); ++i) REQUIRE(gv[i] == (yv[i] == 0.f ? 0.f : 1.f / 0.75f));
  Generator g2(3);
  REQUIRE(dropout(x.detach(), 0.25f, true, &g2).to_vector() == yv);  // same seed, same mask
  REQUIRE(dropout(x, 0.25f, /*training=*/false).same(x));
  REQUIRE_THROWS_WITH(dropout(x, 1.f, true), Catch::Contains("[0, 1)"));
}

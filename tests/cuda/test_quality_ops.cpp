// GPU parity of the ops added for issue 8 (avg_pool2d, log_softmax, cross_entropy,
// spatial_gather, affine_warp) against the CPU reference kernels on random inputs, and the double backward
// of those and of cat, slice, narrow0 and the BCE losses on CUDA tensors against the CPU's.
#include <catch2/catch.hpp>

#ifdef GANTRY_WITH_CUDA
#include <vector>

#include <functional>

#include "cuda/cuda_test_util.h"
#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/core/tensor.h"

using namespace gantry;
using test::DevBuf;
using test::rel_error;

// Puts the index width back to the automatic choice at scope exit.
struct WideIndexReset {
  ~WideIndexReset() { cuda::set_force_wide_indices(false); }
};

TEST_CASE("avg_pool2d forward/backward match the CPU", "[cuda][pool]") {
  WideIndexReset reset;  // both index widths (32 bits fit here; forcing 64 runs the other instance)
  for (bool wide : {false, true})
  for (int k : {2, 3, 8})
    for (int s : {1, 2, 8}) {
      cuda::set_force_wide_indices(wide);
      const int64_t NC = 37, H = 8, W = 8, OH = (H - k) / s + 1, OW = (W - k) / s + 1;
      INFO("k " << k << " s " << s << " wide " << wide);
      std::vector<float> x = test::randn(NC * H * W, 1), dy = test::randn(NC * OH * OW, 2);
      std::vector<float> y(NC * OH * OW), dx(NC * H * W);
      cpu::avg_pool2d_forward<float>(x.data(), y.data(), NC, H, W, k, s);
      cpu::avg_pool2d_backward<float>(dy.data(), dx.data(), NC, H, W, k, s);
      DevBuf dxv(x), ddy(dy), dyo(NC * OH * OW), ddx(NC * H * W);
      cuda::avg_pool2d_forward(dxv.p, dyo.p, NC, H, W, k, s);
      cuda::avg_pool2d_backward(ddy.p, ddx.p, NC, H, W, k, s);
      CHECK(rel_error(dyo.download(), y) < 1e-5);
      CHECK(rel_error(ddx.download(), dx) < 1e-5);
    }
}

TEST_CASE("log_softmax and cross_entropy match the CPU", "[cuda][softmax]") {
  const int64_t M = 1000, C = 10;
  std::vector<float> x = test::randn(M * C, 3, 3.f), dy = test::randn(M * C, 4), labels(M);
  for (int64_t i = 0; i < M; ++i) labels[i] = static_cast<float>((i * 7) % C);
  std::vector<float> y(M * C), dx(M * C);
  cpu::log_softmax_forward<float>(x.data(), y.data(), M, C);
  cpu::log_softmax_backward<float>(y.data(), dy.data(), dx.data(), M, C);
  DevBuf dxv(x), ddy(dy), dyo(M * C), ddx(M * C), dl(labels), loss(1), g(std::vector<float>{0.5f});
  cuda::log_softmax_forward(dxv.p, dyo.p, M, C);
  CHECK(rel_error(dyo.download(), y) < 1e-5);
  cuda::log_softmax_backward(dyo.p, ddy.p, ddx.p, M, C);
  CHECK(rel_error(ddx.download(), dx) < 1e-5);
  const float ce = cpu::cross_entropy_forward<float>(x.data(), labels.data(), M, C);
  cuda::cross_entropy_forward(dxv.p, dl.p, loss.p, M, C);
  CHECK(rel_error(loss.download(), std::vector<float>{ce}) < 1e-5);
  cpu::cross_entropy_backward<float>(x.data(), labels.data(), 0.5f, dx.data(), M, C);
  cuda::cross_entropy_backward(dxv.p, dl.p, g.p, ddx.p, M, C);
  CHECK(rel_error(ddx.download(), dx) < 1e-5);
}

TEST_CASE("spatial_gather forward/backward match the CPU", "[cuda][gather]") {
  WideIndexReset reset;
  for (bool wide : {false, true}) {
  cuda::set_force_wide_indices(wide);
  INFO("wide " << wide);
  const int64_t N = 5, C = 3, P = 64;
  std::vector<float> x = test::randn(N * C * P, 5), dy = test::randn(N * C * P, 6), idx(N * P);
  for (int64_t n = 0; n < N; ++n)  // a permutation with holes, per sample
    for (int64_t p = 0; p < P; ++p) idx[n * P + p] = (p + n) % 7 == 0 ? -1.f : static_cast<float>((p * 5 + n) % P);
  std::vector<float> y(N * C * P), dx(N * C * P);
  cpu::spatial_gather_forward<float>(x.data(), idx.data(), y.data(), N, C, P, P);
  cpu::spatial_gather_backward<float>(dy.data(), idx.data(), dx.data(), N, C, P, P);
  DevBuf dxv(x), ddy(dy), di(idx), dyo(N * C * P), ddx(N * C * P);
  cuda::spatial_gather_forward(dxv.p, di.p, dyo.p, N, C, P, P);
  cuda::spatial_gather_backward(ddy.p, di.p, ddx.p, N, C, P, P);
  CHECK(rel_error(dyo.download(), y) < 1e-6);
  CHECK(rel_error(ddx.download(), dx) < 1e-6);
  }
}
TEST_CASE("affine_warp forward matches the CPU bit for bit, its adjoint to rounding", "[cuda][warp]") {
  // A non-square odd size, and the 64x64 RGB images of the DCGAN; per sample an identity, a
  // quarter turn, a whole-pixel shift (one tap each) and random rotations/scalings/shifts
  // that reach past the borders (reflection: several outputs add into one input).
  for (const Shape& s : {Shape{7, 2, 5, 7}, Shape{16, 3, 64, 64}}) {
    const int64_t N = s[0], C = s[1], H = s[2], W = s[3], n_el = N * C * H * W;
    INFO("shape " << shape_str(s));
    std::vector<float> theta = test::randn(N * 6, 21, 0.6f);
    const float fixed[3][6] = {{1, 0, 0, 0, 1, 0}, {0, -1, 0, 1, 0, 0}, {1, 0, 2, 0, 1, -3}};
    for (int k = 0; k < 3; ++k)
      for (int e = 0; e < 6; ++e) theta[k * 6 + e] = fixed[k][e];
    for (int64_t n = 3; n < N; ++n) theta[n * 6 + 0] += 1.f, theta[n * 6 + 4] += 1.f, theta[n * 6 + 2] *= 4.f;
    std::vector<float> x = test::randn(n_el, 22), dy = test::randn(n_el, 23), y(n_el), dx(n_el);
    cpu::affine_warp_forward<float>(x.data(), theta.data(), y.data(), N, C, H, W);
    cpu::affine_warp_backward<float>(dy.data(), theta.data(), dx.data(), N, C, H, W);
    DevBuf dxv(x), dth(theta), ddy(dy), dyo(n_el), ddx(n_el);
    cuda::affine_warp_forward(dxv.p, dth.p, dyo.p, N, C, H, W);
    cuda::affine_warp_backward(ddy.p, dth.p, ddx.p, N, C, H, W);
    CHECK(dyo.download() == y);
    CHECK(rel_error(ddx.download(), dx) < 1e-6);
  }
}

TEST_CASE("double backward of cat, slice, narrow0, pooling, softmax, gather, warp and the losses on CUDA tensors matches the CPU",
          "[cuda][grad]") {
  // For each op f: g = dL/dx of L = sum(f(x) w) with create_graph, then |g|^2 backpropagated:
  // g, and x's and w's gradients of |g|^2, on either device from the same values.
  using Op = std::function<Tensor(const Tensor&)>;
  const Tensor labels = Tensor::from_vector({2, 0, 3, 1, 1, 4}, {6});
  const Tensor target = Tensor::from_vector(test::rand_uniform(6 * 5, 9, 0.f, 1.f), {6, 5});
  std::vector<float> idx(6 * 16);
  for (int64_t i = 0; i < 6 * 16; ++i) idx[i] = i % 5 == 0 ? -1.f : static_cast<float>((i * 7) % 5);  // repeats: the scatter adds
  const Tensor index = Tensor::from_vector(idx, {6, 16});
  const Tensor theta = Tensor::from_vector({0.8f, -0.5f, 0.7f, 0.6f, 0.9f, -1.3f, 1.3f, 0.f, 2.2f, 0.f, 0.77f, 0.f}, {2, 2, 3});
  struct Case { const char* name; Shape shape; Op f; float lo, hi; };
  const std::vector<Case> cases = {
      {"cat", {6, 5}, [](const Tensor& x) { return square(cat({x, mul(x, x), x}, 1)); }, -1, 1},
      {"slice", {6, 5}, [](const Tensor& x) { return square(slice(x, 1, 1, 3)); }, -1, 1},
      {"narrow0", {6, 5}, [](const Tensor& x) { return square(x.narrow0(2, 3)); }, -1, 1},
      {"avg_pool2d", {6, 5}, [](const Tensor& x) { return square(avg_pool2d(x.reshape({1, 2, 3, 5}), 2, 1)); }, -1, 1},
      {"log_softmax", {6, 5}, [](const Tensor& x) { return log_softmax(x); }, -2, 2},
      {"cross_entropy", {6, 5}, [labels](const Tensor& x) { return cross_entropy(x, labels.to(x.device())); }, -2, 2},
      {"binary_cross_entropy", {6, 5}, [target](const Tensor& x) { return binary_cross_entropy(x, target.to(x.device())); }, 0.2f, 0.8f},
      {"binary_cross_entropy_with_logits", {6, 5}, [target](const Tensor& x) { return binary_cross_entropy_with_logits(x, target.to(x.device())); }, -2, 2},
      {"spatial_gather", {6, 5}, [index](const Tensor& x) {
         return square(spatial_gather(x.reshape({6, 1, 1, 5}), index.to(x.device()), 4, 4)); }, -1, 1},
      {"affine_warp", {6, 5}, [theta](const Tensor& x) {
         return square(affine_warp(x.reshape({2, 1, 3, 5}), theta.to(x.device()))); }, -1, 1},
  };
  {  // GPU labels are not checked by the forward (no copy to the host); the double backward,
     // which copies them, names a bad one instead of writing outside its one-hot rows.
    Tensor x = Tensor::from_vector(test::randn(6 * 5, 13), {6, 5}).to(Device::cuda(0)).requires_grad_(true);
    const Tensor bad = Tensor::from_vector({2, 0, 7, 1, 1, 4}, {6}).to(Device::cuda(0));
    GradOptions opt;
    opt.create_graph = true;
    CHECK_THROWS_WITH(grad({cross_entropy(x, bad)}, {x}, {}, opt), Catch::Contains("label 2 is 7"));
  }
  for (const Case& c : cases) {
    INFO(c.name);
    std::vector<std::vector<float>> results[2];
    for (int side = 0; side < 2; ++side) {
      const Device dev = side ? Device::cuda(0) : Device::cpu();
      Tensor x = Tensor::from_vector(test::rand_uniform(30, 11, c.lo, c.hi), c.shape).to(dev).requires_grad_(true);
      const Tensor y = c.f(x);
      Tensor w = Tensor::from_vector(test::randn(y.numel(), 12), y.shape()).to(dev).requires_grad_(true);
      GradOptions opt;
      opt.create_graph = true;
      const Tensor g = grad({sum(mul(y, w))}, {x}, {}, opt)[0];
      sum(square(g)).backward();
      results[side] = {g.to_vector(), x.grad().to_vector(), w.grad().to_vector()};
    }
    for (size_t i = 0; i < 3; ++i) {
      INFO("value " << i << " (g, x.grad, w.grad)");
      CHECK(rel_error(results[1][i], results[0][i]) < 1e-5);
    }
  }
}
#endif

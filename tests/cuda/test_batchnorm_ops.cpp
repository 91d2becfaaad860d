// GPU parity: batch norm (hand-written and cuDNN) against the CPU reference, and the ops
// layer end to end: the same small DCGAN-like graph run forward and backward on the CPU and
// on the GPU must give the same loss, gradients and running statistics.
#include <catch2/catch.hpp>

#ifdef GANTRY_WITH_CUDA
#include <algorithm>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/core/tensor.h"

using namespace gantry;
using test::DevBuf;
using test::rel_error;

namespace {

struct BnShape { int64_t N, C, S; };
// The DCGAN's BN inputs (G: 512x4x4 .. 64x32x32; D: 128x16x16 .. 512x4x4) at batch 8 and 1,
// odd sizes, and S = 1 (BatchNorm1d-like).
const BnShape kBnShapes[] = {{8, 512, 16}, {8, 256, 64},  {8, 128, 256}, {8, 64, 1024},
                             {1, 64, 1024}, {1, 512, 16}, {3, 7, 45},    {16, 10, 1},
                             {2, 3, 100003}};

void check_bn(const BnShape& b, cuda::Impl impl, bool affine, float eps = 1e-5f) {
  const int64_t n = b.N * b.C * b.S;
  INFO(cuda::impl_name(impl) << " N" << b.N << " C" << b.C << " S" << b.S << " affine " << affine
                             << " eps " << eps);
  std::vector<float> x = test::randn(n, 40, 2.f, 0.7f), dy = test::randn(n, 41),
                     gamma = test::randn(b.C, 42, 0.02f, 1.f), beta = test::randn(b.C, 43, 0.1f),
                     rmean = test::randn(b.C, 44, 0.1f), rvar = test::rand_uniform(b.C, 45, 0.5f, 2.f);
  std::vector<double> xd = test::to_double(x), dyd = test::to_double(dy),
                      gd = test::to_double(gamma), bd = test::to_double(beta);
  const double* gp = affine ? gd.data() : nullptr;
  const double* bp = affine ? bd.data() : nullptr;
  std::vector<double> y_ref(n), mean_ref(b.C), invstd_ref(b.C), var_ref(b.C), dx_ref(n),
      dg_ref(b.C), db_ref(b.C), ye_ref(n);
  cpu::batch_norm_forward_train<double>(xd.data(), gp, bp, y_ref.data(), mean_ref.data(),
                                        invstd_ref.data(), var_ref.data(), b.N, b.C, b.S, eps);
  cpu::batch_norm_backward_train<double>(xd.data(), dyd.data(), gp, mean_ref.data(),
                                         invstd_ref.data(), dx_ref.data(), dg_ref.data(),
                                         db_ref.data(), b.N, b.C, b.S);
  cpu::batch_norm_forward_eval<double>(xd.data(), gp, bp, test::to_double(rmean).data(),
                                       test::to_double(rvar).data(), ye_ref.data(), b.N, b.C, b.S,
                                       eps);

  cuda::ImplScope scope(cuda::conv_impl(), impl, cuda::gemm_impl());
  DevBuf gx(x), gdy(dy), gg(gamma), gb(beta), grm(rmean), grv(rvar), y(n), mean(b.C),
      invstd(b.C), var(b.C), dx(n), dg(b.C), db(b.C), ye(n);
  const float* g = affine ? gg.p : nullptr;
  const float* bb = affine ? gb.p : nullptr;
  cuda::batch_norm_forward_train(gx.p, g, bb, y.p, mean.p, invstd.p, var.p, b.N, b.C, b.S, eps);
  CHECK(rel_error(y.download(), y_ref) < 1e-5);
  CHECK(rel_error(mean.download(), mean_ref) < 1e-5);
  CHECK(rel_error(invstd.download(), invstd_ref) < 1e-5);
  CHECK(rel_error(var.download(), var_ref) < 1e-5);
  cuda::batch_norm_backward_train(gx.p, gdy.p, g, mean.p, invstd.p, dx.p, dg.p, db.p, b.N, b.C, b.S,
                                  eps);
  CHECK(rel_error(dx.download(), dx_ref) < 1e-5);
  CHECK(rel_error(dg.download(), dg_ref) < 1e-5);
  CHECK(rel_error(db.download(), db_ref) < 1e-5);
  cuda::batch_norm_forward_eval(gx.p, g, bb, grm.p, grv.p, ye.p, b.N, b.C, b.S, eps);
  CHECK(rel_error(ye.download(), ye_ref) < 1e-5);
  // The running statistics updated in the same call (as the ops layer calls it on a GPU):
  // r = (1 - m) r + m * stat with the unbiased variance, alone and beside var_unbiased.
  const double m = 0.1;
  std::vector<double> rm_ref(b.C), rv_ref(b.C);
  for (int64_t c = 0; c < b.C; ++c) {
    rm_ref[c] = (1 - m) * rmean[c] + m * mean_ref[c];
    rv_ref[c] = (1 - m) * rvar[c] + m * var_ref[c];
  }
  for (bool with_var : {false, true}) {
    INFO("running statistics, var_unbiased " << (with_var ? "too" : "not asked"));
    DevBuf rm(rmean), rv(rvar);
    y.poison();
    var.poison();
    cuda::batch_norm_forward_train(gx.p, g, bb, y.p, mean.p, invstd.p, with_var ? var.p : nullptr,
                                   b.N, b.C, b.S, eps, rm.p, rv.p, static_cast<float>(m));
    CHECK(rel_error(y.download(), y_ref) < 1e-5);
    CHECK(rel_error(rm.download(), rm_ref) < 1e-5);
    CHECK(rel_error(rv.download(), rv_ref) < 1e-5);
    if (with_var) CHECK(rel_error(var.download(), var_ref) < 1e-5);
  }
  CHECK_THROWS_WITH(cuda::batch_norm_forward_train(gx.p, g, bb, y.p, mean.p, invstd.p, nullptr, b.N,
                                                   b.C, b.S, eps, grm.p, nullptr, 0.1f),
                    Catch::Contains("both running_mean and running_var"));
  // Optional outputs may be null.
  y.poison();
  cuda::batch_norm_forward_train(gx.p, g, bb, y.p, mean.p, invstd.p, nullptr, b.N, b.C, b.S, eps);
  CHECK(rel_error(y.download(), y_ref) < 1e-5);
  dx.poison();
  cuda::batch_norm_backward_train(gx.p, gdy.p, g, mean.p, invstd.p, dx.p, nullptr, nullptr, b.N,
                                  b.C, b.S, eps);
  CHECK(rel_error(dx.download(), dx_ref) < 1e-5);
}

// A DCGAN-like step through the public ops: G block (convT-BN-ReLU), D block (conv-BN-LReLU),
// a linear head, BCE. Returns loss and gradients, all copied to the host.
struct StepResult {
  std::vector<std::vector<float>> values;
};

StepResult run_step(Device dev) {
  Generator gen(7);
  auto param = [&](const Shape& s, float std, float mean) {
    Tensor t = Tensor::randn(s, &gen);  // made on the CPU: identical values for both runs
    t = (t * std + mean).detach().to(dev);
    t.requires_grad_(true);
    return t;
  };
  Tensor z = Tensor::randn({4, 10, 1, 1}, &gen).to(dev);
  Tensor wg1 = param({10, 16, 4, 4}, 0.02f, 0.f), gbn_w = param({16}, 0.02f, 1.f),
         gbn_b = param({16}, 0.f, 0.f);
  Tensor wg2 = param({16, 3, 4, 4}, 0.02f, 0.f);
  Tensor wd1 = param({8, 3, 4, 4}, 0.02f, 0.f), dbn_w = param({8}, 0.02f, 1.f),
         dbn_b = param({8}, 0.f, 0.f);
  Tensor lin_w = param({1, 8 * 4 * 4}, 0.05f, 0.f), lin_b = param({1}, 0.01f, 0.f);
  Tensor rm_g = Tensor::zeros({16}, dev), rv_g = Tensor::ones({16}, dev);
  Tensor rm_d = Tensor::zeros({8}, dev), rv_d = Tensor::ones({8}, dev);

  Tensor h = conv_transpose2d(z, wg1, Tensor(), 1, 0);                    // [4,16,4,4]
  h = relu(batch_norm(h, gbn_w, gbn_b, rm_g, rv_g, true));
  Tensor img = tanh(conv_transpose2d(h, wg2, Tensor(), 2, 1));            // [4,3,8,8]
  Tensor d = conv2d(img, wd1, Tensor(), 2, 1);                            // [4,8,4,4]
  d = leaky_relu(batch_norm(d, dbn_w, dbn_b, rm_d, rv_d, true), 0.2f);
  Tensor logit = linear(d.flatten(1), lin_w, lin_b);                      // [4,1]
  Tensor target = Tensor::full({4, 1}, 1.f, dev);
  Tensor loss = binary_cross_entropy(sigmoid(logit), target) +
                binary_cross_entropy_with_logits(logit, target) * 0.5f +
                mean(square(img)) + sum(cat({h.flatten(1), d.flatten(1)}, 1)) * 1e-3f +
                mean(matmul(transpose2d(d.flatten(1)), d.flatten(1)));
  loss.backward();

  StepResult r;
  for (const Tensor& t : {loss, img, logit, rm_g, rv_g, rm_d, rv_d}) r.values.push_back(t.to_vector());
  for (const Tensor& p : {wg1, gbn_w, gbn_b, wg2, wd1, dbn_w, dbn_b, lin_w, lin_b})
    r.values.push_back(p.grad().to_vector());
  return r;
}

}  // namespace

TEST_CASE("batch norm: hand-written and cuDNN match the CPU", "[cuda][batchnorm]") {
  for (cuda::Impl impl : {cuda::Impl::Handwritten, cuda::Impl::Library})
    for (const BnShape& b : kBnShapes)
      for (bool affine : {true, false}) check_bn(b, impl, affine);
}

TEST_CASE("batch norm: a non-default eps reaches the backward of both implementations",
          "[cuda][batchnorm]") {
  // cuDNN asks for the forward's epsilon in the backward too; with x of variance 4, eps 1e-3
  // instead of 1e-5 moves invstd, and so dx and dgamma, by 1.2e-4 (relative), 12 times the
  // bound. (On the emulator the cuDNN model recomputes the statistics with the epsilon it is
  // given when it differs from the forward's, as the reference's formula does.)
  for (cuda::Impl impl : {cuda::Impl::Handwritten, cuda::Impl::Library})
    for (const BnShape& b : {BnShape{8, 64, 64}, BnShape{3, 7, 45}, BnShape{16, 10, 1}})
      for (bool affine : {true, false}) check_bn(b, impl, affine, 1e-3f);
}

TEST_CASE("batch norm: the hand-written split of a channel into slices matches the CPU",
          "[cuda][batchnorm]") {
  // With few channels each channel is cut into P slices, one block each, whose statistics a
  // second launch merges (Chan et al.) or whose gradient sums it adds. Forced P, including
  // slices that do not divide N*S (100003 = 7 slices of 14287 but the last), one value per
  // slice (P = N*S) and P beyond N*S (clamped), against the same CPU reference.
  struct Reset {
    ~Reset() { cuda::handwritten::set_batch_norm_slices(0); }
  } reset;
  for (int64_t P : {1, 2, 7, 100}) {
    cuda::handwritten::set_batch_norm_slices(P);
    for (const BnShape& b : {BnShape{8, 64, 64}, BnShape{3, 7, 45}, BnShape{16, 10, 1},
                             BnShape{2, 3, 100003}, BnShape{1, 5, 1}}) {
      // P slices of ceil(M / P) values, fewer when the last would be empty (16 values in 7
      // slices of 3 make 6).
      const int64_t M = b.N * b.S, len = (M + std::min(P, M) - 1) / std::min(P, M);
      INFO("forced slices " << P);
      CHECK(cuda::handwritten::batch_norm_slices(b.N, b.C, b.S) == (M + len - 1) / len);
      for (bool affine : {true, false}) check_bn(b, cuda::Impl::Handwritten, affine);
    }
  }
  // The automatic choice: one block per channel when the channels fill the GPU (4 blocks per
  // SM; no GPU has 1024 SMs) or a channel is too short to share (< 2048 values); three
  // channels of 100003 values are split on any GPU.
  cuda::handwritten::set_batch_norm_slices(0);
  CHECK(cuda::handwritten::batch_norm_slices(2, 4096, 16) == 1);
  CHECK(cuda::handwritten::batch_norm_slices(8, 3, 255) == 1);
  CHECK(cuda::handwritten::batch_norm_slices(2, 3, 100003) >= 2);
}

TEST_CASE("batch norm: the eval kernel's 64-bit index instance matches the CPU", "[cuda][batchnorm]") {
  // Eval decodes the channel in 32 bits where indices fit (every shape here); forcing 64 bits
  // runs the other instance.
  struct Reset {
    ~Reset() { cuda::set_force_wide_indices(false); }
  } reset;
  cuda::set_force_wide_indices(true);
  for (const BnShape& b : {BnShape{8, 64, 64}, BnShape{3, 7, 45}, BnShape{16, 10, 1}})
    check_bn(b, cuda::Impl::Handwritten, true);
}

TEST_CASE("batch norm: one value per channel (M = 1) as the CPU kernel", "[cuda][batchnorm]") {
  // The ops layer refuses training with N*S == 1, but the kernel contract is the CPU one:
  // the "unbiased" variance of a single value is written as the biased one (0), not 0/0.
  // Hand-written only: cuDNN's running variance uses n/(n-1) here.
  for (bool affine : {true, false}) check_bn({1, 5, 1}, cuda::Impl::Handwritten, affine);
}

TEST_CASE("ops on CUDA tensors match the CPU end to end (forward, backward, running stats)",
          "[cuda][ops]") {
  const StepResult ref = run_step(Device::cpu());
  for (cuda::Impl impl : {cuda::Impl::Handwritten, cuda::Impl::Library}) {
    cuda::ImplScope scope(impl, impl, impl);
    const bool tf32 = cuda::conv_allow_tf32();
    cuda::set_conv_allow_tf32(false);
    const StepResult got = run_step(Device::cuda(0));
    cuda::set_conv_allow_tf32(tf32);
    REQUIRE(got.values.size() == ref.values.size());
    for (size_t i = 0; i < ref.values.size(); ++i) {
      INFO(cuda::impl_name(impl) << " value " << i);
      CHECK(rel_error(got.values[i], ref.values[i]) < 1e-4);
    }
  }
}

TEST_CASE("cat and mean on CUDA tensors match the CPU, forward and backward", "[cuda][ops]") {
  // cat along each dim (one launch for all inputs on the GPU, an empty input among them) and
  // mean (the 1/n inside the reduction), with their gradients.
  for (int64_t dim : {0, 1, 2}) {
    INFO("cat along dim " << dim);
    std::vector<std::vector<float>> results[2];
    for (int side = 0; side < 2; ++side) {
      const Device dev = side ? Device::cuda(0) : Device::cpu();
      std::vector<Tensor> xs;
      for (int i = 0; i < 4; ++i) {
        Shape s{2, 3, 5};
        s[dim] = i == 2 ? 0 : i + 1;
        Tensor t = Tensor::from_vector(test::randn(shape_numel(s), 60 + i), s).to(dev);
        xs.push_back(t.requires_grad_(true));
      }
      Tensor y = cat(xs, dim);
      Tensor w = Tensor::from_vector(test::randn(y.numel(), 70), y.shape()).to(dev);
      Tensor loss = mean(y * w);
      loss.backward();
      results[side] = {y.to_vector(), loss.to_vector()};
      for (const Tensor& t : xs) results[side].push_back(t.grad().to_vector());
    }
    REQUIRE(results[1].size() == results[0].size());
    CHECK(results[1][0] == results[0][0]);  // a copy: exact
    for (size_t i = 1; i < results[0].size(); ++i) {
      INFO("value " << i);
      CHECK(rel_error(results[1][i], results[0][i]) < 1e-6);
    }
  }
}

TEST_CASE("group norm and instance norm on CUDA tensors match the CPU, with their double backward",
          "[cuda][ops][batchnorm]") {
  // Batch norm's kernels on [1, N*G, M] (one channel per sample and group), both implementations:
  // the DCGAN critic's layer norm at 128x16x16 (batch 4), instance norm at 256x8x8 and at its
  // last norm, 512x4x4 (batch 16: 8192 channels of 16 values), and an odd shape. The R1-style
  // second pass reaches the weights through the recomputed statistics.
  struct Case { int64_t N, C, H, groups; };
  const Case cases[] = {{4, 128, 16, 1}, {4, 256, 8, 256}, {16, 512, 4, 512}, {3, 6, 5, 3}};
  for (cuda::Impl impl : {cuda::Impl::Handwritten, cuda::Impl::Library}) {
    cuda::ImplScope scope(impl, impl, impl);
    for (const Case& c : cases) {
      INFO(cuda::impl_name(impl) << " N" << c.N << " C" << c.C << " H" << c.H << " groups " << c.groups);
      std::vector<std::vector<float>> results[2];
      for (int side = 0; side < 2; ++side) {
        const Device dev = side ? Device::cuda(0) : Device::cpu();
        const Shape xs{c.N, c.C, c.H, c.H};
        Tensor x = Tensor::from_vector(test::randn(shape_numel(xs), 80, 1.f, 2.f), xs).to(dev).requires_grad_(true);
        Tensor w = Tensor::from_vector(test::randn(c.C, 81, 0.2f, 1.f), {c.C}).to(dev).requires_grad_(true);
        Tensor b = Tensor::from_vector(test::randn(c.C, 82, 0.3f), {c.C}).to(dev).requires_grad_(true);
        Tensor r = Tensor::from_vector(test::randn(shape_numel(xs), 83), xs).to(dev);
        Tensor y = c.groups == c.C ? instance_norm(x, w, b) : group_norm(x, c.groups, w, b);
        GradOptions opt;
        opt.create_graph = true;
        const Tensor gx = grad({sum(mul(y, r))}, {x}, {}, opt)[0];
        sum(square(gx)).backward();  // |dL/dx|^2's gradient: w and x through the double backward
        results[side] = {y.to_vector(), gx.to_vector(), x.grad().to_vector(), w.grad().to_vector()};
      }
      for (size_t i = 0; i < results[0].size(); ++i) {
        INFO("value " << i << " (y, dL/dx, then the second pass's x and weight gradients)");
        CHECK(rel_error(results[1][i], results[0][i]) < 1e-5);
      }
    }
  }
}

TEST_CASE("Tensor basics on CUDA: to/from, fill, copy_, add_, mul_, item", "[cuda][ops]") {
  Tensor a = Tensor::arange(10).reshape({2, 5});
  Tensor g = a.to(Device::cuda(0));
  CHECK(g.is_cuda());
  CHECK(g.to_vector() == a.to_vector());
  Tensor f = Tensor::full({3, 3}, 2.5f, Device::cuda(0));
  CHECK(f.to_vector() == std::vector<float>(9, 2.5f));
  f.mul_(2.f);
  f.add_(Tensor::ones({3, 3}, Device::cuda(0)), 0.5f);
  CHECK(f.to_vector() == std::vector<float>(9, 5.5f));
  const uint64_t v = f.version();
  f.add_(1.f);
  CHECK(f.to_vector() == std::vector<float>(9, 6.5f));
  CHECK(f.version() == v + 1);
  CHECK_THROWS_WITH(f.add_(Tensor::ones({3, 3})), Catch::Contains("move it with .to() first"));
  f.add_(-1.f);
  CHECK(sum(f).item() == Approx(49.5f));
  Tensor c = Tensor::empty({2, 5}, Device::cuda(0));
  c.copy_(a);
  CHECK(c.cpu().to_vector() == a.to_vector());
  CHECK(add(g, 1.f).narrow0(1, 1).to_vector() == std::vector<float>{6, 7, 8, 9, 10});
}
#endif  // GANTRY_WITH_CUDA

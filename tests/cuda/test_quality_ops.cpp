// GPU parity of the ops added for issue 8 (avg_pool2d, log_softmax, cross_entropy,
// spatial_gather) against the CPU reference kernels on random inputs.
#include <catch2/catch.hpp>

#ifdef GANTRY_WITH_CUDA
#include <vector>

#include "cuda/cuda_test_util.h"

using namespace gantry;
using test::DevBuf;
using test::rel_error;

TEST_CASE("avg_pool2d forward/backward match the CPU", "[cuda][pool]") {
  for (int k : {2, 3, 8})
    for (int s : {1, 2, 8}) {
      const int64_t NC = 37, H = 8, W = 8, OH = (H - k) / s + 1, OW = (W - k) / s + 1;
      INFO("k " << k << " s " << s);
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
#endif

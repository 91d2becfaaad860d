// GPU parity: elementwise ops, reductions, losses, Philox fills, multi-tensor Adam and the
// device layer, each against the CPU reference kernels (kernels/cpu) on random inputs.
#include <catch2/catch.hpp>

#ifdef GANTRY_WITH_CUDA
#include <cmath>
#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "cuda/cuda_test_util.h"
#include "gantry/core/tensor.h"
#include "gantry/core/autograd.h"
#include "gantry/models/dcgan.h"
#include "gantry/optim/adam.h"
#include "gantry/optim/ema.h"

using namespace gantry;
using test::DevBuf;
using test::rel_error;

namespace {
// Sizes that are not multiples of a block (256), a warp (32) or 4, plus tiny ones.
const int64_t kSizes[] = {1, 3, 31, 1000, 65537, 128 * 3 * 64 * 64};
}  // namespace

TEST_CASE("unary forward and backward match the CPU", "[cuda][elementwise]") {
  const cpu::Unary ops[] = {cpu::Unary::Neg,  cpu::Unary::Square, cpu::Unary::Sqrt,
                            cpu::Unary::Exp,  cpu::Unary::Log,    cpu::Unary::Abs,
                            cpu::Unary::Relu, cpu::Unary::Tanh,   cpu::Unary::Sigmoid};
  for (int64_t n : kSizes) {
    for (cpu::Unary op : ops) {
      INFO("op " << static_cast<int>(op) << " n " << n);
      const bool positive = op == cpu::Unary::Sqrt || op == cpu::Unary::Log;
      std::vector<float> x = positive ? test::rand_uniform(n, 1, 0.05f, 3.f) : test::randn(n, 1, 2.f);
      std::vector<float> dy = test::randn(n, 2);
      std::vector<float> y_ref(n), dx_ref(n);
      cpu::unary_forward<float>(op, x.data(), y_ref.data(), n);
      cpu::unary_backward<float>(op, x.data(), y_ref.data(), dy.data(), dx_ref.data(), n);
      DevBuf dx_in(x), ddy(dy), dyv(n), ddx(n);
      cuda::unary_forward(op, dx_in.p, dyv.p, n);
      CHECK(rel_error(dyv.download(), y_ref) < 1e-5);
      cuda::unary_backward(op, dx_in.p, dyv.p, ddy.p, ddx.p, n);
      CHECK(rel_error(ddx.download(), dx_ref) < 1e-5);
    }
  }
}

TEST_CASE("leaky relu, clamp, affine, axpy match the CPU", "[cuda][elementwise]") {
  for (int64_t n : kSizes) {
    INFO("n " << n);
    std::vector<float> x = test::randn(n, 3), dy = test::randn(n, 4), o = test::randn(n, 5);
    std::vector<float> ref(n), ref2(n);
    DevBuf dxv(x), ddy(dy), dov(o), out(n), out2(n);

    cpu::leaky_relu_forward<float>(x.data(), ref.data(), n, 0.2f);
    cuda::leaky_relu_forward(dxv.p, out.p, n, 0.2f);
    CHECK(rel_error(out.download(), ref) < 1e-6);
    cpu::leaky_relu_backward<float>(x.data(), dy.data(), ref2.data(), n, 0.2f);
    cuda::leaky_relu_backward(dxv.p, ddy.p, out2.p, n, 0.2f);
    CHECK(rel_error(out2.download(), ref2) < 1e-6);

    out.poison();
    out2.poison();
    cpu::clamp_forward<float>(x.data(), ref.data(), n, -0.5f, 0.7f);
    cuda::clamp_forward(dxv.p, out.p, n, -0.5f, 0.7f);
    CHECK(rel_error(out.download(), ref) < 1e-6);
    cpu::clamp_backward<float>(x.data(), dy.data(), ref2.data(), n, -0.5f, 0.7f);
    cuda::clamp_backward(dxv.p, ddy.p, out2.p, n, -0.5f, 0.7f);
    CHECK(rel_error(out2.download(), ref2) < 1e-6);

    out.poison();
    cpu::affine<float>(x.data(), ref.data(), n, -1.5f, 0.25f);
    cuda::affine(dxv.p, out.p, n, -1.5f, 0.25f);
    CHECK(rel_error(out.download(), ref) < 1e-6);

    out.poison();
    for (int64_t i = 0; i < n; ++i) ref[i] = x[i] + 0.3f * o[i];
    cuda::axpy(dxv.p, dov.p, out.p, n, 0.3f);
    CHECK(rel_error(out.download(), ref) < 1e-6);
  }
}

// Puts the index width back to the automatic choice at scope exit.
struct WideIndexReset {
  ~WideIndexReset() { cuda::set_force_wide_indices(false); }
};

TEST_CASE("binary ops with broadcasting match the CPU", "[cuda][elementwise]") {
  struct Case { std::vector<int64_t> a, b; };
  const Case cases[] = {
      {{8, 64, 32, 32}, {8, 64, 32, 32}},  // same shape
      {{8, 64, 32, 32}, {1, 64, 1, 1}},    // per-channel (bias)
      {{1, 1, 1, 1}, {3, 5, 7, 9}},        // scalar-like first operand
      {{3, 1, 7, 1}, {1, 5, 1, 9}},        // both broadcast
      {{17, 1}, {1, 33}},
      {{1}, {1}},
  };
  const cpu::Binary ops[] = {cpu::Binary::Add, cpu::Binary::Sub, cpu::Binary::Mul, cpu::Binary::Div};
  // The broadcasting kernel decodes indices in 32 bits when they fit (all of these), else in
  // 64: forcing 64 runs the other instance on the same cases.
  WideIndexReset reset;
  for (bool wide : {false, true})
  for (const Case& c : cases) {
    cuda::set_force_wide_indices(wide);
    const int nd = static_cast<int>(c.a.size());
    std::vector<int64_t> out_shape(nd);
    int64_t na = 1, nb = 1, no = 1;
    for (int d = 0; d < nd; ++d) {
      out_shape[d] = std::max(c.a[d], c.b[d]);
      na *= c.a[d];
      nb *= c.b[d];
      no *= out_shape[d];
    }
    std::vector<float> a = test::randn(na, 6), b = test::rand_uniform(nb, 7, 0.5f, 2.f);
    DevBuf da(a), db(b), dout(no);
    for (cpu::Binary op : ops) {
      INFO("op " << static_cast<int>(op) << " a " << na << " b " << nb << " wide " << wide);
      std::vector<float> ref(no);
      cpu::binary_broadcast<float>(op, a.data(), c.a.data(), b.data(), c.b.data(), ref.data(),
                                   out_shape.data(), nd);
      dout.poison();
      cuda::binary_broadcast(op, da.p, c.a.data(), db.p, c.b.data(), dout.p, out_shape.data(), nd);
      CHECK(rel_error(dout.download(), ref) < 1e-6);
    }
  }
}

TEST_CASE("sum_to_shape, broadcast_to, sum_all and sum_channels match the CPU", "[cuda][reduce]") {
  struct Case { std::vector<int64_t> in, out; };
  const Case cases[] = {
      {{8, 64, 32, 32}, {1, 64, 1, 1}},  // bias / BN gradient
      {{8, 64, 32, 32}, {1, 1, 1, 1}},   // everything
      {{8, 64, 32, 32}, {8, 1, 1, 1}},
      {{128, 100}, {1, 100}},            // linear bias: few terms per output
      {{3, 5, 7}, {3, 1, 7}},
      {{1000003}, {1}},
      {{2, 3}, {2, 3}},
  };
  WideIndexReset reset;  // both index widths of sum_to_shape and broadcast_to, as above
  for (bool wide : {false, true})
  for (const Case& c : cases) {
    cuda::set_force_wide_indices(wide);
    const int nd = static_cast<int>(c.in.size());
    int64_t ni = 1, no = 1;
    for (int d = 0; d < nd; ++d) { ni *= c.in[d]; no *= c.out[d]; }
    INFO("in " << ni << " out " << no << " wide " << wide);
    std::vector<float> x = test::randn(ni, 8);
    std::vector<double> ref(no);
    cpu::sum_to_shape<double>(test::to_double(x).data(), c.in.data(), ref.data(), c.out.data(), nd);
    DevBuf dx(x), dout(no);
    cuda::sum_to_shape(dx.p, c.in.data(), dout.p, c.out.data(), nd);
    CHECK(rel_error(dout.download(), ref) < 1e-5);

    std::vector<float> small = test::randn(no, 9), bref(ni);
    cpu::broadcast_to<float>(small.data(), c.out.data(), bref.data(), c.in.data(), nd);
    DevBuf ds(small), db(ni);
    cuda::broadcast_to(ds.p, c.out.data(), db.p, c.in.data(), nd);
    CHECK(rel_error(db.download(), bref) < 1e-7);
  }
  for (int64_t n : kSizes) {
    std::vector<float> x = test::randn(n, 10, 1.f, 0.5f);
    double ref = 0;
    for (float v : x) ref += v;
    DevBuf dx(x), out(1);
    cuda::sum_all(dx.p, n, out.p, 1.f / static_cast<float>(n));
    CHECK(rel_error(out.download(), std::vector<double>{ref / static_cast<double>(n)}) < 1e-5);
  }
  const int64_t N = 5, C = 70, S = 33;
  std::vector<float> x = test::randn(N * C * S, 11);
  std::vector<double> ref(C, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t s = 0; s < S; ++s) ref[c] += x[(n * C + c) * S + s];
  DevBuf dx(x), out(C);
  cuda::sum_channels(dx.p, out.p, N, C, S);
  CHECK(rel_error(out.download(), ref) < 1e-5);
}

TEST_CASE("BCE and BCE-with-logits forward and backward match the CPU", "[cuda][loss]") {
  for (int64_t n : {int64_t(1), int64_t(128), int64_t(1001), int64_t(100000)}) {
    INFO("n " << n);
    std::vector<float> p = test::rand_uniform(n, 12, 0.f, 1.f);
    p[0] = 0.f;  // exercises the log clamp at -100
    if (n > 1) p[1] = 1.f;
    std::vector<float> t = test::rand_uniform(n, 13, 0.f, 1.f);
    for (float& v : t) v = v < 0.5f ? 0.f : 1.f;
    std::vector<float> x = test::randn(n, 14, 4.f);
    const float g = 0.75f;
    DevBuf dp(p), dt(t), dxl(x), dg(std::vector<float>{g}), out(1), grad(n);

    const double ref = cpu::bce_forward<double>(test::to_double(p).data(), test::to_double(t).data(), n);
    cuda::bce_forward(dp.p, dt.p, out.p, n);
    CHECK(rel_error(out.download(), std::vector<double>{ref}) < 1e-5);
    std::vector<float> gref(n);
    cpu::bce_backward<float>(p.data(), t.data(), g, gref.data(), n);
    cuda::bce_backward(dp.p, dt.p, dg.p, grad.p, n);
    CHECK(rel_error(grad.download(), gref) < 1e-5);

    out.poison();
    grad.poison();
    const double lref = cpu::bce_logits_forward<double>(test::to_double(x).data(), test::to_double(t).data(), n);
    cuda::bce_logits_forward(dxl.p, dt.p, out.p, n);
    CHECK(rel_error(out.download(), std::vector<double>{lref}) < 1e-5);
    cpu::bce_logits_backward<float>(x.data(), t.data(), g, gref.data(), n);
    cuda::bce_logits_backward(dxl.p, dt.p, dg.p, grad.p, n);
    CHECK(rel_error(grad.download(), gref) < 1e-5);
  }
}

TEST_CASE("clamp and BCE propagate NaN as the CPU kernels and PyTorch", "[cuda][elementwise]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  DevBuf x(std::vector<float>{nan, -2.f, 0.25f, 3.f}), y(4);
  cuda::clamp_forward(x.p, y.p, 4, -0.5f, 0.7f);
  const std::vector<float> got = y.download();
  CHECK(std::isnan(got[0]));
  CHECK(got[1] == -0.5f);
  CHECK(got[2] == 0.25f);
  CHECK(got[3] == 0.7f);
  DevBuf p(std::vector<float>{0.5f, nan}), t(std::vector<float>{1.f, 0.f}), out(1);
  cuda::bce_forward(p.p, t.p, out.p, 2);
  CHECK(std::isnan(out.download()[0]));
}

TEST_CASE("BCE with tiny probabilities keeps log(1 - p) accurate (log1p)", "[cuda][loss]") {
  // A confident discriminator on fakes: p in [1e-8, 1e-6], target 0, so each term is
  // -log(1 - p) ~ p. log(1.f - p) rounds 1 - p to a multiple of 2^-24 (6e-8) first.
  const int64_t n = 4099;
  std::vector<float> p = test::rand_uniform(n, 19, 1e-8f, 1e-6f), t(n, 0.f);
  const double ref = cpu::bce_forward<double>(test::to_double(p).data(), test::to_double(t).data(), n);
  DevBuf dp(p), dt(t), out(1);
  cuda::bce_forward(dp.p, dt.p, out.p, n);
  CHECK(rel_error(out.download(), std::vector<double>{ref}) < 1e-5);
}

TEST_CASE("transpose2d, copy_2d and dropout_apply", "[cuda][elementwise]") {
  for (auto mn : {std::pair<int64_t, int64_t>{1, 1}, {33, 65}, {128, 100}, {1, 1000}}) {
    const int64_t M = mn.first, N = mn.second;
    std::vector<float> x = test::randn(M * N, 15), ref(M * N);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) ref[j * M + i] = x[i * N + j];
    DevBuf dx(x), dy(M * N);
    cuda::transpose2d(dx.p, dy.p, M, N);
    CHECK(rel_error(dy.download(), ref) == 0.0);
  }
  // Rows 3 of 7 floats into a destination with row pitch 10 at column offset 2.
  std::vector<float> src = test::randn(21, 16), dst(30, -1.f);
  DevBuf ds(src), dd(dst);
  cuda::copy_2d(dd.p + 2, 10, ds.p, 7, 3, 7);
  std::vector<float> got = dd.download();
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 10; ++c)
      CHECK(got[r * 10 + c] == ((c >= 2 && c < 9) ? src[r * 7 + c - 2] : -1.f));

  const int64_t n = 10007;
  std::vector<float> x = test::randn(n, 17), u = test::rand_uniform(n, 18, 0.f, 1.f);
  DevBuf dx(x), du(u), dy(n), dm(n);
  cuda::dropout_apply(dx.p, du.p, dy.p, dm.p, n, 0.3f);
  std::vector<float> y = dy.download(), m = dm.download();
  for (int64_t i = 0; i < n; ++i) {
    const float mask = u[i] < 0.3f ? 0.f : 1.f / 0.7f;
    CHECK(m[i] == mask);
    CHECK(y[i] == x[i] * mask);
  }
}

TEST_CASE("cat_rows writes every element of a concatenation in one launch per 64 inputs",
          "[cuda][elementwise]") {
  // 70 inputs (two batches of the argument block), some of width 0, over 3 rows; and one
  // wide input in one row. The output starts poisoned, so a column left unwritten is NaN.
  for (auto [count, rows] : {std::pair<int, int64_t>{70, 3}, {1, 1}, {2, 1000}}) {
    INFO(count << " inputs, " << rows << " rows");
    std::vector<std::vector<float>> parts;
    std::vector<std::unique_ptr<DevBuf>> bufs;
    std::vector<const float*> srcs;
    std::vector<int64_t> widths;
    int64_t out_row = 0;
    for (int i = 0; i < count; ++i) {
      const int64_t w = count == 1 ? 100003 : (i * 7) % 5;
      parts.push_back(test::randn(rows * w, 40 + static_cast<uint64_t>(i)));
      bufs.push_back(std::make_unique<DevBuf>(rows * w));
      if (w) bufs.back()->upload(parts.back());
      srcs.push_back(bufs.back()->p);
      widths.push_back(w);
      out_row += w;
    }
    std::vector<float> ref;
    for (int64_t r = 0; r < rows; ++r)
      for (int i = 0; i < count; ++i)
        ref.insert(ref.end(), parts[i].begin() + r * widths[i], parts[i].begin() + (r + 1) * widths[i]);
    DevBuf out(rows * out_row);
    cuda::cat_rows(out.p, srcs.data(), widths.data(), count, rows);
    CHECK(rel_error(out.download(), ref) == 0.0);
  }
}

TEST_CASE("Philox fills on the GPU reproduce the CPU stream", "[cuda][random]") {
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(4), int64_t(1001), int64_t(1 << 20) + 3}) {
    for (uint64_t base : {uint64_t(0), uint64_t(12345), (uint64_t(1) << 32) - 2}) {
      INFO("n " << n << " base " << base);
      const uint64_t seed = 0x5eed0000000000ffull + static_cast<uint64_t>(n);
      // Host stream at the same (seed, offset).
      Generator g(seed);
      g.set_state(seed, base);
      std::vector<float> u_ref(n), z_ref(n);
      g.fill_uniform(u_ref.data(), n, -2.f, 3.f);
      g.set_state(seed, base);
      g.fill_normal(z_ref.data(), n, 0.5f, 0.02f);

      DevBuf du(n), dz(n);
      cuda::philox_uniform(du.p, n, seed, base, -2.f, 3.f);
      cuda::philox_normal(dz.p, n, seed, base, 0.5f, 0.02f);
      std::vector<float> u = du.download(), z = dz.download();
      CHECK(std::memcmp(u.data(), u_ref.data(), n * sizeof(float)) == 0);  // bit for bit
      // Normals: log/sin/cos may differ in the last bit between the device and libm.
      int64_t bad = 0, exact = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float tol = 4e-7f * std::fabs(z_ref[i]) + 1e-7f;
        if (!(std::fabs(z[i] - z_ref[i]) <= tol)) ++bad;
        if (z[i] == z_ref[i]) ++exact;
      }
      INFO("normals bit-identical: " << exact << " of " << n);
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("Tensor randn/rand on the GPU continue the generator exactly as on the CPU",
          "[cuda][random]") {
  Generator a(42), b(42);
  Tensor x_cpu = Tensor::randn({7, 9}, &a), x_gpu = Tensor::randn({7, 9}, &b, Device::cuda(0));
  Tensor u_cpu = Tensor::rand({13}, &a), u_gpu = Tensor::rand({13}, &b, Device::cuda(0));
  CHECK(a.offset() == b.offset());
  CHECK(rel_error(x_gpu.to_vector(), x_cpu.to_vector()) < 1e-6);
  CHECK(rel_error(u_gpu.to_vector(), u_cpu.to_vector()) == 0.0);
}

TEST_CASE("multi-tensor Adam matches torch.optim.Adam's formula", "[cuda][adam]") {
  // 70 tensors (two launches of <= 64), sizes across chunk boundaries (4096), one empty.
  std::vector<int64_t> sizes;
  for (int i = 0; i < 70; ++i) sizes.push_back((i * 977) % 9000);
  sizes[3] = 1;
  sizes[5] = 4096;
  sizes[6] = 4097;
  sizes[7] = 0;
  for (float wd : {0.f, 0.01f}) {
    INFO("weight decay " << wd);
    cuda::AdamConfig cfg;
    cfg.lr = 2e-4;
    cfg.beta1 = 0.5;
    cfg.beta2 = 0.999;
    cfg.eps = 1e-8;
    cfg.weight_decay = wd;
    std::vector<std::vector<float>> p, m, v;
    std::vector<std::unique_ptr<DevBuf>> dp, dg, dm, dv;
    for (size_t i = 0; i < sizes.size(); ++i) {
      p.push_back(test::randn(sizes[i], 100 + i, 0.02f));
      m.push_back(std::vector<float>(sizes[i], 0.f));
      v.push_back(std::vector<float>(sizes[i], 0.f));
      dp.emplace_back(new DevBuf(p.back()));
      dm.emplace_back(new DevBuf(m.back()));
      dv.emplace_back(new DevBuf(v.back()));
      dg.emplace_back(new DevBuf(sizes[i]));
    }
    for (int step = 1; step <= 3; ++step) {
      cfg.step = step;
      std::vector<cuda::AdamTensor> ts;
      // The scalar factors in double, rounded once (as PyTorch and adam_update_cpu).
      const double bc1 = 1.0 - std::pow(cfg.beta1, step);
      const double bc2 = 1.0 - std::pow(cfg.beta2, step);
      const float step_size = static_cast<float>(cfg.lr / bc1);
      const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
      const float w = static_cast<float>(1.0 - cfg.beta1), b2 = static_cast<float>(cfg.beta2);
      const float omb2 = static_cast<float>(1.0 - cfg.beta2), eps = static_cast<float>(cfg.eps);
      for (size_t i = 0; i < sizes.size(); ++i) {
        std::vector<float> g = test::randn(sizes[i], 1000 * step + i);
        dg[i]->upload(g);
        ts.push_back({dp[i]->p, dg[i]->p, dm[i]->p, dv[i]->p, sizes[i]});
        for (int64_t k = 0; k < sizes[i]; ++k) {  // the host reference, PyTorch's formula
          float gk = g[k] + wd * p[i][k];
          m[i][k] = w < 0.5f ? m[i][k] + w * (gk - m[i][k]) : gk - (gk - m[i][k]) * (1.f - w);
          v[i][k] = v[i][k] * b2 + omb2 * gk * gk;
          const float denom = std::sqrt(v[i][k]) / bc2_sqrt + eps;
          p[i][k] = p[i][k] - step_size * (m[i][k] / denom);
        }
      }
      cuda::adam_multi_tensor(ts.data(), static_cast<int>(ts.size()), cfg);
    }
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (sizes[i] == 0) continue;
      INFO("tensor " << i << " size " << sizes[i]);
      CHECK(rel_error(dp[i]->download(), p[i]) < 1e-5);
      CHECK(rel_error(dm[i]->download(), m[i]) < 1e-5);
      CHECK(rel_error(dv[i]->download(), v[i]) < 1e-5);
    }
  }
}

TEST_CASE("multi-tensor EMA: parameters averaged, buffers copied, one launch per 64",
          "[cuda][ema]") {
  // 70 tensors across chunk boundaries, one empty; every third is a buffer whose average starts
  // poisoned (NaN): its copy must be exact all the same.
  const double decay = 0.999;
  const float d = static_cast<float>(decay), w = static_cast<float>(1.0 - decay);
  std::vector<int64_t> sizes;
  for (int i = 0; i < 70; ++i) sizes.push_back((i * 977) % 9000);
  sizes[4] = 4097;
  sizes[7] = 0;
  std::vector<std::vector<float>> avg, src;
  std::vector<std::unique_ptr<DevBuf>> davg, dsrc;
  std::vector<cuda::EmaTensor> ts;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const bool copy = i % 3 == 0;
    avg.push_back(test::randn(sizes[i], 200 + i));
    src.push_back(test::randn(sizes[i], 300 + i));
    davg.emplace_back(copy ? new DevBuf(sizes[i]) : new DevBuf(avg.back()));
    dsrc.emplace_back(new DevBuf(src.back()));
    ts.push_back({davg[i]->p, dsrc[i]->p, sizes[i], copy});
    for (int64_t k = 0; k < sizes[i]; ++k) {  // EMA::update's roundings: mul_, then add_'s FMA
      const float scaled = avg[i][k] * d;
      avg[i][k] = copy ? src[i][k] : std::fma(w, src[i][k], scaled);
    }
  }
  cuda::ema_multi_tensor(ts.data(), static_cast<int>(ts.size()), decay);
  for (size_t i = 0; i < sizes.size(); ++i) {
    INFO("tensor " << i << " size " << sizes[i] << (ts[i].copy ? " (copy)" : ""));
    CHECK(rel_error(davg[i]->download(), avg[i]) == 0.0);  // bit for bit, copies and averages
  }
}

TEST_CASE("EMA of a generator on the GPU follows the same average as on the CPU", "[cuda][ema]") {
  std::vector<std::vector<float>> results[2];
  for (int side = 0; side < 2; ++side) {
    const Device dev = side ? Device::cuda(0) : Device::cpu();
    Generator init(5);
    auto g = make_generator(8, 4, 1, 32, &init), avg = make_generator(8, 4, 1, 32, &init);
    g->to(dev);
    avg->to(dev);
    EMA ema(*g, *avg, 0.9);
    for (int step = 0; step < 3; ++step) {
      NoGradGuard guard;
      for (Tensor p : g->parameters()) p.add_(1.f);  // a stand-in for an optimizer step
      for (auto& [name, b] : g->named_buffers()) {
        Tensor handle = b;
        handle.add_(0.5f);
      }
      ema.update();
    }
    for (const auto& e : avg->state_dict()) results[side].push_back(e.tensor.to_vector());
  }
  REQUIRE(results[1].size() == results[0].size());
  for (size_t i = 0; i < results[0].size(); ++i) {
    INFO("tensor " << i);
    CHECK(rel_error(results[1][i], results[0][i]) < 1e-6);
  }
}

TEST_CASE("multi-tensor Adam agrees with adam_update_cpu (optim/adam.cpp)", "[cuda][adam]") {
  // The CPU step forms 1 - beta2 and the bias corrections in double; a GPU that formed them
  // from float betas would be 1.3e-5 (relative) off in v at beta2 = 0.999.
  const int64_t n = 5000;
  AdamOptions o;
  o.lr = 2e-4;
  o.beta1 = 0.5;
  o.beta2 = 0.999;
  o.weight_decay = 0.01;
  std::vector<float> p = test::randn(n, 60, 0.02f), m(n, 0.f), v(n, 0.f);
  DevBuf dp(p), dm(m), dv(v), dg(n);
  for (int64_t step = 1; step <= 3; ++step) {
    const std::vector<float> g = test::randn(n, 60 + step);
    adam_update_cpu(p.data(), g.data(), m.data(), v.data(), n, step, o);
    dg.upload(g);
    const cuda::AdamTensor t{dp.p, dg.p, dm.p, dv.p, n};
    cuda::adam_multi_tensor(&t, 1, adam_cuda_config(o, step));
  }
  CHECK(rel_error(dv.download(), v) < 1e-6);
  CHECK(rel_error(dm.download(), m) < 1e-6);
  CHECK(rel_error(dp.download(), p) < 1e-6);
}

TEST_CASE("device layer: pool reuse, high-water mark, OOM message, errors", "[cuda][runtime]") {
  CHECK(cuda::device_count() >= 1);
  CHECK(!cuda::device_name(0).empty());
  cuda::synchronize();
  cuda::reset_pool_high_water_mark();
  {
    DevBuf a(1 << 20);  // 4 MiB
    cuda::synchronize();
    CHECK(cuda::pool_high_water_mark() >= (size_t(4) << 20));
  }
  // Far more than any GPU has: a CudaError that names both numbers.
  try {
    void* p = cuda::allocate(size_t(1) << 50, 0);
    cuda::deallocate(p, 0);
    FAIL("allocating 1 PiB did not throw");
  } catch (const CudaError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("out of memory") != std::string::npos);
    CHECK(msg.find("free") != std::string::npos);
  }
  // The allocator still works afterwards.
  DevBuf b(1000);
  CHECK(b.download().size() == 1000);
  CHECK_THROWS_AS(cuda::set_device(cuda::device_count()), CudaError);
  // Pinned memory round trip.
  float* h = static_cast<float*>(cuda::allocate_pinned(16 * sizeof(float)));
  for (int i = 0; i < 16; ++i) h[i] = static_cast<float>(i);
  DevBuf c(16);
  cuda::copy_host_to_device(c.p, h, 16 * sizeof(float));
  std::vector<float> back = c.download();
  cuda::deallocate_pinned(h);
  for (int i = 0; i < 16; ++i) CHECK(back[i] == static_cast<float>(i));
}

TEST_CASE("pinned blocks are reused only after the copies queued before their free", "[cuda][memory]") {
  const size_t n = size_t(1) << 20;  // 4 MiB
  float* h = static_cast<float*>(cuda::allocate_pinned(n * sizeof(float)));
  for (size_t i = 0; i < n; ++i) h[i] = static_cast<float>(i % 1000);
  DevBuf d(static_cast<int64_t>(n));
  cuda::copy_host_to_device(d.p, h, n * sizeof(float));  // asynchronous from pinned memory
  cuda::deallocate_pinned(h);                              // freed while the copy may be queued
  float* again = static_cast<float*>(cuda::allocate_pinned(n * sizeof(float)));
  if (again == h) {
    // Handed out again: then the copy must have finished reading it, so overwriting is safe.
    std::fill(again, again + n, -1.f);
  }
  const std::vector<float> back = d.download();
  bool ok = true;
  for (size_t i = 0; i < n; ++i) ok = ok && back[i] == static_cast<float>(i % 1000);
  CHECK(ok);
  cuda::deallocate_pinned(again);
  cuda::synchronize();
  // Once the stream is idle a freed block of the same size comes back from the cache: the
  // oldest ready one, which is `h` when `again` was a new block (the copy still queued).
  float* third = static_cast<float*>(cuda::allocate_pinned(n * sizeof(float)));
  CHECK((third == again || third == h));
  cuda::deallocate_pinned(third);
}
#endif  // GANTRY_WITH_CUDA

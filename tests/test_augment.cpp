// Differentiable augmentations (layers/augment.h), the spatial_gather and affine_warp ops under
// them, and the ADA controller.
#include <catch2/catch.hpp>

#include <cmath>

#include "gantry/core/autograd.h"
#include "gantry/kernels/cpu/cpu_kernels.h"
#include "gantry/layers/augment.h"
#include "gantry/models/dcgan_trainer.h"
#include "gradcheck.h"

using namespace gantry;
using namespace gantry::test;
using augment::Geometry;

namespace {
Geometry geo(bool flip, int rot, int tx, int ty) {
  Geometry g;
  g.xflip = flip; g.rot90 = rot; g.tx = tx; g.ty = ty;
  return g;
}
std::vector<float> one(const Tensor& x, const Geometry& g) { return augment::apply_geometry(x, {g}).to_vector(); }
}  // namespace

TEST_CASE("spatial_gather: forward, kernel backward in double, op backward, errors") {
  Tensor x = Tensor::arange(8).reshape({1, 2, 2, 2});
  Tensor idx = Tensor::from_vector({3, -1, 0, 1}, {1, 4});
  CHECK(spatial_gather(x, idx, 2, 2).to_vector() == std::vector<float>{3, 0, 0, 1, 7, 0, 4, 5});
  const int64_t N = 2, C = 2, P = 9;
  std::vector<float> map = {8, 7, 6, 5, 4, 3, 2, 1, 0, -1, 0, 1, 2, 3, 4, 5, 6, 7};
  std::vector<double> xv = random_doubles(N * C * P, 1), wv = random_doubles(N * C * P, 2);
  auto loss = [&] {
    std::vector<double> yv(wv.size());
    cpu::spatial_gather_forward<double>(xv.data(), map.data(), yv.data(), N, C, P, P);
    double l = 0;
    for (size_t i = 0; i < yv.size(); ++i) l += yv[i] * wv[i];
    return l;
  };
  std::vector<double> dx(xv.size());
  cpu::spatial_gather_backward<double>(wv.data(), map.data(), dx.data(), N, C, P, P);
  CHECK(max_rel_err(dx, numeric_grad(xv, loss)) < 1e-7);
  Tensor m = Tensor::from_vector(map, {2, 9});
  CHECK(gradcheck_op([m](const std::vector<Tensor>& in) { return spatial_gather(in[0], m, 3, 3); }, {rnd({2, 2, 3, 3}, 3)}) < 2e-2);
  CHECK_THROWS_WITH(spatial_gather(x, Tensor::from_vector({4, 0, 0, 0}, {1, 4}), 2, 2), Catch::Contains("-1 or integer positions in [0, 4)"));
  CHECK_THROWS_WITH(spatial_gather(x, Tensor::zeros({2, 4}), 2, 2), Catch::Contains("should be [1, 4]"));
}

namespace {
// affine_warp's reference, written out from its contract with separate gathers: the four
// integer neighbours of each source position (reflected: -1 reads 1, n reads n - 2), each
// gathered and weighted, then summed in tap order.
Tensor warp_by_gathers(const Tensor& x, const std::vector<float>& th) {
  const int64_t N = x.shape()[0], H = x.shape()[2], W = x.shape()[3];
  auto reflect = [](int64_t i, int64_t n) {
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
  };
  std::vector<std::vector<float>> idx(4, std::vector<float>(N * H * W)), wt(4, std::vector<float>(N * H * W));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j) {
        const float* t = &th[6 * n];
        const double cx = (W - 1) / 2.0, cy = (H - 1) / 2.0, u = j - cx, v = i - cy;
        const double xs = t[0] * u + t[1] * v + t[2] + cx, ys = t[3] * u + t[4] * v + t[5] + cy;
        const double fx = xs - std::floor(xs), fy = ys - std::floor(ys);
        const int64_t x0 = static_cast<int64_t>(std::floor(xs)), y0 = static_cast<int64_t>(std::floor(ys));
        const int64_t p = (n * H + i) * W + j;
        for (int k = 0; k < 4; ++k) {
          idx[k][p] = static_cast<float>(reflect(y0 + k / 2, H) * W + reflect(x0 + k % 2, W));
          wt[k][p] = static_cast<float>((k / 2 ? fy : 1 - fy) * (k % 2 ? fx : 1 - fx));
        }
      }
  Tensor y;
  for (int k = 0; k < 4; ++k) {
    Tensor term = mul(spatial_gather(x, Tensor::from_vector(idx[k], {N, H * W}), H, W),
                      Tensor::from_vector(wt[k], {N, 1, H, W}));
    y = k == 0 ? term : add(y, term);
  }
  return y;
}
}  // namespace

TEST_CASE("affine_warp: the sum of four weighted gathers, exactly; the adjoint in double; errors") {
  // Rotations, shears, magnification past the borders (several reflections), a non-square image.
  const std::vector<float> th = {0.8f, -0.5f, 0.7f, 0.6f, 0.9f, -1.3f,   //
                                 1.3f, 0.f, 2.2f, 0.f, 0.77f, 0.f,       //
                                 -2.7f, 0.4f, -9.1f, 0.3f, 3.1f, 11.6f};
  const Tensor x = rnd({3, 2, 5, 7}, 11), theta = Tensor::from_vector(th, {3, 2, 3});
  CHECK(affine_warp(x, theta).to_vector() == warp_by_gathers(x, th).to_vector());
  // The kernels' backward is the adjoint of their forward: against finite differences in double.
  const int64_t N = 3, C = 2, H = 5, W = 7;
  std::vector<double> xv = random_doubles(N * C * H * W, 12), wv = random_doubles(N * C * H * W, 13);
  auto loss = [&] {
    std::vector<double> yv(wv.size());
    cpu::affine_warp_forward<double>(xv.data(), th.data(), yv.data(), N, C, H, W);
    double l = 0;
    for (size_t i = 0; i < yv.size(); ++i) l += yv[i] * wv[i];
    return l;
  };
  std::vector<double> dx(xv.size());
  cpu::affine_warp_backward<double>(wv.data(), th.data(), dx.data(), N, C, H, W);
  CHECK(max_rel_err(dx, numeric_grad(xv, loss)) < 1e-7);
  // Once, twice and three times through the recorded pair (warp, adjoint).
  CHECK(gradcheck_op([theta](const std::vector<Tensor>& in) { return affine_warp(in[0], theta); }, {x.detach().clone()}) < 2e-2);
  CHECK(gradgradcheck_op([theta](const std::vector<Tensor>& in) { return square(affine_warp(in[0], theta)); }, {x.detach().clone()}) < 2e-2);
  {
    // Three times: with y = A x, L = sum(y^3) has dL/dx = A'(3 y^2), then along w1
    // A'(6 y A w1), then along w2 A'(6 A w1 A w2) (A' = the adjoint kernel checked above).
    GradOptions keep;
    keep.create_graph = true;
    Tensor xi = x.detach().clone().requires_grad_();
    const Tensor w1 = rnd({3, 2, 5, 7}, 14), w2 = rnd({3, 2, 5, 7}, 15);
    const Tensor y = affine_warp(xi, theta);
    const Tensor g1 = grad({sum(mul(mul(y, y), y))}, {xi}, {}, keep)[0];
    const Tensor g2 = grad({sum(mul(g1, w1))}, {xi}, {}, keep)[0];
    const std::vector<float> g3 = grad({sum(mul(g2, w2))}, {xi})[0].to_vector();
    const std::vector<float> v = mul(mul(affine_warp(w1, theta), affine_warp(w2, theta)), 6.f).to_vector();
    std::vector<float> expect(v.size());
    cpu::affine_warp_backward<float>(v.data(), th.data(), expect.data(), N, C, H, W);
    for (size_t i = 0; i < v.size(); ++i) CHECK(g3[i] == Approx(expect[i]).epsilon(1e-5).margin(1e-5));
  }
  const Tensor sq = rnd({1, 1, 4, 4}, 1);
  CHECK_THROWS_WITH(affine_warp(sq, Tensor::zeros({2, 2, 3})), Catch::Contains("should be [1, 2, 3]"));
  CHECK_THROWS_WITH(affine_warp(rnd({1, 1, 1, 4}, 1), Tensor::zeros({1, 2, 3})), Catch::Contains("H, W >= 2"));
  CHECK_THROWS_WITH(affine_warp(sq, Tensor::from_vector({1, 0, NAN, 0, 1, 0}, {1, 2, 3})),
                    Catch::Contains("theta entry 2 (sample 0) is nan"));
}

TEST_CASE("geometric augmentations: exact pixels (flip, torch.rot90, zero-padded translation)") {
  Tensor x = Tensor::from_vector({1, 2, 3, 4}, {1, 1, 2, 2});  // [[1, 2], [3, 4]]
  CHECK(one(x, geo(true, 0, 0, 0)) == std::vector<float>{2, 1, 4, 3});
  CHECK(one(x, geo(false, 1, 0, 0)) == std::vector<float>{2, 4, 1, 3});  // torch.rot90(k=1)
  CHECK(one(x, geo(false, 2, 0, 0)) == std::vector<float>{4, 3, 2, 1});
  CHECK(one(x, geo(false, 3, 0, 0)) == std::vector<float>{3, 1, 4, 2});
  CHECK(one(x, geo(false, 0, 1, 0)) == std::vector<float>{0, 1, 0, 3});  // right by 1
  CHECK(one(x, geo(false, 0, 0, 1)) == std::vector<float>{0, 0, 1, 2});  // down by 1
  CHECK(one(x, geo(false, 0, -1, -1)) == std::vector<float>{4, 0, 0, 0});
  // Order: flip, then rotation, then translation.
  CHECK(one(x, geo(true, 1, 0, 0)) == std::vector<float>{1, 3, 2, 4});
  // 3x3 rotation against torch.rot90's definition out[i][j] = in[j][S-1-i].
  Tensor y = Tensor::arange(9).reshape({1, 1, 3, 3});
  std::vector<float> r = one(y, geo(false, 1, 0, 0));
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) CHECK(r[i * 3 + j] == static_cast<float>(j * 3 + (2 - i)));
}

namespace {
// Every augmentation, with fixed per-sample choices for a batch of two, and the whole pipeline.
std::vector<std::function<Tensor(const Tensor&)>> every_augmentation() {
  return {
      [](const Tensor& t) { return augment::apply_geometry(t, {geo(true, 1, 1, -1), geo(false, 3, 0, 1)}); },
      [](const Tensor& t) { return augment::brightness(t, {0.3f, -0.2f}); },
      [](const Tensor& t) { return augment::contrast(t, {1.7f, 0.6f}); },
      [](const Tensor& t) { return augment::saturation(t, {2.0f, 0.5f}); },
      [](const Tensor& t) { return augment::cutout(t, {0.5f, 0.1f}, {0.5f, 0.9f}); },
      [](const Tensor& t) {
        Generator g(11);
        return augment_images(t, 0.7f, g);
      },
  };
}
}  // namespace

TEST_CASE("every augmentation passes gradients (finite differences)") {
  const Tensor x = rnd({2, 3, 4, 4}, 5);
  for (const auto& f : every_augmentation())
    CHECK(gradcheck_op([f](const std::vector<Tensor>& in) { return f(in[0]); }, {x.detach().clone()}) < 2e-2);
}

TEST_CASE("every augmentation differentiates twice (R1 through ADA, as StyleGAN2-ADA)") {
  // gradgradcheck_op also differentiates along the incoming gradient w, the path a penalty's
  // chain takes through spatial_gather's recorded backward (a scatter whose gradient is the
  // gather). square() makes the input gradient depend on x.
  Tensor m = Tensor::from_vector({8, 7, 6, 5, 4, 3, 2, 1, 0, -1, 0, 1, 2, 3, 4, 5, 6, 7}, {2, 9});
  CHECK(gradgradcheck_op([m](const std::vector<Tensor>& in) { return spatial_gather(in[0], m, 3, 3); },
                         {rnd({2, 2, 3, 3}, 8)}) < 2e-2);
  const Tensor x = rnd({2, 3, 4, 4}, 7);
  for (const auto& f : every_augmentation())
    CHECK(gradgradcheck_op([f](const std::vector<Tensor>& in) { return square(f(in[0])); }, {x.detach().clone()}) < 2e-2);
}

TEST_CASE("warp: identity, integer and half-pixel shifts with reflection, a quarter turn as torch.rot90") {
  Tensor x = Tensor::arange(16).reshape({1, 1, 4, 4});  // in[i][j] = 4 i + j
  augment::Warp id;
  CHECK(augment::warp(x, {id}).to_vector() == x.to_vector());
  augment::Warp right;
  right.tx = 1;  // out[i][j] = in[i][j + 1], and column 4 reflects to 2
  std::vector<float> r = augment::warp(x, {right}).to_vector();
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) CHECK(r[i * 4 + j] == static_cast<float>(4 * i + (j < 3 ? j + 1 : 2)));
  augment::Warp half;
  half.ty = -0.5f;  // between rows i - 1 and i; row -1 reflects to 1
  std::vector<float> h = augment::warp(x, {half}).to_vector();
  for (int j = 0; j < 4; ++j) {
    CHECK(h[j] == Approx(0.5 * (4 + j) + 0.5 * j));
    CHECK(h[8 + j] == Approx(0.5 * (4 + j) + 0.5 * (8 + j)));
  }
  augment::Warp quarter;  // x_in = c - (i - c) = S - 1 - i, y_in = j: out[i][j] = in[j][S-1-i]
  quarter.m00 = 0; quarter.m01 = -1; quarter.m10 = 1; quarter.m11 = 0;
  CHECK(augment::warp(x, {quarter}).to_vector() == one(x, geo(false, 1, 0, 0)));
  CHECK_THROWS_WITH(augment::warp(x, {id, id}), Catch::Contains("2 per-sample values for 1 images"));
}

TEST_CASE("warp and the general geometry differentiate once and twice") {
  Tensor x = rnd({2, 2, 5, 5}, 9);
  augment::Warp a, b;
  a.m00 = 0.8f; a.m01 = -0.5f; a.m10 = 0.6f; a.m11 = 0.9f; a.tx = 0.7f; a.ty = -1.3f;
  b.m00 = 1.3f; b.m11 = 0.77f; b.tx = 2.2f;
  const std::vector<augment::Warp> w = {a, b};
  CHECK(gradcheck_op([w](const std::vector<Tensor>& in) { return augment::warp(in[0], w); }, {x.detach().clone()}) < 2e-2);
  CHECK(gradgradcheck_op([w](const std::vector<Tensor>& in) { return square(augment::warp(in[0], w)); }, {x.detach().clone()}) < 2e-2);
  CHECK(gradgradcheck_op([](const std::vector<Tensor>& in) {
    Generator g(12);
    return square(augment_images(in[0], 0.8f, g, /*geometric=*/true));
  }, {rnd({2, 3, 4, 4}, 10)}) < 2e-2);
}

TEST_CASE("augment_images with the general geometry: p = 0 is the identity, draws after the old ones") {
  Tensor x = rnd({4, 3, 8, 8}, 11);
  Generator plain(3), geom(3);
  augment_images(x, 0.5f, plain);
  const uint64_t old_offset = plain.offset();
  CHECK(augment_images(x, 0.f, geom, true).to_vector() == x.to_vector());
  {  // exactly its 7 uniforms and 4 normals per image more
    Generator ref(3);
    NoGradGuard guard;
    Tensor::rand({4, 12}, &ref);
    Tensor::randn({4, 3}, &ref);
    CHECK(ref.offset() == old_offset);
    Tensor::rand({4, 7}, &ref);
    Tensor::randn({4, 4}, &ref);
    CHECK(geom.offset() == ref.offset());
  }
  {  // ... and after the old ones: 1x1 images skip the warp, so the rest must come out the same
    Tensor dot = rnd({6, 3, 1, 1}, 13);
    Generator g1(8), g2(8);
    CHECK(augment_images(dot, 0.7f, g1, true).to_vector() == augment_images(dot, 0.7f, g2, false).to_vector());
  }
  Generator a(4), b(4), c(4);
  const std::vector<float> with = augment_images(x, 1.f, a, true).to_vector();
  CHECK(with == augment_images(x, 1.f, b, true).to_vector());
  CHECK(with != augment_images(x, 1.f, c, false).to_vector());
  // Without it, the stream (and so an older run's resume) is what it was: 12 uniforms and 3
  // normals per image.
  Generator d(5), e(5);
  augment_images(x, 0.3f, d);
  NoGradGuard guard;
  Tensor::rand({4, 12}, &e);
  Tensor::randn({4, 3}, &e);
  CHECK(d.offset() == e.offset());
}

TEST_CASE("color and cutout by hand") {
  Tensor x = Tensor::from_vector({0.f, 0.5f, 1.f, -0.5f}, {1, 1, 2, 2});  // mean 0.25
  CHECK(augment::brightness(x, {0.1f}).to_vector() == std::vector<float>{0.1f, 0.6f, 1.1f, -0.4f});
  std::vector<float> c = augment::contrast(x, {2.f}).to_vector();
  CHECK(c[0] == Approx(-0.25f));
  CHECK(c[2] == Approx(1.75f));
  Tensor rgb = Tensor::from_vector({1.f, 0.f, -1.f}, {1, 3, 1, 1});  // gray 0
  CHECK(augment::saturation(rgb, {0.f}).to_vector() == std::vector<float>{0.f, 0.f, 0.f});
  CHECK(augment::saturation(x, {0.f}).to_vector() == x.to_vector());  // gray: unchanged
  Tensor ones = Tensor::ones({1, 1, 4, 4});
  std::vector<float> cut = augment::cutout(ones, {0.5f}, {0.5f}).to_vector();  // 2x2 square at (1..2, 1..2)
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) CHECK(cut[i * 4 + j] == ((i >= 1 && i <= 2 && j >= 1 && j <= 2) ? 0.f : 1.f));
}

TEST_CASE("augment_images: p = 0 is the identity, draws are reproducible") {
  Tensor x = rnd({4, 3, 8, 8}, 6);
  Generator g1(1), g2(1);
  CHECK(augment_images(x, 0.f, g1).to_vector() == x.to_vector());
  const uint64_t off = g1.offset();
  const std::vector<float> full = augment_images(x, 1.f, g1).to_vector();
  CHECK(full != x.to_vector());
  CHECK(g1.offset() == 2 * off);  // the same amount of randomness whatever p is
  augment_images(x, 0.f, g2);
  CHECK(augment_images(x, 1.f, g2).to_vector() == full);
  Generator a(9), b(9);
  CHECK(augment_images(x, 0.5f, a).to_vector() == augment_images(x, 0.5f, b).to_vector());
}

TEST_CASE("ADA: p moves by sign(r_t - target) * images / speed every interval steps") {
  AdaOptions o;
  o.target = 0.6;
  o.speed = 80;
  o.interval = 2;
  AdaptiveAugment ada(o, 3);
  Tensor confident = Tensor::full({4}, 0.9f), unsure = Tensor::full({4}, 0.2f);
  ada.observe_real(confident);
  ada.end_step();
  CHECK(ada.p() == 0.0);  // not yet: interval 2
  ada.observe_real(confident);
  ada.end_step();
  CHECK(ada.p() == Approx(8.0 / 80));
  CHECK(ada.last_rt() == 1.0);
  const std::string state = ada.state_json();
  for (int i = 0; i < 2; ++i) {
    ada.observe_real(unsure);
    ada.end_step();
  }
  CHECK(ada.p() == Approx(0.0));  // 0.1 - 0.1
  for (int i = 0; i < 2; ++i) {
    ada.observe_real(unsure);
    ada.end_step();
  }
  CHECK(ada.p() == 0.0);  // clamped
  // The state round-trips, random stream included.
  AdaptiveAugment back(o, 999);
  back.load_state_json(state);
  AdaptiveAugment orig(o, 3);
  orig.load_state_json(state);
  Tensor x = rnd({4, 1, 8, 8}, 7);
  CHECK(back.apply(x).to_vector() == orig.apply(x).to_vector());
  CHECK(back.p() == Approx(0.1));
  CHECK_THROWS_WITH(AdaptiveAugment(AdaOptions{1.5, 10, 4, 0}, 1), Catch::Contains("target"));
}

TEST_CASE("DCGANTrainer with ADA: D sees augmented images, p adapts, G still trains") {
  DCGANConfig c;
  c.nz = 8; c.ngf = 4; c.ndf = 4; c.nc = 1; c.image_size = 32;
  Generator init(3), noise(4);
  DCGANTrainer t(c, Device::cpu(), &init);
  AdaOptions o;
  o.speed = 16;
  o.interval = 1;
  o.initial_p = 0.5;
  t.enable_ada(o, 5);
  Tensor real = Tensor::rand({4, 1, 32, 32}, &noise) * 2.f - 1.f;
  const std::vector<float> w0 = t.generator().named_parameters()[0].second.to_vector();
  StepStats st = t.step(real, noise);
  CHECK(std::isfinite(st.loss_d));
  CHECK((st.ada_p == Approx(0.25) || st.ada_p == Approx(0.75) || st.ada_p == Approx(0.5)));
  CHECK(t.generator().named_parameters()[0].second.to_vector() != w0);
}

TEST_CASE("DCGANTrainer with ADA and R1: the gradient at the reals through the augmentation (StyleGAN2-ADA), or at the augmented images") {
  DCGANConfig c;
  c.nz = 8; c.ngf = 4; c.ndf = 4; c.nc = 3; c.image_size = 32;
  c.r1_gamma = 2;
  AdaOptions o;
  o.initial_p = 1;  // every augmentation on every image: translation and cutout zero parts of the gradient
  Generator data(6);
  const Tensor real = Tensor::rand({3, 3, 32, 32}, &data) * 2.f - 1.f;
  const Tensor z = Tensor::randn({3, 8, 1, 1}, &data);
  // The penalty from the step, and the same one recomputed from a fresh trainer's D (same init,
  // so the same weights) and an augmentation with the same seed (the step's first draw is the reals').
  auto penalties = [&](bool through) {
    DCGANConfig cc = c;
    cc.r1_through_augment = through;
    Generator init(3);
    DCGANTrainer t(cc, Device::cpu(), &init);
    t.enable_ada(o, 5);
    const float stepped = t.step(real, z).penalty;
    Generator init2(3);
    DCGANTrainer fresh(cc, Device::cpu(), &init2);
    fresh.discriminator().train();
    AdaptiveAugment aug(o, 5);
    Tensor at = real.detach().requires_grad_(true);
    Tensor seen = aug.apply(at);
    if (!through) at = seen = seen.detach().requires_grad_(true);
    const Tensor g = grad({sum(fresh.discriminator().forward_logits(seen))}, {at})[0];
    const float expected = 0.5f * static_cast<float>(c.r1_gamma) * mean(sum(square(g), {1, 2, 3})).item();
    return std::make_pair(stepped, expected);
  };
  const auto [through, through_expected] = penalties(true);
  const auto [at_seen, at_seen_expected] = penalties(false);
  CHECK(through == Approx(through_expected).epsilon(1e-5));
  CHECK(at_seen == Approx(at_seen_expected).epsilon(1e-5));
  // The two differ: the translation's zero padding and cutout's square carry no gradient back.
  CHECK(std::abs(through - at_seen) > 0.05f * at_seen);
}

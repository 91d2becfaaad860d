// EMA of a model's weights (optim/ema.h) and the trainer's EMA generator.
#include <catch2/catch.hpp>

#include <cmath>

#include "gantry/layers/layers.h"
#include "gantry/models/dcgan_trainer.h"
#include "gantry/optim/ema.h"

using namespace gantry;

TEST_CASE("EMA: starts as a copy, then ema = d * ema + (1 - d) * w; buffers copied") {
  Generator g(1);
  auto src = std::make_shared<Sequential>(std::initializer_list<ModulePtr>{make<Linear>(3, 2, true, &g), make<BatchNorm2d>(2)});
  auto dst = std::make_shared<Sequential>(std::initializer_list<ModulePtr>{make<Linear>(3, 2, true, &g), make<BatchNorm2d>(2)});
  EMA ema(*src, *dst, 0.9);
  auto sp = src->parameters(), dp = dst->parameters();
  for (size_t i = 0; i < sp.size(); ++i) CHECK(sp[i].to_vector() == dp[i].to_vector());
  const std::vector<float> before = dp[0].to_vector();
  sp[0].add_(Tensor::ones(sp[0].shape()), 1.f);  // w = w_old + 1
  auto rm = src->named_buffers()[0].second;
  rm.fill_(5.f);
  ema.update();
  const std::vector<float> after = dp[0].to_vector(), w = sp[0].to_vector();
  for (size_t i = 0; i < after.size(); ++i) CHECK(after[i] == Approx(0.9f * before[i] + 0.1f * w[i]).epsilon(1e-6));
  CHECK(dst->named_buffers()[0].second.to_vector() == std::vector<float>{5.f, 5.f});

  auto other = std::make_shared<Sequential>(std::initializer_list<ModulePtr>{make<Linear>(3, 3, true, &g), make<BatchNorm2d>(2)});
  CHECK_THROWS_WITH(EMA(*src, *other, 0.9), Catch::Contains("0.weight"));
  CHECK_THROWS_WITH(EMA(*src, *dst, 1.5), Catch::Contains("decay"));
}

TEST_CASE("EMA ramp-up (StyleGAN2-ADA): update t averages with min(decay, 0.5^(1/(r t))), the first one copies") {
  Generator g(2);
  auto src = std::make_shared<Sequential>(std::initializer_list<ModulePtr>{make<Linear>(3, 2, true, &g)});
  auto dst = std::make_shared<Sequential>(std::initializer_list<ModulePtr>{make<Linear>(3, 2, true, &g)});
  EMA ema(*src, *dst, 0.999, 0.05);
  auto sp = src->parameters(), dp = dst->parameters();
  CHECK(ema.current_decay() == 0.0);
  sp[0].add_(Tensor::ones(sp[0].shape()), 1.f);
  ema.update();  // t = 0: a half-life of 0 steps, the average is the weights
  CHECK(dp[0].to_vector() == sp[0].to_vector());
  CHECK(ema.updates() == 1);
  // t = 1: half-life 0.05 steps, decay 0.5^20 (about 1e-6).
  CHECK(ema.current_decay() == Approx(std::pow(0.5, 20.0)));
  // t = 100: half-life 5 steps, 0.5^(1/5) = 0.8706, below the 0.999 cap.
  ema.set_updates(100);
  CHECK(ema.current_decay() == Approx(0.8705505633));
  const std::vector<float> before = dp[0].to_vector();
  sp[0].add_(Tensor::ones(sp[0].shape()), 1.f);
  ema.update();
  const std::vector<float> after = dp[0].to_vector(), w = sp[0].to_vector();
  for (size_t i = 0; i < after.size(); ++i) CHECK(after[i] == Approx(0.8705505633 * before[i] + 0.1294494367 * w[i]).epsilon(1e-6));
  // Past t = ln 2 / (r (-ln 0.999)) = 13856 the cap holds.
  ema.set_updates(13800);
  CHECK(ema.current_decay() < 0.999);
  ema.set_updates(13900);
  CHECK(ema.current_decay() == 0.999);
  // Without a ramp-up the decay is the decay from the start.
  EMA plain(*src, *dst, 0.9);
  CHECK(plain.current_decay() == 0.9);
  CHECK_THROWS_WITH(EMA(*src, *dst, 0.9, -1), Catch::Contains("rampup"));
  CHECK_THROWS_WITH(ema.set_updates(-1), Catch::Contains("must be >= 0"));
}

TEST_CASE("DCGANTrainer with EMA: the EMA generator follows G and sample() uses it") {
  DCGANConfig c;
  c.nz = 8; c.ngf = 4; c.ndf = 4; c.nc = 1; c.image_size = 32;
  Generator init(3), noise(4);
  DCGANTrainer t(c, Device::cpu(), &init);
  t.enable_ema(0.5);
  REQUIRE(t.has_ema());
  const std::vector<float> w0 = t.generator().named_parameters()[0].second.to_vector();
  Tensor real = Tensor::rand({4, 1, 32, 32}, &noise) * 2.f - 1.f;
  t.step(real, noise);
  const std::vector<float> w1 = t.generator().named_parameters()[0].second.to_vector();
  const std::vector<float> e1 = t.generator_ema().named_parameters()[0].second.to_vector();
  for (size_t i = 0; i < e1.size(); i += 97) CHECK(e1[i] == Approx(0.5f * w0[i] + 0.5f * w1[i]).margin(1e-7));
  // Buffers (BN running stats) are G's.
  CHECK(t.generator_ema().named_buffers()[0].second.to_vector() == t.generator().named_buffers()[0].second.to_vector());
  Tensor z = Tensor::randn({2, 8, 1, 1}, &noise);
  const std::vector<float> a = t.sample(z, true).to_vector(), b = t.sample(z, true, /*use_ema=*/false).to_vector();
  CHECK(a != b);
}

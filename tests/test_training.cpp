// End-to-end training sanity check on the CPU: a small DCGAN (image 32, nc 1, widths 8) on a
// tiny fixed batch, with BCE and Adam as in the PyTorch DCGAN example.
//   1. The discriminator learns to separate the real batch from the generator's output:
//      D(x) goes up, D(G(z)) goes down.
//   2. With D frozen, the generator's loss falls: this needs the gradient to flow from D's
//      output back through the fake images into G, so a detached fake (or a broken backward
//      of any layer in between) fails the test.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <vector>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/layers/loss.h"
#include "gantry/models/dcgan.h"
#include "gantry/optim/adam.h"

using namespace gantry;

namespace {

constexpr int kBatch = 8, kNz = 16, kSize = 32;

// "Real" images: a bright disc on a dark background, its centre moving with the sample index,
// in [-1, 1] like the data pipeline's output.
Tensor real_batch() {
  std::vector<float> v(kBatch * kSize * kSize);
  for (int n = 0; n < kBatch; ++n)
    for (int y = 0; y < kSize; ++y)
      for (int x = 0; x < kSize; ++x) {
        const float cx = 10.f + 1.5f * n, cy = 16.f, r = 7.f;
        const float d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
        v[(n * kSize + y) * kSize + x] = d2 < r * r ? 0.9f : -0.9f;
      }
  return Tensor::from_vector(v, {kBatch, 1, kSize, kSize});
}

float mean_value(const Tensor& t) { return mean(t).item(); }

}  // namespace

TEST_CASE("DCGAN training: D learns to separate, then G's loss falls with D frozen") {
  const auto t0 = std::chrono::steady_clock::now();
  Generator rng(2024);
  auto G = make_generator(kNz, 8, 1, kSize, &rng);
  auto D = make_discriminator(1, 8, kSize, &rng);
  const Tensor x = real_batch();
  const Tensor z = Tensor::randn({kBatch, kNz, 1, 1}, &rng);
  const Tensor ones = Tensor::ones({kBatch}), zeros = Tensor::zeros({kBatch});
  BCELoss bce;
  Adam optD(D->parameters(), AdamOptions{2e-4, 0.5, 0.999});
  Adam optG(G->parameters(), AdamOptions{2e-4, 0.5, 0.999});

  // ---- 1. D steps, exactly as in the DCGAN example (real batch, then detached fake batch) ----
  float d_real0, d_fake0;
  {
    NoGradGuard ng;
    d_real0 = mean_value(D->forward(x));
    d_fake0 = mean_value(D->forward(G->forward(z)));
  }
  for (int step = 0; step < 80; ++step) {
    optD.zero_grad();
    Tensor err_real = bce(D->forward(x), ones);
    err_real.backward();
    Tensor fake = G->forward(z);
    Tensor err_fake = bce(D->forward(fake.detach()), zeros);
    err_fake.backward();
    optD.step();
  }
  float d_real1, d_fake1;
  {
    NoGradGuard ng;
    d_real1 = mean_value(D->forward(x));
    d_fake1 = mean_value(D->forward(G->forward(z)));
  }
  INFO("D(x) " << d_real0 << " -> " << d_real1 << ", D(G(z)) " << d_fake0 << " -> " << d_fake1);
  CHECK(d_real1 > d_real0);
  CHECK(d_fake1 < d_fake0);
  CHECK(d_real1 > 0.8f);
  CHECK(d_fake1 < 0.2f);

  // ---- 2. G steps against the frozen D (its optimizer never steps again) ----
  const StateDict d_before = D->state_dict();
  std::vector<std::vector<float>> d_weights;
  for (const auto& p : D->parameters()) d_weights.push_back(p.to_vector());
  auto g_loss = [&]() { return bce(D->forward(G->forward(z)), ones); };
  float g_loss0;
  {
    NoGradGuard ng;
    g_loss0 = g_loss().item();
  }
  float g_loss_last = g_loss0;
  for (int step = 0; step < 80; ++step) {
    optG.zero_grad();
    D->zero_grad();
    Tensor err_g = g_loss();
    err_g.backward();
    if (step == 0) {
      // The gradient reached every generator parameter through D and the fake images.
      for (const auto& [name, p] : G->named_parameters()) {
        INFO(name);
        REQUIRE(p.grad().defined());
        double norm = 0;
        for (float g : p.grad().to_vector()) norm += double(g) * g;
        CHECK(norm > 0);
      }
    }
    optG.step();
    g_loss_last = err_g.item();
  }
  float g_loss1;
  {
    NoGradGuard ng;
    g_loss1 = g_loss().item();
  }
  INFO("G loss " << g_loss0 << " -> " << g_loss1 << " (last step " << g_loss_last << ")");
  CHECK(g_loss1 < 0.5f * g_loss0);
  // D really was frozen: its parameters did not move.
  const auto d_params = D->parameters();
  for (std::size_t i = 0; i < d_params.size(); ++i) CHECK(d_params[i].to_vector() == d_weights[i]);

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("D(x) " << d_real0 << " -> " << d_real1 << ", D(G(z)) " << d_fake0 << " -> " << d_fake1
               << "; G loss " << g_loss0 << " -> " << g_loss1 << "; " << secs << " s");
}

// The ops the feature classifier needs (avg_pool2d / global_avg_pool2d, log_softmax,
// cross_entropy): forward against hand values, kernel backward in double by finite differences,
// op backward through autograd; and the classifier itself (shapes, save/load, it learns).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "gantry/kernels/cpu/cpu_kernels.h"
#include "gantry/models/classifier.h"
#include "gantry/optim/adam.h"
#include "gradcheck.h"

using namespace gantry;
using namespace gantry::test;

namespace {
std::string tmp_path(const std::string& name) {
  const char* env = std::getenv("GANTRY_TEST_TMP");
  auto dir = std::filesystem::path(env ? env : std::filesystem::temp_directory_path().string()) / "classifier";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}
}  // namespace

TEST_CASE("avg_pool2d: forward by hand, kernel and op gradients") {
  Tensor x = Tensor::arange(16).reshape({1, 1, 4, 4});
  Tensor y = avg_pool2d(x, 2);
  REQUIRE(y.shape() == Shape{1, 1, 2, 2});
  CHECK(y.to_vector() == std::vector<float>{2.5f, 4.5f, 10.5f, 12.5f});
  Tensor y3 = avg_pool2d(x, 3, 1);  // overlapping windows
  CHECK(y3.to_vector() == std::vector<float>{5.f, 6.f, 9.f, 10.f});
  Tensor g = global_avg_pool2d(rnd({2, 3, 4, 4}, 1));
  REQUIRE(g.shape() == Shape{2, 3});

  for (int k : {2, 3})
    for (int s : {1, 2}) {
      const int64_t NC = 2, H = 5, W = 6, OH = (H - k) / s + 1, OW = (W - k) / s + 1;
      std::vector<double> xv = random_doubles(NC * H * W, 3), wv = random_doubles(NC * OH * OW, 4);
      auto loss = [&] {
        std::vector<double> yv(wv.size());
        cpu::avg_pool2d_forward<double>(xv.data(), yv.data(), NC, H, W, k, s);
        double l = 0;
        for (size_t i = 0; i < yv.size(); ++i) l += yv[i] * wv[i];
        return l;
      };
      std::vector<double> dx(xv.size());
      cpu::avg_pool2d_backward<double>(wv.data(), dx.data(), NC, H, W, k, s);
      CHECK(max_rel_err(dx, numeric_grad(xv, loss)) < 1e-7);
    }
  CHECK(gradcheck_op([](const std::vector<Tensor>& in) { return avg_pool2d(in[0], 2, 1); }, {rnd({2, 2, 4, 5}, 5)}) < 2e-2);
  CHECK(gradcheck_op([](const std::vector<Tensor>& in) { return global_avg_pool2d(in[0]); }, {rnd({2, 2, 4, 4}, 6)}) < 2e-2);
  CHECK_THROWS_WITH(avg_pool2d(x, 5), Catch::Contains("larger than the input"));
  CHECK_THROWS_WITH(avg_pool2d(x.reshape({4, 4}), 2), Catch::Contains("[N, C, H, W]"));
}

TEST_CASE("log_softmax and cross_entropy: values, gradients, errors") {
  Tensor x = Tensor::from_vector({1.f, 2.f, 3.f, 0.f, 0.f, 0.f}, {2, 3});
  std::vector<float> y = log_softmax(x).to_vector();
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  CHECK(y[0] == Approx(1 - lse));
  CHECK(y[2] == Approx(3 - lse));
  CHECK(y[4] == Approx(-std::log(3.0)));
  // Huge logits stay finite (the max shift).
  CHECK(std::isfinite(log_softmax(Tensor::from_vector({1000.f, 0.f}, {1, 2})).to_vector()[1]));

  Tensor labels = Tensor::from_vector({2.f, 0.f}, {2});
  CHECK(cross_entropy(x, labels).item() == Approx(((lse - 3) + std::log(3.0)) / 2));
  CHECK(cross_entropy(Tensor::zeros({4, 4}), Tensor::from_vector({0, 1, 2, 3}, {4})).item() == Approx(std::log(4.0)));

  {  // kernels in double
    const int64_t M = 3, C = 4;
    std::vector<double> xv = random_doubles(M * C, 7, -3, 3), wv = random_doubles(M * C, 8);
    std::vector<double> lab = {0, 3, 1};
    auto loss_ls = [&] {
      std::vector<double> yv(xv.size());
      cpu::log_softmax_forward<double>(xv.data(), yv.data(), M, C);
      double l = 0;
      for (size_t i = 0; i < yv.size(); ++i) l += yv[i] * wv[i];
      return l;
    };
    std::vector<double> yv(xv.size()), dx(xv.size());
    cpu::log_softmax_forward<double>(xv.data(), yv.data(), M, C);
    cpu::log_softmax_backward<double>(yv.data(), wv.data(), dx.data(), M, C);
    CHECK(max_rel_err(dx, numeric_grad(xv, loss_ls)) < 1e-7);
    auto loss_ce = [&] { return cpu::cross_entropy_forward<double>(xv.data(), lab.data(), M, C); };
    cpu::cross_entropy_backward<double>(xv.data(), lab.data(), 1.0, dx.data(), M, C);
    CHECK(max_rel_err(dx, numeric_grad(xv, loss_ce)) < 1e-7);
  }
  CHECK(gradcheck_op([](const std::vector<Tensor>& in) { return log_softmax(in[0]); }, {rnd({3, 5}, 9, -2, 2)}) < 2e-2);
  Tensor lab3 = Tensor::from_vector({4.f, 0.f, 2.f}, {3});
  CHECK(gradcheck_op([lab3](const std::vector<Tensor>& in) { return cross_entropy(in[0], lab3); }, {rnd({3, 5}, 10, -2, 2)}) < 2e-2);

  CHECK_THROWS_WITH(cross_entropy(x, Tensor::from_vector({3.f, 0.f}, {2})), Catch::Contains("class indices in [0, 3)"));
  CHECK_THROWS_WITH(cross_entropy(x, Tensor::from_vector({0.f}, {1})), Catch::Contains("should be [2]"));
  CHECK_THROWS_WITH(log_softmax(Tensor::zeros({2, 3, 4})), Catch::Contains("[N, C]"));
}

TEST_CASE("ConvClassifier: shapes, save/load round trip, learns a toy problem") {
  ClassifierConfig c;
  c.channels = 1;
  c.num_classes = 2;
  c.width = 4;
  c.image_size = 16;
  Generator gen(1);
  ConvClassifier net(c, &gen);
  Tensor x = rnd({6, 1, 16, 16}, 2);
  CHECK(net.features(x).shape() == Shape{6, 16});
  CHECK(net.forward(x).shape() == Shape{6, 2});

  // Toy task: class 1 has a bright left half, class 0 a bright right half.
  std::vector<float> xs, ls;
  Generator noise(3);
  for (int i = 0; i < 32; ++i) {
    const int cls = i % 2;
    for (int y = 0; y < 16; ++y)
      for (int xx = 0; xx < 16; ++xx) xs.push_back(((xx < 8) == (cls == 1)) ? 0.8f : -0.8f);
    ls.push_back(static_cast<float>(cls));
  }
  Tensor images = Tensor::from_vector(xs, {32, 1, 16, 16});
  images.add_(Tensor::randn({32, 1, 16, 16}, &noise), 0.3f);
  Tensor labels = Tensor::from_vector(ls, {32});
  AdamOptions ao;
  ao.lr = 1e-2;
  Adam opt(net.parameters(), ao);
  float first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    opt.zero_grad();
    Tensor loss = cross_entropy(net.forward(images), labels);
    loss.backward();
    opt.step();
    if (step == 0) first = loss.item();
    last = loss.item();
  }
  CHECK(last < 0.5f * first);

  net.eval();
  const std::string path = tmp_path("toy.safetensors");
  save_classifier(path, net);
  auto back = load_classifier(path);
  CHECK(back->config.width == 4);
  CHECK(back->feature_dim() == 16);
  const std::vector<float> a = net.features(images).to_vector(), b = back->features(images).to_vector();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == b[i]);
  // A file that is not a classifier says so.
  save_safetensors(path + ".other", net.state_dict(), {{"model", "dcgan-generator"}});
  CHECK_THROWS_WITH(load_classifier(path + ".other"), Catch::Contains("not a gantry classifier"));
}

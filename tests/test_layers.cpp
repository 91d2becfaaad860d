// Modules: registration order and PyTorch's state_dict names, strict loading, modes, devices,
// each layer's forward against a hand computation, init, losses, and a finite-difference
// gradient check through a small Sequential.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/layers/init.h"
#include "gantry/layers/layers.h"
#include "gantry/layers/loss.h"
#include "gradcheck.h"

using namespace gantry;
using Catch::Matchers::Contains;

namespace {

std::vector<std::string> keys(const StateDict& sd) {
  std::vector<std::string> k;
  for (const auto& e : sd) k.push_back(e.name);
  return k;
}

double mean_of(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return s / v.size();
}

double std_of(const std::vector<float>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (float x : v) s += (x - m) * (x - m);
  return std::sqrt(s / v.size());
}

// Nested like PyTorch's `nn.Sequential(nn.Conv2d(1,2,3,bias=False), nn.BatchNorm2d(2), nn.ReLU(),
// nn.Sequential(nn.Flatten(), nn.Linear(8, 3)))`.
std::shared_ptr<Sequential> small_net(Generator* g) {
  return make<Sequential>(std::initializer_list<ModulePtr>{
      make<Conv2d>(1, 2, 3, 1, 0, false, g), make<BatchNorm2d>(2), make<ReLU>(),
      make<Sequential>(std::initializer_list<ModulePtr>{make<Flatten>(), make<Linear>(8, 3, true, g)})});
}

}  // namespace

TEST_CASE("Module: state_dict names, order and dtypes follow PyTorch") {
  Generator g(1);
  auto net = small_net(&g);
  const StateDict sd = net->state_dict();
  CHECK(keys(sd) == std::vector<std::string>{"0.weight", "1.weight", "1.bias", "1.running_mean",
                                             "1.running_var", "1.num_batches_tracked", "3.1.weight",
                                             "3.1.bias"});
  for (const auto& e : sd) CHECK(e.dtype == (e.name == "1.num_batches_tracked" ? DType::I64 : DType::F32));
  CHECK(find_tensor(sd, "1.num_batches_tracked")->tensor.shape() == Shape{});
  CHECK(find_tensor(sd, "0.weight")->tensor.shape() == Shape{2, 1, 3, 3});
  CHECK(find_tensor(sd, "3.1.weight")->tensor.shape() == Shape{3, 8});

  const auto np = net->named_parameters();
  REQUIRE(np.size() == 5);
  CHECK(np[0].first == "0.weight");
  CHECK(np[4].first == "3.1.bias");
  CHECK(net->num_parameters() == 18 + 2 + 2 + 24 + 3);
  for (const auto& p : net->parameters()) CHECK(p.requires_grad());
  for (const auto& b : net->named_buffers()) CHECK_FALSE(b.second.requires_grad());
  // state_dict shares storage with the module, as PyTorch's does.
  CHECK(sd[0].tensor.data() == std::static_pointer_cast<Conv2d>((*net)[0])->weight.data());
}

TEST_CASE("Module: load_state_dict copies values and strict errors list every key") {
  Generator g1(1), g2(2);
  auto a = small_net(&g1), b = small_net(&g2);
  const Tensor w_handle = std::static_pointer_cast<Conv2d>((*b)[0])->weight;
  b->load_state_dict(a->state_dict());
  for (const auto& e : a->state_dict())
    CHECK(find_tensor(b->state_dict(), e.name)->tensor.to_vector() == e.tensor.to_vector());
  // In place: the handle held before the load sees the new values.
  CHECK(w_handle.to_vector() == a->state_dict()[0].tensor.to_vector());

  StateDict sd = a->state_dict();
  sd.erase(sd.begin() + 2);  // 1.bias missing
  sd.push_back({"extra.weight", Tensor::zeros({1})});
  sd[0].tensor = Tensor::zeros({2, 1, 2, 2});  // wrong shape for 0.weight
  const auto before = b->state_dict()[1].tensor.to_vector();
  CHECK_THROWS_WITH(b->load_state_dict(sd),
                    Contains("missing key(s) (1): \"1.bias\"") && Contains("unexpected key(s) (1): \"extra.weight\"") &&
                        Contains("size mismatch for 0.weight") && Contains("[2, 1, 2, 2]") &&
                        Contains("[2, 1, 3, 3]"));
  // A failed load changes nothing.
  CHECK(b->state_dict()[1].tensor.to_vector() == before);

  // Non-strict: missing/unexpected are reported, a shape mismatch is still an error.
  sd[0].tensor = a->state_dict()[0].tensor;
  LoadResult r = b->load_state_dict(sd, false);
  CHECK(r.missing_keys == std::vector<std::string>{"1.bias"});
  CHECK(r.unexpected_keys == std::vector<std::string>{"extra.weight"});
  sd[0].tensor = Tensor::zeros({1});
  CHECK_THROWS_WITH(b->load_state_dict(sd, false), Contains("size mismatch for 0.weight"));
}

TEST_CASE("Module: registration rejects duplicates; child lookup; repr") {
  Sequential s;
  s.push_back(make<Linear>(2, 3));
  s.push_back(make<Tanh>());
  CHECK(s.child("1")->type_name() == "Tanh");
  CHECK_THROWS_WITH(s.child("7"), Contains("no child module '7'") && Contains("0, 1"));
  CHECK_THROWS_AS(s[2], std::out_of_range);
  CHECK(s.repr() == "Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n  (1): Tanh()\n)");
}

TEST_CASE("Module: train/eval reach every module; to(cpu) keeps handles") {
  Generator g(3);
  auto net = small_net(&g);
  net->eval();
  for (const auto& m : net->named_modules()) CHECK_FALSE(m.second->is_training());
  net->train();
  for (const auto& m : net->named_modules()) CHECK(m.second->is_training());
  const Tensor w = net->parameters()[0];
  float* before = w.data();
  net->to(Device::cpu());
  CHECK(net->parameters()[0].data() == before);
}

TEST_CASE("BatchNorm2d: running statistics, num_batches_tracked, eval mode") {
  BatchNorm2d bn(2);
  // x [2, 2, 1, 2]: channel 0 values {1, 3, 5, 7}, channel 1 values {0, 0, 4, 4}
  Tensor x = Tensor::from_vector({1, 3, 0, 0, 5, 7, 4, 4}, {2, 2, 1, 2});
  Tensor y = bn.forward(x);
  CHECK(bn.num_batches_tracked.item() == 1.f);
  // mean 4 and 2; unbiased var 20/3 and 16/3; momentum 0.1
  CHECK(bn.running_mean.to_vector()[0] == Approx(0.4f));
  CHECK(bn.running_mean.to_vector()[1] == Approx(0.2f));
  CHECK(bn.running_var.to_vector()[0] == Approx(0.9f + 0.1f * 20.f / 3.f));
  CHECK(bn.running_var.to_vector()[1] == Approx(0.9f + 0.1f * 16.f / 3.f));
  // Training output: (x - mean) / sqrt(biased var + eps); channel 0 biased var 5.
  CHECK(y.at({0, 0, 0, 0}) == Approx((1.f - 4.f) / std::sqrt(5.f + 1e-5f)));
  bn.forward(x);
  CHECK(bn.num_batches_tracked.item() == 2.f);
  bn.eval();
  const auto rm = bn.running_mean.to_vector(), rv = bn.running_var.to_vector();
  Tensor ye = bn.forward(x);
  CHECK(bn.num_batches_tracked.item() == 2.f);  // eval does not count
  CHECK(bn.running_mean.to_vector() == rm);
  CHECK(ye.at({0, 0, 0, 1}) == Approx((3.f - rm[0]) / std::sqrt(rv[0] + 1e-5f)));
  CHECK_THROWS_WITH(bn.forward(Tensor::zeros({1, 3, 2, 2})), Contains("BatchNorm2d") && Contains("[1, 3, 2, 2]"));
}

TEST_CASE("Layers: forward against hand computations") {
  SECTION("Linear") {
    Linear l(2, 2);
    l.weight.copy_(Tensor::from_vector({1, 2, 3, 4}, {2, 2}));
    l.bias.copy_(Tensor::from_vector({0.5f, -1}, {2}));
    Tensor y = l.forward(Tensor::from_vector({1, 1, 2, 0}, {2, 2}));
    CHECK(y.to_vector() == std::vector<float>{3.5f, 6.f, 2.5f, 5.f});
    CHECK_THROWS_WITH(l.forward(Tensor::zeros({2, 3})), Contains("Linear") && Contains("[2, 3]"));
  }
  SECTION("Conv2d and ConvTranspose2d shapes") {
    Conv2d c(3, 8, 4, 2, 1, false);
    CHECK(c.forward(Tensor::zeros({2, 3, 16, 16})).shape() == Shape{2, 8, 8, 8});
    ConvTranspose2d t(8, 3, 4, 2, 1, 0, false);
    CHECK(t.weight.shape() == Shape{8, 3, 4, 4});
    CHECK(t.forward(Tensor::zeros({2, 8, 8, 8})).shape() == Shape{2, 3, 16, 16});
    CHECK_THROWS_WITH(c.forward(Tensor::zeros({2, 1, 16, 16})), Contains("Conv2d") && Contains("[N, 3, H, W]"));
  }
  SECTION("activations, Flatten, Dropout") {
    Tensor x = Tensor::from_vector({-2, 0.5f}, {1, 2});
    CHECK(ReLU().forward(x).to_vector() == std::vector<float>{0, 0.5f});
    CHECK(LeakyReLU(0.2f).forward(x).to_vector()[0] == Approx(-0.4f));
    CHECK(Tanh().forward(x).to_vector()[1] == Approx(std::tanh(0.5f)));
    CHECK(Sigmoid().forward(x).to_vector()[0] == Approx(1.f / (1.f + std::exp(2.f))));
    CHECK(Flatten().forward(Tensor::zeros({2, 3, 4, 5})).shape() == Shape{2, 60});
    Dropout d(0.5f);
    d.eval();
    CHECK(d.forward(x).to_vector() == x.to_vector());
    d.train();
    Tensor big = Tensor::ones({1000});
    const auto v = d.forward(big).to_vector();
    int zeros = 0;
    for (float f : v) {
      CHECK((f == 0.f || f == 2.f));
      zeros += f == 0.f;
    }
    CHECK(zeros > 400);
    CHECK(zeros < 600);
  }
}

TEST_CASE("Init: PyTorch default bounds and DCGAN init") {
  Generator g(5);
  Conv2d c(16, 32, 4, 2, 1, true, &g);
  const float bound = 1.f / std::sqrt(16.f * 16.f);
  for (float v : c.weight.to_vector()) CHECK(std::abs(v) <= bound);
  for (float v : c.bias.to_vector()) CHECK(std::abs(v) <= bound);
  CHECK(std_of(c.weight.to_vector()) == Approx(bound / std::sqrt(3.f)).epsilon(0.05));

  Sequential s{make<ConvTranspose2d>(64, 32, 4, 2, 1, 0, false, &g), make<BatchNorm2d>(256), make<Conv2d>(32, 64, 4)};
  dcgan_init(s, &g);
  const auto w0 = std::static_pointer_cast<ConvTranspose2d>(s[0])->weight.to_vector();
  CHECK(std::abs(mean_of(w0)) < 0.002);
  CHECK(std_of(w0) == Approx(0.02).epsilon(0.03));
  auto bn = std::static_pointer_cast<BatchNorm2d>(s[1]);
  CHECK(mean_of(bn->weight.to_vector()) == Approx(1.0).epsilon(0.01));
  CHECK(std_of(bn->weight.to_vector()) == Approx(0.02).epsilon(0.15));
  for (float v : bn->bias.to_vector()) CHECK(v == 0.f);
  CHECK(std_of(std::static_pointer_cast<Conv2d>(s[2])->weight.to_vector()) == Approx(0.02).epsilon(0.03));

  Tensor t = Tensor::empty({3});
  init::constant_(t, 2.5f);
  CHECK(t.to_vector() == std::vector<float>{2.5f, 2.5f, 2.5f});
  init::zeros_(t);
  CHECK(t.to_vector() == std::vector<float>{0, 0, 0});
}

TEST_CASE("Losses: values as PyTorch defines them (mean reduction)") {
  Tensor p = Tensor::from_vector({0.9f, 0.2f}, {2});
  Tensor t = Tensor::from_vector({1.f, 0.f}, {2});
  CHECK(BCELoss()(p, t).item() == Approx(-(std::log(0.9) + std::log(0.8)) / 2));
  Tensor z = Tensor::from_vector({2.f, -1.f}, {2});
  const double s0 = 1 / (1 + std::exp(-2.0)), s1 = 1 / (1 + std::exp(1.0));
  CHECK(BCEWithLogitsLoss()(z, t).item() == Approx(-(std::log(s0) + std::log(1 - s1)) / 2));
  CHECK(MSELoss()(p, t).item() == Approx((0.01 + 0.04) / 2));
  CHECK(L1Loss()(p, t).item() == Approx((0.1 + 0.2) / 2));
}

TEST_CASE("Gradient check through a small Sequential (finite differences)") {
  Generator g(11);
  // Conv -> BN (training) -> LeakyReLU -> Flatten -> Linear -> Sigmoid, BCE loss: every layer's
  // backward wiring is involved.
  Sequential net{make<Conv2d>(2, 3, 3, 1, 1, true, &g), make<BatchNorm2d>(3), make<LeakyReLU>(0.2f),
                 make<Flatten>(), make<Linear>(3 * 4 * 4, 2, true, &g), make<Sigmoid>()};
  Tensor x = Tensor::randn({4, 2, 4, 4}, &g);
  Tensor target = Tensor::from_vector({1, 0, 0, 1, 1, 1, 0, 0}, {4, 2});
  auto loss_value = [&]() {
    NoGradGuard ng;
    return static_cast<double>(binary_cross_entropy(net.forward(x), target).item());
  };
  Tensor loss = binary_cross_entropy(net.forward(x), target);
  loss.backward();
  const float h = 1e-2f;
  double worst = 0;
  for (auto& [name, p] : net.named_parameters()) {
    REQUIRE(p.grad().defined());
    const auto analytic = p.grad().to_vector();
    for (int64_t i = 0; i < p.numel(); i += 3) {  // every third element keeps it quick
      float& v = p.data()[i];
      const float keep = v;
      v = keep + h;
      const double up = loss_value();
      v = keep - h;
      const double down = loss_value();
      v = keep;
      const double numeric = (up - down) / (2.0 * h);
      const double err = std::abs(analytic[i] - numeric) / std::max(1e-2, std::abs(numeric));
      INFO(name << "[" << i << "] analytic " << analytic[i] << " numeric " << numeric);
      CHECK(std::abs(analytic[i] - numeric) < 2e-3 + 2e-2 * std::abs(numeric));
      worst = std::max(worst, err);
    }
  }
  WARN("worst relative gradient error " << worst);
}

// ---- Conv2d with spectral_norm: torch.nn.utils.spectral_norm's contract (PyTorch's state dict
// names and order, the power iteration, eval mode, the gradient through sigma(W) by finite
// differences); against PyTorch itself: the hinge_sn case in tests/test_training.cpp.

namespace {

double l2_norm(const Tensor& t) { return std::sqrt(sum(square(t)).item()); }

}  // namespace

TEST_CASE("spectral norm: PyTorch's state dict (bias, weight_orig, weight_u, weight_v), unit u and v") {
  Generator g(3);
  Conv2d conv(3, 4, 3, 1, 1, /*bias=*/true, &g, /*spectral_norm=*/true);
  const StateDict sd = conv.state_dict();
  REQUIRE(sd.size() == 4);
  CHECK(sd[0].name == "bias");
  CHECK(sd[1].name == "weight_orig");
  CHECK(sd[2].name == "weight_u");
  CHECK(sd[3].name == "weight_v");
  CHECK(sd[1].tensor.shape() == Shape{4, 3, 3, 3});
  CHECK(sd[2].tensor.shape() == Shape{4});
  CHECK(sd[3].tensor.shape() == Shape{27});
  const auto params = conv.named_parameters();
  REQUIRE(params.size() == 2);  // u and v are buffers: not trained
  CHECK(params[0].first == "bias");
  CHECK(params[1].first == "weight_orig");
  CHECK(l2_norm(conv.weight_u) == Approx(1.0).epsilon(1e-6));
  CHECK(l2_norm(conv.weight_v) == Approx(1.0).epsilon(1e-6));
  CHECK(conv.repr().find("spectral_norm") != std::string::npos);
  Conv2d plain(3, 4, 3, 1, 1, false, &g);
  CHECK(plain.state_dict().size() == 1);
  CHECK(plain.state_dict()[0].name == "weight");
}

TEST_CASE("spectral norm: the power iteration finds the largest singular value; eval keeps u, v") {
  Generator g(5);
  Conv2d conv(1, 4, 2, 1, 0, false, &g, true);  // W as a matrix: [4, 4]
  {
    NoGradGuard no_grad;
    // Singular values 3, 2, 1, 0.5: a diagonal matrix with a permutation, so sigma = 3.
    std::vector<float> w(16, 0.f);
    w[0 * 4 + 2] = 2.f;
    w[1 * 4 + 0] = 3.f;
    w[2 * 4 + 3] = 0.5f;
    w[3 * 4 + 1] = 1.f;
    conv.weight.copy_(Tensor::from_vector(w, {4, 1, 2, 2}));
  }
  conv.train();
  Tensor eff;
  for (int i = 0; i < 40; ++i) eff = conv.effective_weight();  // error shrinks as (2/3)^(2i)
  const float sigma = conv.weight.data()[4] / eff.data()[4];      // the entry 3 at [1][0]
  CHECK(sigma == Approx(3.0).epsilon(1e-5));
  // u and v are the top singular vectors: e_1 and e_0 up to sign.
  CHECK(std::abs(conv.weight_u.data()[1]) == Approx(1.0).epsilon(1e-5));
  CHECK(std::abs(conv.weight_v.data()[0]) == Approx(1.0).epsilon(1e-5));

}

TEST_CASE("spectral norm: eval mode leaves u and v as they are, training advances them") {
  Generator g(6);
  Conv2d conv(2, 3, 3, 1, 1, false, &g, true);
  const std::vector<float> u = conv.weight_u.to_vector(), v = conv.weight_v.to_vector();
  const Tensor x = test::rnd({2, 2, 5, 5}, 7);
  NoGradGuard no_grad;
  conv.eval();
  const Tensor y_eval = conv.forward(x);
  CHECK(conv.weight_u.to_vector() == u);
  CHECK(conv.weight_v.to_vector() == v);
  // Eval divides by u . (W v) with the stored vectors.
  const Tensor w = conv.weight.reshape({3, 18});
  const float sigma = sum(mul(conv.weight_u, matmul(w, conv.weight_v.reshape({18, 1})).reshape({3}))).item();
  const Tensor want = conv2d(x, div(conv.weight, Tensor::full({}, sigma)), Tensor(), 1, 1);
  CHECK(sum(square(sub(y_eval, want))).item() < 1e-10 * sum(square(want)).item());
  conv.train();
  conv.forward(x);
  CHECK(conv.weight_u.to_vector() != u);  // a random start is not the top singular vector
  CHECK(conv.weight_v.to_vector() != v);
}

TEST_CASE("spectral norm: the gradient of weight_orig includes sigma(W)'s, by finite differences") {
  Generator g(8);
  Conv2d conv(2, 3, 3, 1, 1, true, &g, true);
  conv.eval();  // u and v fixed, so the loss is a function of the weights alone
  const Tensor x = test::rnd({2, 2, 4, 4}, 9);
  const Tensor w_out = test::rnd({2, 3, 4, 4}, 10);
  auto loss = [&] { return sum(mul(conv.forward(x), w_out)); };
  conv.zero_grad();
  loss().backward();
  const std::vector<float> analytic = conv.weight.grad().to_vector();
  // What W / sigma would give with sigma held constant (no gradient through it).
  const Tensor w = conv.weight.detach().reshape({3, 18});
  const float sigma = sum(mul(conv.weight_u, matmul(w, conv.weight_v.reshape({18, 1})).reshape({3}))).item();
  Tensor wl = conv.weight.detach().clone();
  wl.requires_grad_(true);
  sum(mul(conv2d(x, div(wl, Tensor::full({}, sigma)), conv.bias.detach(), 1, 1), w_out)).backward();
  const std::vector<float> constant_sigma = wl.grad().to_vector();

  NoGradGuard no_grad;
  double worst = 0, worst_constant = 0;
  // W / sigma(W) curves strongly (sigma is ~the weights' size): the central difference's error
  // falls as h^2 (7.5e-3 at h = 5e-3, 1.2e-3 at 2e-3, measured), below 1e-3 float rounding grows.
  const float h = 2e-3f;
  for (int64_t i = 0; i < conv.weight.numel(); ++i) {
    float& p = conv.weight.data()[i];
    const float keep = p;
    p = keep + h;
    const double up = loss().item();
    p = keep - h;
    const double down = loss().item();
    p = keep;
    const double numeric = (up - down) / (2.0 * h);
    worst = std::max(worst, std::abs(analytic[i] - numeric) / std::max(1.0, std::abs(numeric)));
    worst_constant = std::max(worst_constant, std::abs(constant_sigma[i] - numeric) / std::max(1.0, std::abs(numeric)));
  }
  INFO("worst " << worst << ", with sigma held constant " << worst_constant);
  CHECK(worst < 3e-3);
  CHECK(worst_constant > 10 * worst);  // the check can tell the two apart
}

// ---- The parametrizations form: torch.nn.utils.parametrizations.spectral_norm (PyTorch 2's),
// whose names and power-iteration order differ from the classic one; against PyTorch itself:
// the hinge_psn case in tests/test_training.cpp.

TEST_CASE("spectral norm, parametrizations form: PyTorch's module tree, names and order") {
  Generator g(3);
  Conv2d conv(3, 4, 3, 1, 1, /*bias=*/true, &g, /*spectral_norm=*/true, SpectralNormForm::Parametrization);
  const StateDict sd = conv.state_dict();
  REQUIRE(sd.size() == 4);
  CHECK(sd[0].name == "bias");
  CHECK(sd[1].name == "parametrizations.weight.original");
  CHECK(sd[2].name == "parametrizations.weight.0._u");
  CHECK(sd[3].name == "parametrizations.weight.0._v");
  CHECK(sd[1].tensor.shape() == Shape{4, 3, 3, 3});
  CHECK(sd[2].tensor.shape() == Shape{4});
  CHECK(sd[3].tensor.shape() == Shape{27});
  const auto params = conv.named_parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[1].first == "parametrizations.weight.original");
  CHECK(conv.weight.data() == sd[1].tensor.data());  // `weight` is the trained tensor's handle
  CHECK(conv.type_name() == "ParametrizedConv2d");
  const std::string r = conv.repr();
  for (const char* part : {"ParametrizedConv2d(", "(parametrizations): ModuleDict(", "(weight): ParametrizationList(",
                           "(0): _SpectralNorm()"})
    CHECK(r.find(part) != std::string::npos);
  CHECK_THROWS_WITH(conv.child("parametrizations")->forward(Tensor::zeros({1})), Contains("not called"));
  CHECK(spectral_norm_form_from_name("parametrizations") == SpectralNormForm::Parametrization);
  CHECK(spectral_norm_form_from_name(spectral_norm_form_name(SpectralNormForm::Classic)) == SpectralNormForm::Classic);
  CHECK_THROWS_WITH(spectral_norm_form_from_name("new"), Contains("'new'") && Contains("classic") && Contains("parametrizations"));
}

TEST_CASE("spectral norm: the classic form updates v then u, the parametrizations form u then v") {
  // One training forward from known u, v, computed by hand in double.
  for (SpectralNormForm form : {SpectralNormForm::Classic, SpectralNormForm::Parametrization}) {
    INFO(spectral_norm_form_name(form));
    Generator g(11);
    Conv2d conv(2, 3, 2, 1, 0, false, &g, true, form);  // W [3, 8]
    NoGradGuard no_grad;
    const std::vector<float> w = conv.weight.to_vector();
    const std::vector<float> u0f = conv.weight_u.to_vector(), v0f = conv.weight_v.to_vector();
    const std::vector<double> u0(u0f.begin(), u0f.end()), v0(v0f.begin(), v0f.end());
    auto wv = [&](const std::vector<double>& v) {
      std::vector<double> o(3, 0.0);
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 8; ++j) o[i] += w[i * 8 + j] * v[j];
      return o;
    };
    auto wtu = [&](const std::vector<double>& u) {
      std::vector<double> o(8, 0.0);
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 8; ++j) o[j] += w[i * 8 + j] * u[i];
      return o;
    };
    auto unit = [](std::vector<double> x) {
      double n = 0;
      for (double e : x) n += e * e;
      for (double& e : x) e /= std::sqrt(n);
      return x;
    };
    std::vector<double> u, v;
    if (form == SpectralNormForm::Classic) {
      v = unit(wtu(u0));
      u = unit(wv(v));
    } else {
      u = unit(wv(v0));
      v = unit(wtu(u));
    }
    conv.train();
    conv.forward(test::rnd({1, 2, 3, 3}, 12));
    const std::vector<float> got_u = conv.weight_u.to_vector(), got_v = conv.weight_v.to_vector();
    for (int i = 0; i < 3; ++i) CHECK(got_u[i] == Approx(u[i]).margin(1e-6));
    for (int j = 0; j < 8; ++j) CHECK(got_v[j] == Approx(v[j]).margin(1e-6));
  }
}

TEST_CASE("spectral norm, parametrizations form: u and v start 15 iterations in, as PyTorch's") {
  // The same draws as the classic form's u, v (which start as they are drawn), then 15 steps.
  Generator ga(13), gb(13);
  Conv2d classic(1, 4, 2, 1, 0, false, &ga, true, SpectralNormForm::Classic);
  Conv2d param(1, 4, 2, 1, 0, false, &gb, true, SpectralNormForm::Parametrization);
  REQUIRE(classic.weight.to_vector() == param.weight.to_vector());
  // 15 u-first steps from the classic start: u_k = n(W v_{k-1}), v_k = n(W^T u_k).
  NoGradGuard no_grad;
  const Tensor w = classic.weight.reshape({4, 4});
  Tensor u = classic.weight_u.clone(), v = classic.weight_v.clone();
  auto unit = [](const Tensor& x) { return div(x, Tensor::full({}, static_cast<float>(l2_norm(x)))); };
  for (int i = 0; i < 15; ++i) {
    u = unit(matmul(w, v.reshape({4, 1})).reshape({4}));
    v = unit(matmul(u.reshape({1, 4}), w).reshape({4}));
  }
  CHECK(l2_norm(sub(param.weight_u, u)) < 1e-5);
  CHECK(l2_norm(sub(param.weight_v, v)) < 1e-5);
  CHECK(l2_norm(sub(param.weight_u, classic.weight_u)) > 1e-3);  // 15 steps moved them
}

namespace {
// group_norm by its definition, in double: each (sample, group) normalized by its own mean and
// biased variance, then the per-channel affine.
std::vector<double> group_norm_reference(const Tensor& x, int64_t groups, const Tensor& w, const Tensor& b, double eps) {
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C), cg = C / groups;
  const std::vector<float> xv = x.to_vector();
  std::vector<double> y(xv.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t start = (n * C + g * cg) * S, len = cg * S;
      double m = 0, v = 0;
      for (int64_t i = 0; i < len; ++i) m += xv[start + i];
      m /= len;
      for (int64_t i = 0; i < len; ++i) v += (xv[start + i] - m) * (xv[start + i] - m);
      v /= len;
      for (int64_t i = 0; i < len; ++i) {
        const int64_t c = g * cg + i / S;
        const double xhat = (xv[start + i] - m) / std::sqrt(v + eps);
        y[start + i] = xhat * (w.defined() ? w.data()[c] : 1.0) + (b.defined() ? b.data()[c] : 0.0);
      }
    }
  return y;
}
}  // namespace

TEST_CASE("group_norm / instance_norm: per (sample, group) statistics, the affine per channel") {
  const Tensor x = test::rnd({3, 6, 4, 5}, 301, -2.f, 3.f), w = test::rnd({6}, 302, 0.5f, 1.5f), b = test::rnd({6}, 303);
  for (int64_t groups : {1, 2, 3, 6}) {
    INFO("groups " << groups);
    const std::vector<double> want = group_norm_reference(x, groups, w, b, 1e-5);
    const std::vector<float> got = group_norm(x, groups, w, b).to_vector();
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
    CHECK(worst < 1e-5);
    const std::vector<float> plain = group_norm(x, groups).to_vector();
    const std::vector<double> want_plain = group_norm_reference(x, groups, Tensor(), Tensor(), 1e-5);
    worst = 0;
    for (size_t i = 0; i < plain.size(); ++i) worst = std::max(worst, std::abs(plain[i] - want_plain[i]));
    CHECK(worst < 1e-5);
  }
  // instance_norm is one group per channel; a large eps shows it reaches the kernel.
  const std::vector<float> in = instance_norm(x, w, b, 0.5f).to_vector();
  const std::vector<double> want_in = group_norm_reference(x, 6, w, b, 0.5);
  for (size_t i = 0; i < in.size(); i += 17) CHECK(in[i] == Approx(want_in[i]).margin(1e-5));
  // Another image in the batch changes nothing: statistics are per sample (unlike batch norm).
  Tensor x2 = x.clone();
  x2.data()[x2.numel() - 1] += 10.f;  // the last sample only
  const std::vector<float> a = group_norm(x, 2, w, b).to_vector(), c = group_norm(x2, 2, w, b).to_vector();
  int64_t same = 0;
  for (int64_t i = 0; i < 2 * 120; ++i) same += a[i] == c[i];
  CHECK(same == 2 * 120);  // samples 0 and 1 (120 values each) unchanged
  CHECK(a.back() != c.back());
}

TEST_CASE("group_norm: gradients by finite differences; bad arguments named") {
  CHECK(test::gradcheck_op([](const std::vector<Tensor>& in) { return group_norm(in[0], 2, in[1], in[2]); },
                     {test::rnd({2, 4, 3, 3}, 311), test::rnd({4}, 312, 0.5f, 1.5f), test::rnd({4}, 313)}) < 2e-2);
  CHECK(test::gradcheck_op([](const std::vector<Tensor>& in) { return instance_norm(in[0]); }, {test::rnd({2, 3, 2, 3}, 314)}) < 2e-2);
  const Tensor x = test::rnd({2, 6, 4, 4}, 315);
  CHECK_THROWS_WITH(group_norm(x, 4), Contains("num_groups must be positive and divide the 6 channels") &&
                                          Contains("[2, 6, 4, 4]") && Contains("got 4"));
  CHECK_THROWS_WITH(group_norm(x, 0), Contains("got 0"));
  CHECK_THROWS_WITH(group_norm(x, 2, test::rnd({3}, 316)), Contains("[3] should be [6]"));
  CHECK_THROWS_WITH(instance_norm(test::rnd({2, 6, 1, 1}, 317)), Contains("more than one spatial element") &&
                                                                      Contains("[2, 6, 1, 1]"));
  // One value per group normalizes to 0 (PyTorch: the bias), with gradient 0; an empty batch is empty.
  Tensor one = test::rnd({2, 6, 1, 1}, 319).requires_grad_(true);
  const Tensor b6 = test::rnd({6}, 320);
  const Tensor y1 = group_norm(one, 6, Tensor(), b6);
  CHECK(y1.to_vector() == add(Tensor::zeros({2, 6, 1, 1}), b6.reshape({1, 6, 1, 1})).to_vector());
  sum(mul(y1, test::rnd({2, 6, 1, 1}, 321))).backward();
  CHECK(one.grad().to_vector() == std::vector<float>(12, 0.f));
  CHECK(group_norm(Tensor::zeros({0, 6, 4, 4}), 3).shape() == Shape{0, 6, 4, 4});
  CHECK_THROWS_WITH(instance_norm(test::rnd({2, 6}, 318)), Contains("instance_norm: input must be [N, C, H, ...]"));
}

TEST_CASE("GroupNorm, InstanceNorm2d, Identity: PyTorch's names, defaults, and the same output in eval") {
  GroupNorm gn(1, 4);
  CHECK(keys(gn.state_dict()) == std::vector<std::string>{"weight", "bias"});
  CHECK(gn.weight.to_vector() == std::vector<float>(4, 1.f));
  CHECK(gn.bias.to_vector() == std::vector<float>(4, 0.f));
  CHECK(gn.extra_repr() == "1, 4, eps=1e-05, affine=True");
  CHECK(GroupNorm(2, 4, 1e-5f, false).state_dict().empty());
  CHECK_THROWS_WITH(GroupNorm(3, 4), Contains("num_channels (4) must be divisible by num_groups (3)"));
  InstanceNorm2d plain(4);  // PyTorch's default: no affine
  CHECK(plain.state_dict().empty());
  InstanceNorm2d in(4, 1e-5f, true);
  CHECK(keys(in.state_dict()) == std::vector<std::string>{"weight", "bias"});
  CHECK(in.extra_repr() == "4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=False");
  CHECK_THROWS_WITH(in.forward(test::rnd({2, 3, 4, 4}, 321)), Contains("InstanceNorm2d: expected input [N, 4, H, W]"));
  CHECK_THROWS_WITH(gn.forward(test::rnd({2, 3, 4, 4}, 322)), Contains("GroupNorm: expected input [N, 4, ...]"));
  const Tensor x = test::rnd({2, 4, 3, 3}, 323);
  {
    NoGradGuard guard;
    gn.weight.copy_(test::rnd({4}, 324));
    gn.bias.copy_(test::rnd({4}, 325));
  }
  const std::vector<float> train_out = gn.forward(x).to_vector();
  gn.eval();
  CHECK(gn.forward(x).to_vector() == train_out);  // no running statistics: eval is training
  Identity id;
  CHECK(id.state_dict().empty());
  CHECK(id.forward(x).to_vector() == x.to_vector());
}

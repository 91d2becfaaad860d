// Adam and SGD against PyTorch's published update rules, recomputed here independently in
// double; state save/load; argument checks.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "gantry/optim/adam.h"
#include "gantry/optim/sgd.h"

using namespace gantry;
using Catch::Matchers::Contains;

namespace {

// The gradient fed at step t (1-based) for element i: deterministic, sign-changing.
double grad_at(int t, int i) { return std::sin(0.7 * t + 1.3 * i) * (1.0 + 0.1 * i) - 0.05 * t; }

Tensor make_param(const std::vector<float>& v) {
  Tensor p = Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
  p.requires_grad_(true);
  return p;
}

void set_grads(Tensor& p, int t) {
  std::vector<float> g(p.numel());
  for (int i = 0; i < p.numel(); ++i) g[i] = static_cast<float>(grad_at(t, i));
  p.set_grad(Tensor::from_vector(g, p.shape()));
}

const std::vector<float> kInit = {0.5f, -1.25f, 2.f, 0.f, -0.03f, 1e-3f};

}  // namespace

TEST_CASE("Adam: the first step moves each parameter by lr against the gradient's sign") {
  Tensor p = make_param({1.f, -1.f, 0.5f});
  p.set_grad(Tensor::from_vector({0.3f, -2.f, 1e-3f}, {3}));
  Adam adam({p}, AdamOptions{0.1, 0.9, 0.999, 1e-8, 0.0});
  adam.step();
  // m_hat = g and v_hat = g^2 after one step, so the update is lr * g / (|g| + eps).
  const auto v = p.to_vector();
  CHECK(v[0] == Approx(0.9f).margin(1e-6));
  CHECK(v[1] == Approx(-0.9f).margin(1e-6));
  CHECK(v[2] == Approx(0.5f - 0.1f * 1e-3f / (1e-3f + 1e-8f)).margin(1e-6));
  CHECK(adam.step_count(0) == 1);
}

TEST_CASE("Adam: several steps match PyTorch's update rule computed in double (1e-6)") {
  for (double wd : {0.0, 0.01}) {
    const AdamOptions o{2e-3, 0.5, 0.999, 1e-8, wd};
    Tensor p = make_param(kInit);
    Adam adam({p}, o);
    std::vector<double> ref(kInit.begin(), kInit.end()), m(ref.size(), 0.0), v(ref.size(), 0.0);
    for (int t = 1; t <= 25; ++t) {
      set_grads(p, t);
      adam.step();
      // torch.optim.Adam (single-tensor, amsgrad=False), in double:
      for (std::size_t i = 0; i < ref.size(); ++i) {
        const double g = grad_at(t, static_cast<int>(i)) + wd * ref[i];
        m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
        v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
        const double bc1 = 1 - std::pow(o.beta1, t), bc2 = 1 - std::pow(o.beta2, t);
        ref[i] -= o.lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + o.eps);
      }
      const auto got = p.to_vector();
      for (std::size_t i = 0; i < ref.size(); ++i) {
        INFO("wd " << wd << " step " << t << " element " << i);
        CHECK(std::abs(got[i] - ref[i]) < 1e-6);
      }
    }
    CHECK(adam.step_count(0) == 25);
  }
}

TEST_CASE("SGD: plain, momentum, dampening, nesterov and weight decay match PyTorch's rule") {
  struct Case { SGDOptions o; };
  const std::vector<SGDOptions> cases = {
      {0.1, 0.0, 0.0, 0.0, false},
      {0.05, 0.9, 0.0, 0.0, false},
      {0.05, 0.9, 0.0, 1e-2, true},
      {0.05, 0.8, 0.3, 1e-3, false},
  };
  for (const auto& o : cases) {
    Tensor p = make_param(kInit);
    SGD sgd({p}, o);
    std::vector<double> ref(kInit.begin(), kInit.end()), buf(ref.size(), 0.0);
    for (int t = 1; t <= 20; ++t) {
      set_grads(p, t);
      sgd.step();
      for (std::size_t i = 0; i < ref.size(); ++i) {
        double g = grad_at(t, static_cast<int>(i)) + o.weight_decay * ref[i];
        if (o.momentum != 0) {
          buf[i] = t == 1 ? g : o.momentum * buf[i] + (1 - o.dampening) * g;
          g = o.nesterov ? g + o.momentum * buf[i] : buf[i];
        }
        ref[i] -= o.lr * g;
      }
      const auto got = p.to_vector();
      for (std::size_t i = 0; i < ref.size(); ++i) {
        INFO("momentum " << o.momentum << " nesterov " << o.nesterov << " step " << t << " element " << i);
        CHECK(std::abs(got[i] - ref[i]) < 1e-5);
      }
    }
  }
  CHECK_THROWS_WITH(SGD({make_param({1})}, SGDOptions{0.1, 0.0, 0.0, 0.0, true}), Contains("nesterov"));
}

TEST_CASE("Optimizer: zero_grad, parameters without gradients, argument checks") {
  Tensor a = make_param({1, 2}), b = make_param({3});
  Adam adam({a, b});
  a.set_grad(Tensor::ones({2}));
  adam.step();
  CHECK(adam.step_count(0) == 1);
  CHECK(adam.step_count(1) == 0);  // no grad: skipped, no state
  CHECK(b.to_vector() == std::vector<float>{3});
  adam.zero_grad();
  CHECK_FALSE(a.grad().defined());
  CHECK(adam.state_dict().size() == 3);

  CHECK_THROWS_WITH(Adam({}), Contains("empty parameter list"));
  CHECK_THROWS_WITH(Adam({a, a}), Contains("more than once"));
  CHECK_THROWS_WITH(Adam({a}, AdamOptions{1e-3, 1.0}), Contains("beta1"));
  CHECK_THROWS_WITH(Adam({a}, AdamOptions{-1.0}), Contains("learning rate"));
}

TEST_CASE("Adam: state saved to a safetensors file resumes exactly") {
  const char* env = std::getenv("GANTRY_TEST_TMP");
  const auto dir = std::filesystem::path(env ? env : std::filesystem::temp_directory_path().string()) / "optim";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "adam.safetensors").string();

  Tensor p = make_param(kInit), q = make_param({1, 2, 3});
  Adam adam({p, q}, AdamOptions{1e-2, 0.5, 0.999});
  for (int t = 1; t <= 3; ++t) {
    set_grads(p, t);
    set_grads(q, t);
    adam.step();
  }
  adam.save(path);
  const StateDict sd = adam.state_dict();
  REQUIRE(sd.size() == 6);
  CHECK(sd[0].name == "state.0.step");
  CHECK(sd[0].dtype == DType::I64);
  CHECK(sd[1].name == "state.0.exp_avg");
  CHECK(sd[5].name == "state.1.exp_avg_sq");

  Tensor p2 = make_param(p.to_vector()), q2 = make_param(q.to_vector());
  Adam resumed({p2, q2}, AdamOptions{1e-2, 0.5, 0.999});
  resumed.load(path);
  CHECK(resumed.step_count(0) == 3);
  for (int t = 4; t <= 6; ++t) {
    for (Tensor* x : {&p, &q, &p2, &q2}) set_grads(*x, t);
    adam.step();
    resumed.step();
  }
  CHECK(p2.to_vector() == p.to_vector());
  CHECK(q2.to_vector() == q.to_vector());

  // Mismatched state is refused with every problem listed, and nothing is applied.
  StateDict bad = sd;
  bad[1].tensor = Tensor::zeros({2});
  bad.push_back({"state.9.exp_avg", Tensor::zeros({1})});
  bad.push_back({"state.0.momentum", Tensor::zeros({6})});
  CHECK_THROWS_WITH(resumed.load_state_dict(bad),
                    Contains("3 problem(s)") && Contains("\"state.0.exp_avg\" has shape [2], expected [6]") &&
                        Contains("index 9 out of range") && Contains("unknown field \"momentum\""));
  CHECK(resumed.step_count(0) == 6);

  SGD sgd({p}, SGDOptions{0.1, 0.9});
  CHECK_THROWS_WITH(sgd.load(path), Contains("Adam") && Contains("not SGD"));
}

TEST_CASE("SGD: momentum buffers round-trip through state_dict") {
  Tensor p = make_param(kInit), p2 = make_param(kInit);
  SGD a({p}, SGDOptions{0.1, 0.9}), b({p2}, SGDOptions{0.1, 0.9});
  set_grads(p, 1);
  a.step();
  CHECK(a.state_dict().size() == 1);
  b.load_state_dict(a.state_dict());
  p2.copy_(p);
  set_grads(p, 2);
  set_grads(p2, 2);
  a.step();
  b.step();
  CHECK(p2.to_vector() == p.to_vector());
}

#pragma once
// Finite-difference checks, in the spirit of Caffe's GradientChecker.
//
// Two levels:
//  * kernel level, in double: numeric_grad() perturbs a raw buffer and re-runs a kernel, so the
//    analytic backward of a templated CPU kernel is held to ~1e-7;
//  * op level, in float, through autograd: gradcheck_op() checks that an op's recorded backward
//    (the wiring: which kernel gets which buffer, broadcasting, shapes) matches a central
//    difference of the float forward, with tolerances set for float rounding.
#include <cmath>
#include <functional>
#include <vector>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/core/random.h"
#include "gantry/core/tensor.h"

namespace gantry::test {

// A tensor of uniform values in [lo, hi) from its own seeded generator (reproducible per test).
inline Tensor rnd(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  Generator g(seed);
  Tensor t = Tensor::empty(s);
  t.uniform_(lo, hi, &g);
  return t;
}

// d(loss)/d(x[i]) by central differences; loss() reads x.
inline std::vector<double> numeric_grad(std::vector<double>& x, const std::function<double()>& loss,
                                        double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = loss();
    x[i] = keep - h;
    const double down = loss();
    x[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// max_i |a_i - b_i| / max(1, |b_i|)
inline double max_rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i)
    e = std::max(e, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  return e;
}

inline std::vector<double> random_doubles(size_t n, uint64_t seed, double lo = -1, double hi = 1) {
  Generator g(seed);
  std::vector<float> f(n);
  g.fill_uniform(f.data(), static_cast<int64_t>(n), static_cast<float>(lo), static_cast<float>(hi));
  return std::vector<double>(f.begin(), f.end());
}

// Op-level check. f maps the inputs to a tensor; the scalar checked is sum(f(inputs) * w) for a
// fixed random w, so every output element's gradient matters. Returns the worst error over all
// inputs that require grad (relative to max(1, |numeric|)).
inline double gradcheck_op(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                           std::vector<Tensor> inputs, float h = 1e-2f) {
  for (Tensor& t : inputs) t.requires_grad_(true);
  Tensor out = f(inputs);
  Generator wg(99);
  Tensor w = Tensor::randn(out.shape(), &wg);
  Tensor loss = sum(mul(out, w));
  loss.backward();
  double worst = 0;
  NoGradGuard guard;
  for (Tensor& t : inputs) {
    std::vector<float> analytic = t.grad().to_vector();
    for (int64_t i = 0; i < t.numel(); ++i) {
      float& v = t.data()[i];
      const float keep = v;
      v = keep + h;
      const double up = sum(mul(f(inputs), w)).item();
      v = keep - h;
      const double down = sum(mul(f(inputs), w)).item();
      v = keep;
      const double numeric = (up - down) / (2.0 * h);
      worst = std::max(worst, std::abs(analytic[i] - numeric) / std::max(1.0, std::abs(numeric)));
    }
  }
  return worst;
}

// Double-backward check (PyTorch's gradgradcheck). With L = sum(f(inputs) * w), the first-order
// gradients g_j = dL/d(inputs_j) come from grad(..., create_graph), and the scalar checked is
// P = sum_j sum(g_j * v_j) for fixed random v_j. P's gradient through the recorded backward is
// compared with central differences of P computed by a plain first-order grad(), for every
// input and for w (the op's incoming gradient: the path a gradient penalty's chain takes).
// Returns the worst error, relative to max(1, |numeric|).
inline double gradgradcheck_op(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                               std::vector<Tensor> inputs, float h = 1e-2f) {
  for (Tensor& t : inputs) t.requires_grad_(true);
  Generator rg(98);
  Tensor w;
  {
    NoGradGuard guard;
    w = Tensor::randn(f(inputs).shape(), &rg);
  }
  w.requires_grad_(true);
  std::vector<Tensor> vs;
  for (const Tensor& t : inputs) vs.push_back(Tensor::randn(t.shape(), &rg));
  auto penalty = [&](bool create_graph) {
    Tensor loss = sum(mul(f(inputs), w));
    GradOptions opt;
    opt.create_graph = create_graph;
    std::vector<Tensor> g = grad({loss}, inputs, {}, opt);
    Tensor p = sum(mul(g[0], vs[0]));
    for (size_t j = 1; j < g.size(); ++j) p = add(p, sum(mul(g[j], vs[j])));
    return p;
  };
  std::vector<Tensor> all = inputs;
  all.push_back(w);
  const std::vector<Tensor> analytic = grad({penalty(true)}, all, {}, [] {
    GradOptions o;
    o.allow_unused = true;  // a linear op's P does not depend on its inputs
    return o;
  }());
  double worst = 0;
  for (size_t j = 0; j < all.size(); ++j) {
    Tensor& t = all[j];
    const std::vector<float> a = analytic[j].defined() ? analytic[j].to_vector()
                                                       : std::vector<float>(static_cast<size_t>(t.numel()), 0.f);
    for (int64_t i = 0; i < t.numel(); ++i) {
      float& v = t.data()[i];
      const float keep = v;
      v = keep + h;
      const double up = penalty(false).item();
      v = keep - h;
      const double down = penalty(false).item();
      v = keep;
      const double numeric = (up - down) / (2.0 * h);
      worst = std::max(worst, std::abs(a[static_cast<size_t>(i)] - numeric) / std::max(1.0, std::abs(numeric)));
    }
  }
  return worst;
}

}  // namespace gantry::test

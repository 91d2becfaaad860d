// Differentiable augmentations and ADA; see augment.h for the definitions.
#include "gantry/layers/augment.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"

namespace gantry {

namespace augment {

namespace {
void check_images(const char* op, const Tensor& x, size_t n) {
  if (x.dim() != 4 || x.shape()[2] != x.shape()[3])
    throw std::invalid_argument(std::string(op) + ": images must be square [N, C, S, S], got " +
                                shape_str(x.shape()));
  if (static_cast<int64_t>(n) != x.shape()[0])
    throw std::invalid_argument(std::string(op) + ": " + std::to_string(n) + " per-sample values for " +
                                std::to_string(x.shape()[0]) + " images " + shape_str(x.shape()));
}

Tensor per_sample(const std::vector<float>& v, Device dev) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size()), 1, 1, 1}, dev);
}
}  // namespace

Tensor geometry_index(const std::vector<Geometry>& geo, int64_t S) {
  const int64_t N = static_cast<int64_t>(geo.size());
  std::vector<float> idx(static_cast<size_t>(N * S * S));
  for (int64_t n = 0; n < N; ++n) {
    const Geometry& g = geo[n];
    for (int64_t i = 0; i < S; ++i)
      for (int64_t j = 0; j < S; ++j) {
        // Undo the transforms in reverse order: translation, rotation, flip.
        int64_t r = i - g.ty, c = j - g.tx;
        float v = -1.f;
        if (r >= 0 && r < S && c >= 0 && c < S) {
          for (int k = 0; k < ((g.rot90 % 4) + 4) % 4; ++k) {  // out[r][c] = in[c][S-1-r]
            const int64_t nr = c, nc = S - 1 - r;
            r = nr;
            c = nc;
          }
          if (g.xflip) c = S - 1 - c;
          v = static_cast<float>(r * S + c);
        }
        idx[static_cast<size_t>((n * S + i) * S + j)] = v;
      }
  }
  return Tensor::from_vector(idx, {N, S * S});
}

Tensor apply_geometry(const Tensor& x, const std::vector<Geometry>& g) {
  check_images("augment::apply_geometry", x, g.size());
  const int64_t S = x.shape()[2];
  return spatial_gather(x, geometry_index(g, S).to(x.device()), S, S);
}

Tensor warp(const Tensor& x, const std::vector<Warp>& w) {
  check_images("augment::warp", x, w.size());
  // One fused op (bilinear taps computed where they are used, core/ops.h affine_warp): only
  // the six numbers per image travel to the device, never a map.
  std::vector<float> theta;
  theta.reserve(6 * w.size());
  for (const Warp& a : w) theta.insert(theta.end(), {a.m00, a.m01, a.tx, a.m10, a.m11, a.ty});
  return affine_warp(x, Tensor::from_vector(theta, {static_cast<int64_t>(w.size()), 2, 3}, x.device()));
}

Tensor brightness(const Tensor& x, const std::vector<float>& b) {
  check_images("augment::brightness", x, b.size());
  return add(x, per_sample(b, x.device()));
}

Tensor contrast(const Tensor& x, const std::vector<float>& c) {
  check_images("augment::contrast", x, c.size());
  Tensor m = mean(x, {1, 2, 3}, /*keepdim=*/true);
  return add(mul(sub(x, m), per_sample(c, x.device())), m);
}

Tensor saturation(const Tensor& x, const std::vector<float>& s) {
  check_images("augment::saturation", x, s.size());
  if (x.shape()[1] == 1) return x;
  Tensor g = mean(x, {1}, /*keepdim=*/true);
  return add(mul(sub(x, g), per_sample(s, x.device())), g);
}

Tensor cutout(const Tensor& x, const std::vector<float>& cx, const std::vector<float>& cy, float frac) {
  check_images("augment::cutout", x, cx.size());
  if (cy.size() != cx.size()) throw std::invalid_argument("augment::cutout: cx and cy differ in length");
  const int64_t N = x.shape()[0], S = x.shape()[2];
  const int64_t side = std::max<int64_t>(1, std::llround(frac * S));
  std::vector<float> mask(static_cast<size_t>(N * S * S), 1.f);
  for (int64_t n = 0; n < N; ++n) {
    if (cx[n] < 0) continue;
    const int64_t x0 = static_cast<int64_t>(std::floor(cx[n] * S)) - side / 2;
    const int64_t y0 = static_cast<int64_t>(std::floor(cy[n] * S)) - side / 2;
    for (int64_t i = std::max<int64_t>(0, y0); i < std::min(S, y0 + side); ++i)
      for (int64_t j = std::max<int64_t>(0, x0); j < std::min(S, x0 + side); ++j)
        mask[static_cast<size_t>((n * S + i) * S + j)] = 0.f;
  }
  return mul(x, Tensor::from_vector(mask, {N, 1, S, S}, x.device()));
}

}  // namespace augment

Tensor augment_images(const Tensor& x, float p, Generator& gen, bool geometric) {
  if (x.dim() != 4 || x.shape()[2] != x.shape()[3])
    throw std::invalid_argument("augment_images: images must be square [N, C, S, S], got " + shape_str(x.shape()));
  const int64_t N = x.shape()[0], S = x.shape()[2];
  constexpr int kU = 12, kZ = 3;  // uniforms and normals per sample
  std::vector<float> u, z;
  {
    NoGradGuard guard;
    u = Tensor::rand({N, kU}, &gen).to_vector();
    z = Tensor::randn({N, kZ}, &gen).to_vector();
  }
  auto U = [&](int64_t n, int k) { return u[static_cast<size_t>(n * kU + k)]; };
  auto Z = [&](int64_t n, int k) { return z[static_cast<size_t>(n * kZ + k)]; };
  const int64_t max_shift = S / 8;
  std::vector<augment::Geometry> geo(static_cast<size_t>(N));
  std::vector<float> b(N, 0.f), c(N, 1.f), s(N, 1.f), cx(N, -1.f), cy(N, -1.f);
  bool any_geo = false, any_b = false, any_c = false, any_s = false, any_cut = false;
  for (int64_t n = 0; n < N; ++n) {
    augment::Geometry& g = geo[n];
    if (U(n, 0) < p) g.xflip = any_geo = true;
    if (U(n, 1) < p) {
      g.rot90 = 1 + std::min(2, static_cast<int>(U(n, 2) * 3));
      any_geo = true;
    }
    if (U(n, 3) < p && max_shift > 0) {
      g.tx = static_cast<int>(std::lround((2.f * U(n, 4) - 1.f) * max_shift));
      g.ty = static_cast<int>(std::lround((2.f * U(n, 5) - 1.f) * max_shift));
      any_geo = any_geo || g.tx != 0 || g.ty != 0;
    }
    if (U(n, 6) < p) { b[n] = 0.2f * Z(n, 0); any_b = true; }
    if (U(n, 7) < p) { c[n] = std::exp2(0.5f * Z(n, 1)); any_c = true; }
    if (U(n, 8) < p) { s[n] = std::exp2(Z(n, 2)); any_s = true; }
    if (U(n, 9) < p) { cx[n] = U(n, 10); cy[n] = U(n, 11); any_cut = true; }
  }
  Tensor y = x;
  if (any_geo) y = augment::apply_geometry(y, geo);
  if (geometric) {
    // StyleGAN2-ADA's "geom" group, drawn after the values above: isotropic scaling, rotation,
    // anisotropic scaling, rotation, fractional translation, composed into one map per image,
    // output -> input. The matrices' distributions are symmetric, so composing them in this
    // direction draws the same maps; the translation is in the output frame, as theirs
    // (input = M (u - t), i.e. an offset of -M t: t is symmetric too).
    constexpr int kGU = 7, kGZ = 4;
    std::vector<float> gu, gz;
    {
      NoGradGuard guard;
      gu = Tensor::rand({N, kGU}, &gen).to_vector();
      gz = Tensor::randn({N, kGZ}, &gen).to_vector();
    }
    const double p_rot = 1.0 - std::sqrt(std::max(0.0, 1.0 - static_cast<double>(p)));  // two chances: p overall
    const double pi = 3.14159265358979323846;
    std::vector<augment::Warp> warps(static_cast<size_t>(N));
    bool any_warp = false;
    for (int64_t n = 0; n < N; ++n) {
      auto GU = [&](int k) { return static_cast<double>(gu[static_cast<size_t>(n * kGU + k)]); };
      auto GZ = [&](int k) { return static_cast<double>(gz[static_cast<size_t>(n * kGZ + k)]); };
      double m[2][2] = {{1, 0}, {0, 1}}, t[2] = {0, 0};
      auto then = [&](double a, double b, double c2, double d) {  // m = [[a, b], [c2, d]] m
        const double r00 = a * m[0][0] + b * m[1][0], r01 = a * m[0][1] + b * m[1][1];
        const double r10 = c2 * m[0][0] + d * m[1][0], r11 = c2 * m[0][1] + d * m[1][1];
        m[0][0] = r00; m[0][1] = r01; m[1][0] = r10; m[1][1] = r11;
      };
      auto rotate = [&](double u) { const double th = (2 * u - 1) * pi; then(std::cos(th), -std::sin(th), std::sin(th), std::cos(th)); };
      bool on = false;
      if (GU(0) < p) { const double s = std::exp2(0.2 * GZ(0)); then(s, 0, 0, s); on = true; }
      if (GU(1) < p_rot) { rotate(GU(5)); on = true; }
      if (GU(2) < p) { const double s = std::exp2(0.2 * GZ(1)); then(s, 0, 0, 1 / s); on = true; }
      if (GU(3) < p_rot) { rotate(GU(6)); on = true; }
      if (GU(4) < p) { t[0] = 0.125 * GZ(2) * S; t[1] = 0.125 * GZ(3) * S; on = true; }
      if (!on) continue;
      any_warp = true;
      augment::Warp& wp = warps[n];
      wp.m00 = static_cast<float>(m[0][0]); wp.m01 = static_cast<float>(m[0][1]);
      wp.m10 = static_cast<float>(m[1][0]); wp.m11 = static_cast<float>(m[1][1]);
      wp.tx = static_cast<float>(m[0][0] * t[0] + m[0][1] * t[1]);
      wp.ty = static_cast<float>(m[1][0] * t[0] + m[1][1] * t[1]);
    }
    if (any_warp && S >= 2) y = augment::warp(y, warps);
  }
  if (any_b) y = augment::brightness(y, b);
  if (any_c) y = augment::contrast(y, c);
  if (any_s) y = augment::saturation(y, s);
  if (any_cut) y = augment::cutout(y, cx, cy);
  return y;
}

AdaptiveAugment::AdaptiveAugment(const AdaOptions& options, uint64_t seed)
    : opt_(options), gen_(seed), p_(options.initial_p) {
  if (!(opt_.target > 0 && opt_.target < 1))
    throw std::invalid_argument("ADA: target " + std::to_string(opt_.target) + " must be in (0, 1) (StyleGAN2-ADA uses 0.6)");
  if (!(opt_.speed > 0)) throw std::invalid_argument("ADA: speed (images for p to go 0 -> 1) must be positive");
  if (opt_.interval < 1) throw std::invalid_argument("ADA: interval must be at least 1 step");
  if (!(p_ >= 0 && p_ <= 1)) throw std::invalid_argument("ADA: initial p must be in [0, 1]");
}

void AdaptiveAugment::observe_real(const Tensor& d_real) {
  const std::vector<float> v = d_real.to_vector();
  observe_real(v.data(), static_cast<int64_t>(v.size()));
}

void AdaptiveAugment::observe_real(const float* d_real, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    sign_sum_ += d_real[i] > 0.5f ? 1.0 : (d_real[i] < 0.5f ? -1.0 : 0.0);
  sign_count_ += n;
}

void AdaptiveAugment::end_step() {
  if (++steps_ < opt_.interval) return;
  if (sign_count_ > 0) {
    last_rt_ = sign_sum_ / static_cast<double>(sign_count_);
    const double dir = last_rt_ > opt_.target ? 1.0 : (last_rt_ < opt_.target ? -1.0 : 0.0);
    p_ = std::clamp(p_ + dir * static_cast<double>(sign_count_) / opt_.speed, 0.0, 1.0);
  }
  sign_sum_ = 0;
  sign_count_ = 0;
  steps_ = 0;
}

std::string AdaptiveAugment::state_json() const {
  nlohmann::json j = {{"p", p_},
                      {"sign_sum", sign_sum_},
                      {"sign_count", sign_count_},
                      {"steps_since_adjust", steps_},
                      {"last_rt", last_rt_},
                      {"rng", {{"seed", gen_.seed()}, {"offset", gen_.offset()}}}};
  return j.dump(2) + "\n";
}

void AdaptiveAugment::load_state_json(const std::string& text) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    p_ = j.at("p").get<double>();
    sign_sum_ = j.at("sign_sum").get<double>();
    sign_count_ = j.at("sign_count").get<int64_t>();
    steps_ = j.at("steps_since_adjust").get<int64_t>();
    last_rt_ = j.value("last_rt", 0.0);
    gen_.set_state(j.at("rng").at("seed").get<uint64_t>(), j.at("rng").at("offset").get<uint64_t>());
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("ADA state: not a valid augment state (") + e.what() + ")");
  }
}

}  // namespace gantry

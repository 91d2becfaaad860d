// KID and FID (models/metrics.h) on known cases: identical sets, Gaussians with a closed-form
// Frechet distance, and real Fashion-MNIST (train vs test) against noise through a feature net.
#include <catch2/catch.hpp>

#include <cmath>

#include "gantry/core/autograd.h"
#include "gantry/data/dataset.h"
#include "gantry/data/transforms.h"
#include "gantry/models/classifier.h"
#include "gantry/models/metrics.h"

using namespace gantry;

namespace {
// n samples of a Gaussian with diagonal covariance: mean m[d], std s[d].
Tensor gaussian(int64_t n, const std::vector<float>& m, const std::vector<float>& s, uint64_t seed) {
  Generator g(seed);
  Tensor z = Tensor::randn({n, static_cast<int64_t>(m.size())}, &g);
  std::vector<float> v = z.to_vector();
  for (int64_t i = 0; i < n; ++i)
    for (size_t d = 0; d < m.size(); ++d) v[i * m.size() + d] = m[d] + s[d] * v[i * m.size() + d];
  return Tensor::from_vector(v, z.shape());
}
}  // namespace

TEST_CASE("identical sets: KID ~ 0 and FID ~ 0") {
  // Feature-like scales: 16 dims, zero mean, unit variance.
  const std::vector<float> zero(16, 0.f), unit(16, 1.f), shifted(16, 0.5f);
  Tensor a = gaussian(400, zero, unit, 1);
  CHECK(std::abs(frechet_distance(a, a)) < 1e-8);
  // Unbiased MMD: for the same set the estimate is ~0 (its only bias is the diagonal terms of
  // k(x, y) where both subsets pick the same row, O(1/m)); a shifted distribution is far above.
  const KidResult same = kernel_inception_distance(a, a, 20, 400, 0);
  const KidResult other = kernel_inception_distance(a, gaussian(400, shifted, unit, 2), 20, 400, 0);
  INFO("KID same " << same.mean << " +- " << same.std << ", shifted " << other.mean);
  CHECK(std::abs(same.mean) < 0.05);
  CHECK(std::abs(same.mean) < 0.05 * other.mean);
  // Two independent samples of one distribution: zero within the noise.
  const KidResult twin = kernel_inception_distance(a, gaussian(400, zero, unit, 3), 20, 200, 0);
  CHECK(std::abs(twin.mean) < 0.05 * other.mean);
  CHECK(same.subset_size == 400);
  CHECK(same.subsets == 20);
  CHECK(other.std > 0);
}

TEST_CASE("FID of Gaussians: closed form |m1 - m2|^2 + sum(v1 + v2 - 2 sqrt(v1 v2))") {
  // From exact statistics (diagonal covariances).
  FeatureStats s1, s2;
  s1.dim = s2.dim = 3;
  s1.mean = {0, 1, 2};
  s2.mean = {1, 1, 0};
  s1.cov = {4, 0, 0, 0, 1, 0, 0, 0, 9};
  s2.cov = {1, 0, 0, 0, 1, 0, 0, 0, 4};
  const double want = (1 + 0 + 4) + (4 + 1 - 2 * 2) + (1 + 1 - 2 * 1) + (9 + 4 - 2 * 6);
  CHECK(frechet_distance(s1, s2) == Approx(want).epsilon(1e-10));
  // A full (non-diagonal) case: rotating both Gaussians by the same orthogonal matrix leaves FID
  // unchanged. Rotation by 30 degrees in the (0, 1) plane.
  const double c = std::cos(M_PI / 6), s = std::sin(M_PI / 6);
  auto rot = [&](const FeatureStats& in) {
    FeatureStats o = in;
    const double R[9] = {c, -s, 0, s, c, 0, 0, 0, 1};
    for (int i = 0; i < 3; ++i) {
      o.mean[i] = 0;
      for (int k = 0; k < 3; ++k) o.mean[i] += R[i * 3 + k] * in.mean[k];
    }
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        double acc = 0;
        for (int k = 0; k < 3; ++k)
          for (int l = 0; l < 3; ++l) acc += R[i * 3 + k] * in.cov[k * 3 + l] * R[j * 3 + l];
        o.cov[i * 3 + j] = acc;
      }
    return o;
  };
  CHECK(frechet_distance(rot(s1), rot(s2)) == Approx(want).epsilon(1e-9));
  // From samples: the estimate approaches the closed form.
  Tensor a = gaussian(20000, {0, 1, 2}, {2, 1, 3}, 3), b = gaussian(20000, {1, 1, 0}, {1, 1, 2}, 4);
  CHECK(frechet_distance(a, b) == Approx(want).epsilon(0.03));
  CHECK_THROWS_WITH(frechet_distance(a, Tensor::zeros({5, 2})), Catch::Contains("different"));
  CHECK_THROWS_WITH(kernel_inception_distance(a, Tensor::zeros({5, 2})), Catch::Contains("feature dims differ"));
}

TEST_CASE("Fashion-MNIST through a feature net: train vs test scores far below real vs noise") {
  const std::string dir = data::default_fashion_mnist_dir();
  if (dir.empty()) {
    WARN("SKIPPED: Debian's dataset-fashion-mnist is not installed");
    return;
  }
  auto train = data::open_dataset("fashion-mnist", "", true), test = data::open_dataset("fashion-mnist", "", false);
  // A randomly initialized feature network (a trained one separates better; random conv
  // features already tell images from noise, and keep this test fast under ASan).
  ClassifierConfig c;
  c.width = 8;
  Generator init(1);
  ConvClassifier net(c, &init);
  net.eval();  // fresh running statistics (mean 0, var 1)
  const int64_t n = 200;
  auto images = [&](const data::Dataset& ds, int64_t offset) {
    data::TransformOptions t;
    t.image_size = 32;
    Tensor x = Tensor::empty({n, 1, 32, 32});
    for (int64_t i = 0; i < n; ++i)
      data::apply_transform(ds.get(static_cast<size_t>(offset + i * 37)).image, t, 1, false, x.data() + i * 1024);
    return x;
  };
  NoGradGuard no_grad;
  Tensor f_train = net.features(images(*train, 0)), f_test = net.features(images(*test, 5));
  Generator g(7);
  Tensor noise = Tensor::rand({n, 1, 32, 32}, &g) * 2.f - 1.f;
  Tensor f_noise = net.features(noise);
  const KidResult k_real = kernel_inception_distance(f_train, f_test, 10, 100, 0);
  const KidResult k_noise = kernel_inception_distance(f_train, f_noise, 10, 100, 0);
  const double fid_real = frechet_distance(f_train, f_test), fid_noise = frechet_distance(f_train, f_noise);
  INFO("KID real " << k_real.mean << " noise " << k_noise.mean << "; FID real " << fid_real << " noise " << fid_noise);
  CHECK(k_real.mean < 0.1 * k_noise.mean);
  CHECK(fid_real < 0.1 * fid_noise);
}

// KID and FID; see metrics.h for the definitions.
#include "gantry/models/metrics.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "gantry/core/random.h"

namespace gantry {

namespace {

using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Mat to_matrix(const Tensor& t, const char* what) {
  if (!t.defined() || t.dim() != 2 || t.shape()[0] < 2 || t.shape()[1] < 1)
    throw std::invalid_argument(std::string(what) + ": features must be [N, D] with N >= 2, got " +
                                (t.defined() ? shape_str(t.shape()) : std::string("an undefined tensor")));
  const std::vector<float> v = t.to_vector();
  Mat m(t.shape()[0], t.shape()[1]);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = v[static_cast<size_t>(i)];
  return m;
}

// m distinct indices out of n (partial Fisher-Yates driven by Philox uniforms).
std::vector<int64_t> choose(int64_t n, int64_t m, Generator& gen) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::vector<float> u(static_cast<size_t>(m));
  gen.fill_uniform(u.data(), m, 0.f, 1.f);
  for (int64_t i = 0; i < m; ++i) {
    const int64_t j = i + std::min<int64_t>(n - i - 1, static_cast<int64_t>(u[i] * static_cast<float>(n - i)));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(static_cast<size_t>(m));
  return idx;
}

}  // namespace

KidResult kernel_inception_distance(const Tensor& real, const Tensor& fake, int subsets,
                                    int64_t subset_size, uint64_t seed) {
  const Mat X = to_matrix(real, "kernel_inception_distance (real)");
  const Mat Y = to_matrix(fake, "kernel_inception_distance (fake)");
  if (X.cols() != Y.cols())
    throw std::invalid_argument("kernel_inception_distance: feature dims differ (" + std::to_string(X.cols()) +
                                " vs " + std::to_string(Y.cols()) + "); use the same feature network for both");
  if (subsets < 1 || subset_size < 2)
    throw std::invalid_argument("kernel_inception_distance: need subsets >= 1 and subset_size >= 2");
  const double d = static_cast<double>(X.cols());
  const int64_t m = std::min<int64_t>(subset_size, std::min<int64_t>(X.rows(), Y.rows()));
  // Full kernel matrices once; each subset then only sums blocks of them.
  auto kernel = [d](const Mat& A, const Mat& B) {
    Mat K = (A * B.transpose()).array() / d + 1.0;
    return Mat(K.array().cube());
  };
  const Mat Kxx = kernel(X, X), Kyy = kernel(Y, Y), Kxy = kernel(X, Y);
  Generator gen(seed);
  std::vector<double> mmd(static_cast<size_t>(subsets));
  for (int s = 0; s < subsets; ++s) {
    const std::vector<int64_t> ix = choose(X.rows(), m, gen), iy = choose(Y.rows(), m, gen);
    double sxx = 0, syy = 0, sxy = 0;
    for (int64_t a = 0; a < m; ++a)
      for (int64_t b = 0; b < m; ++b) {
        if (a != b) {
          sxx += Kxx(ix[a], ix[b]);
          syy += Kyy(iy[a], iy[b]);
        }
        sxy += Kxy(ix[a], iy[b]);
      }
    const double md = static_cast<double>(m);
    mmd[s] = (sxx + syy) / (md * (md - 1)) - 2 * sxy / (md * md);
  }
  KidResult r;
  r.subsets = subsets;
  r.subset_size = m;
  r.mean = std::accumulate(mmd.begin(), mmd.end(), 0.0) / subsets;
  double var = 0;
  for (double v : mmd) var += (v - r.mean) * (v - r.mean);
  r.std = std::sqrt(var / subsets);
  return r;
}

FeatureStats feature_stats(const Tensor& features) {
  const Mat X = to_matrix(features, "feature_stats");
  FeatureStats st;
  st.dim = X.cols();
  const Eigen::RowVectorXd mu = X.colwise().mean();
  const Mat centered = X.rowwise() - mu;
  const Mat cov = centered.transpose() * centered / static_cast<double>(X.rows() - 1);
  st.mean.assign(mu.data(), mu.data() + mu.size());
  st.cov.assign(cov.data(), cov.data() + cov.size());
  return st;
}

double frechet_distance(const FeatureStats& a, const FeatureStats& b) {
  if (a.dim != b.dim || a.dim < 1 || a.mean.size() != static_cast<size_t>(a.dim) ||
      b.mean.size() != static_cast<size_t>(b.dim) || a.cov.size() != static_cast<size_t>(a.dim * a.dim) ||
      b.cov.size() != static_cast<size_t>(b.dim * b.dim))
    throw std::invalid_argument("frechet_distance: statistics of different or inconsistent dims (" +
                                std::to_string(a.dim) + " vs " + std::to_string(b.dim) + ")");
  const int64_t D = a.dim;
  const Eigen::Map<const Eigen::VectorXd> m1(a.mean.data(), D), m2(b.mean.data(), D);
  Mat C1 = Eigen::Map<const Mat>(a.cov.data(), D, D), C2 = Eigen::Map<const Mat>(b.cov.data(), D, D);
  C1 = (C1 + C1.transpose()) / 2;  // exactly symmetric for the solver
  C2 = (C2 + C2.transpose()) / 2;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> e1(C1);
  const Eigen::VectorXd s1 = e1.eigenvalues().cwiseMax(0.0).cwiseSqrt();
  const Eigen::MatrixXd S1 = e1.eigenvectors() * s1.asDiagonal() * e1.eigenvectors().transpose();
  Eigen::MatrixXd M = S1 * C2 * S1;
  M = (M + M.transpose()) / 2;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> em(M, Eigen::EigenvaluesOnly);
  const double tr_sqrt = em.eigenvalues().cwiseMax(0.0).cwiseSqrt().sum();
  return (m1 - m2).squaredNorm() + C1.trace() + C2.trace() - 2 * tr_sqrt;
}

double frechet_distance(const Tensor& real, const Tensor& fake) {
  return frechet_distance(feature_stats(real), feature_stats(fake));
}

}  // namespace gantry

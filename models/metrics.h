#pragma once
// Sample-quality metrics on feature vectors (rows of a [N, D] CPU tensor), computed in double.
//
// KID, the Kernel Inception Distance (Binkowski et al., "Demystifying MMD GANs", ICLR 2018), as
// torch-fidelity computes it: the unbiased estimate of MMD^2 with the cubic polynomial kernel
//   k(x, y) = (x . y / D + 1)^3,
//   MMD^2_u = sum_{i!=j} k(x_i,x_j) / (m(m-1)) + sum_{i!=j} k(y_i,y_j) / (m(m-1))
//             - 2 sum_{i,j} k(x_i,y_j) / m^2
// over `subsets` random subsets of m = subset_size rows from each set (without replacement);
// the result is the mean and the (population) standard deviation over the subsets. Unbiased,
// so it can be slightly negative for equal distributions.
//
// FID, the Frechet distance (Heusel et al., NeurIPS 2017) between Gaussians fitted to the two
// sets (mean, covariance with the 1/(N-1) normalization, as numpy.cov):
//   FID = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr( (C1^{1/2} C2 C1^{1/2})^{1/2} )
// The last trace uses the symmetric form, whose square roots come from Eigen's
// SelfAdjointEigenSolver (negative round-off eigenvalues clamped to 0): it equals
// tr((C1 C2)^{1/2}) and is stabler than a general matrix square root.
#include <cstdint>
#include <vector>

#include "gantry/core/tensor.h"

namespace gantry {

struct KidResult {
  double mean = 0, std = 0;
  int subsets = 0;
  int64_t subset_size = 0;
};

// subset_size is clamped to the smaller set's size. Throws std::invalid_argument when the
// feature dims differ or a set has fewer than 2 rows.
KidResult kernel_inception_distance(const Tensor& real, const Tensor& fake, int subsets = 100,
                                    int64_t subset_size = 1000, uint64_t seed = 0);

struct FeatureStats {
  int64_t dim = 0;
  std::vector<double> mean;  // [D]
  std::vector<double> cov;   // [D, D] row-major
};
FeatureStats feature_stats(const Tensor& features);
double frechet_distance(const FeatureStats& a, const FeatureStats& b);
double frechet_distance(const Tensor& real, const Tensor& fake);

}  // namespace gantry

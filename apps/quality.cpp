#include "quality.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/core/random.h"
#include "gantry/data/transforms.h"
#include "gantry/models/dcgan.h"

namespace gantry::apps {

Tensor adapt_images(const Tensor& images, const ConvClassifier& net) {
  NoGradGuard guard;
  Tensor x = images;
  const int64_t C = x.shape()[1], want_c = net.config.channels;
  if (C != want_c) {
    if (C == 3 && want_c == 1) {
      Tensor w = Tensor::from_vector({0.299f, 0.587f, 0.114f}, {1, 3, 1, 1}, x.device());
      x = sum(mul(x, w), {1}, /*keepdim=*/true);
    } else if (C == 1 && want_c == 3) {
      x = cat({x, x, x}, 1);
    } else {
      throw std::invalid_argument("features: images have " + std::to_string(C) + " channels, the classifier " +
                                  std::to_string(want_c) + "; only 1 <-> 3 conversions exist");
    }
  }
  const int64_t S = x.shape()[2], T = net.config.image_size;
  if (S != T) {
    if (S > T && S % T == 0) {
      x = avg_pool2d(x, static_cast<int>(S / T));
    } else {  // nearest neighbour
      const int64_t N = x.shape()[0];
      std::vector<float> idx(static_cast<size_t>(N * T * T));
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < T; ++i)
          for (int64_t j = 0; j < T; ++j) {
            const int64_t si = std::min(S - 1, (2 * i + 1) * S / (2 * T)), sj = std::min(S - 1, (2 * j + 1) * S / (2 * T));
            idx[static_cast<size_t>((n * T + i) * T + j)] = static_cast<float>(si * S + sj);
          }
      x = spatial_gather(x, Tensor::from_vector(idx, {N, T * T}, x.device()), T, T);
    }
  }
  return x;
}

Tensor classifier_features(ConvClassifier& net, const Tensor& images, Device device, int64_t batch) {
  NoGradGuard guard;
  net.eval();
  net.to(device);
  std::vector<Tensor> parts;
  const int64_t n = images.shape()[0];
  for (int64_t i = 0; i < n; i += batch) {
    Tensor x = images.narrow0(i, std::min(batch, n - i)).to(device);
    parts.push_back(net.features(adapt_images(x, net)).cpu());
  }
  return parts.size() == 1 ? parts[0] : cat(parts, 0);
}

Tensor dataset_images(const data::Dataset& ds, int64_t count, int image_size, int channels) {
  if (count < 2) throw std::invalid_argument("evaluation needs at least 2 images");
  const int64_t size = static_cast<int64_t>(ds.size());
  if (count > size)
    throw std::invalid_argument("evaluation asks for " + std::to_string(count) + " real images but the dataset " +
                                ds.name() + " has " + std::to_string(size) + "; lower --num / --eval-num");
  data::TransformOptions t;
  t.image_size = image_size;
  Tensor x = Tensor::empty({count, channels, image_size, image_size});
  const int64_t per = static_cast<int64_t>(channels) * image_size * image_size;
#pragma omp parallel for
  for (int64_t i = 0; i < count; ++i)
    data::apply_transform(ds.get(static_cast<size_t>(i * size / count)).image, t, channels, false, x.data() + i * per);
  return x;
}

Tensor generated_features(ConvClassifier& net, const std::function<Tensor(const Tensor&)>& sample, int64_t nz,
                          int64_t count, uint64_t seed, Device device, int64_t chunk, float truncation) {
  Generator gen(seed);
  std::vector<Tensor> parts;
  for (int64_t i = 0; i < count; i += chunk) {
    const int64_t n = std::min(chunk, count - i);
    // Untruncated latents are drawn on the device itself (the same values, by Philox's contract).
    Tensor z = truncation > 0 ? sample_latents({n, nz, 1, 1}, gen, truncation).to(device)
                              : Tensor::randn({n, nz, 1, 1}, &gen, device);
    parts.push_back(classifier_features(net, sample(z), device));
  }
  return parts.size() == 1 ? parts[0] : cat(parts, 0);
}

QualityScores score(const Tensor& real_features, const Tensor& fake_features, int subsets, int64_t subset_size) {
  QualityScores s;
  s.kid = kernel_inception_distance(real_features, fake_features, subsets, subset_size, 0);
  s.fid = frechet_distance(real_features, fake_features);
  return s;
}

}  // namespace gantry::apps

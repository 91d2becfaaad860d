#pragma once
// Quality evaluation shared by dcgan_train (--eval-every) and dcgan_eval: images -> features of
// a gantry classifier (models/classifier.h) -> KID and FID (models/metrics.h).
#include <cstdint>
#include <functional>

#include "gantry/core/device.h"
#include "gantry/core/tensor.h"
#include "gantry/data/dataset.h"
#include "gantry/models/classifier.h"
#include "gantry/models/metrics.h"

namespace gantry::apps {

// Images [N, C, S, S] in [-1, 1] brought to the classifier's input: channels converted (RGB ->
// gray with ITU-R 601 luma weights, gray -> RGB replicated) and the size changed (an integer
// shrink factor: average pooling; otherwise nearest-neighbour sampling).
Tensor adapt_images(const Tensor& images, const ConvClassifier& net);
// Penultimate-layer features [N, D] on the host, computed in batches on the net's device (the
// net is used in eval mode).
Tensor classifier_features(ConvClassifier& net, const Tensor& images, Device device, int64_t batch = 250);
// `count` images of a dataset spread evenly over it (index i * size / count), transformed as
// training sees them (size S, `channels` channels, no flip): [count, channels, S, S].
Tensor dataset_images(const data::Dataset& ds, int64_t count, int image_size, int channels);
// Features of `count` generated images: sample(z) maps latents [n, nz, 1, 1] to images; the
// latents come from Generator(seed), in chunks of `chunk`, truncated at `truncation` when it is
// positive (sample_latents, models/dcgan.h).
Tensor generated_features(ConvClassifier& net, const std::function<Tensor(const Tensor&)>& sample,
                          int64_t nz, int64_t count, uint64_t seed, Device device, int64_t chunk = 64,
                          float truncation = 0);

struct QualityScores {
  KidResult kid;
  double fid = 0;
};
// KID over `subsets` subsets of min(subset_size, N) rows, and FID.
QualityScores score(const Tensor& real_features, const Tensor& fake_features, int subsets = 100,
                    int64_t subset_size = 1000);

}  // namespace gantry::apps

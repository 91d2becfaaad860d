#pragma once
// A small convolutional classifier, gantry's own feature network for KID and FID (where
// torch-fidelity would use InceptionV3, which gantry neither has nor needs for 32x32 data):
//
//   body.0 Conv2d(c, w, 3, 2, 1)    body.1 BatchNorm2d(w)    body.2 LeakyReLU(0.2)   S/2
//   body.3 Conv2d(w, 2w, 3, 2, 1)   body.4 BatchNorm2d(2w)   body.5 LeakyReLU(0.2)   S/4
//   body.6 Conv2d(2w, 4w, 3, 2, 1)  body.7 BatchNorm2d(4w)   body.8 LeakyReLU(0.2)   S/8
//   global average pool -> features [N, 4w]        fc Linear(4w, num_classes) -> logits
//
// features() is the penultimate layer the metrics use. Saved as safetensors with metadata
// model=gantry-classifier, image_size, channels, num_classes, width, feature_dim, so a file
// alone rebuilds the network (load_classifier).
#include <cstdint>
#include <memory>
#include <string>

#include "gantry/core/random.h"
#include "gantry/core/safetensors.h"
#include "gantry/layers/layers.h"

namespace gantry {

struct ClassifierConfig {
  int64_t channels = 1;
  int64_t num_classes = 10;
  int64_t width = 32;
  int image_size = 32;  // the input size it was trained at (images are resized to it)
};

class ConvClassifier : public Module {
 public:
  explicit ConvClassifier(const ClassifierConfig& config, Generator* gen = nullptr);
  // images [N, channels, S, S] in [-1, 1] (S >= 8) -> features [N, 4w].
  Tensor features(const Tensor& x);
  // -> logits [N, num_classes].
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "ConvClassifier"; }
  int64_t feature_dim() const { return 4 * config.width; }

  const ClassifierConfig config;
  std::shared_ptr<Sequential> body;
  std::shared_ptr<Linear> fc;
};

// Writes the state dict and the config as metadata.
void save_classifier(const std::string& path, const ConvClassifier& net, Metadata extra = {});
// Rebuilds a classifier from a file written by save_classifier (throws std::runtime_error
// naming the file when it is not one).
std::shared_ptr<ConvClassifier> load_classifier(const std::string& path);

}  // namespace gantry

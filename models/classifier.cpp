#include "gantry/models/classifier.h"

#include <stdexcept>

#include "gantry/core/ops.h"

namespace gantry {

ConvClassifier::ConvClassifier(const ClassifierConfig& c, Generator* gen) : config(c) {
  if (c.channels < 1 || c.num_classes < 2 || c.width < 1 || c.image_size < 8)
    throw std::invalid_argument("ConvClassifier: need channels >= 1, num_classes >= 2, width >= 1 and image_size >= 8; got " +
                                std::to_string(c.channels) + ", " + std::to_string(c.num_classes) + ", " +
                                std::to_string(c.width) + ", " + std::to_string(c.image_size));
  body = register_module("body", std::make_shared<Sequential>());
  int64_t in = c.channels;
  for (int64_t mult : {1, 2, 4}) {
    body->push_back(make<Conv2d>(in, c.width * mult, 3, 2, 1, true, gen));
    body->push_back(make<BatchNorm2d>(c.width * mult));
    body->push_back(make<LeakyReLU>(0.2f));
    in = c.width * mult;
  }
  fc = register_module("fc", make<Linear>(in, c.num_classes, true, gen));
}

Tensor ConvClassifier::features(const Tensor& x) {
  if (x.dim() != 4 || x.size(1) != config.channels)
    throw std::invalid_argument("ConvClassifier: expected images [N, " + std::to_string(config.channels) +
                                ", S, S], got " + shape_str(x.shape()));
  return global_avg_pool2d(body->forward(x));
}

Tensor ConvClassifier::forward(const Tensor& x) { return fc->forward(features(x)); }

void save_classifier(const std::string& path, const ConvClassifier& net, Metadata meta) {
  meta["format"] = "pt";
  meta["model"] = "gantry-classifier";
  meta["image_size"] = std::to_string(net.config.image_size);
  meta["channels"] = std::to_string(net.config.channels);
  meta["num_classes"] = std::to_string(net.config.num_classes);
  meta["width"] = std::to_string(net.config.width);
  meta["feature_dim"] = std::to_string(net.feature_dim());
  save_safetensors(path, net.state_dict(), meta);
}

std::shared_ptr<ConvClassifier> load_classifier(const std::string& path) {
  SafetensorsContents sc = load_safetensors(path);
  auto get = [&](const char* key) -> int64_t {
    auto it = sc.metadata.find(key);
    if (it == sc.metadata.end())
      throw std::runtime_error(path + ": not a gantry classifier (metadata '" + key +
                               "' missing; train one with gantry_classifier_train)");
    return std::stoll(it->second);
  };
  auto model = sc.metadata.find("model");
  if (model == sc.metadata.end() || model->second != "gantry-classifier")
    throw std::runtime_error(path + ": not a gantry classifier (metadata model is '" +
                             (model == sc.metadata.end() ? std::string("missing") : model->second) +
                             "'; train one with gantry_classifier_train)");
  ClassifierConfig c;
  c.image_size = static_cast<int>(get("image_size"));
  c.channels = get("channels");
  c.num_classes = get("num_classes");
  c.width = get("width");
  Generator scratch(0);
  auto net = std::make_shared<ConvClassifier>(c, &scratch);
  net->load_state_dict(sc.tensors);
  net->eval();
  return net;
}

}  // namespace gantry

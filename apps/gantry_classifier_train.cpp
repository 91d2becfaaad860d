// gantry_classifier_train: trains the small conv classifier of models/classifier.h on a
// labelled dataset (train split), reports its test accuracy (test split; for an image folder a
// held-out 10%: every 10th image) and saves it as safetensors: the feature network of KID/FID.
#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <memory>

#include "app_common.h"
#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/core/threads.h"
#include "gantry/core/version.h"
#include "gantry/data/dataset.h"
#include "gantry/data/loader.h"
#include "gantry/models/classifier.h"
#include "gantry/optim/adam.h"

using namespace gantry;

namespace {

// Every 10th example (test) or the other nine (train) of a dataset.
class SplitDataset : public data::Dataset {
 public:
  SplitDataset(std::shared_ptr<data::Dataset> base, bool test) : base_(std::move(base)) {
    for (size_t i = 0; i < base_->size(); ++i)
      if ((i % 10 == 9) == test) index_.push_back(i);
  }
  size_t size() const override { return index_.size(); }
  data::Example get(size_t i) const override { return base_->get(index_.at(i)); }
  int64_t num_classes() const override { return base_->num_classes(); }
  int channels() const override { return base_->channels(); }
  std::string name() const override {
    return base_->name() + (index_.empty() || index_[0] == 9 ? " [held-out 10%]" : " [90% train part]");
  }

 private:
  std::shared_ptr<data::Dataset> base_;
  std::vector<size_t> index_;
};

int run(int argc, char** argv) {
  std::string dataset = "fashion-mnist", data_path, classes, out, device_choice = "auto";
  int image_size = 32, channels = 0, workers = 2, threads = 0;
  int64_t width = 32, batch_size = 128, max_steps = 0, epochs = 0, log_every = 100;
  double lr = 1e-3;
  uint64_t seed = 1;
  CLI::App app{"gantry_classifier_train: the feature network for KID/FID (gantry " + std::string(version()) + ")"};
  app.option_defaults()->always_capture_default();
  app.add_option("--dataset", dataset, "fashion-mnist, mnist, cifar10, cifar100, lsun or folder (class sub-folders)")->check(CLI::IsMember(data::dataset_kinds()));
  app.add_option("--data", data_path, "dataset location (see dcgan_train --help)");
  app.add_option("--classes", classes, "lsun: comma-separated categories (default: all in --data)");
  app.add_option("--image-size", image_size, "input size (images are resized to it)")->check(CLI::Range(8, 512));
  app.add_option("--channels", channels, "1 or 3 (0 = the dataset's own)")->check(CLI::IsMember({0, 1, 3}));
  app.add_option("--width", width, "channels of the first conv (features: 4x this)")->check(CLI::Range(int64_t{1}, int64_t{1024}));
  app.add_option("--batch-size", batch_size, "images per step")->check(CLI::Range(int64_t{2}, int64_t{65536}));
  app.add_option("--max-steps", max_steps, "stop after this many steps (0 = no limit)")->check(CLI::NonNegativeNumber);
  app.add_option("--epochs", epochs, "passes over the training data (both 0: 1 epoch)")->check(CLI::NonNegativeNumber);
  app.add_option("--lr", lr, "Adam learning rate")->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "seed of the initialization and the data order");
  app.add_option("--workers", workers, "data-loading threads");
  app.add_option("--threads", threads, "CPU threads (0 = all cores)");
  app.add_option("--log-every", log_every, "print the loss every N steps")->check(CLI::PositiveNumber);
  app.add_option("--device", device_choice, "auto, cpu, cuda or cuda:N");
  app.add_option("--out", out, "where to save the classifier (.safetensors)")->required();
  try {
    app.parse(argc, argv);
    if (data_path.empty() && !data::dataset_data_hint(dataset).empty())
      throw CLI::ValidationError("--dataset " + dataset + " needs --data PATH (" + data::dataset_data_hint(dataset) + ")");
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (threads > 0) set_num_threads(threads);
  if (epochs == 0 && max_steps == 0) epochs = 1;
  const Device device = apps::choose_device(device_choice);

  std::shared_ptr<data::Dataset> train_ds, test_ds;
  data::DatasetOptions dopt;
  dopt.classes = data::split_classes(classes);
  if (dataset == "folder") {
    auto all = data::open_dataset(dataset, data_path, true, dopt);
    train_ds = std::make_shared<SplitDataset>(all, false);
    test_ds = std::make_shared<SplitDataset>(all, true);
  } else {
    train_ds = data::open_dataset(dataset, data_path, true, dopt);
    test_ds = data::open_dataset(dataset, data_path, false, dopt);
  }
  if (train_ds->num_classes() < 2)
    throw std::invalid_argument("--dataset " + dataset + ": " + train_ds->name() + " has " + std::to_string(train_ds->num_classes()) +
                                " class; a classifier needs at least 2 (an image folder needs one sub-folder per class)");
  if (static_cast<int64_t>(train_ds->size()) < batch_size)
    throw std::invalid_argument("--batch-size " + std::to_string(batch_size) + " is larger than the training set (" +
                                std::to_string(train_ds->size()) + " images)");
  if (channels == 0) channels = train_ds->channels();

  ClassifierConfig cc;
  cc.channels = channels;
  cc.num_classes = train_ds->num_classes();
  cc.width = width;
  cc.image_size = image_size;
  Generator init(seed);
  auto net = std::make_shared<ConvClassifier>(cc, &init);
  net->to(device);
  AdamOptions ao;
  ao.lr = lr;
  Adam opt(net->parameters(), ao);

  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.seed = seed;
  lo.num_workers = workers;
  lo.transform.image_size = image_size;
  lo.transform.channels = channels;
  data::DataLoader loader(train_ds, lo);
  int64_t total = epochs > 0 ? epochs * loader.batches_per_epoch() : max_steps;
  if (max_steps > 0) total = std::min(total, max_steps);
  std::cout << "training on " << train_ds->name() << " (" << cc.num_classes << " classes), " << total << " steps of "
            << batch_size << ", " << image_size << "x" << image_size << "x" << channels << ", width " << width << ", on "
            << device.str() << std::endl;

  const auto t0 = std::chrono::steady_clock::now();
  data::Batch batch;
  net->train();
  for (int64_t step = 1; step <= total && loader.next(batch); ++step) {
    std::vector<float> lv(batch.labels.begin(), batch.labels.end());
    Tensor labels = Tensor::from_vector(lv, {batch.size()}, device);
    opt.zero_grad();
    Tensor loss = cross_entropy(net->forward(batch.images.to(device)), labels);
    loss.backward();
    opt.step();
    if (step % log_every == 0 || step == 1 || step == total) {
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::cout << "step " << step << "/" << total << " loss " << loss.item() << " (" << sec << " s)" << std::endl;
    }
  }

  // Test accuracy.
  net->eval();
  data::LoaderOptions to = lo;
  to.shuffle = false;
  to.drop_last = false;
  to.num_epochs = 1;
  data::DataLoader test_loader(test_ds, to);
  int64_t correct = 0, seen = 0;
  {
    NoGradGuard no_grad;
    while (test_loader.next(batch)) {
      const std::vector<float> logits = net->forward(batch.images.to(device)).to_vector();
      for (int64_t i = 0; i < batch.size(); ++i) {
        const float* row = logits.data() + i * cc.num_classes;
        const int64_t pred = std::max_element(row, row + cc.num_classes) - row;
        correct += pred == batch.labels[i];
      }
      seen += batch.size();
    }
  }
  const double acc = seen ? static_cast<double>(correct) / seen : 0.0;
  std::cout << "test accuracy " << acc * 100 << "% (" << correct << "/" << seen << ", " << test_ds->name() << ")" << std::endl;
  net->to(Device::cpu());
  save_classifier(out, *net, {{"dataset", train_ds->name()}, {"test_accuracy", std::to_string(acc)}});
  std::cout << "saved " << out << " (features: " << net->feature_dim() << ")" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return apps::run_app("gantry_classifier_train", run, argc, argv); }

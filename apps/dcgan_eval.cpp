// dcgan_eval: KID and FID of a trained DCGAN generator against its training data, on the
// features of a gantry classifier (gantry_classifier_train). Prints the scores and writes them
// as JSON (default RUN_DIR/eval.json).
#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "app_common.h"
#include "gantry/core/autograd.h"
#include "gantry/core/threads.h"
#include "gantry/core/version.h"
#include "gantry/data/dataset.h"
#include "gantry/models/classifier.h"
#include "gantry/models/dcgan.h"
#include "quality.h"
#include "run_dir.h"

namespace fs = std::filesystem;
using namespace gantry;
using json = nlohmann::json;

namespace {

// The run directory a --checkpoint belongs to ("" when it is a loose file): RUN itself,
// RUN/checkpoints/step_N, or RUN/checkpoints/step_N/generator*.safetensors.
std::string find_run_dir(const std::string& checkpoint) {
  fs::path p = fs::absolute(checkpoint);
  for (int up = 0; up < 4 && !p.empty(); ++up, p = p.parent_path())
    if (fs::is_directory(p) && fs::exists(p / "config.json") && fs::exists(p / "checkpoints")) return p.string();
  return {};
}

int run(int argc, char** argv) {
  std::string checkpoint, key, features, dataset, data_path, classes, json_out, device_choice = "auto", bn = "batch";
  int64_t num = 1000, subset_size = 0;
  int subsets = 100, threads = 0;
  uint64_t seed = 0;
  float truncation = 0;
  bool no_ema = false;
  CLI::App app{"dcgan_eval: KID and FID of a DCGAN generator (gantry " + std::string(version()) + ")"};
  app.option_defaults()->always_capture_default();
  app.add_option("--checkpoint", checkpoint, "a dcgan_train run directory (its latest checkpoint, EMA generator when present) or a generator file (.safetensors, or .pth/.pt from torch.save)")->required();
  app.add_option("--key", key, "the generator's name inside a checkpoint that holds several models (--key netG)");
  app.add_option("--features", features, "the feature classifier (.safetensors from gantry_classifier_train)")->required();
  app.add_option("--num", num, "images: generated, and real ones from the dataset")->check(CLI::Range(int64_t{2}, int64_t{1000000}));
  app.add_option("--dataset", dataset, "real data: fashion-mnist, mnist, cifar10, cifar100, lsun or folder (default: the run's config)");
  app.add_option("--classes", classes, "lsun: comma-separated categories (default: the run's config, else all)");
  app.add_option("--data", data_path, "dataset location (default: the run's config)");
  app.add_option("--json", json_out, "write the scores here (default RUN_DIR/eval.json, or eval.json next to a generator file)");
  app.add_option("--bn", bn, "generator batch norm: batch (batch statistics over chunks of 64, as the training samples) or eval (running statistics)")->check(CLI::IsMember({"batch", "eval"}));
  app.add_option("--subsets", subsets, "KID: number of subsets")->check(CLI::PositiveNumber);
  app.add_option("--subset-size", subset_size, "KID: rows per subset (0 = min(1000, num/2), so subsets differ and the +- means something)")->check(CLI::Range(int64_t{0}, int64_t{1000000}));
  app.add_option("--seed", seed, "seed of the latent vectors");
  app.add_option("--truncation", truncation, "score images from truncated latents (dcgan_generate --truncation: entries with |z| > T drawn again); 0 = off");
  app.add_flag("--no-ema", no_ema, "score the raw generator even when the run has an EMA generator");
  app.add_option("--device", device_choice, "auto, cpu, cuda or cuda:N");
  app.add_option("--threads", threads, "CPU threads (0 = all cores)");
  try {
    app.parse(argc, argv);
    if (const std::string e = apps::truncation_error(truncation); !e.empty()) throw CLI::ValidationError(e);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (threads > 0) set_num_threads(threads);
  if (subset_size == 0) subset_size = std::max<int64_t>(2, std::min<int64_t>(1000, num / 2));
  const Device device = apps::choose_device(device_choice);
  const std::string gen_file = apps::resolve_generator_file(checkpoint, !no_ema);
  const std::string run_dir = find_run_dir(checkpoint);
  if (!run_dir.empty() && (dataset.empty() || (data_path.empty() && dataset != "fashion-mnist"))) {
    const json cfg = json::parse(apps::read_text((fs::path(run_dir) / "config.json").string())).at("settings");
    if (dataset.empty()) {
      dataset = cfg.at("dataset").get<std::string>();
      if (data_path.empty()) data_path = cfg.at("data").get<std::string>();
      if (classes.empty()) classes = cfg.value("classes", std::string());
    }
  }
  if (dataset.empty())
    throw CLI::ValidationError("--checkpoint " + checkpoint + " is not inside a dcgan_train run directory; give --dataset (and --data)");

  auto g = generator_from_state_dict(apps::load_model_weights(gen_file, key));
  g->to(device);
  g->train(bn == "batch");
  apps::note_truncation_with_batch_stats(truncation, bn);
  auto net = load_classifier(features);
  data::DatasetOptions dopt;
  dopt.quiet = true;
  dopt.classes = data::split_classes(classes);
  auto ds = data::open_dataset(dataset, data_path, /*train=*/true, dopt);
  std::cerr << "generator " << gen_file << " (" << g->image_size << "x" << g->image_size << "x" << g->nc << "), features "
            << features << " (" << net->feature_dim() << "-d), real: " << ds->name() << ", " << num << " images each\n";

  NoGradGuard no_grad;
  const Tensor real = apps::classifier_features(*net, apps::dataset_images(*ds, num, g->image_size, static_cast<int>(g->nc)), device);
  const Tensor fake = apps::generated_features(*net, [&](const Tensor& z) { return g->forward(z); }, g->nz, num, seed, device, 64, truncation);
  const apps::QualityScores q = apps::score(real, fake, subsets, subset_size);
  std::cout << "KID " << q.kid.mean << " +- " << q.kid.std << " (" << q.kid.subsets << " subsets of " << q.kid.subset_size
            << ")\nFID " << q.fid << "\n";

  if (json_out.empty())
    json_out = run_dir.empty() ? (fs::path(gen_file).parent_path() / "eval.json").string() : (fs::path(run_dir) / "eval.json").string();
  json j = {{"kid", q.kid.mean},        {"kid_std", q.kid.std},     {"kid_subsets", q.kid.subsets},
            {"kid_subset_size", q.kid.subset_size}, {"fid", q.fid}, {"num", num},
            {"generator", gen_file},    {"features", features},     {"dataset", ds->name()},
            {"bn", bn},                 {"seed", seed},             {"truncation", truncation},
            {"gantry_version", version()}};
  apps::write_text_atomic(json_out, j.dump(2) + "\n");
  std::cerr << "wrote " << json_out << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const CLI::Error& e) {
    std::cerr << "dcgan_eval: error: " << e.what() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "dcgan_eval: error: " << e.what() << std::endl;
    return 1;
  }
}

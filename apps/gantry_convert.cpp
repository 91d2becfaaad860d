// gantry_convert: a checkpoint from one format to the other — safetensors <-> torch.save
// (.pth/.pt) — so gantry's weights load in PyTorch with torch.load and PyTorch's in any tool
// that reads safetensors. The output's format follows its extension. --key takes one model out
// of a checkpoint that holds several. A dcgan_train run (or one of its checkpoint folders)
// becomes one torch training checkpoint {"netG", "netD", "optimizerG", "optimizerD", ...} that
// a PyTorch script continues from (models/training_checkpoint.h).
#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "app_common.h"
#include "gantry/core/torch_checkpoint.h"
#include "gantry/core/version.h"
#include "gantry/models/training_checkpoint.h"
#include "run_dir.h"

using namespace gantry;
namespace fs = std::filesystem;

namespace {

// RUN or RUN/checkpoints/step_N -> one torch.save training checkpoint.
void convert_run(const std::string& given, const std::string& out) {
  const std::string in = fs::weakly_canonical(given).string();  // "RUN/" and "RUN" alike
  std::string ck_dir = in, run_dir;
  if (fs::exists(fs::path(in) / "checkpoints")) {
    run_dir = in;
    ck_dir = apps::latest_checkpoint_dir(in);
  } else if (fs::exists(fs::path(in) / "generator.safetensors")) {
    run_dir = fs::path(in).parent_path().parent_path().string();  // RUN/checkpoints/step_N
  } else {
    throw std::invalid_argument("input " + in + " is a folder but neither a dcgan_train run (no checkpoints/ in it) "
                                "nor one of its checkpoint folders (no generator.safetensors)");
  }
  const fs::path config_path = fs::path(run_dir) / "config.json";
  if (!fs::exists(config_path))
    throw std::invalid_argument("input " + in + ": " + config_path.string() +
                                " is missing; it holds the run's Adam settings (lr, betas)");
  const nlohmann::json settings = nlohmann::json::parse(apps::read_text(config_path.string())).at("settings");
  AdamOptions adam_g;
  adam_g.lr = settings.at("lr");
  adam_g.beta1 = settings.at("beta1");
  adam_g.beta2 = settings.at("beta2");
  AdamOptions adam_d = adam_g;
  // A TTUR run (--lr-g/--lr-d) gave each its own lr; 0 or absent (older runs) means --lr.
  if (settings.value("lr_g", 0.0) > 0) adam_g.lr = settings.at("lr_g");
  if (settings.value("lr_d", 0.0) > 0) adam_d.lr = settings.at("lr_d");

  auto file = [&](const std::string& name) { return (fs::path(ck_dir) / (name + ".safetensors")).string(); };
  DCGANTrainingCheckpoint ck;
  ck.generator = load_safetensors(file("generator")).tensors;
  ck.discriminator = load_safetensors(file("discriminator")).tensors;
  ck.optimizer_g = TorchAdamState{adam_g, 0, load_safetensors(file("optimizer_g")).tensors, 0};
  ck.optimizer_d = TorchAdamState{adam_d, 0, load_safetensors(file("optimizer_d")).tensors, 0};
  if (fs::exists(file("generator_ema"))) ck.generator_ema = load_safetensors(file("generator_ema")).tensors;
  const apps::TrainState state = apps::read_train_state(ck_dir);
  ck.counters = {{"step", state.step}, {"epoch", state.epoch}, {"next_batch", state.next_batch}};
  // Instance and layer norm have the same keys: the file says which (dcgan_train --start-from reads it).
  ck.notes = {{"d_norm", settings.value("d_norm", std::string("batch"))}};
  save_torch_object(out, dcgan_checkpoint_to_torch(ck));
  std::cout << "wrote " << out << ": a training checkpoint from " << ck_dir << " (step " << state.step
            << ", epoch " << state.epoch << "): netG, netD, optimizerG, optimizerD"
            << (ck.generator_ema.empty() ? "" : ", netG_ema") << ", step, epoch, next_batch, d_norm (" << ck.notes.at("d_norm") << ")\n";
}

int run(int argc, char** argv) {
  std::string in, out, key;
  CLI::App app{"gantry_convert: safetensors <-> torch.save checkpoints; a dcgan_train run -> a torch training checkpoint (gantry " +
               std::string(version()) + ")"};
  app.add_option("input", in, "a .safetensors file or a torch.save file (.pth/.pt/.bin), told apart by its first bytes; "
                              "or a dcgan_train run directory (its latest checkpoint) or one of its checkpoints/step_N folders")
      ->required()->check(CLI::ExistingPath);
  app.add_option("output", out, "where to write: .safetensors, or .pth/.pt/.bin for torch.save's format (a run: .pth only)")->required();
  app.add_option("--key", key, "keep only the tensors under this name, without it (a torch training checkpoint {'netG': ..., 'netD': ...}: --key netG)");
  try {
    app.parse(argc, argv);
    const std::string tail = ".safetensors";
    const bool safetensors = out.size() >= tail.size() && out.compare(out.size() - tail.size(), tail.size(), tail) == 0;
    if (!is_torch_checkpoint_path(out) && !safetensors)
      throw CLI::ValidationError("output " + out + ": the extension says the format; use .safetensors, or .pth/.pt/.bin for torch.save");
    if (fs::is_directory(in) && !is_torch_checkpoint_path(out))
      throw CLI::ValidationError("output " + out + ": a run becomes one torch training checkpoint, so give a .pth path "
                                 "(for one model as safetensors, give its file: RUN/checkpoints/step_N/generator.safetensors)");
    if (fs::is_directory(in) && !key.empty())
      throw CLI::ValidationError("--key picks a model inside a file; the input " + in + " is a run folder");
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (fs::is_directory(in)) {
    convert_run(in, out);
    return 0;
  }
  SafetensorsContents c = load_tensor_file(in);
  StateDict tensors = c.tensors;
  if (!key.empty()) {
    try {
      tensors = sub_state_dict(c.tensors, key);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("--key " + key + ": " + in + " has " + e.what());
    }
  }
  const bool to_torch = is_torch_checkpoint_path(out);
  Metadata meta;
  if (key.empty()) {
    meta = c.metadata;
  } else {  // the metadata of that model only, its names shortened the same way
    for (const auto& [k, v] : c.metadata)
      if (k.rfind(key + ".", 0) == 0) meta[k.substr(key.size() + 1)] = v;
  }
  save_tensor_file(out, tensors, meta);
  std::map<std::string, int> dtypes;
  for (const auto& e : tensors) ++dtypes[dtype_name(e.dtype)];
  std::cout << "wrote " << out << ": " << tensors.size() << " tensors (";
  bool first = true;
  for (const auto& [d, n] : dtypes) {
    std::cout << (first ? "" : ", ") << n << " " << d;
    first = false;
  }
  std::cout << ")";
  if (to_torch && !meta.empty())
    std::cout << "; " << meta.size() << " metadata entries not kept (a torch state_dict holds tensors only)";
  std::cout << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return apps::run_app("gantry_convert", run, argc, argv); }

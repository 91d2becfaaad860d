// gantry_convert: a checkpoint from one format to the other — safetensors <-> torch.save
// (.pth/.pt) — so gantry's weights load in PyTorch with torch.load and PyTorch's in any tool
// that reads safetensors. The output's format follows its extension. --key takes one model out
// of a checkpoint that holds several.
#include <CLI/CLI.hpp>
#include <iostream>
#include <map>

#include "app_common.h"
#include "gantry/core/torch_checkpoint.h"
#include "gantry/core/version.h"

using namespace gantry;

namespace {

int run(int argc, char** argv) {
  std::string in, out, key;
  CLI::App app{"gantry_convert: safetensors <-> torch.save checkpoints (gantry " + std::string(version()) + ")"};
  app.add_option("input", in, "a .safetensors file or a torch.save file (.pth/.pt/.bin); told apart by its first bytes")
      ->required()->check(CLI::ExistingFile);
  app.add_option("output", out, "where to write: .safetensors, or .pth/.pt/.bin for torch.save's format")->required();
  app.add_option("--key", key, "keep only the tensors under this name, without it (a torch training checkpoint {'netG': ..., 'netD': ...}: --key netG)");
  try {
    app.parse(argc, argv);
    const std::string tail = ".safetensors";
    const bool safetensors = out.size() >= tail.size() && out.compare(out.size() - tail.size(), tail.size(), tail) == 0;
    if (!is_torch_checkpoint_path(out) && !safetensors)
      throw CLI::ValidationError("output " + out + ": the extension says the format; use .safetensors, or .pth/.pt/.bin for torch.save");
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
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

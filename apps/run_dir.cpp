#include "run_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "gantry/core/torch_checkpoint.h"

namespace fs = std::filesystem;

namespace gantry::apps {

namespace {

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%06lld", static_cast<long long>(step));
  return buf;
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + tmp + ": check that the folder exists and is writable");
    out << text;
    out.flush();
    if (!out) throw std::runtime_error("writing " + tmp + " failed (disk full?)");
  }
  fsync_path(tmp);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + ec.message());
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void ensure_writable_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw std::runtime_error("cannot create output folder " + dir + ": " +
                             (ec ? ec.message() : std::string("a file of that name exists")));
  const std::string probe = (fs::path(dir) / ".write-test").string();
  {
    std::ofstream out(probe);
    if (!out || !(out << "ok") || !out.flush())
      throw std::runtime_error("output folder " + dir + " is not writable; choose another with --out");
  }
  fs::remove(probe, ec);
}

NewRunDir::NewRunDir(const std::string& dir) {
  std::error_code ec;
  for (fs::path p = fs::absolute(dir, ec); !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    created_.insert(created_.begin(), p.string());
    if (p == p.parent_path()) break;
  }
  ensure_writable_dir(dir);
}

NewRunDir::~NewRunDir() {
  if (created_.empty()) return;
  std::error_code ec;
  // Only folders all the way down: one file anywhere and nothing is removed.
  for (fs::recursive_directory_iterator it(created_.front(), ec), end; !ec && it != end; it.increment(ec))
    if (!it->is_directory(ec)) return;
  fs::remove_all(created_.front(), ec);
}

std::string write_checkpoint(const std::string& run_dir, const TrainState& state,
                             const CheckpointFiles& files, int keep) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  fs::create_directories(root);
  const std::string name = step_name(state.step);
  const fs::path tmp = root / (".tmp-" + name);
  const fs::path final_dir = root / name;
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);

  save_safetensors((tmp / "generator.safetensors").string(), files.generator, files.generator_meta);
  save_safetensors((tmp / "discriminator.safetensors").string(), files.discriminator,
                   files.discriminator_meta);
  save_safetensors((tmp / "optimizer_g.safetensors").string(), files.optimizer_g);
  save_safetensors((tmp / "optimizer_d.safetensors").string(), files.optimizer_d);
  for (const auto& [file, sd] : files.extra)
    save_safetensors((tmp / (file + ".safetensors")).string(), sd, files.generator_meta);
  for (const auto& [file, text] : files.extra_text) write_text_atomic((tmp / file).string(), text);
  nlohmann::json js = {{"step", state.step},
                       {"epoch", state.epoch},
                       {"next_batch", state.next_batch},
                       {"noise_rng", {{"seed", state.noise_seed}, {"offset", state.noise_offset}}},
                       {"seconds", state.seconds}};
  write_text_atomic((tmp / "state.json").string(), js.dump(2) + "\n");
  fsync_path(tmp.string());

  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir);
  fsync_path(root.string());
  write_text_atomic((root / "latest").string(), name + "\n");

  // Keep the newest `keep` complete checkpoints.
  std::vector<std::string> steps;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().rfind("step_", 0) == 0)
      steps.push_back(e.path().filename().string());
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + static_cast<size_t>(std::max(keep, 1)) < steps.size(); ++i)
    if (steps[i] != name) fs::remove_all(root / steps[i], ec);
  return final_dir.string();
}

std::string latest_checkpoint_dir(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const fs::path latest = root / "latest";
  if (!fs::exists(latest))
    throw std::runtime_error("run " + run_dir + " has no checkpoint (" + latest.string() +
                             " is missing): was it started with dcgan_train and did it reach "
                             "its first checkpoint?");
  std::string name = read_text(latest.string());
  name.erase(std::remove_if(name.begin(), name.end(), [](char c) { return c == '\n' || c == '\r' || c == ' '; }),
             name.end());
  const fs::path dir = root / name;
  if (!fs::is_directory(dir))
    throw std::runtime_error(latest.string() + " names " + name + ", which does not exist");
  return dir.string();
}

TrainState read_train_state(const std::string& checkpoint_dir) {
  const std::string path = (fs::path(checkpoint_dir) / "state.json").string();
  nlohmann::json js;
  try {
    js = nlohmann::json::parse(read_text(path));
    TrainState s;
    s.step = js.at("step").get<int64_t>();
    s.epoch = js.at("epoch").get<int64_t>();
    s.next_batch = js.at("next_batch").get<int64_t>();
    s.noise_seed = js.at("noise_rng").at("seed").get<uint64_t>();
    s.noise_offset = js.at("noise_rng").at("offset").get<uint64_t>();
    s.seconds = js.value("seconds", 0.0);
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + " is not a valid training state: " + e.what());
  }
}

std::string resolve_generator_file(const std::string& path, bool prefer_ema) {
  if (!fs::exists(path))
    throw std::runtime_error("checkpoint " + path + " does not exist: give a generator file "
                             "(.safetensors, or .pth/.pt from torch.save) or a run directory of "
                             "dcgan_train");
  if (!fs::is_directory(path)) return path;
  fs::path dir = path;
  // A run directory, or a checkpoint folder itself.
  if (!fs::exists(dir / "generator.safetensors")) dir = latest_checkpoint_dir(path);
  if (prefer_ema && fs::exists(dir / "generator_ema.safetensors"))
    return (dir / "generator_ema.safetensors").string();
  if (!fs::exists(dir / "generator.safetensors"))
    throw std::runtime_error("no generator.safetensors in " + dir.string());
  return (dir / "generator.safetensors").string();
}

std::string sibling_discriminator_file(const std::string& generator_file) {
  const fs::path p = fs::path(generator_file).parent_path() / "discriminator.safetensors";
  return fs::exists(p) ? p.string() : std::string();
}

std::string recorded_d_norm(const std::string& file) {
  const SafetensorsContents c = load_tensor_file(file);
  const auto it = c.metadata.find("d_norm");
  return it == c.metadata.end() ? "" : it->second;
}

StateDict load_model_weights(const std::string& file, const std::string& key,
                             const std::string& key_flag) {
  StateDict sd = load_tensor_file(file).tensors;
  if (!key.empty()) {
    try {
      sd = sub_state_dict(sd, key);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(key_flag + " " + key + ": " + file + " has " + e.what());
    }
  }
  const auto under_module = [](const NamedTensor& e) { return e.name.rfind("module.", 0) == 0; };
  if (!sd.empty() && std::all_of(sd.begin(), sd.end(), under_module)) sd = sub_state_dict(sd, "module");
  if (!find_tensor(sd, "main.0.weight")) {
    // A training checkpoint: name the models it holds, so the error says which key to give.
    const std::string tail = ".main.0.weight";
    std::string models;
    for (const auto& e : sd)
      if (e.name.size() > tail.size() && e.name.compare(e.name.size() - tail.size(), tail.size(), tail) == 0)
        models += (models.empty() ? "'" : ", '") + e.name.substr(0, e.name.size() - tail.size()) + "'";
    if (!models.empty())
      throw std::invalid_argument(file + " has no main.0.weight at its top level, but holds models under " +
                                  models + ": give " + key_flag + " with one of them");
  }
  return sd;
}

}  // namespace gantry::apps

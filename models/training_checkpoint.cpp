// A DCGAN training run as one torch.save file. See training_checkpoint.h.
#include "gantry/models/training_checkpoint.h"

#include <algorithm>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <vector>

#include "gantry/models/dcgan.h"

namespace gantry {

TorchValue dcgan_checkpoint_to_torch(const DCGANTrainingCheckpoint& ck) {
  if (ck.generator.empty() || ck.discriminator.empty())
    throw std::invalid_argument("dcgan_checkpoint_to_torch: the generator and the discriminator are both needed");
  const std::size_t ng = generator_from_state_dict(ck.generator)->parameters().size();
  // Instance and layer norm have the same keys and shapes: either reading serves for counting.
  const std::size_t nd = discriminator_from_state_dict(ck.discriminator, DiscriminatorNorm::Instance)->parameters().size();
  TorchValue root = TorchValue::dict();
  root.set("netG", TorchValue::state_dict(ck.generator));
  root.set("netD", TorchValue::state_dict(ck.discriminator));
  if (ck.optimizer_g) root.set("optimizerG", adam_state_to_torch(ck.optimizer_g->state, ng, ck.optimizer_g->options));
  if (ck.optimizer_d) root.set("optimizerD", adam_state_to_torch(ck.optimizer_d->state, nd, ck.optimizer_d->options));
  if (!ck.generator_ema.empty()) root.set("netG_ema", TorchValue::state_dict(ck.generator_ema));
  for (const auto& [k, v] : ck.counters) root.set(k, TorchValue::integer(v));
  for (const auto& [k, v] : ck.notes) root.set(k, TorchValue::string(v));
  return root;
}

namespace {

std::string top_key(const std::string& name) { return name.substr(0, name.find('.')); }

std::string list(const std::vector<std::string>& keys) {
  std::string s;
  for (const auto& k : keys) s += (s.empty() ? "" : ", ") + k;
  return s.empty() ? "none" : s;
}

// The entries under `key` (which has tensors), without DataParallel's "module." when every one
// has it.
StateDict model_entries(const SafetensorsContents& c, const std::string& key) {
  StateDict sd = sub_state_dict(c.tensors, key);
  const bool all_module =
      std::all_of(sd.begin(), sd.end(), [](const NamedTensor& e) { return e.name.rfind("module.", 0) == 0; });
  return all_module ? sub_state_dict(sd, "module") : sd;
}

struct Found {
  std::string key;
  StateDict sd;
  std::vector<Shape> param_shapes;
};

// Picks the one model among `found`: the given key, else the only one, else the one named
// `usual`. Throws naming the file and the keys.
const Found& pick(const std::vector<Found>& found, const std::string& given, const std::string& usual,
                  const std::string& what, const std::string& file, const std::vector<std::string>& keys) {
  std::vector<std::string> names;
  for (const auto& f : found) names.push_back(f.key);
  if (!given.empty()) {
    for (const auto& f : found)
      if (f.key == given) return f;
    throw std::invalid_argument(file + ": the entry '" + given + "' is not a DCGAN " + what +
                                " (the file's " + what + "s: " + list(names) + "; its keys: " + list(keys) + ")");
  }
  if (found.size() == 1) return found[0];
  for (const auto& f : found)
    if (f.key == usual) return f;
  if (found.empty())
    throw std::invalid_argument(file + ": no DCGAN " + what + " in it (its keys: " + list(keys) +
                                "); a training checkpoint holds e.g. {'netG': netG.state_dict(), 'netD': netD.state_dict()}");
  throw std::invalid_argument(file + ": several DCGAN " + what + "s (" + list(names) + "); say which one (--" +
                              (what == "generator" ? "netG" : "netD") + "-key KEY)");
}

// The parameter shapes in the model's parameters() order (what optimizer indices refer to).
template <class Model>
std::vector<Shape> param_shapes(const Model& m) {
  std::vector<Shape> s;
  for (const Tensor& p : m.parameters()) s.push_back(p.shape());
  return s;
}

// Whether an optimizer's state tensors have the shapes of these parameters.
bool state_fits(const TorchAdamState& st, const std::vector<Shape>& shapes) {
  if (st.num_params != shapes.size()) return false;
  for (const auto& e : st.state) {
    const std::size_t i = std::strtoull(e.name.c_str() + 6, nullptr, 10);  // "state.<i>.field"
    const bool moment = e.name.size() > 6 && e.name.find(".exp_avg") != std::string::npos;
    if (moment && e.tensor.shape() != shapes[i]) return false;
  }
  return true;
}

}  // namespace

DCGANTrainingCheckpoint dcgan_checkpoint_from_torch(const SafetensorsContents& c, const std::string& file,
                                                    const std::string& generator_key,
                                                    const std::string& discriminator_key) {
  std::vector<std::string> keys;
  std::set<std::string> seen, with_tensors;
  auto note = [&](const std::string& name) {
    const std::string k = top_key(name);
    if (seen.insert(k).second) keys.push_back(k);
    return k;
  };
  for (const auto& e : c.tensors) {
    const std::string k = note(e.name);
    if (e.name.size() > k.size()) with_tensors.insert(k);  // tensors under it, not a lone tensor
  }
  for (const auto& [k, v] : c.metadata) note(k);

  std::vector<Found> gens, discs;
  std::vector<std::string> optimizers;
  for (const auto& k : keys) {
    if (is_torch_optimizer_state(c, k)) {
      optimizers.push_back(k);
      continue;
    }
    if (!with_tensors.count(k)) continue;
    const StateDict sd = model_entries(c, k);
    try {
      gens.push_back({k, sd, param_shapes(*generator_from_state_dict(sd))});
      continue;
    } catch (const std::invalid_argument&) {
    }
    try {
      discs.push_back({k, sd, param_shapes(*discriminator_from_state_dict(sd, DiscriminatorNorm::Instance))});
    } catch (const std::invalid_argument&) {
    }
  }
  const Found& g = pick(gens, generator_key, "netG", "generator", file, keys);
  const Found& d = pick(discs, discriminator_key, "netD", "discriminator", file, keys);

  DCGANTrainingCheckpoint ck;
  ck.generator = g.sd;
  ck.discriminator = d.sd;
  ck.generator_key = g.key;
  ck.discriminator_key = d.key;
  for (const auto& f : gens)
    if (f.key == g.key + "_ema") ck.generator_ema = f.sd;

  // Each optimizer goes to the model it fits; one that fits neither, or a second one for the
  // same model, is an error (a file with an SGD for D would otherwise silently train fresh).
  for (const auto& k : optimizers) {
    TorchAdamState st;
    try {
      st = adam_state_from_torch(c, k);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(file + ": " + e.what());
    }
    const bool fits_g = state_fits(st, g.param_shapes), fits_d = state_fits(st, d.param_shapes);
    std::string* slot_key = nullptr;
    std::optional<TorchAdamState>* slot = nullptr;
    if (fits_g && !fits_d) {
      slot_key = &ck.optimizer_g_key;
      slot = &ck.optimizer_g;
    } else if (fits_d && !fits_g) {
      slot_key = &ck.optimizer_d_key;
      slot = &ck.optimizer_d;
    } else {
      throw std::invalid_argument(file + ": optimizer '" + k + "' has " + std::to_string(st.num_params) +
                                  " parameters" + (fits_g ? ", which fit both models" : "") + "; the generator '" +
                                  g.key + "' has " + std::to_string(g.param_shapes.size()) + ", the discriminator '" +
                                  d.key + "' " + std::to_string(d.param_shapes.size()));
    }
    if (*slot)
      throw std::invalid_argument(file + ": optimizers '" + *slot_key + "' and '" + k + "' are both for the " +
                                  (slot == &ck.optimizer_g ? "generator" : "discriminator"));
    *slot = std::move(st);
    *slot_key = k;
  }
  for (const auto& [k, v] : c.metadata) {
    if (k.find('.') != std::string::npos) continue;
    char* end = nullptr;
    const long long n = std::strtoll(v.c_str(), &end, 10);
    if (end != v.c_str() && *end == '\0') ck.counters[k] = n;
    else ck.notes[k] = v;
  }
  return ck;
}

}  // namespace gantry

// dcgan_train: trains the DCGAN of the PyTorch example on Fashion-MNIST (the default, from
// Debian's package), MNIST, CIFAR-10 or a folder of images, writing a run directory with the
// config, per-step metrics, fixed-noise samples, checkpoints and an HTML report.
// Only wiring lives here: the step is DCGANTrainer::step, the data is gantry::data.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <type_traits>

#include "app_common.h"
#include "gantry/core/threads.h"
#include "gantry/core/version.h"
#include "gantry/data/dataset.h"
#include "gantry/data/grid.h"
#include "gantry/data/loader.h"
#include "gantry/models/classifier.h"
#include "gantry/models/dcgan_trainer.h"
#include "gantry/models/training_checkpoint.h"
#include "quality.h"
#include "report.h"
#include "run_dir.h"

namespace fs = std::filesystem;
using namespace gantry;
using json = nlohmann::json;

namespace {

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) {
  g_signal = sig;
  std::signal(sig, SIG_DFL);  // a second Ctrl-C ends the process at once
}

struct Settings {
  std::string dataset = "fashion-mnist";
  int64_t subset = 0;  // train on a fixed random subset of this many images (0 = all)
  std::string data;
  std::string classes;  // lsun: comma-separated categories (the PyTorch example's --classes)
  int image_size = 64;
  int channels = 0;  // 0: the dataset's own
  int64_t batch_size = 128;
  int64_t epochs = 0;
  int64_t max_steps = 0;
  double lr = 2e-4, beta1 = 0.5, beta2 = 0.999;
  double lr_g = 0, lr_d = 0;  // G's and D's own learning rates (TTUR); 0 = lr
  std::string loss = "bce";   // bce, hinge, lsgan or wgan (DCGANConfig::loss)
  double real_label = 1.0;    // D's target for real images (< 1: one-sided label smoothing)
  bool spectral_norm = false;  // D's convs spectrally normalized (SNGAN)
  std::string spectral_norm_form = "classic";  // or "parametrizations" (SpectralNormForm)
  std::string d_norm = "batch";  // D's norm layers: batch, instance, layer or none (DiscriminatorNorm)
  int d_steps = 1;             // D updates per G update (n_critic), each on its own real batch
  double r1 = 0, gp = 0;       // gradient penalty weights (DCGANConfig::r1_gamma, gp_lambda); 0 = off
  int r1_every = 1;            // lazy R1: on every k-th D update, weighted k (DCGANConfig::r1_every)
  std::string r1_at = "reals";  // with --ada: R1 at the reals through the augmentation, or "augmented" (DCGANConfig::r1_through_augment)
  double generator_lr() const { return lr_g > 0 ? lr_g : lr; }
  double discriminator_lr() const { return lr_d > 0 ? lr_d : lr; }
  int64_t nz = 100, ngf = 64, ndf = 64;
  uint64_t seed = 1;
  std::string device = "auto";
  int workers = 2;
  std::string out;
  int64_t sample_every = 500;
  int64_t checkpoint_every = 1000;
  int64_t log_every = 50;
  bool strict = false;
  bool flip = false;
  int threads = 0;
  double time_limit = 0;  // seconds of this session; 0 = none
  // Quality options (issue 8): EMA generator, adaptive discriminator augmentation, metrics.
  double ema = 0;  // decay; 0 = no EMA generator
  double ema_rampup = 0;  // StyleGAN2-ADA's ramp-up of the EMA's decay (EMA's rampup); 0 = off
  bool ada = false;
  double ada_target = 0.6, ada_speed = 10000;
  int64_t ada_interval = 4;
  bool ada_geom = false;  // ADA's general geometry too (AdaOptions::geometric)
  int64_t eval_every = 0;  // 0 = no KID/FID during training
  int64_t eval_num = 500;
  std::string features;    // classifier for KID/FID
  // Starting weights (the PyTorch DCGAN example's --netG/--netD): .pth or .safetensors files,
  // and the model's name inside a file that holds several.
  std::string net_g, net_d, net_g_key, net_d_key;
  // A whole training checkpoint to start from (torch.save {"netG", "netD", "optimizerG", ...}).
  std::string start_from;
};

json settings_json(const Settings& s) {
  return {{"dataset", s.dataset},       {"data", s.data},         {"subset", s.subset},
          {"classes", s.classes},
          {"image_size", s.image_size}, {"channels", s.channels},
          {"batch_size", s.batch_size}, {"epochs", s.epochs},
          {"max_steps", s.max_steps},   {"lr", s.lr},
          {"beta1", s.beta1},           {"beta2", s.beta2},
          {"lr_g", s.lr_g},             {"lr_d", s.lr_d},
          {"loss", s.loss},             {"real_label", s.real_label},
          {"spectral_norm", s.spectral_norm}, {"spectral_norm_form", s.spectral_norm_form},
          {"d_norm", s.d_norm},
          {"d_steps", s.d_steps},       {"r1", s.r1}, {"r1_every", s.r1_every}, {"r1_at", s.r1_at}, {"gp", s.gp},
          {"nz", s.nz},                 {"ngf", s.ngf},
          {"ndf", s.ndf},               {"seed", s.seed},
          {"workers", s.workers},       {"sample_every", s.sample_every},
          {"checkpoint_every", s.checkpoint_every}, {"log_every", s.log_every},
          {"strict", s.strict},         {"random_flip", s.flip},
          {"ema", s.ema},               {"ema_rampup", s.ema_rampup}, {"ada", s.ada},
          {"ada_target", s.ada_target}, {"ada_speed", s.ada_speed},
          {"ada_interval", s.ada_interval}, {"ada_geom", s.ada_geom}, {"eval_every", s.eval_every},
          {"eval_num", s.eval_num},     {"features", s.features},
          {"net_g", s.net_g},           {"net_g_key", s.net_g_key},
          {"net_d", s.net_d},           {"net_d_key", s.net_d_key},
          {"start_from", s.start_from}};
}

// Settings from a run's config.json (for --resume).
Settings settings_from_json(const json& j, const std::string& path) {
  Settings s;
  try {
    s.dataset = j.at("dataset");
    s.subset = j.value("subset", int64_t{0});  // runs before --subset used every image
    s.data = j.at("data");
    s.classes = j.value("classes", std::string());
    s.image_size = j.at("image_size");
    s.channels = j.at("channels");
    s.batch_size = j.at("batch_size");
    s.epochs = j.at("epochs");
    s.max_steps = j.at("max_steps");
    s.lr = j.at("lr");
    s.beta1 = j.at("beta1");
    s.beta2 = j.at("beta2");
    s.lr_g = j.value("lr_g", 0.0);  // runs before TTUR had one lr for both
    s.lr_d = j.value("lr_d", 0.0);
    s.loss = j.value("loss", std::string("bce"));
    s.real_label = j.value("real_label", 1.0);
    s.spectral_norm = j.value("spectral_norm", false);
    s.spectral_norm_form = j.value("spectral_norm_form", std::string("classic"));
    s.d_norm = j.value("d_norm", std::string("batch"));  // runs before --d-norm had batch norm
    s.d_steps = j.value("d_steps", 1);
    s.r1 = j.value("r1", 0.0);  // runs before the penalties had none
    s.gp = j.value("gp", 0.0);
    s.r1_every = j.value("r1_every", 1);
    s.r1_at = j.value("r1_at", std::string("augmented"));  // runs before --r1-at took R1 at D's input
    s.nz = j.at("nz");
    s.ngf = j.at("ngf");
    s.ndf = j.at("ndf");
    s.seed = j.at("seed");
    s.workers = j.at("workers");
    s.sample_every = j.at("sample_every");
    s.checkpoint_every = j.at("checkpoint_every");
    s.log_every = j.value("log_every", int64_t{50});
    s.strict = j.value("strict", false);
    s.flip = j.value("random_flip", false);
    s.ema = j.value("ema", 0.0);
    s.ema_rampup = j.value("ema_rampup", 0.0);  // runs before --ema-rampup had none
    s.ada = j.value("ada", false);
    s.ada_target = j.value("ada_target", 0.6);
    s.ada_speed = j.value("ada_speed", 10000.0);
    s.ada_interval = j.value("ada_interval", int64_t{4});
    s.ada_geom = j.value("ada_geom", false);  // runs before --ada-geom had none
    s.eval_every = j.value("eval_every", int64_t{0});
    s.eval_num = j.value("eval_num", int64_t{500});
    s.features = j.value("features", std::string());
    s.net_g = j.value("net_g", std::string());
    s.net_g_key = j.value("net_g_key", std::string());
    s.net_d = j.value("net_d", std::string());
    s.net_d_key = j.value("net_d_key", std::string());
    s.start_from = j.value("start_from", std::string());
  } catch (const json::exception& e) {
    throw std::runtime_error(path + " is not a dcgan_train config: " + e.what());
  }
  return s;
}

// " --spectral-norm" (and its form, unless classic) when on: the flags that build such a D.
std::string spectral_norm_flags(bool on, const std::string& form) {
  if (!on) return "";
  return form == "classic" ? " --spectral-norm" : " --spectral-norm --spectral-norm-form " + form;
}

// " --d-norm NAME" unless batch (the default); instance and layer norm have the same keys, so a
// file read with one of them may be the other.
std::string d_norm_flags(DiscriminatorNorm norm, bool from_keys_alone = false) {
  if (norm == DiscriminatorNorm::Batch) return "";
  if (from_keys_alone && (norm == DiscriminatorNorm::Instance || norm == DiscriminatorNorm::Layer))
    return " --d-norm instance (or layer: the keys are the same)";
  return std::string(" --d-norm ") + discriminator_norm_name(norm);
}

// The hint for discriminator_from_state_dict: the run's --d-norm when it is instance or layer,
// else instance (then the message says it may be layer).
DiscriminatorNorm d_norm_hint(const Settings& s) {
  const DiscriminatorNorm n = discriminator_norm_from_name(s.d_norm);
  return n == DiscriminatorNorm::Layer ? n : DiscriminatorNorm::Instance;
}

// Loads --netG/--netD into the run's freshly built model. A file of another architecture is an
// error that says which flags would build the file's.
template <class Model>
void load_start_weights(Model& model, const std::string& file, const std::string& key, const std::string& flag,
                        const Settings& s) {
  const StateDict sd = apps::load_model_weights(file, key, flag + "-key");
  if constexpr (std::is_same_v<Model, DCGANDiscriminator>) {
    // Instance and layer norm load into each other (the same keys): the file's record decides.
    const std::string recorded = apps::recorded_d_norm(file);
    if (!recorded.empty() && recorded != s.d_norm)
      throw std::invalid_argument(flag + " " + file + " records a D with --d-norm " + recorded +
                                  " (its d_norm metadata), but this run builds --d-norm " + s.d_norm +
                                  ": give --d-norm " + recorded);
  }
  try {
    model.load_state_dict(sd);
  } catch (const std::invalid_argument& e) {
    std::string theirs;
    try {
      if constexpr (std::is_same_v<Model, DCGANGenerator>) {
        auto g = generator_from_state_dict(sd);
        theirs = "--image-size " + std::to_string(g->image_size) + " --nz " + std::to_string(g->nz) + " --ngf " +
                 std::to_string(g->ngf) + " --channels " + std::to_string(g->nc);
      } else {
        auto d = discriminator_from_state_dict(sd, d_norm_hint(s));
        const bool guessed = s.d_norm != "instance" && s.d_norm != "layer";
        theirs = "--image-size " + std::to_string(d->image_size) + " --ndf " + std::to_string(d->ndf) +
                 " --channels " + std::to_string(d->nc) + spectral_norm_flags(d->spectral_norm, spectral_norm_form_name(d->spectral_norm_form)) +
                 (d->norm == DiscriminatorNorm::Batch && s.d_norm != "batch" ? " --d-norm batch" : d_norm_flags(d->norm, guessed));
      }
    } catch (const std::invalid_argument& not_dcgan) {
      throw std::invalid_argument(flag + " " + file + ": " + not_dcgan.what());
    }
    throw std::invalid_argument(flag + " " + file + " holds a model built with " + theirs + ", but this run builds --image-size " +
                                std::to_string(s.image_size) + " --nz " + std::to_string(s.nz) + " --ngf " +
                                std::to_string(s.ngf) + " --ndf " + std::to_string(s.ndf) + " --channels " +
                                std::to_string(s.channels) + spectral_norm_flags(s.spectral_norm, s.spectral_norm_form) +
                                d_norm_flags(discriminator_norm_from_name(s.d_norm)) + ": give the file's values\n" + e.what());
  }
  std::cout << flag.substr(2) << " starts from " << file << (key.empty() ? "" : " (" + key + ")") << ": " << sd.size()
            << " tensors\n";
}

// --start-from: reads the training checkpoint and takes from it what the flags leave open — the
// architecture (from the tensors' shapes) and Adam's lr and betas (as PyTorch's
// optimizer.load_state_dict() does) — so the run continues the file's training.
struct GivenFlags {
  bool size, channels, nz, ngf, ndf, lr, lr_g, lr_d, beta1, beta2, spectral_norm, spectral_norm_form, d_norm;
};
DCGANTrainingCheckpoint read_start_checkpoint(Settings& s, const GivenFlags& given) {
  const DCGANTrainingCheckpoint ck =
      dcgan_checkpoint_from_torch(load_tensor_file(s.start_from), "--start-from " + s.start_from, s.net_g_key, s.net_d_key);
  const auto g = generator_from_state_dict(ck.generator);
  const auto d = discriminator_from_state_dict(ck.discriminator, d_norm_hint(s));
  if (g->image_size != d->image_size || g->nc != d->nc)
    throw std::invalid_argument("--start-from " + s.start_from + ": its generator '" + ck.generator_key + "' makes " +
                                std::to_string(g->nc) + "x" + std::to_string(g->image_size) + "x" + std::to_string(g->image_size) +
                                " images, its discriminator '" + ck.discriminator_key + "' reads " + std::to_string(d->nc) + "x" +
                                std::to_string(d->image_size) + "x" + std::to_string(d->image_size));
  if (!given.size) s.image_size = g->image_size;
  if (!given.channels) s.channels = static_cast<int>(g->nc);
  if (!given.nz) s.nz = g->nz;
  if (!given.ngf) s.ngf = g->ngf;
  if (!given.ndf) s.ndf = d->ndf;
  if ((given.spectral_norm || given.spectral_norm_form) && !d->spectral_norm)
    throw std::invalid_argument("--start-from " + s.start_from + ": its discriminator '" + ck.discriminator_key +
                                "' has no spectral norm (main.0.weight, not weight_orig), so --spectral-norm cannot "
                                "continue it; leave the flag out");
  const std::string form = spectral_norm_form_name(d->spectral_norm_form);
  if (given.spectral_norm_form && d->spectral_norm && form != s.spectral_norm_form)
    throw std::invalid_argument("--start-from " + s.start_from + ": its discriminator '" + ck.discriminator_key +
                                "' has the " + form + " spectral norm (" +
                                (form == "classic" ? "main.0.weight_orig" : "main.0.parametrizations.weight.original") +
                                "), so --spectral-norm-form " + s.spectral_norm_form + " cannot continue it; leave the flag out");
  s.spectral_norm = d->spectral_norm;
  if (d->spectral_norm) s.spectral_norm_form = form;
  // D's norm: the file's "d_norm" entry when it has one (gantry_convert writes it); else batch
  // norm's running statistics say batch, an affine pair alone is instance or layer norm, and no
  // keys at main.3 may be Identity or a norm without affine (which gantry does not build): for
  // those only the flag can tell.
  const auto recorded = ck.notes.find("d_norm");
  if (recorded != ck.notes.end()) {
    try {
      discriminator_norm_from_name(recorded->second);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("--start-from " + s.start_from + ": its d_norm entry: " + e.what());
    }
    if (given.d_norm && recorded->second != s.d_norm)
      throw std::invalid_argument("--start-from " + s.start_from + " records a D with --d-norm " + recorded->second +
                                  " (its d_norm entry), so --d-norm " + s.d_norm + " cannot continue it; leave the flag out");
    s.d_norm = recorded->second;
  }
  const DiscriminatorNorm from_keys = d->norm;  // batch / none / instance-or-layer: the hint only picks between the last two
  const bool affine_only = from_keys == DiscriminatorNorm::Instance || from_keys == DiscriminatorNorm::Layer;
  const std::string file_norm = discriminator_norm_name(from_keys);
  if (affine_only && !given.d_norm && recorded == ck.notes.end())
    throw std::invalid_argument("--start-from " + s.start_from + ": its discriminator '" + ck.discriminator_key +
                                "' has a weight and bias at main.3 but no running statistics: InstanceNorm2d(affine=True) "
                                "or GroupNorm(1, C), which have the same keys; say which with --d-norm instance or --d-norm layer");
  if (from_keys == DiscriminatorNorm::None && !given.d_norm && recorded == ck.notes.end())
    throw std::invalid_argument("--start-from " + s.start_from + ": its discriminator '" + ck.discriminator_key +
                                "' has no keys at main.3: nn.Identity() there, or a norm without affine "
                                "(InstanceNorm2d's default), which gantry does not build; if it is Identity, give --d-norm none");
  if (given.d_norm && !affine_only && file_norm != s.d_norm)
    throw std::invalid_argument("--start-from " + s.start_from + ": its discriminator '" + ck.discriminator_key + "' has " +
                                (d->norm == DiscriminatorNorm::Batch ? "batch norm (main.3.running_mean)" : "no norm (no main.3 keys)") +
                                ", so --d-norm " + s.d_norm + " cannot continue it; leave the flag out");
  if (given.d_norm && affine_only && s.d_norm != "instance" && s.d_norm != "layer")
    throw std::invalid_argument("--start-from " + s.start_from + ": its discriminator '" + ck.discriminator_key +
                                "' has instance or layer norm (a weight and bias at main.3, no running statistics), so --d-norm " +
                                s.d_norm + " cannot continue it; give --d-norm instance or --d-norm layer");
  if (!affine_only) s.d_norm = file_norm;
  else if (recorded != ck.notes.end()) s.d_norm = recorded->second;
  // Each optimizer keeps its own lr (TTUR runs have two); one pair of betas drives both.
  const std::optional<TorchAdamState>* opts[] = {&ck.optimizer_g, &ck.optimizer_d};
  const std::string keys[] = {ck.optimizer_g_key, ck.optimizer_d_key};
  std::optional<AdamOptions> first;
  for (int k = 0; k < 2; ++k) {
    if (!*opts[k]) continue;
    const AdamOptions& o = (*opts[k])->options;
    if (o.eps != AdamOptions{}.eps || o.weight_decay != 0)
      throw std::invalid_argument("--start-from " + s.start_from + ": optimizer '" + keys[k] + "' has eps " + std::to_string(o.eps) +
                                  " and weight_decay " + std::to_string(o.weight_decay) +
                                  "; dcgan_train's Adam uses PyTorch's defaults (eps 1e-8, weight_decay 0)");
    if (first && (first->beta1 != o.beta1 || first->beta2 != o.beta2) && !(given.beta1 && given.beta2))
      throw std::invalid_argument("--start-from " + s.start_from + ": its two optimizers differ in betas (" + keys[0] + " and " +
                                  keys[1] + "); dcgan_train uses one --beta1/--beta2 for both: give them");
    if (!first) first = o;
  }
  auto take = [&](bool flag_given, double& value, double theirs, const std::string& flag) {
    if (!flag_given) value = theirs;
    else if (value != theirs)
      std::cout << flag << " " << value << " is used instead of the checkpoint's " << theirs << "\n";
  };
  if (first) {
    take(given.beta1, s.beta1, first->beta1, "--beta1");
    take(given.beta2, s.beta2, first->beta2, "--beta2");
  }
  // The lrs: --lr-g (--lr-d) wins, then --lr for both, then the file's optimizer.
  auto take_lr = [&](const std::optional<TorchAdamState>& st, bool own_given, double& own, const char* flag) {
    if (!st) return;
    if (!own_given && given.lr) own = s.lr;
    take(own_given || given.lr, own, st->options.lr, own_given ? flag : "--lr");
  };
  take_lr(ck.optimizer_g, given.lr_g, s.lr_g, "--lr-g");
  take_lr(ck.optimizer_d, given.lr_d, s.lr_d, "--lr-d");
  if (s.lr_g > 0 && s.lr_g == s.lr_d) {  // one lr for both after all: keep the config plain
    s.lr = s.lr_g;
    s.lr_g = s.lr_d = 0;
  }
  return ck;
}

// Loads a --start-from checkpoint into the freshly built trainer and says what it took.
void start_from_checkpoint(DCGANTrainer& trainer, const DCGANTrainingCheckpoint& ck, const Settings& s) {
  const std::string what = "--start-from " + s.start_from;
  auto load = [&](auto& model, const StateDict& sd, const std::string& key) {
    try {
      model.load_state_dict(sd);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(what + ": '" + key + "' is not the model this run builds (--image-size " +
                                  std::to_string(s.image_size) + " --nz " + std::to_string(s.nz) + " --ngf " +
                                  std::to_string(s.ngf) + " --ndf " + std::to_string(s.ndf) + " --channels " +
                                  std::to_string(s.channels) + "; leave those flags out to take the file's)\n" + e.what());
    }
  };
  load(trainer.generator(), ck.generator, ck.generator_key);
  load(trainer.discriminator(), ck.discriminator, ck.discriminator_key);
  std::cout << "starting from " << s.start_from << ": generator '" << ck.generator_key << "', discriminator '"
            << ck.discriminator_key << "'";
  auto optimizer = [&](Adam& adam, const std::optional<TorchAdamState>& st, const std::string& key) {
    if (!st) return;
    try {
      adam.load_state_dict(st->state);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(what + ": optimizer '" + key + "': " + e.what());
    }
    std::cout << ", Adam state '" << key << "' (step " << st->max_step << ")";
  };
  optimizer(trainer.optimizer_g(), ck.optimizer_g, ck.optimizer_g_key);
  optimizer(trainer.optimizer_d(), ck.optimizer_d, ck.optimizer_d_key);
  if (!ck.optimizer_g && !ck.optimizer_d) std::cout << "; no optimizer state in it: Adam starts fresh";
  if (s.generator_lr() == s.discriminator_lr()) std::cout << "; lr " << s.generator_lr();
  else std::cout << "; lr G " << s.generator_lr() << ", D " << s.discriminator_lr();
  std::cout << ", betas (" << s.beta1 << ", " << s.beta2 << ")\n";
}

// "loss bce, lr 0.0002", "loss hinge, lr G 0.0001 D 0.0004", "..., real label 0.9": what the
// run optimizes, in its start line.
std::string objective_summary(const Settings& s) {
  std::ostringstream o;
  o << "loss " << s.loss;
  if (s.generator_lr() == s.discriminator_lr()) o << ", lr " << s.generator_lr();
  else o << ", lr G " << s.generator_lr() << " D " << s.discriminator_lr();
  if (s.real_label != 1.0) o << ", real label " << s.real_label;
  if (s.spectral_norm) o << ", spectral norm in D" << (s.spectral_norm_form == "classic" ? "" : " (parametrizations)");
  if (s.d_norm != "batch") o << ", " << s.d_norm << " norm in D";
  if (s.d_steps > 1) o << ", " << s.d_steps << " D updates per G update";
  if (s.r1 > 0) o << ", R1 penalty " << s.r1 << (s.r1_every > 1 ? " every " + std::to_string(s.r1_every) + " D updates" : "")
                << (s.ada ? (s.r1_at == "reals" ? " at the reals through the augmentation" : " at the augmented reals") : "");
  if (s.gp > 0) o << ", gradient penalty " << s.gp;
  return o.str();
}

std::string now_stamp() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

std::string step_file(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "step_%06lld.png", static_cast<long long>(step));
  return buf;
}

std::string hms(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const long s = static_cast<long>(seconds);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  return buf;
}

// Keeps the rows of metrics.csv up to `step` (a resumed run redoes the steps after its
// checkpoint, so their old rows go).
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string header, line, kept;
  std::getline(in, header);
  kept = header + "\n";
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (std::atoll(line.c_str()) <= step) kept += line + "\n";
  }
  apps::write_text_atomic(path, kept);
}

void validate(const Settings& s) {
  auto bad = [](const std::string& m) { throw CLI::ValidationError(m); };
  if (s.image_size != 32 && s.image_size != 64 && s.image_size != 128)
    bad("--image-size " + std::to_string(s.image_size) + ": must be 32, 64 or 128");
  if (s.channels != 0 && s.channels != 1 && s.channels != 3)
    bad("--channels " + std::to_string(s.channels) + ": must be 1 (gray) or 3 (RGB)");
  if (s.batch_size < 2) bad("--batch-size must be at least 2 (batch norm needs two images)");
  if (!(s.lr > 0)) bad("--lr must be positive");
  if (!(s.lr_g >= 0) || !(s.lr_d >= 0)) bad("--lr-g/--lr-d must be positive, or 0 for --lr's value");
  if (!(s.real_label > 0 && s.real_label <= 1))
    bad("--real-label " + std::to_string(s.real_label) + ": must be in (0, 1]; 0.9 is the usual one-sided label smoothing");
  if ((s.loss == "hinge" || s.loss == "wgan") && s.real_label != 1.0)
    bad("--real-label smooths the target of --loss bce or lsgan; the " + s.loss + " loss has none (leave --real-label out)");
  if (!(s.r1 >= 0) || !(s.gp >= 0)) bad("--r1 and --gp must be >= 0 (0 = off)");
  if (s.r1_every < 1) bad("--r1-every " + std::to_string(s.r1_every) + ": must be at least 1 (StyleGAN2's lazy R1 uses 16)");
  if (s.r1_every > 1 && s.r1 == 0) bad("--r1-every " + std::to_string(s.r1_every) + " makes R1 lazy: give --r1 GAMMA too");
  if (s.r1_at != "reals" && s.r1_at != "augmented")
    bad("--r1-at, or a resumed run's config.json: '" + s.r1_at + "' is not reals or augmented");
  if (s.loss == "wgan" && s.gp == 0 && !s.spectral_norm)
    bad("--loss wgan needs D kept Lipschitz: --gp 10 (WGAN-GP) or --spectral-norm; without either D's scores grow without bound");
  try {
    discriminator_norm_from_name(s.d_norm);
  } catch (const std::invalid_argument& e) {
    bad(std::string("--d-norm, or a resumed run's config.json: ") + e.what());
  }
  if (s.d_steps < 1) bad("--d-steps " + std::to_string(s.d_steps) + ": must be at least 1 (D updates per G update; WGAN uses 5)");
  if (!(s.beta1 >= 0 && s.beta1 < 1) || !(s.beta2 >= 0 && s.beta2 < 1)) bad("--beta1/--beta2 must be in [0, 1)");
  if (s.nz < 1 || s.ngf < 1 || s.ndf < 1) bad("--nz, --ngf and --ndf must be positive");
  if (s.workers < 0) bad("--workers must be >= 0");
  if (s.epochs < 0 || s.max_steps < 0) bad("--epochs and --max-steps must be >= 0");
  if (s.sample_every < 1 || s.checkpoint_every < 1 || s.log_every < 1)
    bad("--sample-every, --checkpoint-every and --log-every must be >= 1");
  if (!(s.ema == 0 || (s.ema > 0 && s.ema < 1))) bad("--ema must be a decay in (0, 1), e.g. 0.999 (0 = off)");
  if (!(s.ema_rampup >= 0 && std::isfinite(s.ema_rampup))) bad("--ema-rampup must be >= 0 (StyleGAN2-ADA uses 0.05; 0 = off)");
  if (s.ema_rampup > 0 && s.ema == 0) bad("--ema-rampup ramps up the decay of --ema: give --ema DECAY too (e.g. --ema 0.999 --ema-rampup 0.05)");
  if (!(s.ada_target > 0 && s.ada_target < 1)) bad("--ada-target must be in (0, 1) (StyleGAN2-ADA uses 0.6)");
  if (!(s.ada_speed > 0)) bad("--ada-speed must be positive (images for p to go from 0 to 1)");
  if (s.ada_interval < 1) bad("--ada-interval must be >= 1");
  if (s.ada_geom && !s.ada) bad("--ada-geom adds to ADA's augmentations: give --ada too");
  if (s.eval_every < 0) bad("--eval-every must be >= 0");
  if (s.eval_every > 0 && s.features.empty())
    bad("--eval-every needs --features CLASSIFIER.safetensors (train one with gantry_classifier_train)");
  if (s.eval_num < 2) bad("--eval-num must be at least 2");
  if (s.subset < 0) bad("--subset must be >= 0 (0 = every image)");
  if (!s.classes.empty() && s.dataset != "lsun")
    bad("--classes picks LSUN categories: it needs --dataset lsun (not " + s.dataset + ")");
  if (s.data.empty() && !data::dataset_data_hint(s.dataset).empty())
    bad("--dataset " + s.dataset + " needs --data PATH (" + data::dataset_data_hint(s.dataset) + ")");
}

int run(int argc, char** argv) {
  Settings s;
  std::string resume;
  CLI::App app{"dcgan_train: train the DCGAN of the PyTorch example (gantry " + std::string(version()) + ")"};
  app.option_defaults()->always_capture_default();
  auto* o_dataset = app.add_option("--dataset", s.dataset, "fashion-mnist (Debian's package, no download), mnist, cifar10, cifar100, lsun or folder")
      ->check(CLI::IsMember(data::dataset_kinds()));
  auto* o_subset = app.add_option("--subset", s.subset, "train on a fixed random subset of this many images (StyleGAN2-ADA's --subset: little data, where --ada helps; the same subset whatever --seed); KID/FID still compare with the whole dataset; 0 = every image");
  auto* o_data = app.add_option("--data", s.data, "dataset location: a folder of images (folder); the CIFAR-10/100 folder, binary or python version (torchvision's root works); the MNIST IDX folder; an LSUN database or the folder of several; default for fashion-mnist: " + data::default_fashion_mnist_dir());
  auto* o_classes = app.add_option("--classes", s.classes, "lsun: comma-separated categories, e.g. bedroom,church_outdoor (bedroom means bedroom_train_lmdb; default: every one in --data)");
  auto* o_size = app.add_option("--image-size", s.image_size, "image size: 32, 64 or 128 (one network stage per doubling)");
  auto* o_channels = app.add_option("--channels", s.channels, "image channels: 1 or 3 (0 = the dataset's own)");
  auto* o_batch = app.add_option("--batch-size", s.batch_size, "images per step");
  auto* o_epochs = app.add_option("--epochs", s.epochs, "passes over the data (0 = until --max-steps; both 0 = 5 epochs)");
  auto* o_steps = app.add_option("--max-steps", s.max_steps, "stop after this many steps in total (0 = no limit)");
  auto* o_lr = app.add_option("--lr", s.lr, "Adam learning rate of G and D");
  auto* o_lr_g = app.add_option("--lr-g", s.lr_g, "G's own learning rate (two time-scale update rule, TTUR; 0 = --lr)");
  auto* o_lr_d = app.add_option("--lr-d", s.lr_d, "D's own learning rate (TTUR, e.g. --lr-g 1e-4 --lr-d 4e-4; 0 = --lr)");
  auto* o_loss = app.add_option("--loss", s.loss, "GAN loss: bce (the DCGAN example's), hinge (SNGAN/BigGAN), lsgan (least squares) or wgan (Wasserstein; with --gp: WGAN-GP)")
      ->check(CLI::IsMember({"bce", "hinge", "lsgan", "wgan"}));
  auto* o_r1 = app.add_option("--r1", s.r1, "R1 gradient penalty on real images with this gamma: (gamma/2) |dD(x)/dx|^2 (Mescheder et al. 2018; 0 = off; try 0.1-1 at 64x64); costs about two more D backwards per update");
  auto* o_r1_every = app.add_option("--r1-every", s.r1_every, "lazy R1 (StyleGAN2): the R1 penalty on every k-th D update only, weighted k*gamma, for about 1/k of its cost (StyleGAN2: 16)");
  auto* o_r1_at = app.add_option("--r1-at", s.r1_at, "with --ada, where R1 takes D's gradient: reals (the dataset's images, through the augmentation, as StyleGAN2-ADA) or augmented (the images as D sees them)")
      ->check(CLI::IsMember({"reals", "augmented"}));
  auto* o_gp = app.add_option("--gp", s.gp, "WGAN-GP gradient penalty with this lambda: lambda (|dD(x^)/dx^| - 1)^2 at real/fake interpolates (Gulrajani et al. 2017 use 10 with --loss wgan --d-steps 5 --lr 1e-4 --beta1 0 --beta2 0.9; 0 = off)");
  auto* o_real_label = app.add_option("--real-label", s.real_label, "D's target for real images; 0.9 is one-sided label smoothing (bce, lsgan)");
  auto* o_sn = app.add_flag("--spectral-norm", s.spectral_norm, "spectral normalization of every conv in D (SNGAN; torch.nn.utils.spectral_norm's weight_orig/weight_u/weight_v in checkpoints); pairs with --loss hinge");
  auto* o_sn_form = app.add_option("--spectral-norm-form", s.spectral_norm_form, "with --spectral-norm, which PyTorch spectral norm D's checkpoints match: classic (torch.nn.utils.spectral_norm: weight_orig, weight_u, weight_v) or parametrizations (torch.nn.utils.parametrizations.spectral_norm, PyTorch 2's: parametrizations.weight.original, parametrizations.weight.0._u/_v)")
      ->check(CLI::IsMember({"classic", "parametrizations"}));
  auto* o_d_norm = app.add_option("--d-norm", s.d_norm, "D's normalization after each middle conv: batch (the DCGAN example's BatchNorm2d), instance (InstanceNorm2d(affine=True)), layer (GroupNorm(1, C): layer norm with a per-channel affine, the WGAN-GP paper's critic) or none (Identity); the penalties --gp/--r1 are per image, which batch norm is not")
      ->check(CLI::IsMember({"batch", "instance", "layer", "none"}));
  auto* o_d_steps = app.add_option("--d-steps", s.d_steps, "D updates per G update, each on its own real batch (WGAN's n_critic, SNGAN's n_dis; 1 = the DCGAN example)");
  auto* o_b1 = app.add_option("--beta1", s.beta1, "Adam beta1");
  auto* o_b2 = app.add_option("--beta2", s.beta2, "Adam beta2");
  auto* o_nz = app.add_option("--nz", s.nz, "latent vector size");
  auto* o_ngf = app.add_option("--ngf", s.ngf, "generator width (channels of its last hidden layer)");
  auto* o_ndf = app.add_option("--ndf", s.ndf, "discriminator width (channels of its first layer)");
  auto* o_seed = app.add_option("--seed", s.seed, "seed of the initialization, data order and noise");
  app.add_option("--device", s.device, "auto (GPU when present, else CPU), cpu, cuda or cuda:N");
  app.add_option("--workers", s.workers, "data-loading threads (0 = load in the training thread)");
  app.add_option("--out", s.out, "run directory (default runs/<dataset>-<time>)");
  app.add_option("--sample-every", s.sample_every, "write a fixed-noise sample grid and the report every N steps");
  app.add_option("--checkpoint-every", s.checkpoint_every, "write a checkpoint every N steps");
  app.add_option("--log-every", s.log_every, "print a progress line every N steps when output is not a terminal");
  auto* o_strict = app.add_flag("--strict", s.strict, "a bad image file is an error (default: listed and skipped)");
  auto* o_flip = app.add_flag("--random-flip", s.flip, "flip real images left-right at random (augmentation)");
  app.add_option("--time-limit", s.time_limit, "stop cleanly (samples, checkpoint, report) after this many seconds of training in this session (0 = no limit); --resume continues")->check(CLI::NonNegativeNumber);
  app.add_option("--threads", s.threads, "CPU threads (0 = OpenMP's default: all cores)");
  auto* o_ema = app.add_option("--ema", s.ema, "keep an exponential moving average of G's weights with this decay (e.g. 0.999; 0 = off); samples, the report and dcgan_generate use it");
  auto* o_ema_rampup = app.add_option("--ema-rampup", s.ema_rampup, "StyleGAN2-ADA's EMA ramp-up: step t averages with decay min(--ema, 0.5^(1/(R t))), a half-life of R t steps, so the average keeps up early in training (StyleGAN2-ADA: 0.05; 0 = off)");
  auto* o_ada = app.add_flag("--ada", s.ada, "adaptive discriminator augmentation: D sees every image (real and fake) augmented with probability p, p adapted to D's overfitting");
  auto* o_ada_target = app.add_option("--ada-target", s.ada_target, "ADA: target of E[sign(D logit)] on reals");
  auto* o_ada_speed = app.add_option("--ada-speed", s.ada_speed, "ADA: images for p to go from 0 to 1 (StyleGAN2-ADA: 500000; smaller suits short runs)");
  auto* o_ada_interval = app.add_option("--ada-interval", s.ada_interval, "ADA: steps between adjustments of p");
  auto* o_ada_geom = app.add_flag("--ada-geom", s.ada_geom, "ADA: add StyleGAN2-ADA's general geometry (isotropic and anisotropic scaling, arbitrary rotation, fractional translation; bilinear, reflection padding) to the flips, quarter turns and integer shifts");
  auto* o_eval_every = app.add_option("--eval-every", s.eval_every, "compute KID and FID every N steps (0 = never); needs --features");
  auto* o_eval_num = app.add_option("--eval-num", s.eval_num, "images (real and generated) per KID/FID evaluation");
  auto* o_features = app.add_option("--features", s.features, "feature classifier for KID/FID (gantry_classifier_train output)");
  auto* o_net_g = app.add_option("--netG", s.net_g, "start G from these weights instead of the random init, as the PyTorch DCGAN example's --netG: its netG_epoch_N.pth, or any generator .pth/.safetensors of this architecture")->check(CLI::ExistingFile);
  auto* o_net_d = app.add_option("--netD", s.net_d, "start D from these weights (as --netG)")->check(CLI::ExistingFile);
  auto* o_net_g_key = app.add_option("--netG-key", s.net_g_key, "--netG's model inside a file that holds several (a torch training checkpoint {'netG': ..., 'netD': ...}: --netG-key netG)");
  auto* o_net_d_key = app.add_option("--netD-key", s.net_d_key, "--netD's model inside such a file (--netD-key netD)");
  auto* o_start = app.add_option("--start-from", s.start_from, "start from a training checkpoint: a torch.save file holding both models and, when saved, their Adam states ({'netG': ..., 'netD': ..., 'optimizerG': ..., 'optimizerD': ...}, as PyTorch scripts save and gantry_convert RUN ck.pth writes); the architecture, lr and betas come from it unless given")->check(CLI::ExistingFile);
  app.add_option("--resume", resume, "continue the run in this directory from its latest checkpoint, with its config (--epochs/--max-steps may extend it)");
  try {
    app.parse(argc, argv);
    if (!resume.empty()) {
      // The run's own settings win; only the length, device, workers and logging may change.
      for (CLI::Option* o : {o_dataset, o_subset, o_data, o_classes, o_size, o_channels, o_batch, o_lr, o_lr_g, o_lr_d, o_loss,
                             o_real_label, o_sn, o_sn_form, o_d_norm, o_d_steps, o_r1, o_r1_every, o_r1_at, o_gp, o_b1, o_b2, o_nz, o_ngf, o_ndf, o_seed, o_strict, o_flip,
                             o_ema, o_ema_rampup, o_ada, o_ada_target, o_ada_speed, o_ada_interval, o_ada_geom, o_eval_every, o_eval_num, o_features,
                             o_net_g, o_net_d, o_net_g_key, o_net_d_key, o_start})
        if (o->count() > 0)
          throw CLI::ValidationError(o->get_name() + " cannot change when resuming: --resume takes the settings from " + resume + "/config.json");
      if (!fs::exists(fs::path(resume) / "config.json"))
        throw CLI::ValidationError("--resume " + resume + ": no config.json there; give the run directory of an earlier dcgan_train");
      const std::string cfg_path = (fs::path(resume) / "config.json").string();
      const json cfg = json::parse(apps::read_text(cfg_path));
      Settings r = settings_from_json(cfg.at("settings"), cfg_path);
      if (o_epochs->count()) r.epochs = s.epochs;
      if (o_steps->count()) r.max_steps = s.max_steps;
      r.device = s.device;
      r.workers = s.workers;
      r.log_every = s.log_every;
      r.threads = s.threads;
      r.time_limit = s.time_limit;
      r.out = resume;
      s = r;
    }
    if (!s.start_from.empty() && (!s.net_g.empty() || !s.net_d.empty()))
      throw CLI::ValidationError("--start-from takes both models from its file; give it or --netG/--netD, not both");
    if ((!s.net_g_key.empty() && s.net_g.empty() && s.start_from.empty()) ||
        (!s.net_d_key.empty() && s.net_d.empty() && s.start_from.empty()))
      throw CLI::ValidationError("--netG-key/--netD-key name a model inside the --netG/--netD or --start-from file; give that file");
    if (resume.empty() && o_sn_form->count() > 0 && !s.spectral_norm && s.start_from.empty())
      throw CLI::ValidationError("--spectral-norm-form " + s.spectral_norm_form + " picks the form of --spectral-norm; give --spectral-norm too");
    if (resume.empty() && o_r1_at->count() > 0 && (s.r1 == 0 || !s.ada))
      throw CLI::ValidationError("--r1-at " + s.r1_at + " says where R1 takes D's gradient when ADA augments the reals; give --r1 GAMMA and --ada too");
    validate(s);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (s.epochs == 0 && s.max_steps == 0) s.epochs = 5;
  if (s.threads > 0) set_num_threads(s.threads);
  std::optional<DCGANTrainingCheckpoint> start;
  if (resume.empty() && !s.start_from.empty()) {
    start = read_start_checkpoint(s, {o_size->count() > 0, o_channels->count() > 0, o_nz->count() > 0, o_ngf->count() > 0,
                                      o_ndf->count() > 0, o_lr->count() > 0, o_lr_g->count() > 0, o_lr_d->count() > 0,
                                      o_b1->count() > 0, o_b2->count() > 0, o_sn->count() > 0, o_sn_form->count() > 0,
                                      o_d_norm->count() > 0});
    validate(s);  // what the file gave
  }

  const Device device = apps::choose_device(s.device);
  if (s.out.empty()) s.out = "runs/" + s.dataset + "-" + now_stamp();
  apps::NewRunDir new_run_dir(s.out);  // removed again if the start fails
  fs::create_directories(fs::path(s.out) / "samples");

  // Data: opened (and, for folders, scanned) before any training work.
  data::DatasetOptions dopt;
  dopt.strict = s.strict;
  dopt.classes = data::split_classes(s.classes);
  const auto full_dataset = data::open_dataset(s.dataset, s.data, /*train=*/true, dopt);
  std::shared_ptr<data::Dataset> dataset = full_dataset;
  if (s.subset > 0) {
    if (s.subset > static_cast<int64_t>(full_dataset->size()))
      throw std::invalid_argument("--subset " + std::to_string(s.subset) + " is more than the " +
                                  std::to_string(full_dataset->size()) + " images of " + full_dataset->name());
    dataset = std::make_shared<data::Subset>(full_dataset, static_cast<size_t>(s.subset));
  }
  if (s.channels == 0) s.channels = dataset->channels();
  std::cout << "dataset: " << dataset->name() << "\n";
  if (!dataset->bad_files().empty())
    std::cout << "skipped " << dataset->bad_files().size() << " unreadable file(s) (listed above); --strict makes them an error\n";
  if (static_cast<int64_t>(dataset->size()) < s.batch_size)
    throw std::invalid_argument("--batch-size " + std::to_string(s.batch_size) + " is larger than the dataset (" +
                                std::to_string(dataset->size()) + " images)");
  // The loader drops a last short batch, so an epoch is size / batch_size batches.
  const int64_t epoch_batches = static_cast<int64_t>(dataset->size()) / s.batch_size;
  if (s.epochs > 0 && s.epochs * epoch_batches < s.d_steps)
    throw std::invalid_argument("--epochs " + std::to_string(s.epochs) + " is " + std::to_string(s.epochs * epoch_batches) +
                                " batches, fewer than one step of --d-steps " + std::to_string(s.d_steps) +
                                "; give more --epochs or --max-steps");

  DCGANConfig mc;
  mc.nz = s.nz; mc.ngf = s.ngf; mc.ndf = s.ndf; mc.nc = s.channels; mc.image_size = s.image_size;
  mc.lr = s.lr; mc.beta1 = s.beta1; mc.beta2 = s.beta2;
  mc.lr_g = s.lr_g; mc.lr_d = s.lr_d;
  mc.loss = gan_loss_from_name(s.loss);
  mc.real_label = s.real_label;
  mc.spectral_norm = s.spectral_norm;
  mc.spectral_norm_form = spectral_norm_form_from_name(s.spectral_norm_form);
  mc.d_norm = discriminator_norm_from_name(s.d_norm);
  mc.d_steps = s.d_steps;
  mc.r1_gamma = s.r1;
  mc.r1_every = s.r1_every;
  mc.r1_through_augment = s.r1_at == "reals";
  mc.gp_lambda = s.gp;
  Generator init_gen(s.seed);
  DCGANTrainer trainer(mc, device, &init_gen);
  // Starting weights: loaded before the EMA copy is taken, and only when the run starts (a
  // resumed run continues from its own checkpoint).
  if (resume.empty()) {
    if (!s.net_g.empty()) load_start_weights(trainer.generator(), s.net_g, s.net_g_key, "--netG", s);
    if (!s.net_d.empty()) load_start_weights(trainer.discriminator(), s.net_d, s.net_d_key, "--netD", s);
    if (start) start_from_checkpoint(trainer, *start, s);
  }
  if (s.ema > 0) trainer.enable_ema(s.ema, s.ema_rampup);
  if (start && trainer.has_ema() && !start->generator_ema.empty()) {
    trainer.generator_ema().load_state_dict(start->generator_ema);
    std::cout << "EMA generator starts from " << start->generator_key << "_ema"
              << (s.ema_rampup > 0 ? " (with --ema-rampup the first update copies G over it: the ramp restarts at step 0)" : "")
              << "\n";
  }
  if (s.ada) {
    AdaOptions ao;
    ao.target = s.ada_target;
    ao.speed = s.ada_speed;
    ao.interval = s.ada_interval;
    ao.geometric = s.ada_geom;
    trainer.enable_ada(ao, s.seed ^ 0xADA5EEDull);
  }
  // KID/FID during training: the classifier and the real images' features, computed once.
  std::shared_ptr<ConvClassifier> classifier;
  Tensor real_features;
  if (s.eval_every > 0) {
    classifier = load_classifier(s.features);
    real_features = apps::classifier_features(
        *classifier, apps::dataset_images(*full_dataset, s.eval_num, s.image_size, s.channels), device);
    std::cout << "evaluating KID/FID every " << s.eval_every << " steps on " << s.eval_num << " images with "
              << s.features << " (" << classifier->feature_dim() << " features)\n";
  }
  Generator noise_gen(s.seed * 2654435761ull + 1);
  // The fixed noise of the sample grids has its own stream so sampling never shifts training.
  Generator fixed_gen(s.seed ^ 0x5A3B1E5ull);
  const Tensor fixed_noise = Tensor::randn({64, s.nz, 1, 1}, &fixed_gen, device);

  apps::TrainState state;
  std::string last_checkpoint;  // the newest complete checkpoint of the run
  state.noise_seed = noise_gen.seed();
  if (!resume.empty()) {
    const std::string ck = apps::latest_checkpoint_dir(s.out);
    state = apps::read_train_state(ck);
    trainer.generator().load_state_dict(load_safetensors(ck + "/generator.safetensors").tensors);
    trainer.discriminator().load_state_dict(load_safetensors(ck + "/discriminator.safetensors").tensors);
    trainer.optimizer_g().load(ck + "/optimizer_g.safetensors");
    trainer.optimizer_d().load(ck + "/optimizer_d.safetensors");
    if (trainer.has_ema()) {
      const std::string ema_file = ck + "/generator_ema.safetensors";
      if (!fs::exists(ema_file)) throw std::runtime_error("--resume: the run uses --ema but " + ema_file + " is missing");
      trainer.generator_ema().load_state_dict(load_safetensors(ema_file).tensors);
    }
    if (trainer.ada()) {
      const std::string ada_file = ck + "/augment.json";
      if (!fs::exists(ada_file)) throw std::runtime_error("--resume: the run uses --ada but " + ada_file + " is missing");
      trainer.ada()->load_state_json(apps::read_text(ada_file));
    }
    noise_gen.set_state(state.noise_seed, state.noise_offset);
    trainer.set_d_updates(state.step * s.d_steps);  // lazy R1 continues on its cadence
    if (trainer.has_ema()) trainer.ema()->set_updates(state.step);  // and the EMA's ramp-up
    truncate_metrics((fs::path(s.out) / "metrics.csv").string(), state.step);
    last_checkpoint = ck;
    std::cout << "resuming " << s.out << " from " << ck << " (step " << state.step << ", epoch " << state.epoch << ")\n";
  }

  json config = {{"settings", settings_json(s)},
                 {"gantry_version", version()},
                 {"device", device.str()},
                 {"dataset_description", dataset->name()},
                 {"generator_parameters", trainer.generator().num_parameters()},
                 {"discriminator_parameters", trainer.discriminator().num_parameters()}};
  apps::write_text_atomic((fs::path(s.out) / "config.json").string(), config.dump(2) + "\n");
  new_run_dir.keep();

  data::LoaderOptions lopt;
  lopt.batch_size = s.batch_size;
  lopt.seed = s.seed;
  lopt.num_workers = s.workers;
  lopt.start_epoch = state.epoch;
  lopt.start_batch = state.next_batch;
  lopt.strict = s.strict;
  lopt.transform.image_size = s.image_size;
  lopt.transform.channels = s.channels;
  lopt.transform.random_flip = s.flip;
  // Batches for a GPU come in page-locked memory, so their upload is an asynchronous copy.
  if (device.is_cuda()) lopt.allocator = [](const Shape& shape) { return Tensor::empty_pinned(shape); };
  data::DataLoader loader(dataset, lopt);
  const int64_t per_epoch = loader.batches_per_epoch();
  int64_t total_steps = s.max_steps;
  if (s.epochs > 0) {  // a step takes d_steps batches
    const int64_t by_epochs = s.epochs * per_epoch / s.d_steps;
    total_steps = total_steps > 0 ? std::min(total_steps, by_epochs) : by_epochs;
  }
  if (state.step >= total_steps) {
    std::cout << "the run already has " << state.step << " steps (limit " << total_steps
              << "); pass a larger --max-steps or --epochs to extend it\n";
    return 0;
  }

  const std::string metrics_path = (fs::path(s.out) / "metrics.csv").string();
  const bool new_metrics = !fs::exists(metrics_path);
  std::ofstream metrics(metrics_path, std::ios::app);
  // The 9 standard columns first; ada_p, penalty, kid, fid only when those options are on (kid
  // and fid are empty in the rows without an evaluation). loss_d is without the penalty.
  const bool penalty = s.r1 > 0 || s.gp > 0;
  if (new_metrics)
    metrics << "step,epoch,loss_d,loss_g,d_x,d_g_z1,d_g_z2,seconds,images_per_sec" << (s.ada ? ",ada_p" : "")
            << (penalty ? ",penalty" : "") << (s.eval_every > 0 ? ",kid,fid" : "") << "\n";
  // Fixed latents of the evaluations: their own stream, the same at every evaluation.
  const uint64_t eval_seed = s.seed ^ 0xE7A1ull;
  auto evaluate = [&]() {
    const Tensor fake_features = apps::generated_features(
        *classifier, [&](const Tensor& z) { return trainer.sample(z, /*eval=*/false); }, s.nz, s.eval_num, eval_seed, device);
    // KID subsets of half the images, so the +- (the spread over subsets) means something:
    // subsets of all rows would all be the same permutation-invariant sum.
    return apps::score(real_features, fake_features, 100, std::max<int64_t>(2, s.eval_num / 2));
  };

  auto save_samples = [&](int64_t step) {
    data::save_png((fs::path(s.out) / "samples" / step_file(step)).string(),
                   data::make_grid(trainer.sample(fixed_noise, /*eval=*/false), 8));
    apps::write_report(s.out);
  };
  auto save_checkpoint = [&]() {
    apps::CheckpointFiles f;
    f.generator = trainer.generator().state_dict();
    f.discriminator = trainer.discriminator().state_dict();
    f.optimizer_g = trainer.optimizer_g().state_dict();
    f.optimizer_d = trainer.optimizer_d().state_dict();
    if (trainer.has_ema()) f.extra.emplace_back("generator_ema", trainer.generator_ema().state_dict());
    if (trainer.ada()) f.extra_text.emplace_back("augment.json", trainer.ada()->state_json());
    f.generator_meta = {{"format", "pt"}, {"model", "dcgan-generator"}, {"nz", std::to_string(s.nz)},
                        {"image_size", std::to_string(s.image_size)}};
    f.discriminator_meta = {{"format", "pt"}, {"model", "dcgan-discriminator"}, {"image_size", std::to_string(s.image_size)},
                            {"d_norm", s.d_norm}};  // instance and layer norm have the same keys
    state.noise_seed = noise_gen.seed();
    state.noise_offset = noise_gen.offset();
    return apps::write_checkpoint(s.out, state, f);
  };

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const bool tty = ::isatty(STDOUT_FILENO);
  std::cout << "training on " << device.str() << ": " << total_steps << " steps (" << per_epoch
            << (s.d_steps > 1 ? " batches per epoch, " + std::to_string(s.d_steps) + " per step" : std::string(" per epoch"))
            << "), batch " << s.batch_size << ", " << s.image_size << "x" << s.image_size << "x"
            << s.channels << ", " << objective_summary(s) << ", run directory " << s.out << std::endl;
  if (s.ada)
    std::cout << "ADA: flips, quarter turns, integer shifts" << (s.ada_geom ? ", scaling, rotation, fractional shifts" : "")
              << ", color, cutout; target " << s.ada_target << ", speed " << s.ada_speed << " images\n";
  if (s.ema > 0) {
    std::cout << "EMA generator with decay " << s.ema;
    if (s.ema_rampup > 0)
      std::cout << ", ramped up as StyleGAN2-ADA's: a half-life of " << s.ema_rampup << " x the steps so far until the decay's";
    std::cout << "\n";
  }
  if (s.gp > 0 && s.d_norm == "batch")
    std::cout << "note: --gp with D's batch norm, which makes each image's gradient depend on its batch; the "
                 "WGAN-GP paper's critic has layer norm (--d-norm layer)\n";

  bool real_saved = fs::exists(fs::path(s.out) / "samples" / "real.png");
  const double seconds_before = state.seconds;
  const auto t_start = std::chrono::steady_clock::now();
  double ips_smooth = 0;
  std::vector<data::Batch> batches(static_cast<size_t>(s.d_steps));  // one per D update
  std::vector<Tensor> reals(batches.size());
  bool out_of_time = false;
  while (state.step < total_steps && g_signal == 0) {
    if (s.time_limit > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count() >= s.time_limit) {
      out_of_time = true;
      break;
    }
    bool have_all = true;
    for (size_t k = 0; k < batches.size() && have_all; ++k) {
      have_all = loader.next(batches[k]);
      reals[k] = batches[k].images;
    }
    if (!have_all) break;
    const data::Batch& batch = batches.back();  // where the step ends in the data
    if (!real_saved) {
      data::save_png((fs::path(s.out) / "samples" / "real.png").string(),
                     data::make_grid(batches[0].images.narrow0(0, std::min<int64_t>(64, batches[0].size())), 8));
      real_saved = true;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const StepStats st = trainer.step(reals, noise_gen);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!std::isfinite(st.loss_d) || !std::isfinite(st.loss_g) || !std::isfinite(st.penalty)) {
      std::cout << (tty ? "\n" : "") << "error: the loss became non-finite at step " << state.step + 1
                << " (loss_D " << st.loss_d << ", loss_G " << st.loss_g
                << (s.r1 > 0 || s.gp > 0 ? ", penalty " + std::to_string(st.penalty) : std::string())
                << "); stopping without saving. "
                << (last_checkpoint.empty() ? std::string("The run has no checkpoint yet")
                                            : "The last good checkpoint is " + last_checkpoint)
                << ". Try a lower --lr." << std::endl;
      apps::write_report(s.out);
      return 3;
    }
    state.step += 1;
    state.epoch = batch.epoch;
    state.next_batch = batch.index + 1;
    if (state.next_batch == per_epoch) {
      state.epoch += 1;
      state.next_batch = 0;
    }
    const double elapsed = seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    state.seconds = elapsed;
    const double ips = static_cast<double>(batch.size()) * s.d_steps / dt;  // real images through D
    ips_smooth = ips_smooth == 0 ? ips : 0.9 * ips_smooth + 0.1 * ips;
    char row[256];
    std::snprintf(row, sizeof row, "%lld,%lld,%.6g,%.6g,%.6g,%.6g,%.6g,%.3f,%.2f", static_cast<long long>(state.step),
                  static_cast<long long>(batch.epoch), st.loss_d, st.loss_g, st.d_x, st.d_g_z1, st.d_g_z2, elapsed, ips);
    metrics << row;
    if (s.ada) {
      std::snprintf(row, sizeof row, ",%.6g", st.ada_p);
      metrics << row;
    }
    if (penalty) {
      std::snprintf(row, sizeof row, ",%.6g", st.penalty);
      metrics << row;
    }
    if (s.eval_every > 0) {
      if (state.step % s.eval_every == 0 || state.step == total_steps) {
        const apps::QualityScores q = evaluate();
        std::snprintf(row, sizeof row, ",%.6g,%.6g", q.kid.mean, q.fid);
        metrics << row;
        std::cout << (tty ? "\n" : "") << "eval at step " << state.step << ": KID " << q.kid.mean << " +- " << q.kid.std
                  << ", FID " << q.fid << "\n";
      } else {
        metrics << ",,";
      }
    }
    metrics << "\n";
    metrics.flush();

    const double eta = (total_steps - state.step) * static_cast<double>(s.batch_size) * s.d_steps / std::max(ips_smooth, 1e-9);
    char line[256];
    std::snprintf(line, sizeof line, "[epoch %lld] step %lld/%lld | loss_D %.3f loss_G %.3f | D(x) %.3f D(G(z)) %.3f/%.3f | %.1f img/s | ETA %s",
                  static_cast<long long>(batch.epoch + 1), static_cast<long long>(state.step), static_cast<long long>(total_steps),
                  st.loss_d, st.loss_g, st.d_x, st.d_g_z1, st.d_g_z2, ips_smooth, hms(eta).c_str());
    if (tty) std::cout << "\r" << line << "\x1b[K" << std::flush;
    else if (state.step % s.log_every == 0 || state.step == 1) std::cout << line << "\n" << std::flush;

    if (state.step % s.sample_every == 0) save_samples(state.step);
    if (state.step % s.checkpoint_every == 0) last_checkpoint = save_checkpoint();
  }
  if (tty) std::cout << "\n";
  metrics.close();

  // The end of the run, or an interruption: samples, a checkpoint and the report.
  if (state.step % s.sample_every != 0) save_samples(state.step);
  if (state.step % s.checkpoint_every != 0 || last_checkpoint.empty()) last_checkpoint = save_checkpoint();
  apps::write_report(s.out);
  if (g_signal != 0) {
    std::cout << "interrupted (signal " << g_signal.load() << ") after step " << state.step << "; checkpoint "
              << last_checkpoint << " written. Continue with: dcgan_train --resume " << s.out << std::endl;
    return 128 + g_signal.load();
  }
  if (out_of_time)
    std::cout << "time limit of " << s.time_limit << " s reached after step " << state.step
              << "; continue with: dcgan_train --resume " << s.out << std::endl;
  std::cout << "done: " << state.step << " steps in " << hms(state.seconds) << "; samples, checkpoints and "
            << (fs::path(s.out) / "report.html").string() << " are in " << s.out << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return apps::run_app("dcgan_train", run, argc, argv); }

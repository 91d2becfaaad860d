#pragma once
// The run directory of dcgan_train, and how apps find things in it.
//
//   RUN/config.json          every setting, the gantry version and the device
//   RUN/metrics.csv          one row per step
//   RUN/samples/real.png     a grid of real images; samples/step_NNNNNN.png fixed-noise grids
//   RUN/checkpoints/step_NNNNNN/{generator,discriminator,optimizer_g,optimizer_d}.safetensors
//                                + state.json (step, epoch, next batch, RNG state, time)
//   RUN/checkpoints/latest   the name of the newest complete checkpoint folder
//   RUN/report.html          the report
//
// A checkpoint is written into a temporary folder, flushed, renamed into place, and only then
// named in `latest` (itself replaced atomically): a crash at any moment leaves the previous
// checkpoint intact and `latest` pointing at a complete one.
#include <cstdint>
#include <string>
#include <vector>

#include "gantry/core/safetensors.h"

namespace gantry::apps {

struct TrainState {
  int64_t step = 0;         // completed steps
  int64_t epoch = 0;        // epoch of the next batch
  int64_t next_batch = 0;   // index of the next batch within that epoch
  uint64_t noise_seed = 0;  // the latent-noise generator's state
  uint64_t noise_offset = 0;
  double seconds = 0;       // training time so far (over all sessions of the run)
};

struct CheckpointFiles {
  StateDict generator, discriminator, optimizer_g, optimizer_d;
  Metadata generator_meta, discriminator_meta;
  // Extra model files (e.g. "generator_ema") written beside the others, same layout.
  std::vector<std::pair<std::string, StateDict>> extra;
  // Extra text files {file name, contents} (e.g. "augment.json", the ADA state), same folder.
  std::vector<std::pair<std::string, std::string>> extra_text;
};

// Writes RUN/checkpoints/step_NNNNNN atomically, updates `latest`, keeps the newest `keep`.
// Returns the folder written.
std::string write_checkpoint(const std::string& run_dir, const TrainState& state,
                             const CheckpointFiles& files, int keep = 2);

// The newest complete checkpoint folder of a run; throws naming the run when there is none.
std::string latest_checkpoint_dir(const std::string& run_dir);
TrainState read_train_state(const std::string& checkpoint_dir);

// Resolves --checkpoint FILE|RUN_DIR to a generator file: a file is itself; a run directory
// means its latest checkpoint's generator (its EMA generator when `prefer_ema` and present).
std::string resolve_generator_file(const std::string& path, bool prefer_ema = true);
// The discriminator next to a resolved generator file ("" when there is none).
std::string sibling_discriminator_file(const std::string& generator_file);

// A DCGAN model's state_dict from a file of either format (safetensors, or torch.save's
// .pth/.pt): the entries under `key` when one is given (a torch training checkpoint such as
// {"netG": ..., "netD": ..., "epoch": 5}), and without DataParallel's "module." prefix. When the
// file has no main.0.weight at its top but has one under some key, the error says which key to
// give (`key_flag`, e.g. "--key netG").
StateDict load_model_weights(const std::string& file, const std::string& key,
                             const std::string& key_flag = "--key");

// The discriminator norm a file records ("batch", "instance", "layer", "none"; "" when it says
// none): dcgan_train's discriminator.safetensors metadata "d_norm", or a torch.save file's
// top-level "d_norm" string (gantry_convert RUN ck.pth writes one). Instance and layer norm
// have the same keys, so only this tells them apart.
std::string recorded_d_norm(const std::string& file);

// Text file helpers: atomic replace (temp file in the same folder, fsync, rename).
void write_text_atomic(const std::string& path, const std::string& text);
std::string read_text(const std::string& path);

// Fails early (std::runtime_error naming the folder) when `dir` cannot be created or written.
void ensure_writable_dir(const std::string& dir);

// The output folder of a run that is starting: created (ensure_writable_dir) on construction.
// When the run fails before keep() — bad data, weights of another size — the folders this
// created are removed again if they still hold no file, so a failed start leaves nothing behind.
// A folder that existed before is never removed.
class NewRunDir {
 public:
  explicit NewRunDir(const std::string& dir);
  ~NewRunDir();
  NewRunDir(const NewRunDir&) = delete;
  NewRunDir& operator=(const NewRunDir&) = delete;
  void keep() { created_.clear(); }

 private:
  std::vector<std::string> created_;  // outermost first
};

}  // namespace gantry::apps

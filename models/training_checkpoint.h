#pragma once
// A DCGAN training run as one torch.save file, both ways: what a PyTorch training script saves
// and what gantry_convert writes from a dcgan_train run, so a run moves between the frameworks
// with its optimizer state and continues where it stopped:
//
//   torch.save({"netG": netG.state_dict(), "netD": netD.state_dict(),
//               "optimizerG": optimizerG.state_dict(), "optimizerD": optimizerD.state_dict(),
//               "epoch": 3, "step": 1500}, "ck.pth")
//
// Contract:
// - Writing (dcgan_checkpoint_to_torch): the keys above, in that order, then "netG_ema" when
//   there is an EMA generator, then the counters (ints), then the notes (strings). Optimizer states become
//   torch.optim.Adam's state_dict (optim/adam.h, adam_state_to_torch); a missing optimizer
//   state is left out. torch.load(weights_only=True) reads the file.
// - Reading (dcgan_checkpoint_from_torch): the models are found by their tensors, not their
//   names — a top-level entry whose tensors build a DCGAN generator (generator_from_state_dict)
//   is a generator, likewise a discriminator — so "G"/"generator"/"netG" all work. With more
//   than one candidate (a netG and a netG_ema), the one named netG/netD wins, else the key must
//   be given. Optimizers: the top-level entries holding an optimizer's state_dict, matched to
//   the model whose parameter count (and, when the state has tensors, whose shapes) they fit.
//   DataParallel's "module." prefix is removed. Errors (std::invalid_argument) name the file,
//   list the keys found and say which key to give.
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "gantry/core/safetensors.h"
#include "gantry/core/torch_checkpoint.h"
#include "gantry/optim/adam.h"

namespace gantry {

struct DCGANTrainingCheckpoint {
  StateDict generator, discriminator;
  StateDict generator_ema;  // empty: none
  std::optional<TorchAdamState> optimizer_g, optimizer_d;
  std::map<std::string, int64_t> counters;  // top-level ints: "epoch", "step", ...
  std::map<std::string, std::string> notes;  // top-level strings: "d_norm" (D's norm, dcgan.h)
  // Where the parts were found when read (the top-level keys; "" for a missing optimizer).
  std::string generator_key, discriminator_key, optimizer_g_key, optimizer_d_key;
};

// The torch.save object of a training checkpoint (keys as in the contract).
TorchValue dcgan_checkpoint_to_torch(const DCGANTrainingCheckpoint& ck);

// Finds the models and optimizers in a torch.save file's flattened contents; `file` names it in
// errors. `generator_key` / `discriminator_key` pick the entries when given ("" = find them).
DCGANTrainingCheckpoint dcgan_checkpoint_from_torch(const SafetensorsContents& c, const std::string& file,
                                                    const std::string& generator_key = "",
                                                    const std::string& discriminator_key = "");

}  // namespace gantry

#pragma once
// Small pieces the apps share: device choice and latent-vector helpers.
#include <string>

#include "gantry/core/device.h"

namespace gantry::apps {

// "auto" -> the GPU when one is usable, else the CPU (saying so once on stderr when this build
// has CUDA but no GPU or driver is usable); "cpu"; "cuda"/"cuda:N" -> that GPU or an error
// naming the flag. `flag` names the option in messages ("--device").
Device choose_device(const std::string& choice, const std::string& flag = "--device");

// What is wrong with a --truncation value, or "" when it is fine: 0 (off) or 0.05-1000 (below
// 0.05 redrawing takes ever longer and the images collapse to G(0)).
std::string truncation_error(float truncation);
// With --truncation and --bn batch, says on stderr that G's first batch norm, normalizing with
// the batch's own statistics, undoes most of the truncation (measured in docs/quality.md).
void note_truncation_with_batch_stats(float truncation, const std::string& bn);

// Runs an app's body and turns an escaping exception into "<app>: error: <what>" on stderr
// and exit code 1, so every app reports failures the same way.
int run_app(const char* app, int (*body)(int, char**), int argc, char** argv);

}  // namespace gantry::apps

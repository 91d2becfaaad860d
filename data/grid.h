#pragma once
// Image grids, as torchvision.utils.make_grid + save_image: the samples a GAN run writes.
//
// Contract: make_grid takes a float tensor [N, C, H, W] (C = 1 or 3, any device; it is copied
// to the host) whose values are in [lo, hi] (default [-1, 1], the generator's tanh range) and
// tiles it into rows of `nrow` images with `padding` pixels between and around them, filled
// with pad_value (an intensity in [0, 1], like torchvision's, so 0 = black and 1 = white).
// Pixel values become round((x - lo) / (hi - lo) * 255), clamped to [0, 255] (NaN -> 0), i.e.
// torchvision's normalize=True, value_range=(-1, 1) followed by mul(255).add(0.5).clamp.
// The result has C channels (torchvision turns 1 channel into 3 equal ones; gray PNGs look the
// same and are smaller). As in torchvision, a single image (N = 1) is returned without padding.
#include <string>

#include "gantry/core/tensor.h"
#include "gantry/data/image.h"

namespace gantry::data {

Image make_grid(const Tensor& images, int nrow = 8, int padding = 2, float pad_value = 0.f,
                float lo = -1.f, float hi = 1.f);

// One float image [C, H, W] or [1, C, H, W] in [lo, hi] -> 8-bit image (same mapping).
Image tensor_to_image(const Tensor& image, float lo = -1.f, float hi = 1.f);

// Writes a PNG atomically: to a temporary file in the same folder, then renamed over `path`,
// so a reader (or a crash) never sees a half-written file. Throws naming the path on failure.
void save_png(const std::string& path, const Image& img);

}  // namespace gantry::data

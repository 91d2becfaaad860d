#pragma once
// Transforms: the preprocessing of the PyTorch DCGAN example,
//   Resize(S) -> CenterCrop(S) -> ToTensor() -> Normalize((0.5,)*C, (0.5,)*C)
// plus channel conversion (gray <-> RGB, alpha dropped) and an optional random horizontal flip.
//
// Contract: apply_transform() takes an 8-bit HWC Image (1-4 channels, any size) and writes
// C x S x S floats in CHW order to `out`, each value (x / 255 - 0.5) / 0.5, so in [-1, 1]
// (0 -> -1, 255 -> 1). It is thread-safe and allocates only temporaries.
#include <cstdint>

#include "gantry/data/image.h"

namespace gantry::data {

struct TransformOptions {
  // S: the shorter side is resized to S, then the centered S x S square is kept. 0 keeps the
  // image's own size (then every image must have the same size, as CIFAR-10 and MNIST do).
  int image_size = 64;
  // Output channels: 1 (gray) or 3 (RGB); 0 = the dataset's own (Dataset::channels()).
  int channels = 0;
  // Flip each image left-right with probability 1/2 (the loader decides, from its seed).
  bool random_flip = false;
  // Filter for the resize (Auto: antialiased bilinear when shrinking, bicubic when enlarging).
  ResizeFilter filter = ResizeFilter::Auto;
};

// Channel conversion, resize of the shorter side, center crop (all as needed), then the
// flip when `flip`, then the [-1, 1] float conversion into out[c * S * S + y * S + x].
// `channels` here must be 1 or 3 (resolve 0 before calling). Returns nothing; throws
// std::invalid_argument for a bad image or options.
void apply_transform(const Image& img, const TransformOptions& opt, int channels, bool flip,
                     float* out);

// The same steps up to (and including) the flip, returning the 8-bit image (useful to look at
// what the network will see, and in tests).
Image transform_image(const Image& img, const TransformOptions& opt, int channels, bool flip);

// Writes an 8-bit HWC image as floats in [-1, 1], CHW, optionally mirrored.
void to_chw_float(const Image& img, bool flip, float* out);

}  // namespace gantry::data

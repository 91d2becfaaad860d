#pragma once
// Post-processing of generated images, the pipeline of the seed report (PIL/OpenCV there):
//   upscale_bicubic(img, 2) -> median_blur(img, 3) -> sharpen(img)
// All work on 8-bit Images (any channel count), channel by channel, and return a new image.
// Results are rounded to nearest (halves up) and clamped to [0, 255]. Borders replicate the
// edge pixels (OpenCV's BORDER_REPLICATE).
#include "gantry/data/image.h"

namespace gantry::data {

// Enlarges by an integer factor with the bicubic (Keys, a = -0.5, PIL's BICUBIC / Catmull-Rom)
// kernel, separably. Output pixel i samples the source at (i + 0.5) / factor - 0.5 (pixel
// centres aligned, as PIL and OpenCV do), from the 4 nearest source pixels per axis.
Image upscale_bicubic(const Image& img, int factor);

// Median of the k x k window around each pixel (k odd, >= 1), per channel: OpenCV's medianBlur.
Image median_blur(const Image& img, int k);

// PIL's ImageFilter.SHARPEN: the 3x3 kernel [-2 -2 -2; -2 32 -2; -2 -2 -2] / 16 (weights sum to
// 1: flat areas stay, edges get steeper).
Image sharpen(const Image& img);

}  // namespace gantry::data

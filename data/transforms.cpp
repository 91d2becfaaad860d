// Transforms (see transforms.h).
#include "gantry/data/transforms.h"

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string>

namespace gantry::data {

namespace {
// The 256 possible outputs, computed with the same float operations as torchvision's
// ToTensor (x / 255) followed by Normalize(0.5, 0.5) ((v - 0.5) / 0.5), so the values match
// PyTorch bit for bit.
const std::array<float, 256>& unit_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = (static_cast<float>(i) / 255.0f - 0.5f) / 0.5f;
    return t;
  }();
  return table;
}

void check_channels(int channels) {
  if (channels != 1 && channels != 3)
    throw std::invalid_argument("transform: output channels must be 1 or 3, got " +
                                std::to_string(channels));
}

// Everything but the final channel expansion: channel reduction first (less to resize), then
// resize and crop. Gray -> RGB is left to the caller because replicating a plane commutes
// with the resize and costs nothing when fused into the float conversion.
Image geometry(const Image& img, const TransformOptions& opt, int channels) {
  Image cur = img;
  if (channels == 1 && cur.channels != 1)
    cur = convert_channels(cur, 1);  // RGB(A) -> luma, gray+alpha -> gray
  else if (channels == 3 && cur.channels == 4)
    cur = convert_channels(cur, 3);  // drop alpha
  else if (channels == 3 && cur.channels == 2)
    cur = convert_channels(cur, 1);  // drop alpha; expanded to RGB at the end
  if (opt.image_size > 0) {
    const int s = opt.image_size;
    if (std::min(cur.width, cur.height) != s)
      cur = resize_shorter_side(cur, s, opt.filter);
    if (cur.width != s || cur.height != s) cur = center_crop(cur, s, s);
  }
  return cur;
}
}  // namespace

void to_chw_float(const Image& img, bool flip, float* out) {
  const auto& lut = unit_table();
  const int w = img.width, h = img.height, c = img.channels;
  const size_t plane = size_t(w) * h;
  for (int ch = 0; ch < c; ++ch) {
    float* dst = out + ch * plane;
    for (int y = 0; y < h; ++y) {
      const uint8_t* src = img.pixels.data() + size_t(y) * w * c + ch;
      float* row = dst + size_t(y) * w;
      if (flip)
        for (int x = 0; x < w; ++x) row[w - 1 - x] = lut[src[size_t(x) * c]];
      else
        for (int x = 0; x < w; ++x) row[x] = lut[src[size_t(x) * c]];
    }
  }
}

Image transform_image(const Image& img, const TransformOptions& opt, int channels, bool flip) {
  check_channels(channels);
  Image cur = geometry(img, opt, channels);
  if (cur.channels != channels) cur = convert_channels(cur, channels);
  if (flip) cur = flip_horizontal(cur);
  return cur;
}

void apply_transform(const Image& img, const TransformOptions& opt, int channels, bool flip,
                     float* out) {
  check_channels(channels);
  if (opt.image_size < 0)
    throw std::invalid_argument("transform: image_size must be >= 0, got " +
                                std::to_string(opt.image_size));
  const Image cur = geometry(img, opt, channels);
  to_chw_float(cur, flip, out);
  if (cur.channels == 1 && channels == 3) {
    // Gray -> RGB: the other two planes are copies of the first.
    const size_t plane = size_t(cur.width) * cur.height;
    std::copy(out, out + plane, out + plane);
    std::copy(out, out + plane, out + 2 * plane);
  }
}

}  // namespace gantry::data

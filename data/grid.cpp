// Image grids (see grid.h).
#include "gantry/data/grid.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace gantry::data {

namespace {
// torchvision: clamp to the range, shift and scale to [0, 1], then floor(v * 255 + 0.5)
// clamped to [0, 255].
inline uint8_t to_byte(float x, float lo, float hi, float scale) {
  if (!(x == x)) return 0;  // NaN
  const float v = (std::clamp(x, lo, hi) - lo) * scale;
  const float b = std::floor(v * 255.f + 0.5f);
  return static_cast<uint8_t>(std::clamp(b, 0.f, 255.f));
}

void check_range(float lo, float hi, const char* op) {
  if (!(hi > lo))
    throw std::invalid_argument(std::string(op) + ": value range [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + "] is empty");
}
}  // namespace

Image make_grid(const Tensor& images, int nrow, int padding, float pad_value, float lo, float hi) {
  check_range(lo, hi, "make_grid");
  if (!images.defined() || images.dim() != 4)
    throw std::invalid_argument("make_grid: expected a [N, C, H, W] tensor, got " +
                                (images.defined() ? shape_str(images.shape()) : std::string("undefined")));
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  if (n <= 0 || h <= 0 || w <= 0 || (c != 1 && c != 3))
    throw std::invalid_argument("make_grid: " + shape_str(images.shape()) +
                                ": need N >= 1 images of 1 or 3 channels");
  if (nrow <= 0 || padding < 0)
    throw std::invalid_argument("make_grid: nrow must be > 0 and padding >= 0 (got " +
                                std::to_string(nrow) + ", " + std::to_string(padding) + ")");
  if (n == 1) return tensor_to_image(images, lo, hi);

  const Tensor host = images.is_cuda() ? images.cpu() : images;
  const float* src = host.data();
  const float scale = 1.f / (hi - lo);
  const int64_t cols = std::min<int64_t>(nrow, n);
  const int64_t rows = (n + cols - 1) / cols;
  const int64_t cell_h = h + padding, cell_w = w + padding;
  const int gw = static_cast<int>(cols * cell_w + padding);
  const int gh = static_cast<int>(rows * cell_h + padding);
  const uint8_t pad = to_byte(pad_value, 0.f, 1.f, 1.f);
  Image grid(gw, gh, static_cast<int>(c), pad);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t oy = (k / cols) * cell_h + padding, ox = (k % cols) * cell_w + padding;
    for (int64_t ch = 0; ch < c; ++ch) {
      const float* plane = src + (k * c + ch) * h * w;
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
          grid.pixels[((oy + y) * gw + ox + x) * c + ch] = to_byte(plane[y * w + x], lo, hi, scale);
    }
  }
  return grid;
}

Image tensor_to_image(const Tensor& image, float lo, float hi) {
  check_range(lo, hi, "tensor_to_image");
  if (!image.defined() || !(image.dim() == 3 || (image.dim() == 4 && image.size(0) == 1)))
    throw std::invalid_argument("tensor_to_image: expected [C, H, W] or [1, C, H, W], got " +
                                (image.defined() ? shape_str(image.shape()) : std::string("undefined")));
  const int64_t c = image.size(-3), h = image.size(-2), w = image.size(-1);
  if (c != 1 && c != 3)
    throw std::invalid_argument("tensor_to_image: " + shape_str(image.shape()) +
                                ": need 1 or 3 channels");
  const Tensor host = image.is_cuda() ? image.cpu() : image;
  const float* src = host.data();
  const float scale = 1.f / (hi - lo);
  Image out(static_cast<int>(w), static_cast<int>(h), static_cast<int>(c));
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t i = 0; i < h * w; ++i) out.pixels[i * c + ch] = to_byte(src[ch * h * w + i], lo, hi, scale);
  return out;
}

void save_png(const std::string& path, const Image& img) { write_file_atomic(path, encode_png(img)); }

}  // namespace gantry::data

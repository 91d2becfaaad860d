#include "gantry/data/postprocess.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace gantry::data {

namespace {

uint8_t to_byte(double v) {
  if (!(v > 0)) return 0;  // also NaN
  if (v >= 255) return 255;
  return static_cast<uint8_t>(std::floor(v + 0.5));
}

void check(const Image& img, const char* op) {
  if (img.empty() || img.width < 1 || img.height < 1 || img.channels < 1)
    throw std::invalid_argument(std::string(op) + ": empty image");
}

// Keys' cubic convolution kernel with a = -0.5.
double keys(double x) {
  const double a = -0.5;
  x = std::abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

int clampi(int v, int lo, int hi) { return std::min(std::max(v, lo), hi); }

}  // namespace

Image upscale_bicubic(const Image& img, int f) {
  check(img, "upscale_bicubic");
  if (f < 1 || f > 16) throw std::invalid_argument("upscale_bicubic: factor " + std::to_string(f) + " must be in [1, 16]");
  const int W = img.width, H = img.height, C = img.channels, OW = W * f, OH = H * f;
  // Taps and weights of one output coordinate (the same for rows and columns).
  auto taps = [f](int o, int n, int idx[4], double w[4]) {
    const double src = (o + 0.5) / f - 0.5;
    const int base = static_cast<int>(std::floor(src)) - 1;
    for (int t = 0; t < 4; ++t) {
      idx[t] = clampi(base + t, 0, n - 1);
      w[t] = keys(src - (base + t));
    }
  };
  std::vector<double> tmp(static_cast<size_t>(H) * OW * C);  // horizontal pass, unrounded
  for (int x = 0; x < OW; ++x) {
    int idx[4];
    double w[4];
    taps(x, W, idx, w);
    for (int y = 0; y < H; ++y)
      for (int c = 0; c < C; ++c) {
        double acc = 0;
        for (int t = 0; t < 4; ++t) acc += w[t] * img.at(idx[t], y, c);
        tmp[(static_cast<size_t>(y) * OW + x) * C + c] = acc;
      }
  }
  Image out(OW, OH, C);
  for (int y = 0; y < OH; ++y) {
    int idx[4];
    double w[4];
    taps(y, H, idx, w);
    for (int x = 0; x < OW; ++x)
      for (int c = 0; c < C; ++c) {
        double acc = 0;
        for (int t = 0; t < 4; ++t) acc += w[t] * tmp[(static_cast<size_t>(idx[t]) * OW + x) * C + c];
        out.at(x, y, c) = to_byte(acc);
      }
  }
  return out;
}

Image median_blur(const Image& img, int k) {
  check(img, "median_blur");
  if (k < 1 || k % 2 == 0 || k > 31)
    throw std::invalid_argument("median_blur: window " + std::to_string(k) + " must be odd and in [1, 31] (e.g. 3)");
  const int W = img.width, H = img.height, C = img.channels, r = k / 2;
  Image out(W, H, C);
  std::vector<uint8_t> win(static_cast<size_t>(k * k));
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < C; ++c) {
        size_t n = 0;
        for (int dy = -r; dy <= r; ++dy)
          for (int dx = -r; dx <= r; ++dx) win[n++] = img.at(clampi(x + dx, 0, W - 1), clampi(y + dy, 0, H - 1), c);
        std::nth_element(win.begin(), win.begin() + n / 2, win.begin() + n);
        out.at(x, y, c) = win[n / 2];
      }
  return out;
}

Image sharpen(const Image& img) {
  check(img, "sharpen");
  const int W = img.width, H = img.height, C = img.channels;
  Image out(W, H, C);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < C; ++c) {
        int ring = 0;
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx)
            if (dx || dy) ring += img.at(clampi(x + dx, 0, W - 1), clampi(y + dy, 0, H - 1), c);
        out.at(x, y, c) = to_byte((32.0 * img.at(x, y, c) - 2.0 * ring) / 16.0);
      }
  return out;
}

}  // namespace gantry::data

// Post-processing (data/postprocess.h) on small images with hand-computed pixel values.
#include <catch2/catch.hpp>

#include "gantry/data/postprocess.h"

using namespace gantry::data;

namespace {
Image gray(int w, int h, std::vector<uint8_t> px) {
  Image img(w, h, 1);
  img.pixels = std::move(px);
  return img;
}
}  // namespace

TEST_CASE("upscale_bicubic: constant stays, a step gets the Keys (a = -0.5) overshoot") {
  Image flat(3, 2, 3, 77);
  Image up = upscale_bicubic(flat, 2);
  REQUIRE(up.width == 6);
  REQUIRE(up.height == 4);
  for (uint8_t v : up.pixels) CHECK(v == 77);

  // Row [0, 0, 100, 100], factor 2. Output x samples the source at s = (x + 0.5)/2 - 0.5 from
  // taps floor(s)-1 .. floor(s)+2 (clamped), Keys weights w(0.25) = 0.8671875, w(0.75) =
  // 0.2265625, w(1.25) = -0.0703125, w(1.75) = -0.0234375:
  //   x=2 s=0.75: taps [0,0,0,100], 100 w(1.25) < 0          -> 0
  //   x=3 s=1.25: taps [0,0,100,100], 100 (w(.75) + w(1.75)) -> 20.3125 -> 20
  //   x=4 s=1.75: 100 (w(.25) + w(1.25))                      -> 79.6875 -> 80
  //   x=5 s=2.25: taps [0,100,100,100], 100 (1 - w(1.25))     -> 107.03 -> 107 (overshoot)
  //   x=6 s=2.75: 100 (1 - w(1.75))                            -> 102.34 -> 102
  Image step = gray(4, 1, {0, 0, 100, 100});
  Image s2 = upscale_bicubic(step, 2);
  REQUIRE(s2.width == 8);
  REQUIRE(s2.height == 2);
  std::vector<uint8_t> row(s2.pixels.begin(), s2.pixels.begin() + 8);
  CHECK(row == std::vector<uint8_t>{0, 0, 0, 20, 80, 107, 102, 100});
  // Rows are the same (height 1 replicates).
  CHECK(std::vector<uint8_t>(s2.pixels.begin() + 8, s2.pixels.end()) == row);
  // A linear ramp in the interior is reproduced exactly: [0, 40, 80, 120, 160], s = 1.75 -> 70.
  Image ramp = gray(5, 1, {0, 40, 80, 120, 160});
  CHECK(upscale_bicubic(ramp, 2).pixels[4] == 70);
  CHECK(upscale_bicubic(ramp, 2).pixels[5] == 90);
  CHECK_THROWS(upscale_bicubic(ramp, 0));
}

TEST_CASE("median_blur: removes salt noise, keeps edges, replicates borders") {
  Image img(5, 5, 1, 10);
  img.at(2, 2, 0) = 255;  // an isolated hot pixel
  img.at(0, 0, 0) = 0;    // a cold corner pixel
  Image m = median_blur(img, 3);
  for (uint8_t v : m.pixels) CHECK(v == 10);
  // A vertical edge survives: columns [0 0 200 200].
  Image edge = gray(4, 3, {0, 0, 200, 200, 0, 0, 200, 200, 0, 0, 200, 200});
  CHECK(median_blur(edge, 3).pixels == edge.pixels);
  // 3 channels are filtered separately.
  Image rgb(3, 3, 3, 0);
  rgb.at(1, 1, 1) = 99;
  for (uint8_t v : median_blur(rgb, 3).pixels) CHECK(v == 0);
  CHECK_THROWS(median_blur(img, 2));
}

TEST_CASE("sharpen: PIL's SHARPEN kernel (32 centre, -2 ring, / 16)") {
  Image flat(3, 3, 1, 123);
  for (uint8_t v : sharpen(flat).pixels) CHECK(v == 123);
  // A single bright pixel 160 on 80: centre (32*160 - 2*8*80) / 16 = 240; its neighbours
  // (32*80 - 2*(7*80 + 160)) / 16 = 70.
  Image dot(3, 3, 1, 80);
  dot.at(1, 1, 0) = 160;
  Image s = sharpen(dot);
  CHECK(s.at(1, 1, 0) == 240);
  CHECK(s.at(0, 0, 0) == 70);
  CHECK(s.at(2, 1, 0) == 70);
  // Clamped at 255 and 0.
  dot.at(1, 1, 0) = 250;
  CHECK(sharpen(dot).at(1, 1, 0) == 255);
  Image dark(3, 3, 1, 10);
  dark.at(1, 1, 0) = 200;
  CHECK(sharpen(dark).at(0, 0, 0) == 0);
}

// Images, transforms and grids: codecs round-trip exactly, filters behave, transforms match
// torchvision's arithmetic, grids match torchvision's layout.
#include <catch2/catch.hpp>

#include <cmath>

#include "gantry/core/tensor.h"
#include "gantry/data/grid.h"
#include "gantry/data/image.h"
#include "gantry/data/transforms.h"
#include "test_data_util.h"

using namespace gantry;
using namespace gantry::data;
using testdata::fresh_dir;
using testdata::pattern;

TEST_CASE("lossless codecs round-trip exactly (PNG, BMP, TGA)", "[data][image]") {
  const auto dir = fresh_dir("codecs");
  for (int c : {1, 3}) {
    const Image img = pattern(13, 7, c, c);
    for (const char* ext : {".png", ".bmp", ".tga"}) {
      const std::string path = (dir / ("img" + std::to_string(c) + ext)).string();
      write_image(path, img);
      const Image back = load_image(path);
      INFO(path);
      REQUIRE(back.width == 13);
      REQUIRE(back.height == 7);
      if (c == 1 && std::string(ext) == ".bmp") {
        // stb_image_write stores gray BMPs as 24-bit: three equal channels come back.
        REQUIRE(back.channels == 3);
        CHECK(convert_channels(back, 1).pixels == img.pixels);
        continue;
      }
      REQUIRE(back.channels == c);
      CHECK(back.pixels == img.pixels);
    }
  }
}

TEST_CASE("alpha is dropped unless kept; gray+alpha becomes gray", "[data][image]") {
  const auto dir = fresh_dir("alpha");
  const Image rgba = pattern(5, 4, 4);
  write_image((dir / "a.png").string(), rgba);
  const Image rgb = load_image((dir / "a.png").string());
  REQUIRE(rgb.channels == 3);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 5; ++x)
      for (int c = 0; c < 3; ++c) CHECK(rgb.at(x, y, c) == rgba.at(x, y, c));
  CHECK(load_image((dir / "a.png").string(), true).pixels == rgba.pixels);

  const Image ga = pattern(3, 3, 2);
  write_image((dir / "ga.png").string(), ga);
  const Image g = load_image((dir / "ga.png").string());
  REQUIRE(g.channels == 1);
  CHECK(g.at(2, 1, 0) == ga.at(2, 1, 0));
}

TEST_CASE("JPEG round-trips closely and GIF's first frame decodes", "[data][image]") {
  const auto dir = fresh_dir("jpeg");
  // A smooth image: JPEG at quality 100 keeps it within a few levels.
  const Image img = testdata::gradient(32, 24, 3);
  write_image((dir / "a.JPG").string(), img, 100);
  const Image back = load_image((dir / "a.JPG").string());
  REQUIRE(back.channels == 3);
  int worst = 0;
  for (size_t i = 0; i < img.pixels.size(); ++i)
    worst = std::max(worst, std::abs(int(img.pixels[i]) - int(back.pixels[i])));
  CHECK(worst <= 6);

  testdata::write_bytes(dir / "one.gif", testdata::tiny_gif());
  const Image gif = load_image((dir / "one.gif").string());
  REQUIRE(gif.width == 1);
  REQUIRE(gif.height == 1);
  REQUIRE(gif.channels == 3);
  CHECK(gif.pixels == std::vector<uint8_t>{10, 20, 30});
}

TEST_CASE("bad image files: clear errors naming the file", "[data][image][errors]") {
  const auto dir = fresh_dir("badimg");
  const std::string missing = (dir / "nope.png").string();
  CHECK_THROWS_WITH(load_image(missing), Catch::Contains("nope.png"));

  testdata::write_bytes(dir / "zero.png", {});
  CHECK_THROWS_WITH(load_image((dir / "zero.png").string()),
                    Catch::Contains("zero.png") && Catch::Contains("zero-byte"));
  CHECK(check_image_file((dir / "zero.png").string()) == "zero-byte file");

  testdata::write_text(dir / "text.png", "this is not a picture\n");
  CHECK_THROWS_WITH(load_image((dir / "text.png").string()),
                    Catch::Contains("text.png") && Catch::Contains("not a readable image"));
  CHECK_THAT(check_image_file((dir / "text.png").string()), Catch::Contains("not a readable image"));

  // Truncated PNG and JPEG: the header still parses, the tail check catches them.
  const auto png = encode_png(pattern(40, 40, 3));
  testdata::write_bytes(dir / "trunc.png",
                        std::vector<uint8_t>(png.begin(), png.begin() + png.size() / 2));
  CHECK_THAT(check_image_file((dir / "trunc.png").string()), Catch::Contains("truncated PNG"));
  CHECK_THROWS_WITH(load_image((dir / "trunc.png").string()), Catch::Contains("trunc.png"));
  const auto jpg = encode_jpeg(pattern(40, 40, 3), 90);
  testdata::write_bytes(dir / "trunc.jpg",
                        std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() * 2 / 3));
  CHECK_THAT(check_image_file((dir / "trunc.jpg").string()), Catch::Contains("truncated JPEG"));
  const auto bmp = encode_bmp(pattern(40, 40, 3));
  testdata::write_bytes(dir / "trunc.bmp",
                        std::vector<uint8_t>(bmp.begin(), bmp.begin() + bmp.size() / 2));
  CHECK_THAT(check_image_file((dir / "trunc.bmp").string()), Catch::Contains("truncated BMP"));

  // Intact files pass, and report what they hold.
  testdata::write_bytes(dir / "ok.png", png);
  ImageInfo info;
  CHECK(check_image_file((dir / "ok.png").string(), &info).empty());
  CHECK(info.width == 40);
  CHECK(info.channels == 3);
  testdata::write_bytes(dir / "ok.jpg", jpg);
  CHECK(check_image_file((dir / "ok.jpg").string()).empty());
  testdata::write_bytes(dir / "ok.bmp", bmp);
  CHECK(check_image_file((dir / "ok.bmp").string()).empty());
}

TEST_CASE("image extensions are matched case-insensitively", "[data][image]") {
  for (const char* f : {"a.png", "b.JPG", "c.jpeg", "d.Bmp", "e.tga", "f.GIF", "g.WebP"})
    CHECK(has_image_extension(f));
  for (const char* f : {"a.txt", "b.webpx", "png", "c.png.bak"}) CHECK_FALSE(has_image_extension(f));
}

TEST_CASE("WebP: lossless round trips, lossy with alpha, truncation, bad headers", "[data][image][webp]") {
  const auto dir = fresh_dir("webp");
  if (!webp_supported()) {  // a build without libwebp names what is missing
    testdata::write_bytes(dir / "x.webp", {'R', 'I', 'F', 'F', 4, 0, 0, 0, 'W', 'E', 'B', 'P'});
    CHECK_THROWS_WITH(load_image((dir / "x.webp").string()), Catch::Contains("x.webp") && Catch::Contains("libwebp"));
    CHECK_THAT(check_image_file((dir / "x.webp").string()), Catch::Contains("libwebp"));
    return;
  }
  // Lossless: RGB exact; gray comes back as three equal channels; RGBA exact with keep_alpha.
  const Image rgb = pattern(13, 7, 3, 1);
  write_image((dir / "rgb.webp").string(), rgb);
  Image back = load_image((dir / "rgb.webp").string());
  REQUIRE(back.channels == 3);
  REQUIRE(back.width == 13);
  CHECK(back.pixels == rgb.pixels);
  const Image gray = pattern(9, 5, 1, 2);
  write_image((dir / "gray.webp").string(), gray);
  back = load_image((dir / "gray.webp").string());
  REQUIRE(back.channels == 3);
  CHECK(convert_channels(back, 1).pixels == gray.pixels);
  const Image rgba = pattern(6, 6, 4, 3);
  testdata::write_bytes(dir / "rgba.webp", encode_webp(rgba));
  CHECK(load_image((dir / "rgba.webp").string(), true).pixels == rgba.pixels);
  back = load_image((dir / "rgba.webp").string());
  REQUIRE(back.channels == 3);
  CHECK(back.at(4, 2, 1) == rgba.at(4, 2, 1));
  ImageInfo info;
  CHECK(check_image_file((dir / "rgba.webp").string(), &info).empty());
  CHECK(info.width == 6);
  CHECK(info.channels == 4);

  // Lossy with alpha (VP8X + ALPH + VP8 chunks): close, not exact; a smooth image.
  const Image smooth = testdata::gradient(64, 48, 4);
  const auto lossy = encode_webp(smooth, 90);
  testdata::write_bytes(dir / "lossy.webp", lossy);
  CHECK(check_image_file((dir / "lossy.webp").string(), &info).empty());
  CHECK(info.channels == 4);
  const Image got = load_image((dir / "lossy.webp").string(), true);
  REQUIRE(got.pixels.size() == smooth.pixels.size());
  double err = 0;
  for (size_t i = 0; i < got.pixels.size(); ++i) err += std::abs(int(got.pixels[i]) - int(smooth.pixels[i]));
  CHECK(err / double(got.pixels.size()) < 4.0);  // mean absolute error in 8-bit levels
  CHECK_THROWS_AS(encode_webp(smooth, 101), std::invalid_argument);
  // write_image's webp_quality: the lossy encoder's bytes (0, the default, is lossless: above).
  write_image((dir / "lossy_w.webp").string(), smooth, 95, 90);
  CHECK(testdata::read_bytes(dir / "lossy_w.webp") == lossy);

  // Truncated: the RIFF size says so; decoding names the file.
  testdata::write_bytes(dir / "cut.webp", std::vector<uint8_t>(lossy.begin(), lossy.begin() + lossy.size() / 2));
  CHECK_THAT(check_image_file((dir / "cut.webp").string()), Catch::Contains("truncated WebP"));
  CHECK_THROWS_WITH(load_image((dir / "cut.webp").string()), Catch::Contains("cut.webp") && Catch::Contains("WebP"));
  // A RIFF/WEBP header over garbage.
  std::vector<uint8_t> junk = {'R', 'I', 'F', 'F', 12, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', 'X', 1, 2, 3, 4};
  testdata::write_bytes(dir / "junk.webp", junk);
  CHECK_THAT(check_image_file((dir / "junk.webp").string()), Catch::Contains("not a readable WebP"));
  CHECK_THROWS_WITH(load_image((dir / "junk.webp").string()), Catch::Contains("junk.webp"));
}

TEST_CASE("image_extension_writable: what write_image takes in this build", "[data][image]") {
  for (const char* p : {"a.png", "b/c.PNG", "d.jpg", "e.JPEG", "f.bmp", "g.tga"}) CHECK(image_extension_writable(p));
  for (const char* p : {"a.gif", "b", "c.png.tmp", "d.jpg/", ".png"}) CHECK_FALSE(image_extension_writable(p));
  CHECK(image_extension_writable("w.webp") == webp_supported());
  CHECK((writable_image_extensions().find(".webp") != std::string::npos) == webp_supported());
  const auto dir = fresh_dir("writable");
  CHECK_THROWS_WITH(write_image((dir / "x.gif").string(), Image(2, 2, 3, 0)),
                    Catch::Contains("x.gif") && Catch::Contains("unknown extension"));
  CHECK_FALSE(std::filesystem::exists(dir / "x.gif"));
}

TEST_CASE("resize: filters keep constants, box averages exactly", "[data][resize]") {
  const Image flat(37, 23, 3, 77);
  for (auto f : {ResizeFilter::Auto, ResizeFilter::Box, ResizeFilter::Triangle,
                 ResizeFilter::CatmullRom, ResizeFilter::Mitchell}) {
    for (auto [w, h] : {std::pair{11, 9}, std::pair{80, 50}}) {
      const Image r = resize(flat, w, h, f);
      REQUIRE(r.width == w);
      REQUIRE(r.height == h);
      for (uint8_t v : r.pixels) REQUIRE(v == 77);
    }
  }
  // 4x2 -> 2x1 with a box filter: each output is the mean of a 2x2 block.
  Image img(4, 2, 1);
  img.pixels = {10, 20, 100, 200, 30, 40, 0, 100};
  const Image r = resize(img, 2, 1, ResizeFilter::Box);
  CHECK(r.pixels == std::vector<uint8_t>{25, 100});
  // Bicubic enlargement of a ramp stays monotonic and keeps the ends.
  Image ramp(8, 1, 1);
  for (int x = 0; x < 8; ++x) ramp.pixels[x] = uint8_t(x * 30);
  const Image up = resize(ramp, 32, 1);
  for (int x = 1; x < 32; ++x) CHECK(up.pixels[x] >= up.pixels[x - 1]);
  CHECK(up.pixels.front() <= 5);
  CHECK(up.pixels.back() >= 205);
}

TEST_CASE("resize shorter side and center crop follow torchvision", "[data][resize]") {
  // CelebA-sized 178x218 -> shorter side 64: 64 x int(64 * 218 / 178) = 64 x 78.
  Image r = resize_shorter_side(Image(178, 218, 3), 64);
  CHECK(r.width == 64);
  CHECK(r.height == 78);
  r = resize_shorter_side(Image(218, 178, 1), 64);
  CHECK(r.width == 78);
  CHECK(r.height == 64);
  r = resize_shorter_side(Image(32, 32, 3), 64);
  CHECK(r.width == 64);
  CHECK(r.height == 64);

  // Center crop offsets: round((W - w) / 2) with round-half-even, as Python's round().
  Image img(67, 4, 1);
  for (int x = 0; x < 67; ++x)
    for (int y = 0; y < 4; ++y) img.at(x, y, 0) = uint8_t(x);
  CHECK(center_crop(img, 64, 4).at(0, 0, 0) == 2);  // (67-64)/2 = 1.5 -> 2
  Image img65(65, 2, 1);
  for (int x = 0; x < 65; ++x) img65.at(x, 0, 0) = img65.at(x, 1, 0) = uint8_t(x);
  CHECK(center_crop(img65, 64, 2).at(0, 0, 0) == 0);  // 0.5 -> 0
  CHECK(center_crop(Image(78, 64, 1), 64, 64).width == 64);
  CHECK_THROWS_AS(center_crop(Image(10, 10, 1), 20, 20), std::invalid_argument);
}

TEST_CASE("channel conversion uses PIL's luma and drops alpha", "[data][transform]") {
  Image rgb(3, 1, 3);
  rgb.pixels = {255, 0, 0, 0, 255, 0, 0, 0, 255};
  CHECK(convert_channels(rgb, 1).pixels == std::vector<uint8_t>{76, 150, 29});
  Image gray(2, 1, 1);
  gray.pixels = {5, 250};
  CHECK(convert_channels(gray, 3).pixels == std::vector<uint8_t>{5, 5, 5, 250, 250, 250});
  Image rgba(1, 1, 4);
  rgba.pixels = {1, 2, 3, 4};
  CHECK(convert_channels(rgba, 3).pixels == std::vector<uint8_t>{1, 2, 3});
  CHECK_THROWS_AS(convert_channels(rgb, 2), std::invalid_argument);
}

TEST_CASE("transform: [-1, 1] floats, CHW, flip, channel change", "[data][transform]") {
  // 2x2 RGB at its own size: no resize, just the float conversion.
  Image img(2, 2, 3);
  img.pixels = {0, 128, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90};
  TransformOptions opt;
  opt.image_size = 2;
  std::vector<float> out(12);
  apply_transform(img, opt, 3, false, out.data());
  auto v = [](int x) { return (float(x) / 255.0f - 0.5f) / 0.5f; };
  CHECK(out[0] == -1.0f);                 // R(0,0)
  CHECK(out[1] == v(10));                 // R(1,0)
  CHECK(out[4] == v(128));                // G(0,0)
  CHECK(out[8] == 1.0f);                  // B(0,0)
  CHECK(out[11] == v(90));                // B(1,1)
  apply_transform(img, opt, 3, true, out.data());
  CHECK(out[0] == v(10));                 // mirrored row
  CHECK(out[1] == -1.0f);
  // Gray output from RGB, and RGB output from gray.
  std::vector<float> g(4);
  apply_transform(img, opt, 1, false, g.data());
  CHECK(g[0] == v(convert_channels(img, 1).pixels[0]));
  Image gray(2, 2, 1);
  gray.pixels = {0, 51, 102, 255};
  apply_transform(gray, opt, 3, false, out.data());
  for (int c = 0; c < 3; ++c) {
    CHECK(out[c * 4 + 0] == -1.0f);
    CHECK(out[c * 4 + 3] == 1.0f);
  }
  // Resize + crop to S x S from a CelebA-like size; a flat image stays flat.
  opt.image_size = 16;
  std::vector<float> big(3 * 16 * 16);
  apply_transform(Image(45, 55, 4, 255), opt, 3, false, big.data());
  for (float x : big) REQUIRE(x == 1.0f);
  // transform_image agrees with apply_transform.
  const Image p = pattern(30, 20, 3);
  const Image t = transform_image(p, opt, 3, true);
  apply_transform(p, opt, 3, true, big.data());
  CHECK(t.width == 16);
  CHECK(big[5] == v(t.at(5, 0, 0)));
  CHECK(big[2 * 256 + 3 * 16 + 7] == v(t.at(7, 3, 2)));
}

TEST_CASE("make_grid lays out and scales like torchvision", "[data][grid]") {
  // Three 2x2 gray images with values -1, 0 and 1; nrow 2, padding 1.
  Tensor t = Tensor::empty({3, 1, 2, 2});
  float* d = t.data();
  for (int i = 0; i < 4; ++i) {
    d[i] = -1.f;
    d[4 + i] = 0.f;
    d[8 + i] = 1.f;
  }
  const Image g = make_grid(t, 2, 1, 1.0f);
  REQUIRE(g.width == 2 * 3 + 1);
  REQUIRE(g.height == 2 * 3 + 1);
  REQUIRE(g.channels == 1);
  CHECK(g.at(0, 0, 0) == 255);  // padding, pad_value 1 = white
  CHECK(g.at(1, 1, 0) == 0);    // image 0 (value -1)
  CHECK(g.at(4, 2, 0) == 128);  // image 1 (value 0 -> 127.5 -> 128)
  CHECK(g.at(3, 1, 0) == 255);  // the padding column between them
  CHECK(g.at(1, 4, 0) == 255);  // image 2 (value 1), second row
  CHECK(g.at(4, 4, 0) == 255);  // empty cell stays pad
  // Out-of-range values clamp; NaN is black.
  Tensor s = Tensor::from_vector({-3.f, 3.f, std::nanf(""), 0.5f}, {1, 1, 2, 2});
  const Image one = make_grid(s);  // a single image: no padding
  CHECK(one.width == 2);
  CHECK(one.pixels == std::vector<uint8_t>{0, 255, 0, 191});
  CHECK_THROWS_AS(make_grid(Tensor::zeros({2, 2, 4, 4})), std::invalid_argument);
}

TEST_CASE("save_png writes atomically and reads back", "[data][grid]") {
  const auto dir = fresh_dir("grid");
  Tensor t = Tensor::zeros({4, 3, 8, 8});
  const Image g = make_grid(t, 2);
  const std::string path = (dir / "samples.png").string();
  save_png(path, g);
  save_png(path, g);  // overwrite in place
  const Image back = load_image(path);
  CHECK(back.width == g.width);
  CHECK(back.pixels == g.pixels);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  CHECK(files == 1);  // no temporary left behind
  CHECK_THROWS_WITH(save_png((dir / "no" / "such" / "dir.png").string(), g),
                    Catch::Contains("dir.png"));
}

#pragma once
// Helpers shared by the data tests: a fresh temporary folder per test and tiny synthetic files.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "gantry/data/image.h"

namespace testdata {

namespace fs = std::filesystem;

// A new empty folder under $GANTRY_TEST_TMP (CTest sets it) or the system temp folder.
inline fs::path fresh_dir(const std::string& tag) {
  static std::atomic<int> counter{0};
  const char* env = std::getenv("GANTRY_TEST_TMP");
  fs::path base = env && *env ? fs::path(env) : fs::temp_directory_path();
  fs::path dir = base / ("gantry_data_" + tag + "_" + std::to_string(::getpid()) + "_" +
                         std::to_string(counter++));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

inline void write_bytes(const fs::path& p, const std::vector<uint8_t>& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

inline void write_text(const fs::path& p, const std::string& text) {
  write_bytes(p, std::vector<uint8_t>(text.begin(), text.end()));
}

inline std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// A w x h image with a recognizable pattern: value = (x * 7 + y * 13 + c * 50 + seed) mod 256.
inline gantry::data::Image pattern(int w, int h, int c, int seed = 0) {
  gantry::data::Image img(w, h, c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int ch = 0; ch < c; ++ch) img.at(x, y, ch) = uint8_t((x * 7 + y * 13 + ch * 50 + seed) & 255);
  return img;
}

// A smooth w x h image (what lossy codecs keep within a few levels): R = 256 x / w,
// G = 240 y / h, B = 128, and alpha (c = 4) = 255 - 64 x / w.
inline gantry::data::Image gradient(int w, int h, int c) {
  gantry::data::Image img(w, h, c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      img.at(x, y, 0) = uint8_t(256 * x / w);
      if (c >= 3) {
        img.at(x, y, 1) = uint8_t(240 * y / h);
        img.at(x, y, 2) = 128;
      }
      if (c == 4) img.at(x, y, 3) = uint8_t(255 - 64 * x / w);
    }
  return img;
}

// A 1x1 GIF whose only pixel is (10, 20, 30) (global color table of 2 entries, LZW codes
// clear, 0, end).
inline std::vector<uint8_t> tiny_gif() {
  return {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, 10, 20, 30, 0, 0, 0,
          0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3B};
}

// Big-endian 32-bit.
inline void put_be32(std::vector<uint8_t>& v, uint32_t x) {
  v.push_back(uint8_t(x >> 24));
  v.push_back(uint8_t(x >> 16));
  v.push_back(uint8_t(x >> 8));
  v.push_back(uint8_t(x));
}

}  // namespace testdata

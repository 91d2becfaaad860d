#pragma once
// Images: decoding (PNG, JPEG, BMP, TGA, GIF first frame), encoding (PNG, JPEG, BMP, TGA),
// resizing with proper filters, and the small pixel operations the transforms are made of.
//
// Contract:
// - An Image is 8-bit, interleaved (HWC), row-major, tightly packed: pixel (x, y) channel c is
//   pixels[(y * width + x) * channels + c]. channels is 1 (gray), 2 (gray+alpha), 3 (RGB) or
//   4 (RGBA). Decoders return 1 or 3 channels unless asked to keep alpha.
// - Every function that fails throws std::runtime_error (bad data, I/O) or
//   std::invalid_argument (bad arguments) with a message that names the file when there is one.
// - All functions are thread-safe (the loader calls them from several worker threads).
// - stb_image / stb_image_write / stb_image_resize (Debian libstb-dev) do the work; their
//   implementations are compiled privately into image.cpp, so users never see stb.
#include <cstdint>
#include <string>
#include <vector>

namespace gantry::data {

struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;  // width * height * channels bytes, HWC

  Image() = default;
  // An image of the given size, every byte set to fill.
  Image(int width, int height, int channels, uint8_t fill = 0);

  bool empty() const { return pixels.empty(); }
  uint8_t& at(int x, int y, int c) { return pixels[(size_t(y) * width + x) * channels + c]; }
  uint8_t at(int x, int y, int c) const { return pixels[(size_t(y) * width + x) * channels + c]; }
};

// What a header check found: the stored size and channel count (before any conversion).
struct ImageInfo {
  int width = 0;
  int height = 0;
  int channels = 0;  // as stored: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
};

// True when the file name ends in an image extension gantry reads: .png .jpg .jpeg .bmp .tga
// .gif .webp (case-insensitive). A .webp in a build without libwebp is then a file that fails
// to decode with a message saying so, not one silently left out.
bool has_image_extension(const std::string& path);
// Whether this build decodes and encodes WebP (it was built with libwebp).
bool webp_supported();

// Reads a whole file; throws naming the file when it is missing or unreadable.
std::vector<uint8_t> read_file(const std::string& path);

// Decodes an image held in memory. `what` names it in error messages (usually the path).
// Gray and gray+alpha become 1 channel, RGB and RGBA become 3 (alpha is dropped, as PIL's
// convert("RGB") does), unless keep_alpha. 16-bit PNGs are reduced to 8 bits. The format is
// told by the bytes, not the name: PNG, JPEG, BMP, TGA, GIF through stb_image, WebP (lossy,
// lossless, with alpha; always color: 3 or 4 channels) through libwebp.
Image decode_image(const uint8_t* data, size_t size, const std::string& what,
                   bool keep_alpha = false);
// Reads and decodes a file (see decode_image).
Image load_image(const std::string& path, bool keep_alpha = false);

// Cheap validity check of a file without decoding the pixels: the header must parse (stbi_info)
// and, for PNG and JPEG, the file must end with its closing chunk/marker (IEND, EOI) and, for
// uncompressed BMP, hold all the rows its header promises, which catches truncated files.
// Returns an empty string when the file looks fine, else the reason ("zero-byte file",
// "truncated PNG: no IEND chunk", ...). Never throws for bad contents.
std::string check_image_file(const std::string& path, ImageInfo* info = nullptr);

// Encoders (PNG compressed with zlib). Images with 1-4 channels.
std::vector<uint8_t> encode_png(const Image& img);
// WebP through libwebp: lossless for lossy_quality 0, else lossy at that quality (1-100).
// Gray becomes RGB (WebP has no gray mode); alpha is kept.
std::vector<uint8_t> encode_webp(const Image& img, int lossy_quality = 0);
std::vector<uint8_t> encode_jpeg(const Image& img, int quality = 95);  // 1 or 3 channels
std::vector<uint8_t> encode_bmp(const Image& img);
std::vector<uint8_t> encode_tga(const Image& img);
// Writes an image choosing the format by extension (.png .jpg/.jpeg .bmp .tga .webp), atomically
// (see write_file_atomic). webp_quality 0 is lossless WebP, 1-100 lossy at that quality.
void write_image(const std::string& path, const Image& img, int jpeg_quality = 95,
                 int webp_quality = 0);
// Whether write_image can write `path` in this build: its extension is one of those above
// (case-insensitive), and .webp only where webp_supported().
bool image_extension_writable(const std::string& path);
// The extensions write_image takes in this build, for messages: ".png, .jpg, .jpeg, .bmp, .tga[, .webp]".
std::string writable_image_extensions();
// Writes bytes to `path` through a temporary file in the same folder that is flushed and then
// renamed over `path`, so readers never see a half-written file.
void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);

// Resampling filters (those of stb_image_resize).
enum class ResizeFilter {
  Auto,        // Triangle when shrinking, CatmullRom when enlarging (the default)
  Box,         // area average: exact for integer shrink factors
  Triangle,    // bilinear; widened when shrinking, so antialiased (as PIL/torchvision bilinear)
  CatmullRom,  // interpolating bicubic (a = -0.5)
  Mitchell,    // Mitchell-Netravali B = C = 1/3
};

// Resizes to new_width x new_height (same channel count). Values are filtered as stored
// (no sRGB linearization), as PIL and torchvision do. Edges clamp.
Image resize(const Image& img, int new_width, int new_height,
             ResizeFilter filter = ResizeFilter::Auto);
// Resizes so the shorter side is `size`, keeping the aspect ratio; the longer side becomes
// floor(size * long / short), as torchvision's Resize(int) does. A no-op copy when already so.
Image resize_shorter_side(const Image& img, int size, ResizeFilter filter = ResizeFilter::Auto);
// The centered width x height window. The offset is round((W - w) / 2) with round-half-even,
// as torchvision's CenterCrop computes it. Throws when the image is smaller than the window.
Image center_crop(const Image& img, int width, int height);
// Crops an arbitrary window (must lie inside the image).
Image crop(const Image& img, int x, int y, int width, int height);
// Mirror image (left-right).
Image flip_horizontal(const Image& img);
// Converts to 1 or 3 channels: RGB->gray uses ITU-R 601 luma with PIL's integer rounding
// (L = (19595 R + 38470 G + 7471 B + 32768) >> 16), gray->RGB replicates, alpha is dropped.
Image convert_channels(const Image& img, int channels);

}  // namespace gantry::data

// Image decoding, encoding and resampling on top of stb (see image.h for the contract).
//
// The stb implementations are compiled here, once, with STB*_STATIC so their symbols stay
// private to this file: the library does not need libstb.so, and a user program that has its
// own copy of stb cannot clash with ours.
#include "gantry/data/image.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

// Compress PNGs with zlib rather than stb's built-in deflate: smaller files, and faster.
static unsigned char* gantry_zlib_compress(unsigned char* data, int len, int* out_len, int quality);

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wtype-limits"
#endif
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_TGA
#define STBI_ONLY_GIF
#define STBI_FAILURE_USERMSG  // "Corrupt PNG" rather than "crc"
#include <stb/stb_image.h>
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBIW_ZLIB_COMPRESS gantry_zlib_compress
#include <stb/stb_image_write.h>
#define STB_IMAGE_RESIZE_STATIC
// stb_image_resize 0.97 asserts `total < 1.1f` on its own downsampling coefficients for some
// size ratios (hit by the loader tests shrinking ~20x30 images to 16x16) and then renormalizes
// them anyway; the assertion would abort Debug builds on valid input, so it is compiled out.
#define STBIR_ASSERT(x) ((void)0)
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb/stb_image_resize.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

static unsigned char* gantry_zlib_compress(unsigned char* data, int len, int* out_len,
                                           int quality) {
  // stb frees the result with STBIW_FREE (free), so the buffer must come from malloc.
  uLongf cap = compressBound(static_cast<uLong>(len));
  auto* out = static_cast<unsigned char*>(std::malloc(cap));
  if (!out) return nullptr;
  int level = std::clamp(quality, 1, 9);
  if (compress2(out, &cap, data, static_cast<uLong>(len), level) != Z_OK) {
    std::free(out);
    return nullptr;
  }
  *out_len = static_cast<int>(cap);
  return out;
}

namespace gantry::data {

namespace fs = std::filesystem;

Image::Image(int w, int h, int c, uint8_t fill) : width(w), height(h), channels(c) {
  if (w < 0 || h < 0 || c < 0 || c > 4)
    throw std::invalid_argument("Image: bad size " + std::to_string(w) + "x" + std::to_string(h) +
                                "x" + std::to_string(c) + " (channels must be 1..4)");
  pixels.assign(size_t(w) * h * c, fill);
}

#if defined(GANTRY_HAVE_WEBP)
#include <webp/decode.h>
#include <webp/encode.h>
#endif

// An Image holding a copy of a decoder's w x h x c pixels.
static Image image_from(const uint8_t* px, int w, int h, int c) {
  Image img;
  img.width = w;
  img.height = h;
  img.channels = c;
  img.pixels.assign(px, px + size_t(w) * h * c);
  return img;
}

static std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

static std::string extension_of(const std::string& path) {
  return lower(fs::path(path).extension().string());
}

bool has_image_extension(const std::string& path) {
  const std::string e = extension_of(path);
  return e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".bmp" || e == ".tga" || e == ".gif" ||
         e == ".webp";
}

bool webp_supported() {
#if defined(GANTRY_HAVE_WEBP)
  return true;
#else
  return false;
#endif
}

namespace {
// A WebP file: a RIFF container of form type "WEBP".
bool is_webp(const uint8_t* d, size_t n) {
  return n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0;
}

const char* formats_read() {
  return webp_supported() ? "PNG, JPEG, BMP, TGA, GIF and WebP" : "PNG, JPEG, BMP, TGA and GIF";
}

#if !defined(GANTRY_HAVE_WEBP)
[[noreturn]] void no_webp(const std::string& what) {
  throw std::runtime_error(what + ": a WebP image, and this gantry was built without libwebp "
                           "(scripts/install-deps.sh installs libwebp-dev; rebuild)");
}
#endif

#if defined(GANTRY_HAVE_WEBP)
// WebP is always color: RGB, or RGBA when it has alpha and keep_alpha asks for it.
Image decode_webp(const uint8_t* data, size_t size, const std::string& what, bool keep_alpha) {
  WebPBitstreamFeatures f;
  if (WebPGetFeatures(data, size, &f) != VP8_STATUS_OK || f.width <= 0 || f.height <= 0)
    throw std::runtime_error(what + ": not a readable WebP image (bad header)");
  const int channels = keep_alpha && f.has_alpha ? 4 : 3;
  int w = 0, h = 0;
  std::unique_ptr<uint8_t, void (*)(void*)> px(
      channels == 4 ? WebPDecodeRGBA(data, size, &w, &h) : WebPDecodeRGB(data, size, &w, &h), WebPFree);
  if (!px) throw std::runtime_error(what + ": corrupt or truncated WebP image");
  return image_from(px.get(), w, h, channels);
}
#endif
}  // namespace

std::vector<uint8_t> read_file(const std::string& path) {
  // Plain POSIX reads: one open, one fstat, one or two reads; the loader calls this per image.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  std::vector<uint8_t> buf;
  off_t size = ::lseek(fd, 0, SEEK_END);
  if (size < 0 || ::lseek(fd, 0, SEEK_SET) < 0) {
    int e = errno;
    ::close(fd);
    throw std::runtime_error("cannot read " + path + ": " + std::strerror(e));
  }
  buf.resize(static_cast<size_t>(size));
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::read(fd, buf.data() + done, buf.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      throw std::runtime_error("cannot read " + path + ": " +
                               (n == 0 ? std::string("file shrank while reading") : std::strerror(e)));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return buf;
}

Image decode_image(const uint8_t* data, size_t size, const std::string& what, bool keep_alpha) {
  if (size == 0) throw std::runtime_error(what + ": zero-byte file, not an image");
  if (size > size_t(INT32_MAX)) throw std::runtime_error(what + ": file too large (> 2 GiB)");
  if (is_webp(data, size)) {
#if defined(GANTRY_HAVE_WEBP)
    return decode_webp(data, size, what, keep_alpha);
#else
    no_webp(what);
#endif
  }
  int w = 0, h = 0, comp = 0;
  const int len = static_cast<int>(size);
  if (!stbi_info_from_memory(data, len, &w, &h, &comp))
    throw std::runtime_error(what + ": not a readable image (" + stbi_failure_reason() +
                             "); gantry reads " + formats_read());
  int want = comp;
  if (!keep_alpha) want = (comp <= 2) ? 1 : 3;
  int w2 = 0, h2 = 0, c2 = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> px(stbi_load_from_memory(data, len, &w2, &h2, &c2, want),
                                               stbi_image_free);
  if (!px)
    throw std::runtime_error(what + ": corrupt or truncated image (" + stbi_failure_reason() +
                             ")");
  return image_from(px.get(), w2, h2, want);
}

Image load_image(const std::string& path, bool keep_alpha) {
  std::vector<uint8_t> bytes = read_file(path);
  return decode_image(bytes.data(), bytes.size(), path, keep_alpha);
}

// ---- header check ---------------------------------------------------------------------------

namespace {
struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

// Reads up to n bytes ending at the end of the file.
std::vector<uint8_t> read_tail(FILE* f, long file_size, long n) {
  n = std::min(n, file_size);
  std::vector<uint8_t> tail(static_cast<size_t>(n));
  if (std::fseek(f, file_size - n, SEEK_SET) != 0) return {};
  if (std::fread(tail.data(), 1, tail.size(), f) != tail.size()) return {};
  return tail;
}

bool contains(const std::vector<uint8_t>& hay, const char* needle, size_t len) {
  // Compare as bytes: a plain char needle such as "\xFF" is negative where char is signed.
  const auto* n = reinterpret_cast<const uint8_t*>(needle);
  return std::search(hay.begin(), hay.end(), n, n + len) != hay.end();
}

uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
}  // namespace

std::string check_image_file(const std::string& path, ImageInfo* info) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return "not a regular file";
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) return std::string("cannot open: ") + std::strerror(errno);
  if (std::fseek(f.get(), 0, SEEK_END) != 0) return "cannot seek";
  const long size = std::ftell(f.get());
  if (size == 0) return "zero-byte file";
  std::rewind(f.get());
  uint8_t head[64] = {};
  const size_t nhead = std::fread(head, 1, sizeof head, f.get());
  std::rewind(f.get());
  if (is_webp(head, nhead)) {
#if defined(GANTRY_HAVE_WEBP)
    // The RIFF header says how long the file is; the first chunk's header gives the size.
    const uint64_t riff = uint64_t(le32(head + 4)) + 8;
    if (uint64_t(size) < riff)
      return "truncated WebP: " + std::to_string(size) + " bytes, RIFF header promises " + std::to_string(riff);
    // The chunks before the image data (VP8X, ICCP, ALPH) can be long: read the whole file,
    // which for WebP is small.
    std::vector<uint8_t> whole(static_cast<size_t>(size));
    if (std::fread(whole.data(), 1, whole.size(), f.get()) != whole.size()) return "cannot read";
    WebPBitstreamFeatures wf;
    if (WebPGetFeatures(whole.data(), whole.size(), &wf) != VP8_STATUS_OK) return "not a readable WebP image (bad header)";
    if (wf.width <= 0 || wf.height <= 0) return "image has zero width or height";
    if (info) *info = ImageInfo{wf.width, wf.height, wf.has_alpha ? 4 : 3};
    return {};
#else
    return "a WebP image, and this gantry was built without libwebp (install libwebp-dev, rebuild)";
#endif
  }
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_file(f.get(), &w, &h, &comp))
    return std::string("not a readable image (") + stbi_failure_reason() + ")";
  if (w <= 0 || h <= 0) return "image has zero width or height";
  if (info) *info = ImageInfo{w, h, comp};

  // Truncation checks: cheap (a tail read) and they catch the usual damage, an interrupted
  // download or copy, which stbi_info cannot see because it only reads the header.
  static const uint8_t kPngSig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (nhead >= 8 && std::memcmp(head, kPngSig, 8) == 0) {
    if (!contains(read_tail(f.get(), size, 64), "IEND", 4)) return "truncated PNG: no IEND chunk";
  } else if (nhead >= 2 && head[0] == 0xFF && head[1] == 0xD8) {
    // The EOI marker FF D9 ends the stream; some writers append padding, so look in the last
    // 4 KiB rather than at the last two bytes only.
    const std::vector<uint8_t> tail = read_tail(f.get(), size, 4096);
    if (!contains(tail, "\xFF\xD9", 2)) return "truncated JPEG: no end-of-image marker";
  } else if (nhead >= 54 && head[0] == 'B' && head[1] == 'M') {
    // Uncompressed BMP (BI_RGB): pixel data starts at bfOffBits and has |height| rows of
    // 4-byte-aligned width * bpp / 8 bytes.
    const uint32_t off = le32(head + 10), compression = le32(head + 30);
    const int bpp = head[28] | head[29] << 8;
    if (compression == 0 && bpp > 0) {
      const uint64_t row = (uint64_t(w) * bpp + 31) / 32 * 4;
      const uint64_t need = uint64_t(off) + row * uint64_t(h);
      if (uint64_t(size) < need)
        return "truncated BMP: " + std::to_string(size) + " bytes, header promises " +
               std::to_string(need);
    }
  }
  return {};
}

// ---- encoding ---------------------------------------------------------------------------------

namespace {
void append_bytes(void* ctx, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(ctx);
  const auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}

void check_encodable(const Image& img, const char* fmt) {
  if (img.width <= 0 || img.height <= 0 || img.channels < 1 || img.channels > 4 ||
      img.pixels.size() != size_t(img.width) * img.height * img.channels)
    throw std::invalid_argument(std::string("encode_") + fmt + ": bad image " +
                                std::to_string(img.width) + "x" + std::to_string(img.height) +
                                "x" + std::to_string(img.channels) + " with " +
                                std::to_string(img.pixels.size()) + " bytes");
}
}  // namespace

std::vector<uint8_t> encode_png(const Image& img) {
  check_encodable(img, "png");
  std::vector<uint8_t> out;
  if (!stbi_write_png_to_func(append_bytes, &out, img.width, img.height, img.channels,
                              img.pixels.data(), img.width * img.channels))
    throw std::runtime_error("encode_png: stb_image_write failed");
  return out;
}

std::vector<uint8_t> encode_jpeg(const Image& img, int quality) {
  check_encodable(img, "jpeg");
  std::vector<uint8_t> out;
  if (!stbi_write_jpg_to_func(append_bytes, &out, img.width, img.height, img.channels,
                              img.pixels.data(), std::clamp(quality, 1, 100)))
    throw std::runtime_error("encode_jpeg: stb_image_write failed");
  return out;
}

std::vector<uint8_t> encode_bmp(const Image& img) {
  check_encodable(img, "bmp");
  std::vector<uint8_t> out;
  if (!stbi_write_bmp_to_func(append_bytes, &out, img.width, img.height, img.channels,
                              img.pixels.data()))
    throw std::runtime_error("encode_bmp: stb_image_write failed");
  return out;
}

std::vector<uint8_t> encode_tga(const Image& img) {
  check_encodable(img, "tga");
  std::vector<uint8_t> out;
  // Uncompressed TGA: simplest for other readers. (stb's RLE variant is also readable.)
  if (!stbi_write_tga_to_func(append_bytes, &out, img.width, img.height, img.channels,
                              img.pixels.data()))
    throw std::runtime_error("encode_tga: stb_image_write failed");
  return out;
}

void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
  const fs::path target(path);
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  // A unique temporary name in the same folder (rename is atomic only within a filesystem).
  std::random_device rd;
  const std::string tmp = (dir / ("." + target.filename().string() + ".tmp-" +
                                  std::to_string(::getpid()) + "-" + std::to_string(rd())))
                              .string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    throw std::runtime_error("cannot write " + path + ": cannot create " + tmp + ": " +
                             std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw std::runtime_error("cannot write " + path + ": " + std::strerror(e));
    }
    done += static_cast<size_t>(n);
  }
  // fsync before rename: otherwise a crash can leave the new name pointing at an empty file.
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(e));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + path + ": rename failed: " + std::strerror(e));
  }
}

std::vector<uint8_t> encode_webp(const Image& img, int lossy_quality) {
  check_encodable(img, "webp");
  if (lossy_quality < 0 || lossy_quality > 100)
    throw std::invalid_argument("encode_webp: quality " + std::to_string(lossy_quality) +
                                " outside 0 (lossless) .. 100");
#if defined(GANTRY_HAVE_WEBP)
  // Gray (and gray+alpha) is widened to RGB(A): WebP has no gray mode.
  const bool alpha = img.channels == 2 || img.channels == 4;
  const int out_c = alpha ? 4 : 3;
  const int color = img.channels >= 3 ? 3 : 1;  // source channels holding color
  std::vector<uint8_t> px(size_t(img.width) * img.height * out_c);
  for (size_t p = 0; p < size_t(img.width) * img.height; ++p) {
    const uint8_t* src = img.pixels.data() + p * img.channels;
    for (int c = 0; c < 3; ++c) px[p * out_c + c] = src[color == 3 ? c : 0];
    if (alpha) px[p * out_c + 3] = src[img.channels - 1];
  }
  uint8_t* buf = nullptr;
  const int stride = img.width * out_c;
  size_t n = 0;
  if (lossy_quality == 0)
    n = alpha ? WebPEncodeLosslessRGBA(px.data(), img.width, img.height, stride, &buf)
              : WebPEncodeLosslessRGB(px.data(), img.width, img.height, stride, &buf);
  else
    n = alpha ? WebPEncodeRGBA(px.data(), img.width, img.height, stride, float(lossy_quality), &buf)
              : WebPEncodeRGB(px.data(), img.width, img.height, stride, float(lossy_quality), &buf);
  std::unique_ptr<uint8_t, void (*)(void*)> hold(buf, WebPFree);
  if (n == 0) throw std::runtime_error("encode_webp: libwebp failed");
  return std::vector<uint8_t>(buf, buf + n);
#else
  throw std::runtime_error("encode_webp: this gantry was built without libwebp (install libwebp-dev, rebuild)");
#endif
}

bool image_extension_writable(const std::string& path) {
  const std::string e = extension_of(path);
  return e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".bmp" || e == ".tga" ||
         (e == ".webp" && webp_supported());
}

std::string writable_image_extensions() {
  return std::string(".png, .jpg, .jpeg, .bmp, .tga") + (webp_supported() ? ", .webp" : "");
}

void write_image(const std::string& path, const Image& img, int jpeg_quality, int webp_quality) {
  const std::string e = extension_of(path);
  if (e == ".png") return write_file_atomic(path, encode_png(img));
  if (e == ".webp") return write_file_atomic(path, encode_webp(img, webp_quality));
  if (e == ".jpg" || e == ".jpeg") return write_file_atomic(path, encode_jpeg(img, jpeg_quality));
  if (e == ".bmp") return write_file_atomic(path, encode_bmp(img));
  if (e == ".tga") return write_file_atomic(path, encode_tga(img));
  throw std::invalid_argument("write_image: " + path +
                              ": unknown extension; use .png, .jpg, .jpeg, .bmp, .tga or .webp");
}

// ---- pixel operations -------------------------------------------------------------------------

static void check_image(const Image& img, const char* op) {
  if (img.width <= 0 || img.height <= 0 || img.channels < 1 || img.channels > 4 ||
      img.pixels.size() != size_t(img.width) * img.height * img.channels)
    throw std::invalid_argument(std::string(op) + ": bad image " + std::to_string(img.width) +
                                "x" + std::to_string(img.height) + "x" +
                                std::to_string(img.channels) + " with " +
                                std::to_string(img.pixels.size()) + " bytes");
}

Image resize(const Image& img, int new_width, int new_height, ResizeFilter filter) {
  check_image(img, "resize");
  if (new_width <= 0 || new_height <= 0)
    throw std::invalid_argument("resize: target size " + std::to_string(new_width) + "x" +
                                std::to_string(new_height) + " must be positive");
  if (new_width == img.width && new_height == img.height) return img;
  stbir_filter f = STBIR_FILTER_DEFAULT;
  switch (filter) {
    case ResizeFilter::Auto: {
      const bool shrink = int64_t(new_width) * new_height < int64_t(img.width) * img.height;
      f = shrink ? STBIR_FILTER_TRIANGLE : STBIR_FILTER_CATMULLROM;
      break;
    }
    case ResizeFilter::Box: f = STBIR_FILTER_BOX; break;
    case ResizeFilter::Triangle: f = STBIR_FILTER_TRIANGLE; break;
    case ResizeFilter::CatmullRom: f = STBIR_FILTER_CATMULLROM; break;
    case ResizeFilter::Mitchell: f = STBIR_FILTER_MITCHELL; break;
  }
  Image out(new_width, new_height, img.channels);
  // Linear colorspace: filter the stored values as they are, as PIL does; no alpha channel
  // weighting (an RGBA input is filtered channel by channel).
  if (!stbir_resize_uint8_generic(img.pixels.data(), img.width, img.height,
                                  img.width * img.channels, out.pixels.data(), new_width,
                                  new_height, new_width * img.channels, img.channels,
                                  STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, f,
                                  STBIR_COLORSPACE_LINEAR, nullptr))
    throw std::runtime_error("resize: stb_image_resize failed (" + std::to_string(img.width) +
                             "x" + std::to_string(img.height) + " -> " +
                             std::to_string(new_width) + "x" + std::to_string(new_height) + ")");
  return out;
}

Image resize_shorter_side(const Image& img, int size, ResizeFilter filter) {
  check_image(img, "resize_shorter_side");
  if (size <= 0) throw std::invalid_argument("resize_shorter_side: size must be positive, got " +
                                             std::to_string(size));
  int w = size, h = size;
  // torchvision: new_long = int(size * long / short), computed in double precision.
  if (img.width < img.height)
    h = static_cast<int>(double(size) * img.height / img.width);
  else if (img.height < img.width)
    w = static_cast<int>(double(size) * img.width / img.height);
  return resize(img, w, h, filter);
}

Image crop(const Image& img, int x, int y, int width, int height) {
  check_image(img, "crop");
  if (x < 0 || y < 0 || width <= 0 || height <= 0 || x + width > img.width ||
      y + height > img.height)
    throw std::invalid_argument("crop: window " + std::to_string(width) + "x" +
                                std::to_string(height) + " at (" + std::to_string(x) + ", " +
                                std::to_string(y) + ") does not fit in a " +
                                std::to_string(img.width) + "x" + std::to_string(img.height) +
                                " image");
  Image out(width, height, img.channels);
  const size_t row = size_t(width) * img.channels;
  for (int r = 0; r < height; ++r)
    std::memcpy(out.pixels.data() + r * row,
                img.pixels.data() + (size_t(y + r) * img.width + x) * img.channels, row);
  return out;
}

Image center_crop(const Image& img, int width, int height) {
  check_image(img, "center_crop");
  if (width > img.width || height > img.height)
    throw std::invalid_argument("center_crop: " + std::to_string(width) + "x" +
                                std::to_string(height) + " is larger than the " +
                                std::to_string(img.width) + "x" + std::to_string(img.height) +
                                " image; resize first");
  // Python's round() rounds half to even; nearbyint does too in the default rounding mode.
  const int x = static_cast<int>(std::nearbyint((img.width - width) / 2.0));
  const int y = static_cast<int>(std::nearbyint((img.height - height) / 2.0));
  return crop(img, x, y, width, height);
}

Image flip_horizontal(const Image& img) {
  check_image(img, "flip_horizontal");
  Image out(img.width, img.height, img.channels);
  const int c = img.channels;
  for (int y = 0; y < img.height; ++y) {
    const uint8_t* src = img.pixels.data() + size_t(y) * img.width * c;
    uint8_t* dst = out.pixels.data() + size_t(y) * img.width * c;
    for (int x = 0; x < img.width; ++x)
      std::memcpy(dst + size_t(img.width - 1 - x) * c, src + size_t(x) * c, c);
  }
  return out;
}

Image convert_channels(const Image& img, int channels) {
  check_image(img, "convert_channels");
  if (channels != 1 && channels != 3)
    throw std::invalid_argument("convert_channels: target must be 1 or 3 channels, got " +
                                std::to_string(channels));
  const int from = img.channels;
  // Already there (alpha is dropped below when from is 2 or 4).
  if (from == channels) return img;
  Image out(img.width, img.height, channels);
  const size_t n = size_t(img.width) * img.height;
  const uint8_t* s = img.pixels.data();
  uint8_t* d = out.pixels.data();
  if (channels == 1) {
    if (from <= 2) {  // gray+alpha -> gray
      for (size_t i = 0; i < n; ++i) d[i] = s[i * from];
    } else {  // RGB(A) -> gray, PIL's "L" conversion
      for (size_t i = 0; i < n; ++i) {
        const uint32_t r = s[i * from], g = s[i * from + 1], b = s[i * from + 2];
        d[i] = static_cast<uint8_t>((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
      }
    }
  } else {
    if (from <= 2) {  // gray(+alpha) -> RGB
      for (size_t i = 0; i < n; ++i) d[i * 3] = d[i * 3 + 1] = d[i * 3 + 2] = s[i * from];
    } else {  // RGBA -> RGB
      for (size_t i = 0; i < n; ++i) std::memcpy(d + i * 3, s + i * from, 3);
    }
  }
  return out;
}

}  // namespace gantry::data

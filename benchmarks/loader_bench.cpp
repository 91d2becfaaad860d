// Loader throughput: images/s delivered as [128, 3, 64, 64] float batches, from JPEG files
// (CelebA-like 178x218, decoded + resized + cropped + flipped on worker threads) and from a
// CIFAR-10 binary file (in memory; 32x32, native or upscaled to 64x64), with 1, 2, 4 workers.
//
// Usage: loader_bench [jpeg_count=2000] [cifar_records=10000]
// Synthetic data goes to a fresh folder under $GANTRY_TEST_TMP or the system temp folder and
// is removed at the end.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "gantry/data/dataset.h"
#include "gantry/data/image.h"
#include "gantry/data/loader.h"
#include "gantry/data/transforms.h"

using namespace gantry::data;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A photo-like image: smooth color gradients, a bright ellipse (a "face") and mild noise, so
// JPEG files have realistic entropy (~10 KB at quality 90, like CelebA's).
Image photo_like(int w, int h, uint32_t seed) {
  Image img(w, h, 3);
  uint32_t s = seed * 2654435761u + 1;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      s = s * 1664525u + 1013904223u;
      const int noise = int(s >> 28) - 8;
      const float dx = (x - w * 0.5f) / (w * 0.3f), dy = (y - h * 0.45f) / (h * 0.35f);
      const bool face = dx * dx + dy * dy < 1.f;
      for (int c = 0; c < 3; ++c) {
        int v = face ? 180 + c * 15 - int(30 * dy) : int((x * (c + 1) + y * (3 - c) + seed * 17) % 256 * 0.6f);
        v += noise;
        img.at(x, y, c) = uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
      }
    }
  return img;
}

// Images/s over `epochs` full epochs (after one warm-up batch).
double throughput(std::shared_ptr<const Dataset> ds, int workers, int size, int epochs) {
  LoaderOptions o;
  o.batch_size = 128;
  o.num_workers = workers;
  o.seed = 1;
  o.transform.image_size = size;
  o.transform.channels = 3;
  o.transform.random_flip = true;
  DataLoader loader(std::move(ds), o);
  Batch b;
  loader.next(b);  // start-up: threads running, caches warm
  const int64_t batches = loader.batches_per_epoch() * epochs;
  int64_t images = 0;
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < batches && loader.next(b); ++i) images += b.size();
  return images / seconds_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  const int jpegs = argc > 1 ? std::atoi(argv[1]) : 2000;
  const int records = argc > 2 ? std::atoi(argv[2]) : 10000;
  const char* env = std::getenv("GANTRY_TEST_TMP");
  const fs::path dir = fs::path(env && *env ? env : fs::temp_directory_path().string()) /
                       ("gantry_loader_bench_" + std::to_string(::getpid()));
  fs::create_directories(dir / "jpeg");

  // ---- synthetic data ----
  auto t0 = Clock::now();
  size_t jpeg_bytes = 0;
  for (int i = 0; i < jpegs; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "%06d.jpg", i + 1);
    const auto bytes = encode_jpeg(photo_like(178, 218, uint32_t(i)), 90);
    jpeg_bytes += bytes.size();
    write_file_atomic((dir / "jpeg" / name).string(), bytes);
  }
  std::printf("wrote %d JPEGs 178x218 (mean %.1f KB) in %.1f s\n", jpegs,
              jpeg_bytes / 1024.0 / jpegs, seconds_since(t0));
  std::vector<uint8_t> cifar(size_t(records) * Cifar10::kRecordBytes);
  uint32_t s = 7;
  for (size_t i = 0; i < cifar.size(); ++i) {
    s = s * 1664525u + 1013904223u;
    cifar[i] = (i % Cifar10::kRecordBytes == 0) ? uint8_t((s >> 24) % 10) : uint8_t(s >> 24);
  }
  write_file_atomic((dir / "data_batch_1.bin").string(), cifar);

  // ---- dataset construction (the folder scan) and single-thread stage costs ----
  t0 = Clock::now();
  DatasetOptions dopt;
  auto folder = std::make_shared<ImageFolder>((dir / "jpeg").string(), dopt);
  const double scan = seconds_since(t0);
  std::printf("folder scan (header + truncation check): %.0f files/s\n", folder->size() / scan);
  const int probe = std::min<int>(200, static_cast<int>(folder->size()));
  t0 = Clock::now();
  for (int i = 0; i < probe; ++i) folder->get(size_t(i));
  const double decode = seconds_since(t0) / probe;
  std::printf("JPEG read+decode, 1 thread: %.2f ms/image (%.0f images/s)\n", decode * 1e3, 1 / decode);
  {
    const Image img = folder->get(0).image;
    TransformOptions topt;
    topt.image_size = 64;
    std::vector<float> out(3 * 64 * 64);
    const int reps = 500;
    t0 = Clock::now();
    for (int i = 0; i < reps; ++i) apply_transform(img, topt, 3, i & 1, out.data());
    const double tr = seconds_since(t0) / reps;
    std::printf("transform 178x218 -> 3x64x64 floats, 1 thread: %.3f ms/image\n", tr * 1e3);
  }
  auto cifar_ds = std::make_shared<Cifar10>((dir / "data_batch_1.bin").string());

  // ---- loader throughput ----
  std::printf("\nloader throughput, batches [128, 3, S, S], random flip on (images/s)\n");
  std::printf("%-36s %10s %10s %10s\n", "source", "1 worker", "2 workers", "4 workers");
  struct Row {
    const char* label;
    std::shared_ptr<const Dataset> ds;
    int size, epochs;
  };
  const Row rows[] = {
      {"JPEG 178x218 -> 64x64 (CelebA-like)", folder, 64, 1},
      {"CIFAR-10 bin 32x32 -> 64x64 (bicubic)", cifar_ds, 64, 1},
      {"CIFAR-10 bin 32x32 (no resize)", cifar_ds, 32, 2},
  };
  for (const Row& r : rows) {
    std::printf("%-36s", r.label);
    for (int w : {1, 2, 4}) {
      std::printf(" %10.0f", throughput(r.ds, w, r.size, r.epochs));
      std::fflush(stdout);
    }
    std::printf("\n");
  }
  std::printf("(hardware threads: %u)\n", std::thread::hardware_concurrency());
  fs::remove_all(dir);
  return 0;
}

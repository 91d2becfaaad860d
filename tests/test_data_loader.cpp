// DataLoader: order determinism, resume, worker-count independence, batch contents, bounded
// prefetch, early stop without a hang, bad files at load time.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "gantry/data/dataset.h"
#include "gantry/data/loader.h"
#include "test_data_util.h"

using namespace gantry;
using namespace gantry::data;
using testdata::fresh_dir;

namespace {

// n gray 4x4 images; image i has pixel (x, y) = (i + x) & 255 so both the index and a mirror
// are visible in the batch; label i % 3. Optionally slow, and counts get() calls.
class Synthetic : public Dataset {
 public:
  explicit Synthetic(size_t n, int delay_ms = 0) : n_(n), delay_ms_(delay_ms) {}
  size_t size() const override { return n_; }
  Example get(size_t i) const override {
    ++calls;
    if (delay_ms_) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
    Example e;
    e.image = Image(4, 4, 1);
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) e.image.at(x, y, 0) = uint8_t((i + x) & 255);
    e.label = static_cast<int64_t>(i % 3);
    return e;
  }
  int64_t num_classes() const override { return 3; }
  int channels() const override { return 1; }
  int width() const override { return 4; }
  int height() const override { return 4; }
  std::string name() const override { return "synthetic"; }
  mutable std::atomic<int> calls{0};

 private:
  size_t n_;
  int delay_ms_;
};

float unit(int v) { return (float(v) / 255.0f - 0.5f) / 0.5f; }

// Everything a batch holds, for comparisons.
struct Seen {
  int64_t epoch, index;
  std::vector<int64_t> labels, indices;
  std::vector<float> pixels;
  bool operator==(const Seen& o) const {
    return epoch == o.epoch && index == o.index && labels == o.labels && indices == o.indices &&
           pixels == o.pixels;
  }
};

std::vector<Seen> drain(std::shared_ptr<const Dataset> ds, LoaderOptions opt, int max_batches) {
  DataLoader loader(std::move(ds), opt);
  std::vector<Seen> out;
  Batch b;
  while (static_cast<int>(out.size()) < max_batches && loader.next(b)) {
    const float* p = b.images.data();
    out.push_back({b.epoch, b.index, b.labels, b.indices, std::vector<float>(p, p + b.images.numel())});
  }
  return out;
}

LoaderOptions small_options(int workers) {
  LoaderOptions o;
  o.batch_size = 8;
  o.seed = 1234;
  o.num_workers = workers;
  o.transform.image_size = 0;  // keep 4x4
  o.quiet = true;
  return o;
}

}  // namespace

TEST_CASE("epoch permutations are seeded, per-epoch and complete", "[data][loader]") {
  const auto a = epoch_permutation(1000, 7, 0);
  CHECK(a == epoch_permutation(1000, 7, 0));
  CHECK(a != epoch_permutation(1000, 7, 1));
  CHECK(a != epoch_permutation(1000, 8, 0));
  std::set<int64_t> all(a.begin(), a.end());
  CHECK(all.size() == 1000);
  CHECK(*all.begin() == 0);
  CHECK(*all.rbegin() == 999);
  const auto id = epoch_permutation(5, 7, 3, false);
  CHECK(id == std::vector<int64_t>{0, 1, 2, 3, 4});
  int flips = 0;
  for (int i = 0; i < 10000; ++i) flips += flip_decision(1, 0, i);
  CHECK(flips > 4700);
  CHECK(flips < 5300);
}

TEST_CASE("batches: shape, contents, labels, drop_last", "[data][loader]") {
  auto ds = std::make_shared<Synthetic>(20);
  LoaderOptions o = small_options(2);
  o.num_epochs = 1;
  {
    DataLoader loader(ds, o);
    CHECK(loader.batches_per_epoch() == 2);
    CHECK(loader.batch_shape() == Shape{8, 1, 4, 4});
    const auto perm = epoch_permutation(20, o.seed, 0);
    Batch b;
    int count = 0;
    while (loader.next(b)) {
      REQUIRE(b.images.shape() == Shape{8, 1, 4, 4});
      REQUIRE(b.labels.size() == 8);
      for (int j = 0; j < 8; ++j) {
        const int64_t idx = perm[count * 8 + j];
        CHECK(b.indices[j] == idx);
        CHECK(b.labels[j] == idx % 3);
        // Pixel (x=2, y=1) of image j.
        CHECK(b.images.data()[j * 16 + 1 * 4 + 2] == unit(int(idx + 2)));
      }
      const Tensor lt = b.label_tensor();
      CHECK(lt.shape() == Shape{8});
      CHECK(lt.data()[3] == float(b.labels[3]));
      ++count;
    }
    CHECK(count == 2);
    CHECK_FALSE(loader.next(b));
  }
  o.drop_last = false;
  DataLoader loader(ds, o);
  CHECK(loader.batches_per_epoch() == 3);
  Batch b;
  std::vector<int64_t> sizes;
  while (loader.next(b)) sizes.push_back(b.size());
  CHECK(sizes == std::vector<int64_t>{8, 8, 4});
  CHECK(b.images.shape() == Shape{4, 1, 4, 4});
}

TEST_CASE("same result with 0, 1, 2 and 4 workers, flips included", "[data][loader]") {
  auto ds = std::make_shared<Synthetic>(53);
  LoaderOptions o = small_options(0);
  o.transform.random_flip = true;
  o.num_epochs = 3;
  const auto ref = drain(ds, o, 1000);
  REQUIRE(ref.size() == 3 * 6);
  // Flips happened, and only where flip_decision says.
  int flipped = 0;
  for (const Seen& s : ref)
    for (size_t j = 0; j < s.indices.size(); ++j) {
      const bool f = flip_decision(o.seed, s.epoch, s.indices[j]);
      // x = 0 of row 0 holds idx + 0 unflipped, idx + 3 flipped.
      CHECK(s.pixels[j * 16] == unit(int(s.indices[j] + (f ? 3 : 0))));
      flipped += f;
    }
  CHECK(flipped > 10);
  for (int workers : {1, 2, 4}) {
    o.num_workers = workers;
    INFO("workers " << workers);
    CHECK(drain(ds, o, 1000) == ref);
  }
  // Epochs differ from one another, and each is a full pass.
  CHECK(ref[0].indices != ref[6].indices);
  o.seed = 99;
  CHECK(drain(ds, o, 1) != std::vector<Seen>{ref[0]});
}

TEST_CASE("resume at (epoch, batch) and seek reproduce the stream", "[data][loader]") {
  auto ds = std::make_shared<Synthetic>(40);
  LoaderOptions o = small_options(2);
  o.transform.random_flip = true;
  const auto full = drain(ds, o, 15);  // epochs 0..2, 5 batches each
  LoaderOptions r = o;
  r.start_epoch = 1;
  r.start_batch = 3;
  const auto resumed = drain(ds, r, 7);
  REQUIRE(resumed.size() == 7);
  for (int i = 0; i < 7; ++i) CHECK(resumed[i] == full[8 + i]);

  DataLoader loader(ds, o);
  Batch b;
  REQUIRE(loader.next(b));
  loader.seek(2, 1);
  REQUIRE(loader.next(b));
  CHECK(b.epoch == 2);
  CHECK(b.index == 1);
  CHECK(b.indices == full[11].indices);
  CHECK_THROWS_AS(loader.seek(0, 5), std::invalid_argument);

  // num_epochs counts from start_epoch: resuming at (1, 3) with 2 epochs leaves 2 + 5 batches.
  r.num_epochs = 2;
  CHECK(drain(ds, r, 100).size() == 7);
}

TEST_CASE("prefetch is bounded and stopping early never hangs", "[data][loader]") {
  auto ds = std::make_shared<Synthetic>(1000, 2);
  LoaderOptions o = small_options(4);
  o.prefetch = 3;
  using clock = std::chrono::steady_clock;
  {
    DataLoader loader(ds, o);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    // At most `prefetch` batches of 8 were made while nobody consumed.
    CHECK(ds->calls.load() <= 3 * 8);
    Batch b;
    REQUIRE(loader.next(b));
  }  // the loader goes out of scope with workers mid-batch
  const auto t0 = clock::now();
  {
    auto slow = std::make_shared<Synthetic>(1000, 50);
    DataLoader loader(slow, o);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }  // destructor: workers abandon their batches after the current image
  CHECK(clock::now() - t0 < std::chrono::milliseconds(1000));
  // Constructed and destroyed at once, many times: no deadlock, no leaked thread.
  for (int i = 0; i < 50; ++i) DataLoader loader(ds, o);
}

TEST_CASE("loader options are checked", "[data][loader][errors]") {
  auto ds = std::make_shared<Synthetic>(5);
  LoaderOptions o = small_options(1);
  CHECK_THROWS_WITH(DataLoader(ds, o), Catch::Contains("fewer than batch_size"));
  o.batch_size = 0;
  CHECK_THROWS_AS(DataLoader(ds, o), std::invalid_argument);
  o.batch_size = 2;
  o.start_batch = 2;
  CHECK_THROWS_WITH(DataLoader(ds, o), Catch::Contains("start_batch"));
  o.start_batch = 0;
  o.transform.channels = 2;
  CHECK_THROWS_AS(DataLoader(ds, o), std::invalid_argument);
}

TEST_CASE("image folder through the loader: resize, channels, bad files", "[data][loader][folder]") {
  const auto root = fresh_dir("loader_folder");
  for (int i = 0; i < 10; ++i)
    write_image((root / ("img" + std::to_string(i) + ".png")).string(),
                testdata::pattern(20 + i, 30 - i, i % 2 ? 3 : 1, i));
  // Passes the header check, fails to decode (no pixel data).
  const auto png = encode_png(testdata::pattern(8, 8, 3));
  std::vector<uint8_t> hollow(png.begin(), png.begin() + 33);
  hollow.insert(hollow.end(), png.end() - 12, png.end());
  testdata::write_bytes(root / "img5.png", hollow);

  DatasetOptions dopt;
  dopt.quiet = true;
  auto ds = std::make_shared<ImageFolder>(root.string(), dopt);
  REQUIRE(ds->size() == 10);
  LoaderOptions o;
  o.batch_size = 5;
  o.num_workers = 2;
  o.transform.image_size = 16;
  o.transform.channels = 3;
  o.num_epochs = 1;
  o.quiet = true;
  {
    DataLoader loader(ds, o);
    Batch b;
    int n = 0;
    while (loader.next(b)) {
      CHECK(b.images.shape() == Shape{5, 3, 16, 16});
      for (int64_t k = 0; k < b.images.numel(); ++k) {
        REQUIRE(b.images.data()[k] >= -1.0f);
        REQUIRE(b.images.data()[k] <= 1.0f);
      }
      n += static_cast<int>(b.size());
    }
    CHECK(n == 10);  // the bad image was replaced, batches stay full
    size_t bad = 0;
    for (size_t i = 0; i < ds->size(); ++i)
      if (ds->source(i).find("img5.png") != std::string::npos) bad = i;
    CHECK(loader.failed_indices() == std::vector<int64_t>{int64_t(bad)});
  }
  o.strict = true;
  DataLoader strict(ds, o);
  Batch b;
  bool threw = false;
  try {
    while (strict.next(b)) {
    }
  } catch (const std::runtime_error& e) {
    threw = true;
    CHECK_THAT(e.what(), Catch::Contains("img5.png"));
  }
  CHECK(threw);

  // Mixed sizes without a target size: a clear error.
  o.transform.image_size = 0;
  CHECK_THROWS_WITH(DataLoader(ds, o), Catch::Contains("image_size"));
}

TEST_CASE("custom batch allocator is used for every batch", "[data][loader]") {
  auto ds = std::make_shared<Synthetic>(16);
  LoaderOptions o = small_options(2);
  o.num_epochs = 1;
  std::atomic<int> allocations{0};
  o.allocator = [&](const Shape& s) {
    ++allocations;
    return Tensor::zeros(s);
  };
  DataLoader loader(ds, o);
  Batch b;
  while (loader.next(b)) {
  }
  CHECK(allocations.load() == 2);
}

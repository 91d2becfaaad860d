// Datasets: image folders (layouts, bad files), CIFAR-10 binary, IDX (plain and gzip), the
// factory, and the real Fashion-MNIST files when the Debian package is installed.
#include <catch2/catch.hpp>

#include <map>
#include <set>

#include "gantry/data/dataset.h"
#include "test_data_util.h"

using namespace gantry::data;
using testdata::fresh_dir;
using testdata::pattern;
namespace fs = std::filesystem;

namespace {
DatasetOptions quiet() {
  DatasetOptions o;
  o.quiet = true;
  return o;
}
}  // namespace

TEST_CASE("image folder, one sub-folder per class", "[data][folder]") {
  const auto root = fresh_dir("classes");
  fs::create_directories(root / "cat" / "sub");
  fs::create_directories(root / "dog");
  fs::create_directories(root / ".hidden");
  fs::create_directories(root / "empty");
  write_image((root / "cat" / "b.png").string(), pattern(6, 5, 3, 1));
  write_image((root / "cat" / "sub" / "a.JPG").string(), pattern(9, 9, 3, 2));
  write_image((root / "dog" / "c.png").string(), pattern(4, 4, 1, 3));
  write_image((root / "dog" / "d.tga").string(), pattern(4, 4, 3, 4));
  write_image((root / ".hidden" / "x.png").string(), pattern(4, 4, 3));
  write_image((root / "stray.png").string(), pattern(4, 4, 3));
  testdata::write_text(root / "dog" / "notes.txt", "not an image");

  ImageFolder ds(root.string(), quiet());
  REQUIRE(ds.size() == 4);
  CHECK(ds.num_classes() == 2);
  CHECK(ds.class_names() == std::vector<std::string>{"cat", "dog"});
  CHECK(ds.channels() == 3);
  CHECK(ds.width() == 0);  // sizes differ
  CHECK(ds.bad_files().empty());
  // Sorted by path: cat/b.png < cat/sub/a.JPG, then dog/c.png, dog/d.tga.
  CHECK(fs::path(ds.source(0)).filename() == "b.png");
  CHECK(fs::path(ds.source(1)).filename() == "a.JPG");
  CHECK(ds.get(0).label == 0);
  CHECK(ds.get(1).label == 0);
  CHECK(ds.get(2).label == 1);
  CHECK(ds.get(3).label == 1);
  CHECK(ds.get(0).image.pixels == pattern(6, 5, 3, 1).pixels);
  const Example c = ds.get(2);
  CHECK(c.image.channels == 1);  // gray PNG stays gray
  CHECK(c.image.pixels == pattern(4, 4, 1, 3).pixels);
  CHECK(ds.get(3).image.pixels == pattern(4, 4, 3, 4).pixels);
  CHECK_THROWS_AS(ds.get(4), std::out_of_range);
}

TEST_CASE("flat image folder: label 0, mixed gray/RGB/RGBA, GIF", "[data][folder]") {
  const auto root = fresh_dir("flat");
  write_image((root / "1.png").string(), pattern(8, 8, 1));
  write_image((root / "2.png").string(), pattern(8, 8, 4));
  write_image((root / "3.png").string(), pattern(8, 8, 2));
  testdata::write_bytes(root / "4.gif", testdata::tiny_gif());
  ImageFolder ds(root.string(), quiet());
  REQUIRE(ds.size() == 4);
  CHECK(ds.num_classes() == 1);
  CHECK(ds.channels() == 3);
  for (size_t i = 0; i < ds.size(); ++i) CHECK(ds.get(i).label == 0);
  CHECK(ds.get(0).image.channels == 1);
  CHECK(ds.get(1).image.channels == 3);
  CHECK(ds.get(2).image.channels == 1);
  CHECK(ds.get(3).image.pixels == std::vector<uint8_t>{10, 20, 30});

  const auto gray = fresh_dir("flatgray");
  write_image((gray / "a.png").string(), pattern(5, 6, 1));
  write_image((gray / "b.png").string(), pattern(5, 6, 1));
  ImageFolder g(gray.string(), quiet());
  CHECK(g.channels() == 1);
  CHECK(g.width() == 5);
  CHECK(g.height() == 6);
}

TEST_CASE("image folder: missing, empty, no images", "[data][folder][errors]") {
  const auto root = fresh_dir("folder_errors");
  CHECK_THROWS_WITH(ImageFolder((root / "missing").string()),
                    Catch::Contains("missing") && Catch::Contains("no such"));
  fs::create_directories(root / "empty");
  CHECK_THROWS_WITH(ImageFolder((root / "empty").string()), Catch::Contains("empty"));
  fs::create_directories(root / "text" / "sub");
  testdata::write_text(root / "text" / "readme.md", "hello");
  testdata::write_text(root / "text" / "sub" / "data.csv", "1,2");
  CHECK_THROWS_WITH(ImageFolder((root / "text").string()),
                    Catch::Contains("no images") && Catch::Contains("2 other file"));
  testdata::write_text(root / "file.png", "x");
  CHECK_THROWS_WITH(ImageFolder((root / "file.png").string()), Catch::Contains("not a folder"));
}

TEST_CASE("image folder: bad files are listed and skipped, or fatal when strict",
          "[data][folder][errors]") {
  const auto root = fresh_dir("badfiles");
  write_image((root / "good1.png").string(), pattern(8, 8, 3));
  write_image((root / "good2.jpg").string(), pattern(8, 8, 3));
  testdata::write_bytes(root / "zero.png", {});
  testdata::write_text(root / "text.png", "I am text, not a PNG\n");
  const auto png = encode_png(pattern(64, 64, 3));
  testdata::write_bytes(root / "trunc.png", std::vector<uint8_t>(png.begin(), png.begin() + 100));
  // Header and IEND intact but no pixel data: only a full decode notices.
  std::vector<uint8_t> hollow(png.begin(), png.begin() + 33);  // signature + IHDR
  hollow.insert(hollow.end(), png.end() - 12, png.end());       // IEND
  testdata::write_bytes(root / "hollow.png", hollow);

  ImageFolder ds(root.string(), quiet());
  CHECK(ds.size() == 3);  // good1, good2, hollow (header check passes it)
  REQUIRE(ds.bad_files().size() == 3);
  std::map<std::string, std::string> bad;
  for (const auto& b : ds.bad_files()) bad[fs::path(b.path).filename().string()] = b.reason;
  CHECK(bad["zero.png"] == "zero-byte file");
  CHECK_THAT(bad["text.png"], Catch::Contains("not a readable image"));
  CHECK_THAT(bad["trunc.png"], Catch::Contains("truncated"));
  // The hollow file fails when read, naming itself.
  size_t hollow_index = 0;
  for (size_t i = 0; i < ds.size(); ++i)
    if (fs::path(ds.source(i)).filename() == "hollow.png") hollow_index = i;
  CHECK_THROWS_WITH(ds.get(hollow_index), Catch::Contains("hollow.png"));

  DatasetOptions full = quiet();
  full.verify = Verify::Full;
  ImageFolder checked(root.string(), full);
  CHECK(checked.size() == 2);
  CHECK(checked.bad_files().size() == 4);

  DatasetOptions strict = quiet();
  strict.strict = true;
  CHECK_THROWS_WITH(ImageFolder(root.string(), strict),
                    Catch::Contains("3 unreadable") && Catch::Contains("zero.png") &&
                        Catch::Contains("text.png") && Catch::Contains("trunc.png"));

  const auto allbad = fresh_dir("allbad");
  testdata::write_bytes(allbad / "zero.png", {});
  CHECK_THROWS_WITH(ImageFolder(allbad.string(), quiet()), Catch::Contains("none of the 1"));
}

// ---- CIFAR-10 ------------------------------------------------------------------------------------

namespace {
// n records; record r: label (r + seed) % 10, R plane = r, G plane = pixel index & 255,
// B plane = 200 + seed.
std::vector<uint8_t> cifar_records(int n, int seed) {
  std::vector<uint8_t> v;
  for (int r = 0; r < n; ++r) {
    v.push_back(uint8_t((r + seed) % 10));
    for (int p = 0; p < 1024; ++p) v.push_back(uint8_t(r));
    for (int p = 0; p < 1024; ++p) v.push_back(uint8_t(p & 255));
    for (int p = 0; p < 1024; ++p) v.push_back(uint8_t(200 + seed));
  }
  return v;
}
}  // namespace

TEST_CASE("CIFAR-10 binary: folder (train/test) and single file", "[data][cifar]") {
  const auto dir = fresh_dir("cifar");
  const auto bin = dir / "cifar-10-batches-bin";
  for (int b = 1; b <= 5; ++b)
    testdata::write_bytes(bin / ("data_batch_" + std::to_string(b) + ".bin"), cifar_records(2, b));
  testdata::write_bytes(bin / "test_batch.bin", cifar_records(3, 7));

  Cifar10 train(bin.string(), true);
  REQUIRE(train.size() == 10);
  CHECK(train.num_classes() == 10);
  CHECK(train.channels() == 3);
  CHECK(train.width() == 32);
  CHECK(train.class_names()[0] == "airplane");
  // Batch 3, record 1 is example 5: label (1 + 3) % 10 = 4.
  const Example e = train.get(5);
  CHECK(e.label == 4);
  REQUIRE(e.image.channels == 3);
  // Pixel (x=5, y=2) is index 69: R = record 1, G = 69, B = 203.
  CHECK(int(e.image.at(5, 2, 0)) == 1);
  CHECK(int(e.image.at(5, 2, 1)) == 69);
  CHECK(int(e.image.at(5, 2, 2)) == 203);

  Cifar10 test(dir.string(), false);  // the folder above cifar-10-batches-bin works too
  CHECK(test.size() == 3);
  CHECK(test.get(2).label == 9);
  Cifar10 one((bin / "data_batch_2.bin").string());
  CHECK(one.size() == 2);
  CHECK(one.get(0).label == 2);
}

TEST_CASE("CIFAR-10 errors name the file, expected and found", "[data][cifar][errors]") {
  const auto dir = fresh_dir("cifar_bad");
  auto rec = cifar_records(2, 0);
  rec.pop_back();
  testdata::write_bytes(dir / "short.bin", rec);
  CHECK_THROWS_WITH(Cifar10((dir / "short.bin").string()),
                    Catch::Contains("short.bin") && Catch::Contains("6145 bytes") &&
                        Catch::Contains("3073"));
  auto wrong = cifar_records(1, 0);
  wrong[0] = 42;
  testdata::write_bytes(dir / "c100.bin", wrong);
  CHECK_THROWS_WITH(Cifar10((dir / "c100.bin").string()),
                    Catch::Contains("c100.bin") && Catch::Contains("label 42"));
  testdata::write_bytes(dir / "partial" / "data_batch_1.bin", cifar_records(1, 0));
  CHECK_THROWS_WITH(Cifar10((dir / "partial").string()),
                    Catch::Contains("missing data_batch_2.bin"));
  CHECK_THROWS_WITH(Cifar10((dir / "nothing").string()), Catch::Contains("no such"));
  testdata::write_text(dir / "py" / "data_batch_1", "pickle");
  CHECK_THROWS_WITH(Cifar10((dir / "py").string()), Catch::Contains("Python"));
}

// ---- IDX ----------------------------------------------------------------------------------------

namespace {
void write_mnist_like(const fs::path& dir, const std::string& split, int n, bool gz) {
  std::vector<uint8_t> images(size_t(n) * 4 * 3), labels(n);
  for (size_t i = 0; i < images.size(); ++i) images[i] = uint8_t(i * 3);
  for (int i = 0; i < n; ++i) labels[i] = uint8_t((i * 7) % 10);
  const std::string s = gz ? ".gz" : "";
  write_idx((dir / (split + "-images-idx3-ubyte" + s)).string(), {n, 4, 3}, images.data(), gz);
  write_idx((dir / (split + "-labels-idx1-ubyte" + s)).string(), {n}, labels.data(), gz);
}
}  // namespace

TEST_CASE("IDX files, plain and gzip", "[data][idx]") {
  for (bool gz : {false, true}) {
    const auto dir = fresh_dir(gz ? "idx_gz" : "idx");
    write_mnist_like(dir, "train", 12, gz);
    write_mnist_like(dir, "t10k", 5, gz);
    auto train = IdxDataset::from_dir(dir.string(), true, "mnist");
    REQUIRE(train->size() == 12);
    CHECK(train->height() == 4);
    CHECK(train->width() == 3);
    CHECK(train->channels() == 1);
    CHECK(train->num_classes() == 10);
    const Example e = train->get(3);
    CHECK(e.label == 1);  // 21 % 10
    REQUIRE(e.image.pixels.size() == 12);
    CHECK(int(e.image.at(2, 1, 0)) == int(uint8_t((3 * 12 + 1 * 3 + 2) * 3)));
    auto test = open_dataset("mnist", dir.string(), false);
    CHECK(test->size() == 5);
  }
}

TEST_CASE("IDX errors: magic, size, count, truncated gzip", "[data][idx][errors]") {
  const auto dir = fresh_dir("idx_bad");
  write_mnist_like(dir, "train", 4, false);
  const std::string images = (dir / "train-images-idx3-ubyte").string();
  const std::string labels = (dir / "train-labels-idx1-ubyte").string();
  // Swapped files: the magic says so.
  CHECK_THROWS_WITH(IdxDataset(labels, images),
                    Catch::Contains("train-labels-idx1-ubyte") && Catch::Contains("0x00000801") &&
                        Catch::Contains("expected 0x00000803") && Catch::Contains("swapped"));
  // Size does not match the header.
  auto bytes = testdata::read_bytes(images);
  bytes.resize(bytes.size() - 5);
  testdata::write_bytes(dir / "short-idx3", bytes);
  CHECK_THROWS_WITH(IdxDataset((dir / "short-idx3").string(), labels),
                    Catch::Contains("short-idx3") && Catch::Contains("59 bytes") &&
                        Catch::Contains("expected 64") && Catch::Contains("truncated"));
  // Image and label counts differ.
  std::vector<uint8_t> three = {1, 2, 3};
  write_idx((dir / "three-labels").string(), {3}, three.data());
  CHECK_THROWS_WITH(IdxDataset(images, (dir / "three-labels").string()),
                    Catch::Contains("4 images") && Catch::Contains("3 labels"));
  // Truncated gzip stream.
  write_idx((dir / "img.gz").string(), {4, 4, 3}, std::vector<uint8_t>(48, 9).data(), true);
  auto gz = testdata::read_bytes(dir / "img.gz");
  gz.resize(gz.size() - 10);
  testdata::write_bytes(dir / "cut.gz", gz);
  CHECK_THROWS_WITH(IdxDataset((dir / "cut.gz").string(), labels), Catch::Contains("cut.gz"));
  CHECK_THROWS_WITH(IdxDataset::from_dir((dir / "none").string(), true, "mnist"),
                    Catch::Contains("no such"));
  CHECK_THROWS_WITH(IdxDataset::from_dir(dir.string(), false, "mnist"),
                    Catch::Contains("t10k-images-idx3-ubyte"));
}

TEST_CASE("open_dataset: kinds and messages", "[data][factory]") {
  CHECK_THROWS_WITH(open_dataset("mnist", ""), Catch::Contains("Debian has no MNIST"));
  CHECK_THROWS_WITH(open_dataset("imagenet", "/x"),
                    Catch::Contains("imagenet") && Catch::Contains("fashion-mnist, mnist, cifar10"));
  CHECK_THROWS_WITH(open_dataset("cifar10", ""), Catch::Contains("--data"));
  CHECK_THROWS_WITH(open_dataset("folder", ""), Catch::Contains("--data"));
  const auto root = fresh_dir("factory");
  write_image((root / "a.png").string(), pattern(4, 4, 3));
  auto ds = open_dataset("folder", root.string(), true, quiet());
  CHECK(ds->size() == 1);
  CHECK_THAT(ds->name(), Catch::Contains("folder"));
}

TEST_CASE("real Fashion-MNIST from the Debian package", "[data][fashion]") {
  const std::string dir = default_fashion_mnist_dir();
  if (dir.empty()) {
    WARN("/usr/share/datasets/fashion-mnist not installed (Debian dataset-fashion-mnist): "
         "real-data test skipped");
    return;
  }
  auto train = open_dataset("fashion-mnist", "", true);
  REQUIRE(train->size() == 60000);
  CHECK(train->num_classes() == 10);
  CHECK(train->channels() == 1);
  CHECK(train->width() == 28);
  CHECK(train->height() == 28);
  CHECK(train->class_names()[9] == "Ankle boot");
  std::map<int64_t, int> counts;
  auto* idx = dynamic_cast<IdxDataset*>(train.get());
  REQUIRE(idx != nullptr);
  for (size_t i = 0; i < train->size(); ++i) ++counts[idx->label(i)];
  REQUIRE(counts.size() == 10);
  for (const auto& [label, count] : counts) {
    CHECK(label >= 0);
    CHECK(label <= 9);
    CHECK(count == 6000);  // Fashion-MNIST is balanced
  }
  // The first training image is an ankle boot (label 9), with a black border and ink inside.
  const Example e = train->get(0);
  CHECK(e.label == 9);
  CHECK(e.image.at(0, 0, 0) == 0);
  int ink = 0;
  for (uint8_t v : e.image.pixels) ink += v > 0;
  CHECK(ink > 100);
  auto test = open_dataset("fashion-mnist", "", false);
  CHECK(test->size() == 10000);
}

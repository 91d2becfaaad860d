// Datasets: image folders (layouts, bad files), CIFAR-10 binary, IDX (plain and gzip), the
// factory, and the real Fashion-MNIST files when the Debian package is installed.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>

#include "gantry/data/dataset.h"
#include "gantry/data/loader.h"
#include "test_data_util.h"

#if defined(GANTRY_HAVE_LMDB)
#include <lmdb.h>
#endif

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

TEST_CASE("image folder: WebP files are images too", "[data][folder][webp]") {
  if (!webp_supported()) return;  // test_data checks the message a build without libwebp gives
  const auto root = fresh_dir("webp_folder");
  write_image((root / "a.png").string(), pattern(8, 8, 3, 1));
  write_image((root / "b.webp").string(), pattern(8, 8, 3, 2));
  ImageFolder ds(root.string(), quiet());
  REQUIRE(ds.size() == 2);
  CHECK(ds.get(1).image.pixels == pattern(8, 8, 3, 2).pixels);  // lossless
  CHECK(ds.bad_files().empty());
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
  CHECK_THROWS_WITH(Cifar10((dir / "py").string()),
                    Catch::Contains("missing data_batch_2") && Catch::Contains("python version"));
  CHECK_THROWS_WITH(Cifar10((dir / "partial").string(), false), Catch::Contains("missing test_batch.bin"));
  fs::create_directories(dir / "empty");
  CHECK_THROWS_WITH(Cifar10((dir / "empty").string()),
                    Catch::Contains("no cifar10 files") && Catch::Contains("cifar-10-batches-py"));
  // CIFAR-100's binary records (two label bytes) read as CIFAR-10: the size says which.
  testdata::write_bytes(dir / "c100_records.bin", std::vector<uint8_t>(3 * 3074, 1));
  CHECK_THROWS_WITH(Cifar10((dir / "c100_records.bin").string()), Catch::Contains("use --dataset cifar100"));
}

namespace {
// The pixel the CIFAR fixtures (tests/interop/make_pickle_fixtures.py) hold: image i (counted
// over the whole set), plane c, pixel p = y * 32 + x: (7 i + 3 c + p) % 256.
int fixture_pixel(int i, int x, int y, int c) { return (7 * i + 3 * c + y * 32 + x) % 256; }
const fs::path kData = GANTRY_TEST_DATA;
}  // namespace

TEST_CASE("CIFAR-10 python version (torchvision's download), read without Python", "[data][cifar]") {
  // The folder itself, and torchvision's root above it.
  for (const fs::path& p : {kData / "cifar-10-batches-py", kData}) {
    INFO(p.string());
    Cifar10 train(p.string(), true);
    REQUIRE(train.size() == 15);  // 5 batches of 3
    CHECK(train.num_classes() == 10);
    CHECK(train.class_names()[9] == "truck");
    CHECK_THAT(train.name(), Catch::Contains("python version"));
    for (int i : {0, 4, 14}) {
      const Example e = train.get(size_t(i));
      CHECK(e.label == i % 10);
      for (int c = 0; c < 3; ++c) {
        CHECK(int(e.image.at(0, 0, c)) == fixture_pixel(i, 0, 0, c));
        CHECK(int(e.image.at(31, 31, c)) == fixture_pixel(i, 31, 31, c));
        CHECK(int(e.image.at(5, 2, c)) == fixture_pixel(i, 5, 2, c));
      }
    }
    Cifar10 test(p.string(), false);
    REQUIRE(test.size() == 3);
    CHECK(test.get(0).label == 5);  // image 15
    CHECK(int(test.get(2).image.at(3, 1, 2)) == fixture_pixel(17, 3, 1, 2));
  }
  // One batch file, and the factory.
  Cifar10 one((kData / "cifar-10-batches-py" / "data_batch_2").string());
  CHECK(one.size() == 3);
  CHECK(one.get(0).label == 3);
  CHECK(open_dataset("cifar10", kData.string())->size() == 15);

  // The same images as binary records read the same, byte for byte.
  const auto dir = fresh_dir("cifar_same");
  for (int b = 0; b < 5; ++b) {
    std::vector<uint8_t> rec;
    for (int i = 3 * b; i < 3 * b + 3; ++i) {
      rec.push_back(uint8_t(i % 10));
      for (int c = 0; c < 3; ++c)
        for (int p = 0; p < 1024; ++p) rec.push_back(uint8_t(fixture_pixel(i, p % 32, p / 32, c)));
    }
    testdata::write_bytes(dir / ("data_batch_" + std::to_string(b + 1) + ".bin"), rec);
  }
  Cifar10 bin(dir.string()), py(kData.string());
  REQUIRE(bin.size() == py.size());
  for (size_t i = 0; i < bin.size(); ++i) {
    CHECK(bin.get(i).image.pixels == py.get(i).image.pixels);
    CHECK(bin.get(i).label == py.get(i).label);
  }
}

TEST_CASE("CIFAR-100, python and binary versions: fine labels, class names", "[data][cifar]") {
  Cifar100 train(kData.string(), true);  // torchvision's root: finds cifar-100-python/
  REQUIRE(train.size() == 4);
  CHECK(train.num_classes() == 100);
  REQUIRE(train.class_names().size() == 100);
  CHECK(train.class_names()[33] == "class_33");  // from the meta file
  CHECK(train.get(3).label == 99);               // fine label (33 * 3) % 100
  CHECK(int(train.get(3).image.at(7, 9, 1)) == fixture_pixel(3, 7, 9, 1));
  Cifar100 test((kData / "cifar-100-python").string(), false);
  REQUIRE(test.size() == 2);
  CHECK(test.get(1).label == 65);
  CHECK(open_dataset("cifar100", kData.string(), false)->size() == 2);
  // CIFAR-10 reading CIFAR-100's file: the labels say which.
  CHECK_THROWS_WITH(Cifar10((kData / "cifar-100-python" / "train").string()),
                    Catch::Contains("has no 'labels'"));

  // The binary version: coarse byte, fine byte, pixels; names from fine_label_names.txt.
  const auto dir = fresh_dir("cifar100_bin") / "cifar-100-binary";
  std::vector<uint8_t> rec;
  for (int i = 0; i < 2; ++i) {
    rec.push_back(uint8_t(19 - i));  // coarse
    rec.push_back(uint8_t(90 + i));  // fine
    for (int p = 0; p < 3072; ++p) rec.push_back(uint8_t((p + i) % 251));
  }
  testdata::write_bytes(dir / "train.bin", rec);
  testdata::write_bytes(dir / "test.bin", rec);
  std::string names;
  for (int k = 0; k < 100; ++k) names += "name" + std::to_string(k) + "\n";
  testdata::write_text(dir / "fine_label_names.txt", names);
  Cifar100 b(dir.parent_path().string());
  REQUIRE(b.size() == 2);
  CHECK(b.get(0).label == 90);
  CHECK(b.get(1).label == 91);
  CHECK(b.class_names()[91] == "name91");
  CHECK(int(b.get(1).image.at(1, 0, 2)) == (2048 + 1 + 1) % 251);
  CHECK_THAT(b.name(), Catch::Contains("binary version"));
  // Without a names file: the class numbers.
  fs::remove(dir / "fine_label_names.txt");
  CHECK(Cifar100(dir.string()).class_names()[42] == "42");
}

TEST_CASE("CIFAR python version: malformed batches name the file and the problem", "[data][cifar][errors]") {
  const auto dir = fresh_dir("cifar_py_bad");
  const auto good = testdata::read_bytes(kData / "cifar-10-batches-py" / "data_batch_1");
  auto cut = good;
  cut.resize(cut.size() / 2);
  testdata::write_bytes(dir / "cut", cut);
  CHECK_THROWS_WITH(Cifar10((dir / "cut").string()),
                    Catch::Contains("cifar10 ") && Catch::Contains("cut at byte") && Catch::Contains("truncated"));
  // A pickle of a list, not a dict.
  testdata::write_bytes(dir / "list", {0x80, 0x02, ']', '.'});
  CHECK_THROWS_WITH(Cifar10((dir / "list").string()), Catch::Contains("holds a list, not a dict"));
  // batches.meta is a pickle without 'data'.
  CHECK_THROWS_WITH(Cifar10((kData / "cifar-10-batches-py" / "batches.meta").string()),
                    Catch::Contains("batches.meta") && Catch::Contains("has no 'data'"));
  // A label out of range: CIFAR-10 label byte 3 (BININT1 of the first label) set to 42.
  auto relabel = good;
  const std::string key = "labels";
  auto at = std::search(relabel.begin(), relabel.end(), key.begin(), key.end());
  REQUIRE(at != relabel.end());
  // After the key: BINPUT n, EMPTY_LIST, BINPUT n, MARK, BININT1 <label 0>.
  auto k = at + static_cast<std::ptrdiff_t>(key.size());
  REQUIRE(k[0] == 'q');
  REQUIRE(k[2] == ']');
  REQUIRE(k[5] == '(');
  REQUIRE(k[6] == 'K');
  k[7] = 42;
  testdata::write_bytes(dir / "relabel", relabel);
  CHECK_THROWS_WITH(Cifar10((dir / "relabel").string()),
                    Catch::Contains("image 0 has label 42") && Catch::Contains("use --dataset cifar100"));
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

TEST_CASE("Subset: a fixed random subset in the base's order (StyleGAN2-ADA's --subset)", "[data][subset]") {
  const auto dir = fresh_dir("idx_subset");
  write_mnist_like(dir, "train", 20, false);
  write_mnist_like(dir, "t10k", 5, false);
  std::shared_ptr<Dataset> base = IdxDataset::from_dir(dir.string(), true, "mnist");
  Subset a(base, 7), b(base, 7), c(base, 7, 1);
  REQUIRE(a.size() == 7);
  const std::vector<size_t>& ia = a.indices();
  CHECK(std::is_sorted(ia.begin(), ia.end()));
  CHECK(std::adjacent_find(ia.begin(), ia.end()) == ia.end());  // distinct
  CHECK(ia.back() < 20);
  CHECK(ia == b.indices());  // the same seed, the same subset
  CHECK(ia != c.indices());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a.get(i).label == base->get(ia[i]).label);
    CHECK(a.get(i).image.pixels == base->get(ia[i]).image.pixels);
  }
  CHECK(a.name() == base->name() + ", a subset of 7 images");
  CHECK(Subset(base, 20).indices().size() == 20);
  CHECK_THROWS_WITH(Subset(base, 21), Catch::Contains("subset of 21 images") && Catch::Contains("has 20; give 1..20"));
  CHECK_THROWS_WITH(Subset(base, 0), Catch::Contains("give 1..20"));
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

TEST_CASE("MNIST in torchvision's layout: <root>/MNIST/raw, <root>/FashionMNIST/raw", "[data][idx]") {
  const auto root = fresh_dir("tv_mnist");
  fs::create_directories(root / "MNIST" / "raw");
  fs::create_directories(root / "FashionMNIST" / "raw");
  write_mnist_like(root / "MNIST" / "raw", "train", 6, true);
  write_mnist_like(root / "FashionMNIST" / "raw", "train", 4, false);
  CHECK(open_dataset("mnist", root.string())->size() == 6);
  CHECK(open_dataset("mnist", (root / "MNIST").string())->size() == 6);
  CHECK(open_dataset("fashion-mnist", root.string())->size() == 4);
  CHECK_THROWS_WITH(open_dataset("mnist", root.string(), false),
                    Catch::Contains("no t10k-images-idx3-ubyte") && Catch::Contains("MNIST/raw/"));
  fs::remove(root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz");
  CHECK_THROWS_WITH(open_dataset("mnist", root.string()),
                    Catch::Contains("has train-images-idx3-ubyte.gz but no train-labels-idx1-ubyte"));
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

// ---- LSUN ---------------------------------------------------------------------------------------

TEST_CASE("LSUN: databases written by python-lmdb with PIL's JPEG and WebP (tests/data/lsun)", "[data][lsun]") {
  if (!lsun_supported()) return;  // the no-liblmdb message is checked below
  Lsun ds((kData / "lsun").string());
  REQUIRE(ds.size() == 8);
  CHECK(ds.class_names() == std::vector<std::string>{"bedroom_train", "church_outdoor_train"});
  for (size_t i = 0; i < ds.size(); ++i) {
    if (i == 5 && !webp_supported()) continue;
    const Example e = ds.get(i);
    INFO("image " << i);
    REQUIRE(e.image.width == 40);
    REQUIRE(e.image.height == 30);
    REQUIRE(e.image.channels == 3);
    const int k = i < 6 ? int(i) : int(i) - 6;  // keys (k * 7919 in hex) sort as k does
    // The generator's pixel (x, y) is (40 k, 6 x, 8 y); JPEG at quality 75 lands near it.
    CHECK(std::abs(int(e.image.at(20, 15, 0)) - (40 * k) % 256) <= 12);
    CHECK(std::abs(int(e.image.at(20, 15, 1)) - 120) <= 12);
    CHECK(std::abs(int(e.image.at(20, 15, 2)) - 120) <= 12);
    CHECK(e.label == (i < 6 ? 0 : 1));
  }
}

#if defined(GANTRY_HAVE_LMDB)
namespace {
// An LMDB database as LSUN ships one: keys (hex ids) -> encoded images.
void write_lmdb(const fs::path& dir, const std::vector<std::pair<std::string, std::vector<uint8_t>>>& kv) {
  fs::create_directories(dir);
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  REQUIRE(mdb_env_set_mapsize(env, size_t(16) << 20) == 0);
  REQUIRE(mdb_env_open(env, dir.c_str(), 0, 0664) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  MDB_dbi dbi;
  REQUIRE(mdb_dbi_open(txn, nullptr, 0, &dbi) == 0);
  for (const auto& [k, v] : kv) {
    MDB_val key{k.size(), const_cast<char*>(k.data())}, val{v.size(), const_cast<uint8_t*>(v.data())};
    REQUIRE(mdb_put(txn, dbi, &key, &val, 0) == 0);
  }
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}
}  // namespace

TEST_CASE("LSUN: an LMDB database of encoded images, one class per database", "[data][lsun]") {
  const auto root = fresh_dir("lsun");
  // Keys sort in byte order: LMDB returns them so, and that is the dataset's order.
  write_lmdb(root / "bedroom_train_lmdb", {{"0a1f", encode_png(pattern(20, 16, 3, 1))},
                                           {"0b2e", encode_jpeg(pattern(24, 24, 3, 2), 95)},
                                           {"00ff", webp_supported() ? encode_webp(pattern(18, 12, 3, 3))
                                                                     : encode_png(pattern(18, 12, 3, 3))}});
  write_lmdb(root / "kitchen_train_lmdb", {{"k1", encode_png(pattern(8, 8, 1, 4))}});
  write_lmdb(root / "kitchen_val_lmdb", {{"v1", encode_png(pattern(9, 9, 3, 5))}, {"v2", encode_png(pattern(9, 9, 3, 6))}});

  Lsun one((root / "bedroom_train_lmdb").string());
  REQUIRE(one.size() == 3);
  CHECK(one.class_names() == std::vector<std::string>{"bedroom_train"});
  CHECK(one.get(0).image.pixels == pattern(18, 12, 3, 3).pixels);  // key 00ff; lossless
  CHECK(one.get(1).image.pixels == pattern(20, 16, 3, 1).pixels);  // key 0a1f
  const Example jpeg = one.get(2);
  REQUIRE(jpeg.image.width == 24);
  CHECK(std::abs(int(jpeg.image.at(10, 10, 1)) - int(pattern(24, 24, 3, 2).at(10, 10, 1))) < 12);
  CHECK_THAT(one.source(1), Catch::Contains("bedroom_train_lmdb") && Catch::Contains("key 0a1f"));

  // The root: every *_train_lmdb, sorted, one label each; the val split; --classes.
  Lsun all(root.string());
  REQUIRE(all.size() == 4);
  CHECK(all.class_names() == std::vector<std::string>{"bedroom_train", "kitchen_train"});
  CHECK(all.get(3).label == 1);
  CHECK(all.get(3).image.channels == 1);  // stored gray; the transform makes the channels asked for
  CHECK(Lsun(root.string(), false).size() == 2);
  DatasetOptions opt;
  opt.classes = split_classes("kitchen,");
  auto kitchen = open_dataset("lsun", root.string(), true, opt);
  CHECK(kitchen->size() == 1);
  CHECK(kitchen->class_names() == std::vector<std::string>{"kitchen_train"});
  CHECK(split_classes("a,,b") == std::vector<std::string>{"a", "b"});
  CHECK_THROWS_WITH(Lsun(root.string(), true, {"tower"}),
                    Catch::Contains("no tower_train_lmdb/data.mdb") && Catch::Contains("class 'tower_train'"));

  // The loader reads it from worker threads, each through its own transaction.
  LoaderOptions lo;
  lo.batch_size = 2;
  lo.num_workers = 2;
  lo.num_epochs = 3;
  lo.transform.image_size = 8;
  lo.transform.channels = 3;
  DataLoader loader(std::make_shared<Lsun>(root.string()), lo);
  Batch b;
  int batches = 0;
  while (loader.next(b)) {
    CHECK(b.images.shape() == gantry::Shape{2, 3, 8, 8});
    ++batches;
  }
  CHECK(batches == 6);
}

TEST_CASE("LSUN errors name the database, the key and what was expected", "[data][lsun][errors]") {
  const auto root = fresh_dir("lsun_bad");
  CHECK_THROWS_WITH(Lsun((root / "none").string()), Catch::Contains("no such"));
  fs::create_directories(root / "empty");
  CHECK_THROWS_WITH(open_dataset("lsun", (root / "empty").string()),
                    Catch::Contains("no LSUN database here") && Catch::Contains("bedroom_train_lmdb"));
  write_lmdb(root / "nothing_train_lmdb", {});
  CHECK_THROWS_WITH(Lsun((root / "nothing_train_lmdb").string()), Catch::Contains("holds no images"));
  testdata::write_text(root / "fake_train_lmdb" / "data.mdb", "not a database");
  CHECK_THROWS_WITH(Lsun((root / "fake_train_lmdb").string()),
                    Catch::Contains("fake_train_lmdb") && Catch::Contains("opening the database"));
  write_lmdb(root / "text_train_lmdb", {{"abc", {'h', 'i'}}});
  Lsun text((root / "text_train_lmdb").string());
  CHECK_THROWS_WITH(text.get(0), Catch::Contains("text_train_lmdb key abc") && Catch::Contains("not a readable image"));
  CHECK_THROWS_AS(text.get(1), std::out_of_range);
}
#else
TEST_CASE("LSUN: a build without liblmdb says so", "[data][lsun]") {
  CHECK_FALSE(lsun_supported());
  CHECK_THROWS_WITH(Lsun("/tmp"), Catch::Contains("without liblmdb"));
}
#endif

// CIFAR-10 and CIFAR-100, in both of the versions their site offers: the binary one and the
// "python version" (pickled numpy arrays), which is what torchvision downloads. See dataset.h.
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "gantry/core/pickle.h"
#include "gantry/data/dataset.h"
#include "gantry/data/image.h"

namespace gantry::data {

namespace {

namespace fs = std::filesystem;
using pickle::Value;

constexpr int kSide = 32, kPlane = kSide * kSide, kImageBytes = 3 * kPlane;

const std::vector<std::string> kCifar10Classes = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                  "dog",      "frog",       "horse", "ship", "truck"};

// Where each version keeps what, as the two tarballs unpack.
struct Layout {
  std::string kind;                    // "cifar10", "cifar100": names the data in messages
  int classes;
  std::string bin_folder, py_folder;   // the folders the tarballs unpack to
  std::vector<std::string> bin_train, bin_test, py_train, py_test;
  int label_bytes;                     // binary records: label bytes before the pixels (the last is used)
  std::string py_labels;               // the python version's label key
  std::string bin_tarball, py_tarball;
};

const Layout& layout(int classes) {
  static const Layout c10{"cifar10", 10, "cifar-10-batches-bin", "cifar-10-batches-py",
                          {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"},
                          {"test_batch.bin"},
                          {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"},
                          {"test_batch"}, 1, "labels", "cifar-10-binary.tar.gz", "cifar-10-python.tar.gz"};
  // CIFAR-100's binary records hold the coarse (superclass) label, then the fine one.
  static const Layout c100{"cifar100", 100, "cifar-100-binary", "cifar-100-python",
                           {"train.bin"}, {"test.bin"}, {"train"}, {"test"}, 2, "fine_labels",
                           "cifar-100-binary.tar.gz", "cifar-100-python.tar.gz"};
  return classes == 10 ? c10 : c100;
}

struct Found {
  std::vector<std::string> files;
  bool python = false;
  fs::path dir;  // the folder holding them ("" for one file)
};

bool any_exists(const fs::path& dir, const std::vector<std::string>& names) {
  std::error_code ec;
  for (const auto& n : names)
    if (fs::is_regular_file(dir / n, ec)) return true;
  return false;
}

// The batch files `path` stands for: one file (its first byte tells a pickle from records), or
// a folder holding either version, or the folder above one (a torchvision root).
Found find_files(const Layout& L, const std::string& path, bool train) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw std::runtime_error(L.kind + " " + path + ": no such file or directory");
  if (fs::is_regular_file(path, ec)) {
    std::ifstream in(path, std::ios::binary);
    return {{path}, in.get() == 0x80, fs::path()};  // a pickle starts with PROTO
  }
  const auto& bin = train ? L.bin_train : L.bin_test;
  const auto& py = train ? L.py_train : L.py_test;
  for (const fs::path& dir : {fs::path(path), fs::path(path) / L.bin_folder, fs::path(path) / L.py_folder}) {
    for (const bool python : {false, true}) {
      // A version is here when any of its files (of either split) is.
      if (!any_exists(dir, python ? L.py_train : L.bin_train) && !any_exists(dir, python ? L.py_test : L.bin_test))
        continue;
      const auto& names = python ? py : bin;
      std::vector<std::string> missing;
      Found f{{}, python, dir};
      for (const auto& n : names) {
        if (fs::is_regular_file(dir / n, ec))
          f.files.push_back((dir / n).string());
        else
          missing.push_back(n);
      }
      if (missing.empty()) return f;
      std::string msg = L.kind + " " + dir.string() + ": missing ";
      for (size_t i = 0; i < missing.size(); ++i) msg += (i ? ", " : "") + missing[i];
      msg += " (the " + std::string(train ? "training" : "test") + " set of the " +
             (python ? "python" : "binary") + " version is " + names.front() +
             (names.size() > 1 ? " ... " + names.back() : std::string()) + ")";
      throw std::runtime_error(msg);
    }
  }
  throw std::runtime_error(L.kind + " " + path + ": no " + L.kind + " files here; expected the binary version (" +
                           L.bin_tarball + ", unpacked: " + L.bin_folder + "/) or the python version (" +
                           L.py_tarball + ", as torchvision downloads it: " + L.py_folder +
                           "/), or the folder that holds either");
}

// One batch's images, planar R, G, B rows of 32x32, go to `pixels` as interleaved HWC.
void append_planar(const uint8_t* planar, std::vector<uint8_t>& pixels) {
  const size_t base = pixels.size();
  pixels.resize(base + kImageBytes);
  uint8_t* dst = pixels.data() + base;
  for (int p = 0; p < kPlane; ++p) {
    dst[p * 3 + 0] = planar[p];
    dst[p * 3 + 1] = planar[p + kPlane];
    dst[p * 3 + 2] = planar[p + 2 * kPlane];
  }
}

[[noreturn]] void wrong_label(const Layout& L, const std::string& file, size_t image, int64_t label) {
  throw std::runtime_error(L.kind + " " + file + ": image " + std::to_string(image) + " has label " +
                           std::to_string(label) + ", expected 0.." + std::to_string(L.classes - 1) +
                           (L.classes == 10 && label >= 10 && label < 100 ? " (is this CIFAR-100? use --dataset cifar100)" : ""));
}

void read_binary(const Layout& L, const std::string& file, std::vector<uint8_t>& pixels, std::vector<int64_t>& labels) {
  const size_t record = static_cast<size_t>(L.label_bytes) + kImageBytes;
  const std::vector<uint8_t> bytes = read_file(file);
  if (bytes.empty() || bytes.size() % record != 0)
    throw std::runtime_error(L.kind + " " + file + ": " + std::to_string(bytes.size()) +
                             " bytes is not a whole number of " + std::to_string(record) + "-byte records (" +
                             (L.label_bytes == 1 ? "1 label byte" : "a coarse and a fine label byte") +
                             " + 32x32x3 pixels)" +
                             (L.classes == 10 && bytes.size() % (record + 1) == 0 ? "; is this CIFAR-100? use --dataset cifar100" : ""));
  for (size_t r = 0; r < bytes.size() / record; ++r) {
    const uint8_t* rec = bytes.data() + r * record;
    const int64_t label = rec[L.label_bytes - 1];
    if (label >= L.classes) wrong_label(L, file, r, label);
    labels.push_back(label);
    append_planar(rec + L.label_bytes, pixels);
  }
}

// A python-version batch: a pickled dict {"data": uint8 array [N, 3072], "labels": [N ints],
// ...} (CIFAR-100: "fine_labels"), written by Python 2's cPickle.
void read_python(const Layout& L, const std::string& file, std::vector<uint8_t>& pixels, std::vector<int64_t>& labels) {
  const std::vector<uint8_t> bytes = read_file(file);
  pickle::Unpickler u(bytes.data(), bytes.size(), L.kind + " " + file);
  const Value* root = u.run();
  auto bad = [&](const std::string& what) -> std::runtime_error {
    return std::runtime_error(L.kind + " " + file + ": " + what + " (expected a CIFAR python-version batch: a dict with 'data', a uint8 array [N, 3072], and '" +
                              L.py_labels + "', N labels)");
  };
  if (root->kind != Value::Kind::Dict) throw bad("holds a " + pickle::type_name(*root) + ", not a dict");
  const Value* data = root->find("data");
  const Value* lab = root->find(L.py_labels);
  if (!data) throw bad("has no 'data'");
  if (!lab) throw bad("has no '" + L.py_labels + "'");
  if (data->kind != Value::Kind::Array || data->items[0]->s != "u1" || data->shape.size() != 2 ||
      data->shape[1] != kImageBytes || data->i != 0)
    throw bad("its 'data' is a " + pickle::type_name(*data) +
              (data->kind == Value::Kind::Array ? " of " + data->items[0]->s + " [" + std::to_string(data->shape.size()) + " dims]" : ""));
  const size_t n = static_cast<size_t>(data->shape[0]);
  const bool list = lab->kind == Value::Kind::List;
  const size_t nlab = list ? lab->items.size() : lab->kind == Value::Kind::Array ? static_cast<size_t>(lab->numel()) : 0;
  if ((!list && lab->kind != Value::Kind::Array) || nlab != n)
    throw bad("its '" + L.py_labels + "' is a " + pickle::type_name(*lab) + " of " + std::to_string(nlab) +
              " labels for " + std::to_string(n) + " images");
  const auto* planar = reinterpret_cast<const uint8_t*>(data->s.data());
  for (size_t k = 0; k < n; ++k) {
    int64_t label = -1;
    if (!list)
      label = static_cast<int64_t>(lab->element(static_cast<int64_t>(k)));
    else if (lab->items[k]->kind == Value::Kind::Int)
      label = lab->items[k]->i;
    if (label < 0 || label >= L.classes) wrong_label(L, file, k, label);
    labels.push_back(label);
    append_planar(planar + k * kImageBytes, pixels);
  }
}

// CIFAR-100's class names, from the meta file beside the batches when there is one.
std::vector<std::string> cifar100_names(const Found& f) {
  std::vector<std::string> names;
  std::error_code ec;
  if (f.python && fs::is_regular_file(f.dir / "meta", ec)) {
    const std::vector<uint8_t> bytes = read_file((f.dir / "meta").string());
    pickle::Unpickler u(bytes.data(), bytes.size(), "cifar100 " + (f.dir / "meta").string());
    const Value* root = u.run();
    if (const Value* v = root->find("fine_label_names"); v && v->kind == Value::Kind::List)
      for (const Value* s : v->items)
        if (s->is_text()) names.push_back(s->s);
  } else if (!f.python && fs::is_regular_file(f.dir / "fine_label_names.txt", ec)) {
    const std::vector<uint8_t> bytes = read_file((f.dir / "fine_label_names.txt").string());
    std::string line;
    for (uint8_t c : bytes) {
      if (c == '\n') {
        if (!line.empty()) names.push_back(line);
        line.clear();
      } else if (c != '\r') {
        line.push_back(static_cast<char>(c));
      }
    }
    if (!line.empty()) names.push_back(line);
  }
  if (names.size() == 100) return names;
  names.clear();  // no meta file (or not one of 100 names): the class numbers
  for (int k = 0; k < 100; ++k) names.push_back(std::to_string(k));
  return names;
}

}  // namespace

void Cifar::load(int classes, const std::string& path, bool train) {
  const Layout& L = layout(classes);
  width_ = height_ = kSide;
  channels_ = 3;
  num_classes_ = classes;
  const Found found = find_files(L, path, train);
  for (const std::string& f : found.files) {
    if (found.python)
      read_python(L, f, pixels_, labels_);
    else
      read_binary(L, f, pixels_, labels_);
  }
  class_names_ = classes == 10 ? kCifar10Classes : cifar100_names(found);
  name_ = L.kind + " (" + (train ? "train" : "test") + ", " + std::to_string(labels_.size()) + " images, " +
          (found.python ? "python" : "binary") + " version, " + path + ")";
}

Cifar10::Cifar10(const std::string& path, bool train) { load(10, path, train); }

Cifar100::Cifar100(const std::string& path, bool train) { load(100, path, train); }

}  // namespace gantry::data

// Datasets (see dataset.h for the contract).
#include "gantry/data/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace gantry::data {

namespace fs = std::filesystem;

const std::vector<BadFile>& Dataset::bad_files() const {
  static const std::vector<BadFile> none;
  return none;
}

namespace {

bool is_hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

// All image files below dir (recursive), sorted by path; hidden files and folders skipped.
// `other_files` counts the regular files that are not images (for the "no images" message).
std::vector<std::string> list_images(const fs::path& dir, size_t* other_files) {
  std::vector<std::string> out;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) throw std::runtime_error("image folder " + dir.string() + ": " + ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw std::runtime_error("image folder " + dir.string() + ": " + ec.message());
    const fs::directory_entry& e = *it;
    if (is_hidden(e.path())) {
      if (e.is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (!e.is_regular_file(ec)) continue;
    if (has_image_extension(e.path().string()))
      out.push_back(e.path().string());
    else if (other_files)
      ++*other_files;
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string list_bad(const std::vector<BadFile>& bad, size_t max_names = 20) {
  std::ostringstream os;
  for (size_t i = 0; i < bad.size() && i < max_names; ++i)
    os << "\n  " << bad[i].path << ": " << bad[i].reason;
  if (bad.size() > max_names) os << "\n  ... and " << bad.size() - max_names << " more";
  return os.str();
}

// Runs fn(i) for i in [0, n) on `threads` threads (the folder scan: I/O-bound, so it pays to
// overlap file reads even on a small machine).
template <class Fn>
void parallel_for(size_t n, int threads, Fn fn) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<size_t>(size_t(threads), std::max<size_t>(1, n / 64)));
  if (threads <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < n;) fn(i);
    });
  for (auto& th : pool) th.join();
}

}  // namespace

// ---- ImageFolder ---------------------------------------------------------------------------------

ImageFolder::ImageFolder(const std::string& root, const DatasetOptions& opt) : root_(root) {
  std::error_code ec;
  const fs::path r(root);
  if (root.empty()) throw std::invalid_argument("image folder: no path given");
  if (!fs::exists(r, ec))
    throw std::runtime_error("image folder " + root + ": no such file or directory");
  if (!fs::is_directory(r, ec))
    throw std::runtime_error("image folder " + root +
                             ": is a file, not a folder (pass the folder that holds the images)");

  // Top level: sub-folders (candidate classes) and images directly in the root.
  std::vector<fs::path> subdirs;
  std::vector<std::string> root_images;
  size_t other_files = 0, entries = 0;
  for (const auto& e : fs::directory_iterator(r, fs::directory_options::skip_permission_denied)) {
    ++entries;
    if (is_hidden(e.path())) continue;
    if (e.is_directory(ec))
      subdirs.push_back(e.path());
    else if (e.is_regular_file(ec) && has_image_extension(e.path().string()))
      root_images.push_back(e.path().string());
    else if (e.is_regular_file(ec))
      ++other_files;
  }
  std::sort(subdirs.begin(), subdirs.end());
  std::sort(root_images.begin(), root_images.end());

  std::vector<std::string> empty_classes;
  for (const fs::path& d : subdirs) {
    std::vector<std::string> imgs = list_images(d, &other_files);
    if (imgs.empty()) {
      empty_classes.push_back(d.filename().string());
      continue;
    }
    const int64_t label = static_cast<int64_t>(classes_.size());
    classes_.push_back(d.filename().string());
    for (auto& f : imgs) {
      files_.push_back(std::move(f));
      labels_.push_back(label);
    }
  }
  if (!classes_.empty()) {
    if (!root_images.empty() && !opt.quiet)
      std::cerr << "gantry: warning: image folder " << root << ": " << root_images.size()
                << " image(s) directly in the root are ignored because its sub-folders are "
                   "classes (torchvision ImageFolder layout)\n";
    if (!empty_classes.empty() && !opt.quiet)
      std::cerr << "gantry: warning: image folder " << root << ": sub-folder(s) with no images "
                << "ignored (not classes): " << empty_classes.front()
                << (empty_classes.size() > 1 ? " ..." : "") << "\n";
  } else {
    // Flat layout: the root's own images, one class.
    classes_.push_back(r.filename().empty() ? r.parent_path().filename().string()
                                            : r.filename().string());
    files_ = std::move(root_images);
    labels_.assign(files_.size(), 0);
  }
  if (files_.empty()) {
    if (entries == 0) throw std::runtime_error("image folder " + root + ": the folder is empty");
    throw std::runtime_error("image folder " + root + ": no images found (" +
                             std::to_string(other_files) +
                             " other file(s)); gantry reads .png .jpg .jpeg .bmp .tga .gif");
  }

  // The scan: find unreadable files now rather than hours into a run.
  const size_t n = files_.size();
  std::vector<std::string> reasons(n);
  std::vector<ImageInfo> infos(n);
  if (opt.verify != Verify::None) {
    parallel_for(n, opt.scan_threads, [&](size_t i) {
      if (opt.verify == Verify::Header) {
        reasons[i] = check_image_file(files_[i], &infos[i]);
      } else {
        try {
          Image img = load_image(files_[i], true);
          infos[i] = ImageInfo{img.width, img.height, img.channels};
        } catch (const std::exception& e) {
          // The message starts with the path; keep only the reason.
          std::string m = e.what();
          if (m.rfind(files_[i] + ": ", 0) == 0) m = m.substr(files_[i].size() + 2);
          reasons[i] = m;
        }
      }
    });
  }
  std::vector<std::string> good;
  std::vector<int64_t> good_labels;
  bool any_color = false, any_info = false, same_size = true;
  for (size_t i = 0; i < n; ++i) {
    if (!reasons[i].empty()) {
      bad_.push_back({files_[i], reasons[i]});
      continue;
    }
    good.push_back(std::move(files_[i]));
    good_labels.push_back(labels_[i]);
    if (opt.verify == Verify::None) continue;
    const ImageInfo& inf = infos[i];
    any_color = any_color || inf.channels >= 3;
    if (!any_info) {
      width_ = inf.width;
      height_ = inf.height;
      any_info = true;
    } else if (inf.width != width_ || inf.height != height_) {
      same_size = false;
    }
  }
  if (!bad_.empty()) {
    if (opt.strict)
      throw std::runtime_error("image folder " + root + ": " + std::to_string(bad_.size()) +
                               " unreadable image(s) (strict mode):" + list_bad(bad_));
    if (!opt.quiet)
      std::cerr << "gantry: warning: image folder " << root << ": skipping " << bad_.size()
                << " unreadable image(s) of " << n << ":" << list_bad(bad_) << "\n";
  }
  if (good.empty())
    throw std::runtime_error("image folder " + root + ": none of the " + std::to_string(n) +
                             " image files is readable:" + list_bad(bad_, 5));
  files_ = std::move(good);
  labels_ = std::move(good_labels);
  // Without a scan nothing is known: assume color and mixed sizes.
  channels_ = (opt.verify == Verify::None || any_color) ? 3 : 1;
  if (opt.verify == Verify::None || !same_size) width_ = height_ = 0;
}

Example ImageFolder::get(size_t i) const {
  if (i >= files_.size())
    throw std::out_of_range("ImageFolder::get: index " + std::to_string(i) + " >= size " +
                            std::to_string(files_.size()));
  return Example{load_image(files_[i]), labels_[i]};
}

std::string ImageFolder::name() const {
  return "folder " + root_ + " (" + std::to_string(files_.size()) + " images, " +
         std::to_string(classes_.size()) + " class" + (classes_.size() == 1 ? "" : "es") + ")";
}

// ---- TensorDataset ---------------------------------------------------------------------------------

const uint8_t* TensorDataset::image_data(size_t i) const {
  if (i >= labels_.size())
    throw std::out_of_range(name_ + ": index " + std::to_string(i) + " >= size " +
                            std::to_string(labels_.size()));
  return pixels_.data() + i * size_t(width_) * height_ * channels_;
}

Example TensorDataset::get(size_t i) const {
  const uint8_t* p = image_data(i);
  Example ex;
  ex.image.width = width_;
  ex.image.height = height_;
  ex.image.channels = channels_;
  ex.image.pixels.assign(p, p + size_t(width_) * height_ * channels_);
  ex.label = labels_[i];
  return ex;
}

// ---- IDX -------------------------------------------------------------------------------------------

IdxArray read_idx(const std::string& path, int expected_dims) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw std::runtime_error("IDX file " + path + ": no such file");
  // gzread reads gzip files and passes plain files through unchanged.
  gzFile gz = gzopen(path.c_str(), "rb");
  if (!gz) throw std::runtime_error("IDX file " + path + ": cannot open");
  gzbuffer(gz, 1 << 17);
  std::vector<uint8_t> bytes;
  std::vector<uint8_t> chunk(1 << 20);
  for (;;) {
    const int n = gzread(gz, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int errnum = 0;
      std::string msg = gzerror(gz, &errnum);
      gzclose(gz);
      throw std::runtime_error("IDX file " + path + ": corrupt gzip data (" + msg + ")");
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
  }
  gzclose(gz);

  const uint32_t want_magic = 0x00000800u | uint32_t(expected_dims);
  auto hex = [](uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08X", v);
    return std::string(buf);
  };
  const std::string kind = expected_dims == 1 ? "labels (0x00000801)" : "images (0x00000803)";
  if (bytes.size() < 4)
    throw std::runtime_error("IDX file " + path + ": " + std::to_string(bytes.size()) +
                             " bytes, too short for the 4-byte magic number; expected IDX " + kind);
  const uint32_t magic = uint32_t(bytes[0]) << 24 | uint32_t(bytes[1]) << 16 |
                         uint32_t(bytes[2]) << 8 | bytes[3];
  if (magic != want_magic)
    throw std::runtime_error("IDX file " + path + ": magic number " + hex(magic) + ", expected " +
                             hex(want_magic) + " (unsigned-byte " + kind.substr(0, kind.find(' ')) +
                             ", " + std::to_string(expected_dims) + " dimension(s))" +
                             (magic == (0x800u | uint32_t(expected_dims == 1 ? 3 : 1))
                                  ? "; images and labels files swapped?"
                                  : ""));
  const size_t header = 4 + 4 * size_t(expected_dims);
  if (bytes.size() < header)
    throw std::runtime_error("IDX file " + path + ": truncated header (" +
                             std::to_string(bytes.size()) + " bytes, expected at least " +
                             std::to_string(header) + ")");
  IdxArray a;
  size_t payload = 1;
  for (int d = 0; d < expected_dims; ++d) {
    const uint8_t* p = bytes.data() + 4 + 4 * d;
    const int64_t v = int64_t(uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]);
    a.dims.push_back(v);
    payload *= size_t(v);
  }
  if (bytes.size() != header + payload) {
    std::string dims;
    for (size_t d = 0; d < a.dims.size(); ++d) dims += (d ? "x" : "") + std::to_string(a.dims[d]);
    throw std::runtime_error("IDX file " + path + ": " + std::to_string(bytes.size()) +
                             " bytes" + (path.size() > 3 && path.substr(path.size() - 3) == ".gz"
                                             ? " (uncompressed)"
                                             : "") +
                             ", expected " + std::to_string(header + payload) + " (" +
                             std::to_string(header) + "-byte header + " + dims + ")" +
                             (bytes.size() < header + payload ? ": file truncated" : ""));
  }
  // Drop the header in place (a memmove; no second copy of a big file).
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
  a.data = std::move(bytes);
  return a;
}

void write_idx(const std::string& path, const std::vector<int64_t>& dims, const uint8_t* data,
               bool gzip) {
  if (dims.empty() || dims.size() > 255)
    throw std::invalid_argument("write_idx " + path + ": need 1..255 dimensions");
  std::vector<uint8_t> bytes = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  size_t payload = 1;
  for (int64_t d : dims) {
    if (d < 0 || d > int64_t(UINT32_MAX))
      throw std::invalid_argument("write_idx " + path + ": bad dimension " + std::to_string(d));
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<uint8_t>(uint64_t(d) >> s));
    payload *= size_t(d);
  }
  bytes.insert(bytes.end(), data, data + payload);
  if (!gzip) return write_file_atomic(path, bytes);
  gzFile gz = gzopen(path.c_str(), "wb");
  if (!gz) throw std::runtime_error("write_idx: cannot create " + path);
  const bool ok = gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())) ==
                  static_cast<int>(bytes.size());
  if (gzclose(gz) != Z_OK || !ok) throw std::runtime_error("write_idx: cannot write " + path);
}

IdxDataset::IdxDataset(const std::string& images_path, const std::string& labels_path,
                       const std::string& name) {
  IdxArray images = read_idx(images_path, 3);
  IdxArray labels = read_idx(labels_path, 1);
  if (images.dims[0] != labels.dims[0])
    throw std::runtime_error(name + ": " + images_path + " holds " + std::to_string(images.dims[0]) +
                             " images but " + labels_path + " holds " +
                             std::to_string(labels.dims[0]) + " labels");
  if (images.dims[0] == 0) throw std::runtime_error(name + ": " + images_path + " holds no images");
  height_ = static_cast<int>(images.dims[1]);
  width_ = static_cast<int>(images.dims[2]);
  channels_ = 1;
  pixels_ = std::move(images.data);
  labels_.assign(labels.data.begin(), labels.data.end());
  num_classes_ = *std::max_element(labels_.begin(), labels_.end()) + 1;
  if (name == "fashion-mnist" && num_classes_ <= 10) {
    num_classes_ = 10;
    class_names_ = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  } else if (name == "mnist" && num_classes_ <= 10) {
    num_classes_ = 10;
    for (int d = 0; d < 10; ++d) class_names_.push_back(std::to_string(d));
  }
  name_ = name + " (" + std::to_string(labels_.size()) + " images " + std::to_string(width_) + "x" +
          std::to_string(height_) + ", " + images_path + ")";
}

std::shared_ptr<IdxDataset> IdxDataset::from_dir(const std::string& dir, bool train,
                                                 const std::string& kind) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw std::runtime_error(kind + " " + dir + ": no such file or directory");
  if (!fs::is_directory(dir, ec))
    throw std::runtime_error(kind + " " + dir + ": not a folder (pass the folder holding the " +
                             "*-idx3-ubyte and *-idx1-ubyte files)");
  const std::string split = train ? "train" : "t10k";
  // The usual spellings: "train-images-idx3-ubyte" (Fashion-MNIST, torchvision) and
  // "train-images.idx3-ubyte" (the original MNIST site), each also gzipped.
  auto find = [&](const fs::path& d, const std::string& what, const std::string& idx) {
    for (const std::string sep : {"-", "."})
      for (const std::string gz : {".gz", ""}) {
        const fs::path p = d / (split + "-" + what + sep + idx + "-ubyte" + gz);
        if (fs::is_regular_file(p, ec)) return p.string();
      }
    return std::string();
  };
  // The folder itself, or torchvision's layout under its root: <root>/MNIST/raw,
  // <root>/FashionMNIST/raw (and <root>/raw when given the MNIST folder itself).
  const std::string tv = kind == "fashion-mnist" ? "FashionMNIST" : "MNIST";
  for (const fs::path& d : {fs::path(dir), fs::path(dir) / "raw", fs::path(dir) / tv / "raw"}) {
    const std::string images = find(d, "images", "idx3");
    if (images.empty()) continue;
    const std::string labels = find(d, "labels", "idx1");
    if (labels.empty())
      throw std::runtime_error(kind + " " + d.string() + ": has " + fs::path(images).filename().string() +
                               " but no " + split + "-labels-idx1-ubyte[.gz] file beside it");
    return std::make_shared<IdxDataset>(images, labels, kind);
  }
  throw std::runtime_error(kind + " " + dir + ": no " + split + "-images-idx3-ubyte[.gz] file (expected the IDX files of " +
                           kind + " in this folder, or torchvision's layout under it: " + tv + "/raw/)");
}

// ---- defaults and factory ---------------------------------------------------------------------------

std::string default_fashion_mnist_dir() {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  std::error_code ec;
  return fs::is_regular_file(dir + "/train-images-idx3-ubyte.gz", ec) ? dir : std::string();
}

const std::vector<std::string>& dataset_kinds() {
  static const std::vector<std::string> kinds = {"fashion-mnist", "mnist", "cifar10", "cifar100", "lsun", "folder"};
  return kinds;
}

std::string dataset_data_hint(const std::string& kind) {
  if (kind == "mnist")
    return "the folder with the MNIST IDX files (train-images-idx3-ubyte[.gz] ...), or torchvision's root "
           "holding MNIST/raw/";
  if (kind == "cifar10")
    return "the CIFAR-10 folder: the binary version (cifar-10-batches-bin/) or the python version "
           "(cifar-10-batches-py/, as torchvision downloads it), or the folder above either";
  if (kind == "cifar100")
    return "the CIFAR-100 folder: cifar-100-binary/ or cifar-100-python/ (torchvision's), or the folder above either";
  if (kind == "lsun")
    return "an LSUN database folder (e.g. bedroom_train_lmdb/, holding data.mdb) or the folder holding "
           "several (--classes picks some)";
  if (kind == "folder") return "a folder of images, or one sub-folder per class (e.g. CelebA's img_align_celeba)";
  return "";
}

std::shared_ptr<Dataset> open_dataset(const std::string& kind, const std::string& path, bool train,
                                      const DatasetOptions& opt) {
  if (kind == "fashion-mnist") {
    std::string dir = path.empty() ? default_fashion_mnist_dir() : path;
    if (dir.empty())
      throw std::invalid_argument(
          "fashion-mnist: /usr/share/datasets/fashion-mnist not found; install the Debian "
          "package dataset-fashion-mnist or pass --data DIR holding the IDX files");
    return IdxDataset::from_dir(dir, train, kind);
  }
  const auto& kinds = dataset_kinds();
  if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) {
    std::string list;
    for (size_t i = 0; i < kinds.size(); ++i) list += (i == 0 ? "" : i + 1 == kinds.size() ? " or " : ", ") + kinds[i];
    throw std::invalid_argument("unknown dataset kind '" + kind + "'; choose " + list);
  }
  if (path.empty())
    throw std::invalid_argument(kind + ": needs --data PATH: " + dataset_data_hint(kind) +
                                (kind == "mnist" ? " (Debian has no MNIST package; --dataset fashion-mnist works with no download)" : ""));
  if (kind == "mnist") return IdxDataset::from_dir(path, train, kind);
  if (kind == "cifar10") return std::make_shared<Cifar10>(path, train);
  if (kind == "cifar100") return std::make_shared<Cifar100>(path, train);
  if (kind == "lsun") return std::make_shared<Lsun>(path, train, opt.classes);
  return std::make_shared<ImageFolder>(path, opt);
}

}  // namespace gantry::data

namespace gantry::data {

Subset::Subset(std::shared_ptr<Dataset> base, size_t count, uint64_t seed) : base_(std::move(base)) {
  if (!base_) throw std::invalid_argument("Subset: no dataset");
  const size_t n = base_->size();
  if (count == 0 || count > n)
    throw std::invalid_argument("subset of " + std::to_string(count) + " images: " + base_->name() + " has " +
                                std::to_string(n) + "; give 1.." + std::to_string(n));
  // The first `count` places of a Fisher-Yates shuffle, then sorted (reading order).
  std::vector<size_t> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = i;
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < count; ++i) {
    const size_t j = i + static_cast<size_t>(rng() % (n - i));
    std::swap(all[i], all[j]);
  }
  index_.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(count));
  std::sort(index_.begin(), index_.end());
}

std::string Subset::name() const {
  return base_->name() + ", a subset of " + std::to_string(index_.size()) + " images";
}

}  // namespace gantry::data

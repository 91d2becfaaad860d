#pragma once
// Datasets: indexable collections of (image, label) examples behind one small interface.
//
// Contract:
// - Example::image is the decoded 8-bit image, HWC, 1 (gray) or 3 (RGB) channels, at the size
//   stored in the file. Turning it into float CHW in [-1, 1] is the transforms' job
//   (transforms.h), done by the loader straight into the batch tensor.
// - get(i) is const and thread-safe: the loader calls it from several threads at once.
//   It throws std::out_of_range for i >= size() and std::runtime_error, naming the file, when
//   an image cannot be decoded.
// - Construction validates everything it can cheaply: a missing path, an empty folder, a
//   folder with no images, a CIFAR/IDX file of the wrong size or magic number all throw at
//   construction, naming the file and what was expected and found. Image folders are scanned
//   at construction (header + truncation check, or a full decode on request); unreadable
//   files are skipped and reported by name (bad_files(), and a warning on stderr), or are
//   fatal with strict = true.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gantry/data/image.h"

namespace gantry::data {

struct Example {
  Image image;        // uint8 HWC, 1 or 3 channels
  int64_t label = 0;  // class index in [0, num_classes)
};

// A file a dataset skipped, and why.
struct BadFile {
  std::string path;
  std::string reason;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  virtual Example get(size_t i) const = 0;
  virtual int64_t num_classes() const = 0;
  // The channels the images have as stored: 1 for gray datasets (MNIST), 3 for color; an
  // image folder says 3 when any image has color, else 1.
  virtual int channels() const = 0;
  // The common image size, or 0 when images differ in size (image folders).
  virtual int width() const { return 0; }
  virtual int height() const { return 0; }
  // Short description for logs: "cifar10 (train, 50000 images)".
  virtual std::string name() const = 0;
  // Class names in label order (folder names; CIFAR-10 and Fashion-MNIST's names).
  virtual std::vector<std::string> class_names() const { return {}; }
  // The file an example comes from ("" when not one file per example).
  virtual std::string source(size_t i) const { return {}; }
  // Files skipped at construction (image folders).
  virtual const std::vector<BadFile>& bad_files() const;
};

// How thoroughly an image folder is checked at construction.
enum class Verify {
  None,    // trust the file names (fastest; bad files surface later, in the loader)
  Header,  // stbi_info + truncation check per file: cheap, catches most damage (default)
  Full,    // decode every image once (slow for big folders: ~1-2 ms per JPEG per core)
};

struct DatasetOptions {
  bool strict = false;            // a bad file is an error instead of a skipped warning
  Verify verify = Verify::Header;
  int scan_threads = 0;           // threads for the folder scan; 0 = hardware concurrency
  bool quiet = false;             // no warnings on stderr (bad_files() still lists them)
  std::vector<std::string> classes;  // lsun: the categories to read (empty: all found)
};

// ---- image folder -----------------------------------------------------------------------------
// Recursive; files with extension png jpg jpeg bmp tga gif webp (any case), hidden files and folders
// (".name") ignored, sorted by path (byte order) so the order is the same everywhere.
// Layout, as torchvision's ImageFolder: when the root holds sub-folders with images, each
// top-level sub-folder is a class (labels in sorted name order; images anywhere below it;
// images directly in the root are then ignored, with a warning). Otherwise the root's own
// images form one class, label 0. CelebA's img_align_celeba/ works either way.
class ImageFolder : public Dataset {
 public:
  explicit ImageFolder(const std::string& root, const DatasetOptions& opt = {});
  size_t size() const override { return files_.size(); }
  Example get(size_t i) const override;
  int64_t num_classes() const override { return static_cast<int64_t>(classes_.size()); }
  int channels() const override { return channels_; }
  int width() const override { return width_; }
  int height() const override { return height_; }
  std::string name() const override;
  std::vector<std::string> class_names() const override { return classes_; }
  std::string source(size_t i) const override { return files_.at(i); }
  const std::vector<BadFile>& bad_files() const override { return bad_; }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
  std::vector<std::string> classes_;
  std::vector<BadFile> bad_;
  int channels_ = 3;
  int width_ = 0, height_ = 0;
};

// ---- in-memory datasets (CIFAR-10, IDX) ---------------------------------------------------------
// All images of one size, held as one byte array (HWC per image); get() copies one out.
class TensorDataset : public Dataset {
 public:
  size_t size() const override { return labels_.size(); }
  Example get(size_t i) const override;
  int64_t num_classes() const override { return num_classes_; }
  int channels() const override { return channels_; }
  int width() const override { return width_; }
  int height() const override { return height_; }
  std::string name() const override { return name_; }
  std::vector<std::string> class_names() const override { return class_names_; }
  // Raw access (HWC bytes of image i) for code that wants to skip the copy.
  const uint8_t* image_data(size_t i) const;
  int64_t label(size_t i) const { return labels_.at(i); }

 protected:
  TensorDataset() = default;
  std::vector<uint8_t> pixels_;  // size() * height * width * channels
  std::vector<int64_t> labels_;
  int width_ = 0, height_ = 0, channels_ = 0;
  int64_t num_classes_ = 0;
  std::string name_;
  std::vector<std::string> class_names_;
};

// CIFAR-10 and CIFAR-100 (32x32 RGB), in either version their site offers:
// - binary: records of a label byte (CIFAR-100: a coarse and a fine label byte) and 1024 R,
//   1024 G, 1024 B bytes of a 32x32 image, row-major; files data_batch_1.bin ...
//   data_batch_5.bin and test_batch.bin (CIFAR-100: train.bin, test.bin);
// - python ("cifar-10-python.tar.gz", what torchvision downloads): pickled dicts (Python 2's
//   cPickle) with 'data', a uint8 array [N, 3072] in the same planar order, and 'labels'
//   (CIFAR-100: 'fine_labels'); files data_batch_1 ... data_batch_5, test_batch (CIFAR-100:
//   train, test), read by gantry's own restricted unpickler (core/pickle.h).
// `path` is one batch file, a folder holding either version, or the folder above the one the
// tarball unpacks to (cifar-10-batches-bin/, cifar-10-batches-py/, cifar-100-binary/,
// cifar-100-python/) — torchvision's `root`. CIFAR-100 uses the 100 fine labels; its class
// names come from the meta file beside the batches (meta, or fine_label_names.txt), else they
// are the numbers "0" ... "99". Errors name the file and what was expected.
class Cifar : public TensorDataset {
 protected:
  void load(int classes, const std::string& path, bool train);
};

class Cifar10 : public Cifar {
 public:
  Cifar10(const std::string& path, bool train = true);
  static constexpr int kRecordBytes = 3073;  // binary version: label + 3072 pixels
};

class Cifar100 : public Cifar {
 public:
  Cifar100(const std::string& path, bool train = true);
  static constexpr int kRecordBytes = 3074;  // binary version: coarse + fine label + 3072 pixels
};

// LSUN (the scenes the DCGAN paper trained on; the PyTorch example's --dataset lsun): one LMDB
// database per category, whose values are encoded images (JPEG, or WebP in some copies),
// decoded on get(). `path` is one database folder (holding data.mdb, e.g. bedroom_train_lmdb/),
// or the folder holding several: then `classes` picks them as the PyTorch example's --classes
// does ("bedroom" means bedroom_train_lmdb, or bedroom_val_lmdb when !train), and no classes
// means every <category>_train_lmdb (or _val_lmdb) there, in sorted order, each one class.
// Opened read-only without a lock file (as torchvision does), so the databases can live on a
// read-only disk; every loader thread reads through its own transaction. The keys are read
// once at construction; an image that fails to decode is an error at get() naming the
// database and key (the loader skips it unless strict). Needs liblmdb at build time
// (lsun_supported()); without it the constructor throws saying so.
class Lsun : public Dataset {
 public:
  Lsun(const std::string& path, bool train = true, const std::vector<std::string>& classes = {});
  ~Lsun() override;
  size_t size() const override { return labels_.size(); }
  Example get(size_t i) const override;
  int64_t num_classes() const override { return static_cast<int64_t>(class_names_.size()); }
  int channels() const override { return 3; }
  std::string name() const override { return name_; }
  std::vector<std::string> class_names() const override { return class_names_; }
  std::string source(size_t i) const override;  // "<database> key <key>"

 private:
  struct Db;
  std::vector<std::unique_ptr<Db>> dbs_;
  std::vector<char> keys_;             // every key, back to back
  std::vector<size_t> key_start_;      // key i is keys_[key_start_[i], key_start_[i + 1])
  std::vector<int64_t> labels_;        // the class (database) of each image
  std::vector<std::string> class_names_;
  std::string name_;
};
bool lsun_supported();
// "bedroom,church_outdoor" -> {"bedroom", "church_outdoor"} (empty items dropped): the
// --classes flag's list.
std::vector<std::string> split_classes(const std::string& comma_list);

// IDX files (MNIST, Fashion-MNIST): big-endian; images magic 0x00000803 (u8, 3 dims: count,
// rows, cols), labels magic 0x00000801 (u8, 1 dim). Plain or gzip-compressed (read through
// zlib, which passes plain files through). num_classes = largest label + 1, and 10 (with the
// class names) for name "mnist" and "fashion-mnist".
class IdxDataset : public TensorDataset {
 public:
  IdxDataset(const std::string& images_path, const std::string& labels_path,
             const std::string& name = "idx");
  // Finds {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (also the "images.idx3-ubyte"
  // spelling of the original MNIST files) in `dir`; kind names the dataset in messages.
  static std::shared_ptr<IdxDataset> from_dir(const std::string& dir, bool train,
                                              const std::string& kind);
};

// Reads a whole IDX file (plain or gzip). Checks magic (data type u8 and dimension count) and
// that the size matches the dimensions; throws naming the file otherwise. Returns the
// dimensions and the payload.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};
IdxArray read_idx(const std::string& path, int expected_dims);
// Writes an unsigned-byte IDX file (magic 0x0000080N, N = dims.size()), gzip-compressed when
// gzip is true (then name it *.gz). For tests and for exporting data in MNIST's format.
void write_idx(const std::string& path, const std::vector<int64_t>& dims, const uint8_t* data,
               bool gzip = false);

// ---- the default data and the factory -----------------------------------------------------------
// Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist. Returns that path
// when it holds the files, else an empty string.
std::string default_fashion_mnist_dir();

// The kinds open_dataset opens: "fashion-mnist" (path may be empty: the Debian package),
// "mnist" (path required: Debian has no MNIST package), "cifar10", "cifar100", "lsun", "folder".
const std::vector<std::string>& dataset_kinds();
// What `path` must be for `kind`, for help texts and errors ("" for fashion-mnist: optional).
std::string dataset_data_hint(const std::string& kind);

// A fixed random subset of another dataset (torch.utils.data.Subset of StyleGAN2-ADA's
// --subset): `count` distinct images drawn with `seed` (a Fisher-Yates shuffle on mt19937_64,
// so the same on every machine), kept in their original order. For training on little data,
// the setting ADA is for. Throws std::invalid_argument when count is 0 or above base's size.
class Subset : public Dataset {
 public:
  Subset(std::shared_ptr<Dataset> base, size_t count, uint64_t seed = 0);
  size_t size() const override { return index_.size(); }
  Example get(size_t i) const override { return base_->get(index_.at(i)); }
  int64_t num_classes() const override { return base_->num_classes(); }
  int channels() const override { return base_->channels(); }
  int width() const override { return base_->width(); }
  int height() const override { return base_->height(); }
  std::string name() const override;
  std::vector<std::string> class_names() const override { return base_->class_names(); }
  std::string source(size_t i) const override { return base_->source(index_.at(i)); }
  const std::vector<BadFile>& bad_files() const override { return base_->bad_files(); }
  const std::vector<size_t>& indices() const { return index_; }  // into base, ascending

 private:
  std::shared_ptr<Dataset> base_;
  std::vector<size_t> index_;
};

// Throws std::invalid_argument for an unknown kind or a missing path, naming the choices.
std::shared_ptr<Dataset> open_dataset(const std::string& kind, const std::string& path,
                                      bool train = true, const DatasetOptions& opt = {});

}  // namespace gantry::data

// DataLoader (see loader.h for the contract).
//
// Design: the unit of work is a whole batch. Batches are numbered k = 0, 1, ... from the start
// position. A worker claims the lowest unclaimed k (as long as k < consumed + prefetch, which
// bounds memory), builds that batch straight into its own tensor, and marks its slot done; the
// consumer waits for slot `consumed` and so receives batches in order whatever the timing.
// Everything random is a pure function of (seed, epoch, index), so which worker builds a batch
// never changes its contents.
#include "gantry/data/loader.h"

#include <algorithm>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <string>

namespace gantry::data {

namespace {

// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-mixed, fully specified generator, so the
// shuffle is the same on every compiler and standard library (std::uniform_int_distribution
// is not specified bit for bit).
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct SplitMix64 {
  uint64_t state;
  uint64_t next() { return mix64(state += 0x9E3779B97F4A7C15ull); }
  // Uniform in [0, range) without modulo bias (Lemire's multiply-shift with rejection).
  uint64_t below(uint64_t range) {
    unsigned __int128 m = static_cast<unsigned __int128>(next()) * range;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < range) {
      const uint64_t threshold = (0 - range) % range;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(next()) * range;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }
};

// Distinct salts keep the shuffle stream and the flip decisions independent.
constexpr uint64_t kShuffleSalt = 0x53485546464C4531ull;  // "SHUFFLE1"
constexpr uint64_t kFlipSalt = 0x464C495030303031ull;     // "FLIP0001"

// Thrown inside a worker to abandon a batch when the loader stops.
struct Cancelled {};

}  // namespace

std::vector<int64_t> epoch_permutation(size_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<int64_t>(i);
  if (!shuffle || n < 2) return p;
  SplitMix64 rng{mix64(mix64(seed ^ kShuffleSalt) ^ static_cast<uint64_t>(epoch))};
  for (size_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng.below(i + 1)]);
  return p;
}

bool flip_decision(uint64_t seed, int64_t epoch, int64_t index) {
  uint64_t h = mix64(seed ^ kFlipSalt);
  h = mix64(h ^ static_cast<uint64_t>(epoch));
  h = mix64(h ^ static_cast<uint64_t>(index));
  return (h >> 63) != 0;
}

Tensor default_batch_allocator(const Shape& shape) { return Tensor::empty(shape); }

Tensor Batch::label_tensor() const {
  Tensor t = Tensor::empty({static_cast<int64_t>(labels.size())});
  float* d = t.data();
  for (size_t i = 0; i < labels.size(); ++i) d[i] = static_cast<float>(labels[i]);
  return t;
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), opt_(std::move(options)) {
  if (!dataset_) throw std::invalid_argument("DataLoader: null dataset");
  const int64_t n = static_cast<int64_t>(dataset_->size());
  if (n == 0) throw std::invalid_argument("DataLoader: dataset " + dataset_->name() + " is empty");
  if (opt_.batch_size <= 0)
    throw std::invalid_argument("DataLoader: batch_size must be positive, got " +
                                std::to_string(opt_.batch_size));
  if (opt_.num_workers < 0)
    throw std::invalid_argument("DataLoader: num_workers must be >= 0, got " +
                                std::to_string(opt_.num_workers));
  if (opt_.start_epoch < 0 || opt_.num_epochs < 0)
    throw std::invalid_argument("DataLoader: start_epoch and num_epochs must be >= 0");
  if (!opt_.allocator) opt_.allocator = default_batch_allocator;

  channels_ = opt_.transform.channels ? opt_.transform.channels : dataset_->channels();
  if (channels_ != 1 && channels_ != 3)
    throw std::invalid_argument("DataLoader: channels must be 1 or 3 (0 = the dataset's), got " +
                                std::to_string(channels_));
  if (opt_.transform.image_size > 0) {
    height_ = width_ = opt_.transform.image_size;
  } else {
    height_ = dataset_->height();
    width_ = dataset_->width();
    if (height_ <= 0 || width_ <= 0)
      throw std::invalid_argument("DataLoader: " + dataset_->name() +
                                  " has images of different sizes; set transform.image_size "
                                  "(e.g. 64) so they are resized and cropped to one size");
  }

  batches_per_epoch_ = opt_.drop_last ? n / opt_.batch_size
                                      : (n + opt_.batch_size - 1) / opt_.batch_size;
  if (batches_per_epoch_ == 0)
    throw std::invalid_argument("DataLoader: " + dataset_->name() + " has " + std::to_string(n) +
                                " examples, fewer than batch_size " +
                                std::to_string(opt_.batch_size) +
                                " with drop_last: no batch would be produced; lower the batch "
                                "size or set drop_last = false");
  if (opt_.start_batch < 0 || opt_.start_batch >= batches_per_epoch_)
    throw std::invalid_argument("DataLoader: start_batch " + std::to_string(opt_.start_batch) +
                                " outside [0, " + std::to_string(batches_per_epoch_) + ")");
  prefetch_ = opt_.prefetch > 0 ? opt_.prefetch : 2 * std::max(1, opt_.num_workers);
  origin_epoch_ = opt_.start_epoch;
  origin_batch_ = opt_.start_batch;
  start_workers();
}

DataLoader::~DataLoader() { stop_workers(); }

bool DataLoader::finished(int64_t k) const {
  if (opt_.num_epochs == 0) return false;
  const int64_t absolute = origin_epoch_ * batches_per_epoch_ + origin_batch_ + k;
  return absolute >= (opt_.start_epoch + opt_.num_epochs) * batches_per_epoch_;
}

void DataLoader::start_workers() {
  stop_ = false;
  for (int t = 0; t < opt_.num_workers; ++t) workers_.emplace_back([this] { worker_loop(); });
}

void DataLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  ready_cv_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
  workers_.clear();
}

void DataLoader::seek(int64_t epoch, int64_t batch) {
  if (epoch < 0 || batch < 0 || batch >= batches_per_epoch_)
    throw std::invalid_argument("DataLoader::seek: (epoch " + std::to_string(epoch) + ", batch " +
                                std::to_string(batch) + ") invalid; batches per epoch: " +
                                std::to_string(batches_per_epoch_));
  stop_workers();
  {
    std::lock_guard<std::mutex> lock(mu_);
    slots_.clear();
    origin_epoch_ = epoch;
    origin_batch_ = batch;
    consumed_ = 0;
    next_claim_ = 0;
  }
  start_workers();
}

std::shared_ptr<const std::vector<int64_t>> DataLoader::permutation(int64_t epoch) {
  std::lock_guard<std::mutex> lock(perm_mu_);
  auto it = perms_.find(epoch);
  if (it != perms_.end()) return it->second;
  auto p = std::make_shared<const std::vector<int64_t>>(
      epoch_permutation(dataset_->size(), opt_.seed, epoch, opt_.shuffle));
  perms_[epoch] = p;
  // Workers span at most two epochs at a time (the window is small): keep a few, drop the oldest.
  while (perms_.size() > 3) perms_.erase(perms_.begin());
  return p;
}

void DataLoader::make_batch(int64_t k, Batch& batch) {
  const int64_t absolute = origin_epoch_ * batches_per_epoch_ + origin_batch_ + k;
  const int64_t epoch = absolute / batches_per_epoch_;
  const int64_t b = absolute % batches_per_epoch_;
  const int64_t n = static_cast<int64_t>(dataset_->size());
  const auto perm = permutation(epoch);
  const int64_t first = b * opt_.batch_size;
  const int64_t count = std::min(opt_.batch_size, n - first);
  const int64_t per_image = channels_ * height_ * width_;

  batch.epoch = epoch;
  batch.index = b;
  batch.images = opt_.allocator({count, channels_, height_, width_});
  batch.labels.resize(count);
  batch.indices.resize(count);
  float* out = batch.images.data();
  const bool threaded = opt_.num_workers > 0;

  for (int64_t j = 0; j < count; ++j) {
    if (threaded) {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) throw Cancelled{};
    }
    const int64_t pos = first + j;
    // A bad image is replaced by the next example of this epoch's order: deterministic, and
    // the batch keeps its size. Give up after a run of failures (something is badly wrong).
    for (int64_t attempt = 0;; ++attempt) {
      const int64_t idx = (*perm)[static_cast<size_t>((pos + attempt) % n)];
      try {
        Example ex = dataset_->get(static_cast<size_t>(idx));
        if (opt_.transform.image_size == 0 &&
            (ex.image.width != width_ || ex.image.height != height_))
          throw std::invalid_argument(
              "DataLoader: example " + std::to_string(idx) +
              (dataset_->source(idx).empty() ? "" : " (" + dataset_->source(idx) + ")") + " is " +
              std::to_string(ex.image.width) + "x" + std::to_string(ex.image.height) +
              ", expected " + std::to_string(width_) + "x" + std::to_string(height_) +
              "; set transform.image_size to resize");
        const bool flip = opt_.transform.random_flip && flip_decision(opt_.seed, epoch, idx);
        apply_transform(ex.image, opt_.transform, static_cast<int>(channels_), flip,
                        out + j * per_image);
        batch.labels[j] = ex.label;
        batch.indices[j] = idx;
        break;
      } catch (const std::runtime_error& e) {
        // runtime_error = the data is bad (decode failure); other exceptions are bugs or
        // bad options and always propagate.
        if (opt_.strict) throw;
        bool first_time;
        {
          std::lock_guard<std::mutex> lock(fail_mu_);
          first_time = failed_.insert(idx).second;
        }
        if (first_time && !opt_.quiet)
          std::cerr << "gantry: warning: skipping example " << idx << ": " << e.what() << "\n";
        if (attempt + 1 >= std::min<int64_t>(n, 100))
          throw std::runtime_error(std::string("DataLoader: ") + std::to_string(attempt + 1) +
                                   " examples in a row failed to load; last: " + e.what());
      }
    }
  }
}

void DataLoader::worker_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] {
      return stop_ || (next_claim_ < consumed_ + prefetch_ && !finished(next_claim_));
    });
    if (stop_) return;
    const int64_t k = next_claim_++;
    slots_[k];  // claimed, not done
    lock.unlock();
    Batch b;
    std::exception_ptr err;
    try {
      make_batch(k, b);
    } catch (const Cancelled&) {
      lock.lock();
      return;
    } catch (...) {
      err = std::current_exception();
    }
    lock.lock();
    if (stop_) return;
    Slot& s = slots_[k];
    s.batch = std::move(b);
    s.error = err;
    s.done = true;
    ready_cv_.notify_all();
  }
}

bool DataLoader::next(Batch& out) {
  if (opt_.num_workers == 0) {
    if (finished(consumed_)) return false;
    const int64_t k = consumed_++;
    out = Batch{};
    make_batch(k, out);
    return true;
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (finished(consumed_)) return false;
  const int64_t k = consumed_;
  ready_cv_.wait(lock, [&] {
    auto it = slots_.find(k);
    return stop_ || (it != slots_.end() && it->second.done);
  });
  if (stop_) return false;
  Slot s = std::move(slots_[k]);
  slots_.erase(k);
  ++consumed_;
  lock.unlock();
  work_cv_.notify_all();  // room in the window for one more batch
  if (s.error) std::rethrow_exception(s.error);
  out = std::move(s.batch);
  return true;
}

std::vector<int64_t> DataLoader::failed_indices() const {
  std::lock_guard<std::mutex> lock(fail_mu_);
  return {failed_.begin(), failed_.end()};
}

}  // namespace gantry::data

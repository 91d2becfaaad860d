#pragma once
// DataLoader: shuffles, batches and transforms a Dataset on worker threads, ahead of the
// training step, and hands out batches in order.
//
// Contract:
// - Order. The examples of epoch e are visited in permutation(seed, e) (a Fisher-Yates shuffle
//   driven by a SplitMix64 stream keyed on (seed, e); the identity when shuffle is off). The
//   order depends on nothing else: not on the worker count, not on timing, not on earlier
//   epochs. Batch b of epoch e holds positions [b * B, (b + 1) * B) of that permutation, so a
//   run resumed with start_epoch = e, start_batch = b sees exactly the batches it would have
//   seen (see also seek()).
// - Random flip. Whether example i is mirrored in epoch e is a hash of (seed, e, i): the same
//   with 0, 1 or 16 workers.
// - Batches. images: a float tensor [N, C, S, S] in [-1, 1] (transforms.h), N = batch_size
//   except a last short batch when drop_last is false; labels: N int64 class indices. Each
//   batch owns fresh storage (allocated through LoaderOptions::allocator), so a consumer may
//   keep it as long as it likes.
// - Threads. num_workers threads decode and transform; at most `prefetch` batches are ready or
//   in the making at any time (memory stays bounded). num_workers = 0 does the work inside
//   next(). The destructor (and seek()) stops and joins the workers promptly, within one image
//   decode, even when the consumer stopped early; no thread outlives the loader.
// - Errors. An image that cannot be decoded: with strict = false a warning names the file
//   once and the next example of the epoch's order takes its place (deterministically); with
//   strict = true, next() throws the error (naming the file). Any other worker exception is
//   rethrown by next() in the consumer's thread.
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gantry/core/tensor.h"
#include "gantry/data/dataset.h"
#include "gantry/data/transforms.h"

namespace gantry::data {

// Allocates the [N, C, H, W] float buffer of one batch. The default is Tensor::empty on the CPU;
// a CUDA build can pass an allocator of pinned (page-locked) host memory so that copies to the
// GPU are asynchronous. This is the one place batch memory comes from.
using BatchAllocator = std::function<Tensor(const Shape&)>;
Tensor default_batch_allocator(const Shape& shape);

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  bool drop_last = true;  // drop a last batch smaller than batch_size
  uint64_t seed = 0;
  int num_workers = 2;    // decoding threads; 0 = decode inside next()
  int prefetch = 0;       // batches ready or in flight at most; 0 = 2 * max(1, num_workers)
  int64_t start_epoch = 0;
  int64_t start_batch = 0;  // batch index within start_epoch
  int64_t num_epochs = 0;   // epochs to deliver, counting start_epoch; 0 = unlimited
  bool strict = false;      // an undecodable image is an error instead of a skipped warning
  bool quiet = false;       // no warnings on stderr
  TransformOptions transform;
  BatchAllocator allocator;  // empty = default_batch_allocator
};

struct Batch {
  Tensor images;                // [N, C, S, S] float in [-1, 1]
  std::vector<int64_t> labels;  // N class indices
  int64_t epoch = 0;            // which epoch and which batch of it this is
  int64_t index = 0;
  std::vector<int64_t> indices;  // dataset index of each example (after any substitution)
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  // The labels as a float tensor [N] (gantry tensors are float32).
  Tensor label_tensor() const;
};

// The permutation of epoch `epoch` (identity when !shuffle). Exposed for tests and tools.
std::vector<int64_t> epoch_permutation(size_t n, uint64_t seed, int64_t epoch, bool shuffle = true);
// Whether example `index` is flipped in epoch `epoch` (the loader's random_flip decision).
bool flip_decision(uint64_t seed, int64_t epoch, int64_t index);

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch, in order. Returns false when num_epochs epochs have been delivered (never
  // when num_epochs is 0). Blocks while the workers are behind.
  bool next(Batch& out);
  // Drops everything prefetched and continues from batch `batch` of epoch `epoch`.
  void seek(int64_t epoch, int64_t batch = 0);

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  const Dataset& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return opt_; }
  // The batch shape [batch_size, C, S, S].
  Shape batch_shape() const { return {opt_.batch_size, channels_, height_, width_}; }
  // Dataset indices that failed to decode (and were replaced) so far.
  std::vector<int64_t> failed_indices() const;

 private:
  struct Slot {
    bool done = false;
    Batch batch;
    std::exception_ptr error;
  };

  void start_workers();
  void stop_workers();
  void worker_loop();
  // Fills `batch` with global batch number k (0 = the batch at the start position).
  void make_batch(int64_t k, Batch& batch);
  std::shared_ptr<const std::vector<int64_t>> permutation(int64_t epoch);
  bool finished(int64_t k) const;

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions opt_;
  int64_t channels_ = 0, height_ = 0, width_ = 0;
  int64_t batches_per_epoch_ = 0;
  int prefetch_ = 0;

  // Position: global batch k maps to (origin_epoch_, origin_batch_) + k batches.
  int64_t origin_epoch_ = 0, origin_batch_ = 0;
  int64_t consumed_ = 0;  // batches handed out since the origin

  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // workers wait for room in the window
  std::condition_variable ready_cv_;  // the consumer waits for its batch
  bool stop_ = false;
  int64_t next_claim_ = 0;            // next batch number a worker will take
  std::map<int64_t, Slot> slots_;     // claimed batches (in the making or done)
  std::vector<std::thread> workers_;

  std::mutex perm_mu_;
  std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> perms_;  // small cache

  mutable std::mutex fail_mu_;
  std::set<int64_t> failed_;
};

}  // namespace gantry::data

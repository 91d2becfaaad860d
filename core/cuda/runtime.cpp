// The CUDA device layer (core/cuda_runtime.h): device discovery, the stream-ordered memory
// pool, pinned host memory, copies on the compute stream and the library handles.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "gantry/core/cuda/internal.h"

namespace gantry::cuda {

// ---- error reporting ----------------------------------------------------------------------
namespace detail {

void throw_error(const char* library, const char* status_name, const char* detail,
                 const char* call, const char* file, int line) {
  std::ostringstream os;
  os << library << " error " << status_name;
  if (detail) os << " (" << detail << ")";
  os << " in " << call << " at " << file << ":" << line;
  throw CudaError(os.str());
}

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_<unknown>";
}

const char* curand_status_name(curandStatus_t s) {
  switch (s) {
    case CURAND_STATUS_SUCCESS: return "CURAND_STATUS_SUCCESS";
    case CURAND_STATUS_VERSION_MISMATCH: return "CURAND_STATUS_VERSION_MISMATCH";
    case CURAND_STATUS_NOT_INITIALIZED: return "CURAND_STATUS_NOT_INITIALIZED";
    case CURAND_STATUS_ALLOCATION_FAILED: return "CURAND_STATUS_ALLOCATION_FAILED";
    case CURAND_STATUS_TYPE_ERROR: return "CURAND_STATUS_TYPE_ERROR";
    case CURAND_STATUS_OUT_OF_RANGE: return "CURAND_STATUS_OUT_OF_RANGE";
    case CURAND_STATUS_LENGTH_NOT_MULTIPLE: return "CURAND_STATUS_LENGTH_NOT_MULTIPLE";
    case CURAND_STATUS_DOUBLE_PRECISION_REQUIRED: return "CURAND_STATUS_DOUBLE_PRECISION_REQUIRED";
    case CURAND_STATUS_LAUNCH_FAILURE: return "CURAND_STATUS_LAUNCH_FAILURE";
    case CURAND_STATUS_PREEXISTING_FAILURE: return "CURAND_STATUS_PREEXISTING_FAILURE";
    case CURAND_STATUS_INITIALIZATION_FAILED: return "CURAND_STATUS_INITIALIZATION_FAILED";
    case CURAND_STATUS_ARCH_MISMATCH: return "CURAND_STATUS_ARCH_MISMATCH";
    case CURAND_STATUS_INTERNAL_ERROR: return "CURAND_STATUS_INTERNAL_ERROR";
  }
  return "CURAND_STATUS_<unknown>";
}

}  // namespace detail

// ---- per-device state ---------------------------------------------------------------------
namespace {

constexpr int kMaxDevices = 64;

struct DeviceState {
  std::once_flag once;
  cudaStream_t stream = nullptr;
  cudaMemPool_t pool = nullptr;
  std::once_flag cudnn_once, cublas_once;
  cudnnHandle_t cudnn = nullptr;
  cublasHandle_t cublas = nullptr;
  void* cublas_workspace = nullptr;  // from the pool, kept as long as the handle (never freed)
  int multiprocessors = 0;
};

DeviceState g_state[kMaxDevices];

void check_index(int device) {
  const int n = device_count();
  if (device < 0 || device >= n || device >= kMaxDevices)
    throw CudaError("CUDA device " + std::to_string(device) + " does not exist (" +
                    std::to_string(n) + " usable device(s) found)");
}

// Creates the compute stream and configures the device's default memory pool once. The pool
// keeps freed memory (release threshold = UINT64_MAX) instead of handing it back to the
// driver at every synchronization, so steady-state training allocates nothing new.
DeviceState& state(int device) {
  check_index(device);
  DeviceState& st = g_state[device];
  std::call_once(st.once, [&] {
    DeviceGuard guard(device);
    GANTRY_CUDA_CHECK(cudaStreamCreateWithFlags(&st.stream, cudaStreamNonBlocking));
    GANTRY_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&st.pool, device));
    uint64_t threshold = UINT64_MAX;
    GANTRY_CUDA_CHECK(cudaMemPoolSetAttribute(st.pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    GANTRY_CUDA_CHECK(
        cudaDeviceGetAttribute(&st.multiprocessors, cudaDevAttrMultiProcessorCount, device));
  });
  return st;
}

}  // namespace

int current_device() {
  int d = 0;
  GANTRY_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

cudaStream_t stream() { return state(current_device()).stream; }

cudaMemPool_t memory_pool() { return state(current_device()).pool; }

int multiprocessor_count() { return state(current_device()).multiprocessors; }

cudnnHandle_t cudnn_handle() {
  DeviceState& st = state(current_device());
  std::call_once(st.cudnn_once, [&] {
    GANTRY_CUDNN_CHECK(cudnnCreate(&st.cudnn));
    GANTRY_CUDNN_CHECK(cudnnSetStream(st.cudnn, st.stream));
  });
  return st.cudnn;
}

// cuBLAS would otherwise cudaMalloc its own default workspace, outside gantry's pool (and its
// accounting). The cuBLAS reference recommends 32 MiB on Hopper (sm_90) and later, 4 MiB
// before, aligned to at least 256 bytes. cublasSetStream resets the workspace to the default
// one, so the workspace is set after it.
cublasHandle_t cublas_handle() {
  const int device = current_device();
  DeviceState& st = state(device);
  std::call_once(st.cublas_once, [&] {
    GANTRY_CUBLAS_CHECK(cublasCreate(&st.cublas));
    GANTRY_CUBLAS_CHECK(cublasSetStream(st.cublas, st.stream));
    int major = 0;
    GANTRY_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    const std::size_t bytes = std::size_t(major >= 9 ? 32 : 4) << 20;
    // 256 bytes more, so the start can be rounded up to 256 whatever the pool's alignment.
    void* block = allocate(bytes + 256, device);
    const std::uintptr_t start = (reinterpret_cast<std::uintptr_t>(block) + 255) / 256 * 256;
    st.cublas_workspace = block;
    GANTRY_CUBLAS_CHECK(cublasSetWorkspace(st.cublas, reinterpret_cast<void*>(start), bytes));
  });
  return st.cublas;
}

DeviceGuard::DeviceGuard(int device) {
  int cur = 0;
  GANTRY_CUDA_CHECK(cudaGetDevice(&cur));
  if (cur != device) {
    GANTRY_CUDA_CHECK(cudaSetDevice(device));
    previous_ = cur;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);  // a destructor must not throw
}

Scratch::Scratch(std::size_t nbytes) : nbytes_(nbytes), device_(current_device()) {
  if (nbytes > 0) ptr_ = allocate(nbytes, device_);
}

Scratch::~Scratch() { release(); }

void Scratch::release() noexcept {
  if (ptr_) deallocate(ptr_, device_);
  ptr_ = nullptr;
  nbytes_ = 0;
}

// ---- core/cuda_runtime.h ------------------------------------------------------------------
int device_count() {
  // Asked once: without a driver or GPU, cudaGetDeviceCount fails (for example
  // cudaErrorInsufficientDriver with only the stub libcuda) and leaves `n` untouched.
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the error so it does not surface later
      return 0;
    }
    return n < 0 ? 0 : n;
  }();
  return count;
}

void set_device(int index) {
  check_index(index);
  GANTRY_CUDA_CHECK(cudaSetDevice(index));
}

void* allocate(std::size_t nbytes, int device) {
  DeviceState& st = state(device);
  DeviceGuard guard(device);
  if (nbytes == 0) nbytes = 1;  // a valid, unique pointer for empty tensors
  void* ptr = nullptr;
  cudaError_t err = cudaMallocAsync(&ptr, nbytes, st.pool, st.stream);
  if (err == cudaErrorMemoryAllocation) {
    // Wait for the device (memory freed on another stream becomes reusable), then hand the
    // pool's unused memory back to the driver and retry. The release threshold is UINT64_MAX,
    // so the pool never trims itself: its free blocks may be too fragmented for this request
    // while the driver has nothing left to give (PyTorch frees its cached blocks likewise).
    cudaGetLastError();
    GANTRY_CUDA_CHECK(cudaDeviceSynchronize());
    GANTRY_CUDA_CHECK(cudaMemPoolTrimTo(st.pool, 0));
    err = cudaMallocAsync(&ptr, nbytes, st.pool, st.stream);
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    std::size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    uint64_t reserved = 0;  // the attribute is a cuuint64_t
    cudaMemPoolGetAttribute(st.pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
    std::ostringstream os;
    os << "CUDA out of memory on cuda:" << device << ": tried to allocate " << nbytes
       << " bytes (" << (nbytes >> 20) << " MiB); " << free_b << " bytes (" << (free_b >> 20)
       << " MiB) free of " << total_b << " (" << (total_b >> 20) << " MiB), "
       << (reserved >> 20) << " MiB held by gantry's pool. Use a smaller batch size.";
    throw CudaError(os.str());
  }
  GANTRY_CUDA_CHECK(err);
  return ptr;
}

void deallocate(void* ptr, int device) {
  // Called from destructors: never throws. At process exit the runtime may already be gone
  // (cudaErrorCudartUnloading); nothing is left to free then.
  if (!ptr || device < 0 || device >= kMaxDevices || !g_state[device].stream) return;
  int cur = 0;
  if (cudaGetDevice(&cur) != cudaSuccess) return;
  if (cur != device) cudaSetDevice(device);
  const cudaError_t err = cudaFreeAsync(ptr, g_state[device].stream);
  if (cur != device) cudaSetDevice(cur);
  if (err != cudaSuccess && err != cudaErrorCudartUnloading) {
    std::fprintf(stderr, "gantry: cudaFreeAsync failed: %s\n", cudaGetErrorString(err));
    cudaGetLastError();
  }
}

// ---- pinned host memory, cached ---------------------------------------------------------------
// The loader pins every batch, and the trainer drops it after the upload: cudaMallocHost and
// cudaFreeHost per batch cost milliseconds each and cudaFreeHost synchronizes the device, which
// would stall the step behind every batch. Freed pinned blocks are therefore kept with one event
// per active compute stream, recorded at the free: a block is handed out again only once its
// events have completed (every copy queued before the free has read it), as PyTorch's caching
// host allocator does. At most kPinnedCacheBytes stay cached.
namespace {

constexpr std::size_t kPinnedCacheBytes = std::size_t(256) << 20;

struct PinnedFree {
  void* ptr;
  std::size_t cap;
  std::vector<cudaEvent_t> events;  // one per stream that existed at the free
};

struct PinnedCache {
  std::mutex mu;
  std::vector<PinnedFree> free_blocks;                  // oldest first
  std::unordered_map<void*, std::size_t> live;          // handed out -> capacity
  std::size_t cached = 0;
};

PinnedCache& pinned_cache() {
  static PinnedCache* c = new PinnedCache();  // never destroyed: batches may outlive statics
  return *c;
}

// True once every copy queued before the block was freed has finished (errors count as done:
// a failed stream cannot read the block any more). cudaErrorNotReady is "not actually an
// error", but whether the runtime keeps it as the thread's last error is not documented either
// way; PyTorch's caching allocator clears it after the same query, and so does this (every
// launch is checked right after it, so no other error can be pending here to be swallowed).
bool pinned_ready(const PinnedFree& b) {
  for (cudaEvent_t e : b.events) {
    if (cudaEventQuery(e) == cudaErrorNotReady) {
      cudaGetLastError();
      return false;
    }
  }
  return true;
}

void release_pinned(PinnedFree& b) {
  for (cudaEvent_t e : b.events) {
    cudaEventSynchronize(e);
    cudaEventDestroy(e);
  }
  cudaFreeHost(b.ptr);
}

}  // namespace

void* allocate_pinned(std::size_t nbytes) {
  const std::size_t want = (std::max<std::size_t>(nbytes, 1) + 4095) / 4096 * 4096;
  PinnedCache& c = pinned_cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    for (auto it = c.free_blocks.begin(); it != c.free_blocks.end(); ++it) {
      if (it->cap < want || it->cap > want + want / 4 || !pinned_ready(*it)) continue;
      for (cudaEvent_t e : it->events) cudaEventDestroy(e);
      void* ptr = it->ptr;
      c.cached -= it->cap;
      c.live.emplace(ptr, it->cap);
      c.free_blocks.erase(it);
      return ptr;
    }
  }
  void* ptr = nullptr;
  cudaError_t err = cudaMallocHost(&ptr, want);
  if (err == cudaErrorMemoryAllocation) {  // give the cached blocks back and try once more
    cudaGetLastError();
    {
      std::lock_guard<std::mutex> lock(c.mu);
      for (PinnedFree& b : c.free_blocks) release_pinned(b);
      c.free_blocks.clear();
      c.cached = 0;
    }
    err = cudaMallocHost(&ptr, want);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw CudaError("cudaMallocHost: out of pinned host memory (asked for " +
                      std::to_string(nbytes) + " bytes)");
    }
  }
  GANTRY_CUDA_CHECK(err);
  std::lock_guard<std::mutex> lock(c.mu);
  c.live.emplace(ptr, want);
  return ptr;
}

void deallocate_pinned(void* ptr) {
  if (!ptr) return;
  // Never throws (called from destructors). copy_host_to_device returns before a pinned source
  // has been read, so the block may still be queued for reading on a compute stream: record
  // where each stream is now, and reuse the block only after that point (pinned_ready).
  PinnedCache& c = pinned_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.live.find(ptr);
  if (it == c.live.end()) return;  // not ours: nothing sane to do
  PinnedFree b{ptr, it->second, {}};
  c.live.erase(it);
  bool recorded = true;
  try {
    for (int d = 0; d < kMaxDevices && recorded; ++d) {
      if (!g_state[d].stream) continue;
      DeviceGuard guard(d);  // an event belongs to the device current at its creation
      cudaEvent_t e = nullptr;
      if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) {
        recorded = false;
        break;
      }
      b.events.push_back(e);
      if (cudaEventRecord(e, g_state[d].stream) != cudaSuccess) recorded = false;
    }
  } catch (...) {  // DeviceGuard throws on a failing cudaSetDevice
    recorded = false;
  }
  if (!recorded || b.cap > kPinnedCacheBytes) {  // fall back: wait, then free
    cudaGetLastError();
    for (int d = 0; d < kMaxDevices; ++d)
      if (g_state[d].stream) cudaStreamSynchronize(g_state[d].stream);
    for (cudaEvent_t e : b.events) cudaEventDestroy(e);
    cudaFreeHost(ptr);
    return;
  }
  c.free_blocks.push_back(std::move(b));
  c.cached += c.free_blocks.back().cap;
  while (c.cached > kPinnedCacheBytes && !c.free_blocks.empty()) {  // oldest out first
    PinnedFree& old = c.free_blocks.front();
    c.cached -= old.cap;
    release_pinned(old);
    c.free_blocks.erase(c.free_blocks.begin());
  }
}

void copy_host_to_device(void* dst, const void* src, std::size_t nbytes) {
  if (nbytes == 0) return;
  GANTRY_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream()));
  // From pageable memory the copy is staged before cudaMemcpyAsync returns, so the caller
  // may reuse `src` at once; from pinned memory it is truly asynchronous (the caller keeps
  // the buffer alive until the stream has consumed it).
}

void copy_device_to_host(void* dst, const void* src, std::size_t nbytes) {
  if (nbytes == 0) return;
  cudaStream_t s = stream();
  GANTRY_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, s));
  GANTRY_CUDA_CHECK(cudaStreamSynchronize(s));
}

void copy_device_to_device(void* dst, const void* src, std::size_t nbytes) {
  if (nbytes == 0 || dst == src) return;
  GANTRY_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream()));
}

void synchronize() { GANTRY_CUDA_CHECK(cudaStreamSynchronize(stream())); }

std::size_t pool_high_water_mark() {
  DeviceState& st = state(current_device());
  uint64_t high = 0;
  GANTRY_CUDA_CHECK(cudaMemPoolGetAttribute(st.pool, cudaMemPoolAttrUsedMemHigh, &high));
  return static_cast<std::size_t>(high);
}

void reset_pool_high_water_mark() {
  DeviceState& st = state(current_device());
  uint64_t zero = 0;  // the only value the attribute accepts: resets it to the current use
  GANTRY_CUDA_CHECK(cudaMemPoolSetAttribute(st.pool, cudaMemPoolAttrUsedMemHigh, &zero));
}

std::string device_name(int index) {
  check_index(index);
  cudaDeviceProp prop{};
  GANTRY_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return prop.name;
}

}  // namespace gantry::cuda

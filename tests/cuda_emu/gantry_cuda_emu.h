#pragma once
// gantry's CUDA emulator: runs the hand-written kernels of kernels/cuda/*.cu on the CPU, so
// the GPU code paths (kernels, device layer, dispatch, autograd on "cuda" tensors) are tested
// on machines without a GPU. A test tool, not a backend: it checks indexing, barriers, warp
// shuffles and the host-side wiring against the CPU reference; it says nothing about speed,
// about the GPU's own math library (expf, logf ... are the host's here) or about the ordering
// of concurrent threads (blocks and threads run one after another).
//
// How a kernel runs: `k<<<grid, block, smem, stream>>>(args)` is rewritten at build time
// (tests/cuda_emu/rewrite_launches.cmake) into `gemu::Launch(<k>, grid, block, smem,
// stream)(args)`. Each block runs its threads as fibers (ucontext) on one host thread: a thread
// runs until it reaches __syncthreads() or a warp shuffle, and the scheduler resumes the
// waiting threads once every live thread of the block (or warp) has arrived. A barrier that
// can never complete (a divergent __syncthreads) ends the process (exit code 3) with a message,
// as compute-sanitizer's synccheck would report it.
//
// Included in place of the CUDA headers: tests/cuda_emu/shim/{cuda_runtime,cudnn,cublas_v2,
// curand}.h forward here, and the build puts that folder first on the include path.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <type_traits>

// ---- function and variable qualifiers ------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __grid_constant__
// Shared memory: one instance per host thread. Blocks run one at a time on a host thread, so
// each block sees its own array for as long as it runs.
#define __shared__ static thread_local

// ---- vector types and the built-in indices -------------------------------------------------
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct uint3 {
  unsigned x, y, z;
};

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

// ---- the runtime API subset gantry uses ----------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorCudartUnloading = 4,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;

struct gemu_stream;
struct gemu_event;
struct gemu_mempool;
using cudaStream_t = gemu_stream*;
using cudaEvent_t = gemu_event*;
using cudaMemPool_t = gemu_mempool*;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

enum cudaMemPoolAttr {
  cudaMemPoolReuseFollowEventDependencies = 1,
  cudaMemPoolReuseAllowOpportunistic,
  cudaMemPoolReuseAllowInternalDependencies,
  cudaMemPoolAttrReleaseThreshold,
  cudaMemPoolAttrReservedMemCurrent,
  cudaMemPoolAttrReservedMemHigh,
  cudaMemPoolAttrUsedMemCurrent,
  cudaMemPoolAttrUsedMemHigh,
};

enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrClockRate = 13,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMemoryClockRate = 36,
  cudaDevAttrGlobalMemoryBusWidth = 37,
  cudaDevAttrL2CacheSize = 38,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
};

struct cudaDeviceProp {
  char name[256];
  std::size_t totalGlobalMem;
  std::size_t sharedMemPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int major, minor;
  int multiProcessorCount;
  int l2CacheSize;
};

constexpr unsigned cudaStreamDefault = 0, cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventDefault = 0, cudaEventDisableTiming = 2;
constexpr unsigned cudaHostAllocDefault = 0;

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);

cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);

cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

cudaError_t cudaMalloc(void** p, std::size_t n);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocAsync(void** p, std::size_t n, cudaMemPool_t pool, cudaStream_t s);
cudaError_t cudaMallocAsync(void** p, std::size_t n, cudaStream_t s);
cudaError_t cudaFreeAsync(void* p, cudaStream_t s);
cudaError_t cudaMallocHost(void** p, std::size_t n);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemGetInfo(std::size_t* free_bytes, std::size_t* total_bytes);
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value);
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value);
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, std::size_t keep);

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind,
                            cudaStream_t s = nullptr);
cudaError_t cudaMemcpy2DAsync(void* dst, std::size_t dpitch, const void* src, std::size_t spitch,
                              std::size_t width, std::size_t height, cudaMemcpyKind kind,
                              cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* p, int value, std::size_t n);
cudaError_t cudaMemsetAsync(void* p, int value, std::size_t n, cudaStream_t s = nullptr);

// ---- the emulator's machinery ---------------------------------------------------------------
namespace gemu {

// Where a pointer points: into a live device allocation, into pinned host memory, or neither.
enum class PtrKind { Device, Pinned, Other };
PtrKind pointer_kind(const void* p);
// Ends the process (exit code 3) with a message naming the kernel fault, as compute-sanitizer
// would report it.
[[noreturn]] void kernel_fault(const char* what);

// Runs `body` once per thread of the grid (each call sees its own threadIdx/blockIdx). Sets
// the launch error (cudaGetLastError) and runs nothing when the configuration is invalid.
// Queued on the stream like every copy (see "the stream" in emu_runtime.cpp): it runs at the
// next synchronization, not at the launch.
void run_grid(dim3 grid, dim3 block, std::size_t dynamic_smem, cudaStream_t stream,
              std::function<void()> body);
// The kernel being launched, for messages.
void set_kernel_name(const char* name);

// For the models of cuDNN and cuBLAS (emu_cudnn.cpp, emu_cublas.cpp): whether [p, p + n) lies
// inside one live device allocation; a library fault (a device pointer that is not one, as
// compute-sanitizer reports an illegal address), which ends the process with exit code 3;
// and the library's work, queued on the stream in order with the kernels and copies (`call`
// names it in the GANTRY_EMU_STATS counts).
bool device_range(const void* p, std::size_t n);
[[noreturn]] void library_fault(const char* call, const char* what);
void enqueue_library_work(const char* call, std::function<void()> work);

// A kernel argument that is a pointer must point at device (or pinned) memory: a host pointer
// handed to a kernel is an illegal address on a GPU.
template <class T>
void check_argument(const T& value, int index) {
  if constexpr (std::is_pointer_v<T>) {
    if (value != nullptr && pointer_kind(value) == PtrKind::Other) {
      char msg[160];
      std::snprintf(msg, sizeof msg,
                    "kernel argument %d (%p) is not device memory: a host pointer was passed "
                    "to a kernel",
                    index, static_cast<const void*>(value));
      kernel_fault(msg);
    }
  }
}

// `kernel<<<grid, block, smem, stream>>>(args...)` after the rewrite.
template <class Kernel>
struct Launch {
  Kernel kernel;
  const char* name;
  dim3 grid, block;
  std::size_t smem;
  cudaStream_t stream;
  Launch(Kernel k, const char* kernel_name, dim3 g, dim3 b, std::size_t dynamic_smem = 0,
         cudaStream_t s = nullptr)
      : kernel(k), name(kernel_name), grid(g), block(b), smem(dynamic_smem), stream(s) {}
  template <class... Args>
  void operator()(const Args&... args) {
    set_kernel_name(name);
    int index = 0;
    (check_argument(args, index++), ...);
    // The arguments are copied now, as a launch copies them: the kernel may run later.
    run_grid(grid, block, smem, stream, [k = kernel, args...] { k(args...); });
  }
};

// Block-wide barrier and warp exchange (the scheduler's side of the fibers).
void sync_block();
void sync_warp(unsigned mask);
uint64_t warp_exchange(unsigned mask, uint64_t value, int src_lane, int width);
int lane_id();

template <class T>
T from_bits(uint64_t b) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a large type");
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
template <class T>
uint64_t to_bits(T v) {
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

}  // namespace gemu

// ---- device functions ----------------------------------------------------------------------
inline void __syncthreads() { gemu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { gemu::sync_warp(mask); }

// Shuffles follow the CUDA semantics within segments of `width` lanes; reading a lane that did
// not take part (exited, or outside the mask) returns a poisoned value (NaN bits), where a GPU
// returns an undefined one.
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int lane = gemu::lane_id(), base = lane & ~(width - 1);
  return gemu::from_bits<T>(gemu::warp_exchange(mask, gemu::to_bits(v), base + (src & (width - 1)), width));
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = gemu::lane_id(), seg = lane & (width - 1);
  const int src = seg + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return gemu::from_bits<T>(gemu::warp_exchange(mask, gemu::to_bits(v), src, width));
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = gemu::lane_id(), seg = lane & (width - 1);
  const int src = seg >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane;
  return gemu::from_bits<T>(gemu::warp_exchange(mask, gemu::to_bits(v), src, width));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = gemu::lane_id(), base = lane & ~(width - 1);
  const int src = base + (((lane & (width - 1)) ^ lane_mask) & (width - 1));
  return gemu::from_bits<T>(gemu::warp_exchange(mask, gemu::to_bits(v), src, width));
}

// Atomics: threads of the emulator never run at the same time, so a plain update is atomic.
inline float atomicAdd(float* p, float v) { const float old = *p; *p = old + v; return old; }
inline double atomicAdd(double* p, double v) { const double old = *p; *p = old + v; return old; }
inline int atomicAdd(int* p, int v) { const int old = *p; *p = old + v; return old; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { const unsigned old = *p; *p = old + v; return old; }
inline int atomicMax(int* p, int v) { const int old = *p; if (v > old) *p = v; return old; }
inline int atomicCAS(int* p, int cmp, int v) { const int old = *p; if (old == cmp) *p = v; return old; }

template <class T>
inline T __ldg(const T* p) { return *p; }

// Intrinsics with an explicit rounding mode: IEEE round-to-nearest, never contracted into an
// FMA (the emulated sources are compiled with -ffp-contract=off).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __frcp_rn(float a) { return 1.f / a; }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float a) { return std::exp(a); }
inline float __logf(float a) { return std::log(a); }
inline float __sinf(float a) { return std::sin(a); }
inline float __cosf(float a) { return std::cos(a); }
inline float __saturatef(float a) { return a < 0.f ? 0.f : (a > 1.f ? 1.f : a); }
inline float rsqrtf(float a) { return 1.f / std::sqrt(a); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}
inline uint64_t __umul64hi(uint64_t a, uint64_t b) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline unsigned __float_as_uint(float f) { return gemu::from_bits<unsigned>(gemu::to_bits(f)); }
inline float __uint_as_float(unsigned u) { return gemu::from_bits<float>(gemu::to_bits(u)); }
inline int __float_as_int(float f) { return gemu::from_bits<int>(gemu::to_bits(f)); }
inline float __int_as_float(int i) { return gemu::from_bits<float>(gemu::to_bits(i)); }

// The device's overloaded min/max.
#define GEMU_MINMAX(T)                                  \
  inline T min(T a, T b) { return b < a ? b : a; }     \
  inline T max(T a, T b) { return a < b ? b : a; }
GEMU_MINMAX(int)
GEMU_MINMAX(unsigned)
GEMU_MINMAX(long)
GEMU_MINMAX(unsigned long)
GEMU_MINMAX(long long)
GEMU_MINMAX(unsigned long long)
GEMU_MINMAX(float)
GEMU_MINMAX(double)
#undef GEMU_MINMAX

// Self-test of the CUDA emulator (tests/cuda_emu): the semantics the hand-written kernels rely
// on (barriers order shared memory, shuffles exchange within a warp, launch limits, pointer
// checks), and the faults it must report. Written as CUDA, rewritten like kernels/cuda/*.cu.
//
//   emu_selftest              the checks below; exit 0 when all hold (under both
//                             GANTRY_EMU_SCHEDULE=forward and reverse)
//   emu_selftest divergent    a barrier that cannot complete: must abort naming it
//   emu_selftest host_pointer a host pointer passed to a kernel: must abort naming it
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>

namespace {

int failures = 0;
void expect(bool ok, const char* what) {
  std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
  failures += !ok;
}

// Each thread writes its slot, waits at the barrier, then reads its neighbour's: without a
// real barrier (threads run one after another) the neighbour's slot would still be empty.
__global__ void rotate_kernel(const int* in, int* out) {
  __shared__ int slots[1024];
  const int t = threadIdx.x + threadIdx.y * blockDim.x;
  const int n = blockDim.x * blockDim.y;
  slots[t] = in[blockIdx.x * n + t];
  __syncthreads();
  out[blockIdx.x * n + t] = slots[(t + 1) % n];
}

// Warp sum with shuffles, lane 0 of each warp writes it.
__global__ void warp_sum_kernel(const float* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = i < n ? in[i] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) out[i / 32] = v;
}

// Lanes >= 16 exit; lane 0 then reads lane 16 (exited): a GPU gives an undefined value.
__global__ void exited_lane_kernel(float* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.f, 16);
}

// Missing barriers: each thread writes its slot and reads a neighbour's with no
// __syncthreads between. Forward order runs the reader of slot t+1 before its writer, reverse
// order the reader of slot t-1 before its writer: one of the two reads a stale 0.
__global__ void racy_next_kernel(const int* in, int* out) {
  __shared__ int slots[64];
  slots[threadIdx.x] = in[threadIdx.x];
  out[threadIdx.x] = slots[(threadIdx.x + 1) % 64];
}
__global__ void racy_prev_kernel(const int* in, int* out) {
  __shared__ int slots[64];
  slots[threadIdx.x] = in[threadIdx.x];
  out[threadIdx.x] = slots[(threadIdx.x + 63) % 64];
}

__global__ void write_kernel(float* out) { out[threadIdx.x] = 1.f; }

// Half of the warp waits at __syncthreads, the other half in a shuffle: neither can finish.
__global__ void divergent_kernel(float* out) {
  if (threadIdx.x < 16) __syncthreads();
  else out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.f, 1);
}

template <class T>
T* device_copy(const std::vector<T>& v) {
  T* p = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&p), v.size() * sizeof(T));
  cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return p;
}
template <class T>
std::vector<T> host_copy(const T* p, size_t n) {
  std::vector<T> v(n);
  cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  if (std::strcmp(mode, "divergent") == 0) {
    float* out = device_copy(std::vector<float>(32, 0.f));
    divergent_kernel<<<1, 32>>>(out);
    cudaDeviceSynchronize();  // the launch only queues the kernel
    std::printf("divergent_kernel returned: the emulator missed the deadlock\n");
    return 1;
  }
  if (std::strcmp(mode, "host_pointer") == 0) {
    std::vector<float> host(32);
    write_kernel<<<1, 32>>>(host.data());
    std::printf("write_kernel ran on a host pointer: the emulator missed it\n");
    return 1;
  }

  {  // barriers order shared memory: 2 blocks of 32x8 threads
    const int n = 256;
    std::vector<int> in(2 * n);
    for (int i = 0; i < 2 * n; ++i) in[i] = i * 7 + 1;
    int* din = device_copy(in);
    int* dout = device_copy(std::vector<int>(2 * n, -1));
    rotate_kernel<<<2, dim3(32, 8)>>>(din, dout);
    const std::vector<int> out = host_copy(dout, 2 * n);
    bool ok = cudaGetLastError() == cudaSuccess;
    for (int b = 0; b < 2; ++b)
      for (int t = 0; t < n; ++t) ok &= out[b * n + t] == in[b * n + (t + 1) % n];
    expect(ok, "__syncthreads orders shared memory across a 2D block");
    cudaFree(din);
    cudaFree(dout);
  }
  {  // the schedule (GANTRY_EMU_SCHEDULE) exposes a missing barrier in one direction each
    const char* sched = std::getenv("GANTRY_EMU_SCHEDULE");
    const bool reverse = sched && std::strcmp(sched, "reverse") == 0;
    std::vector<int> in(64);
    for (int i = 0; i < 64; ++i) in[i] = 1000 + i;
    int* din = device_copy(in);
    int* dnext = device_copy(std::vector<int>(64, -1));
    int* dprev = device_copy(std::vector<int>(64, -1));
    racy_next_kernel<<<1, 64>>>(din, dnext);
    racy_prev_kernel<<<1, 64>>>(din, dprev);
    const std::vector<int> next = host_copy(dnext, 64), prev = host_copy(dprev, 64);
    expect((next[0] == 1001) == reverse && (prev[1] == 1000) == !reverse,
           reverse ? "reverse schedule: the missing barrier before reading slot t-1 shows"
                   : "forward schedule: the missing barrier before reading slot t+1 shows");
  }
  {  // the stream: queued work runs at synchronization, as on a GPU (GANTRY_EMU_ASYNC=1)
    const char* async = std::getenv("GANTRY_EMU_ASYNC");
    if (!(async && std::strcmp(async, "0") == 0)) {
      float* pinned = nullptr;
      cudaMallocHost(reinterpret_cast<void**>(&pinned), 32 * sizeof(float));
      std::vector<float> pageable(32, 2.f);
      for (int i = 0; i < 32; ++i) pinned[i] = 1.f;
      float* d = device_copy(std::vector<float>(32, 0.f));
      float* d2 = device_copy(std::vector<float>(32, 0.f));
      cudaEvent_t ev;
      cudaEventCreate(&ev);
      cudaMemcpyAsync(d, pinned, 32 * sizeof(float), cudaMemcpyHostToDevice);    // reads at its turn
      cudaMemcpyAsync(d2, pageable.data(), 32 * sizeof(float), cudaMemcpyHostToDevice);  // staged now
      cudaEventRecord(ev);
      expect(cudaEventQuery(ev) == cudaErrorNotReady, "an event after queued copies is not ready");
      pinned[0] = 5.f;     // a race on a GPU: the queued copy reads this
      pageable[0] = 6.f;   // safe: the pageable source was staged
      cudaEventSynchronize(ev);
      expect(cudaEventQuery(ev) == cudaSuccess, "cudaEventSynchronize completes the event");
      expect(host_copy(d, 32)[0] == 5.f, "a queued copy from pinned memory reads it at its turn");
      expect(host_copy(d2, 32)[0] == 2.f, "a copy from pageable memory takes the data at the call");
      write_kernel<<<1, 32>>>(d);
      pinned[1] = -1.f;
      cudaMemcpyAsync(pinned, d, 32 * sizeof(float), cudaMemcpyDeviceToHost);
      expect(pinned[1] == -1.f, "a queued kernel and copy into pinned memory have not run yet");
      cudaStreamSynchronize(nullptr);
      expect(pinned[1] == 1.f, "cudaStreamSynchronize runs them");
      cudaEventDestroy(ev);
      cudaFreeHost(pinned);
    }
  }
  {  // warp shuffles: 100 values, the last warp partial
    const int n = 100;
    std::vector<float> in(n);
    for (int i = 0; i < n; ++i) in[i] = static_cast<float>(i);
    float* din = device_copy(in);
    float* dout = device_copy(std::vector<float>(4, -1.f));
    warp_sum_kernel<<<1, 128>>>(din, dout, n);
    const std::vector<float> out = host_copy(dout, 4);
    expect(out[0] == 496.f && out[1] == 1520.f && out[2] == 2544.f && out[3] == 390.f,
           "__shfl_down_sync warp sums (496 1520 2544 390)");
  }
  {  // a shuffle from an exited lane is poisoned
    float* dout = device_copy(std::vector<float>(16, 0.f));
    exited_lane_kernel<<<1, 32>>>(dout);
    const std::vector<float> out = host_copy(dout, 16);
    expect(std::isnan(out[0]), "reading an exited lane gives NaN (undefined on a GPU)");
  }
  {  // launch limits: gridDim.y > 65535 and 2048 threads fail, and run nothing
    float* dout = device_copy(std::vector<float>(32, 0.f));
    write_kernel<<<dim3(1, 65536), 32>>>(dout);
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "gridDim.y = 65536 is refused");
    write_kernel<<<1, 2048>>>(dout);
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "2048 threads per block are refused");
    expect(cudaGetLastError() == cudaSuccess, "cudaGetLastError clears the error");
    expect(host_copy(dout, 32)[0] == 0.f, "a refused launch runs nothing");
  }
  {  // copies check their sides and ranges
    float* d = nullptr;
    cudaMalloc(reinterpret_cast<void**>(&d), 16 * sizeof(float));
    std::vector<float> h(32);
    expect(cudaMemcpy(h.data(), d, 16 * sizeof(float), cudaMemcpyHostToDevice) == cudaErrorInvalidValue,
           "a device source given as HostToDevice is refused");
    expect(cudaMemcpy(d, h.data(), 32 * sizeof(float), cudaMemcpyHostToDevice) == cudaErrorInvalidValue,
           "a copy past the end of a device allocation is refused");
    cudaGetLastError();
    std::vector<float> fresh = host_copy(d, 16);
    expect(std::isnan(fresh[0]), "fresh device memory reads as NaN");
    cudaFree(d);
  }
  {  // the memory limit (GANTRY_EMU_MEMORY_MB, 4096 by default) gives cudaErrorMemoryAllocation
    void* p = nullptr;
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    expect(cudaMalloc(&p, total_b + 1) == cudaErrorMemoryAllocation && p == nullptr,
           "an allocation over the device's memory fails with cudaErrorMemoryAllocation");
    cudaGetLastError();
  }
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}

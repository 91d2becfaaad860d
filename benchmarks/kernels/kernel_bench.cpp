// kernel_bench: every kernel of a DCGAN training step, at the DCGAN's real shapes, against the
// machine's own ceilings (in the spirit of llm.c's dev/cuda).
//
// For each case and each implementation (CPU; on a CUDA build with a GPU also the hand-written
// CUDA kernels and cuDNN/cuBLAS through gantry::cuda::handwritten / library):
//   1. check: run it once and compare every output with the CPU kernel run in double;
//   2. time: warm-up calls, then --repeats calls (at least --min-ms in total), median per call
//      (on a GPU each sample is enough back-to-back calls for ~1 ms between two events, so the
//      host's per-call work overlaps the device's as in training: the time per call is device time).
//      Inputs rotate over several copies whose total size exceeds the last-level cache (the L2
//      on a GPU), so a kernel never finds its inputs cache-resident from the previous call.
// Each row gives the median time, the achieved GFLOP/s or GB/s and its fraction of a ceiling
// measured here at start: a large SGEMM (cpu::gemm / cuBLAS) and a tight FMA loop for FLOP/s,
// a large copy for bandwidth. A case is "compute"-bound when its FLOP/byte ratio exceeds the
// machine balance (GEMM ceiling / copy bandwidth), else "memory"-bound; the fraction is taken
// against the ceiling that bounds it.
//
// Usage: kernel_bench [--filter a,b] [--repeats N] [--warmup N] [--batch N] [--threads N]
//                     [--rotate-mb MB] [--impl cpu|cuda|all] [--no-check] [--svg out.svg]
//                     [--tf32] [--clock wall|cpu] [--list]
// --clock cpu times CPU kernels by the process's CPU time divided by the thread count: on a
// machine shared with other jobs, use it with --threads 1 (spinning OpenMP threads count as busy).
#include <immintrin.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "gantry/kernels/cpu/cpu_kernels.h"
#include "gantry/optim/adam.h"
#ifdef GANTRY_WITH_CUDA
#include <cuda_runtime.h>

#include "gantry/core/cuda/internal.h"
#include "gantry/core/cuda_runtime.h"
#include "gantry/kernels/cuda/backend_select.h"
#include "gantry/kernels/cuda/cuda_kernels.h"
#endif

namespace {

using namespace gantry;
using Clock = std::chrono::steady_clock;

// ---- options ------------------------------------------------------------------------------
struct Options {
  std::vector<std::string> filters;
  int repeats = 15, warmup = 3, batch = 128, threads = 0;
  double min_ms = 200;
  double rotate_mb = -1;  // <0: 2x the last-level cache, at most 1 GiB
  std::string impl = "all", svg;
  bool check = true, tf32 = false, list = false;
  bool cpu_clock = false;  // --clock cpu: process CPU time / threads (robust on a shared machine)
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr,
               "kernel_bench: %s\nusage: kernel_bench [--filter a,b] [--repeats N] [--warmup N] "
               "[--batch N] [--threads N] [--min-ms MS] [--rotate-mb MB] [--impl cpu|cuda|all] "
               "[--no-check] [--svg out.svg] [--tf32] [--clock wall|cpu] [--list]\n",
               msg.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) usage_error(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  auto number = [&](int& i) -> double {
    const std::string flag = argv[i], v = value(i);
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    if (end == v.c_str() || *end) usage_error(flag + " expects a number, got '" + v + "'");
    return d;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--filter") {
      std::string f = value(i);
      size_t p = 0;
      while (p <= f.size()) {
        const size_t q = std::min(f.find(',', p), f.size());
        if (q > p) o.filters.push_back(f.substr(p, q - p));
        p = q + 1;
      }
    } else if (a == "--repeats") o.repeats = static_cast<int>(number(i));
    else if (a == "--warmup") o.warmup = static_cast<int>(number(i));
    else if (a == "--batch") o.batch = static_cast<int>(number(i));
    else if (a == "--threads") o.threads = static_cast<int>(number(i));
    else if (a == "--min-ms") o.min_ms = number(i);
    else if (a == "--rotate-mb") o.rotate_mb = number(i);
    else if (a == "--impl") o.impl = value(i);
    else if (a == "--svg") o.svg = value(i);
    else if (a == "--no-check") o.check = false;
    else if (a == "--tf32") o.tf32 = true;
    else if (a == "--list") o.list = true;
    else if (a == "--clock") {
      const std::string v = value(i);
      if (v != "wall" && v != "cpu") usage_error("--clock must be wall or cpu, got '" + v + "'");
      o.cpu_clock = v == "cpu";
    }
    else if (a == "-h" || a == "--help") usage_error("help");
    else usage_error("unknown flag '" + a + "'");
  }
  if (o.repeats < 1) usage_error("--repeats must be >= 1");
  if (o.batch < 1) usage_error("--batch must be >= 1");
  if (o.impl != "cpu" && o.impl != "cuda" && o.impl != "all")
    usage_error("--impl must be cpu, cuda or all, got '" + o.impl + "'");
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double process_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

// The CPU timings' clock: wall time, or (--clock cpu) process CPU time / threads.
bool g_cpu_clock = false;
double now_ms() {
  if (g_cpu_clock) return process_cpu_ms() / omp_get_max_threads();
  return std::chrono::duration<double, std::milli>(Clock::now().time_since_epoch()).count();
}

// ---- ceilings -----------------------------------------------------------------------------
struct Ceilings {
  double gemm_gflops = 0;  // large SGEMM through the backend's own GEMM
  double peak_gflops = 0;  // best achievable: FMA loop (CPU) / TF32 cuBLAS (GPU)
  double bw_gbs = 0;       // large copy, read + write bytes
  std::string gemm_what, peak_what, bw_what;
};

// A register-resident chain of independent FMAs on every thread: the most FLOP/s the cores
// can retire (no loads). 12 accumulators hide the FMA latency on 2 ports.
__attribute__((target("avx2,fma"))) double fma_loop_avx2(int64_t iters) {
  __m256 acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = _mm256_set1_ps(0.001f * k);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
    for (int k = 0; k < 12; ++k) acc[k] = _mm256_fmadd_ps(acc[k], a, b);
  __m256 s = acc[0];
  for (int k = 1; k < 12; ++k) s = _mm256_add_ps(s, acc[k]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0];
}

__attribute__((target("avx512f"))) double fma_loop_avx512(int64_t iters) {
  __m512 acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = _mm512_set1_ps(0.001f * k);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
    for (int k = 0; k < 12; ++k) acc[k] = _mm512_fmadd_ps(acc[k], a, b);
  __m512 s = acc[0];
  for (int k = 1; k < 12; ++k) s = _mm512_add_ps(s, acc[k]);  // every chain is live
  return _mm512_reduce_add_ps(s);
}

double fma_peak(bool avx512) {
  const int64_t iters = 20'000'000;
  const int width = avx512 ? 16 : 8;
  std::vector<double> times;
  volatile double sink = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const double t0 = now_ms();
#pragma omp parallel
    {
      const double r = avx512 ? fma_loop_avx512(iters) : fma_loop_avx2(iters);
#pragma omp critical
      sink = sink + r;
    }
    times.push_back(now_ms() - t0);
  }
  const double flops = 2.0 * width * 12 * iters * omp_get_max_threads();
  return flops / (median(times) * 1e-3) / 1e9;
}

Ceilings cpu_ceilings() {
  Ceilings c;
  // SGEMM 2048^3 (row-major, no transposes) through the library's own GEMM.
  const int64_t n = 2048;
  std::vector<float> A(n * n), B(n * n), C(n * n);
  for (int64_t i = 0; i < n * n; ++i) {
    A[i] = static_cast<float>((i * 7919) % 1000) * 1e-3f - 0.5f;
    B[i] = static_cast<float>((i * 104729) % 1000) * 1e-3f - 0.5f;
  }
  std::vector<double> t;
  for (int rep = 0; rep < 7; ++rep) {
    const double t0 = now_ms();
    cpu::gemm<float>(false, false, n, n, n, 1.f, A.data(), B.data(), 0.f, C.data());
    if (rep >= 2) t.push_back(now_ms() - t0);
  }
  c.gemm_gflops = 2.0 * n * n * n / (median(t) * 1e-3) / 1e9;
  c.gemm_what = std::string("cpu::gemm SGEMM 2048^3, ") + cpu::gemm_isa();
  const double p2 = fma_peak(false);
  const bool has512 = __builtin_cpu_supports("avx512f");
  const double p5 = has512 ? fma_peak(true) : 0;
  c.peak_gflops = std::max(p2, p5);
  c.peak_what = std::string("FMA loop, ") + (p5 > p2 ? "AVX-512" : "AVX2") + " (AVX2 " +
                std::to_string(static_cast<int>(p2)) + (has512 ? ", AVX-512 " + std::to_string(static_cast<int>(p5)) : "") + ")";
  // Stream copy of 512 MiB (well past any LLC), both threads; bytes = read + write.
  const int64_t m = 128ll << 20;
  std::vector<float> src(m), dst(m);
#pragma omp parallel for
  for (int64_t i = 0; i < m; ++i) src[i] = dst[i] = static_cast<float>(i & 1023);
  t.clear();
  for (int rep = 0; rep < 7; ++rep) {
    const double t0 = now_ms();
#pragma omp parallel
    {
      const int nt = omp_get_num_threads(), id = omp_get_thread_num();
      const int64_t lo = m * id / nt, hi = m * (id + 1) / nt;
      std::memcpy(dst.data() + lo, src.data() + lo, (hi - lo) * sizeof(float));
    }
    if (rep >= 2) t.push_back(now_ms() - t0);
  }
  c.bw_gbs = 2.0 * m * sizeof(float) / (median(t) * 1e-3) / 1e9;
  c.bw_what = "memcpy 512 MiB (read+write)";
  return c;
}

// ---- cases --------------------------------------------------------------------------------
enum class Role { In, Out, InOut };
enum class Fill { Uniform, Positive };
struct TensorSpec {
  std::string name;
  int64_t numel;
  Role role;
  Fill fill = Fill::Uniform;
};

template <class T>
using KernelFn = std::function<void(T* const* t)>;

struct Impl {
  std::string name;  // "cuda" (hand-written), "cudnn", "cublas"
  KernelFn<float> fn;
};

struct Case {
  std::string name, group;  // e.g. "G2.convT.fwd", "conv"
  std::string shape;        // human-readable
  double flops = 0, bytes = 0;
  std::vector<TensorSpec> tensors;
  KernelFn<float> cpu_f;
  KernelFn<double> cpu_d;
  std::vector<Impl> gpu;  // filled only on a CUDA build
};

// A generic kernel lambda `[](auto* const* t) {...}` serves as both the float kernel and the
// double reference.
template <class F>
void set_cpu(Case& c, F f) {
  c.cpu_f = [f](float* const* t) { f(t); };
  c.cpu_d = [f](double* const* t) { f(t); };
}

struct Layer {
  std::string name;
  bool transposed;
  int64_t cin, cout, in_hw;  // in_hw: input spatial size (the layer's own input)
  int stride, padding;
  bool bn;
  std::string act;  // "relu", "lrelu", "tanh", "sigmoid"
};

// The 64x64 DCGAN (nz 100, ngf = ndf = 64, nc 3).
std::vector<Layer> dcgan_layers() {
  return {
      {"G1", true, 100, 512, 1, 1, 0, true, "relu"},  {"G2", true, 512, 256, 4, 2, 1, true, "relu"},
      {"G3", true, 256, 128, 8, 2, 1, true, "relu"},  {"G4", true, 128, 64, 16, 2, 1, true, "relu"},
      {"G5", true, 64, 3, 32, 2, 1, false, "tanh"},   {"D1", false, 3, 64, 64, 2, 1, false, "lrelu"},
      {"D2", false, 64, 128, 32, 2, 1, true, "lrelu"}, {"D3", false, 128, 256, 16, 2, 1, true, "lrelu"},
      {"D4", false, 256, 512, 8, 2, 1, true, "lrelu"}, {"D5", false, 512, 1, 4, 1, 0, false, "sigmoid"},
  };
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s = "[";
  for (auto it = d.begin(); it != d.end(); ++it) s += (it == d.begin() ? "" : ",") + std::to_string(*it);
  return s + "]";
}

void add_conv_cases(const Layer& L, int64_t N, std::vector<Case>& cases) {
  // The conv whose forward/backward realize the layer. For a transposed conv it is the adjoint
  // conv mapping the layer's output [N, cout, OH, OW] to its input [N, cin, H, W] (core/ops.cpp).
  cpu::Conv2dShape s;
  int64_t out_hw;
  if (!L.transposed) {
    s = {N, L.cin, L.in_hw, L.in_hw, L.cout, 4, 4, L.stride, L.padding};
    out_hw = s.OH();
  } else {
    out_hw = (L.in_hw - 1) * L.stride - 2 * L.padding + 4;
    s = {N, L.cout, out_hw, out_hw, L.cin, 4, 4, L.stride, L.padding};
  }
  const int64_t xin = N * L.cin * L.in_hw * L.in_hw, yout = N * L.cout * out_hw * out_hw;
  const int64_t wsz = L.cin * L.cout * 16;
  const double flops = 2.0 * N * s.O * s.OH() * s.OW() * s.C * s.kh * s.kw;
  const std::string kind = L.transposed ? "convT" : "conv";
  const std::string shp = dims({N, L.cin, L.in_hw, L.in_hw}) + "->" + dims({N, L.cout, out_hw, out_hw});
  auto mk = [&](const std::string& pass, std::vector<TensorSpec> ts) {
    Case c;
    c.name = L.name + "." + kind + "." + pass;
    c.group = "conv";
    c.shape = shp;
    c.flops = flops;
    c.tensors = std::move(ts);
    for (auto& t : c.tensors) c.bytes += 4.0 * t.numel;
    return c;
  };
  // Layer view: fwd (x, w) -> y ; bwd_in (dy, w) -> dx ; bwd_w (x, dy) -> dw.
  Case fwd = mk("fwd", {{"x", xin, Role::In}, {"w", wsz, Role::In}, {"y", yout, Role::Out}});
  Case bin = mk("bwd_in", {{"dy", yout, Role::In}, {"w", wsz, Role::In}, {"dx", xin, Role::Out}});
  Case bw = mk("bwd_w", {{"x", xin, Role::In}, {"dy", yout, Role::In}, {"dw", wsz, Role::Out}});
  if (!L.transposed) {
    set_cpu(fwd, [s](auto* const* t) { cpu::conv2d_forward(t[0], t[1], std::decay_t<decltype(t[0])>(nullptr), t[2], s); });
    set_cpu(bin, [s](auto* const* t) { cpu::conv2d_backward_input(t[0], t[1], t[2], s); });
    set_cpu(bw, [s](auto* const* t) { cpu::conv2d_backward_weight(t[0], t[1], t[2], std::decay_t<decltype(t[0])>(nullptr), s); });
  } else {
    set_cpu(fwd, [s](auto* const* t) { cpu::conv2d_backward_input(t[0], t[1], t[2], s); });
    set_cpu(bin, [s](auto* const* t) { cpu::conv2d_forward(t[0], t[1], std::decay_t<decltype(t[0])>(nullptr), t[2], s); });
    set_cpu(bw, [s](auto* const* t) { cpu::conv2d_backward_weight(t[1], t[0], t[2], std::decay_t<decltype(t[0])>(nullptr), s); });
  }
#ifdef GANTRY_WITH_CUDA
  namespace cuda_hw = gantry::cuda::handwritten;
  namespace cuda_lib = gantry::cuda::library;
  if (!L.transposed) {
    fwd.gpu = {{"cuda", [s](float* const* t) { cuda_hw::conv2d_forward(t[0], t[1], nullptr, t[2], s); }},
               {"cudnn", [s](float* const* t) { cuda_lib::conv2d_forward(t[0], t[1], nullptr, t[2], s); }}};
    bin.gpu = {{"cuda", [s](float* const* t) { cuda_hw::conv2d_backward_input(t[0], t[1], t[2], s); }},
               {"cudnn", [s](float* const* t) { cuda_lib::conv2d_backward_input(t[0], t[1], t[2], s); }}};
    bw.gpu = {{"cuda", [s](float* const* t) { cuda_hw::conv2d_backward_weight(t[0], t[1], t[2], nullptr, s); }},
              {"cudnn", [s](float* const* t) { cuda_lib::conv2d_backward_weight(t[0], t[1], t[2], nullptr, s); }}};
  } else {
    fwd.gpu = {{"cuda", [s](float* const* t) { cuda_hw::conv2d_backward_input(t[0], t[1], t[2], s); }},
               {"cudnn", [s](float* const* t) { cuda_lib::conv2d_backward_input(t[0], t[1], t[2], s); }}};
    bin.gpu = {{"cuda", [s](float* const* t) { cuda_hw::conv2d_forward(t[0], t[1], nullptr, t[2], s); }},
               {"cudnn", [s](float* const* t) { cuda_lib::conv2d_forward(t[0], t[1], nullptr, t[2], s); }}};
    bw.gpu = {{"cuda", [s](float* const* t) { cuda_hw::conv2d_backward_weight(t[1], t[0], t[2], nullptr, s); }},
              {"cudnn", [s](float* const* t) { cuda_lib::conv2d_backward_weight(t[1], t[0], t[2], nullptr, s); }}};
  }
#endif
  cases.push_back(std::move(fwd));
  cases.push_back(std::move(bin));
  cases.push_back(std::move(bw));
}

void add_bn_cases(const Layer& L, int64_t N, std::vector<Case>& cases) {
  const int64_t hw = L.transposed ? (L.in_hw - 1) * L.stride - 2 * L.padding + 4
                                  : (L.in_hw + 2 * L.padding - 4) / L.stride + 1;
  const int64_t C = L.cout, S = hw * hw, n = N * C * S;
  const std::string shp = dims({N, C, hw, hw});
  Case f;
  f.name = L.name + ".bn.fwd";
  f.group = "bn";
  f.shape = shp;
  f.flops = 7.0 * n;           // sum, centred square (3), scale+shift (2), ~
  f.bytes = 4.0 * (2 * n);     // read x once, write y once (the minimum)
  f.tensors = {{"x", n, Role::In}, {"gamma", C, Role::In}, {"beta", C, Role::In},
               {"y", n, Role::Out}, {"mean", C, Role::Out}, {"invstd", C, Role::Out},
               {"var", C, Role::Out}};
  set_cpu(f, [N, C, S](auto* const* t) {
    using T = std::decay_t<decltype(*t[0])>;
    cpu::batch_norm_forward_train(t[0], t[1], t[2], t[3], t[4], t[5], t[6], N, C, S, T(1e-5));
  });
  Case b;
  b.name = L.name + ".bn.bwd";
  b.group = "bn";
  b.shape = shp;
  b.flops = 8.0 * n;
  b.bytes = 4.0 * (3 * n);  // read x, dy; write dx
  b.tensors = {{"x", n, Role::In},      {"dy", n, Role::In},     {"gamma", C, Role::In},
               {"mean", C, Role::In},   {"invstd", C, Role::In, Fill::Positive},
               {"dx", n, Role::Out},    {"dgamma", C, Role::Out}, {"dbeta", C, Role::Out}};
  set_cpu(b, [N, C, S](auto* const* t) {
    cpu::batch_norm_backward_train(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], N, C, S);
  });
#ifdef GANTRY_WITH_CUDA
  namespace cuda_hw = gantry::cuda::handwritten;
  namespace cuda_lib = gantry::cuda::library;
  f.gpu = {{"cuda", [N, C, S](float* const* t) { cuda_hw::batch_norm_forward_train(t[0], t[1], t[2], t[3], t[4], t[5], t[6], N, C, S, 1e-5f); }},
           {"cudnn", [N, C, S](float* const* t) { cuda_lib::batch_norm_forward_train(t[0], t[1], t[2], t[3], t[4], t[5], t[6], N, C, S, 1e-5f); }}};
  b.gpu = {{"cuda", [N, C, S](float* const* t) { cuda_hw::batch_norm_backward_train(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], N, C, S, 1e-5f); }},
           {"cudnn", [N, C, S](float* const* t) { cuda_lib::batch_norm_backward_train(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], N, C, S, 1e-5f); }}};
#endif
  cases.push_back(std::move(f));
  cases.push_back(std::move(b));
}

void add_act_cases(const Layer& L, int64_t N, std::vector<Case>& cases) {
  const int64_t hw = L.transposed ? (L.in_hw - 1) * L.stride - 2 * L.padding + 4
                                  : (L.in_hw + 2 * L.padding - 4) / L.stride + 1;
  const int64_t n = N * L.cout * hw * hw;
  const std::string shp = dims({N, L.cout, hw, hw});
  Case f, b;
  f.name = L.name + "." + L.act + ".fwd";
  b.name = L.name + "." + L.act + ".bwd";
  f.group = b.group = "act";
  f.shape = b.shape = shp;
  f.flops = b.flops = 1.0 * n;
  f.tensors = {{"x", n, Role::In}, {"y", n, Role::Out}};
  f.bytes = 8.0 * n;
  if (L.act == "lrelu") {
    b.tensors = {{"x", n, Role::In}, {"dy", n, Role::In}, {"dx", n, Role::Out}};
    b.bytes = 12.0 * n;
    set_cpu(f, [n](auto* const* t) { cpu::leaky_relu_forward(t[0], t[1], n, decltype(+*t[0])(0.2)); });
    set_cpu(b, [n](auto* const* t) { cpu::leaky_relu_backward(t[0], t[1], t[2], n, decltype(+*t[0])(0.2)); });
#ifdef GANTRY_WITH_CUDA
    f.gpu = {{"cuda", [n](float* const* t) { gantry::cuda::leaky_relu_forward(t[0], t[1], n, 0.2f); }}};
    b.gpu = {{"cuda", [n](float* const* t) { gantry::cuda::leaky_relu_backward(t[0], t[1], t[2], n, 0.2f); }}};
#endif
  } else {
    const cpu::Unary op = L.act == "relu" ? cpu::Unary::Relu
                          : L.act == "tanh" ? cpu::Unary::Tanh : cpu::Unary::Sigmoid;
    // backward(x, y, dy) -> dx
    b.tensors = {{"x", n, Role::In}, {"y", n, Role::In}, {"dy", n, Role::In}, {"dx", n, Role::Out}};
    b.bytes = (op == cpu::Unary::Relu ? 12.0 : 12.0) * n;  // relu reads x, tanh/sigmoid read y
    if (op != cpu::Unary::Relu) f.flops = b.flops = 10.0 * n;
    set_cpu(f, [n, op](auto* const* t) { cpu::unary_forward(op, t[0], t[1], n); });
    set_cpu(b, [n, op](auto* const* t) { cpu::unary_backward(op, t[0], t[1], t[2], t[3], n); });
#ifdef GANTRY_WITH_CUDA
    f.gpu = {{"cuda", [n, op](float* const* t) { gantry::cuda::unary_forward(op, t[0], t[1], n); }}};
    b.gpu = {{"cuda", [n, op](float* const* t) { gantry::cuda::unary_backward(op, t[0], t[1], t[2], t[3], n); }}};
#endif
  }
  cases.push_back(std::move(f));
  cases.push_back(std::move(b));
}

// Adam over every parameter of G and D (one call per parameter tensor, as Adam::step does).
void add_adam_case(std::vector<Case>& cases) {
  std::vector<int64_t> sizes;
  for (const Layer& L : dcgan_layers()) {
    sizes.push_back(L.cin * L.cout * 16);
    if (L.bn) {
      sizes.push_back(L.cout);
      sizes.push_back(L.cout);
    }
  }
  int64_t n = 0;
  for (int64_t s : sizes) n += s;
  Case c;
  c.name = "adam.all_params";
  c.group = "adam";
  c.shape = std::to_string(sizes.size()) + " tensors, " + std::to_string(n) + " floats";
  c.flops = 12.0 * n;
  c.bytes = 4.0 * 7 * n;  // read p, g, m, v; write p, m, v
  c.tensors = {{"param", n, Role::InOut}, {"grad", n, Role::In}, {"exp_avg", n, Role::InOut},
               {"exp_avg_sq", n, Role::InOut, Fill::Positive}};
  AdamOptions o;
  o.lr = 2e-4;
  o.beta1 = 0.5;
  o.beta2 = 0.999;
  const int64_t step = 10;
  c.cpu_f = [sizes, o](float* const* t) {
    int64_t off = 0;
    for (int64_t s : sizes) {
      adam_update_cpu(t[0] + off, t[1] + off, t[2] + off, t[3] + off, s, step, o);
      off += s;
    }
  };
  c.cpu_d = [n, o](double* const* t) {  // the same formula in double
    const double bc1 = 1 - std::pow(o.beta1, step), bc2 = 1 - std::pow(o.beta2, step);
    for (int64_t i = 0; i < n; ++i) {
      const double g = t[1][i];
      const double m = o.beta1 * t[2][i] + (1 - o.beta1) * g;
      const double v = o.beta2 * t[3][i] + (1 - o.beta2) * g * g;
      t[2][i] = m;
      t[3][i] = v;
      t[0][i] -= o.lr / bc1 * m / (std::sqrt(v) / std::sqrt(bc2) + o.eps);
    }
  };
#ifdef GANTRY_WITH_CUDA
  c.gpu = {{"cuda", [sizes, o](float* const* t) {
    std::vector<gantry::cuda::AdamTensor> ts;
    int64_t off = 0;
    for (int64_t s : sizes) {
      ts.push_back({t[0] + off, t[1] + off, t[2] + off, t[3] + off, s});
      off += s;
    }
    gantry::cuda::adam_multi_tensor(ts.data(), static_cast<int>(ts.size()),
                                    gantry::adam_cuda_config(o, step));
  }}};
#endif
  cases.push_back(std::move(c));
}

// ADA's general geometry (--ada-geom): the bilinear affine warp of a batch of 64x64 RGB
// images, as D's input sees it three times a step (reals, fakes for D, fakes for G). theta is
// filled like any input, uniform in [-1, 1): every sample a different shrinking, rotating,
// shearing map (four taps per pixel, the general case).
void add_warp_cases(int64_t N, std::vector<Case>& cases) {
  const int64_t C = 3, H = 64, W = 64, n = N * C * H * W;
  Case f, b;
  f.name = "ada.warp.fwd";
  b.name = "ada.warp.bwd";
  f.group = b.group = "augment";
  f.shape = b.shape = dims({N, C, H, W}) + " theta " + dims({N, 2, 3});
  f.flops = b.flops = 8.0 * n;  // four multiply-adds per element
  f.bytes = 8.0 * n;            // read x once (neighbouring taps hit the cache), write y
  b.bytes = 12.0 * n;           // read dy, zero dx, add into dx
  f.tensors = {{"x", n, Role::In}, {"theta", N * 6, Role::In}, {"y", n, Role::Out}};
  b.tensors = {{"dy", n, Role::In}, {"theta", N * 6, Role::In}, {"dx", n, Role::Out}};
  // The kernels read theta as floats; the double reference gets the same values back (they
  // were floats before they were widened).
  auto as_float = [N](const auto* t) {
    return std::vector<float>(t, t + N * 6);
  };
  f.cpu_f = [=](float* const* t) { cpu::affine_warp_forward<float>(t[0], t[1], t[2], N, C, H, W); };
  f.cpu_d = [=](double* const* t) { cpu::affine_warp_forward<double>(t[0], as_float(t[1]).data(), t[2], N, C, H, W); };
  b.cpu_f = [=](float* const* t) { cpu::affine_warp_backward<float>(t[0], t[1], t[2], N, C, H, W); };
  b.cpu_d = [=](double* const* t) { cpu::affine_warp_backward<double>(t[0], as_float(t[1]).data(), t[2], N, C, H, W); };
#ifdef GANTRY_WITH_CUDA
  f.gpu = {{"cuda", [=](float* const* t) { gantry::cuda::affine_warp_forward(t[0], t[1], t[2], N, C, H, W); }}};
  b.gpu = {{"cuda", [=](float* const* t) { gantry::cuda::affine_warp_backward(t[0], t[1], t[2], N, C, H, W); }}};
#endif
  cases.push_back(std::move(f));
  cases.push_back(std::move(b));
}

std::vector<Case> make_cases(int64_t N) {
  std::vector<Case> cases;
  const auto layers = dcgan_layers();
  for (const Layer& L : layers) add_conv_cases(L, N, cases);
  for (const Layer& L : layers)
    if (L.bn) add_bn_cases(L, N, cases);
  for (const Layer& L : layers) add_act_cases(L, N, cases);
  add_adam_case(cases);
  add_warp_cases(N, cases);
  return cases;
}

// ---- buffers ------------------------------------------------------------------------------
// Deterministic fill: a hash of the index, uniform in [-1, 1) (Positive: [0.5, 1.5)).
inline float hash_float(uint64_t i, uint64_t salt) {
  uint64_t z = i * 0x9E3779B97F4A7C15ull + salt * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

void fill(float* p, int64_t n, Fill f, uint64_t salt) {
#pragma omp parallel for if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const float u = hash_float(static_cast<uint64_t>(i), salt);
    p[i] = f == Fill::Positive ? 1.0f + 0.5f * u : u;
  }
}

// Host layout of one case: `sets` copies of the rotating tensors (In, InOut) and one copy of
// each Out tensor.
struct HostBuffers {
  std::vector<std::vector<float>> rot;  // [tensor] -> sets * numel
  std::vector<std::vector<float>> out;  // [tensor] -> numel (Out only)
  int sets = 1;
  std::vector<float*> ptrs(const Case& c, int set) {
    std::vector<float*> p(c.tensors.size());
    for (size_t k = 0; k < c.tensors.size(); ++k)
      p[k] = c.tensors[k].role == Role::Out ? out[k].data() : rot[k].data() + set * c.tensors[k].numel;
    return p;
  }
};

int rotation_sets(const Case& c, double rotate_bytes) {
  double set_bytes = 0;
  for (const auto& t : c.tensors)
    if (t.role != Role::Out) set_bytes += 4.0 * t.numel;
  return static_cast<int>(std::clamp(std::ceil(rotate_bytes / std::max(set_bytes, 1.0)), 2.0, 512.0));
}

// Max |a - ref| / max |ref| over every output tensor (and in/out tensor) of a case.
double compare(const std::vector<std::vector<float>>& got, const std::vector<std::vector<double>>& ref) {
  double err = 0;
  for (size_t k = 0; k < ref.size(); ++k) {
    if (ref[k].empty()) continue;
    double scale = 1e-30, diff = 0;
    for (size_t i = 0; i < ref[k].size(); ++i) {
      scale = std::max(scale, std::fabs(ref[k][i]));
      const double d = std::fabs(static_cast<double>(got[k][i]) - ref[k][i]);
      diff = std::max(diff, std::isnan(d) ? INFINITY : d);
    }
    err = std::max(err, diff / scale);
  }
  return err;
}

// The double reference of a case on set 0: outputs (Out and InOut; empty for In).
std::vector<std::vector<double>> reference(const Case& c, HostBuffers& hb) {
  std::vector<std::vector<double>> d(c.tensors.size());
  std::vector<double*> p(c.tensors.size());
  auto host = hb.ptrs(c, 0);
  for (size_t k = 0; k < c.tensors.size(); ++k) {
    d[k].resize(c.tensors[k].numel);
    if (c.tensors[k].role != Role::Out)
      for (int64_t i = 0; i < c.tensors[k].numel; ++i) d[k][i] = host[k][i];
    p[k] = d[k].data();
  }
  c.cpu_d(p.data());
  for (size_t k = 0; k < c.tensors.size(); ++k)
    if (c.tensors[k].role == Role::In) d[k].clear();
  return d;
}

// ---- results ------------------------------------------------------------------------------
struct Row {
  std::string name, impl, shape, bound;
  double ms = 0, gflops = 0, gbs = 0, frac = 0, err = -1;
  bool ok = true;
};

void print_row(const Row& r) {
  char err[32];
  if (r.err < 0) std::snprintf(err, sizeof err, "%9s", "-");
  else std::snprintf(err, sizeof err, "%9.1e", r.err);
  std::printf("%-18s %-6s %-30s %9.3f %9.1f %8.1f %-7s %6.1f%% %s%s\n", r.name.c_str(),
              r.impl.c_str(), r.shape.c_str(), r.ms, r.gflops, r.gbs, r.bound.c_str(),
              100 * r.frac, err, r.ok ? "" : "  CHECK FAILED");
  std::fflush(stdout);
}

void write_svg(const std::string& path, const std::vector<Row>& rows, const std::string& title) {
  std::ofstream f(path);
  if (!f) throw std::runtime_error("kernel_bench: cannot write --svg " + path);
  const int bar_h = 14, left = 260, width = 760, top = 40;
  const int h = top + static_cast<int>(rows.size()) * (bar_h + 4) + 30;
  f << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << left + width + 80 << "\" height=\"" << h
    << "\" font-family=\"monospace\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"10\" y=\"20\" font-size=\"14\">" << title << "</text>\n";
  for (int p = 0; p <= 100; p += 25) {
    const int x = left + width * p / 100;
    f << "<line x1=\"" << x << "\" y1=\"" << top - 5 << "\" x2=\"" << x << "\" y2=\"" << h - 25
      << "\" stroke=\"#ddd\"/><text x=\"" << x - 10 << "\" y=\"" << h - 10 << "\">" << p << "%</text>\n";
  }
  int y = top;
  for (const Row& r : rows) {
    const double fr = std::min(r.frac, 1.2);
    const char* color = r.bound == "compute" ? "#3b6fb6" : "#d9822b";
    f << "<text x=\"5\" y=\"" << y + bar_h - 3 << "\">" << r.name << " " << r.impl << "</text>"
      << "<rect x=\"" << left << "\" y=\"" << y << "\" width=\"" << static_cast<int>(width * fr)
      << "\" height=\"" << bar_h << "\" fill=\"" << color << "\"/>"
      << "<text x=\"" << left + static_cast<int>(width * fr) + 4 << "\" y=\"" << y + bar_h - 3 << "\">"
      << static_cast<int>(std::lround(100 * r.frac)) << "%</text>\n";
    y += bar_h + 4;
  }
  f << "<text x=\"" << left << "\" y=\"" << top - 10
    << "\">blue: compute-bound (vs GEMM ceiling)   orange: memory-bound (vs copy bandwidth)</text>\n</svg>\n";
}

bool selected(const Options& o, const Case& c) {
  if (o.filters.empty()) return true;
  for (const auto& f : o.filters)
    if (c.name.find(f) != std::string::npos || c.group == f) return true;
  return false;
}

Row make_row(const Case& c, const std::string& impl, double ms, const Ceilings& ceil) {
  Row r;
  r.name = c.name;
  r.impl = impl;
  r.shape = c.shape;
  r.ms = ms;
  r.gflops = c.flops / (ms * 1e-3) / 1e9;
  r.gbs = c.bytes / (ms * 1e-3) / 1e9;
  const double balance = ceil.gemm_gflops / ceil.bw_gbs;  // FLOP per byte
  const bool compute = c.flops / c.bytes > balance;
  r.bound = compute ? "compute" : "memory";
  r.frac = compute ? r.gflops / ceil.gemm_gflops : r.gbs / ceil.bw_gbs;
  return r;
}

const char* kHeader = "%-18s %-6s %-30s %9s %9s %8s %-7s %7s %9s\n";

void print_header() {
  std::printf(kHeader, "case", "impl", "shape (layer in->out)", "ms", "GFLOP/s", "GB/s", "bound",
              "of ceil", "max err");
}

// ---- GPU ----------------------------------------------------------------------------------
#ifdef GANTRY_WITH_CUDA
struct GpuTimer {
  cudaEvent_t a, b;
  GpuTimer() {
    cudaEventCreate(&a);
    cudaEventCreate(&b);
  }
  ~GpuTimer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  void start() { cudaEventRecord(a, gantry::cuda::stream()); }
  double stop_ms() {
    cudaEventRecord(b, gantry::cuda::stream());
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    return ms;
  }
};

struct DeviceBuf {
  float* p = nullptr;
  explicit DeviceBuf(int64_t n) {
    p = static_cast<float*>(gantry::cuda::allocate(static_cast<size_t>(std::max<int64_t>(n, 1)) * 4, 0));
  }
  ~DeviceBuf() { gantry::cuda::deallocate(p, 0); }
  DeviceBuf(const DeviceBuf&) = delete;
  DeviceBuf& operator=(const DeviceBuf&) = delete;
};

Ceilings gpu_ceilings() {
  Ceilings c;
  GpuTimer tm;
  // The CUDA emulator build (the CPU behind it, cuBLAS a model): small sizes; its "ceilings"
  // only keep the table's columns defined.
  const bool emu = gantry::cuda::emulated();
  const int64_t n = emu ? 256 : 8192;
  DeviceBuf A(n * n), B(n * n), C(n * n);
  gantry::cuda::fill(A.p, n * n, 0.01f);
  gantry::cuda::fill(B.p, n * n, 0.01f);
  auto sgemm = [&](bool tf32) {
    gantry::cuda::set_gemm_allow_tf32(tf32);
    std::vector<double> t;
    for (int rep = 0; rep < 8; ++rep) {
      tm.start();
      gantry::cuda::library::gemm(false, false, n, n, n, 1.f, A.p, B.p, 0.f, C.p);
      const double ms = tm.stop_ms();
      if (rep >= 2) t.push_back(ms);
    }
    return 2.0 * n * n * n / (median(t) * 1e-3) / 1e9;
  };
  const bool was = gantry::cuda::gemm_allow_tf32();
  c.gemm_gflops = sgemm(false);
  c.peak_gflops = std::max(c.gemm_gflops, sgemm(true));
  gantry::cuda::set_gemm_allow_tf32(was);
  c.gemm_what = emu ? "cuBLAS model SGEMM 256^3 (emulator)" : "cuBLAS SGEMM 8192^3 (fp32)";
  c.peak_what = emu ? "cuBLAS model SGEMM 256^3 with TF32" : "cuBLAS SGEMM 8192^3 with TF32";
  const int64_t m = emu ? 4ll << 20 : 256ll << 20;  // 1 GiB (16 MiB on the emulator)
  DeviceBuf S(m), D(m);
  gantry::cuda::fill(S.p, m, 1.f);
  std::vector<double> t;
  for (int rep = 0; rep < 8; ++rep) {
    tm.start();
    cudaMemcpyAsync(D.p, S.p, m * 4, cudaMemcpyDeviceToDevice, gantry::cuda::stream());
    const double ms = tm.stop_ms();
    if (rep >= 2) t.push_back(ms);
  }
  c.bw_gbs = 2.0 * m * 4 / (median(t) * 1e-3) / 1e9;
  c.bw_what = emu ? "cudaMemcpy D2D 16 MiB (read+write)" : "cudaMemcpy D2D 1 GiB (read+write)";
  return c;
}

// Returns false when no GPU is usable; a case that throws clears `ok`.
bool run_gpu(const Options& opt, std::vector<Case>& cases, std::vector<Row>& rows, bool& ok) {
  const int count = gantry::cuda::device_count();
  if (count == 0) {
    std::printf("\nCUDA: skipped (this build has the CUDA backend, but no GPU is usable here)\n");
    return false;
  }
  gantry::cuda::set_device(0);
  gantry::cuda::set_conv_allow_tf32(opt.tf32);
  gantry::cuda::set_gemm_allow_tf32(opt.tf32);
  const Ceilings ceil = gpu_ceilings();
  int l2 = 0;
  cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0);
  const double rotate = opt.rotate_mb >= 0 ? opt.rotate_mb * (1 << 20) : std::max(2.0 * l2, 64.0 * (1 << 20));
  std::printf("\n== GPU: %s (L2 %.0f MiB; inputs rotated over >= %.0f MiB; TF32 %s)\n",
              gantry::cuda::device_name(0).c_str(), l2 / 1048576.0, rotate / 1048576.0,
              opt.tf32 ? "on" : "off");
  std::printf("ceilings: %.0f GFLOP/s (%s), %.0f GFLOP/s (%s), %.0f GB/s (%s)\n", ceil.gemm_gflops,
              ceil.gemm_what.c_str(), ceil.peak_gflops, ceil.peak_what.c_str(), ceil.bw_gbs,
              ceil.bw_what.c_str());
  // With --tf32 the library rows (cuDNN, cuBLAS) may run on TF32 tensor cores: they are
  // checked to TF32's error and their compute fraction is of the TF32 SGEMM, not the fp32 one.
  auto tf32_lib = [&](const Impl& impl) { return opt.tf32 && impl.name != "cuda"; };
  Ceilings tf32_ceil = ceil;
  tf32_ceil.gemm_gflops = ceil.peak_gflops;
  if (opt.tf32) std::printf("fraction of cudnn/cublas compute-bound rows: of the TF32 SGEMM (%.0f GFLOP/s)\n", ceil.peak_gflops);
  print_header();
  GpuTimer tm;
  for (Case& c : cases) {
    if (!selected(opt, c) || c.gpu.empty()) continue;
    HostBuffers hb;
    hb.sets = 1;
    hb.rot.resize(c.tensors.size());
    hb.out.resize(c.tensors.size());
    for (size_t k = 0; k < c.tensors.size(); ++k) {
      auto& t = c.tensors[k];
      (t.role == Role::Out ? hb.out[k] : hb.rot[k]).resize(t.numel);
      if (t.role != Role::Out) fill(hb.rot[k].data(), t.numel, t.fill, k + 1);
    }
    std::vector<std::vector<double>> ref;
    if (opt.check) ref = reference(c, hb);
    const int sets = rotation_sets(c, rotate);
    for (const Impl& impl : c.gpu) {
      // Device copies: `sets` copies of each rotating tensor (all equal to the host set 0).
      std::vector<std::unique_ptr<DeviceBuf>> dev(c.tensors.size());
      for (size_t k = 0; k < c.tensors.size(); ++k) {
        const auto& t = c.tensors[k];
        const int copies = t.role == Role::Out ? 1 : sets;
        dev[k] = std::make_unique<DeviceBuf>(t.numel * copies);
        if (t.role != Role::Out)
          for (int s = 0; s < copies; ++s)
            gantry::cuda::copy_host_to_device(dev[k]->p + s * t.numel, hb.rot[k].data(), t.numel * 4);
      }
      auto ptrs = [&](int set) {
        std::vector<float*> p(c.tensors.size());
        for (size_t k = 0; k < c.tensors.size(); ++k)
          p[k] = dev[k]->p + (c.tensors[k].role == Role::Out ? 0 : set * c.tensors[k].numel);
        return p;
      };
      Row r;
      double err = -1;
      try {
        if (opt.check) {
          auto p = ptrs(0);
          impl.fn(p.data());
          std::vector<std::vector<float>> got(c.tensors.size());
          for (size_t k = 0; k < c.tensors.size(); ++k) {
            if (c.tensors[k].role == Role::In) continue;
            got[k].resize(c.tensors[k].numel);
            gantry::cuda::copy_device_to_host(got[k].data(), p[k], c.tensors[k].numel * 4);
          }
          err = compare(got, ref);
        }
        for (int i = 0; i < opt.warmup; ++i) {
          auto p = ptrs((i + 1) % sets);
          impl.fn(p.data());
        }
        // A sample is `calls` back-to-back calls between one pair of events, so the host's
        // work for a call (descriptors, cache lookups, the launch) overlaps the device's work
        // for the one before, as in a training step; one call per pair would add it to every
        // short kernel's time. `calls` makes a sample at least ~1 ms of device work.
        tm.start();
        impl.fn(ptrs(0).data());
        const double once = tm.stop_ms();
        const int calls = once >= 1.0 ? 1 : std::min(100, static_cast<int>(1.0 / std::max(once, 0.01)) + 1);
        std::vector<double> times;
        double total = 0;
        for (int i = 0; i < opt.repeats || total < opt.min_ms; ++i) {
          tm.start();
          for (int k = 0; k < calls; ++k) impl.fn(ptrs((i * calls + k) % sets).data());
          const double ms = tm.stop_ms();
          times.push_back(ms / calls);
          total += ms;
          if (i > 100000) break;
        }
        r = make_row(c, impl.name, median(times), tf32_lib(impl) ? tf32_ceil : ceil);
      } catch (const std::exception& e) {
        std::printf("%-18s %-6s failed: %s\n", c.name.c_str(), impl.name.c_str(), e.what());
        ok = false;  // a CUDA error is a failure, not a missing row
        continue;
      }
      r.err = err;
      r.ok = err < 0 || err < (tf32_lib(impl) ? 5e-3 : 1e-4);
      print_row(r);
      rows.push_back(r);
    }
  }
  return true;
}
#endif

}  // namespace

int main(int argc, char** argv) try {
  const Options opt = parse(argc, argv);
  if (opt.threads > 0) omp_set_num_threads(opt.threads);
  g_cpu_clock = opt.cpu_clock;
  std::vector<Case> cases = make_cases(opt.batch);
  if (opt.list) {
    for (const Case& c : cases) std::printf("%-20s %-6s %s\n", c.name.c_str(), c.group.c_str(), c.shape.c_str());
    return 0;
  }
  std::vector<Row> rows;
  bool all_ok = true;
  if (opt.impl != "cuda") {
    const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE) > 0 ? sysconf(_SC_LEVEL3_CACHE_SIZE)
                                                        : sysconf(_SC_LEVEL2_CACHE_SIZE);
    const double rotate = opt.rotate_mb >= 0 ? opt.rotate_mb * (1 << 20)
                                             : std::min(std::max(2.0 * llc, 64.0 * (1 << 20)), 1024.0 * (1 << 20));
    const Ceilings ceil = cpu_ceilings();
    std::printf("== CPU: %d OpenMP threads, batch %d, LLC %.0f MiB, inputs rotated over >= %.0f MiB, %s clock\n",
                omp_get_max_threads(), opt.batch, llc / 1048576.0, rotate / 1048576.0,
                opt.cpu_clock ? "CPU-time/threads" : "wall");
    std::printf("ceilings: %.1f GFLOP/s (%s), %.1f GFLOP/s (%s), %.1f GB/s (%s)\n",
                ceil.gemm_gflops, ceil.gemm_what.c_str(), ceil.peak_gflops, ceil.peak_what.c_str(),
                ceil.bw_gbs, ceil.bw_what.c_str());
    std::printf("fraction: compute-bound rows vs the SGEMM ceiling (of the FMA peak: x%.2f), "
                "memory-bound rows vs the copy bandwidth\n",
                ceil.gemm_gflops / ceil.peak_gflops);
    print_header();
    double conv_ms = 0, conv_flops = 0;
    for (Case& c : cases) {
      if (!selected(opt, c)) continue;
      HostBuffers hb;
      hb.sets = rotation_sets(c, rotate);
      hb.rot.resize(c.tensors.size());
      hb.out.resize(c.tensors.size());
      for (size_t k = 0; k < c.tensors.size(); ++k) {
        const auto& t = c.tensors[k];
        if (t.role == Role::Out) {
          hb.out[k].assign(t.numel, 0.f);
          continue;
        }
        hb.rot[k].resize(static_cast<size_t>(t.numel) * hb.sets);
        fill(hb.rot[k].data(), t.numel, t.fill, k + 1);  // set 0 is the checked one
        fill(hb.rot[k].data() + t.numel, t.numel * (hb.sets - 1), t.fill, k + 101);
      }
      double err = -1;
      if (opt.check) {
        // Check on copies of set 0 (in/out tensors are updated in place).
        const auto ref = reference(c, hb);
        std::vector<std::vector<float>> got(c.tensors.size());
        std::vector<float*> p = hb.ptrs(c, 0);
        for (size_t k = 0; k < c.tensors.size(); ++k) {
          got[k].assign(p[k], p[k] + c.tensors[k].numel);
          p[k] = got[k].data();
        }
        c.cpu_f(p.data());
        err = compare(got, ref);
      }
      for (int i = 0; i < opt.warmup; ++i) {
        auto p = hb.ptrs(c, (i + 1) % hb.sets);
        c.cpu_f(p.data());
      }
      std::vector<double> times;
      double total = 0;
      for (int i = 0; i < opt.repeats || total < opt.min_ms; ++i) {
        auto p = hb.ptrs(c, i % hb.sets);
        const double t0 = now_ms();
        c.cpu_f(p.data());
        times.push_back(now_ms() - t0);
        total += times.back();
        if (i > 100000) break;
      }
      Row r = make_row(c, "cpu", median(times), ceil);
      r.err = err;
      r.ok = err < 1e-4;
      all_ok = all_ok && r.ok;
      if (c.group == "conv") {
        conv_ms += r.ms;
        conv_flops += c.flops;
      }
      print_row(r);
      rows.push_back(r);
    }
    if (conv_ms > 0)
      std::printf("conv cases together: %.1f GFLOP in %.1f ms = %.1f GFLOP/s (%.0f%% of SGEMM ceiling)\n",
                  conv_flops / 1e9, conv_ms, conv_flops / conv_ms / 1e6,
                  100 * conv_flops / conv_ms / 1e6 / ceil.gemm_gflops);
  }
#ifdef GANTRY_WITH_CUDA
  // --impl cuda without a GPU exits 77 (skipped, as dcgan_step), not 0: nothing was measured.
  bool gpu_ran = false;
  if (opt.impl != "cpu") gpu_ran = run_gpu(opt, cases, rows, all_ok);
#else
  const bool gpu_ran = false;
  if (opt.impl == "cuda") std::printf("CUDA: skipped (gantry was built without the CUDA backend)\n");
#endif
  if (opt.impl == "cuda" && !gpu_ran) return 77;
  if (!opt.svg.empty()) {
    write_svg(opt.svg, rows, "gantry kernel_bench: fraction of the machine's ceiling (batch " + std::to_string(opt.batch) + ")");
    std::printf("wrote %s\n", opt.svg.c_str());
  }
  for (const Row& r : rows) all_ok = all_ok && r.ok;
  if (!all_ok) std::printf("SOME CHECKS FAILED\n");
  return all_ok ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kernel_bench: %s\n", e.what());
  return 1;
}

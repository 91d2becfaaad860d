// dcgan_step: the full DCGAN training step (models/dcgan_trainer.h, DCGANTrainer::step) on
// synthetic data, in images/s. The headline number of docs/benchmarks.md and of
// benchmarks/compare_pytorch.sh.
//
// Configs: 64rgb_b64, 64rgb_b128 (64x64 RGB, batch 64 / 128) and 32gray_b128 (32x32, 1 channel).
// For each: --warmup steps, then --steps timed steps; prints the median ms/step (with lazy R1 the
// mean over whole R1 cycles, --steps rounded up to them), images/s and the
// peak memory (max RSS of the process on the CPU, which only grows, so configs run smallest
// first; the memory pool's high-water mark on a GPU).
//
// Usage: dcgan_step [--device cpu|cuda] [--config all|64rgb_b64,64rgb_b128,32gray_b128]
//                   [--steps N] [--warmup N] [--threads N] [--batch N] [--seed N] [--json]
//                   [--loss bce|hinge|lsgan|wgan] [--spectral-norm] [--d-steps K] [--r1 G] [--gp L]
//                   [--d-norm batch|instance|layer|none] [--r1-every K] [--ada-p P] [--ada-geom] [--r1-at reals|augmented]
// The last seven are dcgan_train's options of the same names (DCGANConfig): the cost of each.
// With --d-steps K a step is K D updates and one G update, and images/s counts the K batches.
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "gantry/core/cpu_allocator.h"
#include "gantry/core/random.h"
#include "gantry/core/tensor.h"
#include "gantry/models/dcgan_trainer.h"
#ifdef GANTRY_WITH_CUDA
#include "gantry/core/cuda_runtime.h"
#endif

namespace {

using namespace gantry;

struct StepConfig {
  std::string name;
  int image_size;
  int64_t nc, batch;
};

const std::vector<StepConfig> kConfigs = {
    {"32gray_b128", 32, 1, 128}, {"64rgb_b64", 64, 3, 64}, {"64rgb_b128", 64, 3, 128}};

struct Options {
  std::string device = "cpu", configs = "all";
  int steps = 10, warmup = 2, threads = 0;
  int64_t batch = 0, seed = 1;
  bool json = false;
  std::string loss = "bce";
  bool spectral_norm = false;
  std::string d_norm = "batch";  // D's norm layers (dcgan_train's --d-norm)
  int r1_every = 1;              // lazy R1 (dcgan_train's --r1-every)
  double ada_p = -1;             // ADA's augmentation at this fixed probability (< 0: off)
  std::string r1_at = "reals";   // with ADA, where R1 is taken (dcgan_train's --r1-at)
  bool r1_at_given = false;
  bool ada_geom = false;         // ADA's general geometry too (dcgan_train's --ada-geom)
  int d_steps = 1;
  double r1 = 0, gp = 0;  // gradient penalty weights (dcgan_train's --r1, --gp)
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr,
               "dcgan_step: %s\nusage: dcgan_step [--device cpu|cuda] [--config all|64rgb_b64,"
               "64rgb_b128,32gray_b128] [--steps N] [--warmup N] [--threads N] [--batch N] "
               "[--seed N] [--json] [--loss bce|hinge|lsgan|wgan] [--spectral-norm] [--d-steps K] [--r1 G] [--gp L]\n"
               "                  [--d-norm batch|instance|layer|none] [--r1-every K] [--ada-p P] [--ada-geom] [--r1-at reals|augmented]\n",
               msg.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) usage_error(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  auto integer = [&](int& i) -> int64_t {
    const std::string flag = argv[i], v = value(i);
    char* end = nullptr;
    const long long n = std::strtoll(v.c_str(), &end, 10);
    if (end == v.c_str() || *end) usage_error(flag + " expects an integer, got '" + v + "'");
    return n;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--device") o.device = value(i);
    else if (a == "--config") o.configs = value(i);
    else if (a == "--steps") o.steps = static_cast<int>(integer(i));
    else if (a == "--warmup") o.warmup = static_cast<int>(integer(i));
    else if (a == "--threads") o.threads = static_cast<int>(integer(i));
    else if (a == "--batch") o.batch = integer(i);
    else if (a == "--seed") o.seed = integer(i);
    else if (a == "--json") o.json = true;
    else if (a == "--loss") o.loss = value(i);
    else if (a == "--spectral-norm") o.spectral_norm = true;
    else if (a == "--d-steps") o.d_steps = static_cast<int>(integer(i));
    else if (a == "--d-norm") o.d_norm = value(i);
    else if (a == "--r1-every") o.r1_every = static_cast<int>(integer(i));  // >= 1: checked by DCGANTrainer
    else if (a == "--r1-at") { o.r1_at = value(i); o.r1_at_given = true; }
    else if (a == "--ada-geom") o.ada_geom = true;
    else if (a == "--ada-p") {
      const std::string v = value(i);
      char* end = nullptr;
      o.ada_p = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end || !(o.ada_p >= 0 && o.ada_p <= 1)) usage_error("--ada-p expects a probability in [0, 1], got '" + v + "'");
    }
    else if (a == "--r1" || a == "--gp") {
      const std::string v = value(i);
      char* end = nullptr;
      const double x = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end || !(x >= 0)) usage_error(a + " expects a weight >= 0, got '" + v + "'");
      (a == "--r1" ? o.r1 : o.gp) = x;
    }
    else if (a == "-h" || a == "--help") usage_error("help");
    else usage_error("unknown flag '" + a + "'");
  }
  if (o.device != "cpu" && o.device != "cuda")
    usage_error("--device must be cpu or cuda, got '" + o.device + "'");
  if (o.steps < 1) usage_error("--steps must be >= 1");
  if (o.warmup < 0) usage_error("--warmup must be >= 0");
  if (o.d_steps < 1) usage_error("--d-steps must be >= 1");
  if (o.r1_at != "reals" && o.r1_at != "augmented") usage_error("--r1-at must be reals or augmented, got '" + o.r1_at + "'");
  if (o.ada_geom && o.ada_p < 0) usage_error("--ada-geom adds to ADA's augmentations: give --ada-p P too");
  if (o.r1_at_given && (o.r1 == 0 || o.ada_p < 0)) usage_error("--r1-at says where R1 is taken with ADA: give --r1 G and --ada-p P too");
  try {
    gan_loss_from_name(o.loss);
  } catch (const std::invalid_argument& e) {
    usage_error(std::string("--loss: ") + e.what());
  }
  try {
    discriminator_norm_from_name(o.d_norm);
  } catch (const std::invalid_argument& e) {
    usage_error(std::string("--d-norm: ") + e.what());
  }
  return o;
}

std::vector<StepConfig> pick(const Options& o) {
  if (o.configs == "all") return kConfigs;
  std::vector<StepConfig> out;
  size_t p = 0;
  while (p <= o.configs.size()) {
    const size_t q = std::min(o.configs.find(',', p), o.configs.size());
    const std::string name = o.configs.substr(p, q - p);
    p = q + 1;
    if (name.empty()) continue;
    auto it = std::find_if(kConfigs.begin(), kConfigs.end(), [&](const StepConfig& c) { return c.name == name; });
    if (it == kConfigs.end())
      usage_error("unknown --config '" + name + "' (known: all, 64rgb_b64, 64rgb_b128, 32gray_b128)");
    out.push_back(*it);
  }
  return out;
}

// Convolution FLOPs of one DCGANTrainer::step (2 per multiply-add): each of the K D updates
// runs 2 D forwards (real, detached fake), 2 weight backwards and 2 input backwards without
// the first layer's (real and detached fake need no input gradient); the G update runs one D
// forward and one full input backward (D's params are frozen, so no weight backward). G runs
// K forwards (one per D update; G's update reuses the last), one weight backward and one input
// backward (not the first layer's: z needs no gradient). K = 1 is the example's step.
double step_conv_flops(const StepConfig& c, int64_t N, int K) {
  const int L = c.image_size == 32 ? 4 : c.image_size == 64 ? 5 : 6;
  const int64_t nz = 100, ngf = 64, ndf = 64;
  double g_all = 0, g_first = 0, d_all = 0, d_first = 0;
  // G: ConvT(nz, ngf*2^(L-2)) 1->4, then halving channels and doubling size, last to nc.
  int64_t hw = 1, ch = nz;
  for (int l = 0; l < L; ++l) {
    const int64_t out_ch = l == L - 1 ? c.nc : ngf * (int64_t{1} << (L - 2 - l));
    const int64_t out_hw = l == 0 ? 4 : hw * 2;
    const double f = 2.0 * N * ch * hw * hw * out_ch * 16;  // each input pixel touches 16 outputs
    g_all += f;
    if (l == 0) g_first = f;
    ch = out_ch;
    hw = out_hw;
  }
  hw = c.image_size;
  ch = c.nc;
  for (int l = 0; l < L; ++l) {
    const int64_t out_ch = l == L - 1 ? 1 : ndf * (int64_t{1} << l);
    const int64_t out_hw = l == L - 1 ? 1 : hw / 2;
    const double f = 2.0 * N * out_ch * out_hw * out_hw * ch * 16;
    d_all += f;
    if (l == 0) d_first = f;
    ch = out_ch;
    hw = out_hw;
  }
  return K * (6 * d_all - 2 * d_first) + 2 * d_all + K * g_all + g_all + (g_all - g_first);
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;  // kilobytes on Linux
}

// CPU time of the whole process (all threads), in ms: on a machine shared with other jobs,
// CPU-seconds per step is steadier than wall time (with --threads 1 it is the work itself).
double process_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) try {
  const Options opt = parse(argc, argv);
  if (opt.threads > 0) omp_set_num_threads(opt.threads);
  Device device = Device::cpu();
  std::string machine = std::to_string(omp_get_max_threads()) + " OpenMP threads";
  if (opt.device == "cuda") {
#ifdef GANTRY_WITH_CUDA
    if (cuda::device_count() == 0) {
      std::fprintf(stderr, "dcgan_step: --device cuda, but no GPU is usable here: skipped\n");
      return 77;
    }
    device = Device::cuda(0);
    machine = cuda::device_name(0);
#else
    std::fprintf(stderr, "dcgan_step: --device cuda, but gantry was built without CUDA: skipped\n");
    return 77;
#endif
  }
  if (!opt.json)
    std::printf("dcgan_step on %s (%s), %d warm-up + %d timed steps per config, loss %s%s, %s norm in D, %d D update(s) per step%s%s\n"
                "%-12s %6s %10s %10s %9s %12s %11s\n",
                opt.device.c_str(), machine.c_str(), opt.warmup, opt.steps, opt.loss.c_str(),
                opt.spectral_norm ? ", spectral norm in D" : "", opt.d_norm.c_str(), opt.d_steps,
                opt.r1 > 0 || opt.gp > 0 ? (", penalties r1 " + std::to_string(opt.r1) +
                                            (opt.r1_every > 1 ? " every " + std::to_string(opt.r1_every) + " D updates (mean over whole cycles)" : "") +
                                            " gp " + std::to_string(opt.gp)).c_str() : "",
                opt.ada_p >= 0 ? (", ADA at p " + std::to_string(opt.ada_p) + (opt.ada_geom ? " with the general geometry" : "") + (opt.r1 > 0 ? ", R1 at the " + opt.r1_at : "")).c_str() : "",
                "config", "batch",
                "ms/step", "images/s", "GFLOP/s", "peak MiB", "CPU-s/step");
  for (StepConfig c : pick(opt)) {
    if (opt.batch > 0) c.batch = opt.batch;
    DCGANConfig dc;
    dc.nc = c.nc;
    dc.image_size = c.image_size;
    dc.loss = gan_loss_from_name(opt.loss);
    dc.spectral_norm = opt.spectral_norm;
    dc.d_norm = discriminator_norm_from_name(opt.d_norm);
    dc.d_steps = opt.d_steps;
    dc.r1_gamma = opt.r1;
    dc.r1_every = opt.r1_every;
    dc.gp_lambda = opt.gp;
    dc.r1_through_augment = opt.r1_at == "reals";
    Generator init(static_cast<uint64_t>(opt.seed)), noise(static_cast<uint64_t>(opt.seed) + 1);
    DCGANTrainer trainer(dc, device, &init);
    if (opt.ada_p >= 0) {
      AdaOptions ao;
      ao.initial_p = opt.ada_p;
      ao.interval = std::numeric_limits<int64_t>::max();  // p never adjusts: the cost at this p
      ao.geometric = opt.ada_geom;
      trainer.enable_ada(ao, static_cast<uint64_t>(opt.seed) + 2);
    }
    // A synthetic real batch in [-1, 1), on the trainer's device (no transfer in the timing).
    Tensor real = Tensor::rand({c.batch, c.nc, c.image_size, c.image_size}, &noise);
    for (int64_t i = 0; i < real.numel(); ++i) real.data()[i] = 2.f * real.data()[i] - 1.f;
    real = real.to(device);
    const std::vector<Tensor> reals(static_cast<size_t>(opt.d_steps), real);  // one per D update
    std::vector<double> ms, cpu_ms;
    StepStats st;
    // Lazy R1 makes the cost periodic (R1 on every r1_every-th D update): time whole cycles and
    // report their mean, which a median over the cheap steps would hide.
    const int cycle = opt.r1_every / std::gcd(opt.r1_every, opt.d_steps);
    const int timed = cycle > 1 ? (opt.steps + cycle - 1) / cycle * cycle : opt.steps;
    for (int i = 0; i < opt.warmup + timed; ++i) {
#ifdef GANTRY_WITH_CUDA
      // The GPU peak is the timed steps' (as PyTorch's side): the warm-up's one-time cuDNN
      // algorithm search borrows up to 1 GiB of workspace that training never needs again.
      if (i == opt.warmup && device.is_cuda()) cuda::reset_pool_high_water_mark();
#endif
      const auto t0 = std::chrono::steady_clock::now();
      const double c0 = process_cpu_ms();
      st = trainer.step(reals, noise);  // ends with .item() reads: synchronized on a GPU
      const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (i >= opt.warmup) {
        ms.push_back(dt);
        cpu_ms.push_back(process_cpu_ms() - c0);
      }
    }
    auto center = [cycle](const std::vector<double>& v) {
      return cycle > 1 ? std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size()) : median(v);
    };
    const double med = center(ms);
    const double ips = c.batch * opt.d_steps / (med * 1e-3);
    const double gflops = step_conv_flops(c, c.batch, opt.d_steps) / (med * 1e-3) / 1e9;
    double peak = peak_rss_mib();
    std::string peak_what = "max_rss";
#ifdef GANTRY_WITH_CUDA
    if (device.is_cuda()) {
      peak = cuda::pool_high_water_mark() / 1048576.0;
      peak_what = "gpu_pool_high_water";
    }
#endif
    if (opt.json) {
      std::printf("{\"config\": \"%s\", \"device\": \"%s\", \"machine\": \"%s\", \"batch\": %lld, "
                  "\"threads\": %d, \"steps\": %d, \"warmup\": %d, \"ms_per_step\": %.3f, "
                  "\"ms_min\": %.3f, \"ms_max\": %.3f, \"images_per_s\": %.3f, \"cpu_ms_per_step\": %.3f, "
                  "\"conv_gflop_per_step\": %.2f, \"conv_gflops\": %.2f, \"peak_mib\": %.1f, "
                  "\"peak_kind\": \"%s\", \"loss\": \"%s\", \"spectral_norm\": %s, \"d_norm\": \"%s\", \"d_steps\": %d, \"r1\": %g, \"r1_every\": %d, \"gp\": %g, "
                  "\"ada_p\": %g, \"ada_geom\": %s, \"r1_at\": \"%s\", \"loss_d\": %.5f, \"loss_g\": %.5f}\n",
                  c.name.c_str(), opt.device.c_str(), machine.c_str(), static_cast<long long>(c.batch),
                  omp_get_max_threads(), static_cast<int>(ms.size()), opt.warmup, med,
                  *std::min_element(ms.begin(), ms.end()), *std::max_element(ms.begin(), ms.end()), ips,
                  center(cpu_ms),
                  step_conv_flops(c, c.batch, opt.d_steps) / 1e9, gflops, peak, peak_what.c_str(), opt.loss.c_str(), opt.spectral_norm ? "true" : "false",
                  opt.d_norm.c_str(), opt.d_steps, opt.r1, opt.r1_every, opt.gp, opt.ada_p, opt.ada_geom ? "true" : "false", opt.r1_at.c_str(), st.loss_d, st.loss_g);
    } else {
      std::printf("%-12s %6lld %10.1f %10.2f %9.1f %12.1f %11.2f\n", c.name.c_str(),
                  static_cast<long long>(c.batch), med, ips, gflops, peak, center(cpu_ms) / 1e3);
    }
    std::fflush(stdout);
  }
  if (!opt.json)
    std::printf("GFLOP/s counts the convolutions only (%s); peak: %s\n",
                "2 FLOP per multiply-add, gantry's step with D frozen in the G update",
                opt.device == "cpu" ? "the process's max RSS so far (configs run smallest first)"
                                    : "the GPU memory pool's high-water mark");
  if (!opt.json && opt.device == "cpu") {
    const auto cs = cpu_allocator::stats();
    std::printf("CPU block cache (core/cpu_allocator.h): %zu hits, %zu misses, %.1f MiB cached, "
                "limit %.0f MiB\n",
                cs.hits, cs.misses, cs.cached_bytes / 1048576.0, cpu_allocator::cache_limit() / 1048576.0);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "dcgan_step: %s\n", e.what());
  return 1;
}

// Implementation switch of the CUDA backend (kernels/cuda/backend_select.h).
#include "gantry/kernels/cuda/backend_select.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace gantry::cuda {

Impl parse_impl(const std::string& text, const std::string& what) {
  if (text == "library" || text == "cudnn" || text == "cublas") return Impl::Library;
  if (text == "handwritten") return Impl::Handwritten;
  throw std::invalid_argument(what + "='" + text +
                              "' is not an implementation: use cudnn|cublas|library or handwritten");
}

bool emulated() {
#ifdef GANTRY_CUDA_EMU
  return true;
#else
  return false;
#endif
}

const char* impl_name(Impl impl) { return impl == Impl::Library ? "library" : "handwritten"; }

namespace {

Impl impl_from_env(const char* name) {
  const char* v = std::getenv(name);
  return (v && *v) ? parse_impl(v, name) : Impl::Library;
}

int tf32_from_env() {  // -1: not set
  const char* v = std::getenv("GANTRY_ALLOW_TF32");
  if (!v || !*v) return -1;
  const std::string s(v);
  if (s == "1" || s == "true" || s == "on") return 1;
  if (s == "0" || s == "false" || s == "off") return 0;
  throw std::invalid_argument("GANTRY_ALLOW_TF32='" + s + "': use 0 or 1");
}

// The settings, initialised from the environment on first use.
struct Settings {
  std::atomic<Impl> conv, bn, gemm;
  std::atomic<bool> conv_tf32, gemm_tf32;
  Settings()
      : conv(impl_from_env("GANTRY_CONV_IMPL")),
        bn(impl_from_env("GANTRY_BN_IMPL")),
        gemm(impl_from_env("GANTRY_GEMM_IMPL")),
        conv_tf32(tf32_from_env() != 0),
        gemm_tf32(tf32_from_env() == 1) {}
};

Settings& settings() {
  static Settings s;
  return s;
}

}  // namespace

void set_conv_impl(Impl impl) { settings().conv = impl; }
void set_bn_impl(Impl impl) { settings().bn = impl; }
void set_gemm_impl(Impl impl) { settings().gemm = impl; }
Impl conv_impl() { return settings().conv; }
Impl bn_impl() { return settings().bn; }
Impl gemm_impl() { return settings().gemm; }

void set_conv_allow_tf32(bool on) { settings().conv_tf32 = on; }
void set_gemm_allow_tf32(bool on) { settings().gemm_tf32 = on; }
bool conv_allow_tf32() { return settings().conv_tf32; }
bool gemm_allow_tf32() { return settings().gemm_tf32; }

ImplScope::ImplScope(Impl conv, Impl bn, Impl gemm)
    : conv_(conv_impl()), bn_(bn_impl()), gemm_(gemm_impl()) {
  set_conv_impl(conv);
  set_bn_impl(bn);
  set_gemm_impl(gemm);
}

ImplScope::~ImplScope() {
  set_conv_impl(conv_);
  set_bn_impl(bn_);
  set_gemm_impl(gemm_);
}

}  // namespace gantry::cuda

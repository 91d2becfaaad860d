#pragma once
// Which implementation the CUDA backend runs for each op family: the vendor library (cuDNN
// for convolutions and batch norm, cuBLAS for GEMM) or gantry's hand-written kernels.
//
// Defaults: library everywhere; TF32 allowed in convolutions (as PyTorch's
// torch.backends.cudnn.allow_tf32) and not in GEMM (as torch.backends.cuda.matmul.allow_tf32).
// The environment sets the starting values, read once on first use:
//   GANTRY_CONV_IMPL=cudnn|handwritten   GANTRY_BN_IMPL=cudnn|handwritten
//   GANTRY_GEMM_IMPL=cublas|handwritten  ("library" is accepted for any of them)
//   GANTRY_ALLOW_TF32=0|1                (both conv and GEMM)
// The calls below change them at run time (for benchmarks and tests). Plain C++: this header
// is usable without the CUDA headers. TF32 only matters for the library paths; the
// hand-written kernels always compute in full fp32.
#include <string>

namespace gantry::cuda {

enum class Impl { Library, Handwritten };

void set_conv_impl(Impl impl);
void set_bn_impl(Impl impl);
void set_gemm_impl(Impl impl);
Impl conv_impl();
Impl bn_impl();
Impl gemm_impl();

void set_conv_allow_tf32(bool on);
void set_gemm_allow_tf32(bool on);
bool conv_allow_tf32();
bool gemm_allow_tf32();

// True only in the CUDA emulator build (GANTRY_CUDA_EMU, tests/cuda_emu/): the "GPU" is the
// CPU, and cuDNN/cuBLAS are models written from their documentation (emu_cudnn.cpp,
// emu_cublas.cpp). Everything runs as in a GPU build, only slowly; benchmarks use it to keep
// their sizes small.
bool emulated();

// "library"/"cudnn"/"cublas" -> Library, "handwritten" -> Handwritten; anything else throws
// std::invalid_argument naming `what` (for example "GANTRY_CONV_IMPL").
Impl parse_impl(const std::string& text, const std::string& what);
const char* impl_name(Impl impl);  // "library" or "handwritten"

// Sets the three implementations for a scope, restoring the previous ones at exit.
class ImplScope {
 public:
  ImplScope(Impl conv, Impl bn, Impl gemm);
  ~ImplScope();
  ImplScope(const ImplScope&) = delete;
  ImplScope& operator=(const ImplScope&) = delete;

 private:
  Impl conv_, bn_, gemm_;
};

}  // namespace gantry::cuda

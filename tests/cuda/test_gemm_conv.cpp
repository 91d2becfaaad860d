// GPU parity: GEMM (hand-written and cuBLAS) and convolution (im2col + hand-written GEMM, and
// cuDNN) against the CPU reference run in double, at the DCGAN's layer shapes (batch 8 and 1)
// and at odd shapes that are not multiples of any tile. fp32 paths must agree to 1e-5
// relative error, TF32 paths to 1e-3. Every output starts as NaN.
#include <catch2/catch.hpp>

#include <algorithm>

#ifdef GANTRY_WITH_CUDA
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"

using namespace gantry;
using test::DevBuf;
using test::rel_error;

namespace {

struct Variant {
  const char* name;
  cuda::Impl impl;
  bool tf32;
  double tol;
};
const Variant kVariants[] = {
    {"handwritten", cuda::Impl::Handwritten, false, 1e-5},
    {"library fp32", cuda::Impl::Library, false, 1e-5},
    {"library tf32", cuda::Impl::Library, true, 1e-3},
};

// Sets the implementation and TF32 flags for a scope.
struct Use {
  cuda::ImplScope scope;
  bool conv_tf32 = cuda::conv_allow_tf32(), gemm_tf32 = cuda::gemm_allow_tf32();
  explicit Use(const Variant& v) : scope(v.impl, v.impl, v.impl) {
    cuda::set_conv_allow_tf32(v.tf32);
    cuda::set_gemm_allow_tf32(v.tf32);
  }
  ~Use() {
    cuda::set_conv_allow_tf32(conv_tf32);
    cuda::set_gemm_allow_tf32(gemm_tf32);
  }
};

// DCGAN (64x64, ngf = ndf = 64, nz = 100) conv shapes. The discriminator's convs, and the
// generator's transposed convs seen as the convs they are adjoint to (ConvT(512->256) is the
// adjoint of Conv(256->512) on 8x8, and so on); ConvT(nz->512, 4, 1, 0) is the adjoint of
// Conv(512 -> 100) on 4x4.
std::vector<cpu::Conv2dShape> dcgan_shapes(int64_t N) {
  return {
      {N, 3, 64, 64, 64, 4, 4, 2, 1},    {N, 64, 32, 32, 128, 4, 4, 2, 1},
      {N, 128, 16, 16, 256, 4, 4, 2, 1}, {N, 256, 8, 8, 512, 4, 4, 2, 1},
      {N, 512, 4, 4, 1, 4, 4, 1, 0},     {N, 512, 4, 4, 100, 4, 4, 1, 0},
  };
}

const cpu::Conv2dShape kOddShapes[] = {
    {3, 5, 13, 11, 7, 3, 3, 1, 1},  // 3x3 "same"
    {2, 3, 9, 10, 5, 5, 4, 2, 2},   // non-square kernel
    {1, 4, 17, 17, 6, 3, 3, 3, 0},  // stride 3, leftover rows
    {2, 1, 1, 1, 3, 1, 1, 1, 0},    // 1x1 everything
    {1, 70, 7, 5, 33, 2, 3, 1, 1},
};

// ||out - ref|| / ||ref|| as everywhere, unless the sums cancel by more than 100x (||ref||
// below 1e-2 of ||ref_abs||, the same sums over |terms|): then against ||ref_abs|| / 100. A
// floating-point sum's rounding error scales with its terms' magnitudes, not with the result
// (Higham, "Accuracy and Stability of Numerical Algorithms", 3.1), so a near-zero result has
// no fp32 answer within 1e-5 of it. Random DCGAN tensors cancel 10-60x: their check is the
// plain relative error; the D's last layer at batch 1 (one output of 8192 terms) can cancel
// 700x, and there the serial fp32 sum of the hand-written GEMM is off by 1.5e-5 of the result
// while 2e-8 of the terms' magnitudes.
double conv_error(const std::vector<float>& out, const std::vector<double>& ref,
                  const std::vector<double>& ref_abs) {
  double ref_norm = 0, abs_norm = 0, err = 0;
  for (size_t i = 0; i < ref.size() && i < out.size(); ++i) {
    ref_norm += ref[i] * ref[i];
    abs_norm += ref_abs[i] * ref_abs[i];
    err += (out[i] - ref[i]) * (out[i] - ref[i]);
  }
  if (ref_norm >= 1e-4 * abs_norm) return rel_error(out, ref);  // squared norms: 100x
  if (out.size() != ref.size() || !std::isfinite(err)) return std::numeric_limits<double>::infinity();
  const double e = std::sqrt(err / abs_norm) * 100;
  UNSCOPED_INFO("the sums cancel " << std::sqrt(abs_norm / ref_norm)
                << "x: error against 1/100 of the terms' magnitudes: " << e);
  return e;
}

void check_conv(const cpu::Conv2dShape& s, const Variant& v) {
  const int64_t OH = s.OH(), OW = s.OW();
  const int64_t nx = s.N * s.C * s.H * s.W, nw = s.O * s.C * s.kh * s.kw, ny = s.N * s.O * OH * OW;
  const uint64_t seed = static_cast<uint64_t>(nx + nw);
  std::vector<float> x = test::randn(nx, seed), w = test::randn(nw, seed + 1, 0.05f),
                     b = test::randn(s.O, seed + 2), dy = test::randn(ny, seed + 3);
  std::vector<double> xd = test::to_double(x), wd = test::to_double(w), bd = test::to_double(b),
                      dyd = test::to_double(dy);
  std::vector<double> y_ref(ny), dx_ref(nx), dw_ref(nw), db_ref(s.O);
  cpu::conv2d_forward<double>(xd.data(), wd.data(), bd.data(), y_ref.data(), s);
  // The same sums over the terms' magnitudes: the scale of the rounding error (conv_error).
  std::vector<double> xa(nx), wa(nw), ba(s.O), y_abs(ny), y_abs_nobias(ny);
  for (int64_t i = 0; i < nx; ++i) xa[i] = std::fabs(xd[i]);
  for (int64_t i = 0; i < nw; ++i) wa[i] = std::fabs(wd[i]);
  for (int64_t i = 0; i < s.O; ++i) ba[i] = std::fabs(bd[i]);
  cpu::conv2d_forward<double>(xa.data(), wa.data(), ba.data(), y_abs.data(), s);
  cpu::conv2d_forward<double>(xa.data(), wa.data(), nullptr, y_abs_nobias.data(), s);
  cpu::conv2d_backward_input<double>(dyd.data(), wd.data(), dx_ref.data(), s);
  cpu::conv2d_backward_weight<double>(xd.data(), dyd.data(), dw_ref.data(), db_ref.data(), s);

  Use use(v);
  DevBuf gx(x), gw(w), gb(b), gdy(dy), gy(ny), gdx(nx), gdw(nw), gdb(s.O);
  INFO(v.name << " " << test::shape_name(s));
  cuda::conv2d_forward(gx.p, gw.p, gb.p, gy.p, s);
  CHECK(conv_error(gy.download(), y_ref, y_abs) < v.tol);
  cuda::conv2d_backward_input(gdy.p, gw.p, gdx.p, s);
  CHECK(rel_error(gdx.download(), dx_ref) < v.tol);
  cuda::conv2d_backward_weight(gx.p, gdy.p, gdw.p, gdb.p, s);
  CHECK(rel_error(gdw.download(), dw_ref) < v.tol);
  CHECK(rel_error(gdb.download(), db_ref) < 1e-5);
  // Twice more: the cached algorithm (cuDNN) and reused pool memory give the same answer.
  gy.poison();
  cuda::conv2d_forward(gx.p, gw.p, nullptr, gy.p, s);
  std::vector<double> y_nobias(ny);
  cpu::conv2d_forward<double>(xd.data(), wd.data(), nullptr, y_nobias.data(), s);
  CHECK(conv_error(gy.download(), y_nobias, y_abs_nobias) < v.tol);
}

struct GemmDims {
  int64_t M, N, K;
};

// cuda::gemm (the implementation in force) against the double CPU GEMM, alpha 1.5, every
// transpose and beta 0 (C poisoned: it must be ignored) and 0.5.
void check_gemm(const GemmDims& d, double tol, uint64_t seed) {
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (float beta : {0.f, 0.5f}) {
        INFO("M" << d.M << " N" << d.N << " K" << d.K << " ta" << ta << " tb" << tb << " beta " << beta);
        std::vector<float> A = test::randn(d.M * d.K, seed), B = test::randn(d.K * d.N, seed + 1),
                           C = test::randn(d.M * d.N, seed + 2);
        std::vector<double> ref = test::to_double(C);
        cpu::gemm<double>(ta, tb, d.M, d.N, d.K, 1.5, test::to_double(A).data(),
                          test::to_double(B).data(), beta, ref.data());
        DevBuf dA(A), dB(B), dC(d.M * d.N);
        if (beta != 0.f) dC.upload(C);  // with beta 0, C stays NaN and must be ignored
        cuda::gemm(ta, tb, d.M, d.N, d.K, 1.5f, dA.p, dB.p, beta, dC.p);
        CHECK(rel_error(dC.download(), ref) < tol);
      }
}

}  // namespace

TEST_CASE("GEMM: hand-written and cuBLAS match the CPU for all transposes", "[cuda][gemm]") {
  const GemmDims dims[] = {{64, 64, 64}, {1, 1, 1},     {7, 13, 5},   {65, 129, 33},
                           {128, 100, 819}, {100, 1, 800}, {3, 200, 1}, {257, 31, 4096}};
  for (const Variant& v : kVariants) {
    Use use(v);
    INFO(v.name);
    for (const GemmDims& d : dims) check_gemm(d, v.tol, 20);
  }
}

TEST_CASE("hand-written GEMM split over K (split-K) matches the CPU", "[cuda][gemm]") {
  // Forced numbers of K ranges, including ones that do not divide K's 16-wide steps evenly
  // and more ranges than steps (clamped); beta 0 (C poisoned: the partial sums must not read
  // it) and 0.5 (added once, by the summing kernel).
  struct Reset {
    ~Reset() { cuda::handwritten::set_gemm_k_splits(0); }
  } reset;
  cuda::ImplScope scope(cuda::conv_impl(), cuda::bn_impl(), cuda::Impl::Handwritten);
  const GemmDims dims[] = {{7, 13, 5}, {65, 129, 33}, {100, 1, 800}, {64, 48, 2000}};
  for (int64_t splits : {2, 3, 7, 1000})
    for (const GemmDims& d : dims) {
      cuda::handwritten::set_gemm_k_splits(splits);
      INFO("splits " << splits);
      CHECK(cuda::handwritten::gemm_k_splits(d.M, d.N, d.K) <= std::min(splits, (d.K + 15) / 16));
      check_gemm(d, 1e-5, 26);
    }
  // The automatic choice: the first DCGAN layer's weight gradient at batch 128 (one 64x64 tile
  // of C over K = 131072) is split on any GPU; 64 x 64 tiles of C are not.
  cuda::handwritten::set_gemm_k_splits(0);
  CHECK(cuda::handwritten::gemm_k_splits(64, 48, 131072) >= 2);
  CHECK(cuda::handwritten::gemm_k_splits(4096, 4096, 4096) == 1);
  CHECK(cuda::handwritten::gemm_k_splits(64, 48, 255) == 1);  // under 16 steps of K per range
}

TEST_CASE("hand-written GEMM and transpose2d past 65535 row tiles (gridDim.y)", "[cuda][gemm]") {
  // Row tiles go in gridDim.y, which stops at 65535: a tall matrix needs the kernels' row-tile
  // loop. GEMM tiles are 64 rows, transpose tiles 32.
  const int64_t M = 65535 * 64 + 37, N = 3, K = 2;
  std::vector<float> A = test::randn(M * K, 23), B = test::randn(K * N, 24);
  cuda::ImplScope scope(cuda::conv_impl(), cuda::bn_impl(), cuda::Impl::Handwritten);
  for (int ta = 0; ta < 2; ++ta) {
    INFO("trans_a " << ta);
    std::vector<double> ref(M * N);
    cpu::gemm<double>(ta, false, M, N, K, 1.0, test::to_double(A).data(),
                      test::to_double(B).data(), 0.0, ref.data());
    DevBuf dA(A), dB(B), dC(M * N);
    cuda::gemm(ta, false, M, N, K, 1.f, dA.p, dB.p, 0.f, dC.p);
    CHECK(rel_error(dC.download(), ref) < 1e-5);
  }
  const int64_t TM = 65535 * 32 + 5, TN = 3;
  std::vector<float> x = test::randn(TM * TN, 25), xt(TM * TN);
  for (int64_t i = 0; i < TM; ++i)
    for (int64_t j = 0; j < TN; ++j) xt[j * TM + i] = x[i * TN + j];
  DevBuf dx(x), dy(TM * TN);
  cuda::transpose2d(dx.p, dy.p, TM, TN);
  CHECK(rel_error(dy.download(), xt) == 0.0);
}

static void check_im2col_col2im() {
  std::vector<cpu::Conv2dShape> shapes(std::begin(kOddShapes), std::end(kOddShapes));
  shapes.push_back({1, 64, 32, 32, 128, 4, 4, 2, 1});
  for (const cpu::Conv2dShape& s : shapes) {
    INFO(test::shape_name(s));
    const int64_t nx = s.C * s.H * s.W, ncol = s.C * s.kh * s.kw * s.OH() * s.OW();
    std::vector<float> x = test::randn(nx, 30), col_ref(ncol);
    cpu::im2col<float>(x.data(), s, col_ref.data());
    DevBuf dx(x), dcol(ncol);
    cuda::im2col(dx.p, s, dcol.p);
    CHECK(rel_error(dcol.download(), col_ref) == 0.0);

    std::vector<float> col = test::randn(ncol, 31), base = test::randn(nx, 32);
    std::vector<double> x_ref = test::to_double(base);
    cpu::col2im<double>(test::to_double(col).data(), s, x_ref.data());  // accumulates
    DevBuf dc(col), dxa(base);
    cuda::col2im(dc.p, s, dxa.p);
    CHECK(rel_error(dxa.download(), x_ref) < 1e-6);
  }
}

TEST_CASE("im2col and col2im match the CPU", "[cuda][conv]") { check_im2col_col2im(); }

TEST_CASE("hand-written conv: the 64-bit index kernels match the CPU too", "[cuda][conv]") {
  // Every launch above fits 32-bit indices, so it runs the int32_t instances of im2col,
  // col2im and the permutes; forcing 64 bits runs the int64_t ones (used past 2^31 elements,
  // which these tests cannot allocate) on the same shapes.
  struct Reset {
    ~Reset() { cuda::set_force_wide_indices(false); }
  } reset;
  cuda::set_force_wide_indices(true);
  check_im2col_col2im();
  for (const cpu::Conv2dShape& s : kOddShapes) check_conv(s, kVariants[0]);
  for (const cpu::Conv2dShape& s : dcgan_shapes(2)) check_conv(s, kVariants[0]);
}

TEST_CASE("conv2d forward/backward: DCGAN shapes, batch 8", "[cuda][conv]") {
  for (const Variant& v : kVariants)
    for (const cpu::Conv2dShape& s : dcgan_shapes(8)) check_conv(s, v);
}

TEST_CASE("conv2d forward/backward: DCGAN shapes, batch 1", "[cuda][conv]") {
  for (const Variant& v : kVariants)
    for (const cpu::Conv2dShape& s : dcgan_shapes(1)) check_conv(s, v);
}

TEST_CASE("conv2d forward/backward: odd shapes", "[cuda][conv]") {
  for (const Variant& v : kVariants)
    for (const cpu::Conv2dShape& s : kOddShapes) check_conv(s, v);
}

// Random x, w, dy of a conv shape (seeds seed, seed + 1, seed + 2) and the double CPU
// kernels' y, dx, dw for them.
struct ConvCase {
  int64_t nx, nw, ny;
  std::vector<float> x, w, dy;
  std::vector<double> y_ref, dx_ref, dw_ref;
  ConvCase(const cpu::Conv2dShape& s, uint64_t seed)
      : nx(s.N * s.C * s.H * s.W), nw(s.O * s.C * s.kh * s.kw), ny(s.N * s.O * s.OH() * s.OW()),
        x(test::randn(nx, seed)), w(test::randn(nw, seed + 1, 0.1f)), dy(test::randn(ny, seed + 2)),
        y_ref(ny), dx_ref(nx), dw_ref(nw) {
    const std::vector<double> xd = test::to_double(x), wd = test::to_double(w), dyd = test::to_double(dy);
    cpu::conv2d_forward<double>(xd.data(), wd.data(), nullptr, y_ref.data(), s);
    cpu::conv2d_backward_input<double>(dyd.data(), wd.data(), dx_ref.data(), s);
    cpu::conv2d_backward_weight<double>(xd.data(), dyd.data(), dw_ref.data(), nullptr, s);
  }
};

TEST_CASE("cuDNN conv on views that start inside a buffer (4-byte aligned only)", "[cuda][conv]") {
  // The algorithm cache is keyed by pointer alignment: an algorithm found on fresh 256-byte
  // aligned buffers may need 16-byte alignment (vectorised loads), and a view such as one
  // image of a batch, one float in, must get an algorithm of its own, not a failing cached one.
  const cpu::Conv2dShape s{2, 5, 9, 7, 6, 3, 3, 1, 1};
  const ConvCase cc(s, 11);
  const auto &x = cc.x, &w = cc.w, &dy = cc.dy;
  const auto &y_ref = cc.y_ref, &dx_ref = cc.dx_ref, &dw_ref = cc.dw_ref;
  const int64_t nx = cc.nx, nw = cc.nw, ny = cc.ny;
  auto slice = [](const std::vector<float>& v, int64_t off, int64_t n) {
    return std::vector<float>(v.begin() + off, v.begin() + off + n);
  };
  const Variant& lib = kVariants[1];  // library fp32
  Use use(lib);
  for (int64_t off : {0, 1, 0}) {  // aligned, one float in, aligned again (both cached)
    INFO("offset " << off << " floats");
    std::vector<float> xo(off, 0.f), wo(off, 0.f), dyo(off, 0.f);
    xo.insert(xo.end(), x.begin(), x.end());
    wo.insert(wo.end(), w.begin(), w.end());
    dyo.insert(dyo.end(), dy.begin(), dy.end());
    DevBuf gx(xo), gw(wo), gdy(dyo), gy(ny + off), gdx(nx + off), gdw(nw + off);
    cuda::conv2d_forward(gx.p + off, gw.p + off, nullptr, gy.p + off, s);
    CHECK(rel_error(slice(gy.download(), off, ny), y_ref) < lib.tol);
    cuda::conv2d_backward_input(gdy.p + off, gw.p + off, gdx.p + off, s);
    CHECK(rel_error(slice(gdx.download(), off, nx), dx_ref) < lib.tol);
    cuda::conv2d_backward_weight(gx.p + off, gdy.p + off, gdw.p + off, nullptr, s);
    CHECK(rel_error(slice(gdw.download(), off, nw), dw_ref) < lib.tol);
  }
}

TEST_CASE("cuDNN conv falls back to the next cached algorithm when one fails to run",
          "[cuda][conv]") {
  // The search caches every successful algorithm, fastest first; one that fails when run
  // (EXECUTION_FAILED here) is dropped and the next runs. On the emulator only: its cuDNN model
  // fails algorithms on request (GANTRY_EMU_CUDNN_FAIL), which a real cuDNN cannot be asked.
  if (!cuda::emulated()) {
    WARN("needs the emulator's cuDNN fault injection; nothing to check on a GPU");
    return;
  }
  const cpu::Conv2dShape s{2, 3, 6, 5, 4, 3, 3, 1, 1};  // a shape no other case searches
  const ConvCase cc(s, 21);
  const auto &y_ref = cc.y_ref, &dx_ref = cc.dx_ref, &dw_ref = cc.dw_ref;
  const int64_t nx = cc.nx, nw = cc.nw, ny = cc.ny;
  const Variant& lib = kVariants[1];  // library fp32
  Use use(lib);
  DevBuf gx(cc.x), gw(cc.w), gdy(cc.dy), gy(ny), gdx(nx), gdw(nw);
  auto check_all = [&] {
    gy.poison();
    gdx.poison();
    gdw.poison();
    cuda::conv2d_forward(gx.p, gw.p, nullptr, gy.p, s);
    CHECK(rel_error(gy.download(), y_ref) < lib.tol);
    cuda::conv2d_backward_input(gdy.p, gw.p, gdx.p, s);
    CHECK(rel_error(gdx.download(), dx_ref) < lib.tol);
    cuda::conv2d_backward_weight(gx.p, gdy.p, gdw.p, nullptr, s);
    CHECK(rel_error(gdw.download(), dw_ref) < lib.tol);
  };
  struct Env {  // unset again whatever happens
    explicit Env(const char* v) { setenv("GANTRY_EMU_CUDNN_FAIL", v, 1); }
    ~Env() { unsetenv("GANTRY_EMU_CUDNN_FAIL"); }
  };
  {
    // The search ranks the workspace ("GEMM") algorithms first; they fail, the next ones run:
    // on the first call (the fresh list) and on the second (the list without them).
    Env fail("staged");
    for (int call = 0; call < 2; ++call) {
      INFO("call " << call << " with the workspace algorithms failing");
      check_all();
    }
  }
  {
    Env fail("all");
    CHECK_THROWS_WITH(cuda::conv2d_forward(gx.p, gw.p, nullptr, gy.p, s),
                      Catch::Contains("every algorithm failed in cudnnConvolutionForward") &&
                          Catch::Contains("x [2, 3, 6, 5], weight [4, 3, 3, 3]") &&
                          Catch::Contains("CUDNN_STATUS_EXECUTION_FAILED"));
  }
  // With every algorithm dropped, the next call searches again.
  INFO("after the failures, nothing failing");
  check_all();
}

TEST_CASE("hand-written conv splits large batches into chunks correctly", "[cuda][conv]") {
  // 128 images of the D's second layer: col would be 128 * 1024 * 256 floats = 128 MiB, so the
  // hand-written path processes 64 images at a time (and accumulates dW across the chunks).
  check_conv({128, 64, 32, 32, 128, 4, 4, 2, 1}, kVariants[0]);
}
#endif  // GANTRY_WITH_CUDA

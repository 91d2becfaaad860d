// The CPU kernels' fast paths (benchmarks' performance work) against naive definitions:
//   - GEMM in every transposition, whichever build runs (Eigen AVX2 or AVX-512, gemm.cpp);
//   - im2col / col2im with the hoisted padding ranges and the stride-1/2 special cases, over
//     strides 1..3, paddings 0..2, kernels 1..4 and odd sizes;
//   - conv2d forward / backward-input / backward-weight against a direct convolution, called
//     twice with different shapes so the reused per-thread scratch buffers are exercised.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "gantry/core/threads.h"
#include "gantry/kernels/cpu/cpu_kernels.h"

using namespace gantry::cpu;

namespace {

std::vector<double> ramp(int64_t n, double scale, int salt) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = scale * std::sin(0.37 * static_cast<double>(i) + salt);
  return v;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

// The direct convolution: y[n,o,oh,ow] = sum_{c,ki,kj} x[n,c,ih,iw] w[o,c,ki,kj].
void conv_naive(const std::vector<double>& x, const std::vector<double>& w, std::vector<double>& y,
                const Conv2dShape& s) {
  const int64_t OH = s.OH(), OW = s.OW();
  y.assign(static_cast<size_t>(s.N * s.O * OH * OW), 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.O; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = 0;
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t ki = 0; ki < s.kh; ++ki)
              for (int64_t kj = 0; kj < s.kw; ++kj) {
                const int64_t ih = oh * s.stride - s.padding + ki, iw = ow * s.stride - s.padding + kj;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                acc += x[((n * s.C + c) * s.H + ih) * s.W + iw] * w[((o * s.C + c) * s.kh + ki) * s.kw + kj];
              }
          y[((n * s.O + o) * OH + oh) * OW + ow] = acc;
        }
}

// Its two adjoints, term by term: dx[n,c,ih,iw] and dw[o,c,ki,kj] collect dy[n,o,oh,ow] times
// the other factor of every product that element took part in.
void conv_naive_backward(const std::vector<double>& x, const std::vector<double>& w,
                         const std::vector<double>& dy, std::vector<double>& dx,
                         std::vector<double>& dw, const Conv2dShape& s) {
  const int64_t OH = s.OH(), OW = s.OW();
  dx.assign(x.size(), 0.0);
  dw.assign(w.size(), 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.O; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const double g = dy[((n * s.O + o) * OH + oh) * OW + ow];
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t ki = 0; ki < s.kh; ++ki)
              for (int64_t kj = 0; kj < s.kw; ++kj) {
                const int64_t ih = oh * s.stride - s.padding + ki, iw = ow * s.stride - s.padding + kj;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                const int64_t xi = ((n * s.C + c) * s.H + ih) * s.W + iw;
                const int64_t wi = ((o * s.C + c) * s.kh + ki) * s.kw + kj;
                dx[xi] += g * w[wi];
                dw[wi] += g * x[xi];
              }
        }
}

}  // namespace

TEST_CASE("the AVX-512 GEMM is chosen for Intel and AMD Zen 5, not Zen 4", "[perf][gemm]") {
  // CPUID leaf 1 EAX of real parts: Zen 4 EPYC (family 19h), Zen 5 EPYC (1Ah), a Xeon (6).
  CHECK(gantry::cpu::detail::x86_family(0x00A10F11u) == 0x19);
  CHECK(gantry::cpu::detail::x86_family(0x00B00F21u) == 0x1A);
  CHECK(gantry::cpu::detail::x86_family(0x000806F8u) == 6);
  CHECK_FALSE(gantry::cpu::detail::avx512_pays(false, true, 0x19));
  CHECK(gantry::cpu::detail::avx512_pays(false, true, 0x1A));
  CHECK(gantry::cpu::detail::avx512_pays(true, false, 6));
  CHECK_FALSE(gantry::cpu::detail::avx512_pays(false, false, 6));
}

TEST_CASE("gemm: every transposition against the naive product", "[perf][gemm]") {
  INFO("GEMM build: " << gemm_isa());
  for (int64_t M : {1, 7, 33, 130})
    for (int64_t N : {1, 5, 64, 97})
      for (int64_t K : {1, 9, 70}) {
        const auto A = ramp(M * K, 1.0, 1), B = ramp(K * N, 1.0, 2);
        for (int ta = 0; ta < 2; ++ta)
          for (int tb = 0; tb < 2; ++tb) {
            std::vector<float> Af(A.begin(), A.end()), Bf(B.begin(), B.end());
            std::vector<float> C(static_cast<size_t>(M * N), 0.5f);
            std::vector<double> ref(static_cast<size_t>(M * N));
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = 0; j < N; ++j) {
                double acc = 0;
                for (int64_t k = 0; k < K; ++k)
                  acc += A[ta ? k * M + i : i * K + k] * B[tb ? j * K + k : k * N + j];
                ref[i * N + j] = 2.0 * acc + 0.25 * 0.5;  // alpha 2, beta 0.25
              }
            gemm<float>(ta, tb, M, N, K, 2.f, Af.data(), Bf.data(), 0.25f, C.data());
            std::vector<double> got(C.begin(), C.end());
            INFO("M " << M << " N " << N << " K " << K << " trans_a " << ta << " trans_b " << tb);
            CHECK(max_abs_diff(got, ref) < 1e-4 * (1 + K));
          }
      }
}

TEST_CASE("im2col/col2im: strides, paddings and kernels against the definition", "[perf][conv]") {
  for (int stride = 1; stride <= 3; ++stride)
    for (int padding = 0; padding <= 2; ++padding)
      for (int64_t k = 1; k <= 4; ++k)
        for (int64_t H : {5, 8}) {
          const int64_t W = H + 2;  // non-square
          Conv2dShape s{1, 2, H, W, 1, k, k + (k > 1 ? -1 : 0), stride, padding};
          if (s.OH() <= 0 || s.OW() <= 0) continue;
          const int64_t OH = s.OH(), OW = s.OW(), rows = s.C * s.kh * s.kw;
          const auto x = ramp(s.C * H * W, 1.0, 3);
          std::vector<double> col(static_cast<size_t>(rows * OH * OW), -7.0);
          im2col(x.data(), s, col.data());
          std::vector<double> back(x.size(), 0.0), back_ref(x.size(), 0.0);
          const auto cg = ramp(rows * OH * OW, 1.0, 4);
          col2im(cg.data(), s, back.data());
          bool ok = true;
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t ki = 0; ki < s.kh; ++ki)
              for (int64_t kj = 0; kj < s.kw; ++kj)
                for (int64_t oh = 0; oh < OH; ++oh)
                  for (int64_t ow = 0; ow < OW; ++ow) {
                    const int64_t r = (c * s.kh + ki) * s.kw + kj, p = oh * OW + ow;
                    const int64_t ih = oh * stride - padding + ki, iw = ow * stride - padding + kj;
                    const bool in = ih >= 0 && ih < H && iw >= 0 && iw < W;
                    const double want = in ? x[(c * H + ih) * W + iw] : 0.0;
                    ok = ok && col[r * OH * OW + p] == want;
                    if (in) back_ref[(c * H + ih) * W + iw] += cg[r * OH * OW + p];
                  }
          INFO("stride " << stride << " padding " << padding << " kernel " << s.kh << "x" << s.kw
                         << " input " << H << "x" << W);
          CHECK(ok);
          CHECK(max_abs_diff(back, back_ref) < 1e-12);
        }
}

TEST_CASE("conv2d: forward and both backwards against the direct convolution", "[perf][conv]") {
  // Two shapes per call site, the larger second, so the scratch buffers grow between calls.
  const Conv2dShape shapes[] = {{2, 3, 6, 6, 4, 4, 4, 2, 1}, {3, 5, 9, 7, 6, 4, 4, 2, 1},
                                {2, 4, 5, 5, 3, 3, 3, 1, 1}, {1, 6, 4, 4, 5, 4, 4, 1, 0},
                                // fully connected (window = whole unpadded input): one-GEMM path
                                {3, 5, 4, 4, 7, 4, 4, 1, 0}, {2, 3, 2, 3, 4, 2, 3, 2, 0},
                                // C >= 16: the channels-last layout under Auto; odd sizes,
                                // stride 3, a window wider than the padded input's remainder
                                {2, 17, 7, 9, 5, 4, 4, 2, 1}, {1, 16, 5, 6, 3, 3, 2, 3, 2},
                                {3, 20, 8, 8, 9, 4, 4, 2, 1},
                                // batches large enough that threads split the images (unevenly)
                                {9, 16, 6, 5, 4, 4, 4, 2, 1}, {13, 3, 5, 5, 4, 3, 3, 1, 1},
                                // P >= 256 output pixels: one GEMM per image, straight into
                                // y / from dy (both layouts; the last two split over threads)
                                {5, 3, 34, 32, 4, 4, 4, 2, 1}, {2, 2, 16, 20, 3, 3, 3, 1, 1},
                                {5, 16, 32, 34, 5, 4, 4, 2, 1}, {12, 3, 34, 32, 4, 4, 4, 2, 1},
                                {13, 16, 32, 34, 5, 4, 4, 2, 1},
                                // chunks of 2 images in double (4 in float) with a one-image
                                // tail, which skips the scatter/gather
                                {13, 64, 30, 30, 4, 4, 4, 2, 1}};
  // Every shape in both patch layouts (and Auto, which picks by C), each against the direct
  // convolution: a bug in one layout cannot hide behind the other.
  const ConvLayout layouts[] = {ConvLayout::Auto, ConvLayout::Cols, ConvLayout::Rows};
  const int old_threads = gantry::num_threads();
  for (const int threads : {1, 3})
  for (const ConvLayout layout : layouts)
  for (const Conv2dShape& s : shapes) {
    gantry::set_num_threads(threads);
    set_conv_layout(layout);
    INFO("layout " << static_cast<int>(layout) << ", " << threads << " threads");
    const int64_t OH = s.OH(), OW = s.OW();
    const auto x = ramp(s.N * s.C * s.H * s.W, 1.0, 5), w = ramp(s.O * s.C * s.kh * s.kw, 0.5, 6);
    const auto dy = ramp(s.N * s.O * OH * OW, 1.0, 7);
    std::vector<double> y_ref;
    conv_naive(x, w, y_ref, s);
    std::vector<double> y(y_ref.size(), 9.0);
    conv2d_forward<double>(x.data(), w.data(), nullptr, y.data(), s);
    INFO("shape N" << s.N << " C" << s.C << " " << s.H << "x" << s.W << " O" << s.O << " k" << s.kh
                   << " s" << s.stride << " p" << s.padding);
    CHECK(max_abs_diff(y, y_ref) < 1e-12);
    // With a bias, and its gradient (sum of dy over n and the output pixels).
    const auto b = ramp(s.O, 1.0, 8);
    conv2d_forward<double>(x.data(), w.data(), b.data(), y.data(), s);
    std::vector<double> yb_ref = y_ref;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t o = 0; o < s.O; ++o)
        for (int64_t p = 0; p < OH * OW; ++p) yb_ref[(n * s.O + o) * OH * OW + p] += b[o];
    CHECK(max_abs_diff(y, yb_ref) < 1e-12);
    std::vector<double> db(s.O, 5.0), db_ref(s.O, 0.0), dw_tmp(w.size());
    conv2d_backward_weight<double>(x.data(), dy.data(), dw_tmp.data(), db.data(), s);
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t o = 0; o < s.O; ++o)
        for (int64_t p = 0; p < OH * OW; ++p) db_ref[o] += dy[(n * s.O + o) * OH * OW + p];
    CHECK(max_abs_diff(db, db_ref) < 1e-12);
    // <dy, conv(x)> = <conv_backward_input(dy), x> = <conv_backward_weight(x, dy), w>
    double lhs = 0;
    for (size_t i = 0; i < dy.size(); ++i) lhs += dy[i] * y_ref[i];
    std::vector<double> dx(x.size(), 3.0), dw(w.size(), 3.0);
    conv2d_backward_input<double>(dy.data(), w.data(), dx.data(), s);
    conv2d_backward_weight<double>(x.data(), dy.data(), dw.data(), nullptr, s);
    double rx = 0, rw = 0;
    for (size_t i = 0; i < x.size(); ++i) rx += dx[i] * x[i];
    for (size_t i = 0; i < w.size(); ++i) rw += dw[i] * w[i];
    CHECK(std::fabs(rx - lhs) < 1e-9 * (1 + std::fabs(lhs)));
    CHECK(std::fabs(rw - lhs) < 1e-9 * (1 + std::fabs(lhs)));
    std::vector<double> dx_ref, dw_ref;
    conv_naive_backward(x, w, dy, dx_ref, dw_ref, s);
    CHECK(max_abs_diff(dx, dx_ref) < 1e-9);
    CHECK(max_abs_diff(dw, dw_ref) < 1e-9);
    // And in float, through the float scratch buffers and the float (vectorized) transposes.
    std::vector<float> xf(x.begin(), x.end()), wf(w.begin(), w.end()), yf(y.size());
    conv2d_forward<float>(xf.data(), wf.data(), nullptr, yf.data(), s);
    std::vector<double> yd(yf.begin(), yf.end());
    CHECK(max_abs_diff(yd, y_ref) < 1e-4);
    const std::vector<float> bf(b.begin(), b.end());
    conv2d_forward<float>(xf.data(), wf.data(), bf.data(), yf.data(), s);
    CHECK(max_abs_diff(std::vector<double>(yf.begin(), yf.end()), yb_ref) < 1e-4);
    std::vector<float> dyf(dy.begin(), dy.end()), dxf(x.size(), 3.f), dwf(w.size(), 3.f);
    conv2d_backward_input<float>(dyf.data(), wf.data(), dxf.data(), s);
    conv2d_backward_weight<float>(xf.data(), dyf.data(), dwf.data(), nullptr, s);
    // Float sums of up to N*OH*OW terms: the bound scales with the reference's size.
    const auto float_bound = [](const std::vector<double>& ref) {
      double m = 0;
      for (double v : ref) m = std::max(m, std::fabs(v));
      return 1e-5 * (1 + m);
    };
    CHECK(max_abs_diff(std::vector<double>(dxf.begin(), dxf.end()), dx_ref) < float_bound(dx_ref));
    CHECK(max_abs_diff(std::vector<double>(dwf.begin(), dwf.end()), dw_ref) < float_bound(dw_ref));
  }
  set_conv_layout(ConvLayout::Auto);
  gantry::set_num_threads(old_threads);
}

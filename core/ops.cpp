// The functional API: argument checks, output allocation, device dispatch and the backward of
// every op. Kernels (kernels/cpu, kernels/cuda) do the arithmetic; this file only wires them.
#include "gantry/core/ops.h"

#include <algorithm>
#include <functional>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "gantry/core/autograd.h"
#include "gantry/core/random.h"
#include "gantry/kernels/cpu/cpu_kernels.h"
#ifdef GANTRY_WITH_CUDA
#include "gantry/kernels/cuda/cuda_kernels.h"
#endif

namespace gantry {

namespace {

using cpu::Binary;
using cpu::Unary;

[[noreturn]] void fail(const std::string& op, const std::string& msg) {
  throw std::invalid_argument(op + ": " + msg);
}

void check_defined(const char* op, const Tensor& t, const char* what) {
  if (!t.defined()) fail(op, std::string(what) + " is an undefined tensor");
}

void check_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) first = t;
    else if (t->device() != first->device())
      fail(op, "tensors are on different devices (" + first->device().str() + " and " +
                   t->device().str() + "); move them with .to(device) first");
  }
}

// An op with no GPU implementation (or a build without CUDA) reached by a GPU tensor.
[[noreturn, maybe_unused]] void no_cuda(const char* op) {
  throw std::runtime_error(std::string(op) +
                           ": a CUDA tensor reached a build without the CUDA backend (gantry was "
                           "built without CUDA; configure with -DGANTRY_CUDA=ON)");
}

// The GPU branch of an op: `if (x.is_cuda()) ON_CUDA(op, cuda::kernel(...)); else cpu::...`.
// In a build without CUDA the call is compiled out (no GPU tensor can exist there anyway).
#ifdef GANTRY_WITH_CUDA
#define ON_CUDA(op, ...) __VA_ARGS__
#else
#define ON_CUDA(op, ...) no_cuda(op)
#endif

Shape broadcast_shape(const char* op, const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      fail(op, "shapes " + shape_str(a) + " and " + shape_str(b) +
                   " cannot be broadcast (dim " + std::to_string(i) + ": " + std::to_string(da) +
                   " vs " + std::to_string(db) + "; sizes must match or be 1)");
    out[i] = std::max(da, db);
  }
  return out;
}

Shape right_align(const Shape& s, size_t n) {
  Shape out(n - s.size(), 1);
  out.insert(out.end(), s.begin(), s.end());
  return out;
}

Tensor binary(Binary op, const char* name, const Tensor& a, const Tensor& b) {
  check_defined(name, a, "first operand");
  check_defined(name, b, "second operand");
  check_same_device(name, {&a, &b});
  const Shape out_shape = broadcast_shape(name, a.shape(), b.shape());
  Tensor out = Tensor::empty(out_shape, a.device());
  const size_t n = out_shape.size();
  const Shape as = right_align(a.shape(), n), bs = right_align(b.shape(), n);
  if (a.is_cuda())
    ON_CUDA(name, cuda::binary_broadcast(op, a.data(), as.data(), b.data(), bs.data(), out.data(),
                                         out_shape.data(), static_cast<int>(n)));
  else
    cpu::binary_broadcast<float>(op, a.data(), as.data(), b.data(), bs.data(), out.data(),
                                 out_shape.data(), static_cast<int>(n));
  return out;
}

// The double backward of a piecewise-linear op (relu, leaky_relu, abs, clamp): its backward
// `apply` (a kernel: g times the constant mask f'(x)) is linear in g, so applied to a g that
// carries a graph it is recorded with itself as its backward.
using MaskFn = std::function<Tensor(const Tensor&)>;
Tensor times_mask(const char* name, const Tensor& g, const MaskFn& apply) {
  return mark_linear_backward(record(apply(g), name, {g}, [name, apply](const Tensor& h) {
    return std::vector<Tensor>{times_mask(name, h, apply)};
  }));
}

Tensor unary(Unary op, const char* name, const Tensor& x) {
  check_defined(name, x, "input");
  Tensor y = Tensor::empty_like(x);
  if (x.is_cuda()) ON_CUDA(name, cuda::unary_forward(op, x.data(), y.data(), x.numel()));
  else cpu::unary_forward<float>(op, x.data(), y.data(), x.numel());
  Tensor xs = x.detach(), ys = y.detach();
  const MaskFn apply = [op, xs, ys](const Tensor& g) {
    Tensor gx = Tensor::empty_like(xs);
    if (xs.is_cuda())
      ON_CUDA("unary backward",
              cuda::unary_backward(op, xs.data(), ys.data(), g.data(), gx.data(), xs.numel()));
    else
      cpu::unary_backward<float>(op, xs.data(), ys.data(), g.data(), gx.data(), xs.numel());
    return gx;
  };
  y = record(y, name, {x}, {xs, ys}, [apply](const Tensor& g) { return std::vector<Tensor>{apply(g)}; });
  return set_graph_backward(y, [op, name, apply](const Tensor& g, const std::vector<Tensor>& in) {
    const Tensor& a = in[0];
    switch (op) {
      case Unary::Neg: return std::vector<Tensor>{neg(g)};
      case Unary::Square: return std::vector<Tensor>{mul(g, mul(a, 2.f))};
      case Unary::Sqrt: return std::vector<Tensor>{div(mul(g, 0.5f), sqrt(a))};
      case Unary::Exp: return std::vector<Tensor>{mul(g, exp(a))};
      case Unary::Log: return std::vector<Tensor>{div(g, a)};
      case Unary::Tanh: return std::vector<Tensor>{mul(g, rsub(square(tanh(a)), 1.f))};
      case Unary::Sigmoid: {
        const Tensor sg = sigmoid(a);
        return std::vector<Tensor>{mul(g, mul(sg, rsub(sg, 1.f)))};
      }
      case Unary::Abs:
      case Unary::Relu: break;
    }
    return std::vector<Tensor>{times_mask(name, g, apply)};  // Abs, Relu: piecewise linear
  });
}

Tensor scalar_affine(const char* name, const Tensor& x, float a, float b) {
  check_defined(name, x, "input");
  Tensor y = Tensor::empty_like(x);
  if (x.is_cuda()) ON_CUDA(name, cuda::affine(x.data(), y.data(), x.numel(), a, b));
  else cpu::affine<float>(x.data(), y.data(), x.numel(), a, b);
  return mark_linear_backward(record(y, name, {x}, [a](const Tensor& g) {
    return std::vector<Tensor>{a == 1.f ? g : mul(g, a)};
  }));
}

int64_t normalize_dim(const char* op, int64_t d, int64_t ndim) {
  const int64_t k = d < 0 ? d + ndim : d;
  if (k < 0 || k >= ndim)
    fail(op, "dim " + std::to_string(d) + " out of range for a tensor with " +
                 std::to_string(ndim) + " dims");
  return k;
}

Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  Tensor out = Tensor::empty(shape, x.device());
  const Shape xs = right_align(x.shape(), shape.size());
  if (x.is_cuda())
    ON_CUDA("broadcast_to", cuda::broadcast_to(x.data(), xs.data(), out.data(), shape.data(),
                                               static_cast<int>(shape.size())));
  else
    cpu::broadcast_to<float>(x.data(), xs.data(), out.data(), shape.data(),
                             static_cast<int>(shape.size()));
  return out;
}

// broadcast_to as a recorded op (the graph backward of sum_to and mean): its adjoint is sum_to.
Tensor expand(const Tensor& x, const Shape& shape) {
  const Shape xs = x.shape();
  return mark_linear_backward(record(broadcast_to(x, shape), "expand", {x}, [xs](const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, xs)};
  }));
}

}  // namespace

// ---- elementwise --------------------------------------------------------------------------

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = binary(Binary::Add, "add", a, b);
  const Shape as = a.shape(), bs = b.shape();
  return mark_linear_backward(record(y, "add", {a, b}, [as, bs](const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, as), sum_to(g, bs)};
  }));
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = binary(Binary::Sub, "sub", a, b);
  const Shape as = a.shape(), bs = b.shape();
  return mark_linear_backward(record(y, "sub", {a, b}, [as, bs](const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, as), sum_to(neg(g), bs)};
  }));
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = binary(Binary::Mul, "mul", a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  Tensor ad = a.detach(), bd = b.detach();
  y = record(y, "mul", {a, b}, {ad, bd}, [ad, bd, ga, gb](const Tensor& g) {
    return std::vector<Tensor>{ga ? sum_to(mul(g, bd), ad.shape()) : Tensor(),
                               gb ? sum_to(mul(g, ad), bd.shape()) : Tensor()};
  });
  return set_graph_backward(y, [ga, gb](const Tensor& g, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{ga && backward_needs_input(0) ? sum_to(mul(g, in[1]), in[0].shape()) : Tensor(),
                               gb && backward_needs_input(1) ? sum_to(mul(g, in[0]), in[1].shape()) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = binary(Binary::Div, "div", a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  Tensor ad = a.detach(), bd = b.detach();
  y = record(y, "div", {a, b}, {ad, bd}, [ad, bd, ga, gb](const Tensor& g) {
    return std::vector<Tensor>{
        ga ? sum_to(div(g, bd), ad.shape()) : Tensor(),
        gb ? sum_to(neg(div(mul(g, ad), mul(bd, bd))), bd.shape()) : Tensor()};
  });
  return set_graph_backward(y, [ga, gb](const Tensor& g, const std::vector<Tensor>& in) {
    const Tensor &an = in[0], &bn = in[1];
    return std::vector<Tensor>{
        ga && backward_needs_input(0) ? sum_to(div(g, bn), an.shape()) : Tensor(),
        gb && backward_needs_input(1) ? sum_to(neg(div(mul(g, an), mul(bn, bn))), bn.shape()) : Tensor()};
  });
}

Tensor add(const Tensor& a, float s) { return scalar_affine("add", a, 1.f, s); }
Tensor mul(const Tensor& a, float s) { return scalar_affine("mul", a, s, 0.f); }
Tensor rsub(const Tensor& a, float s) { return scalar_affine("rsub", a, -1.f, s); }
Tensor neg(const Tensor& a) { return unary(Unary::Neg, "neg", a); }
Tensor square(const Tensor& a) { return unary(Unary::Square, "square", a); }
Tensor sqrt(const Tensor& a) { return unary(Unary::Sqrt, "sqrt", a); }
Tensor exp(const Tensor& a) { return unary(Unary::Exp, "exp", a); }
Tensor log(const Tensor& a) { return unary(Unary::Log, "log", a); }
Tensor abs(const Tensor& a) { return unary(Unary::Abs, "abs", a); }

Tensor clamp(const Tensor& x, float lo, float hi) {
  check_defined("clamp", x, "input");
  if (!(lo <= hi)) fail("clamp", "lo " + std::to_string(lo) + " > hi " + std::to_string(hi));
  Tensor y = Tensor::empty_like(x);
  if (x.is_cuda()) ON_CUDA("clamp", cuda::clamp_forward(x.data(), y.data(), x.numel(), lo, hi));
  else cpu::clamp_forward<float>(x.data(), y.data(), x.numel(), lo, hi);
  Tensor xs = x.detach();
  const MaskFn apply = [xs, lo, hi](const Tensor& g) {
    Tensor gx = Tensor::empty_like(xs);
    if (xs.is_cuda())
      ON_CUDA("clamp", cuda::clamp_backward(xs.data(), g.data(), gx.data(), xs.numel(), lo, hi));
    else
      cpu::clamp_backward<float>(xs.data(), g.data(), gx.data(), xs.numel(), lo, hi);
    return gx;
  };
  y = record(y, "clamp", {x}, {xs}, [apply](const Tensor& g) { return std::vector<Tensor>{apply(g)}; });
  return set_graph_backward(y, [apply](const Tensor& g, const std::vector<Tensor>&) {
    return std::vector<Tensor>{times_mask("clamp", g, apply)};
  });
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator+(const Tensor& a, float s) { return add(a, s); }
Tensor operator-(const Tensor& a, float s) { return add(a, -s); }
Tensor operator*(const Tensor& a, float s) { return mul(a, s); }
Tensor operator/(const Tensor& a, float s) { return mul(a, 1.f / s); }
Tensor operator+(float s, const Tensor& a) { return add(a, s); }
Tensor operator-(float s, const Tensor& a) { return rsub(a, s); }
Tensor operator*(float s, const Tensor& a) { return mul(a, s); }
Tensor operator-(const Tensor& a) { return neg(a); }

// ---- activations --------------------------------------------------------------------------

Tensor relu(const Tensor& x) { return unary(Unary::Relu, "relu", x); }
Tensor tanh(const Tensor& x) { return unary(Unary::Tanh, "tanh", x); }
Tensor sigmoid(const Tensor& x) { return unary(Unary::Sigmoid, "sigmoid", x); }

Tensor leaky_relu(const Tensor& x, float slope) {
  check_defined("leaky_relu", x, "input");
  Tensor y = Tensor::empty_like(x);
  if (x.is_cuda())
    ON_CUDA("leaky_relu", cuda::leaky_relu_forward(x.data(), y.data(), x.numel(), slope));
  else
    cpu::leaky_relu_forward<float>(x.data(), y.data(), x.numel(), slope);
  Tensor xs = x.detach();
  const MaskFn apply = [xs, slope](const Tensor& g) {
    Tensor gx = Tensor::empty_like(xs);
    if (xs.is_cuda())
      ON_CUDA("leaky_relu",
              cuda::leaky_relu_backward(xs.data(), g.data(), gx.data(), xs.numel(), slope));
    else
      cpu::leaky_relu_backward<float>(xs.data(), g.data(), gx.data(), xs.numel(), slope);
    return gx;
  };
  y = record(y, "leaky_relu", {x}, {xs}, [apply](const Tensor& g) { return std::vector<Tensor>{apply(g)}; });
  return set_graph_backward(y, [apply](const Tensor& g, const std::vector<Tensor>&) {
    return std::vector<Tensor>{times_mask("leaky_relu", g, apply)};
  });
}

Tensor dropout(const Tensor& x, float p, bool training, Generator* gen) {
  if (p < 0.f || p >= 1.f)
    fail("dropout", "p = " + std::to_string(p) + " must be in [0, 1)");
  if (!training || p == 0.f) return x;
  // mask = (u >= p) / (1 - p) from the same Philox uniforms on either device.
  const Tensor u = Tensor::rand(x.shape(), gen, x.device());
  Tensor mask = Tensor::empty_like(x);
  if (x.is_cuda()) {
    Tensor unused = Tensor::empty_like(x);  // the kernel also writes x * mask; mul records it
    ON_CUDA("dropout", cuda::dropout_apply(x.data(), u.data(), unused.data(), mask.data(), x.numel(), p));
  } else {
    const float scale = 1.f / (1.f - p);
    const float* uv = u.data();
    float* m = mask.data();
    for (int64_t i = 0; i < x.numel(); ++i) m[i] = uv[i] >= p ? scale : 0.f;
  }
  return mul(x, mask);
}

// ---- reductions ---------------------------------------------------------------------------

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const size_t n = x.shape().size();
  if (shape.size() > n) fail("sum_to", "cannot sum " + shape_str(x.shape()) + " to the larger rank " + shape_str(shape));
  const Shape target = right_align(shape, n);
  for (size_t i = 0; i < n; ++i)
    if (target[i] != 1 && target[i] != x.shape()[i])
      fail("sum_to", "shape " + shape_str(x.shape()) + " does not broadcast from " + shape_str(shape));
  Tensor out = Tensor::empty(shape, x.device());
  if (x.is_cuda())
    ON_CUDA("sum_to", cuda::sum_to_shape(x.data(), x.shape().data(), out.data(), target.data(),
                                         static_cast<int>(n)));
  else
    cpu::sum_to_shape<float>(x.data(), x.shape().data(), out.data(), target.data(),
                             static_cast<int>(n));
  const Shape xs = x.shape();
  out = record(out, "sum_to", {x}, [xs](const Tensor& g) {
    return std::vector<Tensor>{broadcast_to(g, xs)};
  });
  return set_graph_backward(out, [xs](const Tensor& g, const std::vector<Tensor>&) {
    return std::vector<Tensor>{expand(g, xs)};
  });
}

Tensor sum(const Tensor& x) {
  check_defined("sum", x, "input");
  Tensor flat = x.reshape({x.numel()});
  return sum_to(flat, {1}).reshape({});
}

Tensor mean(const Tensor& x) {
  check_defined("mean", x, "input");
  if (x.numel() == 0) fail("mean", "of an empty tensor " + shape_str(x.shape()));
  const float scale = 1.f / static_cast<float>(x.numel());
  if (!x.is_cuda()) return mul(sum(x), scale);
  // On the GPU the 1/n goes into the reduction's last stage: two launches, not three.
  Tensor out = Tensor::empty({}, x.device());
  ON_CUDA("mean", cuda::sum_all(x.data(), x.numel(), out.data(), scale));
  const Shape xs = x.shape();
  out = record(out, "mean", {x}, [xs, scale](const Tensor& g) {
    return std::vector<Tensor>{broadcast_to(mul(g, scale), xs)};
  });
  return set_graph_backward(out, [xs, scale](const Tensor& g, const std::vector<Tensor>&) {
    return std::vector<Tensor>{expand(mul(g, scale), xs)};
  });
}

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  check_defined("sum", x, "input");
  Shape kept = x.shape();
  std::vector<bool> reduced(kept.size(), false);
  for (int64_t d : dims) reduced[normalize_dim("sum", d, x.dim())] = true;
  Shape squeezed;
  for (size_t i = 0; i < kept.size(); ++i) {
    if (reduced[i]) kept[i] = 1;
    else squeezed.push_back(kept[i]);
  }
  Tensor out = sum_to(x, kept);
  return keepdim ? out : out.reshape(squeezed);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  int64_t count = 1;
  std::vector<bool> seen(static_cast<size_t>(x.dim()), false);
  for (int64_t d : dims) {
    const int64_t k = normalize_dim("mean", d, x.dim());
    if (!seen[k]) count *= x.shape()[k];
    seen[k] = true;
  }
  return mul(sum(x, dims, keepdim), 1.f / static_cast<float>(std::max<int64_t>(count, 1)));
}

// ---- shape --------------------------------------------------------------------------------

Tensor reshape(const Tensor& x, const Shape& shape) { return x.reshape(shape); }
Tensor flatten(const Tensor& x, int64_t start_dim) { return x.flatten(start_dim); }

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  if (xs.empty()) fail("cat", "needs at least one tensor");
  const Tensor& first = xs[0];
  check_defined("cat", first, "tensor 0");
  const int64_t d = normalize_dim("cat", dim, first.dim());
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    check_defined("cat", xs[i], "a tensor");
    const Tensor& t = xs[i];
    bool ok = t.dim() == first.dim() && t.device() == first.device();
    for (int64_t k = 0; ok && k < first.dim(); ++k) ok = k == d || t.shape()[k] == first.shape()[k];
    if (!ok)
      fail("cat", "tensor " + std::to_string(i) + " has shape " + shape_str(t.shape()) + " on " +
                      t.device().str() + " but tensor 0 has " + shape_str(first.shape()) + " on " +
                      first.device().str() + "; all sizes except dim " + std::to_string(d) +
                      " and the device must match");
    out_shape[d] += t.shape()[d];
  }
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < d; ++k) outer *= out_shape[k];
  for (int64_t k = d + 1; k < first.dim(); ++k) inner *= out_shape[k];
  Tensor out = Tensor::empty(out_shape, first.device());
  const int64_t out_row = out_shape[d] * inner;
  if (first.is_cuda()) {  // one launch for all the inputs
    std::vector<const float*> srcs;
    std::vector<int64_t> widths;
    for (const Tensor& t : xs) {
      srcs.push_back(t.data());
      widths.push_back(t.shape()[d] * inner);
    }
    ON_CUDA("cat", cuda::cat_rows(out.data(), srcs.data(), widths.data(),
                                  static_cast<int>(xs.size()), outer));
  } else {
    int64_t offset = 0;
    for (const Tensor& t : xs) {
      const int64_t row = t.shape()[d] * inner;
      for (int64_t o = 0; o < outer; ++o)
        std::copy(t.data() + o * row, t.data() + (o + 1) * row, out.data() + o * out_row + offset);
      offset += row;
    }
  }
  std::vector<int64_t> sizes;
  for (const Tensor& t : xs) sizes.push_back(t.shape()[d]);
  // The gradient of each input is its slice of g: recorded ops, so cat differentiates twice.
  return mark_linear_backward(record(out, "cat", xs, [sizes, d](const Tensor& g) {
    std::vector<Tensor> grads;
    int64_t start = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      grads.push_back(backward_needs_input(i) ? slice(g, d, start, sizes[i]) : Tensor());
      start += sizes[i];
    }
    return grads;
  }));
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  check_defined("slice", x, "input");
  const int64_t d = normalize_dim("slice", dim, x.dim());
  const int64_t full = x.shape()[d];
  if (start < 0 || length < 0 || start + length > full)
    fail("slice", "[" + std::to_string(start) + ", " + std::to_string(start + length) + ") along dim " +
                      std::to_string(d) + " is out of range for shape " + shape_str(x.shape()));
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < d; ++k) outer *= x.shape()[k];
  for (int64_t k = d + 1; k < x.dim(); ++k) inner *= x.shape()[k];
  Shape out_shape = x.shape();
  out_shape[d] = length;
  Tensor out = Tensor::empty(out_shape, x.device());
  const int64_t row = length * inner, in_row = full * inner, off = start * inner;
  if (out.numel() > 0) {
    if (x.is_cuda())
      ON_CUDA("slice", cuda::copy_2d(out.data(), row, x.data() + off, in_row, outer, row));
    else
      for (int64_t o = 0; o < outer; ++o)
        std::copy(x.data() + o * in_row + off, x.data() + o * in_row + off + row, out.data() + o * row);
  }
  const Shape xs = x.shape();
  return mark_linear_backward(record(out, "slice", {x}, [xs, d, start](const Tensor& g) {
    return std::vector<Tensor>{slice_backward(g, xs, d, start)};
  }));
}

Tensor slice_backward(const Tensor& g, const Shape& full, int64_t dim, int64_t start) {
  check_defined("slice_backward", g, "gradient");
  const int64_t d = normalize_dim("slice_backward", dim, static_cast<int64_t>(full.size()));
  bool fits = g.dim() == static_cast<int64_t>(full.size()) && start >= 0 && start + g.shape()[d] <= full[d];
  for (int64_t k = 0; fits && k < g.dim(); ++k) fits = k == d || g.shape()[k] == full[k];
  if (!fits)
    fail("slice_backward", "gradient " + shape_str(g.shape()) + " at " + std::to_string(start) + " along dim " +
                               std::to_string(d) + " does not fit in " + shape_str(full));
  // g between zeros: a cat, whose own gradient is the slice again.
  Shape before = full, after = full;
  before[d] = start;
  after[d] = full[d] - start - g.shape()[d];
  std::vector<Tensor> parts;
  if (before[d] > 0) parts.push_back(Tensor::zeros(before, g.device()));
  parts.push_back(g);
  if (after[d] > 0) parts.push_back(Tensor::zeros(after, g.device()));
  return parts.size() == 1 ? g : cat(parts, d);
}

Tensor transpose2d(const Tensor& x) {
  check_defined("transpose2d", x, "input");
  if (x.dim() != 2) fail("transpose2d", "expects a 2-D tensor, got " + shape_str(x.shape()));
  const int64_t M = x.shape()[0], N = x.shape()[1];
  Tensor y = Tensor::empty({N, M}, x.device());
  if (x.is_cuda())
    ON_CUDA("transpose2d", cuda::transpose2d(x.data(), y.data(), M, N));
  else
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) y.data()[j * M + i] = x.data()[i * N + j];
  return mark_linear_backward(record(y, "transpose2d", {x},
                [](const Tensor& g) { return std::vector<Tensor>{transpose2d(g)}; }));
}

// ---- linear algebra -----------------------------------------------------------------------

namespace {
// C[M,N] = op(A) op(B) on whichever device the operands live.
Tensor gemm(bool ta, bool tb, const Tensor& a, const Tensor& b, int64_t M, int64_t N, int64_t K) {
  Tensor c = Tensor::empty({M, N}, a.device());
  if (a.is_cuda())
    ON_CUDA("matmul", cuda::gemm(ta, tb, M, N, K, 1.f, a.data(), b.data(), 0.f, c.data()));
  else
    cpu::gemm<float>(ta, tb, M, N, K, 1.f, a.data(), b.data(), 0.f, c.data());
  return c;
}
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_defined("matmul", a, "first operand");
  check_defined("matmul", b, "second operand");
  check_same_device("matmul", {&a, &b});
  if (a.dim() != 2 || b.dim() != 2 || a.shape()[1] != b.shape()[0])
    fail("matmul", "expects [M, K] x [K, N], got " + shape_str(a.shape()) + " x " +
                       shape_str(b.shape()));
  const int64_t M = a.shape()[0], K = a.shape()[1], N = b.shape()[1];
  Tensor y = gemm(false, false, a, b, M, N, K);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  Tensor ad = a.detach(), bd = b.detach();
  y = record(y, "matmul", {a, b}, {ad, bd}, [ad, bd, ga, gb, M, N, K](const Tensor& g) {
    return std::vector<Tensor>{ga ? gemm(false, true, g, bd, M, K, N) : Tensor(),   // g b^T
                               gb ? gemm(true, false, ad, g, K, N, M) : Tensor()};  // a^T g
  });
  return set_graph_backward(y, [ga, gb](const Tensor& g, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{ga && backward_needs_input(0) ? matmul(g, transpose2d(in[1])) : Tensor(),
                               gb && backward_needs_input(1) ? matmul(transpose2d(in[0]), g) : Tensor()};
  });
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_defined("linear", x, "input");
  check_defined("linear", weight, "weight");
  check_same_device("linear", {&x, &weight, &bias});
  if (x.dim() != 2 || weight.dim() != 2 || x.shape()[1] != weight.shape()[1])
    fail("linear", "input " + shape_str(x.shape()) + " and weight " + shape_str(weight.shape()) +
                       " do not fit: expects input [N, in] and weight [out, in]");
  const int64_t N = x.shape()[0], in = x.shape()[1], out = weight.shape()[0];
  if (bias.defined() && bias.shape() != Shape{out})
    fail("linear", "bias shape " + shape_str(bias.shape()) + " should be [" + std::to_string(out) + "]");
  Tensor y = gemm(false, true, x, weight, N, out, in);  // x W^T
  if (bias.defined()) {
    NoGradGuard guard;
    y = add(y, bias);
  }
  const bool gx = x.requires_grad(), gw = weight.requires_grad();
  const bool gbias = bias.defined() && bias.requires_grad();
  Tensor xd = x.detach(), wd = weight.detach();
  y = record(y, "linear", {x, weight, bias}, {xd, wd},
                [xd, wd, gx, gw, gbias, N, in, out](const Tensor& g) {
                  return std::vector<Tensor>{
                      gx ? gemm(false, false, g, wd, N, in, out) : Tensor(),  // g W
                      gw ? gemm(true, false, g, xd, out, in, N) : Tensor(),   // g^T x
                      gbias ? sum_to(g, {out}) : Tensor()};
                });
  return set_graph_backward(y, [gx, gw, gbias, out](const Tensor& g, const std::vector<Tensor>& inputs) {
    return std::vector<Tensor>{gx && backward_needs_input(0) ? matmul(g, inputs[1]) : Tensor(),
                               gw && backward_needs_input(1) ? matmul(transpose2d(g), inputs[0]) : Tensor(),
                               gbias && backward_needs_input(2) ? sum_to(g, {out}) : Tensor()};
  });
}

// ---- convolution --------------------------------------------------------------------------

namespace {

std::string conv_hint(const Tensor& x, const Tensor& w) {
  return "input " + shape_str(x.shape()) + ", weight " + shape_str(w.shape());
}

void check_conv_args(const char* op, const Tensor& x, const Tensor& w, const Tensor& b,
                     int stride, int padding) {
  check_defined(op, x, "input");
  check_defined(op, w, "weight");
  check_same_device(op, {&x, &w, &b});
  if (x.dim() != 4) fail(op, "input must be [N, C, H, W], got " + shape_str(x.shape()));
  if (w.dim() != 4) fail(op, "weight must be 4-D, got " + shape_str(w.shape()));
  if (stride < 1) fail(op, "stride " + std::to_string(stride) + " must be >= 1");
  if (padding < 0) fail(op, "padding " + std::to_string(padding) + " must be >= 0");
}

// Gradient of the bias: sum of dy over N, H, W.
Tensor bias_grad(const Tensor& g) { return sum(g, {0, 2, 3}); }

// The two backward halves of the conv of shape s as recorded ops, for double backward (a
// gradient penalty differentiates D's input gradient, which is built of these). Both are
// bilinear, with <dx(g, w), h> = <g, conv(h, w)> and <dw(x, g), h> = <g, conv(x, h)>, so each
// one's gradients are the other ops of the same conv.
Tensor conv_input_grad(const Tensor& g, const Tensor& w, const cpu::Conv2dShape& s);
Tensor conv_weight_grad(const Tensor& x, const Tensor& g, const cpu::Conv2dShape& s);

// conv2d on an input of shape s (no bias): the forward both halves differentiate into.
Tensor conv_of_shape(const Tensor& x, const Tensor& w, const cpu::Conv2dShape& s) {
  return conv2d(x, w, Tensor(), s.stride, s.padding);
}

Tensor conv_input_grad(const Tensor& g, const Tensor& w, const cpu::Conv2dShape& s) {
  Tensor dx = Tensor::empty({s.N, s.C, s.H, s.W}, g.device());
  if (g.is_cuda())
    ON_CUDA("conv2d_input_grad", cuda::conv2d_backward_input(g.data(), w.data(), dx.data(), s));
  else
    cpu::conv2d_backward_input<float>(g.data(), w.data(), dx.data(), s);
  // h: the gradient of dx. d/dg = conv(h, w), d/dw = conv_weight_grad(h, g).
  auto grads = [s, gr = g.requires_grad(), wr = w.requires_grad()](const Tensor& h, const Tensor& gn,
                                                                   const Tensor& wn) {
    return std::vector<Tensor>{gr && backward_needs_input(0) ? conv_of_shape(h, wn, s) : Tensor(),
                               wr && backward_needs_input(1) ? conv_weight_grad(h, gn, s) : Tensor()};
  };
  const Tensor gd = g.detach(), wd = w.detach();
  dx = record(dx, "conv2d_input_grad", {g, w}, {gd, wd},
              [grads, gd, wd](const Tensor& h) { return grads(h, gd, wd); });
  return set_graph_backward(dx, [grads](const Tensor& h, const std::vector<Tensor>& in) {
    return grads(h, in[0], in[1]);
  });
}

Tensor conv_weight_grad(const Tensor& x, const Tensor& g, const cpu::Conv2dShape& s) {
  Tensor dw = Tensor::empty({s.O, s.C, s.kh, s.kw}, g.device());
  if (g.is_cuda())
    ON_CUDA("conv2d_weight_grad", cuda::conv2d_backward_weight(x.data(), g.data(), dw.data(), nullptr, s));
  else
    cpu::conv2d_backward_weight<float>(x.data(), g.data(), dw.data(), nullptr, s);
  // h: the gradient of dw. d/dx = conv_input_grad(g, h), d/dg = conv(x, h).
  auto grads = [s, xr = x.requires_grad(), gr = g.requires_grad()](const Tensor& h, const Tensor& xn,
                                                                   const Tensor& gn) {
    return std::vector<Tensor>{xr && backward_needs_input(0) ? conv_input_grad(gn, h, s) : Tensor(),
                               gr && backward_needs_input(1) ? conv_of_shape(xn, h, s) : Tensor()};
  };
  const Tensor xd = x.detach(), gd = g.detach();
  dw = record(dw, "conv2d_weight_grad", {x, g}, {xd, gd},
              [grads, xd, gd](const Tensor& h) { return grads(h, xd, gd); });
  return set_graph_backward(dw, [grads](const Tensor& h, const std::vector<Tensor>& in) {
    return grads(h, in[0], in[1]);
  });
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding) {
  const char* op = "conv2d";
  check_conv_args(op, x, weight, bias, stride, padding);
  cpu::Conv2dShape s{x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3],
                     weight.shape()[0], weight.shape()[2], weight.shape()[3], stride, padding};
  if (weight.shape()[1] != s.C)
    fail(op, "input has " + std::to_string(s.C) + " channels but weight expects " +
                 std::to_string(weight.shape()[1]) + " (" + conv_hint(x, weight) + ")");
  if (bias.defined() && bias.shape() != Shape{s.O})
    fail(op, "bias shape " + shape_str(bias.shape()) + " should be [" + std::to_string(s.O) + "]");
  if (s.H + 2 * padding < s.kh || s.W + 2 * padding < s.kw)
    fail(op, "kernel larger than the padded input (" + conv_hint(x, weight) + ", padding " +
                 std::to_string(padding) + ")");
  Tensor y = Tensor::empty({s.N, s.O, s.OH(), s.OW()}, x.device());
  if (x.is_cuda())
    ON_CUDA(op, cuda::conv2d_forward(x.data(), weight.data(),
                                     bias.defined() ? bias.data() : nullptr, y.data(), s));
  else
    cpu::conv2d_forward<float>(x.data(), weight.data(), bias.defined() ? bias.data() : nullptr,
                               y.data(), s);
  const bool gx = x.requires_grad(), gw = weight.requires_grad();
  const bool gb = bias.defined() && bias.requires_grad();
  Tensor xd = x.detach(), wd = weight.detach();
  y = record(y, op, {x, weight, bias}, {xd, wd}, [xd, wd, gx, gw, gb, s](const Tensor& g) {
    Tensor dx, dw;
    if (gx && backward_needs_input(0)) {
      dx = Tensor::empty(xd.shape(), g.device());
      if (g.is_cuda())
        ON_CUDA("conv2d", cuda::conv2d_backward_input(g.data(), wd.data(), dx.data(), s));
      else
        cpu::conv2d_backward_input<float>(g.data(), wd.data(), dx.data(), s);
    }
    if (gw && backward_needs_input(1)) {
      dw = Tensor::empty(wd.shape(), g.device());
      if (g.is_cuda())
        ON_CUDA("conv2d", cuda::conv2d_backward_weight(xd.data(), g.data(), dw.data(), nullptr, s));
      else
        cpu::conv2d_backward_weight<float>(xd.data(), g.data(), dw.data(), nullptr, s);
    }
    return std::vector<Tensor>{dx, dw, gb && backward_needs_input(2) ? bias_grad(g) : Tensor()};
  });
  return set_graph_backward(y, [gx, gw, gb, s](const Tensor& g, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{gx && backward_needs_input(0) ? conv_input_grad(g, in[1], s) : Tensor(),
                               gw && backward_needs_input(1) ? conv_weight_grad(in[0], g, s) : Tensor(),
                               gb && backward_needs_input(2) ? bias_grad(g) : Tensor()};
  });
}

Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride,
                        int padding, int output_padding) {
  const char* op = "conv_transpose2d";
  check_conv_args(op, x, weight, bias, stride, padding);
  if (output_padding < 0 || output_padding >= stride)
    fail(op, "output_padding " + std::to_string(output_padding) + " must be in [0, stride " +
                 std::to_string(stride) + ")");
  const int64_t N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  if (weight.shape()[0] != C)
    fail(op, "input has " + std::to_string(C) + " channels but weight expects " +
                 std::to_string(weight.shape()[0]) + " (weight layout [in, out, kh, kw]; " +
                 conv_hint(x, weight) + ")");
  const int64_t O = weight.shape()[1], kh = weight.shape()[2], kw = weight.shape()[3];
  const int64_t OH = (H - 1) * stride - 2 * padding + kh + output_padding;
  const int64_t OW = (W - 1) * stride - 2 * padding + kw + output_padding;
  if (OH <= 0 || OW <= 0)
    fail(op, "output would be " + std::to_string(OH) + "x" + std::to_string(OW) + " (" +
                 conv_hint(x, weight) + ", stride " + std::to_string(stride) + ", padding " +
                 std::to_string(padding) + ")");
  if (bias.defined() && bias.shape() != Shape{O})
    fail(op, "bias shape " + shape_str(bias.shape()) + " should be [" + std::to_string(O) + "]");
  // The transposed conv is the adjoint of the conv that maps [N, O, OH, OW] to [N, C, H, W]
  // with the same weight: its forward is that conv's backward-input, and vice versa.
  cpu::Conv2dShape s{N, O, OH, OW, C, kh, kw, stride, padding};
  Tensor y = Tensor::empty({N, O, OH, OW}, x.device());
  if (x.is_cuda())
    ON_CUDA(op, cuda::conv2d_backward_input(x.data(), weight.data(), y.data(), s));
  else
    cpu::conv2d_backward_input<float>(x.data(), weight.data(), y.data(), s);
  if (bias.defined()) {
    NoGradGuard guard;
    y = add(y, bias.reshape({1, O, 1, 1}));
  }
  const bool gx = x.requires_grad(), gw = weight.requires_grad();
  const bool gb = bias.defined() && bias.requires_grad();
  Tensor xd = x.detach(), wd = weight.detach();
  y = record(y, op, {x, weight, bias}, {xd, wd}, [xd, wd, gx, gw, gb, s](const Tensor& g) {
    Tensor dx, dw;
    if (gx && backward_needs_input(0)) {
      dx = Tensor::empty(xd.shape(), g.device());
      if (g.is_cuda())
        ON_CUDA("conv_transpose2d", cuda::conv2d_forward(g.data(), wd.data(), nullptr, dx.data(), s));
      else
        cpu::conv2d_forward<float>(g.data(), wd.data(), nullptr, dx.data(), s);
    }
    if (gw && backward_needs_input(1)) {
      dw = Tensor::empty(wd.shape(), g.device());
      if (g.is_cuda())
        ON_CUDA("conv_transpose2d",
                cuda::conv2d_backward_weight(g.data(), xd.data(), dw.data(), nullptr, s));
      else
        cpu::conv2d_backward_weight<float>(g.data(), xd.data(), dw.data(), nullptr, s);
    }
    return std::vector<Tensor>{dx, dw, gb && backward_needs_input(2) ? bias_grad(g) : Tensor()};
  });
  // y = conv_input_grad(x, w) of the conv s: its gradients are that conv and its weight grad.
  return set_graph_backward(y, [gx, gw, gb, s](const Tensor& g, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{gx && backward_needs_input(0) ? conv_of_shape(g, in[1], s) : Tensor(),
                               gw && backward_needs_input(1) ? conv_weight_grad(g, in[0], s) : Tensor(),
                               gb && backward_needs_input(2) ? bias_grad(g) : Tensor()};
  });
}

// ---- normalization ------------------------------------------------------------------------

namespace {
// [1, C, 1, ...] for a per-channel tensor against an input of `dim` dims.
Shape channel_shape(int64_t C, int64_t dim) {
  Shape s{1, C};
  for (int64_t k = 2; k < dim; ++k) s.push_back(1);
  return s;
}
// Every dim but the channel's (1): what batch norm reduces over.
std::vector<int64_t> non_channel_dims(int64_t dim) {
  std::vector<int64_t> red{0};
  for (int64_t k = 2; k < dim; ++k) red.push_back(k);
  return red;
}
}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  float momentum, float eps) {
  const char* op = "batch_norm";
  check_defined(op, x, "input");
  check_same_device(op, {&x, &weight, &bias, &running_mean, &running_var});
  if (x.dim() < 2) fail(op, "input must be [N, C, ...], got " + shape_str(x.shape()));
  const int64_t N = x.shape()[0], C = x.shape()[1], S = x.numel() / std::max<int64_t>(N * C, 1);
  for (const Tensor* t : {&weight, &bias, &running_mean, &running_var})
    if (t->defined() && t->shape() != Shape{C})
      fail(op, "per-channel tensor of shape " + shape_str(t->shape()) + " should be [" +
                   std::to_string(C) + "] for input " + shape_str(x.shape()));
  if (running_mean.defined() != running_var.defined())
    fail(op, "give both running_mean and running_var or neither");
  if (!training && !running_mean.defined())
    fail(op, "eval mode needs running_mean and running_var");
  if (training && N * S <= 1)
    fail(op, "training needs more than one value per channel, got input " + shape_str(x.shape()));
  const float* gamma = weight.defined() ? weight.data() : nullptr;
  const float* beta = bias.defined() ? bias.data() : nullptr;
  Tensor y = Tensor::empty_like(x);
  const bool gx = x.requires_grad(), gw = weight.defined() && weight.requires_grad();
  const bool gb = bias.defined() && bias.requires_grad();
  Tensor xd = x.detach(), wd = weight.defined() ? weight.detach() : Tensor();

  if (!training) {
    if (x.is_cuda())
      ON_CUDA(op, cuda::batch_norm_forward_eval(x.data(), gamma, beta, running_mean.data(),
                                                running_var.data(), y.data(), N, C, S, eps));
    else
      cpu::batch_norm_forward_eval<float>(x.data(), gamma, beta, running_mean.data(),
                                          running_var.data(), y.data(), N, C, S, eps);
    Tensor mean_d = running_mean.detach().clone(), var_d = running_var.detach().clone();
    // Statistics are constants here: y = (x - m) * invstd * gamma + beta. One formula for both
    // backwards: on the detached copies, or (double backward) on the inputs themselves.
    auto grads = [mean_d, var_d, eps, C, gx, gw, gb](const Tensor& g, const Tensor& xn, const Tensor& wn) {
      const Shape bshape = channel_shape(C, xn.dim());
      const std::vector<int64_t> red = non_channel_dims(xn.dim());
      Tensor invstd = div(Tensor::ones({C}, g.device()), sqrt(add(var_d, eps))).reshape(bshape);
      Tensor xhat = mul(sub(xn, mean_d.reshape(bshape)), invstd);
      Tensor dx = gx && backward_needs_input(0) ? mul(g, wn.defined() ? mul(invstd, wn.reshape(bshape)) : invstd) : Tensor();
      return std::vector<Tensor>{dx, gw && backward_needs_input(1) ? sum(mul(g, xhat), red) : Tensor(),
                                 gb && backward_needs_input(2) ? sum(g, red) : Tensor()};
    };
    y = record(y, op, {x, weight, bias}, {xd, wd}, [grads, xd, wd](const Tensor& g) { return grads(g, xd, wd); });
    return set_graph_backward(y, [grads](const Tensor& g, const std::vector<Tensor>& in) {
      return grads(g, in[0], in[1]);
    });
  }

  Tensor save_mean = Tensor::empty({C}, x.device()), save_invstd = Tensor::empty({C}, x.device());
  if (x.is_cuda()) {
    // r = (1 - momentum) r + momentum * stat inside the same call (one launch, or cuDNN's own
    // running average), not four more launches per batch norm.
    [[maybe_unused]] const bool track = running_mean.defined();  // unused in a CPU-only build
    ON_CUDA(op, cuda::batch_norm_forward_train(
                    x.data(), gamma, beta, y.data(), save_mean.data(), save_invstd.data(),
                    /*var_unbiased=*/nullptr, N, C, S, eps, track ? running_mean.data() : nullptr,
                    track ? running_var.data() : nullptr, momentum));
  }
  Tensor var_unbiased;
  if (!x.is_cuda()) {
    var_unbiased = Tensor::empty({C}, x.device());
    cpu::batch_norm_forward_train<float>(x.data(), gamma, beta, y.data(), save_mean.data(),
                                         save_invstd.data(), var_unbiased.data(), N, C, S, eps);
  }
  if (running_mean.defined() && !x.is_cuda()) {
    float* rm = running_mean.data();
    float* rv = running_var.data();
    for (int64_t c = 0; c < C; ++c) {
      rm[c] = (1.f - momentum) * rm[c] + momentum * save_mean.data()[c];
      rv[c] = (1.f - momentum) * rv[c] + momentum * var_unbiased.data()[c];
    }
  }
  y = record(y, op, {x, weight, bias}, {xd, wd},
                [xd, wd, save_mean, save_invstd, N, C, S, eps, gx, gw, gb](const Tensor& g) {
                  Tensor dx = Tensor::empty(xd.shape(), g.device());
                  Tensor dgamma = Tensor::empty({C}, g.device()), dbeta = Tensor::empty({C}, g.device());
                  if (g.is_cuda())
                    ON_CUDA("batch_norm", cuda::batch_norm_backward_train(
                                              xd.data(), g.data(), wd.defined() ? wd.data() : nullptr,
                                              save_mean.data(), save_invstd.data(), dx.data(),
                                              dgamma.data(), dbeta.data(), N, C, S, eps));
                  else
                    cpu::batch_norm_backward_train<float>(
                        xd.data(), g.data(), wd.defined() ? wd.data() : nullptr, save_mean.data(),
                        save_invstd.data(), dx.data(), dgamma.data(), dbeta.data(), N, C, S);
                  return std::vector<Tensor>{gx ? dx : Tensor(), gw ? dgamma : Tensor(),
                                             gb ? dbeta : Tensor()};
                });
  // The batch statistics recomputed from x with recorded ops, so that dx is differentiable in
  // x too (through the mean and variance), as PyTorch's double backward of batch norm:
  //   dx = invstd (gw - mean(gw) - xhat mean(gw xhat)),  gw = g * weight.
  return set_graph_backward(y, [C, eps, gx, gw, gb](const Tensor& g, const std::vector<Tensor>& in) {
    const Tensor &xn = in[0], &wn = in[1];
    const Shape bshape = channel_shape(C, xn.dim());
    const std::vector<int64_t> red = non_channel_dims(xn.dim());
    const Tensor xc = sub(xn, mean(xn, red, true));
    const Tensor invstd = div(Tensor::ones(bshape, g.device()), sqrt(add(mean(square(xc), red, true), eps)));
    const Tensor xhat = mul(xc, invstd);
    const Tensor gwt = wn.defined() ? mul(g, wn.reshape(bshape)) : g;
    Tensor dx;
    if (gx && backward_needs_input(0)) dx = mul(invstd, sub(sub(gwt, mean(gwt, red, true)), mul(xhat, mean(mul(gwt, xhat), red, true))));
    return std::vector<Tensor>{dx, gw && backward_needs_input(1) ? sum(mul(g, xhat), red) : Tensor(),
                               gb && backward_needs_input(2) ? sum(g, red) : Tensor()};
  });
}

Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias, float eps) {
  const char* op = "group_norm";
  check_defined(op, x, "input");
  check_same_device(op, {&x, &weight, &bias});
  if (x.dim() < 2) fail(op, "input must be [N, C, ...], got " + shape_str(x.shape()));
  const int64_t N = x.shape()[0], C = x.shape()[1];
  if (num_groups <= 0 || C % num_groups != 0)
    fail(op, "num_groups must be positive and divide the " + std::to_string(C) + " channels of input " +
                 shape_str(x.shape()) + ", got " + std::to_string(num_groups));
  for (const Tensor* t : {&weight, &bias})
    if (t->defined() && t->shape() != Shape{C})
      fail(op, "per-channel tensor of shape " + shape_str(t->shape()) + " should be [" + std::to_string(C) +
                   "] for input " + shape_str(x.shape()));
  const int64_t M = N == 0 ? 0 : x.numel() / (N * num_groups);  // values per (sample, group)
  // Each (sample, group) is one channel of a batch of one: batch norm's kernels, backward and
  // double backward do the statistics (as PyTorch's instance_norm does), the affine is per channel.
  // One value (or none) per group normalizes to exactly 0, with gradient 0, as in PyTorch.
  Tensor y = M <= 1 ? mul(x, 0.f)
                    : batch_norm(x.reshape({1, N * num_groups, M}), Tensor(), Tensor(), Tensor(), Tensor(),
                                 /*training=*/true, 0.f, eps)
                          .reshape(x.shape());
  if (weight.defined()) y = mul(y, weight.reshape(channel_shape(C, x.dim())));
  if (bias.defined()) y = add(y, bias.reshape(channel_shape(C, x.dim())));
  return y;
}

Tensor instance_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) {
  if (x.dim() < 3)
    throw std::invalid_argument("instance_norm: input must be [N, C, H, ...] (statistics per sample and channel), got " +
                                shape_str(x.shape()));
  if (x.numel() > 0 && x.numel() == x.shape()[0] * x.shape()[1])  // as PyTorch's _verify_spatial_size
    throw std::invalid_argument("instance_norm: needs more than one spatial element per channel, got input " +
                                shape_str(x.shape()));
  return group_norm(x, x.shape()[1], weight, bias, eps);
}

// ---- losses -------------------------------------------------------------------------------

namespace {
void check_loss_args(const char* op, const Tensor& input, const Tensor& target) {
  check_defined(op, input, "input");
  check_defined(op, target, "target");
  check_same_device(op, {&input, &target});
  if (input.shape() != target.shape())
    fail(op, "input " + shape_str(input.shape()) + " and target " + shape_str(target.shape()) +
                 " must have the same shape");
  if (input.numel() == 0) fail(op, "input is empty");
}
}  // namespace

Tensor binary_cross_entropy(const Tensor& p, const Tensor& target) {
  const char* op = "binary_cross_entropy";
  check_loss_args(op, p, target);
  const int64_t n = p.numel();
  Tensor loss;
  if (p.is_cuda()) {
    // No range check on the GPU (it would cost a device-to-host copy per step); values
    // outside [0, 1] give NaN there, as in PyTorch's CUDA kernel.
    loss = Tensor::empty({}, p.device());
    ON_CUDA(op, cuda::bce_forward(p.data(), target.data(), loss.data(), n));
  } else {
    const float* pv = p.data();
    for (int64_t i = 0; i < n; ++i)
      if (pv[i] < 0.f || pv[i] > 1.f)  // NaN passes on into a NaN loss: a blow-up, not misuse
        fail(op, "input values must be probabilities in [0, 1]; element " + std::to_string(i) +
                     " is " + std::to_string(pv[i]) + " (use binary_cross_entropy_with_logits on logits)");
    loss = Tensor::full({}, cpu::bce_forward<float>(p.data(), target.data(), n), p.device());
  }
  Tensor pd = p.detach(), td = target.detach();
  loss = record(loss, op, {p, target}, {pd, td}, [pd, td, n](const Tensor& g) {
    Tensor dp = Tensor::empty_like(pd);
    if (g.is_cuda())  // the upstream gradient stays on the device
      ON_CUDA("binary_cross_entropy", cuda::bce_backward(pd.data(), td.data(), g.data(), dp.data(), n));
    else
      cpu::bce_backward<float>(pd.data(), td.data(), g.item(), dp.data(), n);
    return std::vector<Tensor>{dp, Tensor()};
  });
  // dp = (p - t) / max(p (1 - p), 1e-12) g / n, the kernel's formula in recorded ops
  // (p (1 - p) <= 1/4, so clamping to [1e-12, 1] is the max).
  return set_graph_backward(loss, [td, n](const Tensor& g, const std::vector<Tensor>& in) {
    const Tensor& pr = in[0];
    const Tensor denom = clamp(mul(pr, rsub(pr, 1.f)), 1e-12f, 1.f);
    return std::vector<Tensor>{mul(div(sub(pr, td), denom), mul(g, 1.f / static_cast<float>(n))), Tensor()};
  });
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target) {
  const char* op = "binary_cross_entropy_with_logits";
  check_loss_args(op, logits, target);
  const int64_t n = logits.numel();
  Tensor loss;
  if (logits.is_cuda()) {
    loss = Tensor::empty({}, logits.device());
    ON_CUDA(op, cuda::bce_logits_forward(logits.data(), target.data(), loss.data(), n));
  } else {
    loss = Tensor::full({}, cpu::bce_logits_forward<float>(logits.data(), target.data(), n),
                        logits.device());
  }
  Tensor xd = logits.detach(), td = target.detach();
  loss = record(loss, op, {logits, target}, {xd, td}, [xd, td, n](const Tensor& g) {
    Tensor dx = Tensor::empty_like(xd);
    if (g.is_cuda())
      ON_CUDA("binary_cross_entropy_with_logits",
              cuda::bce_logits_backward(xd.data(), td.data(), g.data(), dx.data(), n));
    else
      cpu::bce_logits_backward<float>(xd.data(), td.data(), g.item(), dx.data(), n);
    return std::vector<Tensor>{dx, Tensor()};
  });
  // dx = (sigmoid(x) - t) g / n in recorded ops.
  return set_graph_backward(loss, [td, n](const Tensor& g, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{mul(sub(sigmoid(in[0]), td), mul(g, 1.f / static_cast<float>(n))), Tensor()};
  });
}

Tensor mse_loss(const Tensor& input, const Tensor& target) {
  check_loss_args("mse_loss", input, target);
  return mean(square(sub(input, target)));
}

Tensor l1_loss(const Tensor& input, const Tensor& target) {
  check_loss_args("l1_loss", input, target);
  return mean(abs(sub(input, target)));
}

// ---- pooling, softmax, classification loss, spatial gather --------------------------------

namespace {
// avg_pool2d's backward as a recorded op: each window's gradient spread evenly over the
// window, into [N, C, H, W] = xs. Linear, the pool's adjoint, so its gradient is the pool.
Tensor avg_pool2d_spread(const Tensor& g, const Shape& xs, int k, int stride) {
  Tensor dx = Tensor::empty(xs, g.device());
  if (g.is_cuda())
    ON_CUDA("avg_pool2d", cuda::avg_pool2d_backward(g.data(), dx.data(), xs[0] * xs[1], xs[2], xs[3], k, stride));
  else
    cpu::avg_pool2d_backward<float>(g.data(), dx.data(), xs[0] * xs[1], xs[2], xs[3], k, stride);
  return mark_linear_backward(record(dx, "avg_pool2d_backward", {g}, [k, stride](const Tensor& h) {
    return std::vector<Tensor>{avg_pool2d(h, k, stride)};
  }));
}
}  // namespace

Tensor avg_pool2d(const Tensor& x, int k, int stride) {
  const char* op = "avg_pool2d";
  check_defined(op, x, "input");
  if (x.dim() != 4) fail(op, "input must be [N, C, H, W], got " + shape_str(x.shape()));
  if (stride == 0) stride = k;
  if (k < 1 || stride < 1)
    fail(op, "kernel_size " + std::to_string(k) + " and stride " + std::to_string(stride) + " must be >= 1");
  const int64_t N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  if (H < k || W < k)
    fail(op, "kernel_size " + std::to_string(k) + " is larger than the input " + shape_str(x.shape()));
  const int64_t OH = (H - k) / stride + 1, OW = (W - k) / stride + 1;
  Tensor y = Tensor::empty({N, C, OH, OW}, x.device());
  if (x.is_cuda()) ON_CUDA(op, cuda::avg_pool2d_forward(x.data(), y.data(), N * C, H, W, k, stride));
  else cpu::avg_pool2d_forward<float>(x.data(), y.data(), N * C, H, W, k, stride);
  return mark_linear_backward(record(y, op, {x}, [xs = x.shape(), k, stride](const Tensor& g) {
    return std::vector<Tensor>{avg_pool2d_spread(g, xs, k, stride)};
  }));
}

Tensor global_avg_pool2d(const Tensor& x) {
  check_defined("global_avg_pool2d", x, "input");
  if (x.dim() != 4) fail("global_avg_pool2d", "input must be [N, C, H, W], got " + shape_str(x.shape()));
  if (x.shape()[2] != x.shape()[3])
    return mean(x, {2, 3});  // a non-square plane: the general reduction
  return avg_pool2d(x, static_cast<int>(x.shape()[2])).reshape({x.shape()[0], x.shape()[1]});
}

Tensor log_softmax(const Tensor& x) {
  const char* op = "log_softmax";
  check_defined(op, x, "input");
  if (x.dim() != 2 || x.shape()[1] < 1)
    fail(op, "input must be [N, C] with C >= 1, got " + shape_str(x.shape()));
  const int64_t M = x.shape()[0], C = x.shape()[1];
  Tensor y = Tensor::empty_like(x);
  if (x.is_cuda()) ON_CUDA(op, cuda::log_softmax_forward(x.data(), y.data(), M, C));
  else cpu::log_softmax_forward<float>(x.data(), y.data(), M, C);
  Tensor ys = y.detach();
  y = record(y, op, {x}, {ys}, [ys, M, C](const Tensor& g) {
    Tensor dx = Tensor::empty_like(ys);
    if (g.is_cuda()) ON_CUDA("log_softmax", cuda::log_softmax_backward(ys.data(), g.data(), dx.data(), M, C));
    else cpu::log_softmax_backward<float>(ys.data(), g.data(), dx.data(), M, C);
    return std::vector<Tensor>{dx};
  });
  // dx = g - softmax(x) * sum_c g, with softmax recomputed from x so it carries x's graph.
  return set_graph_backward(y, [](const Tensor& g, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{sub(g, mul(exp(log_softmax(in[0])), sum(g, {1}, /*keepdim=*/true)))};
  });
}

namespace {
// Class indices as floats: each an integer in [0, C), or a named error.
void check_labels(const float* t, int64_t M, int64_t C) {
  for (int64_t i = 0; i < M; ++i)
    if (!(t[i] >= 0.f && t[i] < static_cast<float>(C)) || t[i] != std::floor(t[i]))
      fail("cross_entropy", "label " + std::to_string(i) + " is " + std::to_string(t[i]) +
                                "; labels must be class indices in [0, " + std::to_string(C) + ")");
}
}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& labels) {
  const char* op = "cross_entropy";
  check_defined(op, logits, "logits");
  check_defined(op, labels, "labels");
  check_same_device(op, {&logits, &labels});
  if (logits.dim() != 2 || logits.shape()[0] < 1 || logits.shape()[1] < 1)
    fail(op, "logits must be [N, C] with N, C >= 1, got " + shape_str(logits.shape()));
  const int64_t M = logits.shape()[0], C = logits.shape()[1];
  if (labels.shape() != Shape{M})
    fail(op, "labels " + shape_str(labels.shape()) + " should be [" + std::to_string(M) +
                 "] (one class index per row of logits " + shape_str(logits.shape()) + ")");
  Tensor loss;
  if (logits.is_cuda()) {
    loss = Tensor::empty({}, logits.device());
    ON_CUDA(op, cuda::cross_entropy_forward(logits.data(), labels.data(), loss.data(), M, C));
  } else {
    check_labels(labels.data(), M, C);
    loss = Tensor::full({}, cpu::cross_entropy_forward<float>(logits.data(), labels.data(), M, C),
                        logits.device());
  }
  Tensor xd = logits.detach(), td = labels.detach();
  loss = record(loss, op, {logits, labels}, {xd, td}, [xd, td, M, C](const Tensor& g) {
    Tensor dx = Tensor::empty_like(xd);
    if (g.is_cuda())
      ON_CUDA("cross_entropy", cuda::cross_entropy_backward(xd.data(), td.data(), g.data(), dx.data(), M, C));
    else
      cpu::cross_entropy_backward<float>(xd.data(), td.data(), g.item(), dx.data(), M, C);
    return std::vector<Tensor>{dx, Tensor()};
  });
  // dx = (softmax(x) - onehot(labels)) g / M from recorded ops. The one-hot rows are built on
  // the host (one copy of the labels there for a GPU tensor: only a double backward pays it).
  return set_graph_backward(loss, [td, M, C](const Tensor& g, const std::vector<Tensor>& in) {
    const std::vector<float> t = td.to_vector();
    check_labels(t.data(), M, C);  // GPU labels are unchecked until here
    std::vector<float> hot(static_cast<size_t>(M * C), 0.f);
    for (int64_t i = 0; i < M; ++i) hot[static_cast<size_t>(i * C + static_cast<int64_t>(t[i]))] = 1.f;
    const Tensor onehot = Tensor::from_vector(hot, {M, C}, td.device());
    return std::vector<Tensor>{mul(sub(exp(log_softmax(in[0])), onehot), mul(g, 1.f / static_cast<float>(M))), Tensor()};
  });
}

namespace {
// spatial_gather's backward as a recorded op: g [N, C, out_h, out_w] scattered (added) back
// through the map into [N, C, H, W]. Both are linear and each is the other's adjoint,
// <scatter(g), h> = <g, gather(h)>, so each one's gradient is the other: that is what lets a
// penalty differentiate D's input gradient through an augmentation (R1 at the un-augmented
// reals, as StyleGAN2-ADA).
Tensor spatial_scatter(const Tensor& g, const Tensor& id, const Shape& xs, int64_t out_h, int64_t out_w) {
  const int64_t N = xs[0], C = xs[1], P_in = xs[2] * xs[3], P_out = out_h * out_w;
  Tensor dx = Tensor::empty(xs, g.device());
  if (g.is_cuda())
    ON_CUDA("spatial_gather", cuda::spatial_gather_backward(g.data(), id.data(), dx.data(), N, C, P_in, P_out));
  else
    cpu::spatial_gather_backward<float>(g.data(), id.data(), dx.data(), N, C, P_in, P_out);
  return mark_linear_backward(record(dx, "spatial_gather_backward", {g}, [id, out_h, out_w](const Tensor& h) {
    return std::vector<Tensor>{spatial_gather(h, id, out_h, out_w)};
  }));
}
}  // namespace

Tensor spatial_gather(const Tensor& x, const Tensor& index, int64_t out_h, int64_t out_w) {
  const char* op = "spatial_gather";
  check_defined(op, x, "input");
  check_defined(op, index, "index");
  check_same_device(op, {&x, &index});
  if (x.dim() != 4) fail(op, "input must be [N, C, H, W], got " + shape_str(x.shape()));
  const int64_t N = x.shape()[0], C = x.shape()[1], P_in = x.shape()[2] * x.shape()[3];
  if (out_h < 1 || out_w < 1) fail(op, "output size must be positive");
  const int64_t P_out = out_h * out_w;
  if (index.shape() != Shape{N, P_out})
    fail(op, "index " + shape_str(index.shape()) + " should be [" + std::to_string(N) + ", " +
                 std::to_string(P_out) + "] (one input position per output position and sample)");
  if (!index.is_cuda()) {
    const float* q = index.data();
    for (int64_t i = 0; i < N * P_out; ++i)
      if (!(q[i] >= -1.f && q[i] < static_cast<float>(P_in)) || q[i] != std::floor(q[i]))
        fail(op, "index entry " + std::to_string(i) + " is " + std::to_string(q[i]) +
                     "; entries must be -1 or integer positions in [0, " + std::to_string(P_in) + ")");
  }
  Tensor y = Tensor::empty({N, C, out_h, out_w}, x.device());
  if (x.is_cuda())
    ON_CUDA(op, cuda::spatial_gather_forward(x.data(), index.data(), y.data(), N, C, P_in, P_out));
  else
    cpu::spatial_gather_forward<float>(x.data(), index.data(), y.data(), N, C, P_in, P_out);
  Tensor id = index.detach();
  return mark_linear_backward(record(y, op, {x}, {id}, [id, xs = x.shape(), out_h, out_w](const Tensor& g) {
    return std::vector<Tensor>{spatial_scatter(g, id, xs, out_h, out_w)};
  }));
}

namespace {
// affine_warp's backward as a recorded op (the adjoint: each gradient added to its taps); as
// with spatial_scatter, each of the pair is the other's gradient.
Tensor affine_warp_adjoint(const Tensor& g, const Tensor& theta) {
  const Shape& s = g.shape();
  Tensor dx = Tensor::empty(s, g.device());
  if (g.is_cuda())
    ON_CUDA("affine_warp", cuda::affine_warp_backward(g.data(), theta.data(), dx.data(), s[0], s[1], s[2], s[3]));
  else
    cpu::affine_warp_backward<float>(g.data(), theta.data(), dx.data(), s[0], s[1], s[2], s[3]);
  return mark_linear_backward(record(dx, "affine_warp_backward", {g}, [theta](const Tensor& h) {
    return std::vector<Tensor>{affine_warp(h, theta)};
  }));
}
}  // namespace

Tensor affine_warp(const Tensor& x, const Tensor& theta) {
  const char* op = "affine_warp";
  check_defined(op, x, "input");
  check_defined(op, theta, "theta");
  check_same_device(op, {&x, &theta});
  if (x.dim() != 4 || x.shape()[2] < 2 || x.shape()[3] < 2)
    fail(op, "input must be [N, C, H, W] with H, W >= 2, got " + shape_str(x.shape()));
  const Shape& s = x.shape();
  if (theta.shape() != Shape{s[0], 2, 3})
    fail(op, "theta " + shape_str(theta.shape()) + " should be [" + std::to_string(s[0]) +
                 ", 2, 3] (one 2x3 affine matrix per sample of input " + shape_str(s) + ")");
  Tensor th = theta.detach();
  if (!th.is_cuda()) {
    const float* t = th.data();
    for (int64_t i = 0; i < s[0] * 6; ++i)
      if (!std::isfinite(t[i]))
        fail(op, "theta entry " + std::to_string(i) + " (sample " + std::to_string(i / 6) + ") is " +
                     std::to_string(t[i]) + "; the matrices must be finite");
  }
  Tensor y = Tensor::empty(s, x.device());
  if (x.is_cuda())
    ON_CUDA(op, cuda::affine_warp_forward(x.data(), th.data(), y.data(), s[0], s[1], s[2], s[3]));
  else
    cpu::affine_warp_forward<float>(x.data(), th.data(), y.data(), s[0], s[1], s[2], s[3]);
  return mark_linear_backward(record(y, op, {x}, {th}, [th](const Tensor& g) {
    return std::vector<Tensor>{affine_warp_adjoint(g, th)};
  }));
}

}  // namespace gantry

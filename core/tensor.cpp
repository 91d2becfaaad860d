#include "gantry/core/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <stdexcept>

#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/core/random.h"

#ifdef GANTRY_WITH_CUDA
#include "gantry/core/cuda_runtime.h"
#include "gantry/kernels/cuda/cuda_kernels.h"
#endif

namespace gantry {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

namespace {

void check_shape(const Shape& shape, const char* what) {
  if (shape.size() > static_cast<size_t>(kMaxDims))
    throw std::invalid_argument(std::string(what) + ": shape " + shape_str(shape) + " has " +
                                std::to_string(shape.size()) + " dims; gantry supports up to " +
                                std::to_string(kMaxDims));
  for (int64_t d : shape)
    if (d < 0)
      throw std::invalid_argument(std::string(what) + ": shape " + shape_str(shape) +
                                  " has a negative size");
}

// Copies nbytes between any two devices.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
#ifdef GANTRY_WITH_CUDA
  if (dst_dev.is_cuda() && src_dev.is_cpu()) return cuda::copy_host_to_device(dst, src, nbytes);
  if (dst_dev.is_cpu() && src_dev.is_cuda()) return cuda::copy_device_to_host(dst, src, nbytes);
  return cuda::copy_device_to_device(dst, src, nbytes);
#else
  throw std::runtime_error("copy between " + src_dev.str() + " and " + dst_dev.str() +
                           ": gantry was built without CUDA");
#endif
}

}  // namespace

// ---- factories ------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, Device dev) {
  check_shape(shape, "Tensor::empty");
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->storage = std::make_shared<Storage>(shape_numel(shape) * sizeof(float), dev);
  return Tensor(impl);
}

Tensor Tensor::empty_pinned(const Shape& shape) {
  check_shape(shape, "Tensor::empty_pinned");
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->storage = Storage::pinned(shape_numel(shape) * sizeof(float));
  return Tensor(impl);
}

Tensor Tensor::zeros(const Shape& shape, Device dev) { return full(shape, 0.f, dev); }
Tensor Tensor::ones(const Shape& shape, Device dev) { return full(shape, 1.f, dev); }

Tensor Tensor::full(const Shape& shape, float value, Device dev) {
  Tensor t = empty(shape, dev);
  t.fill_(value);
  return t;
}

Tensor Tensor::arange(int64_t end, Device dev) {
  return arange(0.f, static_cast<float>(end), 1.f, dev);
}

Tensor Tensor::arange(float start, float end, float step, Device dev) {
  if (step == 0.f || (end - start) / step < 0.f)
    throw std::invalid_argument("Tensor::arange: step " + std::to_string(step) +
                                " cannot go from " + std::to_string(start) + " to " +
                                std::to_string(end));
  const auto n = static_cast<int64_t>(std::ceil((end - start) / step));
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = start + step * static_cast<float>(i);
  return from_vector(v, {n}, dev);
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape, Device dev) {
  if (static_cast<int64_t>(values.size()) != shape_numel(shape))
    throw std::invalid_argument("Tensor::from_vector: " + std::to_string(values.size()) +
                                " values do not fill shape " + shape_str(shape) + " (" +
                                std::to_string(shape_numel(shape)) + " elements)");
  Tensor t = empty(shape, dev);
  copy_bytes(t.data(), dev, values.data(), Device::cpu(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::randn(const Shape& shape, Generator* gen, Device dev) {
  Tensor t = empty(shape, dev);
  t.normal_(0.f, 1.f, gen);
  return t;
}

Tensor Tensor::rand(const Shape& shape, Generator* gen, Device dev) {
  Tensor t = empty(shape, dev);
  t.uniform_(0.f, 1.f, gen);
  return t;
}

Tensor Tensor::zeros_like(const Tensor& t) { return zeros(t.shape(), t.device()); }
Tensor Tensor::ones_like(const Tensor& t) { return ones(t.shape(), t.device()); }
Tensor Tensor::empty_like(const Tensor& t) { return empty(t.shape(), t.device()); }

// ---- shape and data -------------------------------------------------------------------------

const TensorImpl& Tensor::checked() const {
  if (!impl_) throw std::logic_error("use of an undefined Tensor");
  return *impl_;
}

const Shape& Tensor::shape() const { return checked().shape; }
int64_t Tensor::numel() const { return shape_numel(shape()); }
Device Tensor::device() const { return checked().storage->device(); }

int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  const int64_t k = d < 0 ? d + n : d;
  if (k < 0 || k >= n)
    throw std::out_of_range("Tensor::size: dim " + std::to_string(d) + " out of range for shape " +
                            shape_str(shape()));
  return shape()[k];
}

float* Tensor::data() const {
  const TensorImpl& t = checked();
  return static_cast<float*>(t.storage->data()) + t.offset;
}

float& Tensor::at(std::initializer_list<int64_t> index) const {
  if (!device().is_cpu())
    throw std::invalid_argument("Tensor::at: tensor is on " + device().str() +
                                "; call .cpu() first");
  const Shape& s = shape();
  if (index.size() != s.size())
    throw std::out_of_range("Tensor::at: " + std::to_string(index.size()) +
                            " indices for shape " + shape_str(s));
  int64_t flat = 0, d = 0;
  for (int64_t i : index) {
    if (i < 0 || i >= s[d])
      throw std::out_of_range("Tensor::at: index " + std::to_string(i) + " out of range for dim " +
                              std::to_string(d) + " of shape " + shape_str(s));
    flat = flat * s[d] + i;
    ++d;
  }
  return data()[flat];
}

float Tensor::item() const {
  if (numel() != 1)
    throw std::invalid_argument("Tensor::item: tensor of shape " + shape_str(shape()) +
                                " has " + std::to_string(numel()) + " elements, not 1");
  float v = 0.f;
  copy_bytes(&v, Device::cpu(), data(), device(), sizeof(float));
  return v;
}

std::vector<float> Tensor::to_vector() const {
  std::vector<float> v(static_cast<size_t>(numel()));
  copy_bytes(v.data(), Device::cpu(), data(), device(), v.size() * sizeof(float));
  return v;
}

Tensor Tensor::to(Device dev) const {
  if (device() == dev) return *this;
  Tensor out = empty(shape(), dev);
  copy_bytes(out.data(), dev, data(), device(), numel() * sizeof(float));
  if (requires_grad() && grad_enabled()) {
    const Device from = device();
    return mark_linear_backward(record(out, "to", {*this},
                  [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; }));
  }
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), device());
  copy_bytes(out.data(), device(), data(), device(), numel() * sizeof(float));
  return mark_linear_backward(
      record(out, "clone", {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; }));
}

Tensor Tensor::reshape(const Shape& new_shape) const {
  Shape s = new_shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0)
        throw std::invalid_argument("reshape: more than one -1 in " + shape_str(new_shape));
      infer = static_cast<int64_t>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || numel() % known != 0)
      throw std::invalid_argument("reshape: cannot infer -1 in " + shape_str(new_shape) +
                                  " for a tensor of shape " + shape_str(shape()));
    s[infer] = numel() / known;
  }
  check_shape(s, "reshape");
  if (shape_numel(s) != numel())
    throw std::invalid_argument("reshape: shape " + shape_str(shape()) + " (" +
                                std::to_string(numel()) + " elements) cannot become " +
                                shape_str(new_shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = checked().storage;
  impl->offset = checked().offset;
  impl->shape = s;
  Tensor out(impl);
  const Shape old = shape();
  return mark_linear_backward(record(out, "reshape", {*this},
                [old](const Tensor& g) { return std::vector<Tensor>{g.reshape(old)}; }));
}

Tensor Tensor::flatten(int64_t start_dim) const {
  const int64_t n = dim();
  const int64_t s = start_dim < 0 ? start_dim + n : start_dim;
  if (s < 0 || s > n)
    throw std::invalid_argument("flatten: start_dim " + std::to_string(start_dim) +
                                " out of range for shape " + shape_str(shape()));
  Shape out(shape().begin(), shape().begin() + s);
  int64_t rest = 1;
  for (int64_t i = s; i < n; ++i) rest *= shape()[i];
  out.push_back(rest);
  return reshape(out);
}

Tensor Tensor::narrow0(int64_t start, int64_t length) const {
  if (dim() == 0 || start < 0 || length < 0 || start + length > shape()[0])
    throw std::out_of_range("narrow0: rows [" + std::to_string(start) + ", " +
                            std::to_string(start + length) + ") out of range for shape " +
                            shape_str(shape()));
  const int64_t row = dim() ? numel() / std::max<int64_t>(shape()[0], 1) : 1;
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = checked().storage;
  impl->offset = checked().offset + start * row;
  impl->shape = shape();
  impl->shape[0] = length;
  Tensor out(impl);
  const Shape full_shape = shape();
  // The gradient is g between rows of zeros, recorded ops: narrow0 differentiates twice.
  return mark_linear_backward(record(out, "narrow0", {*this}, [full_shape, start](const Tensor& g) {
    return std::vector<Tensor>{slice_backward(g, full_shape, 0, start)};
  }));
}

// ---- in-place -------------------------------------------------------------------------------

uint64_t Tensor::version() const { return checked().storage->version(); }
void Tensor::bump_version() const { checked().storage->bump_version(); }

Tensor& Tensor::fill_(float value) {
  bump_version();
  const int64_t n = numel();
  if (device().is_cpu()) {
    std::fill(data(), data() + n, value);
  } else {
#ifdef GANTRY_WITH_CUDA
    cuda::fill(data(), n, value);
#else
    std::vector<float> host(static_cast<size_t>(n), value);
    copy_bytes(data(), device(), host.data(), Device::cpu(), n * sizeof(float));
#endif
  }
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  if (src.numel() != numel())
    throw std::invalid_argument("copy_: source shape " + shape_str(src.shape()) +
                                " does not match destination shape " + shape_str(shape()));
  bump_version();
  copy_bytes(data(), device(), src.data(), src.device(), numel() * sizeof(float));
  return *this;
}

Tensor& Tensor::normal_(float mean, float std, Generator* gen) {
  bump_version();
  Generator& g = gen ? *gen : default_generator();
  if (device().is_cpu()) {
    g.fill_normal(data(), numel(), mean, std);
  } else {
#ifdef GANTRY_WITH_CUDA
    // The same Philox stream as on the CPU, evaluated on the device (kernels/cuda/random.cu).
    const uint64_t base = g.reserve(numel());
    cuda::philox_normal(data(), numel(), g.seed(), base, mean, std);
#else
    std::vector<float> host(static_cast<size_t>(numel()));
    g.fill_normal(host.data(), numel(), mean, std);
    copy_bytes(data(), device(), host.data(), Device::cpu(), host.size() * sizeof(float));
#endif
  }
  return *this;
}

Tensor& Tensor::uniform_(float low, float high, Generator* gen) {
  bump_version();
  Generator& g = gen ? *gen : default_generator();
  if (device().is_cpu()) {
    g.fill_uniform(data(), numel(), low, high);
  } else {
#ifdef GANTRY_WITH_CUDA
    const uint64_t base = g.reserve(numel());
    cuda::philox_uniform(data(), numel(), g.seed(), base, low, high);
#else
    std::vector<float> host(static_cast<size_t>(numel()));
    g.fill_uniform(host.data(), numel(), low, high);
    copy_bytes(data(), device(), host.data(), Device::cpu(), host.size() * sizeof(float));
#endif
  }
  return *this;
}

namespace {
// x = a * x + b in place, in one pass: on a GPU one launch, not an op into a temporary and a
// copy back (gradient accumulation, EMA and BN's batch counter run these every step).
void affine_in_place(const Tensor& t, float a, float b) {
  t.bump_version();
  const int64_t n = t.numel();
  float* d = t.data();
  if (t.device().is_cpu()) {
    for (int64_t i = 0; i < n; ++i) d[i] = a * d[i] + b;
  } else {
#ifdef GANTRY_WITH_CUDA
    cuda::affine(d, d, n, a, b);
#endif
  }
}
}  // namespace

Tensor& Tensor::mul_(float s) {
  affine_in_place(*this, s, 0.f);
  return *this;
}

Tensor& Tensor::add_(float value) {
  affine_in_place(*this, 1.f, value);
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, float alpha) {
  if (other.shape() != shape())
    throw std::invalid_argument("add_: shape " + shape_str(other.shape()) +
                                " does not match " + shape_str(shape()));
  if (other.device() != device())
    throw std::invalid_argument("add_: the other tensor is on " + other.device().str() +
                                ", this one on " + device().str() + "; move it with .to() first");
  bump_version();
  const int64_t n = numel();
  float* d = data();
  const float* o = other.data();
  if (device().is_cpu()) {
    for (int64_t i = 0; i < n; ++i) d[i] += alpha * o[i];
  } else {
#ifdef GANTRY_WITH_CUDA
    cuda::axpy(d, o, d, n, alpha);  // y = x + alpha * other, y aliasing x
#endif
  }
  return *this;
}

// ---- autograd -------------------------------------------------------------------------------

bool Tensor::requires_grad() const { return checked().requires_grad; }

Tensor& Tensor::requires_grad_(bool on) {
  if (!is_leaf())
    throw std::logic_error("requires_grad_: only leaf tensors can change requires_grad (this one "
                           "was made by '" + impl_->grad_fn->name + "'); use detach() first");
  impl_->requires_grad = on;
  return *this;
}

bool Tensor::is_leaf() const { return checked().grad_fn == nullptr; }

Tensor Tensor::grad() const { return Tensor(checked().grad); }

void Tensor::set_grad(const Tensor& g) const {
  if (g.defined() && g.shape() != shape())
    throw std::invalid_argument("set_grad: gradient shape " + shape_str(g.shape()) +
                                " does not match tensor shape " + shape_str(shape()));
  impl_->grad = g.impl();
}

void Tensor::zero_grad() const { checked(); impl_->grad.reset(); }

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = checked().storage;
  impl->offset = impl_->offset;
  impl->shape = impl_->shape;
  return Tensor(impl);
}

const std::shared_ptr<Node>& Tensor::grad_fn() const { return checked().grad_fn; }

// ---- printing -------------------------------------------------------------------------------

namespace {
void print_rec(std::ostream& os, const std::vector<float>& v, const Shape& s, size_t d,
               int64_t offset, int max_per_dim, int indent) {
  if (s.empty()) {
    os << v[0];
    return;
  }
  int64_t inner = 1;
  for (size_t k = d + 1; k < s.size(); ++k) inner *= s[k];
  os << '[';
  const int64_t n = s[d];
  for (int64_t i = 0; i < n; ++i) {
    if (n > max_per_dim && i == max_per_dim / 2) {
      os << "...";
      i = n - max_per_dim / 2 - 1;
      if (d + 1 < s.size()) os << ",\n" << std::string(indent + 1, ' ');
      else os << ", ";
      continue;
    }
    if (d + 1 == s.size()) {
      os << std::setw(9) << v[offset + i];
    } else {
      print_rec(os, v, s, d + 1, offset + i * inner, max_per_dim, indent + 1);
    }
    if (i + 1 < n) {
      if (d + 1 < s.size()) os << ",\n" << std::string(indent + 1, ' ');
      else os << ", ";
    }
  }
  os << ']';
}
}  // namespace

std::string Tensor::str(int max_per_dim) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(";
  os << std::fixed << std::setprecision(4);
  print_rec(os, to_vector(), shape(), 0, 0, std::max(max_per_dim, 2), 7);
  os << ", shape=" << shape_str(shape()) << ", device=" << device().str();
  if (requires_grad()) os << ", requires_grad=true";
  if (grad_fn()) os << ", grad_fn=" << grad_fn()->name;
  os << ')';
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace gantry

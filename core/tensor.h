#pragma once
// Tensor: a float32, contiguous, row-major (NCHW) array of up to 5 dimensions on one device,
// with define-by-run autograd. A Tensor is a cheap handle (a shared_ptr); copies of the handle
// share everything, like torch.Tensor in Python. reshape()/detach() share the storage.
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "gantry/core/device.h"
#include "gantry/core/storage.h"

namespace gantry {

using Shape = std::vector<int64_t>;
constexpr int kMaxDims = 5;

std::string shape_str(const Shape& s);  // "[128, 3, 64, 64]"
int64_t shape_numel(const Shape& s);

class Generator;
struct Node;

// Everything a Tensor handle points at. Not for direct use outside core/.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements, into storage
  Shape shape;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // accumulated gradient of a leaf
  std::shared_ptr<Node> grad_fn;     // the op that made this tensor (null for leaves)
};

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor: defined() == false
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories ------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, Device dev = Device::cpu());  // uninitialized
  // Uninitialized host tensor in page-locked memory when a GPU is usable (ordinary memory
  // otherwise): copies from it to the GPU are asynchronous. For data-loader batches.
  static Tensor empty_pinned(const Shape& shape);
  static Tensor zeros(const Shape& shape, Device dev = Device::cpu());
  static Tensor ones(const Shape& shape, Device dev = Device::cpu());
  static Tensor full(const Shape& shape, float value, Device dev = Device::cpu());
  static Tensor arange(int64_t end, Device dev = Device::cpu());  // 0, 1, ..., end-1
  static Tensor arange(float start, float end, float step = 1.f, Device dev = Device::cpu());
  // Copies values into a new tensor of the given shape (numel must match).
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape,
                            Device dev = Device::cpu());
  // Standard normal / uniform [0,1) samples from gen (the default generator when null).
  static Tensor randn(const Shape& shape, Generator* gen = nullptr, Device dev = Device::cpu());
  static Tensor rand(const Shape& shape, Generator* gen = nullptr, Device dev = Device::cpu());
  static Tensor zeros_like(const Tensor& t);
  static Tensor ones_like(const Tensor& t);
  static Tensor empty_like(const Tensor& t);

  // ---- shape and data -------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  Device device() const;
  bool is_cuda() const { return device().is_cuda(); }

  // Raw pointer to the first element (host pointer on the CPU, device pointer on a GPU).
  float* data() const;
  // Element access on CPU tensors (throws for GPU tensors or out-of-range indices).
  float& at(std::initializer_list<int64_t> index) const;
  float item() const;                   // the single value of a one-element tensor (any device)
  std::vector<float> to_vector() const;  // all values, copied to the host

  Tensor to(Device dev) const;  // a copy on dev (the same tensor when already there)
  Tensor cpu() const { return to(Device::cpu()); }
  Tensor clone() const;  // a copy with its own storage; recorded by autograd
  // Views sharing storage; recorded by autograd. One dimension may be -1 (inferred).
  Tensor reshape(const Shape& shape) const;
  Tensor view(const Shape& shape) const { return reshape(shape); }
  Tensor flatten(int64_t start_dim = 1) const;  // [N, C, H, W] -> [N, C*H*W] by default
  // Rows [start, start+length) of dimension 0, sharing storage (a contiguous view).
  Tensor narrow0(int64_t start, int64_t length) const;

  // ---- in-place, outside autograd (for init, optimizers and buffers) --------------------
  Tensor& fill_(float value);
  Tensor& zero_() { return fill_(0.f); }
  Tensor& copy_(const Tensor& src);  // same numel; any devices
  Tensor& normal_(float mean = 0.f, float std = 1.f, Generator* gen = nullptr);
  Tensor& uniform_(float low = 0.f, float high = 1.f, Generator* gen = nullptr);
  Tensor& mul_(float s);
  Tensor& add_(const Tensor& other, float alpha = 1.f);  // this += alpha * other (same shape)
  Tensor& add_(float value);                              // this += value
  // The storage's in-place write counter (see Storage::version). The methods above bump it;
  // code that writes through data() directly (optimizers, kernels) calls bump_version().
  uint64_t version() const;
  void bump_version() const;

  // ---- autograd --------------------------------------------------------------------------
  bool requires_grad() const;
  Tensor& requires_grad_(bool on = true);  // only on leaves
  bool is_leaf() const;                    // true when no op made it
  Tensor grad() const;                     // undefined until a backward reaches it
  void set_grad(const Tensor& g) const;
  void zero_grad() const;                  // drops .grad (as PyTorch's set_to_none=True)
  // A tensor sharing storage but cut from the graph (requires_grad false).
  Tensor detach() const;
  // Back-propagates from this tensor. A scalar needs no gradient argument; otherwise pass
  // one of the same shape. The graph is freed afterwards unless retain_graph.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  const std::shared_ptr<Node>& grad_fn() const;

  // ---- printing --------------------------------------------------------------------------
  std::string str(int max_per_dim = 6) const;  // readable, PyTorch-like

  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  const TensorImpl& checked() const;
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Arithmetic operators (defined in ops.cpp; see ops.h for broadcasting rules).
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, float s);
Tensor operator-(const Tensor& a, float s);
Tensor operator*(const Tensor& a, float s);
Tensor operator/(const Tensor& a, float s);
Tensor operator+(float s, const Tensor& a);
Tensor operator-(float s, const Tensor& a);
Tensor operator*(float s, const Tensor& a);
Tensor operator-(const Tensor& a);

}  // namespace gantry

#include "gantry/optim/ema.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "gantry/core/autograd.h"

#ifdef GANTRY_WITH_CUDA
#include "gantry/kernels/cuda/cuda_kernels.h"
#endif

namespace gantry {

namespace {
std::vector<std::pair<Tensor, Tensor>> pair_up(const std::vector<std::pair<std::string, Tensor>>& src,
                                               const std::vector<std::pair<std::string, Tensor>>& dst,
                                               const char* what) {
  if (src.size() != dst.size())
    throw std::invalid_argument(std::string("EMA: source has ") + std::to_string(src.size()) + " " + what +
                                " but target has " + std::to_string(dst.size()) +
                                "; the target must be a model of the same architecture");
  std::vector<std::pair<Tensor, Tensor>> out;
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i].first != dst[i].first || src[i].second.shape() != dst[i].second.shape())
      throw std::invalid_argument("EMA: " + std::string(what) + " " + std::to_string(i) + " is " + src[i].first + " " +
                                  shape_str(src[i].second.shape()) + " in the source but " + dst[i].first + " " +
                                  shape_str(dst[i].second.shape()) + " in the target");
    out.emplace_back(src[i].second, dst[i].second);
  }
  return out;
}
}  // namespace

EMA::EMA(Module& source, Module& target, double decay, double rampup) : decay_(decay), rampup_(rampup) {
  if (!(decay >= 0 && decay <= 1))
    throw std::invalid_argument("EMA: decay " + std::to_string(decay) + " must be in [0, 1] (typically 0.999)");
  if (!(rampup >= 0 && std::isfinite(rampup)))
    throw std::invalid_argument("EMA: rampup " + std::to_string(rampup) + " must be >= 0 (0 = off; StyleGAN2-ADA uses 0.05)");
  params_ = pair_up(source.named_parameters(), target.named_parameters(), "parameters");
  buffers_ = pair_up(source.named_buffers(), target.named_buffers(), "buffers");
  copy_from_source();
}

void EMA::copy_from_source() {
  NoGradGuard guard;
  for (auto& [s, t] : params_) t.copy_(s);
  for (auto& [s, t] : buffers_) t.copy_(s);
}

double EMA::current_decay() const {
  if (rampup_ == 0) return decay_;
  if (updates_ == 0) return 0;  // a half-life of 0: the first update copies
  return std::min(decay_, std::pow(0.5, 1.0 / (rampup_ * static_cast<double>(updates_))));
}

void EMA::set_updates(int64_t n) {
  if (n < 0) throw std::invalid_argument("EMA::set_updates: " + std::to_string(n) + " must be >= 0");
  updates_ = n;
}

void EMA::update() {
  NoGradGuard guard;
  const double decay = current_decay();
  ++updates_;
#ifdef GANTRY_WITH_CUDA
  // A model on one GPU: every parameter and buffer in one launch, not one or two per tensor.
  const Device dev = params_.empty() ? Device::cpu() : params_[0].first.device();
  bool one_gpu = dev.is_cuda();
  std::vector<cuda::EmaTensor> tensors;
  for (auto* group : {&params_, &buffers_})
    for (auto& [s, t] : *group) {
      one_gpu = one_gpu && s.device() == dev && t.device() == dev;
      tensors.push_back({t.data(), s.data(), t.numel(), group == &buffers_});
    }
  if (one_gpu) {
    for (auto* group : {&params_, &buffers_})
      for (auto& st : *group) st.second.bump_version();  // written in place, as mul_/add_/copy_
    cuda::ema_multi_tensor(tensors.data(), static_cast<int>(tensors.size()), decay);
    return;
  }
#endif
  const float d = static_cast<float>(decay);
  for (auto& [s, t] : params_) {
    t.mul_(d);
    t.add_(s, static_cast<float>(1.0 - decay));
  }
  for (auto& [s, t] : buffers_) t.copy_(s);
}

}  // namespace gantry

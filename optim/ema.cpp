#include "gantry/optim/ema.h"

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

EMA::EMA(Module& source, Module& target, double decay) : decay_(decay) {
  if (!(decay >= 0 && decay <= 1))
    throw std::invalid_argument("EMA: decay " + std::to_string(decay) + " must be in [0, 1] (typically 0.999)");
  params_ = pair_up(source.named_parameters(), target.named_parameters(), "parameters");
  buffers_ = pair_up(source.named_buffers(), target.named_buffers(), "buffers");
  copy_from_source();
}

void EMA::copy_from_source() {
  NoGradGuard guard;
  for (auto& [s, t] : params_) t.copy_(s);
  for (auto& [s, t] : buffers_) t.copy_(s);
}

void EMA::update() {
  NoGradGuard guard;
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
    cuda::ema_multi_tensor(tensors.data(), static_cast<int>(tensors.size()), decay_);
    return;
  }
#endif
  const float d = static_cast<float>(decay_);
  for (auto& [s, t] : params_) {
    t.mul_(d);
    t.add_(s, static_cast<float>(1.0 - decay_));
  }
  for (auto& [s, t] : buffers_) t.copy_(s);
}

}  // namespace gantry

// DCGAN models: state_dict keys, shapes and order equal to PyTorch's DCGAN example (written by
// hand from its nn.Sequential), forward shapes for 32/64/128, and rebuilding from a checkpoint.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "gantry/core/autograd.h"
#include "gantry/models/dcgan.h"

using namespace gantry;
using Catch::Matchers::Contains;

namespace {

using KeyShapes = std::vector<std::pair<std::string, Shape>>;

KeyShapes key_shapes(const StateDict& sd) {
  KeyShapes out;
  for (const auto& e : sd) out.emplace_back(e.name, e.tensor.shape());
  return out;
}

void add_bn(KeyShapes& k, int i, int64_t c) {
  const std::string p = "main." + std::to_string(i) + ".";
  k.push_back({p + "weight", {c}});
  k.push_back({p + "bias", {c}});
  k.push_back({p + "running_mean", {c}});
  k.push_back({p + "running_var", {c}});
  k.push_back({p + "num_batches_tracked", {}});
}

std::string tmp_path(const std::string& name) {
  const char* env = std::getenv("GANTRY_TEST_TMP");
  auto dir = std::filesystem::path(env ? env : std::filesystem::temp_directory_path().string()) / "models";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

}  // namespace

TEST_CASE("DCGAN generator(100, 64, 3, 64): exactly PyTorch's state_dict keys and shapes") {
  // PyTorch: Generator.main = Sequential(ConvT(100,512,4,1,0), BN(512), ReLU, ConvT(512,256,4,2,1),
  // BN(256), ReLU, ConvT(256,128,4,2,1), BN(128), ReLU, ConvT(128,64,4,2,1), BN(64), ReLU,
  // ConvT(64,3,4,2,1), Tanh)
  KeyShapes want;
  want.push_back({"main.0.weight", {100, 512, 4, 4}});
  add_bn(want, 1, 512);
  want.push_back({"main.3.weight", {512, 256, 4, 4}});
  add_bn(want, 4, 256);
  want.push_back({"main.6.weight", {256, 128, 4, 4}});
  add_bn(want, 7, 128);
  want.push_back({"main.9.weight", {128, 64, 4, 4}});
  add_bn(want, 10, 64);
  want.push_back({"main.12.weight", {64, 3, 4, 4}});
  auto g = make_generator(100, 64, 3, 64);
  const StateDict sd = g->state_dict();
  CHECK(key_shapes(sd) == want);
  for (const auto& e : sd)
    CHECK(e.dtype == (e.name.find("num_batches_tracked") != std::string::npos ? DType::I64 : DType::F32));
  CHECK(g->num_parameters() == 3576704);  // torch: sum(p.numel() for p in netG.parameters())
  CHECK(g->main->size() == 14);
}

TEST_CASE("DCGAN discriminator(3, 64, 64): exactly PyTorch's state_dict keys and shapes") {
  // PyTorch: Discriminator.main = Sequential(Conv(3,64,4,2,1), LReLU, Conv(64,128,4,2,1), BN(128),
  // LReLU, Conv(128,256,4,2,1), BN(256), LReLU, Conv(256,512,4,2,1), BN(512), LReLU,
  // Conv(512,1,4,1,0), Sigmoid)
  KeyShapes want;
  want.push_back({"main.0.weight", {64, 3, 4, 4}});
  want.push_back({"main.2.weight", {128, 64, 4, 4}});
  add_bn(want, 3, 128);
  want.push_back({"main.5.weight", {256, 128, 4, 4}});
  add_bn(want, 6, 256);
  want.push_back({"main.8.weight", {512, 256, 4, 4}});
  add_bn(want, 9, 512);
  want.push_back({"main.11.weight", {1, 512, 4, 4}});
  auto d = make_discriminator(3, 64, 64);
  CHECK(key_shapes(d->state_dict()) == want);
  CHECK(d->num_parameters() == 2765568);
  CHECK(d->main->size() == 13);
}

TEST_CASE("DCGAN: 32 and 128 drop / add one stage") {
  auto g32 = make_generator(10, 4, 1, 32);
  auto sd = g32->state_dict();
  CHECK(sd.front().name == "main.0.weight");
  CHECK(sd.front().tensor.shape() == Shape{10, 16, 4, 4});  // starts at 4g
  CHECK(sd.back().name == "main.9.weight");
  CHECK(sd.back().tensor.shape() == Shape{4, 1, 4, 4});
  auto g128 = make_generator(10, 4, 1, 128);
  CHECK(g128->state_dict().front().tensor.shape() == Shape{10, 64, 4, 4});  // starts at 16g
  CHECK(g128->state_dict().back().name == "main.15.weight");
  auto d32 = make_discriminator(1, 4, 32);
  CHECK(d32->state_dict().back().name == "main.8.weight");
  CHECK(d32->state_dict().back().tensor.shape() == Shape{1, 16, 4, 4});  // ends at 4d
  auto d128 = make_discriminator(1, 4, 128);
  CHECK(d128->state_dict().back().name == "main.14.weight");
  CHECK(d128->state_dict().back().tensor.shape() == Shape{1, 64, 4, 4});  // ends at 16d

  CHECK_THROWS_WITH(make_generator(10, 4, 1, 48), Contains("32, 64 or 128") && Contains("48"));
  CHECK_THROWS_WITH(make_discriminator(1, 0, 64), Contains("ndf"));
}

TEST_CASE("DCGAN: forward shapes and ranges for every image size") {
  Generator rng(7);
  for (int size : {32, 64, 128}) {
    INFO("image_size " << size);
    auto g = make_generator(8, 4, 3, size, &rng);
    auto d = make_discriminator(3, 4, size, &rng);
    NoGradGuard ng;
    Tensor img = g->forward(Tensor::randn({2, 8, 1, 1}, &rng));
    REQUIRE(img.shape() == Shape{2, 3, size, size});
    for (float v : img.to_vector()) REQUIRE((v >= -1.f && v <= 1.f));
    Tensor p = d->forward(img);
    REQUIRE(p.shape() == Shape{2});
    for (float v : p.to_vector()) CHECK((v > 0.f && v < 1.f));
    CHECK(g->forward(Tensor::randn({2, 8}, &rng)).shape() == Shape{2, 3, size, size});  // [N, nz]
  }
  auto g = make_generator(8, 4, 3, 32);
  CHECK_THROWS_WITH(g->forward(Tensor::zeros({2, 7, 1, 1})), Contains("[N, 8, 1, 1]") && Contains("[2, 7, 1, 1]"));
  auto d = make_discriminator(3, 4, 32);
  CHECK_THROWS_WITH(d->forward(Tensor::zeros({2, 3, 64, 64})), Contains("[N, 3, 32, 32]"));
}

TEST_CASE("DCGAN: a checkpoint alone rebuilds the models (via a safetensors file)") {
  Generator rng(3);
  auto g = make_generator(12, 4, 3, 64, &rng);
  auto d = make_discriminator(3, 6, 64, &rng);
  // Train mode once so running stats and num_batches_tracked are non-trivial.
  Tensor z = Tensor::randn({3, 12, 1, 1}, &rng);
  d->forward(g->forward(z));
  const std::string gp = tmp_path("G.safetensors"), dp = tmp_path("D.safetensors");
  save_safetensors(gp, g->state_dict(), {{"kind", "dcgan-generator"}});
  save_safetensors(dp, d->state_dict());

  auto g2 = generator_from_state_dict(load_safetensors(gp).tensors);
  auto d2 = discriminator_from_state_dict(load_safetensors(dp).tensors);
  CHECK(g2->nz == 12);
  CHECK(g2->ngf == 4);
  CHECK(g2->nc == 3);
  CHECK(g2->image_size == 64);
  CHECK(d2->ndf == 6);
  CHECK(d2->nc == 3);
  CHECK(d2->image_size == 64);
  CHECK(find_tensor(g2->state_dict(), "main.1.num_batches_tracked")->tensor.item() == 1.f);
  g->eval();
  g2->eval();
  d->eval();
  d2->eval();
  NoGradGuard ng;
  const Tensor a = g->forward(z), b = g2->forward(z);
  CHECK(a.to_vector() == b.to_vector());
  CHECK(d->forward(a).to_vector() == d2->forward(b).to_vector());
}

TEST_CASE("DCGAN: non-DCGAN checkpoints are refused with a clear error") {
  auto g = make_generator(12, 4, 3, 32);
  auto d = make_discriminator(3, 4, 32);
  CHECK_THROWS_WITH(discriminator_from_state_dict(g->state_dict()), Contains("not a DCGAN discriminator") &&
                                                                        Contains("main.3.weight"));
  CHECK_THROWS_WITH(generator_from_state_dict(d->state_dict()), Contains("not a DCGAN generator"));
  CHECK_THROWS_WITH(generator_from_state_dict({}), Contains("not a DCGAN generator") && Contains("found none"));
  StateDict sd = g->state_dict();
  sd.erase(sd.begin() + 1);  // main.1.weight gone
  CHECK_THROWS_WITH(generator_from_state_dict(sd), Contains("nz=12, ngf=4, nc=3, image_size=32") &&
                                                       Contains("missing key(s) (1): \"main.1.weight\""));
  sd = g->state_dict();
  for (auto& e : sd)
    if (e.name == "main.4.running_var") e.tensor = Tensor::ones({5});
  CHECK_THROWS_WITH(generator_from_state_dict(sd), Contains("size mismatch for main.4.running_var"));
}

TEST_CASE("DCGAN discriminator norms: PyTorch's keys for InstanceNorm2d/GroupNorm/Identity; rebuilt from a checkpoint") {
  // PyTorch: the example's D with each BatchNorm2d(c) replaced by nn.InstanceNorm2d(c, affine=True),
  // nn.GroupNorm(1, c) (weight, bias only) or nn.Identity() (nothing).
  auto d_in = make_discriminator(3, 8, 32, nullptr, false, SpectralNormForm::Classic, DiscriminatorNorm::Instance);
  KeyShapes want{{"main.0.weight", {8, 3, 4, 4}}, {"main.2.weight", {16, 8, 4, 4}}, {"main.3.weight", {16}},
                 {"main.3.bias", {16}},         {"main.5.weight", {32, 16, 4, 4}}, {"main.6.weight", {32}},
                 {"main.6.bias", {32}},         {"main.8.weight", {1, 32, 4, 4}}};
  CHECK(key_shapes(d_in->state_dict()) == want);
  CHECK((*d_in->main)[3]->type_name() == "InstanceNorm2d");
  // The example's weights_init matches "BatchNorm" only: these keep weight 1, bias 0.
  CHECK(find_tensor(d_in->state_dict(), "main.3.weight")->tensor.to_vector() == std::vector<float>(16, 1.f));
  auto d_ln = make_discriminator(3, 8, 32, nullptr, false, SpectralNormForm::Classic, DiscriminatorNorm::Layer);
  CHECK(key_shapes(d_ln->state_dict()) == want);
  CHECK((*d_ln->main)[6]->type_name() == "GroupNorm");
  auto d_none = make_discriminator(3, 8, 32, nullptr, true, SpectralNormForm::Classic, DiscriminatorNorm::None);
  CHECK(d_none->main->size() == 10);  // indices kept: Identity in BN's place
  CHECK((*d_none->main)[3]->type_name() == "Identity");
  for (const auto& e : d_none->state_dict()) CHECK(e.name.rfind("main.3.", 0) != 0);

  // From a checkpoint: BN's running statistics, nothing, or an affine pair at main.3.
  CHECK(discriminator_from_state_dict(make_discriminator(3, 8, 32)->state_dict())->norm == DiscriminatorNorm::Batch);
  auto back = discriminator_from_state_dict(d_none->state_dict());
  CHECK(back->norm == DiscriminatorNorm::None);
  CHECK(back->spectral_norm);
  CHECK_THROWS_WITH(discriminator_from_state_dict(d_ln->state_dict()),
                    Contains("InstanceNorm2d(affine=True) or a GroupNorm(1, C)") && Contains("--d-norm instance"));
  CHECK(discriminator_from_state_dict(d_ln->state_dict(), DiscriminatorNorm::Layer)->norm == DiscriminatorNorm::Layer);
  auto in_back = discriminator_from_state_dict(d_in->state_dict(), DiscriminatorNorm::Instance);
  CHECK(in_back->norm == DiscriminatorNorm::Instance);
  Generator rng(5);
  const Tensor x = Tensor::rand({2, 3, 32, 32}, &rng);
  {
    NoGradGuard ng;
    for (auto& [name, p] : d_in->named_parameters())
      if (p.dim() == 1) {  // the norms' weights and biases
        Tensor h = p;
        h.normal_(0.5f, 0.3f, &rng);
      }
  }
  in_back->load_state_dict(d_in->state_dict());
  NoGradGuard ng;
  CHECK(in_back->forward_logits(x).to_vector() == d_in->forward_logits(x).to_vector());
  // The same weights read as layer norm give other scores: the two are not interchangeable.
  auto as_ln = discriminator_from_state_dict(d_in->state_dict(), DiscriminatorNorm::Layer);
  CHECK(as_ln->forward_logits(x).to_vector() != d_in->forward_logits(x).to_vector());
  CHECK(discriminator_norm_from_name("layer") == DiscriminatorNorm::Layer);
  CHECK(std::string(discriminator_norm_name(DiscriminatorNorm::Instance)) == "instance");
  CHECK_THROWS_WITH(discriminator_norm_from_name("group"), Contains("batch, instance, layer or none") && Contains("'group'"));
}

TEST_CASE("sample_latents: randn's values, or N(0, 1) truncated to [-T, T] by redrawing") {
  Generator a(7), b(7);
  const Tensor plain = sample_latents({1000, 100, 1, 1}, a);
  const std::vector<float> ref = Tensor::randn({1000, 100, 1, 1}, &b).to_vector();
  CHECK(plain.to_vector() == ref);
  CHECK(plain.shape() == Shape{1000, 100, 1, 1});

  Generator c(7), c2(7);
  const std::vector<float> t = sample_latents({1000, 100, 1, 1}, c, 0.5f).to_vector();
  CHECK(sample_latents({1000, 100, 1, 1}, c2, 0.5f).to_vector() == t);  // deterministic
  size_t kept = 0, inside = 0;
  double sum = 0, sq = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    REQUIRE(std::fabs(t[i]) <= 0.5f);
    if (std::fabs(ref[i]) <= 0.5f) {  // entries already inside are the first draw's
      ++inside;
      kept += t[i] == ref[i];
    }
    sum += t[i];
    sq += double(t[i]) * t[i];
  }
  CHECK(kept == inside);
  CHECK(inside < t.size() / 2);  // about 38 % of N(0, 1) lies in [-0.5, 0.5]: most were redrawn
  // N(0, 1) restricted to [-T, T] has variance 1 - 2 T phi(T) / (2 Phi(T) - 1) = 0.08056 at
  // T = 0.5; clamping instead would give 0.185, a uniform 0.0833 (100000 values: SE ~0.0002).
  const double n = double(t.size()), mean = sum / n, var = sq / n - mean * mean;
  CHECK(std::fabs(mean) < 0.003);
  CHECK(var == Approx(0.08056).margin(0.0012));
  Generator d(1);
  CHECK_THROWS_WITH(sample_latents({2, 3}, d, -1.f), Contains("truncation must be 0 (off) or positive"));
}

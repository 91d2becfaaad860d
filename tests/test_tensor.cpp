#include <catch2/catch.hpp>

#include <sstream>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gantry/core/autograd.h"
#include "gantry/core/cpu_allocator.h"
#include "gantry/core/ops.h"
#include "gantry/core/random.h"
#include "gantry/core/tensor.h"

using namespace gantry;

TEST_CASE("factories fill shapes and values", "[tensor]") {
  Tensor z = Tensor::zeros({2, 3});
  REQUIRE(z.shape() == Shape{2, 3});
  REQUIRE(z.numel() == 6);
  for (float v : z.to_vector()) REQUIRE(v == 0.f);
  for (float v : Tensor::ones({4}).to_vector()) REQUIRE(v == 1.f);
  for (float v : Tensor::full({2, 2}, 3.5f).to_vector()) REQUIRE(v == 3.5f);
  REQUIRE(Tensor::arange(4).to_vector() == std::vector<float>{0, 1, 2, 3});
  REQUIRE(Tensor::arange(1.f, 2.f, 0.25f).to_vector() == std::vector<float>{1, 1.25f, 1.5f, 1.75f});
  Tensor v = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  REQUIRE(v.at({1, 2}) == 6.f);
  REQUIRE(v.at({0, 1}) == 2.f);
  REQUIRE(v.size(-1) == 3);
  REQUIRE(Tensor::full({}, 7.f).item() == 7.f);
  REQUIRE(Tensor::zeros({2, 1, 1, 1, 3}).dim() == 5);
}

TEST_CASE("bad shapes and indices are clear errors", "[tensor]") {
  REQUIRE_THROWS_WITH(Tensor::zeros({1, 1, 1, 1, 1, 1}), Catch::Contains("up to 5"));
  REQUIRE_THROWS_WITH(Tensor::from_vector({1, 2, 3}, {2, 2}), Catch::Contains("[2, 2]"));
  Tensor t = Tensor::zeros({2, 3});
  REQUIRE_THROWS_WITH(t.at({2, 0}), Catch::Contains("out of range"));
  REQUIRE_THROWS_WITH(t.reshape({4, 2}), Catch::Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(t.item(), Catch::Contains("6 elements"));
  REQUIRE_THROWS(Tensor::arange(0.f, 1.f, 0.f));
  REQUIRE_THROWS_WITH(Device::parse("gpu"), Catch::Contains("cpu, cuda or cuda:N"));
  REQUIRE(Device::parse("cuda:1") == Device::cuda(1));
}

TEST_CASE("reshape shares storage; clone and detach behave", "[tensor]") {
  Tensor a = Tensor::arange(6);
  Tensor b = a.reshape({2, -1});
  REQUIRE(b.shape() == Shape{2, 3});
  b.at({1, 0}) = 42.f;
  REQUIRE(a.at({3}) == 42.f);  // a view: same memory
  Tensor c = a.clone();
  c.at({0}) = -1.f;
  REQUIRE(a.at({0}) == 0.f);  // a copy: its own memory
  Tensor d = a.detach();
  d.at({1}) = 9.f;
  REQUIRE(a.at({1}) == 9.f);
  REQUIRE(Tensor::zeros({2, 3, 4, 5}).flatten().shape() == Shape{2, 60});
  Tensor n = Tensor::arange(12).reshape({4, 3}).narrow0(1, 2);
  REQUIRE(n.shape() == Shape{2, 3});
  REQUIRE(n.to_vector() == std::vector<float>{3, 4, 5, 6, 7, 8});
}

TEST_CASE("Philox generator is reproducible and well distributed", "[random]") {
  Generator g1(123), g2(123), g3(124);
  Tensor a = Tensor::randn({1000}, &g1), b = Tensor::randn({1000}, &g2), c = Tensor::randn({1000}, &g3);
  REQUIRE(a.to_vector() == b.to_vector());
  REQUIRE(a.to_vector() != c.to_vector());
  // A second draw continues the stream rather than repeating it.
  REQUIRE(Tensor::randn({1000}, &g1).to_vector() != a.to_vector());
  // Splitting one fill into two gives different values only through the counter offsets; the
  // state (seed, offset) is enough to resume.
  Generator saved(7);
  (void)Tensor::rand({10}, &saved);
  Generator resumed(0);
  resumed.set_state(saved.seed(), saved.offset());
  REQUIRE(Tensor::rand({10}, &saved).to_vector() == Tensor::rand({10}, &resumed).to_vector());

  Generator big(5);
  Tensor n = Tensor::randn({200000}, &big);
  const float m = mean(n).item();
  const float var = mean(square(n - m)).item();
  REQUIRE(std::abs(m) < 0.01f);
  REQUIRE(std::abs(var - 1.f) < 0.02f);
  Tensor u = Tensor::rand({200000}, &big);
  std::vector<float> uv = u.to_vector();
  REQUIRE(*std::min_element(uv.begin(), uv.end()) >= 0.f);
  REQUIRE(*std::max_element(uv.begin(), uv.end()) < 1.f);
  REQUIRE(std::abs(mean(u).item() - 0.5f) < 0.005f);
  Tensor s = Tensor::zeros({50000}).normal_(3.f, 0.5f, &big);
  REQUIRE(std::abs(mean(s).item() - 3.f) < 0.01f);
}

TEST_CASE("Philox matches the published known-answer vectors", "[random]") {
  // Random123's kat_vectors for philox4x32_10: counter all zero, key all zero.
  uint32_t r[4];
  philox::block(0, 0, r);
  REQUIRE(r[0] == 0x6627e8d5u);
  REQUIRE(r[1] == 0xe169c58du);
  REQUIRE(r[2] == 0xbc57ac4cu);
  REQUIRE(r[3] == 0x9b00dbd8u);
}

TEST_CASE("printing is readable", "[tensor]") {
  std::ostringstream os;
  os << Tensor::from_vector({1, 2, 3, 4}, {2, 2});
  const std::string s = os.str();
  REQUIRE(s.find("shape=[2, 2]") != std::string::npos);
  REQUIRE(s.find("4.0000") != std::string::npos);
  REQUIRE(Tensor::zeros({100}).str().find("...") != std::string::npos);
  REQUIRE(Tensor().str() == "Tensor(undefined)");
}

TEST_CASE("pinned host tensors behave as CPU tensors", "[tensor]") {
  Tensor p = Tensor::empty_pinned({2, 3});
  REQUIRE(p.device().is_cpu());
  REQUIRE(p.impl()->storage->is_pinned() == cuda_available());  // page-locked only with a GPU
  p.fill_(2.f);
  REQUIRE(sum(p).item() == 12.f);
  REQUIRE(p.reshape({6}).at({5}) == 2.f);
}

TEST_CASE("cpu_allocator: large blocks are cached and reused, small ones are not", "[tensor][alloc]") {
  namespace ca = gantry::cpu_allocator;
  const std::size_t old_limit = ca::cache_limit();
  ca::release_cached();
  ca::set_cache_limit(std::size_t(16) << 20);
  const auto aligned = [](void* p, std::uintptr_t a) { return reinterpret_cast<std::uintptr_t>(p) % a == 0; };

  void* small = ca::allocate(1000);
  REQUIRE(aligned(small, 64));
  ca::deallocate(small, 1000);
  REQUIRE(ca::stats().cached_bytes == 0);  // small blocks go straight back to malloc

  const std::size_t mib3 = (std::size_t(3) << 20) + 5;  // not a page multiple
  void* a = ca::allocate(mib3);
  REQUIRE(aligned(a, 64));
  std::memset(a, 0x5a, mib3);  // the whole requested size is usable
  const auto before = ca::stats();
  REQUIRE(before.live_large >= 1);
  ca::deallocate(a, mib3);
  REQUIRE(ca::stats().cached_bytes >= mib3);
  void* b = ca::allocate(mib3);  // same size: the cached block comes back
  REQUIRE(b == a);
  REQUIRE(ca::stats().hits == before.hits + 1);
  REQUIRE(ca::stats().cached_bytes == 0);
  // A request much smaller than the only cached block does not take it (no 2x waste).
  ca::deallocate(b, mib3);
  void* c = ca::allocate(std::size_t(1) << 20);
  REQUIRE(c != b);
  ca::deallocate(c, std::size_t(1) << 20);
  // Huge-page sized blocks are 2 MiB-aligned.
  void* h = ca::allocate(std::size_t(5) << 20);
  REQUIRE(aligned(h, std::size_t(2) << 20));
  ca::deallocate(h, std::size_t(5) << 20);
  // The limit bounds what stays cached; lowering it frees blocks.
  REQUIRE(ca::stats().cached_bytes <= (std::size_t(16) << 20));
  ca::set_cache_limit(std::size_t(4) << 20);
  REQUIRE(ca::stats().cached_bytes <= (std::size_t(4) << 20));
  ca::set_cache_limit(0);
  REQUIRE(ca::stats().cached_bytes == 0);
  void* d = ca::allocate(mib3);
  ca::deallocate(d, mib3);  // limit 0: nothing is kept
  REQUIRE(ca::stats().cached_bytes == 0);
  ca::set_cache_limit(old_limit);
}

TEST_CASE("cpu_allocator: tensors of a repeated shape reuse freed memory", "[tensor][alloc]") {
  namespace ca = gantry::cpu_allocator;
  const std::size_t old_limit = ca::cache_limit();
  ca::set_cache_limit(std::size_t(64) << 20);
  const void* first = nullptr;
  {
    Tensor t = Tensor::zeros({64, 64, 64});  // 1 MiB
    first = t.data();
  }
  const auto hits = ca::stats().hits;
  Tensor u = Tensor::ones({64, 64, 64});
  REQUIRE(u.data() == first);
  REQUIRE(ca::stats().hits == hits + 1);
  const std::vector<float> uv = u.to_vector();  // reused memory is filled like fresh memory
  REQUIRE(std::all_of(uv.begin(), uv.end(), [](float v) { return v == 1.f; }));
  ca::set_cache_limit(old_limit);
}

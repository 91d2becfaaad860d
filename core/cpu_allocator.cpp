#include "gantry/core/cpu_allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <unordered_map>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace gantry::cpu_allocator {

namespace {

constexpr std::size_t kAlign = 64;             // a cache line; what AVX-512 loads like
constexpr std::size_t kLarge = 1u << 20;       // blocks from here on are cached
constexpr std::size_t kHuge = 4u << 20;        // blocks from here on use huge pages
constexpr std::size_t kHugeAlign = 2u << 20;   // the x86-64 huge page

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

std::size_t round_up(std::size_t n, std::size_t a) { return (n + a - 1) / a * a; }

std::size_t limit_from_env() {
  if (kSanitized) return 0;
  const char* env = std::getenv("GANTRY_CPU_CACHE_MB");
  if (!env || !*env) return std::size_t(1) << 30;
  char* end = nullptr;
  const long long mb = std::strtoll(env, &end, 10);
  if (*end != '\0' || mb < 0)
    throw std::invalid_argument(std::string("GANTRY_CPU_CACHE_MB must be a whole number of MiB "
                                            "(0 turns the CPU block cache off), got '") +
                                env + "'");
  return static_cast<std::size_t>(mb) << 20;
}

struct Cache {
  std::mutex mu;
  std::multimap<std::size_t, void*> free_blocks;  // capacity -> block
  std::unordered_map<void*, std::size_t> live;    // large blocks handed out -> capacity
  std::size_t cached = 0, limit = limit_from_env(), hits = 0, misses = 0;

  // Frees the largest free blocks until at most `keep` bytes stay cached. Holds mu.
  void trim(std::size_t keep) {
    while (cached > keep && !free_blocks.empty()) {
      auto it = std::prev(free_blocks.end());
      cached -= it->first;
      std::free(it->second);
      free_blocks.erase(it);
    }
  }
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: tensors may outlive static destructors
  return *c;
}

void* system_alloc(std::size_t cap) {
  const std::size_t align = cap >= kHuge ? kHugeAlign : kAlign;
  void* p = std::aligned_alloc(align, round_up(cap, align));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p && cap >= kHuge) madvise(p, round_up(cap, align), MADV_HUGEPAGE);  // a hint; may fail
#endif
  return p;
}

}  // namespace

void* allocate(std::size_t nbytes) {
  if (nbytes < kLarge) {
    void* p = std::aligned_alloc(kAlign, round_up(nbytes == 0 ? 1 : nbytes, kAlign));
    if (!p) throw std::bad_alloc();
    return p;
  }
  const std::size_t want = round_up(nbytes, 4096);
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free_blocks.lower_bound(want);
    if (it != c.free_blocks.end() && it->first <= want + want / 4) {
      void* p = it->second;
      c.cached -= it->first;
      c.live.emplace(p, it->first);
      c.free_blocks.erase(it);
      ++c.hits;
      return p;
    }
    ++c.misses;
  }
  void* p = system_alloc(want);
  if (!p) {  // the cache may be what holds the memory: give it back and try once more
    release_cached();
    p = system_alloc(want);
    if (!p) throw std::bad_alloc();
  }
  std::lock_guard<std::mutex> lock(c.mu);
  c.live.emplace(p, want);
  return p;
}

void deallocate(void* p, std::size_t nbytes) {
  if (!p) return;
  if (nbytes < kLarge) {  // never cached: no lock on the path every small tensor takes
    std::free(p);
    return;
  }
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.live.find(p);
  if (it == c.live.end()) {  // not from allocate(): nothing sane to cache
    std::free(p);
    return;
  }
  const std::size_t cap = it->second;
  c.live.erase(it);
  if (cap > c.limit) {
    std::free(p);
    return;
  }
  c.free_blocks.emplace(cap, p);
  c.cached += cap;
  c.trim(c.limit);
}

Stats stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  Stats s;
  s.cached_bytes = c.cached;
  s.live_large = c.live.size();
  s.hits = c.hits;
  s.misses = c.misses;
  return s;
}

void release_cached() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.trim(0);
}

void set_cache_limit(std::size_t bytes) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.limit = bytes;
  c.trim(bytes);
}

std::size_t cache_limit() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.limit;
}

}  // namespace gantry::cpu_allocator

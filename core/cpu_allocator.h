#pragma once
// Host memory for CPU tensors, with a cache of large blocks.
//
// A training step frees and re-allocates the same large activations every step. Through plain
// malloc each block of 32 MiB or more (glibc's largest mmap threshold) comes back from the
// kernel as fresh pages: a page fault and a zero-fill per 4 KiB on first touch, ~6% of a
// DCGAN step on the CPU (docs/benchmarks.md). Freed blocks of at least 1 MiB are therefore kept
// and handed out again for requests of the same size (up to 25% larger), much as PyTorch's
// CUDA caching allocator does on the GPU. Blocks of 4 MiB and more are 2 MiB-aligned and
// advised as transparent huge pages (fewer TLB misses in the conv kernels' streams).
//
// The cache holds at most cache_limit() bytes of free blocks (default 1 GiB; the environment
// variable GANTRY_CPU_CACHE_MB overrides it, 0 turns caching off). Builds with AddressSanitizer
// start with caching off, so a use-after-free still reaches ASan. Thread-safe.
#include <cstddef>

namespace gantry::cpu_allocator {

// 64-byte aligned, at least nbytes (nbytes may be 0). Throws std::bad_alloc.
void* allocate(std::size_t nbytes);
// Returns a block from allocate(nbytes) (the same nbytes). Large blocks go to the cache, the
// rest straight to free() without touching the cache's lock.
void deallocate(void* p, std::size_t nbytes);

struct Stats {
  std::size_t cached_bytes = 0;  // free blocks held for reuse
  std::size_t live_large = 0;    // large blocks handed out and not yet returned
  std::size_t hits = 0;          // large requests served from the cache
  std::size_t misses = 0;        // large requests that went to the system
};
Stats stats();
// Frees every cached block (memory goes back to the system).
void release_cached();
// The most bytes of free blocks kept; lowering it frees blocks until the cache fits.
void set_cache_limit(std::size_t bytes);
std::size_t cache_limit();

}  // namespace gantry::cpu_allocator

// gantry's CUDA emulator (tests/cuda_emu/gantry_cuda_emu.h): the runtime API on host memory,
// and the scheduler that runs each block's threads as fibers.
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gantry_cuda_emu.h"

#if defined(__SANITIZE_ADDRESS__)
#define GEMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GEMU_ASAN 1
#endif
#endif
#ifdef GEMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

thread_local uint3 threadIdx{0, 0, 0};
thread_local uint3 blockIdx{0, 0, 0};
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace gemu {
namespace {

// ---- errors -------------------------------------------------------------------------------
thread_local cudaError_t g_last_error = cudaSuccess;

cudaError_t fail(cudaError_t e, const std::string& why) {
  if (std::getenv("GANTRY_EMU_VERBOSE")) std::fprintf(stderr, "gantry-cuda-emu: %s\n", why.c_str());
  g_last_error = e;
  return e;
}

// ---- memory: a registry of device and pinned allocations -----------------------------------
struct Memory {
  std::mutex mu;
  std::map<uintptr_t, std::size_t> device, pinned;  // start -> size
  std::size_t used = 0, used_high = 0, limit = 0;
  Memory() {
    const char* mb = std::getenv("GANTRY_EMU_MEMORY_MB");
    limit = (mb && *mb ? std::strtoull(mb, nullptr, 10) : 4096ull) << 20;
  }
};

Memory& memory() {
  static Memory* m = new Memory();  // never destroyed: tensors may be freed after statics
  return *m;
}

// The allocation of `map` that holds [p, p + n), or map.end().
std::map<uintptr_t, std::size_t>::const_iterator find_range(
    const std::map<uintptr_t, std::size_t>& map, const void* p, std::size_t n) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = map.upper_bound(a);
  if (it == map.begin()) return map.end();
  --it;
  if (a + n > it->first + it->second || (n == 0 && a >= it->first + it->second)) return map.end();
  return it;
}

bool is_device(const void* p, std::size_t n) {
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  return find_range(m.device, p, n) != m.device.end();
}

std::string describe(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

// ---- the stream -------------------------------------------------------------------------------
// As on a GPU, a kernel launch, an async copy from or to pinned memory, a memset and a free
// are queued and return at once; the queue runs, in order, at the next synchronization
// (cudaStreamSynchronize, cudaDeviceSynchronize, cudaEventSynchronize up to the event, a
// blocking cudaMemcpy, a copy into pageable host memory, cudaFreeHost). Host code that reads
// a result, or reuses a pinned buffer, before synchronizing sees what a GPU would let it see.
// GANTRY_EMU_ASYNC=0 runs everything at its call instead.
struct Queue {
  std::recursive_mutex mu;
  struct Op {
    std::function<void()> run;
    bool work;  // device work (a kernel, library call, copy or memset), not bookkeeping
  };
  std::deque<Op> ops;
  uint64_t enqueued = 0, executed = 0;
  bool deferred = true;
  Queue() {
    const char* v = std::getenv("GANTRY_EMU_ASYNC");
    deferred = !(v && std::strcmp(v, "0") == 0);
  }
};

Queue& queue() {
  static Queue* q = new Queue();  // never destroyed: frees may come after statics
  return *q;
}

// Host waits: how often the host stopped for queued device work, by the call that made it
// wait. On a GPU each one is a round trip (the device drains, the host wakes, the device idles
// until the next launch), so a training step should have as few as it has values to read back.
// GANTRY_EMU_STATS=1 prints them at exit (the apps test case host_waits checks dcgan_train's).
// With it, the operations queued are counted too, by kernel, library call or runtime call, and
// in all (device work, without the bookkeeping below: what a step costs in launches).
// GANTRY_EMU_TRACE=1 prints each operation's name as it is queued (what a step launches, in
// order).
struct WaitStats {
  std::mutex mu;
  std::map<std::string, uint64_t> by_call, queued;
  uint64_t total = 0;
  uint64_t work = 0;  // queued operations that are device work, not bookkeeping
};
WaitStats& wait_stats() {
  static WaitStats* w = new WaitStats();
  return *w;
}
void print_wait_stats() {
  WaitStats& w = wait_stats();
  std::lock_guard<std::mutex> lock(w.mu);
  std::string parts;
  for (const auto& [call, n] : w.by_call)
    parts += (parts.empty() ? "" : ", ") + call + " " + std::to_string(n);
  std::fprintf(stderr,
               "gantry-cuda-emu: host waits for queued work: %llu (%s); operations queued: %llu, "
               "device work: %llu\n",
               static_cast<unsigned long long>(w.total), parts.c_str(),
               static_cast<unsigned long long>(queue().enqueued),
               static_cast<unsigned long long>(w.work));
  std::vector<std::pair<uint64_t, std::string>> ops;
  for (const auto& [what, n] : w.queued) ops.emplace_back(n, what);
  std::sort(ops.rbegin(), ops.rend());
  for (const auto& [n, what] : ops)
    std::fprintf(stderr, "gantry-cuda-emu:   queued %8llu  %s\n", static_cast<unsigned long long>(n),
                 what.c_str());
}

bool stats_on() {
  static const bool on = [] {
    const char* v = std::getenv("GANTRY_EMU_STATS");
    const bool yes = v && *v && std::strcmp(v, "0") != 0;
    if (yes) std::atexit(print_wait_stats);
    return yes;
  }();
  return on;
}

// Queues `op` (`what` names it for the statistics).
void enqueue(const char* what, std::function<void()> op) {
  static const bool trace = [] {
    const char* v = std::getenv("GANTRY_EMU_TRACE");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  if (trace) std::fprintf(stderr, "gantry-cuda-emu: queue %s\n", what);
  // Event records and destroys and stream-ordered frees are bookkeeping: a wait behind them
  // alone (a loader thread recording an event for a pinned buffer) costs the device nothing.
  const bool work = std::strcmp(what, "cudaEventRecord") != 0 &&
                    std::strcmp(what, "cudaEventDestroy") != 0 &&
                    std::strcmp(what, "cudaFreeAsync") != 0;
  if (stats_on()) {
    WaitStats& w = wait_stats();
    std::lock_guard<std::mutex> wl(w.mu);
    ++w.queued[what];
    if (work) ++w.work;
  }
  Queue& q = queue();
  std::lock_guard<std::recursive_mutex> lock(q.mu);
  ++q.enqueued;
  if (!q.deferred) {
    op();
    ++q.executed;
    return;
  }
  q.ops.push_back({std::move(op), work});
}

// Runs the queued work up to position `until` (all of it by default); `why` names the call
// that waits, for the statistics.
void flush(const char* why, uint64_t until = UINT64_MAX) {
  Queue& q = queue();
  std::lock_guard<std::recursive_mutex> lock(q.mu);
  if (stats_on()) {  // a wait counts when device work is queued before `until`
    bool work = false;
    const uint64_t pending = until > q.executed ? until - q.executed : 0;
    for (std::size_t i = 0; i < q.ops.size() && i < pending && !work; ++i) work = q.ops[i].work;
    if (work) {
      WaitStats& w = wait_stats();
      std::lock_guard<std::mutex> wl(w.mu);
      ++w.by_call[why];
      ++w.total;
    }
  }
  while (q.executed < until && !q.ops.empty()) {
    std::function<void()> op = std::move(q.ops.front().run);
    q.ops.pop_front();
    op();
    ++q.executed;
  }
}

// ---- fibers -----------------------------------------------------------------------------------
// On x86-64 a fiber switch is 20 instructions (callee-saved registers, the FP control words,
// the stack pointer); elsewhere ucontext, whose swapcontext costs a system call per switch.
#if defined(__x86_64__)
extern "C" void gemu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl gemu_switch
.type gemu_switch,@function
gemu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size gemu_switch, .-gemu_switch
.section .note.GNU-stack,"",@progbits
.text
)");
struct Context {
  void* sp = nullptr;
};
inline void switch_context(Context& from, Context& to) { gemu_switch(&from.sp, to.sp); }
// A fresh stack that "returns" into entry() on the first switch to it: the frame gemu_switch
// pops (FP control words, six registers, the return address), 16-byte aligned at entry.
inline void make_context(Context& c, char* stack, std::size_t size, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t(15);
  auto* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = 0;                                   // entry's return address: it never returns
  *--sp = reinterpret_cast<uint64_t>(entry);   // where gemu_switch's ret goes
  for (int i = 0; i < 6; ++i) *--sp = 0;       // rbp rbx r12 r13 r14 r15
  *--sp = 0x1F80ull | (0x037Full << 32);       // mxcsr, x87 control word: the defaults
  c.sp = sp;
}
#else
struct Context {
  ucontext_t uc;
};
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
inline void make_context(Context& c, char* stack, std::size_t size, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

// ---- the fiber scheduler -------------------------------------------------------------------
enum class State { NotStarted, Running, Runnable, AtBlock, AtWarp, Done };

constexpr std::size_t kStackBytes = 256 << 10;

struct Fiber {
  Context ctx;
  char* stack = nullptr;  // mmap'd, the lowest page a guard
  int thread = -1;        // the emulated thread it runs
};

struct Block {
  int nthreads = 0;
  const std::function<void()>* body = nullptr;
  const char* kernel = "";
  std::vector<State> state;
  std::vector<unsigned> mask;            // the mask a thread waits with (AtWarp)
  std::vector<uint64_t> slot_value;      // [warp][parity][lane]
  std::vector<int64_t> slot_gen;         // the warp generation that wrote the slot
  std::vector<int64_t> warp_gen;         // exchanges completed per warp
  std::vector<int> fiber_of;             // thread -> fiber
  int next_start = 0;
  bool reverse = false;                  // GANTRY_EMU_SCHEDULE=reverse
  std::deque<int> runnable;              // fibers to resume
  std::vector<int> idle;                 // fibers with nothing to run
};

thread_local Context t_scheduler;
thread_local std::vector<std::unique_ptr<Fiber>> t_fibers;  // reused across launches
thread_local Block* t_block = nullptr;
thread_local int t_fiber = -1;   // the fiber running now
thread_local int t_thread = -1;  // the emulated thread running now
#ifdef GEMU_ASAN
thread_local void* t_scheduler_stack_bottom = nullptr;
thread_local std::size_t t_scheduler_stack_size = 0;
#endif

void set_thread_index(int t) {
  t_thread = t;
  const unsigned bx = blockDim.x, by = blockDim.y;
  threadIdx.x = static_cast<unsigned>(t) % bx;
  threadIdx.y = (static_cast<unsigned>(t) / bx) % by;
  threadIdx.z = static_cast<unsigned>(t) / (bx * by);
}

// Switch from a fiber to the scheduler, and back.
void to_scheduler(Fiber& f) {
#ifdef GEMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t_scheduler_stack_bottom, t_scheduler_stack_size);
#endif
  switch_context(f.ctx, t_scheduler);
#ifdef GEMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

void fiber_main() {
#ifdef GEMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, const_cast<const void**>(&t_scheduler_stack_bottom),
                                  &t_scheduler_stack_size);
#endif
  for (;;) {
    Block& b = *t_block;
    while (b.next_start < b.nthreads) {
      const int k = b.next_start++;
      const int t = b.reverse ? b.nthreads - 1 - k : k;
      b.state[t] = State::Running;
      b.fiber_of[t] = t_fiber;
      t_fibers[t_fiber]->thread = t;
      set_thread_index(t);
      (*b.body)();
      b.state[t] = State::Done;
    }
    t_fibers[t_fiber]->thread = -1;
    t_block->idle.push_back(t_fiber);
    to_scheduler(*t_fibers[t_fiber]);  // resumed when a later block needs a fiber
  }
}

void resume(int fiber) {
  Fiber& f = *t_fibers[fiber];
  t_fiber = fiber;
  if (f.thread >= 0) set_thread_index(f.thread);
#ifdef GEMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack + getpagesize(), kStackBytes - getpagesize());
#endif
  switch_context(t_scheduler, f.ctx);
#ifdef GEMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  t_fiber = -1;
}

int new_fiber() {
  auto f = std::make_unique<Fiber>();
  void* mem = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) kernel_fault("mmap of a fiber stack failed");
  f->stack = static_cast<char*>(mem);
  mprotect(f->stack, getpagesize(), PROT_NONE);  // a stack overflow faults instead of corrupting
  make_context(f->ctx, f->stack, kStackBytes, fiber_main);
  t_fibers.push_back(std::move(f));
  return static_cast<int>(t_fibers.size()) - 1;
}

// A thread waits (state s) until the scheduler releases it.
void wait(State s) {
  Block& b = *t_block;
  b.state[t_thread] = s;
  to_scheduler(*t_fibers[t_fiber]);
}

void release(Block& b, int t) {
  b.state[t] = State::Runnable;
  b.runnable.push_back(b.fiber_of[t]);
}

// Releases one warp's exchange when every live lane of its mask has arrived.
bool release_warp(Block& b, int w) {
  const int first = w * 32, last = std::min(first + 32, b.nthreads);
  int waiting = -1;
  for (int t = first; t < last; ++t)
    if (b.state[t] == State::AtWarp) { waiting = t; break; }
  if (waiting < 0) return false;
  const unsigned mask = b.mask[waiting];
  for (int t = first; t < last; ++t) {
    if (!(mask >> (t - first) & 1u) || b.state[t] == State::Done) continue;
    if (b.state[t] != State::AtWarp || b.mask[t] != mask) return false;
  }
  for (int i = first; i < last; ++i) {
    const int t = b.reverse ? first + last - 1 - i : i;
    if (b.state[t] == State::AtWarp && b.mask[t] == mask) release(b, t);
  }
  ++b.warp_gen[w];
  return true;
}

[[noreturn]] void deadlock(const Block& b) {
  int at_block = 0, at_warp = 0, done = 0;
  for (State s : b.state) {
    at_block += s == State::AtBlock;
    at_warp += s == State::AtWarp;
    done += s == State::Done;
  }
  char msg[400];
  std::snprintf(msg, sizeof msg,
                "barrier that can never complete in block (%u,%u,%u): %d thread(s) wait at "
                "__syncthreads, %d in a warp shuffle/__syncwarp, %d exited (a divergent barrier)",
                blockIdx.x, blockIdx.y, blockIdx.z, at_block, at_warp, done);
  kernel_fault(msg);
}

void run_block(Block& b) {
  b.next_start = 0;
  std::fill(b.state.begin(), b.state.end(), State::NotStarted);
  std::fill(b.warp_gen.begin(), b.warp_gen.end(), 0);
  std::fill(b.slot_gen.begin(), b.slot_gen.end(), -1);
  b.runnable.clear();
  b.idle.clear();
  for (int i = 0; i < static_cast<int>(t_fibers.size()); ++i) b.idle.push_back(i);
  for (;;) {
    if (!b.runnable.empty()) {
      const int f = b.runnable.front();
      b.runnable.pop_front();
      b.state[t_fibers[f]->thread] = State::Running;
      resume(f);
      continue;
    }
    if (b.next_start < b.nthreads) {
      int f;
      if (!b.idle.empty()) {
        f = b.idle.back();
        b.idle.pop_back();
      } else {
        f = new_fiber();
      }
      resume(f);
      continue;
    }
    bool released = false, live = false;
    for (int w = 0; w * 32 < b.nthreads; ++w) released |= release_warp(b, w);
    if (released) continue;
    bool all_at_block = true;
    for (int t = 0; t < b.nthreads; ++t) {
      if (b.state[t] == State::Done) continue;
      live = true;
      if (b.state[t] != State::AtBlock) all_at_block = false;
    }
    if (!live) return;
    if (!all_at_block) deadlock(b);
    for (int i = 0; i < b.nthreads; ++i) {
      const int t = b.reverse ? b.nthreads - 1 - i : i;
      if (b.state[t] == State::AtBlock) release(b, t);
    }
  }
}

thread_local const char* t_kernel_name = "";

}  // namespace

PtrKind pointer_kind(const void* p) {
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  if (find_range(m.device, p, 1) != m.device.end()) return PtrKind::Device;
  if (find_range(m.pinned, p, 1) != m.pinned.end()) return PtrKind::Pinned;
  return PtrKind::Other;
}

void kernel_fault(const char* what) {
  std::fprintf(stderr, "gantry-cuda-emu: kernel %s, block (%u,%u,%u), thread (%u,%u,%u): %s\n",
               t_kernel_name, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y,
               threadIdx.z, what);
  std::fflush(stderr);
  std::fflush(stdout);
  // Exit code 3, not abort(): a kernel fault is a test failure with a message, and CTest can
  // match the message (tests/CMakeLists.txt) where a signal would end the test as a crash.
  std::_Exit(3);
}

void set_kernel_name(const char* name) { t_kernel_name = name; }

bool device_range(const void* p, std::size_t n) { return is_device(p, n); }

void library_fault(const char* call, const char* what) {
  std::fprintf(stderr, "gantry-cuda-emu: %s: %s\n", call, what);
  std::fflush(stderr);
  std::fflush(stdout);
  std::_Exit(3);  // as kernel_fault: a failure with a message, not a crash
}

void enqueue_library_work(const char* call, std::function<void()> work) {
  if (t_block) kernel_fault("a library call from inside a kernel (not supported)");
  enqueue(call, std::move(work));
}

namespace {
void execute_grid(dim3 grid, dim3 block, const char* name, const std::function<void()>& body);
}  // namespace

void run_grid(dim3 grid, dim3 block, std::size_t dynamic_smem, cudaStream_t stream,
              std::function<void()> body) {
  // The launch limits of compute capability 9.0: a launch outside them fails with
  // cudaErrorInvalidConfiguration (reported by cudaGetLastError), and runs nothing.
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 ||
      block.z > 64 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535 || dynamic_smem > 48 * 1024) {
    char why[200];
    std::snprintf(why, sizeof why, "launch of %s: invalid configuration grid (%u,%u,%u) block (%u,%u,%u) smem %zu",
                  t_kernel_name, grid.x, grid.y, grid.z, block.x, block.y, block.z, dynamic_smem);
    fail(cudaErrorInvalidConfiguration, why);
    return;
  }
  (void)stream;
  if (t_block) kernel_fault("a kernel launched from inside a kernel (not supported)");
  const char* name = t_kernel_name;
  enqueue(name, [grid, block, name, body = std::move(body)] { execute_grid(grid, block, name, body); });
}

namespace {
void execute_grid(dim3 grid, dim3 block, const char* name, const std::function<void()>& body) {
  t_kernel_name = name;
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  Block b;
  b.nthreads = static_cast<int>(threads);
  b.body = &body;
  b.state.resize(threads);
  b.mask.resize(threads);
  b.fiber_of.assign(threads, -1);
  const int warps = static_cast<int>((threads + 31) / 32);
  b.warp_gen.resize(warps);
  b.slot_value.resize(static_cast<size_t>(warps) * 64);
  b.slot_gen.resize(static_cast<size_t>(warps) * 64);
  t_block = &b;
  gridDim = grid;
  blockDim = block;
  // The order threads (and blocks) run in between barriers: forward (0, 1, 2, ...) or reverse.
  // A kernel that reads shared or global memory another thread writes without a barrier
  // between them gives a wrong answer in one of the two orders.
  static const bool reverse = [] {
    const char* v = std::getenv("GANTRY_EMU_SCHEDULE");
    if (!v || !*v || std::strcmp(v, "forward") == 0) return false;
    if (std::strcmp(v, "reverse") == 0) return true;
    std::fprintf(stderr, "gantry-cuda-emu: GANTRY_EMU_SCHEDULE='%s': use forward or reverse\n", v);
    std::exit(2);
  }();
  b.reverse = reverse;
  const unsigned gx = grid.x, gy = grid.y, gz = grid.z;
  for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
      for (unsigned x = 0; x < gx; ++x) {
        blockIdx = reverse ? uint3{gx - 1 - x, gy - 1 - y, gz - 1 - z} : uint3{x, y, z};
        run_block(b);
      }
  t_block = nullptr;
}
}  // namespace

int lane_id() { return t_thread & 31; }

void sync_block() {
  if (!t_block) kernel_fault("__syncthreads outside a kernel");
  wait(State::AtBlock);
}

namespace {
void check_mask(unsigned mask, const char* what) {
  if (!(mask >> (t_thread & 31) & 1u)) {
    char msg[120];
    std::snprintf(msg, sizeof msg, "%s with mask 0x%08x that leaves out the calling lane %d", what,
                  mask, t_thread & 31);
    kernel_fault(msg);
  }
}
}  // namespace

void sync_warp(unsigned mask) {
  if (!t_block) kernel_fault("__syncwarp outside a kernel");
  check_mask(mask, "__syncwarp");
  t_block->mask[t_thread] = mask;
  wait(State::AtWarp);
}

uint64_t warp_exchange(unsigned mask, uint64_t value, int src_lane, int width) {
  if (!t_block) kernel_fault("a warp shuffle outside a kernel");
  if (width <= 0 || width > 32 || (width & (width - 1))) kernel_fault("shuffle width not a power of 2 <= 32");
  check_mask(mask, "a warp shuffle");
  Block& b = *t_block;
  const int t = t_thread, warp = t >> 5, lane = t & 31;
  const int64_t gen = b.warp_gen[warp];
  const size_t base = (static_cast<size_t>(warp) * 2 + static_cast<size_t>(gen & 1)) * 32;
  b.slot_value[base + lane] = value;
  b.slot_gen[base + lane] = gen;
  b.mask[t] = mask;
  wait(State::AtWarp);
  // A lane that did not take part in this exchange (exited, outside the mask, past the end of
  // the block) gives an undefined value on a GPU: poison it here.
  if (src_lane < 0 || src_lane > 31 || !(mask >> src_lane & 1u) ||
      warp * 32 + src_lane >= b.nthreads || b.slot_gen[base + src_lane] != gen)
    return 0x7fc000007fc00000ull;  // NaN as a float or a double
  return b.slot_value[base + src_lane];
}

}  // namespace gemu

// ---- the runtime API ------------------------------------------------------------------------
using gemu::fail;
using gemu::memory;

struct gemu_stream { unsigned flags = 0; };
struct gemu_event {
  std::chrono::steady_clock::time_point when{};
  bool recorded = false;
  uint64_t position = 0;  // complete once the stream has run this many operations
};
struct gemu_mempool { uint64_t release_threshold = 0; };

namespace {
gemu_mempool g_pool;
thread_local int g_device = 0;

cudaError_t ok() { return cudaSuccess; }
}  // namespace

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue, "cudaGetDeviceCount(nullptr)");
  *count = 1;
  return ok();
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue, "cudaGetDevice(nullptr)");
  *device = g_device;
  return ok();
}
cudaError_t cudaSetDevice(int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice, "cudaSetDevice: the emulator has one device");
  g_device = device;
  return ok();
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (!prop || device != 0) return fail(cudaErrorInvalidDevice, "cudaGetDeviceProperties");
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "gantry CUDA emulator (CPU)");
  prop->totalGlobalMem = memory().limit;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 1;
  prop->l2CacheSize = 1 << 20;
  return ok();
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value || device != 0) return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute");
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(p.sharedMemPerBlock); break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    default: *value = 0; break;
  }
  return ok();
}
cudaError_t cudaDeviceSynchronize() {
  gemu::flush("cudaDeviceSynchronize");
  return ok();
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = gemu::g_last_error;
  gemu::g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return gemu::g_last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorCudartUnloading: return "cudaErrorCudartUnloading";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotReady: return "device not ready";
    default: return cudaGetErrorName(e);
  }
}

cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
  if (!s) return fail(cudaErrorInvalidValue, "cudaStreamCreate(nullptr)");
  *s = new gemu_stream{flags};
  return ok();
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return ok();
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  gemu::flush("cudaStreamSynchronize");
  return ok();
}

cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  if (!e) return fail(cudaErrorInvalidValue, "cudaEventCreate(nullptr)");
  *e = new gemu_event;
  return ok();
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  gemu::enqueue("cudaEventDestroy", [e] { delete e; });  // a pending record still writes it
  return ok();
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord(nullptr)");
  e->recorded = true;
  gemu::enqueue("cudaEventRecord", [e] { e->when = std::chrono::steady_clock::now(); });
  e->position = gemu::queue().enqueued;
  return ok();
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventQuery(nullptr)");
  return gemu::queue().executed >= e->position ? ok() : cudaErrorNotReady;  // not an error
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventSynchronize(nullptr)");
  gemu::flush("cudaEventSynchronize", e->position);
  return ok();
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms || !start || !end || !start->recorded || !end->recorded)
    return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime");
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return ok();
}

// Device memory is host memory, registered so copies and kernels can check their pointers,
// and filled with 0xFF bytes (NaN floats) as a GPU's fresh memory holds garbage.
cudaError_t cudaMallocAsync(void** p, std::size_t n, cudaMemPool_t, cudaStream_t) {
  if (!p) return fail(cudaErrorInvalidValue, "cudaMallocAsync(nullptr)");
  gemu::Memory& m = memory();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (m.used + n > m.limit)
      return fail(cudaErrorMemoryAllocation, "cudaMallocAsync: over GANTRY_EMU_MEMORY_MB");
  }
  // The exact size, so AddressSanitizer (in a sanitized emulator build) flags a kernel that
  // reads or writes one float past the end, as compute-sanitizer's memcheck would.
  void* mem = nullptr;
  if (posix_memalign(&mem, 256, std::max<std::size_t>(n, 1)) != 0)
    return fail(cudaErrorMemoryAllocation, "cudaMallocAsync: host allocation failed");
  std::memset(mem, 0xFF, n);
  std::lock_guard<std::mutex> lock(m.mu);
  m.device[reinterpret_cast<uintptr_t>(mem)] = n;
  m.used += n;
  m.used_high = std::max(m.used_high, m.used);
  *p = mem;
  return ok();
}
cudaError_t cudaMallocAsync(void** p, std::size_t n, cudaStream_t s) {
  return cudaMallocAsync(p, n, &g_pool, s);
}
cudaError_t cudaMalloc(void** p, std::size_t n) { return cudaMallocAsync(p, n, &g_pool, nullptr); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  if (!p) return ok();
  gemu::Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  auto it = m.device.find(reinterpret_cast<uintptr_t>(p));
  if (it == m.device.end())
    return fail(cudaErrorInvalidValue, "cudaFree of " + gemu::describe(p) + ": not a device allocation");
  // Stream-ordered: the pool may hand the memory out again at once (to work queued after
  // this), but work queued before still uses it, so the host memory goes at its turn.
  m.used -= it->second;
  m.device.erase(it);
  gemu::enqueue("cudaFreeAsync", [p] { std::free(p); });
  return ok();
}
cudaError_t cudaFree(void* p) {
  gemu::flush("cudaFree");  // cudaFree synchronizes the device
  return cudaFreeAsync(p, nullptr);
}
cudaError_t cudaMallocHost(void** p, std::size_t n) {
  if (!p) return fail(cudaErrorInvalidValue, "cudaMallocHost(nullptr)");
  void* mem = std::aligned_alloc(4096, (std::max<std::size_t>(n, 1) + 4095) / 4096 * 4096);
  if (!mem) return fail(cudaErrorMemoryAllocation, "cudaMallocHost");
  gemu::Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  m.pinned[reinterpret_cast<uintptr_t>(mem)] = n;
  *p = mem;
  return ok();
}
cudaError_t cudaFreeHost(void* p) {
  if (!p) return ok();
  gemu::flush("cudaFreeHost");  // cudaFreeHost synchronizes the device
  gemu::Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  auto it = m.pinned.find(reinterpret_cast<uintptr_t>(p));
  if (it == m.pinned.end())
    return fail(cudaErrorInvalidValue, "cudaFreeHost of " + gemu::describe(p) + ": not pinned memory");
  m.pinned.erase(it);
  std::free(p);
  return ok();
}
cudaError_t cudaMemGetInfo(std::size_t* free_bytes, std::size_t* total_bytes) {
  gemu::Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  if (free_bytes) *free_bytes = m.limit - m.used;
  if (total_bytes) *total_bytes = m.limit;
  return ok();
}
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device) {
  if (!pool || device != 0) return fail(cudaErrorInvalidValue, "cudaDeviceGetDefaultMemPool");
  *pool = &g_pool;
  return ok();
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  if (!pool || !value) return fail(cudaErrorInvalidValue, "cudaMemPoolSetAttribute");
  gemu::Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  const uint64_t v = *static_cast<uint64_t*>(value);
  switch (attr) {
    case cudaMemPoolAttrReleaseThreshold: pool->release_threshold = v; return ok();
    case cudaMemPoolAttrUsedMemHigh:
    case cudaMemPoolAttrReservedMemHigh:
      if (v != 0) return fail(cudaErrorInvalidValue, "a high-water mark can only be reset to 0");
      m.used_high = m.used;
      return ok();
    default: return fail(cudaErrorInvalidValue, "cudaMemPoolSetAttribute: read-only attribute");
  }
}
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  if (!pool || !value) return fail(cudaErrorInvalidValue, "cudaMemPoolGetAttribute");
  gemu::Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  uint64_t* out = static_cast<uint64_t*>(value);
  switch (attr) {
    case cudaMemPoolAttrReleaseThreshold: *out = pool->release_threshold; return ok();
    case cudaMemPoolAttrReservedMemCurrent:
    case cudaMemPoolAttrUsedMemCurrent: *out = m.used; return ok();
    case cudaMemPoolAttrReservedMemHigh:
    case cudaMemPoolAttrUsedMemHigh: *out = m.used_high; return ok();
    default: *out = 0; return ok();
  }
}
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, std::size_t) {
  return pool ? ok() : fail(cudaErrorInvalidValue, "cudaMemPoolTrimTo(nullptr)");
}

// Copies check what a GPU would reject or fault on: each device side must lie inside one live
// device allocation, each host side outside every device allocation.
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind,
                            cudaStream_t) {
  if (n == 0) return ok();
  if (!dst || !src) return fail(cudaErrorInvalidValue, "cudaMemcpy with a null pointer");
  // Each side: where it starts (device, pinned, pageable), and whether a device side fits.
  const gemu::PtrKind dst_kind = gemu::pointer_kind(dst), src_kind = gemu::pointer_kind(src);
  const bool dst_any = dst_kind == gemu::PtrKind::Device, src_any = src_kind == gemu::PtrKind::Device;
  const bool dst_dev = dst_any && gemu::is_device(dst, n), src_dev = src_any && gemu::is_device(src, n);
  bool good = true;
  switch (kind) {
    case cudaMemcpyHostToDevice: good = dst_dev && !src_any; break;
    case cudaMemcpyDeviceToHost: good = src_dev && !dst_any; break;
    case cudaMemcpyDeviceToDevice: good = src_dev && dst_dev; break;
    case cudaMemcpyHostToHost: good = !src_any && !dst_any; break;
    case cudaMemcpyDefault: good = (dst_dev || !dst_any) && (src_dev || !src_any); break;
  }
  if (!good)
    return fail(cudaErrorInvalidValue, "cudaMemcpy(kind " + std::to_string(kind) + ", " +
                                           std::to_string(n) + " bytes) from " + gemu::describe(src) +
                                           " to " + gemu::describe(dst) +
                                           ": a pointer is on the wrong side or the range "
                                           "overruns its allocation");
  // What returns before the copy is done, as the CUDA runtime documents it: from pageable
  // host memory the source is staged at the call; into pageable host memory the call waits
  // for the copy; pinned host memory and device memory are read and written at the copy's
  // turn in the stream.
  const bool src_pageable = src_kind == gemu::PtrKind::Other;
  const bool dst_pageable = dst_kind == gemu::PtrKind::Other;
  if (dst_pageable) {
    gemu::flush("copy to pageable host memory");
    std::memmove(dst, src, n);
  } else if (src_pageable) {
    auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src),
                                                      static_cast<const char*>(src) + n);
    gemu::enqueue("cudaMemcpyAsync from pageable memory", [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
  } else {
    gemu::enqueue("cudaMemcpyAsync", [dst, src, n] { std::memmove(dst, src, n); });
  }
  return ok();
}
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind) {
  gemu::flush("cudaMemcpy");  // blocking: everything queued before, then the copy, then return
  const cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, nullptr);
  gemu::flush("cudaMemcpy");
  return e;
}
cudaError_t cudaMemcpy2DAsync(void* dst, std::size_t dpitch, const void* src, std::size_t spitch,
                              std::size_t width, std::size_t height, cudaMemcpyKind kind,
                              cudaStream_t s) {
  if (width > dpitch || width > spitch)
    return fail(cudaErrorInvalidValue, "cudaMemcpy2D: width over a pitch");
  for (std::size_t r = 0; r < height; ++r) {
    const cudaError_t e = cudaMemcpyAsync(static_cast<char*>(dst) + r * dpitch,
                                          static_cast<const char*>(src) + r * spitch, width, kind, s);
    if (e != cudaSuccess) return e;
  }
  return ok();
}
cudaError_t cudaMemsetAsync(void* p, int value, std::size_t n, cudaStream_t) {
  if (n == 0) return ok();
  if (!gemu::is_device(p, n))
    return fail(cudaErrorInvalidValue, "cudaMemset of " + std::to_string(n) + " bytes at " +
                                           gemu::describe(p) + ": not inside a device allocation");
  gemu::enqueue("cudaMemsetAsync", [p, value, n] { std::memset(p, value, n); });
  return ok();
}
cudaError_t cudaMemset(void* p, int value, std::size_t n) {
  const cudaError_t e = cudaMemsetAsync(p, value, n, nullptr);
  gemu::flush("cudaMemset");
  return e;
}

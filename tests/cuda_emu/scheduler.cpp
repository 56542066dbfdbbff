// The CUDA emulator's machinery (the model is described in include/genfast_cuda_emu.h): blocks
// run one after another on the calling OS thread; each CUDA thread of a block is a ucontext
// fiber that runs until it reaches a synchronisation point or returns, and the scheduler
// releases a barrier or a warp operation once every thread it waits for is there.
#include "scheduler.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace genfast::emu {
namespace {

constexpr int kWarp = 32;
constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kStaticSharedLimit = 48 * 1024;  // a block's static __shared__ bytes on sm_80+
constexpr unsigned kMaxBlockThreads = 1024;

enum class State { kRunnable, kAtBarrier, kAtWarp, kDone, kFailed };

struct Fiber {
  ucontext_t context;
  void* mapping = nullptr;  // the stack, with an inaccessible guard page below it
  size_t mapping_bytes = 0;
  ThreadIds ids{};
  int linear = 0;
  State state = State::kDone;
  // Where it waits: a __syncthreads, or its post to a warp operation and what it gets back.
  const char* barrier_file = nullptr;
  int barrier_line = 0;
  WarpOp op = WarpOp::kSync;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int source = 0;
  bool predicate = false;
  unsigned ballot = 0;
  std::exception_ptr error;

  Fiber() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    mapping_bytes = kStackBytes + page;
    mapping = mmap(nullptr, mapping_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapping == MAP_FAILED) throw std::bad_alloc();
    mprotect(mapping, page, PROT_NONE);  // an overflowing fiber faults instead of corrupting
    if (getcontext(&context) != 0) throw std::runtime_error("CUDA emulator: getcontext failed");
    context.uc_stack.ss_sp = static_cast<char*>(mapping) + page;
    context.uc_stack.ss_size = kStackBytes;
    context.uc_link = nullptr;
  }
  ~Fiber() { munmap(mapping, mapping_bytes); }
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
};

struct SharedVariable {
  const void* tag;
  size_t bytes;
  std::unique_ptr<unsigned char[]> storage;
};

struct Block {
  const LaunchConfig* config;
  const std::function<void()>* body;
  std::vector<Fiber*> fibers;
  ucontext_t scheduler;
  Fiber* current = nullptr;
  std::vector<SharedVariable> shared;
  size_t shared_bytes = 0;
  uint3 block_idx;
};

thread_local Block* g_block = nullptr;
thread_local std::vector<std::unique_ptr<Fiber>> g_pool;  // fibers reused by every launch

std::mutex g_mutex;  // guards the schedule and the launch record
Order g_order = Order::kForward;
std::mt19937_64 g_random(0);
std::map<std::string, int64_t> g_launches;

[[noreturn]] void fail(const LaunchConfig& config, const std::string& what) {
  std::ostringstream msg;
  msg << "CUDA emulator: " << config.file << ": launch of " << config.kernel << ": " << what;
  throw std::runtime_error(msg.str());
}

std::string hex(unsigned v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

std::string describe(const uint3& t) {
  std::ostringstream s;
  s << "(" << t.x << ", " << t.y << ", " << t.z << ")";
  return s.str();
}

std::string where(const Fiber& f) {
  std::ostringstream s;
  s << "thread " << describe(f.ids.thread_idx);
  switch (f.state) {
    case State::kAtBarrier:
      s << " waits at __syncthreads " << f.barrier_file << ":" << f.barrier_line;
      break;
    case State::kAtWarp: s << " waits at a warp operation with mask " << hex(f.mask); break;
    case State::kDone: s << " has returned"; break;
    default: s << " runs"; break;
  }
  return s.str();
}

Fiber& running() {
  if (g_block == nullptr || g_block->current == nullptr) {
    throw std::logic_error("CUDA emulator: a device built-in was used outside a kernel");
  }
  return *g_block->current;
}

void yield_to_scheduler(Fiber& f) { swapcontext(&f.context, &g_block->scheduler); }

void fiber_entry() {
  Block* block = g_block;
  Fiber* f = block->current;
  try {
    (*block->body)();
    f->state = State::kDone;
  } catch (...) {
    f->error = std::current_exception();
    f->state = State::kFailed;
  }
  swapcontext(&f->context, &block->scheduler);
  std::abort();  // a finished fiber is never resumed
}

std::vector<int64_t> visiting_order(int64_t n) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_order == Order::kReverse) std::reverse(order.begin(), order.end());
  if (g_order == Order::kRandom) std::shuffle(order.begin(), order.end(), g_random);
  return order;
}

// Releases every warp operation whose lanes have all posted it; false when none was waiting.
// Called when no fiber can run, so a lane that has not posted never will: an error.
bool release_warp_operations(Block& b) {
  const int n = static_cast<int>(b.fibers.size());
  bool released = false;
  for (int w0 = 0; w0 < n; w0 += kWarp) {
    for (int k = w0; k < std::min(n, w0 + kWarp); ++k) {
      Fiber& first = *b.fibers[k];
      if (first.state != State::kAtWarp) continue;
      const unsigned mask = first.mask;
      std::vector<Fiber*> lanes;
      for (int lane = 0; lane < kWarp; ++lane) {
        if (!(mask >> lane & 1u)) continue;
        Fiber& other = *b.fibers[w0 + lane];  // posting checked that the lane exists
        if (other.state != State::kAtWarp || other.mask != mask || other.op != first.op) {
          const char* other_op =
              other.state == State::kAtWarp ? " of another operation or mask" : "";
          fail(*b.config, "a warp operation's mask names lane " + std::to_string(lane) +
                              ", which never joins it: " + where(first) + "; " + where(other) +
                              other_op);
        }
        lanes.push_back(&other);
      }
      unsigned ballot = 0;
      for (Fiber* l : lanes) ballot |= (l->predicate ? 1u : 0u) << (l->linear - w0);
      for (Fiber* l : lanes) {
        if (first.op == WarpOp::kShuffle) {
          if (!(mask >> l->source & 1u)) {
            fail(*b.config, where(*l) + " and shuffles from lane " + std::to_string(l->source) +
                                ", which the mask leaves out");
          }
          l->result = b.fibers[w0 + l->source]->value;
        }
        l->ballot = ballot;
      }
      for (Fiber* l : lanes) l->state = State::kRunnable;
      released = true;
    }
  }
  return released;
}

// With no fiber able to run and no warp operation waiting: releases the barrier every live
// thread waits at, or reports why it cannot be reached.
void release_barrier(Block& b) {
  // Threads that returned are not live: the others' barrier completes without them.
  const Fiber* waiting = nullptr;
  for (Fiber* f : b.fibers) {
    if (f->state == State::kDone) continue;
    if (waiting == nullptr) {
      waiting = f;
    } else if (f->barrier_line != waiting->barrier_line ||
               std::string(f->barrier_file) != waiting->barrier_file) {
      fail(*b.config, "threads of block " + describe(b.block_idx) +
                          " wait at different barriers: " + where(*waiting) + "; " + where(*f));
    }
  }
  for (Fiber* f : b.fibers) {
    if (f->state == State::kAtBarrier) f->state = State::kRunnable;
  }
}

void run_block(Block& b) {
  const LaunchConfig& c = *b.config;
  const int n = static_cast<int>(c.block.x * c.block.y * c.block.z);
  while (static_cast<int>(g_pool.size()) < n) g_pool.push_back(std::make_unique<Fiber>());
  b.fibers.clear();
  for (int i = 0; i < n; ++i) {
    Fiber& f = *g_pool[i];
    f.linear = i;
    const unsigned t = static_cast<unsigned>(i);
    f.ids = ThreadIds{uint3{t % c.block.x, t / c.block.x % c.block.y, t / (c.block.x * c.block.y)},
                      b.block_idx, c.block, c.grid};
    f.state = State::kRunnable;
    f.error = nullptr;
    makecontext(&f.context, fiber_entry, 0);
    b.fibers.push_back(&f);
  }
  for (;;) {
    for (int64_t i : visiting_order(n)) {
      Fiber& f = *b.fibers[i];
      if (f.state != State::kRunnable) continue;
      b.current = &f;
      swapcontext(&b.scheduler, &f.context);
      b.current = nullptr;
      if (f.state == State::kFailed) std::rethrow_exception(f.error);
    }
    if (release_warp_operations(b)) continue;
    if (std::all_of(b.fibers.begin(), b.fibers.end(),
                    [](const Fiber* f) { return f->state == State::kDone; })) {
      break;
    }
    release_barrier(b);
  }
}

void check_config(const LaunchConfig& c) {
  const dim3 &g = c.grid, &t = c.block;
  const uint64_t threads = uint64_t{t.x} * t.y * t.z;
  if (threads == 0 || threads > kMaxBlockThreads || t.x > 1024 || t.y > 1024 || t.z > 64) {
    fail(c, "invalid block (" + std::to_string(t.x) + ", " + std::to_string(t.y) + ", " +
                std::to_string(t.z) + ")");
  }
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
    fail(c, "invalid grid (" + std::to_string(g.x) + ", " + std::to_string(g.y) + ", " +
                std::to_string(g.z) + ")");
  }
  if (c.dynamic_smem != 0) fail(c, "dynamic shared memory is not emulated");
}

// "masked_conv.cu:gather_gemm_kernel" for a launch of gather_gemm_kernel<scalar_t, acc_t> in
// csrc/cuda/masked_conv.cu.
std::string kernel_key(const LaunchConfig& c) {
  std::string file = c.file, kernel = c.kernel;
  file = file.substr(file.find_last_of('/') + 1);
  kernel = kernel.substr(0, kernel.find('<'));
  kernel.erase(std::remove(kernel.begin(), kernel.end(), ' '), kernel.end());
  return file + ":" + kernel;
}

}  // namespace

const ThreadIds& current_ids() { return running().ids; }

int lane_id() { return running().linear % kWarp; }

int segment_base(int width) {
  if (width < 1 || width > kWarp || (width & (width - 1)) != 0) {
    fail(*g_block->config, "a shuffle's width must be a power of two up to 32, got " +
                               std::to_string(width));
  }
  return lane_id() & ~(width - 1);
}

void syncthreads(const char* file, int line) {
  Fiber& f = running();
  f.state = State::kAtBarrier;
  f.barrier_file = file;
  f.barrier_line = line;
  yield_to_scheduler(f);
}

unsigned warp_collective(WarpOp op, unsigned mask, uint64_t value, int source, bool predicate,
                         uint64_t* result) {
  Fiber& f = running();
  const int lane = f.linear % kWarp, warp_base = f.linear - lane;
  const int lanes = std::min<int>(kWarp, static_cast<int>(g_block->fibers.size()) - warp_base);
  if (!(mask >> lane & 1u)) {
    fail(*g_block->config, where(f) + " calls a warp operation whose mask " + hex(mask) +
                               " leaves out its own lane " + std::to_string(lane));
  }
  if (lanes < kWarp && (mask >> lanes) != 0) {
    fail(*g_block->config, "a warp operation's mask names lanes beyond the " +
                               std::to_string(lanes) + " this warp has");
  }
  if (op == WarpOp::kShuffle && (source < 0 || source >= kWarp)) {
    fail(*g_block->config, where(f) + " shuffles from lane " + std::to_string(source));
  }
  f.state = State::kAtWarp;
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.source = source;
  f.predicate = predicate;
  yield_to_scheduler(f);
  if (result != nullptr) *result = f.result;
  return f.ballot;
}

void* shared_storage(const void* tag, size_t bytes, size_t align) {
  running();  // only kernels declare shared memory
  Block& b = *g_block;
  for (SharedVariable& v : b.shared) {
    if (v.tag == tag) return v.storage.get();
  }
  b.shared_bytes += bytes;
  if (b.shared_bytes > kStaticSharedLimit) {
    fail(*b.config, "the block declares " + std::to_string(b.shared_bytes) +
                        " bytes of shared memory, more than the 48 KiB of static __shared__");
  }
  if (align > __STDCPP_DEFAULT_NEW_ALIGNMENT__) {
    fail(*b.config, "shared memory aligned to " + std::to_string(align) + " bytes is not emulated");
  }
  SharedVariable v{tag, bytes, std::make_unique<unsigned char[]>(bytes)};
  std::memset(v.storage.get(), 0xFF, bytes);
  b.shared.push_back(std::move(v));
  return b.shared.back().storage.get();
}

void launch(const LaunchConfig& config, const std::function<void()>& body) {
  if (g_block != nullptr) fail(config, "launches from a kernel are not emulated");
  check_config(config);
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    ++g_launches[kernel_key(config)];
  }
  const dim3& g = config.grid;
  Block b;
  b.config = &config;
  b.body = &body;
  struct Reset {
    ~Reset() { g_block = nullptr; }
  } reset;
  g_block = &b;
  for (const int64_t id : visiting_order(int64_t{g.x} * g.y * g.z)) {
    b.block_idx = uint3{static_cast<unsigned>(id % g.x), static_cast<unsigned>(id / g.x % g.y),
                        static_cast<unsigned>(id / (int64_t{g.x} * g.y))};
    b.shared.clear();
    b.shared_bytes = 0;
    run_block(b);
  }
}

void set_schedule(Order order, uint64_t seed) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_order = order;
  g_random.seed(seed);
}

std::map<std::string, int64_t> launches() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_launches;
}

}  // namespace genfast::emu

// The CUDA execution model on the CPU, for the test suite: csrc/cuda/*.cu compiled by g++ with
// this header force-included (-include) runs its kernels on CPU tensors.
//
// What it models (scheduler.cpp holds the machinery):
// - A launch runs its blocks one at a time; within a block every CUDA thread is a fiber on the
//   calling OS thread, so __syncthreads is a real barrier. All live threads of the block must
//   wait at the same __syncthreads (same file and line); a thread that exits, or waits at
//   another barrier or warp operation, while others wait is an error, never a hang.
// - Warps are 32 consecutive linear thread ids. Warp operations (__shfl*_sync, __ballot_sync,
//   __any_sync, __all_sync, __syncwarp) wait until every lane named in the mask has posted the
//   same operation with the same mask; a mask naming a lane the block does not have, a caller
//   missing from its own mask or a shuffle reading a lane outside the mask is an error. A
//   shuffle whose source lane lies outside the caller's segment returns the caller's own value.
// - Shared memory (GENFAST_SHARED in csrc/cuda/launch.cuh) is per block and filled with 0xFF
//   bytes (NaN for floating point, -1 for integers) when each block starts.
// - The order in which threads run between synchronisation points, and the order of the blocks,
//   is forward, reverse or seeded-random (set_schedule), so a missing barrier gives a wrong
//   answer in some order.
// - Device maths maps onto the host's C library, which rounds differently from CUDA's in the
//   last place; atomics are plain read-modify-writes (fibers switch only at synchronisation).
#pragma once

#include <cuda_runtime.h>

#include <math.h>  // the float overloads of fabs, exp, ... in the global namespace, as in CUDA

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// float arguments must keep float maths, as on the device (not widen to double).
static_assert(std::is_same_v<decltype(fabs(1.0f)), float> &&
                  std::is_same_v<decltype(exp(1.0f)), float>,
              "the CUDA emulator needs the float overloads of the maths functions");

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ \
  static_assert(false, "declare shared memory with GENFAST_SHARED (csrc/cuda/launch.cuh)");

namespace genfast::emu {

// ----------------------------------------------------------------------------- thread state

struct ThreadIds {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

// The running fiber's ids; outside a kernel, an error.
const ThreadIds& current_ids();

// ----------------------------------------------------------------------------- synchronisation

void syncthreads(const char* file, int line);

enum class WarpOp : int { kShuffle, kVote, kSync };

// One lane's part of a warp operation: posts what it brings, waits until every lane of mask has
// posted the same operation, then returns. Shuffles read the 8-byte value of lane `source` into
// `result`; votes return the ballot of the lanes' predicates.
unsigned warp_collective(WarpOp op, unsigned mask, uint64_t value, int source, bool predicate,
                         uint64_t* result);

int lane_id();

template <typename T>
T shuffle(unsigned mask, T v, int source) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(uint64_t),
                "shuffles move values of at most 8 bytes");
  uint64_t bits = 0, out = 0;
  std::memcpy(&bits, &v, sizeof(T));
  warp_collective(WarpOp::kShuffle, mask, bits, source, false, &out);
  T r;
  std::memcpy(&r, &out, sizeof(T));
  return r;
}

// The first lane of the caller's segment of `width` lanes (a power of two up to 32).
int segment_base(int width);

// ----------------------------------------------------------------------------- shared memory

// This block's storage for the shared variable `tag`: allocated and poisoned when the first
// thread of the block reaches its declaration.
void* shared_storage(const void* tag, size_t bytes, size_t align);

template <typename T>
T& shared(const void* tag) {
  return *static_cast<T*>(shared_storage(tag, sizeof(T), alignof(T)));
}

// ----------------------------------------------------------------------------- launches

struct LaunchConfig {
  dim3 grid, block;
  size_t dynamic_smem;
  const char* kernel;  // the launch's kernel expression, e.g. "forward_kernel<scalar_t, int>"
  const char* file;
};

// Runs body once per thread of the grid, as a launch does. Throws std::runtime_error with the
// kernel's name for a bad configuration or a synchronisation error.
void launch(const LaunchConfig& config, const std::function<void()>& body);

template <typename... Params>
struct KernelLaunch {
  void (*kernel)(Params...);
  LaunchConfig config;

  // The arguments are converted to the kernel's parameter types once, as a launch copies them;
  // each thread then gets its own copy.
  template <typename... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "wrong number of kernel arguments");
    const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
    launch(config, [&] { std::apply(kernel, params); });
  }
};

template <typename... Params>
KernelLaunch<Params...> make_launch(dim3 grid, dim3 block, size_t smem, cudaStream_t,
                                    void (*kernel)(Params...), const char* name,
                                    const char* file) {
  return KernelLaunch<Params...>{kernel, LaunchConfig{grid, block, smem, name, file}};
}

}  // namespace genfast::emu

// ----------------------------------------------------------------------------- CUDA built-ins

#define threadIdx (::genfast::emu::current_ids().thread_idx)
#define blockIdx (::genfast::emu::current_ids().block_idx)
#define blockDim (::genfast::emu::current_ids().block_dim)
#define gridDim (::genfast::emu::current_ids().grid_dim)
#define warpSize 32

#define __syncthreads() ::genfast::emu::syncthreads(__FILE__, __LINE__)

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::genfast::emu::warp_collective(::genfast::emu::WarpOp::kSync, mask, 0, 0, false, nullptr);
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize) {
  return ::genfast::emu::shuffle(mask, v,
                                 ::genfast::emu::segment_base(width) + (src_lane & (width - 1)));
}

template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  const int lane = ::genfast::emu::lane_id(), base = ::genfast::emu::segment_base(width);
  const int source = lane - static_cast<int>(delta);
  return ::genfast::emu::shuffle(mask, v, source < base ? lane : source);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  const int lane = ::genfast::emu::lane_id(), base = ::genfast::emu::segment_base(width);
  const int source = lane + static_cast<int>(delta);
  return ::genfast::emu::shuffle(mask, v, source >= base + width ? lane : source);
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
  const int lane = ::genfast::emu::lane_id(), base = ::genfast::emu::segment_base(width);
  const int source = lane ^ lane_mask;
  // Lanes of later segments are out of reach; earlier ones can be read.
  return ::genfast::emu::shuffle(mask, v, source >= base + width ? lane : source);
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return ::genfast::emu::warp_collective(::genfast::emu::WarpOp::kVote, mask, 0, 0,
                                         predicate != 0, nullptr);
}

inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }

inline int __all_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, predicate) == mask;
}

inline void __threadfence() {}
inline void __threadfence_block() {}

// Device maths the host library lacks or names differently.
inline void sincospif(float x, float* s, float* c) {
  // sin(pi x) and cos(pi x) in double, rounded once: within CUDA's 1-ulp bound.
  const double a = M_PI * static_cast<double>(x);
  *s = static_cast<float>(std::sin(a));
  *c = static_cast<float>(std::cos(a));
}
inline void sincospi(double x, double* s, double* c) {
  *s = std::sin(M_PI * x);
  *c = std::cos(M_PI * x);
}
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __saturatef(float x) { return fminf(fmaxf(x, 0.0f), 1.0f); }

template <typename T>
T __ldg(const T* p) {
  return *p;
}

template <typename T>
T atomicAdd(T* address, T v) {
  const T old = *address;
  *address = old + v;
  return old;
}

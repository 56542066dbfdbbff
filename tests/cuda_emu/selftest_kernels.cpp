// Small kernels that exercise the CUDA emulator itself, written as CUDA (tests/
// test_cuda_emulator.py holds what each must do): barriers, warp operations, shared-memory
// poisoning, the order threads run in and launch checks. genfast_cuda_emu::emu_selftest runs one.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <stdexcept>
#include <string>

#include "../../csrc/cuda/launch.cuh"

namespace genfast::emu::selftest {
namespace {

// out[t] = thread t+1's shared slot, read after a barrier when `barrier`: with the barrier every
// order reads t + 2, without it some order reads a slot not yet written (poison, -1).
__global__ void neighbour_kernel(int64_t* out, bool barrier) {
  GENFAST_SHARED(int, slots, [1024]);
  const int t = threadIdx.x, n = blockDim.x;
  slots[t] = t + 2;
  if (barrier) __syncthreads();
  out[t] = slots[(t + 1) % n];
}

// Threads below `split` wait at one barrier, the others at another.
__global__ void split_barrier_kernel(int64_t* out, int split) {
  if (static_cast<int>(threadIdx.x) < split) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// Threads below `split` return before the barrier the others wait at.
__global__ void early_return_kernel(int64_t* out, int split) {
  if (static_cast<int>(threadIdx.x) < split) {
    out[threadIdx.x] = 0;
    return;
  }
  __syncthreads();
  out[threadIdx.x] = 1;
}

// Threads below `split` wait at a barrier while the others shuffle with a full mask.
__global__ void barrier_or_shuffle_kernel(int64_t* out, int split) {
  const int t = threadIdx.x;
  if (t < split) {
    __syncthreads();
  } else {
    out[t] = __shfl_down_sync(0xffffffffu, t, 1);
  }
}

// The lanes of `mask` (in every warp) run warp operation `op` on the value 1000 + threadIdx.x;
// the other threads write -1, except for op 9, which every lane calls.
__global__ void warp_kernel(int64_t* out, int op, int arg, int width, unsigned mask) {
  const int t = threadIdx.x;
  const int v = 1000 + t;
  int64_t r = -1;
  if (mask >> (t % 32) & 1u || op == 9) {
    switch (op) {
      case 0: r = __shfl_sync(mask, v, arg, width); break;
      case 1: r = __shfl_up_sync(mask, v, arg, width); break;
      case 2: r = __shfl_down_sync(mask, v, arg, width); break;
      case 3: r = __shfl_xor_sync(mask, v, arg, width); break;
      case 4: r = __ballot_sync(mask, t % arg == 0); break;
      case 5: r = __any_sync(mask, t == arg); break;
      case 6: r = __all_sync(mask, t < arg); break;
      case 7: r = static_cast<int64_t>(__shfl_down_sync(mask, 0.5 + v, arg, width) * 2); break;
      default: __syncwarp(mask); r = v; break;  // 8, and 9 from every lane
    }
  }
  out[blockIdx.x * blockDim.x + t] = r;
}

// Block 0 writes its whole shared array, the other blocks only the first `written` slots; every
// thread reads its own slot after a barrier.
__global__ void poison_kernel(float* out, int written) {
  GENFAST_SHARED(float, slots, [1024]);
  const int t = threadIdx.x;
  if (blockIdx.x == 0 || t < written) slots[t] = static_cast<float>(t);
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = slots[t];
}

// Records the order the threads of the grid ran in (fibers switch only at synchronisation, so
// the plain increment does not race).
__global__ void order_kernel(int64_t* out, int64_t* cursor) {
  out[(*cursor)++] = blockIdx.x * blockDim.x + threadIdx.x;
}

// Declares 8 bytes more than the 48 KiB of static shared memory a block may have.
__global__ void oversized_shared_kernel(int64_t* out) {
  GENFAST_SHARED(double, slots, [6 * 1024 + 1]);
  slots[threadIdx.x] = 1.0;
  out[threadIdx.x] = 1;
}

at::Tensor run(const std::string& name, int64_t blocks, int64_t threads, at::IntArrayRef args) {
  const auto arg = [&](size_t i) {
    TORCH_CHECK(i < args.size(), "emu_selftest ", name, " needs argument ", i);
    return args[i];
  };
  const dim3 grid(static_cast<unsigned>(blocks)), block(static_cast<unsigned>(threads));
  at::Tensor out = at::full({blocks * threads}, -7, at::kLong);
  int64_t* o = out.data_ptr<int64_t>();
  if (name == "neighbour") {
    GENFAST_LAUNCH(grid, block, 0, nullptr, neighbour_kernel)(o, arg(0) != 0);
  } else if (name == "split_barrier") {
    GENFAST_LAUNCH(grid, block, 0, nullptr, split_barrier_kernel)(o, arg(0));
  } else if (name == "early_return") {
    GENFAST_LAUNCH(grid, block, 0, nullptr, early_return_kernel)(o, arg(0));
  } else if (name == "barrier_or_shuffle") {
    GENFAST_LAUNCH(grid, block, 0, nullptr, barrier_or_shuffle_kernel)(o, arg(0));
  } else if (name == "warp") {
    GENFAST_LAUNCH(grid, block, 0, nullptr, warp_kernel)(o, arg(0), arg(1), arg(2),
                                                        static_cast<unsigned>(arg(3)));
  } else if (name == "poison") {
    at::Tensor f = at::full({blocks * threads}, -7.0f, at::kFloat);
    GENFAST_LAUNCH(grid, block, 0, nullptr, poison_kernel)(f.data_ptr<float>(), arg(0));
    return f;
  } else if (name == "order") {
    at::Tensor cursor = at::zeros({1}, at::kLong);
    GENFAST_LAUNCH(grid, block, 0, nullptr, order_kernel)(o, cursor.data_ptr<int64_t>());
  } else if (name == "oversized_shared") {
    GENFAST_LAUNCH(grid, block, 0, nullptr, oversized_shared_kernel)(o);
  } else if (name == "dynamic_shared") {
    GENFAST_LAUNCH(grid, block, 64, nullptr, order_kernel)(o, o);
  } else {
    TORCH_CHECK(false, "emu_selftest: no kernel named ", name);
  }
  return out;
}

}  // namespace
}  // namespace genfast::emu::selftest

TORCH_LIBRARY_FRAGMENT(genfast_cuda_emu, m) {
  m.def("emu_selftest(str name, int blocks, int threads, int[] args) -> Tensor",
        &genfast::emu::selftest::run);
}

// How genfast's CUDA sources launch kernels, declare shared memory, check devices and register
// their ops, spelled so that one source builds two ways:
// - with nvcc, into genfast._C: launches are <<<...>>>, ops register for CUDA tensors;
// - as host C++ under the test suite's CUDA emulator (tests/cuda_emu, GENFAST_CUDA_EMU): each
//   CUDA thread runs as a fiber, shared memory is poisoned per block, and the ops register as
//   genfast_cuda_emu::* for CPU tensors. Nothing of that build ships.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <torch/library.h>

#ifdef GENFAST_CUDA_EMU

// GENFAST_LAUNCH(grid, block, shared_bytes, stream, kernel<T...>)(args...)
#define GENFAST_LAUNCH(grid, block, smem, stream, ...) \
  ::genfast::emu::make_launch(grid, block, smem, stream, &__VA_ARGS__, #__VA_ARGS__, __FILE__)
// GENFAST_SHARED(float, tile, [16][65]) declares __shared__ float tile[16][65].
#define GENFAST_SHARED(type, name, dims)                 \
  static const char genfast_shared_tag_##name = 0;       \
  auto& name = ::genfast::emu::shared<type dims>(&genfast_shared_tag_##name)
#define GENFAST_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(genfast_cuda_emu, CPU, m)

#else

#define GENFAST_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define GENFAST_SHARED(type, name, dims) __shared__ type name dims
#define GENFAST_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(genfast, CUDA, m)

#endif

namespace genfast::cuda {

// The device type the kernels' tensors live on: CUDA, or the CPU under the emulator.
#ifdef GENFAST_CUDA_EMU
constexpr c10::DeviceType kDeviceType = c10::DeviceType::CPU;
#else
constexpr c10::DeviceType kDeviceType = c10::DeviceType::CUDA;
#endif

inline bool on_device(const at::Tensor& t) { return t.device().type() == kDeviceType; }

}  // namespace genfast::cuda

// Small device helpers the CUDA kernels share: the accumulation type of a scalar type (float for
// float16/bfloat16/float32, double for double) and exp/tanh overloaded on it.
#pragma once

#include <type_traits>

namespace genfast::cuda {

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }
__device__ __forceinline__ float tanh_acc(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_acc(double x) { return tanh(x); }

}  // namespace genfast::cuda

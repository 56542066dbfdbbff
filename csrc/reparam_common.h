// Argument checks and output allocation shared by the CPU and CUDA gaussian_sample_kl kernels.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace genfast::reparam {

enum KlMode : int64_t { kNoKl = 0, kElementwiseKl = 1, kSummedKl = 2 };

struct Seed {
  uint64_t key;
  uint64_t offset;
};

// Reads the int64[2] (key, offset) tensor the Python wrapper drew from a torch Generator.
Seed read_seed(const at::Tensor& seed);

// float16 and bfloat16 are computed, and their KL returned, in float32.
at::ScalarType compute_dtype(at::ScalarType dtype);

// z is shaped like mu, or [num_samples, *mu.shape] when num_samples >= 1.
std::vector<int64_t> z_sizes(const at::Tensor& mu, int64_t num_samples);

void check_forward(const at::Tensor& mu, const at::Tensor& logvar,
                   const std::optional<at::Tensor>& eps, const at::Tensor& seed,
                   int64_t num_samples, int64_t kl_mode, c10::DeviceType device);

void check_backward(const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
                    const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
                    const at::Tensor& seed, int64_t num_samples, bool compute_z,
                    int64_t kl_mode, c10::DeviceType device);

// The (z, kl) pair, allocated; empty tensors stand for outputs that were not asked for.
std::pair<at::Tensor, at::Tensor> allocate_outputs(const at::Tensor& mu, int64_t num_samples,
                                                   bool compute_z, int64_t kl_mode);

}  // namespace genfast::reparam

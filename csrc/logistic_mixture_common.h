// Argument checks shared by the CPU and CUDA kernels of the discretized logistic mixture
// (genfast::logistic_mixture_nll and its backward; genfast/ops/logistic_mixture.py).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace genfast::logistic_mixture {

struct Problem {
  int64_t batch;
  int64_t channels;  // C, 1 to 4
  int64_t mixtures;  // M
  int64_t planes;    // P = M * (1 + 2C + C(C - 1) / 2)
  int64_t pixels;    // H * W
  int64_t levels;    // L >= 2
};

// 1 logit, C means, C log scales and C(C - 1) / 2 coefficients per component.
int64_t params_per_mixture(int64_t channels);

// Checks integer images [B, C, H, W] and float params [B, P, H, W] on `device`, and levels.
Problem check_nll_args(const at::Tensor& images, const at::Tensor& params, int64_t levels,
                       c10::DeviceType device);

// The same, and grad_nll [B] (any float dtype) for the backward.
Problem check_backward_args(const at::Tensor& grad_nll, const at::Tensor& images,
                            const at::Tensor& params, int64_t levels, c10::DeviceType device);

// params [B, P, H, W] whose P splits into components of `channels` channels, and levels.
Problem check_sample_args(const at::Tensor& params, int64_t channels, int64_t levels,
                          c10::DeviceType device);

// float64 for float64 params, else float32: the dtype of the NLL and of the computation.
at::ScalarType compute_dtype(at::ScalarType dtype);

// Calls fn.template operator()<index_t>() with the C++ type of the images' integer dtype.
template <typename Fn>
void dispatch_images(const at::Tensor& images, Fn&& fn) {
  switch (images.scalar_type()) {
    case at::kByte: return fn.template operator()<uint8_t>();
    case at::kChar: return fn.template operator()<int8_t>();
    case at::kShort: return fn.template operator()<int16_t>();
    case at::kInt: return fn.template operator()<int32_t>();
    case at::kLong: return fn.template operator()<int64_t>();
    default:
      TORCH_CHECK_TYPE(false, "genfast: images must hold integer levels, got ",
                       images.scalar_type());
  }
}

}  // namespace genfast::logistic_mixture

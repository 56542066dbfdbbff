// The 1 x 1 case of genfast::masked_conv2d on the CPU. A 1 x 1 masked convolution has only the
// centre tap, so no tap can be skipped (the colour rule hides channel pairs, not taps): it is a
// matrix product per image, which the BLAS that torch links runs faster than the gather kernel
// with its pixel-major copies (the Diagonal BiLSTM's input-to-state layer is one).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "masked_conv_common.h"

namespace genfast::masked_conv {

bool is_pointwise(const Geometry& g);

at::Tensor pointwise_forward(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, const Geometry& g);

// (dL/dx, dL/dweight), each empty when output_mask does not ask for it.
std::tuple<at::Tensor, at::Tensor> pointwise_backward(const at::Tensor& grad_y,
                                                      const at::Tensor& x,
                                                      const at::Tensor& weight,
                                                      const Geometry& g,
                                                      std::array<bool, 3> output_mask);

}  // namespace genfast::masked_conv

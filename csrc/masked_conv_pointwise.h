// The 1 x 1 case of genfast::masked_conv2d on the CPU. A 1 x 1 masked convolution has only the
// centre tap, so no tap can be skipped (the colour rule hides channel pairs, not taps): it is a
// matrix product per image, which on an NCHW map runs faster straight off x than the gather
// kernel with its pixel-major copies (the Diagonal BiLSTM's input-to-state layer is one). The
// forward uses conv_tile's register tiles, which give every pixel the same bits in any window;
// the backward uses the BLAS that torch links.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "masked_conv_common.h"

namespace genfast::masked_conv {

bool is_pointwise(const Geometry& g);

// Whether pointwise_forward takes this forward: float32/float64 x with one output pixel per
// image (any layout), or NCHW x whose window holds whole image rows (or one row) and at least
// one SIMD vector of pixels. The gather kernel of masked_conv.cpp runs the others, with the
// same bits.
bool pointwise_forward_applies(const at::Tensor& x, const Geometry& g);

at::Tensor pointwise_forward(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, const Geometry& g);

// Output channels [row0, row0 + rows) only of pointwise_forward, for one pixel per image:
// [B, rows, 1, 1], each value with the bits pointwise_forward gives it (a sampler's output layer
// computing one colour's logits).
at::Tensor pointwise_pixel_rows(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, const Geometry& g,
                                int64_t row0, int64_t rows);

// (dL/dx, dL/dweight), each empty when output_mask does not ask for it.
std::tuple<at::Tensor, at::Tensor> pointwise_backward(const at::Tensor& grad_y,
                                                      const at::Tensor& x,
                                                      const at::Tensor& weight,
                                                      const Geometry& g,
                                                      std::array<bool, 3> output_mask);

}  // namespace genfast::masked_conv

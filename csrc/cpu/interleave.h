// Moves rows between image-major runs and a batch-minor layout, where position l of image b sits
// at column l * nb + b. The Row LSTM's CPU kernel (csrc/lstm_row.cpp) convolves a chunk of nb
// images along the row in that layout: a row of 28 positions for 4 images is then exactly 7
// SIMD vectors, where image after image, each with its zero border, needs 8.
#pragma once
#include <cstdint>

namespace genfast::cpu {

// out[i * out_stride + l * nb + b] = src[b * image_stride + i * row_stride + l]
// for i < rows, b < nb, l < length.
void interleave(const float* src, int64_t image_stride, int64_t row_stride, int64_t rows,
                int64_t nb, int64_t length, float* out, int64_t out_stride);
void interleave(const double* src, int64_t image_stride, int64_t row_stride, int64_t rows,
                int64_t nb, int64_t length, double* out, int64_t out_stride);

// The inverse: out[b * image_stride + i * row_stride + l] = src[i * src_stride + l * nb + b].
void deinterleave(const float* src, int64_t src_stride, int64_t rows, int64_t nb,
                  int64_t length, float* out, int64_t image_stride, int64_t row_stride);
void deinterleave(const double* src, int64_t src_stride, int64_t rows, int64_t nb,
                  int64_t length, double* out, int64_t image_stride, int64_t row_stride);

}  // namespace genfast::cpu

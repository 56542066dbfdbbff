// Batch-minor interleaving: see interleave.h.
#include "interleave.h"

#include <cstring>

#include "kernel_table.h"

namespace genfast::cpu {
namespace {

template <typename T>
void interleave_any(const T* src, int64_t image_stride, int64_t row_stride, int64_t rows,
                    int64_t nb, int64_t length, T* out, int64_t out_stride) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t b = 0; b < nb; ++b) {
      const T* s = src + b * image_stride + i * row_stride;
      T* o = out + i * out_stride + b;
      for (int64_t l = 0; l < length; ++l) o[l * nb] = s[l];
    }
}

template <typename T>
void deinterleave_any(const T* src, int64_t src_stride, int64_t rows, int64_t nb,
                      int64_t length, T* out, int64_t image_stride, int64_t row_stride) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t b = 0; b < nb; ++b) {
      const T* s = src + i * src_stride + b;
      T* o = out + b * image_stride + i * row_stride;
      for (int64_t l = 0; l < length; ++l) o[l] = s[l * nb];
    }
}

}  // namespace

void interleave(const float* src, int64_t image_stride, int64_t row_stride, int64_t rows,
                int64_t nb, int64_t length, float* out, int64_t out_stride) {
  if (nb == 4) {
    kernels().interleave_4(src, image_stride, row_stride, rows, length, out, out_stride);
  } else {
    interleave_any(src, image_stride, row_stride, rows, nb, length, out, out_stride);
  }
}
void interleave(const double* src, int64_t image_stride, int64_t row_stride, int64_t rows,
                int64_t nb, int64_t length, double* out, int64_t out_stride) {
  interleave_any(src, image_stride, row_stride, rows, nb, length, out, out_stride);
}

void deinterleave(const float* src, int64_t src_stride, int64_t rows, int64_t nb,
                  int64_t length, float* out, int64_t image_stride, int64_t row_stride) {
  if (nb == 4) {
    kernels().deinterleave_4(src, src_stride, rows, length, out, image_stride, row_stride);
  } else {
    deinterleave_any(src, src_stride, rows, nb, length, out, image_stride, row_stride);
  }
}
void deinterleave(const double* src, int64_t src_stride, int64_t rows, int64_t nb,
                  int64_t length, double* out, int64_t image_stride, int64_t row_stride) {
  deinterleave_any(src, src_stride, rows, nb, length, out, image_stride, row_stride);
}

}  // namespace genfast::cpu

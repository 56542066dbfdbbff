// Batch-minor interleaving: see interleave.h.
#include "interleave.h"

#include <cstring>

#include "simd_math.h"

namespace genfast::cpu {
namespace {

typedef float v4 __attribute__((vector_size(16)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v16 __attribute__((vector_size(64)));

// [a b c d] (4 positions of 4 images, image-major) <-> [a0 b0 c0 d0 a1 b1 ...] (batch-minor): the
// same permutation both ways, a 4 x 4 transpose.
GENFAST_SIMD_INLINE v16 transpose_4x4(v16 x) {
  return __builtin_shufflevector(x, x, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
}

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

// Four images, four positions at a time; the last (length % 4) positions one by one.
GENFAST_TARGET_CLONES
void interleave_4(const float* src, int64_t image_stride, int64_t row_stride, int64_t rows,
                  int64_t length, float* out, int64_t out_stride) {
  const int64_t whole = length / 4 * 4;
  for (int64_t i = 0; i < rows; ++i) {
    const float* s = src + i * row_stride;
    float* o = out + i * out_stride;
    for (int64_t l = 0; l < whole; l += 4) {
      v4 a, b, c, d;
      std::memcpy(&a, s + l, sizeof(v4));
      std::memcpy(&b, s + image_stride + l, sizeof(v4));
      std::memcpy(&c, s + 2 * image_stride + l, sizeof(v4));
      std::memcpy(&d, s + 3 * image_stride + l, sizeof(v4));
      const v8 ab = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7);
      const v8 cd = __builtin_shufflevector(c, d, 0, 1, 2, 3, 4, 5, 6, 7);
      const v16 x = transpose_4x4(__builtin_shufflevector(ab, cd, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                          10, 11, 12, 13, 14, 15));
      std::memcpy(o + l * 4, &x, sizeof(v16));
    }
    for (int64_t l = whole; l < length; ++l)
      for (int64_t b = 0; b < 4; ++b) o[l * 4 + b] = s[b * image_stride + l];
  }
}

GENFAST_TARGET_CLONES
void deinterleave_4(const float* src, int64_t src_stride, int64_t rows, int64_t length,
                    float* out, int64_t image_stride, int64_t row_stride) {
  const int64_t whole = length / 4 * 4;
  for (int64_t i = 0; i < rows; ++i) {
    const float* s = src + i * src_stride;
    float* o = out + i * row_stride;
    for (int64_t l = 0; l < whole; l += 4) {
      v16 x;
      std::memcpy(&x, s + l * 4, sizeof(v16));
      x = transpose_4x4(x);
      const v4 a = __builtin_shufflevector(x, x, 0, 1, 2, 3);
      const v4 b = __builtin_shufflevector(x, x, 4, 5, 6, 7);
      const v4 c = __builtin_shufflevector(x, x, 8, 9, 10, 11);
      const v4 d = __builtin_shufflevector(x, x, 12, 13, 14, 15);
      std::memcpy(o + l, &a, sizeof(v4));
      std::memcpy(o + image_stride + l, &b, sizeof(v4));
      std::memcpy(o + 2 * image_stride + l, &c, sizeof(v4));
      std::memcpy(o + 3 * image_stride + l, &d, sizeof(v4));
    }
    for (int64_t l = whole; l < length; ++l)
      for (int64_t b = 0; b < 4; ++b) o[b * image_stride + l] = s[l * 4 + b];
  }
}

}  // namespace

void interleave(const float* src, int64_t image_stride, int64_t row_stride, int64_t rows,
                int64_t nb, int64_t length, float* out, int64_t out_stride) {
  if (nb == 4) {
    interleave_4(src, image_stride, row_stride, rows, length, out, out_stride);
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
    deinterleave_4(src, src_stride, rows, length, out, image_stride, row_stride);
  } else {
    deinterleave_any(src, src_stride, rows, nb, length, out, image_stride, row_stride);
  }
}
void deinterleave(const double* src, int64_t src_stride, int64_t rows, int64_t nb,
                  int64_t length, double* out, int64_t image_stride, int64_t row_stride) {
  deinterleave_any(src, src_stride, rows, nb, length, out, image_stride, row_stride);
}

}  // namespace genfast::cpu

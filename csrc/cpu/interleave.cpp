// Batch-minor interleaving: see interleave.h.
#include "interleave.h"

#include <cstring>

#include "simd_math.h"

namespace genfast::cpu {
namespace {

typedef float vfloat4 __attribute__((vector_size(16)));

// Four positions of four images, image-major, <-> the batch-minor order (position l of image b
// at 4 l + b) of one 16-float vector: a 4 x 4 transpose, its own inverse.
GENFAST_SIMD_INLINE simd::vfloat transpose_4x4(simd::vfloat x) {
  return __builtin_shufflevector(x, x, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
}

// p[b * image_stride + k] for b, k < 4, batch-minor.
GENFAST_SIMD_INLINE simd::vfloat load_batch_minor4(const float* p, int64_t image_stride) {
  typedef float vfloat8 __attribute__((vector_size(32)));
  vfloat4 a, b, c, d;
  std::memcpy(&a, p, sizeof a);
  std::memcpy(&b, p + image_stride, sizeof b);
  std::memcpy(&c, p + 2 * image_stride, sizeof c);
  std::memcpy(&d, p + 3 * image_stride, sizeof d);
  const vfloat8 ab = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7);
  const vfloat8 cd = __builtin_shufflevector(c, d, 0, 1, 2, 3, 4, 5, 6, 7);
  return transpose_4x4(__builtin_shufflevector(ab, cd, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                               13, 14, 15));
}

// The inverse: v's batch-minor values to p[b * image_stride + k].
GENFAST_SIMD_INLINE void store_image_major4(float* p, int64_t image_stride, simd::vfloat v) {
  const simd::vfloat t = transpose_4x4(v);
  const vfloat4 a = __builtin_shufflevector(t, t, 0, 1, 2, 3);
  const vfloat4 b = __builtin_shufflevector(t, t, 4, 5, 6, 7);
  const vfloat4 c = __builtin_shufflevector(t, t, 8, 9, 10, 11);
  const vfloat4 d = __builtin_shufflevector(t, t, 12, 13, 14, 15);
  std::memcpy(p, &a, sizeof a);
  std::memcpy(p + image_stride, &b, sizeof b);
  std::memcpy(p + 2 * image_stride, &c, sizeof c);
  std::memcpy(p + 3 * image_stride, &d, sizeof d);
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
    for (int64_t l = 0; l < whole; l += 4)
      simd::store(o + l * 4, load_batch_minor4(s + l, image_stride));
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
    for (int64_t l = 0; l < whole; l += 4)
      store_image_major4(o + l, image_stride, simd::load(s + l * 4));
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

// Four positions of four images between image-major runs and the batch-minor order (position l
// of image b at 4 l + b) of one 16-float vector: a 4 x 4 transpose, its own inverse. Shared by
// the interleaving copies (interleave.cpp) and the Row LSTM's cell maths (lstm_cell.cpp), which
// read and write the tensors this way for chunks of 4 images.
#pragma once
#include <cstdint>
#include <cstring>

#include "simd_math.h"

namespace genfast::cpu {

typedef float vfloat4 __attribute__((vector_size(16)));

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

}  // namespace genfast::cpu

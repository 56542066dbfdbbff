// Batch-minor interleaving of four images (csrc/cpu/interleave.h) at this ISA level: four
// positions of four images are one 16-float block, moved by a 4 x 4 transpose. Sixteen floats
// are one AVX-512 register, two AVX2 ones, four SSE ones.
#pragma once
#include <cstring>

#include "vector_math.h"

namespace genfast::cpu::GENFAST_ISA_NS::interleave {

typedef float vfloat16 __attribute__((vector_size(64)));
GENFAST_SIMD_INLINE vfloat16 load16(const float* p) {
  vfloat16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
GENFAST_SIMD_INLINE void store16(float* p, vfloat16 v) { std::memcpy(p, &v, sizeof v); }

typedef float vfloat4 __attribute__((vector_size(16)));

// Four positions of four images, image-major, <-> the batch-minor order (position l of image b
// at 4 l + b) of one 16-float vector: a 4 x 4 transpose, its own inverse.
GENFAST_SIMD_INLINE vfloat16 transpose_4x4(vfloat16 x) {
  return __builtin_shufflevector(x, x, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
}

// p[b * image_stride + k] for b, k < 4, batch-minor.
GENFAST_SIMD_INLINE vfloat16 load_batch_minor4(const float* p, int64_t image_stride) {
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
GENFAST_SIMD_INLINE void store_image_major4(float* p, int64_t image_stride, vfloat16 v) {
  const vfloat16 t = transpose_4x4(v);
  const vfloat4 a = __builtin_shufflevector(t, t, 0, 1, 2, 3);
  const vfloat4 b = __builtin_shufflevector(t, t, 4, 5, 6, 7);
  const vfloat4 c = __builtin_shufflevector(t, t, 8, 9, 10, 11);
  const vfloat4 d = __builtin_shufflevector(t, t, 12, 13, 14, 15);
  std::memcpy(p, &a, sizeof a);
  std::memcpy(p + image_stride, &b, sizeof b);
  std::memcpy(p + 2 * image_stride, &c, sizeof c);
  std::memcpy(p + 3 * image_stride, &d, sizeof d);
}

// Four images, four positions at a time; the last (length % 4) positions one by one.
void interleave_4(const float* src, int64_t image_stride, int64_t row_stride, int64_t rows,
                  int64_t length, float* out, int64_t out_stride) {
  const int64_t whole = length / 4 * 4;
  for (int64_t i = 0; i < rows; ++i) {
    const float* s = src + i * row_stride;
    float* o = out + i * out_stride;
    for (int64_t l = 0; l < whole; l += 4)
      store16(o + l * 4, load_batch_minor4(s + l, image_stride));
    for (int64_t l = whole; l < length; ++l)
      for (int64_t b = 0; b < 4; ++b) o[l * 4 + b] = s[b * image_stride + l];
  }
}

void deinterleave_4(const float* src, int64_t src_stride, int64_t rows, int64_t length,
                    float* out, int64_t image_stride, int64_t row_stride) {
  const int64_t whole = length / 4 * 4;
  for (int64_t i = 0; i < rows; ++i) {
    const float* s = src + i * src_stride;
    float* o = out + i * row_stride;
    for (int64_t l = 0; l < whole; l += 4)
      store_image_major4(o + l, image_stride, load16(s + l * 4));
    for (int64_t l = whole; l < length; ++l)
      for (int64_t b = 0; b < 4; ++b) o[b * image_stride + l] = s[l * 4 + b];
  }
}


// acc[j] += x[j] for j < n.
void add_to(float* __restrict acc, const float* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] += x[j];
}

}  // namespace genfast::cpu::GENFAST_ISA_NS::interleave

// Float32 2-D transpose in 8x8 register blocks: the NCHW <-> pixel-major moves of the CPU
// convolutions, which a plain strided loop does one element at a time. Eight floats are one
// AVX2 register, two SSE ones, half an AVX-512 one: the 8x8 block suits every level.
#pragma once
#include <algorithm>

#include "vector_math.h"

namespace genfast::cpu::GENFAST_ISA_NS {
namespace transpose_blocks {

typedef float v8 __attribute__((vector_size(32)));

// In-register 8x8 transpose in three rounds of two-input shuffles (pairs, quads, halves).
GENFAST_SIMD_INLINE void transpose_8x8(const float* src, int64_t src_stride, float* dst,
                                       int64_t dst_stride) {
  v8 r[8], t[8], s[8];
  for (int k = 0; k < 8; ++k) std::memcpy(&r[k], src + k * src_stride, sizeof(v8));
  for (int k = 0; k < 8; k += 2) {
    t[k] = __builtin_shufflevector(r[k], r[k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[k + 1] = __builtin_shufflevector(r[k], r[k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int k = 0; k < 8; k += 4) {
    for (int h = 0; h < 2; ++h) {
      s[k + 2 * h] = __builtin_shufflevector(t[k + h], t[k + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      s[k + 2 * h + 1] = __builtin_shufflevector(t[k + h], t[k + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  }
  for (int k = 0; k < 4; ++k) {
    v8 lo = __builtin_shufflevector(s[k], s[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    v8 hi = __builtin_shufflevector(s[k], s[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    std::memcpy(dst + k * dst_stride, &lo, sizeof(v8));
    std::memcpy(dst + (k + 4) * dst_stride, &hi, sizeof(v8));
  }
}

}  // namespace transpose_blocks

void transpose(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
               int64_t rows, int64_t cols) {
  if (rows < 8 || cols < 8) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) dst[c * dst_stride + r] = src[r * src_stride + c];
    return;
  }
  // Ragged edges take one more 8x8 block flush with the end, overlapping the one before it: a
  // copy may write a value twice, and a scalar loop over the edges cost as much as all the
  // blocks (its stores go one per cache line).
  for (int64_t r0 = 0; r0 < rows; r0 += 8) {
    const int64_t r = std::min(r0, rows - 8);
    for (int64_t c0 = 0; c0 < cols; c0 += 8) {
      const int64_t c = std::min(c0, cols - 8);
      transpose_blocks::transpose_8x8(src + r * src_stride + c, src_stride,
                                      dst + c * dst_stride + r, dst_stride);
    }
  }
}

}  // namespace genfast::cpu::GENFAST_ISA_NS

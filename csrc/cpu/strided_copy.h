// Copies a 2-D block between strided layouts with a dtype conversion, walking whichever side is
// contiguous in the inner loop. The CPU convolutions use it to move rows of an image between the
// caller's layout (NCHW or channels_last, any dtype) and their own pixel-major buffers.
#pragma once
#include <cstdint>

namespace genfast::cpu {

template <typename Src, typename Dst>
void copy_2d(const Src* src, int64_t src_i, int64_t src_j, Dst* dst, int64_t dst_i,
             int64_t dst_j, int64_t ni, int64_t nj) {
  // Put the unit-stride side of the source in the inner loop, unless the destination wants it.
  const bool swap = src_j != 1 && (src_i == 1 || dst_i == 1);
  if (swap) {
    for (int64_t j = 0; j < nj; ++j)
      for (int64_t i = 0; i < ni; ++i)
        dst[i * dst_i + j * dst_j] = static_cast<Dst>(src[i * src_i + j * src_j]);
  } else {
    for (int64_t i = 0; i < ni; ++i)
      for (int64_t j = 0; j < nj; ++j)
        dst[i * dst_i + j * dst_j] = static_cast<Dst>(src[i * src_i + j * src_j]);
  }
}

}  // namespace genfast::cpu

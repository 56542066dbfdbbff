// Copies a 2-D block between strided layouts with a dtype conversion. The CPU convolutions use it
// to move image rows between the caller's layout (NCHW or channels_last, any dtype) and their own
// pixel-major buffers, which for NCHW is a transpose: that case goes in 16 x 16 blocks, so the
// lines of both sides stay in L1 while a block is read and written.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "transpose.h"

namespace genfast::cpu {

template <typename Src, typename Dst>
void copy_2d(const Src* src, int64_t src_i, int64_t src_j, Dst* dst, int64_t dst_i,
             int64_t dst_j, int64_t ni, int64_t nj) {
  if (src_j == 1 && dst_j == 1) {
    for (int64_t i = 0; i < ni; ++i)
      for (int64_t j = 0; j < nj; ++j) dst[i * dst_i + j] = static_cast<Dst>(src[i * src_i + j]);
    return;
  }
  if (src_i == 1 && dst_i == 1) {
    for (int64_t j = 0; j < nj; ++j)
      for (int64_t i = 0; i < ni; ++i) dst[i + j * dst_j] = static_cast<Dst>(src[i + j * src_j]);
    return;
  }
  if constexpr (std::is_same_v<Src, float> && std::is_same_v<Dst, float>) {
    if (src_i == 1 && dst_j == 1) {  // src holds j-rows of i, dst i-rows of j
      transpose(src, src_j, dst, dst_i, nj, ni);
      return;
    }
    if (src_j == 1 && dst_i == 1) {
      transpose(src, src_i, dst, dst_j, ni, nj);
      return;
    }
  }
  constexpr int64_t kBlock = 16;
  for (int64_t i0 = 0; i0 < ni; i0 += kBlock) {
    const int64_t i1 = std::min(ni, i0 + kBlock);
    for (int64_t j0 = 0; j0 < nj; j0 += kBlock) {
      const int64_t j1 = std::min(nj, j0 + kBlock);
      if (dst_j == 1) {
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = j0; j < j1; ++j)
            dst[i * dst_i + j] = static_cast<Dst>(src[i * src_i + j * src_j]);
      } else {
        for (int64_t j = j0; j < j1; ++j)
          for (int64_t i = i0; i < i1; ++i)
            dst[i * dst_i + j * dst_j] = static_cast<Dst>(src[i * src_i + j * src_j]);
      }
    }
  }
}

}  // namespace genfast::cpu

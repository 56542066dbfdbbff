// Float32 2-D transpose in 8x8 register blocks: the NCHW <-> pixel-major moves of the CPU
// convolutions, which a plain strided loop does one element at a time.
#pragma once
#include <cstdint>

namespace genfast::cpu {

// dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows, c < cols.
void transpose(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
               int64_t rows, int64_t cols);

}  // namespace genfast::cpu

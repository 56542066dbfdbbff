// Shared by the CUDA kernels of genfast::masked_conv2d (masked_conv.cu: forward and grad-input;
// masked_conv_weight_grad.cu: grad-weight): the tile shape, the padded-buffer layout, the centre
// tap's colour rule on the device, and the register-tile step. See masked_conv.cu for the design.
#pragma once
#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../masked_conv_common.h"

namespace genfast::masked_conv::gpu {

constexpr int kThreads = 256;
constexpr int kTileM = 64;  // output rows of a block's tile (pixels, or k for grad-weight)
constexpr int kTileN = 64;  // output columns of a block's tile (channels)
constexpr int kTileK = 16;  // reduction chunk staged in shared memory
constexpr int kPer = 4;     // each thread computes kPer x kPer outputs, 16 apart in each direction
// The gather kernel's A tile is written with lanes along k: a row pitch of 66 spreads a warp's
// 16 k values x 2 pixels over all 32 banks.
constexpr int kPadA = 2;
// Grad-weight: aim for about this many blocks by splitting the pixel sum, but give each part at
// least kMinChunksPerSplit chunks of kTileK pixels. Constants, so the split is GPU-independent.
constexpr int64_t kTargetBlocks = 1024;
constexpr int64_t kMinChunksPerSplit = 8;
constexpr int64_t kMaxElementwiseBlocks = 4096;

static_assert(kTileM == kPer * 16 && kTileN == kPer * 16 && kThreads == 256,
              "a 16 x 16 thread grid covers the tile");

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Which channel pairs the centre tap carries (Geometry::centre_allows, on the device).
struct CentreRule {
  int64_t in_channels, out_channels, data_channels;
  int64_t mask_type;
  int64_t centre_tap;  // index of the centre among the visible taps, or -1 when it is hidden

  __device__ __forceinline__ bool hides(int64_t tap, int64_t ci, int64_t co) const {
    if (tap != centre_tap) return false;
    const int64_t gi = ci * data_channels / in_channels, go = co * data_channels / out_channels;
    return mask_type == kMaskA ? !(gi < go) : !(gi <= go);
  }
};

// The padded pixel-major buffers P and Q, as the CPU kernels lay them out (masked_conv_common.h).
using Layout = PaddedBuffers;

// acc[i][j] += sum over the staged chunk's kk of a[kk][ta + 16 i] * b[kk][tb + 16 j]: one thread's
// kPer x kPer register tile, shared by the convolution and the grad-weight kernels.
template <typename acc_t, int kWidthA, int kWidthB>
__device__ __forceinline__ void multiply_chunk(acc_t (&acc)[kPer][kPer],
                                               const acc_t (&a)[kTileK][kWidthA],
                                               const acc_t (&b)[kTileK][kWidthB], int ta, int tb) {
#pragma unroll
  for (int kk = 0; kk < kTileK; ++kk) {
    acc_t av[kPer], bv[kPer];
#pragma unroll
    for (int i = 0; i < kPer; ++i) av[i] = a[kk][ta + 16 * i];
#pragma unroll
    for (int j = 0; j < kPer; ++j) bv[j] = b[kk][tb + 16 * j];
#pragma unroll
    for (int i = 0; i < kPer; ++i)
#pragma unroll
      for (int j = 0; j < kPer; ++j) acc[i][j] += av[i] * bv[j];
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline unsigned elementwise_blocks(int64_t n) {
  return static_cast<unsigned>(std::clamp<int64_t>(ceil_div(n, kThreads), 1, kMaxElementwiseBlocks));
}

inline CentreRule centre_rule(const Geometry& g) {
  const bool has_centre = !g.taps.empty() && g.taps.back().centre;
  return CentreRule{g.in_channels, g.out_channels, g.data_channels, g.mask_type,
                    has_centre ? static_cast<int64_t>(g.taps.size()) - 1 : -1};
}

// dL/dweight into gw (zeroed), in masked_conv_weight_grad.cu: P is the padded input, gbuf grad_y
// pixel-major with pixel (0, 0) at (g_r0, g_c0) of a g_h x g_w buffer.
template <typename scalar_t>
void grad_weight_impl(const at::Tensor& gw, const at::Tensor& p, const at::Tensor& gbuf,
                      int64_t g_h, int64_t g_w, int64_t g_r0, int64_t g_c0, const Geometry& g,
                      const Layout& l, cudaStream_t stream);

}  // namespace genfast::masked_conv::gpu

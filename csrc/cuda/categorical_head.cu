// CUDA kernels of genfast::categorical_head_nll: an autoregressive model's last 1x1 mask-B
// layer, the log-softmax over the levels and the NLL of the images, with each image's
// gradients computed in the same pass (genfast/ops/categorical_head.py has the maths; same
// semantics as csrc/categorical_head.cpp).
//
// The images run in chunks whose logits fit a 16 MiB workspace (kWorkspaceElements), so the
// whole batch's logits never exist at once. Per chunk, four grid-stride SIMT kernels:
//   logits:   z[pixel][o] = bias[o] + sum over visible k of w[o][k] x[k][pixel]
//   softmax:  one warp per (pixel, colour): max, sum of exp, the NLL, then z turned into
//             G = softmax - onehot(target) in place when gradients are asked for
//   grad_x:   grad_features[k][pixel] = sum over visible o of G[pixel][o] w[o][k]
//   grad_w:   grad_weight[b][o][k] = sum over the image's pixels of G[pixel][o] x[k][pixel],
//             grad_bias[b][o] = sum of G[pixel][o] (the column k = Cin)
// "Visible" is mask B with the colour groups: output o's group >= input k's group. Plain FP32
// (FP64) loops, no tensor cores: auto keeps the reference on GPUs (genfast/_backend.py). A
// target outside [0, levels) gives a NaN NLL (a check would need a device-to-host copy).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "device_math.cuh"
#include "launch.cuh"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <tuple>

namespace genfast::categorical_head {
namespace {

using at::Tensor;
using cuda::exp_acc;

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int64_t kMaxBlocks = 65535;
constexpr int64_t kWorkspaceElements = int64_t{1} << 22;

struct Dims {
  int64_t cin, hw, colours, levels;
  bool interleaved;  // output l * C + c is colour c's logit l; else c * L + l
};

__device__ __forceinline__ int64_t outputs(const Dims& d) { return d.colours * d.levels; }
__device__ __forceinline__ int64_t output_row(const Dims& d, int64_t c, int64_t l) {
  return d.interleaved ? l * d.colours + c : c * d.levels + l;
}
__device__ __forceinline__ bool visible(const Dims& d, int64_t o, int64_t k) {
  const int64_t group_out = d.interleaved ? o % d.colours : o / d.levels;
  const int64_t group_in = d.interleaved ? k % d.colours : k * d.colours / d.cin;
  return group_in <= group_out;
}

__device__ __forceinline__ float log_acc(float v) { return logf(v); }
__device__ __forceinline__ double log_acc(double v) { return log(v); }

// j over [0, n): z[j] for chunk pixel j / (C * L), output j % (C * L).
template <typename A>
__global__ void logits_kernel(A* __restrict__ z, const A* __restrict__ x, const A* __restrict__ w,
                              const A* __restrict__ bias, Dims d, int64_t b0, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n;
       j += step) {
    const int64_t o = j % outputs(d), pp = j / outputs(d);
    const int64_t b = b0 + pp / d.hw, p = pp % d.hw;
    A acc = bias != nullptr ? bias[o] : A(0);
    for (int64_t k = 0; k < d.cin; ++k) {
      if (visible(d, o, k)) acc += w[o * d.cin + k] * x[(b * d.cin + k) * d.hw + p];
    }
    z[j] = acc;
  }
}

template <typename A>
__device__ __forceinline__ A warp_max(A v) {
  for (int s = 16; s > 0; s /= 2) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, s));
  return v;
}
template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int s = 16; s > 0; s /= 2) v += __shfl_xor_sync(0xffffffffu, v, s);
  return v;
}

// One warp per row r in [0, rows) = (chunk pixel r / C, colour r % C); nll[b][c][p] gets the
// row's NLL, and with want_grad its logits become softmax - onehot.
template <typename A>
__global__ void softmax_kernel(A* __restrict__ z, A* __restrict__ nll,
                               const int64_t* __restrict__ images, Dims d, int64_t b0,
                               int64_t rows, bool want_grad) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
       r < rows; r += warps) {
    const int64_t c = r % d.colours, pp = r / d.colours;
    const int64_t b = b0 + pp / d.hw, p = pp % d.hw;
    A* zr = z + pp * outputs(d);
    A m = zr[output_row(d, c, 0)];  // levels >= 2: every lane starts from a real logit
    for (int64_t l = lane; l < d.levels; l += 32) m = fmax(m, zr[output_row(d, c, l)]);
    m = warp_max(m);
    A s = 0;
    for (int64_t l = lane; l < d.levels; l += 32) s += exp_acc(zr[output_row(d, c, l)] - m);
    s = warp_sum(s);
    const int64_t t = images[(b * d.colours + c) * d.hw + p];
    const bool ok = t >= 0 && t < d.levels;
    // Every lane reads the target's logit before any lane overwrites it below.
    const A picked = ok ? zr[output_row(d, c, t)] : static_cast<A>(NAN);
    __syncwarp();
    if (lane == 0) nll[(b * d.colours + c) * d.hw + p] = m + log_acc(s) - picked;
    if (want_grad) {
      const A inv = A(1) / s;
      for (int64_t l = lane; l < d.levels; l += 32) {
        A* zl = zr + output_row(d, c, l);
        *zl = exp_acc(*zl - m) * inv - (l == t ? A(1) : A(0));
      }
    }
  }
}

// j over [0, n) in NCHW order of the chunk's images: grad_x[b][k][p].
template <typename A>
__global__ void grad_x_kernel(A* __restrict__ gx, const A* __restrict__ g,
                              const A* __restrict__ w, Dims d, int64_t b0, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n;
       j += step) {
    const int64_t p = j % d.hw, k = (j / d.hw) % d.cin, bb = j / (d.hw * d.cin);
    const A* gr = g + (bb * d.hw + p) * outputs(d);
    A acc = 0;
    for (int64_t o = 0; o < outputs(d); ++o) {
      if (visible(d, o, k)) acc += gr[o] * w[o * d.cin + k];
    }
    gx[b0 * d.cin * d.hw + j] = acc;
  }
}

// j over [0, n) = (chunk image, output o, column k in [0, Cin]): column Cin is the bias.
template <typename A>
__global__ void grad_w_kernel(A* __restrict__ gw, A* __restrict__ gb, const A* __restrict__ g,
                              const A* __restrict__ x, Dims d, int64_t b0, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n;
       j += step) {
    const int64_t k = j % (d.cin + 1), o = (j / (d.cin + 1)) % outputs(d);
    const int64_t bb = j / ((d.cin + 1) * outputs(d)), b = b0 + bb;
    const A* gc = g + bb * d.hw * outputs(d) + o;
    if (k == d.cin) {
      if (gb == nullptr) continue;
      A acc = 0;
      for (int64_t p = 0; p < d.hw; ++p) acc += gc[p * outputs(d)];
      gb[b * outputs(d) + o] = acc;
    } else if (gw != nullptr) {
      A acc = 0;
      if (visible(d, o, k)) {
        const A* xr = x + (b * d.cin + k) * d.hw;
        for (int64_t p = 0; p < d.hw; ++p) acc += gc[p * outputs(d)] * xr[p];
      }
      gw[(b * outputs(d) + o) * d.cin + k] = acc;
    }
  }
}

unsigned blocks_for(int64_t work, int64_t per_block) {
  return static_cast<unsigned>(std::clamp<int64_t>((work + per_block - 1) / per_block, 1,
                                                   kMaxBlocks));
}

std::tuple<Tensor, Tensor, Tensor, Tensor> categorical_head_nll_cuda(
    const Tensor& features, const Tensor& weight, const std::optional<Tensor>& bias,
    const Tensor& images, int64_t levels, bool interleaved, std::array<bool, 3> grad_mask) {
  TORCH_CHECK(cuda::on_device(features) && cuda::on_device(weight) && cuda::on_device(images),
              "genfast: categorical_head_nll (cuda): every tensor must be on the device");
  TORCH_CHECK(features.dim() == 4 && images.dim() == 4 && weight.dim() == 2 &&
                  images.scalar_type() == at::kLong && levels >= 2,
              "genfast: categorical_head_nll: features [B, Cin, H, W], weight [C * levels, "
              "Cin] and int64 images [B, C, H, W] expected");
  const c10::cuda::CUDAGuard guard(features.device());
  const int64_t batch = features.size(0), colours = images.size(1);
  const Dims d{features.size(1), features.size(2) * features.size(3), colours, levels,
               interleaved};
  const int64_t outs = colours * levels;
  TORCH_CHECK(weight.size(0) == outs && weight.size(1) == d.cin,
              "genfast: categorical_head_nll: weight must be [", outs, ", ", d.cin, "]");
  const auto acc_type = features.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto acc = features.options().dtype(acc_type);
  const Tensor x = features.detach().to(acc_type).contiguous();
  const Tensor w = weight.detach().to(acc_type).contiguous();
  const Tensor b = bias ? bias->detach().to(acc_type).contiguous() : Tensor();
  const Tensor img = images.contiguous();
  const std::array<bool, 3> want{grad_mask[0], grad_mask[1], grad_mask[2] && bias.has_value()};
  Tensor per_value = at::empty({batch, colours * d.hw}, acc);
  Tensor gx = want[0] ? at::empty(features.sizes(), acc) : at::empty({0}, acc);
  Tensor gw = want[1] ? at::empty({batch, outs, d.cin}, acc) : at::empty({0}, acc);
  Tensor gb = want[2] ? at::empty({batch, outs}, acc) : at::empty({0}, acc);
  if (batch == 0 || d.hw == 0) {
    if (want[0]) gx.zero_();
    return {at::zeros({batch}, features.options()), gx, gw.zero_(), gb.zero_()};
  }
  const bool any_grad = want[0] || want[1] || want[2];
  const int64_t per_chunk = std::clamp<int64_t>(kWorkspaceElements / (d.hw * outs), 1, batch);
  Tensor z = at::empty({per_chunk * d.hw * outs}, acc);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES(acc_type, "categorical_head_nll_cuda", [&] {
    using A = scalar_t;
    A* z_p = z.data_ptr<A>();
    const A* x_p = x.data_ptr<A>();
    const A* w_p = w.data_ptr<A>();
    const A* b_p = b.defined() ? b.data_ptr<A>() : nullptr;
    for (int64_t b0 = 0; b0 < batch; b0 += per_chunk) {
      const int64_t images_here = std::min(per_chunk, batch - b0);
      const int64_t pixels = images_here * d.hw;
      GENFAST_LAUNCH(blocks_for(pixels * outs, kThreads), kThreads, 0, stream,
                     logits_kernel<A>)(z_p, x_p, w_p, b_p, d, b0, pixels * outs);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      GENFAST_LAUNCH(blocks_for(pixels * colours, kWarpsPerBlock), kThreads, 0, stream,
                     softmax_kernel<A>)(z_p, per_value.data_ptr<A>(), img.data_ptr<int64_t>(),
                                        d, b0, pixels * colours, any_grad);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (want[0]) {
        GENFAST_LAUNCH(blocks_for(pixels * d.cin, kThreads), kThreads, 0, stream,
                       grad_x_kernel<A>)(gx.data_ptr<A>(), z_p, w_p, d, b0, pixels * d.cin);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (want[1] || want[2]) {
        const int64_t n = images_here * outs * (d.cin + 1);
        GENFAST_LAUNCH(blocks_for(n, kThreads), kThreads, 0, stream, grad_w_kernel<A>)(
            want[1] ? gw.data_ptr<A>() : nullptr, want[2] ? gb.data_ptr<A>() : nullptr, z_p,
            x_p, d, b0, n);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
  });
  return {per_value.sum(1).to(features.scalar_type()), gx, gw, gb};
}

}  // namespace

GENFAST_CUDA_LIBRARY_IMPL(m) { m.impl("categorical_head_nll", &categorical_head_nll_cuda); }

}  // namespace genfast::categorical_head

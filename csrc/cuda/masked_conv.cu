// CUDA kernels of genfast::masked_conv2d: a PixelCNN masked convolution that spends no work on the
// taps its mask hides (24 of 49 for a 7x7 mask A), in forward, grad-input and grad-weight.
// van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.4.
//
// Same semantics as the CPU kernels in csrc/masked_conv.cpp, and the same padded buffers: the
// input window's receptive field is copied once, with its zero border, into a pixel-major P, so a
// tap is a constant offset into P. Each pass is then an implicit GEMM over the visible taps only:
//   forward      y[pixel][co]  = sum over (tap, ci) of P[pixel + tap][ci] * W[tap][ci][co]
//   grad-input   gx[pixel][ci] = sum over (tap, co) of Q[pixel - tap][co] * W[tap][co][ci]
//   grad-weight  gw[tap][ci][co] = sum over pixels of P[pixel + tap][ci] * Q[pixel][co]
// where Q is grad_y with a zero border, so grad-input is a gather over the mirrored taps (no
// atomics). The visible taps are the first `taps` kernel positions in raster order (every row
// above the centre, the taps left of it, then the centre when some channel pair may use it), so
// the GEMM's reduction index k = tap * channels + channel finds its tap by division.
//
// The GEMM kernels share one shape: 256 threads compute a 64 x 64 output tile, 4 x 4 values each,
// accumulating in float (double for double) over reduction chunks of 16 staged in shared memory,
// with the next chunk's global loads issued before the current chunk's arithmetic. Grad-weight
// splits the pixel sum into a number of parts that depends only on the sizes, and a second kernel
// adds the parts in a fixed order, so every result is deterministic and GPU-independent.
//
// Files: this one holds the forward and grad-input kernels and both ops; grad-weight's kernels are
// in masked_conv_weight_grad.cu, and what both use (tile shape, layout, the register-tile step)
// in masked_conv_tiles.cuh.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../masked_conv_common.h"
#include "launch.cuh"
#include "masked_conv_tiles.cuh"

namespace genfast::masked_conv {
namespace {

using at::Tensor;
using namespace gpu;  // the shared tile shape, layout and helpers (masked_conv_tiles.cuh)


// ----------------------------------------------------------------------------- kernels

struct PackParams {
  int64_t taps, nk, nn;       // output [taps][nk][nn]
  int64_t s_co, s_ci, s_ty, s_tx;  // weight strides
  int64_t kw;
  bool transposed;            // k = output channel and n = input channel (grad-input)
  CentreRule rule;
};


// The visible taps' weights as a row-major [taps * nk][nn] GEMM operand, hidden centre pairs zero
// (never read, so a non-finite hidden weight cannot leak in).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
pack_weight_kernel(scalar_t* __restrict__ out,      // [taps][nk][nn]
                   const scalar_t* __restrict__ w,  // [out][in][kh][kw], any strides
                   PackParams p) {
  const int64_t total = p.taps * p.nk * p.nn;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = e % p.nn, row = e / p.nn, k = row % p.nk, t = row / p.nk;
    const int64_t co = p.transposed ? k : n, ci = p.transposed ? n : k;
    const int64_t ty = t / p.kw, tx = t % p.kw;
    out[e] = p.rule.hides(t, ci, co)
                 ? scalar_t(0)
                 : w[co * p.s_co + ci * p.s_ci + ty * p.s_ty + tx * p.s_tx];
  }
}

// out[m][n] = sum_k src[base(m) + offset(k)] * wpk[k][n] (+ bias[n]), m = (image, row, col) of an
// output region, k = tap * channels + channel; forward and grad-input differ only in the numbers.
struct GatherParams {
  int64_t m_total;                 // batch * rows * cols
  int64_t rows, cols;              // the region computed, per image
  int64_t src_h, src_w;            // the padded source buffer's rows and columns
  int64_t src_r0, src_c0;          // source position of region pixel (0, 0) at tap (0, 0)
  int64_t tap_row_step, tap_col_step;  // source elements per kernel row / column of tap
  int64_t out_sb, out_sn, out_sr, out_sc;  // output strides: image, channel, row, column
  int64_t out_r0, out_c0;          // output position of region pixel (0, 0)
  int channels;                    // source channels: the reduction length per tap
  int kw;                          // kernel width: tap t is kernel position (t / kw, t % kw)
  int k_total, n_total;
  bool m_major;                    // lanes along pixels for the stores (NCHW output)
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
gather_gemm_kernel(scalar_t* __restrict__ out,        // output, strides in p
                   const scalar_t* __restrict__ src,  // padded pixel-major source (P or Q)
                   const scalar_t* __restrict__ wpk,  // [k_total][n_total] packed weight
                   const acc_t* __restrict__ bias,    // [n_total] or null
                   GatherParams p) {
  GENFAST_SHARED(acc_t, a_s, [2][kTileK][kTileM + kPadA]);
  GENFAST_SHARED(acc_t, b_s, [2][kTileK][kTileN]);
  const int tid = threadIdx.x;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTileM;
  const int n0 = blockIdx.y * kTileN;
  const int64_t plane = p.rows * p.cols;

  // Loads of A: k = tid % 16 (lanes along channels, contiguous in the source), pixels
  // tid / 16 + 16 e. Each thread keeps its pixels' source offsets for the whole reduction.
  const int a_k = tid % kTileK, a_m = tid / kTileK;
  int64_t a_base[kPer];
  bool a_ok[kPer];
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    const int64_t m = m0 + a_m + 16 * e;
    a_ok[e] = m < p.m_total;
    const int64_t b = m / plane, rem = m - b * plane, r = rem / p.cols, c = rem - r * p.cols;
    a_base[e] = ((b * p.src_h + r + p.src_r0) * p.src_w + c + p.src_c0) * p.channels;
  }
  // Loads of B: n = tid % 64 (contiguous in wpk), k rows tid / 64 + 4 e.
  const int b_n = tid % kTileN, b_k = tid / kTileN;
  const bool b_ok = n0 + b_n < p.n_total;

  acc_t ra[kPer], rb[kPer];
  auto load = [&](int k0) {
    const int k = k0 + a_k;
    const bool k_ok = k < p.k_total;
    int64_t koff = 0;
    if (k_ok) {
      const int t = k / p.channels, ci = k - t * p.channels;
      const int ty = t / p.kw, tx = t - ty * p.kw;
      koff = ty * p.tap_row_step + tx * p.tap_col_step + ci;
    }
#pragma unroll
    for (int e = 0; e < kPer; ++e)
      ra[e] = k_ok && a_ok[e] ? static_cast<acc_t>(src[a_base[e] + koff]) : acc_t(0);
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      const int kb = k0 + b_k + 4 * e;
      rb[e] = b_ok && kb < p.k_total
                  ? static_cast<acc_t>(wpk[static_cast<int64_t>(kb) * p.n_total + n0 + b_n])
                  : acc_t(0);
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      a_s[buf][a_k][a_m + 16 * e] = ra[e];
      b_s[buf][b_k + 4 * e][b_n] = rb[e];
    }
  };

  // Compute: this thread's outputs are pixels tm + 16 i and channels tn + 16 j.
  const int tm = p.m_major ? tid % 16 : tid / 16;
  const int tn = p.m_major ? tid / 16 : tid % 16;
  acc_t acc[kPer][kPer] = {};
  const int chunks = (p.k_total + kTileK - 1) / kTileK;
  load(0);
  store(0);
  __syncthreads();
  for (int c = 0; c < chunks; ++c) {
    const int buf = c & 1;
    // The next chunk goes to the other buffer: its last readers passed the previous barrier.
    if (c + 1 < chunks) load((c + 1) * kTileK);
    multiply_chunk(acc, a_s[buf], b_s[buf], tm, tn);
    if (c + 1 < chunks) store(buf ^ 1);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int64_t m = m0 + tm + 16 * i;
    if (m >= p.m_total) continue;
    const int64_t b = m / plane, rem = m - b * plane, r = rem / p.cols, c = rem - r * p.cols;
    const int64_t off = b * p.out_sb + (r + p.out_r0) * p.out_sr + (c + p.out_c0) * p.out_sc;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int n = n0 + tn + 16 * j;
      if (n >= p.n_total) continue;
      const acc_t v = acc[i][j] + (bias != nullptr ? bias[n] : acc_t(0));
      out[off + n * p.out_sn] = static_cast<scalar_t>(v);
    }
  }
}


// ----------------------------------------------------------------------------- host side


// The kernels find tap t at kernel position (t / kw, t % kw): true for the visible taps, which
// are a prefix of the raster order (see masked_conv_common.cpp).
void check_taps_are_a_raster_prefix(const Geometry& g) {
  for (size_t t = 0; t < g.taps.size(); ++t)
    TORCH_INTERNAL_ASSERT(g.taps[t].ty * g.kw + g.taps[t].tx == static_cast<int64_t>(t),
                          "genfast: masked_conv2d's visible taps are not a raster prefix");
}

void check_fits_int32(int64_t v, const char* what) {
  TORCH_CHECK(v <= std::numeric_limits<int32_t>::max() - kTileM, "genfast: masked_conv2d's ",
              what, " (", v, ") is too large for the CUDA kernels");
}

// P: the output window's receptive field of x, pixel-major with its zero border.
Tensor pack_input(const Tensor& x, const Geometry& g, const Layout& l) {
  Tensor p = at::zeros({g.batch, l.ph, l.pw, g.in_channels}, x.options());
  const int64_t r0 = l.r_lo(g), r1 = l.r_hi(g), c0 = l.c_lo(g), c1 = l.c_hi(g);
  if (r1 > r0 && c1 > c0) {
    p.slice(1, r0, r1).slice(2, c0, c1).copy_(
        x.slice(2, l.image_row(g, r0), l.image_row(g, r1))
            .slice(3, l.image_col(g, c0), l.image_col(g, c1))
            .permute({0, 2, 3, 1}));
  }
  return p;
}

// Q: grad_y pixel-major with a zero border of (q_row0, q_col0) all round.
Tensor pack_grad_output(const Tensor& gy, const Geometry& g, const Layout& l) {
  Tensor q = at::zeros({g.batch, l.qh, l.qw, g.out_channels}, gy.options());
  q.slice(1, l.q_row0, l.q_row0 + g.out_h())
      .slice(2, l.q_col0, l.q_col0 + g.out_w())
      .copy_(gy.permute({0, 2, 3, 1}));
  return q;
}

template <typename scalar_t>
Tensor pack_weight(const Tensor& w, const Geometry& g, bool transposed, cudaStream_t stream) {
  const int64_t taps = static_cast<int64_t>(g.taps.size());
  const int64_t nk = transposed ? g.out_channels : g.in_channels;
  const int64_t nn = transposed ? g.in_channels : g.out_channels;
  Tensor out = at::empty({taps * nk, nn}, w.options());
  if (out.numel() == 0) return out;
  const PackParams p{taps, nk, nn, w.stride(0), w.stride(1), w.stride(2), w.stride(3),
                     g.kw, transposed, centre_rule(g)};
  GENFAST_LAUNCH(elementwise_blocks(out.numel()), kThreads, 0, stream,
                 pack_weight_kernel<scalar_t>)(
      out.data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

template <typename scalar_t>
void launch_gather(const Tensor& out, const Tensor& src, const Tensor& wpk, const Tensor& bias,
                   GatherParams p, cudaStream_t stream) {
  using acc_t = acc_type<scalar_t>;
  const int64_t m_tiles = ceil_div(p.m_total, kTileM), n_tiles = ceil_div(p.n_total, kTileN);
  TORCH_CHECK(m_tiles <= std::numeric_limits<int32_t>::max() && n_tiles <= 65535,
              "genfast: masked_conv2d is too large for the CUDA kernels' grid");
  const dim3 grid(static_cast<unsigned>(m_tiles), static_cast<unsigned>(n_tiles));
  GENFAST_LAUNCH(grid, kThreads, 0, stream, gather_gemm_kernel<scalar_t, acc_t>)(
      out.data_ptr<scalar_t>(), src.const_data_ptr<scalar_t>(), wpk.const_data_ptr<scalar_t>(),
      bias.defined() ? bias.const_data_ptr<acc_t>() : nullptr, p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void forward_impl(const Tensor& y, const Tensor& x, const Tensor& weight,
                  const std::optional<Tensor>& bias, const Geometry& g, cudaStream_t stream) {
  using acc_t = acc_type<scalar_t>;
  const Layout l(g);
  const Tensor p = pack_input(x, g, l);
  const Tensor wpk = pack_weight<scalar_t>(weight, g, false, stream);
  const Tensor b = bias.has_value() ? bias->to(c10::CppTypeToScalarType<acc_t>::value).contiguous()
                                    : Tensor();
  const int64_t d = g.dilation, cin = g.in_channels;
  GatherParams prm{};
  prm.m_total = g.batch * g.out_h() * g.out_w();
  prm.rows = g.out_h(), prm.cols = g.out_w();
  prm.src_h = l.ph, prm.src_w = l.pw, prm.src_r0 = 0, prm.src_c0 = 0;
  prm.tap_row_step = d * l.pw * cin, prm.tap_col_step = d * cin;
  prm.out_sb = y.stride(0), prm.out_sn = y.stride(1), prm.out_sr = y.stride(2), prm.out_sc = y.stride(3);
  prm.out_r0 = 0, prm.out_c0 = 0;
  prm.channels = static_cast<int>(cin), prm.kw = static_cast<int>(g.kw);
  prm.k_total = static_cast<int>(g.taps.size() * cin), prm.n_total = static_cast<int>(g.out_channels);
  prm.m_major = y.stride(3) <= y.stride(1);
  launch_gather<scalar_t>(y, p, wpk, b, prm, stream);
}

// dL/dx over the window's receptive field; the caller zeroed gx where that does not cover x.
template <typename scalar_t>
void grad_input_impl(const Tensor& gx, const Tensor& q, const Tensor& weight, const Geometry& g,
                     const Layout& l, cudaStream_t stream) {
  const int64_t r0 = l.r_lo(g), r1 = l.r_hi(g), c0 = l.c_lo(g), c1 = l.c_hi(g);
  if (r1 <= r0 || c1 <= c0) return;
  const Tensor wpk = pack_weight<scalar_t>(weight, g, true, stream);
  const int64_t d = g.dilation, cout = g.out_channels;
  GatherParams prm{};
  prm.rows = r1 - r0, prm.cols = c1 - c0;
  prm.m_total = g.batch * prm.rows * prm.cols;
  // P position (pr, pc) = (r0 + r, c0 + c) gathers grad_y(pr - ty*d, pc - tx*d), which Q holds
  // at (pr - ty*d + q_row0, pc - tx*d + q_col0): the taps are negative offsets.
  prm.src_h = l.qh, prm.src_w = l.qw, prm.src_r0 = r0 + l.q_row0, prm.src_c0 = c0 + l.q_col0;
  prm.tap_row_step = -d * l.qw * cout, prm.tap_col_step = -d * cout;
  prm.out_sb = gx.stride(0), prm.out_sn = gx.stride(1), prm.out_sr = gx.stride(2), prm.out_sc = gx.stride(3);
  prm.out_r0 = l.image_row(g, r0), prm.out_c0 = l.image_col(g, c0);
  prm.channels = static_cast<int>(cout), prm.kw = static_cast<int>(g.kw);
  prm.k_total = static_cast<int>(g.taps.size() * cout), prm.n_total = static_cast<int>(g.in_channels);
  prm.m_major = gx.stride(3) <= gx.stride(1);
  launch_gather<scalar_t>(gx, q, wpk, Tensor(), prm, stream);
}


Tensor masked_conv2d_cuda(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                          int64_t mask_type, int64_t data_channels, int64_t dilation,
                          at::IntArrayRef window) {
  TORCH_CHECK(cuda::on_device(x) && cuda::on_device(weight),
              "genfast: the cuda backend needs CUDA tensors");
  const Geometry g = make_geometry(x, weight, mask_type, data_channels, dilation, window);
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.out_channels && bias->device() == x.device(),
                "genfast: bias must be a tensor of shape [", g.out_channels, "] on ", x.device());
  }
  check_taps_are_a_raster_prefix(g);
  const c10::cuda::CUDAGuard guard(x.device());
  Tensor y = at::empty({g.batch, g.out_channels, g.out_h(), g.out_w()},
                       x.options().memory_format(x.suggest_memory_format()));
  if (y.numel() == 0) return y;
  const int64_t k_total = static_cast<int64_t>(g.taps.size()) * g.in_channels;
  if (k_total == 0) {  // every tap hidden (1x1 mask A) or no input channels: y is the bias
    if (bias.has_value()) {
      y.copy_(bias->to(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat)
                  .view({1, g.out_channels, 1, 1})
                  .expand_as(y));
    } else {
      y.zero_();
    }
    return y;
  }
  check_fits_int32(k_total, "reduction length taps x in_channels");
  check_fits_int32(g.out_channels, "number of output channels");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "masked_conv2d_cuda", [&] {
    forward_impl<scalar_t>(y, x, weight, bias, g, stream);
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor> masked_conv2d_backward_cuda(
    const Tensor& grad_y, const Tensor& x, const Tensor& weight, int64_t mask_type,
    int64_t data_channels, int64_t dilation, at::IntArrayRef window,
    std::array<bool, 3> output_mask) {
  TORCH_CHECK(cuda::on_device(x) && cuda::on_device(weight),
              "genfast: the cuda backend needs CUDA tensors");
  const Geometry g = make_geometry(x, weight, mask_type, data_channels, dilation, window);
  check_grad_output(grad_y, g);
  TORCH_CHECK(grad_y.device() == x.device(), "genfast: grad_y is on ", grad_y.device(),
              " but x is on ", x.device());
  check_taps_are_a_raster_prefix(g);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Layout l(g);
  const int64_t taps = static_cast<int64_t>(g.taps.size());
  const Tensor gy = grad_y.to(x.scalar_type());
  Tensor gx, gw, gb;

  if (output_mask[0]) {
    const bool full = g.row0 == 0 && g.row1 == g.height && g.col0 == 0 && g.col1 == g.width;
    const int64_t k_total = taps * g.out_channels;
    // With the whole output and some tap, every pixel of x is in the receptive field.
    const auto options = x.options().memory_format(x.suggest_memory_format());
    gx = full && k_total > 0 && gy.numel() > 0 ? at::empty(x.sizes(), options)
                                               : at::zeros(x.sizes(), options);
    if (gx.numel() > 0 && k_total > 0 && gy.numel() > 0) {
      check_fits_int32(k_total, "reduction length taps x out_channels");
      check_fits_int32(g.in_channels, "number of input channels");
      const Tensor q = pack_grad_output(gy, g, l);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "masked_conv2d_grad_input_cuda", [&] {
        grad_input_impl<scalar_t>(gx, q, weight, g, l, stream);
      });
    }
  } else {
    gx = at::empty({0}, x.options());
  }

  if (output_mask[1]) {
    gw = at::zeros(weight.sizes(), weight.options());
    const int64_t k_total = taps * g.in_channels;
    if (gw.numel() > 0 && k_total > 0 && gy.numel() > 0) {
      check_fits_int32(k_total, "reduction length taps x in_channels");
      check_fits_int32(g.out_channels, "number of output channels");
      const Tensor p = pack_input(x, g, l);
      // grad_y pixel-major without a border: grad-weight reads only the output pixels.
      const Tensor gcl = gy.permute({0, 2, 3, 1}).contiguous();
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "masked_conv2d_grad_weight_cuda", [&] {
        grad_weight_impl<scalar_t>(gw, p, gcl, g.out_h(), g.out_w(), 0, 0, g, l, stream);
      });
    }
  } else {
    gw = at::empty({0}, weight.options());
  }

  gb = grad_bias(grad_y, x, output_mask[2]);
  return {gx, gw, gb};
}

}  // namespace

GENFAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("masked_conv2d", &masked_conv2d_cuda);
  m.impl("masked_conv2d_backward", &masked_conv2d_backward_cuda);
}

}  // namespace genfast::masked_conv

// CUDA grad-weight of genfast::masked_conv2d: the sum over output pixels of
// P[pixel + tap][ci] * grad_y[pixel][co], split into parts whose number depends only on the sizes,
// then the parts added in a fixed order, so the result is deterministic and GPU-independent.
// The design is described at the top of masked_conv.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <cstdint>

#include "launch.cuh"
#include "masked_conv_tiles.cuh"

namespace genfast::masked_conv::gpu {
namespace {

using at::Tensor;

// partial[s][k][n] = sum over part s of the output pixels of P[pbase + offset(k)] * G[gbase + n].
struct WeightGradParams {
  int64_t m_total;             // output pixels: batch * rows * cols
  int64_t rows, cols;          // output window rows and columns
  int64_t p_h, p_w;            // P's rows and columns
  int64_t g_h, g_w, g_r0, g_c0;  // the grad_y buffer's rows, columns and position of pixel (0, 0)
  int64_t tap_row_step, tap_col_step;  // P elements per kernel row / column of tap
  int64_t step_b, step_r, step_c;  // kTileK pixels as (images, rows, columns), each below its size
  int channels, kw, k_total, n_total;
  int splits;
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
weight_grad_kernel(acc_t* __restrict__ partial,       // [splits][k_total][n_total]
                   const scalar_t* __restrict__ pbuf,  // P: [batch][p_h][p_w][channels]
                   const scalar_t* __restrict__ gbuf,  // grad_y: [batch][g_h][g_w][n_total]
                   WeightGradParams p) {
  GENFAST_SHARED(acc_t, a_s, [2][kTileK][kTileM]);
  GENFAST_SHARED(acc_t, b_s, [2][kTileK][kTileN]);
  const int tid = threadIdx.x;
  const int k0 = blockIdx.x * kTileM, n0 = blockIdx.y * kTileN;
  const int64_t split = blockIdx.z;
  const int64_t begin = split * p.m_total / p.splits, end = (split + 1) * p.m_total / p.splits;

  // Loads: lanes along k (for P) and n (for grad_y), both contiguous; pixels tid / 64 + 4 e.
  const int l_col = tid % kTileM, l_pix = tid / kTileM;
  const int k = k0 + l_col, n = n0 + l_col;
  const bool k_ok = k < p.k_total, n_ok = n < p.n_total;
  int64_t koff = 0;
  if (k_ok) {
    const int t = k / p.channels, ci = k - t * p.channels;
    const int ty = t / p.kw, tx = t - ty * p.kw;
    koff = ty * p.tap_row_step + tx * p.tap_col_step + ci;
  }
  // Each thread walks its kPer pixels kTileK at a time, carrying (image, row, column) along so
  // no division is needed after the start.
  int64_t pix[kPer], pb[kPer], pr[kPer], pc[kPer];
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    pix[e] = begin + l_pix + 4 * e;
    const int64_t plane = p.rows * p.cols;
    pb[e] = pix[e] / plane;
    const int64_t rem = pix[e] - pb[e] * plane;
    pr[e] = rem / p.cols;
    pc[e] = rem - pr[e] * p.cols;
  }

  acc_t ra[kPer], rb[kPer];
  auto load = [&]() {
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      const bool ok = pix[e] < end;
      const int64_t pbase = ((pb[e] * p.p_h + pr[e]) * p.p_w + pc[e]) * p.channels;
      const int64_t gbase = ((pb[e] * p.g_h + pr[e] + p.g_r0) * p.g_w + pc[e] + p.g_c0) * p.n_total;
      ra[e] = ok && k_ok ? static_cast<acc_t>(pbuf[pbase + koff]) : acc_t(0);
      rb[e] = ok && n_ok ? static_cast<acc_t>(gbuf[gbase + n]) : acc_t(0);
      // Advance by kTileK pixels: add the steps with one carry each (every step is below the
      // size it counts in, so one carry suffices).
      pix[e] += kTileK;
      pc[e] += p.step_c;
      if (pc[e] >= p.cols) pc[e] -= p.cols, ++pr[e];
      pr[e] += p.step_r;
      if (pr[e] >= p.rows) pr[e] -= p.rows, ++pb[e];
      pb[e] += p.step_b;
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      a_s[buf][l_pix + 4 * e][l_col] = ra[e];
      b_s[buf][l_pix + 4 * e][l_col] = rb[e];
    }
  };

  // Compute: this thread's outputs are k rows tk + 16 i and channels tn + 16 j.
  const int tk = tid / 16, tn = tid % 16;
  acc_t acc[kPer][kPer] = {};
  const int64_t chunks = (end - begin + kTileK - 1) / kTileK;
  if (chunks > 0) {
    load();
    store(0);
    __syncthreads();
  }
  for (int64_t c = 0; c < chunks; ++c) {
    const int buf = static_cast<int>(c & 1);
    if (c + 1 < chunks) load();
    multiply_chunk(acc, a_s[buf], b_s[buf], tk, tn);
    if (c + 1 < chunks) store(buf ^ 1);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int kr = k0 + tk + 16 * i;
    if (kr >= p.k_total) continue;
    acc_t* row = partial + (split * p.k_total + kr) * p.n_total;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int nc = n0 + tn + 16 * j;
      if (nc < p.n_total) row[nc] = acc[i][j];
    }
  }
}

struct FinalizeParams {
  int64_t k_total, n_total, splits;
  int64_t channels, kw;            // in_channels; kernel width
  int64_t s_co, s_ci, s_ty, s_tx;  // grad_weight strides
  CentreRule rule;
};

// grad_weight[co][ci][ty][tx] = the parts' sum, added in split order; hidden centre pairs and
// hidden taps keep the zeros grad_weight was created with.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
finalize_weight_grad_kernel(scalar_t* __restrict__ gw,            // [out][in][kh][kw], zeroed
                            const acc_t* __restrict__ partial,    // [splits][k_total][n_total]
                            FinalizeParams p) {
  const int64_t total = p.k_total * p.n_total;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = e / p.n_total, co = e - k * p.n_total;
    const int64_t t = k / p.channels, ci = k - t * p.channels;
    if (p.rule.hides(t, ci, co)) continue;
    acc_t sum = 0;
    for (int64_t s = 0; s < p.splits; ++s) sum += partial[s * total + e];
    const int64_t ty = t / p.kw, tx = t - ty * p.kw;
    gw[co * p.s_co + ci * p.s_ci + ty * p.s_ty + tx * p.s_tx] = static_cast<scalar_t>(sum);
  }
}

}  // namespace

// dL/dweight into gw (zeroed): split pixel sums, then their fixed-order total.
template <typename scalar_t>
void grad_weight_impl(const Tensor& gw, const Tensor& p, const Tensor& gbuf, int64_t g_h,
                      int64_t g_w, int64_t g_r0, int64_t g_c0, const Geometry& g, const Layout& l,
                      cudaStream_t stream) {
  using acc_t = acc_type<scalar_t>;
  const int64_t k_total = static_cast<int64_t>(g.taps.size()) * g.in_channels;
  const int64_t n_total = g.out_channels;
  const int64_t m_total = g.batch * g.out_h() * g.out_w();
  const int64_t k_tiles = ceil_div(k_total, kTileM), n_tiles = ceil_div(n_total, kTileN);
  TORCH_CHECK(n_tiles <= 65535, "genfast: masked_conv2d has too many output channels for the "
              "CUDA kernels' grid");
  const int64_t chunks = ceil_div(m_total, kTileK);
  const int64_t splits = std::max<int64_t>(
      1, std::min(kTargetBlocks / (k_tiles * n_tiles), chunks / kMinChunksPerSplit));
  Tensor partial = at::empty({splits, k_total, n_total}, gw.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  const int64_t d = g.dilation, plane = g.out_h() * g.out_w();
  WeightGradParams prm{};
  prm.m_total = m_total, prm.rows = g.out_h(), prm.cols = g.out_w();
  prm.p_h = l.ph, prm.p_w = l.pw;
  prm.g_h = g_h, prm.g_w = g_w, prm.g_r0 = g_r0, prm.g_c0 = g_c0;
  prm.tap_row_step = d * l.pw * g.in_channels, prm.tap_col_step = d * g.in_channels;
  prm.step_b = kTileK / plane;
  prm.step_r = (kTileK / prm.cols) % prm.rows;
  prm.step_c = kTileK % prm.cols;
  prm.channels = static_cast<int>(g.in_channels), prm.kw = static_cast<int>(g.kw);
  prm.k_total = static_cast<int>(k_total), prm.n_total = static_cast<int>(n_total);
  prm.splits = static_cast<int>(splits);
  const dim3 grid(static_cast<unsigned>(k_tiles), static_cast<unsigned>(n_tiles),
                  static_cast<unsigned>(splits));
  GENFAST_LAUNCH(grid, kThreads, 0, stream, weight_grad_kernel<scalar_t, acc_t>)(
      partial.data_ptr<acc_t>(), p.const_data_ptr<scalar_t>(), gbuf.const_data_ptr<scalar_t>(), prm);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const FinalizeParams f{k_total, n_total, splits, g.in_channels, g.kw, gw.stride(0), gw.stride(1),
                         gw.stride(2), gw.stride(3), centre_rule(g)};
  GENFAST_LAUNCH(elementwise_blocks(k_total * n_total), kThreads, 0, stream,
                 finalize_weight_grad_kernel<scalar_t, acc_t>)(
          gw.data_ptr<scalar_t>(), partial.const_data_ptr<acc_t>(), f);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define GENFAST_INSTANTIATE(T)                                                                   \
  template void grad_weight_impl<T>(const Tensor&, const Tensor&, const Tensor&, int64_t,       \
                                    int64_t, int64_t, int64_t, const Geometry&, const Layout&,  \
                                    cudaStream_t);
GENFAST_INSTANTIATE(float)
GENFAST_INSTANTIATE(double)
GENFAST_INSTANTIATE(at::Half)
GENFAST_INSTANTIATE(at::BFloat16)
#undef GENFAST_INSTANTIATE

}  // namespace genfast::masked_conv::gpu

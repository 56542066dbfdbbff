// CUDA kernels of genfast::logistic_mixture_nll and its backward: PixelCNN++'s discretized
// logistic mixture likelihood (Salimans et al. 2017, eq. 2 and section 2.2), with the maths of
// the CPU kernels (csrc/logistic_mixture_maths.h, compiled here for the device on one pixel).
//
// One thread per pixel, grid (pixel blocks of kThreads, images): at the benchmark shape
// (16 x 32 x 32) that is 128 blocks of 128 threads. Each thread loops over the components, so no
// [B, C, M, H, W] temporary exists. Forward: running log-sum-exps over the components, then a
// fixed-order tree sum per block into a [B, blocks] buffer that at::sum adds up (deterministic).
// Backward: one loop for the log-sum-exps, then one more that recomputes each component's
// channel terms (held in registers, C <= 4) and writes its gradient once its responsibility is
// known. genfast::logistic_mixture_nll_with_grad runs the backward for grad_nll = 1 and sums
// the log-likelihoods it knows on the way as the forward does: a training step's one launch.
// Computed in float (double for double). nvcc 13 for sm_90 (-O3, ptxas -v): forward 40
// registers (72 in double); backward and with_grad 56 (88 in double), with a 96-byte stack
// frame for the per-channel terms (176 in double); no spills.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../logistic_mixture_common.h"
#include "device_math.cuh"
#include "launch.cuh"

namespace genfast::logistic_mixture {
namespace {

using at::Tensor;
using cuda::acc_type;

// 128 pixels a block: at the benchmark shape 128 blocks, one on most of an H100's 132 SMs (256
// would leave half of them idle).
constexpr int kThreads = 128;

namespace device {

// The shared maths on one float or double per thread.
template <typename T>
struct DeviceOps {
  using Scalar = T;
  using V = T;
  using Mask = bool;
  __device__ __forceinline__ static V splat(double x) { return static_cast<T>(x); }
  __device__ __forceinline__ static V exp(V x) { return cuda::exp_acc(x); }
  __device__ __forceinline__ static V log(V x) { return ::log(x); }
  __device__ __forceinline__ static V tanh(V x) { return cuda::tanh_acc(x); }
  __device__ __forceinline__ static V abs(V x) { return ::fabs(x); }
  __device__ __forceinline__ static V max(V a, V b) { return a > b ? a : b; }
  __device__ __forceinline__ static V select(Mask m, V a, V b) { return m ? a : b; }
  __device__ __forceinline__ static Mask mask_not(Mask m) { return !m; }
  __device__ __forceinline__ static Mask mask_and(Mask a, Mask b) { return a && b; }
  __device__ __forceinline__ static Mask mask_or(Mask a, Mask b) { return a || b; }
  __device__ __forceinline__ static bool any(Mask m) { return m; }
};

// Host and device: the header's host-only templates (the CPU tile loops) call the plane
// helpers too, and are never instantiated here.
#define GENFAST_MIXTURE_FN __host__ __device__ __forceinline__
#include "../logistic_mixture_maths.h"
#undef GENFAST_MIXTURE_FN

}  // namespace device

using device::BinTerms;
using device::kMostChannels;
using device::MixtureShape;

// One pixel's view of its image and parameters.
template <typename scalar_t, typename A>
struct Pixel {
  const scalar_t* params;  // plane 0 of this pixel; plane q at params[q * pixels]
  int64_t pixels;
  A level[kMostChannels];
  A x[kMostChannels];

  __device__ __forceinline__ A param(int64_t plane) const {
    return static_cast<A>(params[plane * pixels]);
  }
};

template <typename scalar_t, typename index_t, typename A>
__device__ __forceinline__ Pixel<scalar_t, A> load_pixel(const index_t* images,
                                                         const scalar_t* params, int64_t b,
                                                         int64_t pix, int64_t pixels,
                                                         int64_t planes, const MixtureShape& s) {
  Pixel<scalar_t, A> p;
  p.params = params + b * planes * pixels + pix;
  p.pixels = pixels;
  const A scale = static_cast<A>(2.0 / s.levels_minus_1);
  for (int c = 0; c < s.channels; ++c) {
    p.level[c] = static_cast<A>(images[(b * s.channels + c) * pixels + pix]);
    p.x[c] = p.level[c] * scale - A(1);
  }
  return p;
}

// Component m's terms of every channel (derivatives with kGrad) and its total log-probability
// logit_m + sum_c log P_c.
template <bool kGrad, typename scalar_t, typename A>
__device__ __forceinline__ A component(const Pixel<scalar_t, A>& p, const MixtureShape& s, int m,
                                       A half_bin, A log_half_levels,
                                       BinTerms<device::DeviceOps<A>>* terms) {
  using Ops = device::DeviceOps<A>;
  A total = p.param(m);
  for (int c = 0; c < s.channels; ++c) {
    A mean = p.param(device::mean_plane(s, c, m));
    const int k0 = c * (c - 1) / 2;
    for (int e = 0; e < c; ++e)
      mean += cuda::tanh_acc(p.param(device::coeff_plane(s, k0 + e, m))) * p.x[e];
    const A raw_log_scale = p.param(device::log_scale_plane(s, c, m));
    const BinTerms<Ops> t = device::bin_terms<Ops, kGrad>(p.x[c], p.level[c], mean,
                                                          raw_log_scale, s, half_bin,
                                                          log_half_levels);
    total += t.log_prob;
    if constexpr (kGrad) terms[c] = t;
  }
  return total;
}

// log(sum exp) over the components kept as a running (top, sum) pair.
template <typename A>
struct RunningLse {
  A top = -INFINITY, sum = 0;
  __device__ __forceinline__ void add(A v) {
    const A new_top = v > top ? v : top;
    sum = sum * cuda::exp_acc(top - new_top) + cuda::exp_acc(v - new_top);
    top = new_top;
  }
  __device__ __forceinline__ A value() const { return top + ::log(sum); }
};

template <typename scalar_t, typename A>
__device__ __forceinline__ void log_sum_exps(const Pixel<scalar_t, A>& p, const MixtureShape& s,
                                             A half_bin, A log_half_levels, A* lse_total,
                                             A* lse_logits) {
  RunningLse<A> totals, logits;
  for (int m = 0; m < s.mixtures; ++m) {
    totals.add(component<false>(p, s, m, half_bin, log_half_levels,
                                static_cast<BinTerms<device::DeviceOps<A>>*>(nullptr)));
    logits.add(p.param(m));
  }
  *lse_total = totals.value();
  *lse_logits = logits.value();
}

// partial[b, block] = the block's log-likelihoods, added in a fixed tree order. Every thread of
// the block calls it.
__device__ __forceinline__ void block_sum(double* partial, int64_t b, double log_lik,
                                          double* sums) {
  sums[threadIdx.x] = log_lik;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) sums[threadIdx.x] += sums[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[b * gridDim.x + blockIdx.x] = sums[0];
}

// Writes d(g_out * NLL)/d params of one pixel, its log-sum-exps known, recomputing each
// component's channel terms (held in registers, C <= 4).
template <typename scalar_t, typename A>
__device__ __forceinline__ void write_gradient(scalar_t* out, const Pixel<scalar_t, A>& p,
                                               const MixtureShape& s, A half_bin,
                                               A log_half_levels, A lse_total, A lse_logits,
                                               A g_out) {
  for (int m = 0; m < s.mixtures; ++m) {
    BinTerms<device::DeviceOps<A>> terms[kMostChannels];
    const A total = component<true>(p, s, m, half_bin, log_half_levels, terms);
    // NLL = lse(logits) - lse(totals): d/dlogit_m = prior_m - w_m, d/dtotal_m = -w_m.
    const A w = cuda::exp_acc(total - lse_total);
    const A prior = cuda::exp_acc(p.param(m) - lse_logits);
    out[m * p.pixels] = static_cast<scalar_t>(g_out * (prior - w));
    const A scale = -g_out * w;
    for (int c = 0; c < s.channels; ++c) {
      const A d_mean = scale * terms[c].d_mean;
      out[device::mean_plane(s, c, m) * p.pixels] = static_cast<scalar_t>(d_mean);
      out[device::log_scale_plane(s, c, m) * p.pixels] =
          static_cast<scalar_t>(scale * terms[c].d_log_scale);
      const int k0 = c * (c - 1) / 2;
      for (int e = 0; e < c; ++e) {
        const int64_t plane = device::coeff_plane(s, k0 + e, m);
        const A t = cuda::tanh_acc(p.param(plane));
        out[plane * p.pixels] = static_cast<scalar_t>(d_mean * p.x[e] * (A(1) - t * t));
      }
    }
  }
}

// One thread per pixel. With kGradient it writes d(grad_nll * NLL)/d params (grad_nll null
// meaning 1); with partial given it sums each block's log-likelihoods into it. The forward is
// <false> with partial, the backward <true> without, genfast::logistic_mixture_nll_with_grad
// <true> with both.
template <bool kGradient, typename scalar_t, typename index_t>
__global__ void mixture_kernel(scalar_t* __restrict__ grad,
                               const acc_type<scalar_t>* __restrict__ grad_nll,
                               double* __restrict__ partial, const index_t* __restrict__ images,
                               const scalar_t* __restrict__ params, int64_t pixels,
                               int64_t planes, MixtureShape s) {
  using A = acc_type<scalar_t>;
  GENFAST_SHARED(double, sums, [kThreads]);
  const int64_t b = blockIdx.y;
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  double log_lik = 0.0;
  if (pix < pixels) {
    const A half_bin = static_cast<A>(1.0 / s.levels_minus_1);
    const A log_half_levels = static_cast<A>(::log(s.levels_minus_1 / 2.0));
    const Pixel<scalar_t, A> p =
        load_pixel<scalar_t, index_t, A>(images, params, b, pix, pixels, planes, s);
    A lse_total, lse_logits;
    log_sum_exps<scalar_t, A>(p, s, half_bin, log_half_levels, &lse_total, &lse_logits);
    log_lik = static_cast<double>(lse_total - lse_logits);
    if constexpr (kGradient)
      write_gradient(grad + b * planes * pixels + pix, p, s, half_bin, log_half_levels,
                     lse_total, lse_logits, grad_nll ? grad_nll[b] : A(1));
  }
  if (partial) block_sum(partial, b, log_lik, sums);
}

MixtureShape shape_of(const Problem& p) {
  return MixtureShape{static_cast<int>(p.channels), static_cast<int>(p.mixtures),
                      static_cast<float>(p.levels - 1)};
}

dim3 grid_of(const Problem& p) {
  return dim3(static_cast<unsigned>((p.pixels + kThreads - 1) / kThreads),
              static_cast<unsigned>(p.batch));
}

// Launches mixture_kernel<kGradient> over every pixel on the current stream. grad (written),
// grad_nll (read, acc dtype) and partial ([B, blocks] float64, written) may be null where the
// variant does not use them.
template <bool kGradient>
void launch_mixture(const Tensor& images, const Tensor& params, const Problem& p, Tensor* grad,
                    const Tensor* grad_nll, Tensor* partial) {
  const Tensor images_c = images.contiguous(), params_c = params.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(params.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params.scalar_type(),
                                  "logistic_mixture", [&] {
    using A = acc_type<scalar_t>;
    dispatch_images(images_c, [&]<typename index_t>() {
      GENFAST_LAUNCH(grid_of(p), kThreads, 0, stream, mixture_kernel<kGradient, scalar_t, index_t>)(
          grad ? grad->mutable_data_ptr<scalar_t>() : nullptr,
          grad_nll ? grad_nll->const_data_ptr<A>() : nullptr,
          partial ? partial->mutable_data_ptr<double>() : nullptr,
          images_c.const_data_ptr<index_t>(), params_c.const_data_ptr<scalar_t>(), p.pixels,
          p.planes, shape_of(p));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

Tensor partial_sums(const Tensor& params, const Problem& p) {
  return at::empty({p.batch, static_cast<int64_t>(grid_of(p).x)},
                   params.options().dtype(at::kDouble));
}

// Each image's NLL from its blocks' log-likelihood sums (at::sum: a fixed order).
Tensor nll_of(const Tensor& partial, const Tensor& params) {
  return partial.sum(1).neg_().to(compute_dtype(params.scalar_type()));
}

void check_batch(const Problem& p) {
  TORCH_CHECK_VALUE(p.batch <= 65535, "genfast: the CUDA kernels take at most 65535 images");
}

Tensor logistic_mixture_nll_cuda(const Tensor& images, const Tensor& params, int64_t levels) {
  const Problem p = check_nll_args(images, params, levels, cuda::kDeviceType);
  check_batch(p);
  const c10::cuda::CUDAGuard guard(params.device());
  const auto acc = compute_dtype(params.scalar_type());
  if (p.batch == 0 || p.pixels == 0) return at::zeros({p.batch}, params.options().dtype(acc));
  Tensor partial = partial_sums(params, p);
  launch_mixture<false>(images, params, p, nullptr, nullptr, &partial);
  return nll_of(partial, params);
}

Tensor logistic_mixture_nll_backward_cuda(const Tensor& grad_nll, const Tensor& images,
                                          const Tensor& params, int64_t levels) {
  const Problem p = check_backward_args(grad_nll, images, params, levels, cuda::kDeviceType);
  check_batch(p);
  const c10::cuda::CUDAGuard guard(params.device());
  Tensor grad = at::empty(params.sizes(), params.options());
  if (grad.numel() == 0) return grad;
  const Tensor grad_c = grad_nll.to(compute_dtype(params.scalar_type())).contiguous();
  launch_mixture<true>(images, params, p, &grad, &grad_c, nullptr);
  return grad;
}

// The NLL and its gradient for grad_nll = 1 in one launch: the backward's passes, which know
// each pixel's log-likelihood on the way.
std::tuple<Tensor, Tensor> logistic_mixture_nll_with_grad_cuda(const Tensor& images,
                                                              const Tensor& params,
                                                              int64_t levels) {
  const Problem p = check_nll_args(images, params, levels, cuda::kDeviceType);
  check_batch(p);
  const c10::cuda::CUDAGuard guard(params.device());
  const auto acc = compute_dtype(params.scalar_type());
  Tensor grad = at::empty(params.sizes(), params.options());
  if (p.batch == 0 || p.pixels == 0)
    return {at::zeros({p.batch}, params.options().dtype(acc)), grad};
  Tensor partial = partial_sums(params, p);
  launch_mixture<true>(images, params, p, &grad, nullptr, &partial);
  return {nll_of(partial, params), grad};
}

}  // namespace

GENFAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("logistic_mixture_nll", &logistic_mixture_nll_cuda);
  m.impl("logistic_mixture_nll_backward", &logistic_mixture_nll_backward_cuda);
  m.impl("logistic_mixture_nll_with_grad", &logistic_mixture_nll_with_grad_cuda);
}

}  // namespace genfast::logistic_mixture

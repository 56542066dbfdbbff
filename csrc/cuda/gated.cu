// CUDA kernels of genfast::gated_activation: the Gated PixelCNN's gate y = tanh(a) * sigmoid(b),
// (a, b) = x.chunk(2, dim) (van den Oord et al. 2016, "Conditional Image Generation with
// PixelCNN Decoders", eq. 2), fused forward and backward.
//
// Same semantics and memory layout as the CPU kernels in csrc/gated.cpp: x is walked in its
// memory order as [outer, 2, inner] (row o holds a_o then b_o), y as [outer, inner], and the
// backward recomputes tanh and sigmoid from x. One thread per output element, grid-stride,
// computed in float (double for double). Indices are 32-bit when every offset fits, else 64-bit.
//
// sigmoid and the derivatives come from exponentials of non-positive arguments, which never
// overflow: e = exp(-|b|) gives sigmoid(b) = 1 / (1 + e) (b >= 0) or e / (1 + e) and
// sigmoid' = e / (1 + e)^2; t = exp(-2|a|) gives 1 - tanh(a)^2 = 4t / (1 + t)^2 without the
// cancellation of 1 - tanh^2. tanh itself is the CUDA maths library's.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../gated_common.h"

#include "device_math.cuh"
#include "launch.cuh"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

namespace genfast::gated {
namespace {

using at::Tensor;

constexpr int kThreads = 256;
// Cap on the grid; larger inputs are covered by the grid-stride loop.
constexpr int64_t kMaxBlocks = 65536;

using cuda::acc_type;
using cuda::exp_acc;
using cuda::tanh_acc;

// sigmoid(b), and sigmoid(b) * (1 - sigmoid(b)) when dsig is given.
template <typename A>
__device__ __forceinline__ A sigmoid(A b, A* dsig) {
  const A e = exp_acc(-fabs(b));
  const A q = A(1) / (A(1) + e);
  if (dsig != nullptr) *dsig = e * q * q;
  return b >= A(0) ? q : e * q;  // NaN takes e * q, which is NaN
}

template <typename scalar_t, typename index_t>
__global__ void forward_kernel(scalar_t* __restrict__ y, const scalar_t* __restrict__ x,
                               index_t n, index_t inner) {
  using A = acc_type<scalar_t>;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t j = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n;
       j += stride) {
    const index_t o = j / inner;
    const index_t xa = j + o * inner;  // o * 2 * inner + (j - o * inner)
    const A a = static_cast<A>(x[xa]);
    const A b = static_cast<A>(x[xa + inner]);
    y[j] = static_cast<scalar_t>(tanh_acc(a) * sigmoid<A>(b, nullptr));
  }
}

template <typename scalar_t, typename index_t>
__global__ void backward_kernel(scalar_t* __restrict__ grad_x, const scalar_t* __restrict__ grad_y,
                                const scalar_t* __restrict__ x, index_t n, index_t inner) {
  using A = acc_type<scalar_t>;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t j = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n;
       j += stride) {
    const index_t o = j / inner;
    const index_t xa = j + o * inner;
    const A a = static_cast<A>(x[xa]);
    const A b = static_cast<A>(x[xa + inner]);
    const A dy = static_cast<A>(grad_y[j]);
    const A t = exp_acc(A(-2) * fabs(a));
    const A r = A(1) / (A(1) + t);
    A dsig;
    const A sig = sigmoid<A>(b, &dsig);
    grad_x[xa] = static_cast<scalar_t>(dy * sig * (A(4) * t * r * r));
    grad_x[xa + inner] = static_cast<scalar_t>(dy * tanh_acc(a) * dsig);
  }
}

// ----------------------------------------------------------------------------- layout

int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

// x holds 2n elements, the largest offset any kernel forms.
bool fits_int32(int64_t n) { return 2 * n <= std::numeric_limits<int32_t>::max(); }

Tensor gated_activation_cuda(const Tensor& x, int64_t dim) {
  TORCH_CHECK(cuda::on_device(x), "genfast: gated_activation_cuda needs x on a CUDA device, got ",
              x.device());
  const Layout l = layout_of(x, dim);
  const int64_t d = l.order[l.dim];
  const c10::cuda::CUDAGuard guard(x.device());
  Tensor y = at::empty(halved(x, d), x.options().memory_format(l.format));
  if (y.numel() == 0) return y;
  const Tensor xp = x.permute(l.order).contiguous();
  const Tensor yp = y.permute(l.order);
  TORCH_INTERNAL_ASSERT(yp.is_contiguous());
  const Rows rows = rows_of(xp, l.dim);
  const int64_t n = rows.outer * rows.inner, inner = rows.inner;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gated_activation",
                                  [&] {
    const scalar_t* x_p = xp.const_data_ptr<scalar_t>();
    scalar_t* y_p = yp.mutable_data_ptr<scalar_t>();
    if (fits_int32(n)) {
      GENFAST_LAUNCH(blocks_for(n), kThreads, 0, stream, forward_kernel<scalar_t, int32_t>)(
          y_p, x_p, static_cast<int32_t>(n), static_cast<int32_t>(inner));
    } else {
      GENFAST_LAUNCH(blocks_for(n), kThreads, 0, stream, forward_kernel<scalar_t, int64_t>)(
          y_p, x_p, n, inner);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

Tensor gated_activation_backward_cuda(const Tensor& grad_out, const Tensor& x, int64_t dim) {
  TORCH_CHECK(cuda::on_device(x) && grad_out.device() == x.device(),
              "genfast: gated_activation_backward_cuda needs grad_out and x on one CUDA device");
  const Layout l = layout_of(x, dim);
  const int64_t d = l.order[l.dim];
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(halved(x, d)),
              "genfast: grad_out must have the output's shape ", at::IntArrayRef(halved(x, d)),
              ", got ", grad_out.sizes());
  const c10::cuda::CUDAGuard guard(x.device());
  Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(l.format));
  if (grad_x.numel() == 0) return grad_x;
  const Tensor xp = x.permute(l.order).contiguous();
  const Tensor gyp = grad_out.to(x.scalar_type()).permute(l.order).contiguous();
  const Tensor gxp = grad_x.permute(l.order);
  TORCH_INTERNAL_ASSERT(gxp.is_contiguous());
  const Rows rows = rows_of(xp, l.dim);
  const int64_t n = rows.outer * rows.inner, inner = rows.inner;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "gated_activation_backward", [&] {
        const scalar_t* x_p = xp.const_data_ptr<scalar_t>();
        const scalar_t* gy_p = gyp.const_data_ptr<scalar_t>();
        scalar_t* gx_p = gxp.mutable_data_ptr<scalar_t>();
        if (fits_int32(n)) {
          GENFAST_LAUNCH(blocks_for(n), kThreads, 0, stream, backward_kernel<scalar_t, int32_t>)(
              gx_p, gy_p, x_p, static_cast<int32_t>(n), static_cast<int32_t>(inner));
        } else {
          GENFAST_LAUNCH(blocks_for(n), kThreads, 0, stream, backward_kernel<scalar_t, int64_t>)(
              gx_p, gy_p, x_p, n, inner);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return grad_x;
}

}  // namespace

GENFAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("gated_activation", &gated_activation_cuda);
  m.impl("gated_activation_backward", &gated_activation_backward_cuda);
}

}  // namespace genfast::gated

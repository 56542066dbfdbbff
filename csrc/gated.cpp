// CPU kernels of genfast::gated_activation: the Gated PixelCNN's gate y = tanh(a) * sigmoid(b),
// where a and b are the two halves of x along `dim` (van den Oord et al. 2016, "Conditional
// Image Generation with PixelCNN Decoders", eq. 2), fused forward and backward.
//
// x is read in its memory order (NCHW, or channels-last) as [outer, 2, inner]: row o holds a_o
// then b_o, each `inner` contiguous elements; y is [outer, inner] in the same memory order. The
// backward recomputes tanh and sigmoid from x rather than saving them.
//
// Both are evaluated from exponentials of non-positive arguments, so nothing overflows at any
// |x| (an infinite input gives the limit, NaN stays NaN):
//   t = exp(-2|a|):  tanh(|a|) = 1 - 2t / (1 + t),  1 - tanh(a)^2 = 4t / (1 + t)^2
//   e = exp(-|b|):   sigmoid(b) = 1 / (1 + e) for b >= 0, else e / (1 + e);
//                    sigmoid(b) * (1 - sigmoid(b)) = e / (1 + e)^2
// 1 - 2t / (1 + t) cancels for small |a| (t near 1), so |a| < 0.625 takes tanh(a) = a + a^3 P(a^2)
// instead, P a degree-4 polynomial fitted to float32 for this project (about 1.3 ulp).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>
#include <vector>

#include "cpu/kernel_table.h"
#include "gated_common.h"

namespace genfast::gated {
namespace {

using at::Tensor;

// Output elements per tile of the gather path, and per parallel task at least.
constexpr int64_t kTile = 1024;
constexpr int64_t kGrain = 32768;
// float rows at least this long are processed in place; shorter ones (channels-last with few
// channels, dim = -1 on a small last dimension) are gathered into tiles first.
constexpr int64_t kDirectMinInner = 4 * cpu::kPadLanes<float>;

// The float loops run at the CPU's ISA level (csrc/cpu/kernels/gated.h).
void forward_floats(const float* a, const float* b, float* y, int64_t n) {
  cpu::kernels().gated_forward(a, b, y, n);
}
void backward_floats(const float* a, const float* b, const float* gy, float* ga, float* gb,
                     int64_t n) {
  cpu::kernels().gated_backward(a, b, gy, ga, gb, n);
}

// float64 (gradcheck's dtype): the same identities, one element at a time with std:: maths.
void forward_doubles(const double* a, const double* b, double* y, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const double e = std::exp(-std::abs(b[k])), q = 1.0 / (1.0 + e);
    y[k] = std::tanh(a[k]) * (b[k] >= 0.0 ? q : e * q);
  }
}

void backward_doubles(const double* a, const double* b, const double* gy, double* ga, double* gb,
                      int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const double t = std::exp(-2.0 * std::abs(a[k])), r = 1.0 / (1.0 + t);
    const double e = std::exp(-std::abs(b[k])), q = 1.0 / (1.0 + e);
    const double sig = b[k] >= 0.0 ? q : e * q;
    ga[k] = gy[k] * sig * (4.0 * t * r * r);
    gb[k] = gy[k] * std::tanh(a[k]) * (e * q * q);
  }
}

// ----------------------------------------------------------------------------- the loops

// x as [outer, 2, inner] and the flat [outer * inner] output index space.
// Calls f(row_offset_in_x, flat_output_index, length) for each run of [begin, end) that lies in
// one row.
template <typename F>
void for_each_run(const Rows& s, int64_t begin, int64_t end, F&& f) {
  int64_t j = begin;
  while (j < end) {
    const int64_t o = j / s.inner, i = j - o * s.inner;
    const int64_t len = std::min(s.inner - i, end - j);
    f(o * 2 * s.inner + i, j, len);
    j += len;
  }
}

// Copies a and b of output elements [j0, j0 + n) to float tiles.
template <typename scalar_t>
void gather(const scalar_t* x, const Rows& s, int64_t j0, int64_t n, float* a, float* b) {
  for_each_run(s, j0, j0 + n, [&](int64_t xi, int64_t j, int64_t len) {
    std::copy(x + xi, x + xi + len, a + (j - j0));
    std::copy(x + xi + s.inner, x + xi + s.inner + len, b + (j - j0));
  });
}

template <typename scalar_t>
void forward_range(const scalar_t* x, scalar_t* y, const Rows& s, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    for_each_run(s, begin, end, [&](int64_t xi, int64_t j, int64_t len) {
      forward_doubles(x + xi, x + xi + s.inner, y + j, len);
    });
    return;
  } else {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (s.inner >= kDirectMinInner) {
        for_each_run(s, begin, end, [&](int64_t xi, int64_t j, int64_t len) {
          forward_floats(x + xi, x + xi + s.inner, y + j, len);
        });
        return;
      }
    }
    alignas(64) float a[kTile], b[kTile], out[kTile];
    for (int64_t j0 = begin; j0 < end; j0 += kTile) {
      const int64_t n = std::min(kTile, end - j0);
      gather(x, s, j0, n, a, b);
      forward_floats(a, b, out, n);
      std::copy(out, out + n, y + j0);
    }
  }
}

template <typename scalar_t>
void backward_range(const scalar_t* x, const scalar_t* gy, scalar_t* gx, const Rows& s,
                    int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    for_each_run(s, begin, end, [&](int64_t xi, int64_t j, int64_t len) {
      backward_doubles(x + xi, x + xi + s.inner, gy + j, gx + xi, gx + xi + s.inner, len);
    });
    return;
  } else {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (s.inner >= kDirectMinInner) {
        for_each_run(s, begin, end, [&](int64_t xi, int64_t j, int64_t len) {
          backward_floats(x + xi, x + xi + s.inner, gy + j, gx + xi, gx + xi + s.inner, len);
        });
        return;
      }
    }
    alignas(64) float a[kTile], b[kTile], g[kTile], ga[kTile], gb[kTile];
    for (int64_t j0 = begin; j0 < end; j0 += kTile) {
      const int64_t n = std::min(kTile, end - j0);
      gather(x, s, j0, n, a, b);
      std::copy(gy + j0, gy + j0 + n, g);
      backward_floats(a, b, g, ga, gb, n);
      for_each_run(s, j0, j0 + n, [&](int64_t xi, int64_t j, int64_t len) {
        std::copy(ga + (j - j0), ga + (j - j0) + len, gx + xi);
        std::copy(gb + (j - j0), gb + (j - j0) + len, gx + xi + s.inner);
      });
    }
  }
}

// ----------------------------------------------------------------------------- layout

Tensor gated_activation_cpu(const Tensor& x, int64_t dim) {
  TORCH_CHECK(x.device().is_cpu(), "genfast: gated_activation_cpu needs x on the CPU, got ",
              x.device());
  const Layout l = layout_of(x, dim);
  const int64_t d = l.order[l.dim];
  Tensor y = at::empty(halved(x, d), x.options().memory_format(l.format));
  const Tensor xp = x.permute(l.order).contiguous();
  const Tensor yp = y.permute(l.order);
  TORCH_INTERNAL_ASSERT(yp.is_contiguous());
  const Rows s = rows_of(xp, l.dim);
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gated_activation",
                                  [&] {
                                    const scalar_t* x_p = xp.const_data_ptr<scalar_t>();
                                    scalar_t* y_p = yp.mutable_data_ptr<scalar_t>();
                                    at::parallel_for(0, s.outer * s.inner, kGrain,
                                                     [&](int64_t begin, int64_t end) {
                                                       forward_range(x_p, y_p, s, begin, end);
                                                     });
                                  });
  return y;
}

Tensor gated_activation_backward_cpu(const Tensor& grad_out, const Tensor& x, int64_t dim) {
  TORCH_CHECK(x.device().is_cpu() && grad_out.device().is_cpu(),
              "genfast: gated_activation_backward_cpu needs grad_out and x on the CPU");
  const Layout l = layout_of(x, dim);
  const int64_t d = l.order[l.dim];
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(halved(x, d)),
              "genfast: grad_out must have the output's shape ", at::IntArrayRef(halved(x, d)),
              ", got ", grad_out.sizes());
  Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(l.format));
  const Tensor xp = x.permute(l.order).contiguous();
  const Tensor gyp = grad_out.to(x.scalar_type()).permute(l.order).contiguous();
  const Tensor gxp = grad_x.permute(l.order);
  TORCH_INTERNAL_ASSERT(gxp.is_contiguous());
  const Rows s = rows_of(xp, l.dim);
  if (grad_x.numel() == 0) return grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "gated_activation_backward", [&] {
        const scalar_t* x_p = xp.const_data_ptr<scalar_t>();
        const scalar_t* gy_p = gyp.const_data_ptr<scalar_t>();
        scalar_t* gx_p = gxp.mutable_data_ptr<scalar_t>();
        at::parallel_for(0, s.outer * s.inner, kGrain, [&](int64_t begin, int64_t end) {
          backward_range(x_p, gy_p, gx_p, s, begin, end);
        });
      });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("gated_activation", &gated_activation_cpu);
  m.impl("gated_activation_backward", &gated_activation_backward_cpu);
}

}  // namespace genfast::gated

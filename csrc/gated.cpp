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

#include "cpu/simd_math.h"
#include "gated_common.h"

namespace genfast::gated {
namespace {

using at::Tensor;
using simd::kLanes;
using simd::vfloat;
using simd::vint;

// Output elements per tile of the gather path, and per parallel task at least.
constexpr int64_t kTile = 1024;
constexpr int64_t kGrain = 32768;
// float rows at least this long are processed in place; shorter ones (channels-last with few
// channels, dim = -1 on a small last dimension) are gathered into tiles first.
constexpr int64_t kDirectMinInner = 4 * kLanes;

// ----------------------------------------------------------------------------- the maths

GENFAST_SIMD_INLINE vfloat abs(vfloat x) {
  return reinterpret_cast<vfloat>(reinterpret_cast<vint>(x) & 0x7fffffff);
}
GENFAST_SIMD_INLINE vfloat with_sign_of(vfloat magnitude, vfloat sign) {
  const vint sign_bit = reinterpret_cast<vint>(sign) & static_cast<int32_t>(0x80000000u);
  return reinterpret_cast<vfloat>(reinterpret_cast<vint>(magnitude) | sign_bit);
}

struct Gate {
  vfloat tanh_a;   // tanh(a)
  vfloat sech2_a;  // 1 - tanh(a)^2 (backward only)
  vfloat sig_b;    // sigmoid(b)
  vfloat dsig_b;   // sigmoid(b) * (1 - sigmoid(b)) (backward only)
};

template <bool kBackward>
GENFAST_SIMD_INLINE Gate gate(vfloat a, vfloat b) {
  Gate g;
  const vfloat abs_a = abs(a);
  const vfloat t = simd::exp(-2.0f * abs_a);
  const vfloat r = 1.0f / (1.0f + t);
  const vfloat z = abs_a * abs_a;
  vfloat p = simd::splat(-5.7049848004e-3f);
  p = p * z + 2.0639085375e-2f;
  p = p * z - 5.3739714545e-2f;
  p = p * z + 1.3331442192e-1f;
  p = p * z - 3.3333281942e-1f;
  const vfloat small = abs_a + abs_a * z * p;
  const vfloat large = 1.0f - 2.0f * t * r;
  g.tanh_a = with_sign_of(simd::select(abs_a < simd::splat(0.625f), small, large), a);

  const vfloat e = simd::exp(-abs(b));
  const vfloat q = 1.0f / (1.0f + e);
  // b >= 0 is false for NaN, which then flows through e * q.
  g.sig_b = simd::select(b >= simd::splat(0.0f), q, e * q);
  if constexpr (kBackward) {
    g.sech2_a = 4.0f * t * r * r;
    g.dsig_b = e * q * q;
  }
  return g;
}

// y[k] = tanh(a[k]) * sigmoid(b[k]), k < n; the last partial vector goes through a buffer.
GENFAST_TARGET_CLONES
void forward_floats(const float* __restrict a, const float* __restrict b, float* __restrict y,
                    int64_t n) {
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    const Gate g = gate<false>(simd::load(a + k), simd::load(b + k));
    simd::store(y + k, g.tanh_a * g.sig_b);
  }
  if (k < n) {
    alignas(64) float ab[kLanes] = {}, bb[kLanes] = {}, yb[kLanes];
    std::copy(a + k, a + n, ab);
    std::copy(b + k, b + n, bb);
    const Gate g = gate<false>(simd::load(ab), simd::load(bb));
    simd::store(yb, g.tanh_a * g.sig_b);
    std::copy(yb, yb + (n - k), y + k);
  }
}

// dL/da = dL/dy * sigmoid(b) * (1 - tanh(a)^2), dL/db = dL/dy * tanh(a) * sigmoid'(b).
GENFAST_TARGET_CLONES
void backward_floats(const float* __restrict a, const float* __restrict b,
                     const float* __restrict gy, float* __restrict ga, float* __restrict gb,
                     int64_t n) {
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    const Gate g = gate<true>(simd::load(a + k), simd::load(b + k));
    const vfloat dy = simd::load(gy + k);
    simd::store(ga + k, dy * g.sig_b * g.sech2_a);
    simd::store(gb + k, dy * g.tanh_a * g.dsig_b);
  }
  if (k < n) {
    alignas(64) float ab[kLanes] = {}, bb[kLanes] = {}, gyb[kLanes] = {}, gab[kLanes], gbb[kLanes];
    std::copy(a + k, a + n, ab);
    std::copy(b + k, b + n, bb);
    std::copy(gy + k, gy + n, gyb);
    const Gate g = gate<true>(simd::load(ab), simd::load(bb));
    const vfloat dy = simd::load(gyb);
    simd::store(gab, dy * g.sig_b * g.sech2_a);
    simd::store(gbb, dy * g.tanh_a * g.dsig_b);
    std::copy(gab, gab + (n - k), ga + k);
    std::copy(gbb, gbb + (n - k), gb + k);
  }
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

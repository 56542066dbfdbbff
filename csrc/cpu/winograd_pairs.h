// Winograd's minimal filtering (Lavin and Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2016) for the weight gradient of a convolution of k = 2 or 3 taps along a row,
//   dW[t] = sum over positions l of g[l] * s[l + t]     (g: output gradient, s: the input read)
// summed over pairs of positions (2m, 2m + 1), whose 2k products share the inputs s[2m..2m+k]:
// k + 1 products of transformed values do the work of 2k,
//   P[j] = sum over pairs of gp[j] * sp[j],   dW[t] = sum over j of A[j][t] * P[j]
//   k = 3: gp = (g0, g0 + g1, g0 - g1, g1),  sp = (s0 - s2, s1 + s2, s2 - s1, s3 - s1),
//          dW = (P0 + (P1 + P2) / 2, (P1 - P2) / 2, (P1 + P2) / 2 + P3)
//   k = 2: gp = (g0, g0 + g1, g1),           sp = (s0 - s1, s1, s2 - s1),
//          dW = (P0 + P1, P1 + P2)
// (g0, g1 = g[2m], g[2m + 1]; s_q = s[2m + q]). That is 1.5x fewer multiply-adds for k = 3 and
// 1.33x for k = 2; every coefficient is 0, +-1 or 1/2, so the rounding stays that of a plain sum.
#pragma once
#include <cstdint>

namespace genfast::cpu::winograd {

// The products per pair for a k-tap kernel, or 0 where this transform does not apply.
constexpr int64_t products(int64_t taps) { return taps == 2 || taps == 3 ? taps + 1 : 0; }
constexpr int64_t pairs(int64_t length) { return (length + 1) / 2; }

// The gradient side, `rows` rows of `length` values (g + n * g_stride; a missing g[length] of an
// odd length is zero): out[(j * rows + n) * out_stride + m] = gp[j] of pair m, for m <
// pairs(length); the values up to round_up(pairs, SIMD width) are written too (out_stride must
// leave room for them). The row's values may be read whole vectors at a time up to `readable`
// (the end of g's buffer).
void gradient_pairs(const float* g, int64_t g_stride, int64_t rows, int64_t length,
                    int64_t taps, const float* readable, float* out, int64_t out_stride);
void gradient_pairs(const double* g, int64_t g_stride, int64_t rows, int64_t length,
                    int64_t taps, const double* readable, double* out, int64_t out_stride);

// The input side, position-major: s[q * width + c] for q < 2 * pairs + taps - 1 and c < width
// (a multiple of the SIMD width) gives out[(j * pairs + m) * width + c] = sp[j] of pair m.
void source_pairs(const float* s, int64_t pairs, int64_t width, int64_t taps, float* out);
void source_pairs(const double* s, int64_t pairs, int64_t width, int64_t taps, double* out);

// dW[t] from the products P[j] = p[j * stride].
template <typename T>
inline T tap_from_products(int64_t taps, int64_t t, const T* p, int64_t stride) {
  const T p0 = p[0], p1 = p[stride], p2 = p[2 * stride];
  if (taps == 2) return t == 0 ? p0 + p1 : p1 + p2;
  const T half = T(0.5);
  if (t == 1) return (p1 - p2) * half;
  return t == 0 ? p0 + (p1 + p2) * half : (p1 + p2) * half + p[3 * stride];
}

}  // namespace genfast::cpu::winograd

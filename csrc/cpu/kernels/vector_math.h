// The one vector maths layer of the CPU kernels: float32 vectors of the ISA level this
// translation unit is compiled for (csrc/cpu/isa/*.cpp), and branch-free exp, log, sigmoid,
// tanh and sin/cos(2*pi*u) on them. Every kernel takes its maths from here.
// exp and log are the classic Cephes single-precision polynomials (within about 2 ulp); tanh
// uses Cephes' tanhf polynomial below |x| = 0.625 and (1 - t) / (1 + t), t = exp(-2|x|), above.
#pragma once
#ifndef GENFAST_ISA_NS
#error "compiled only inside an ISA translation unit (csrc/cpu/isa/*.cpp)"
#endif
#include <cstdint>
#include <cstring>

namespace genfast::cpu::GENFAST_ISA_NS::simd {

constexpr int kBytes = GENFAST_VECTOR_BYTES;
constexpr int kLanes = kBytes / 4;
typedef float vfloat __attribute__((vector_size(kBytes)));
typedef int32_t vint __attribute__((vector_size(kBytes)));
typedef uint32_t vuint __attribute__((vector_size(kBytes)));

#define GENFAST_SIMD_INLINE inline __attribute__((always_inline))

GENFAST_SIMD_INLINE vfloat load(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
GENFAST_SIMD_INLINE void store(float* p, vfloat v) { std::memcpy(p, &v, sizeof(v)); }
// x - 0 folds to a broadcast for every x; 0 + x would need an add (it maps -0 to +0).
GENFAST_SIMD_INLINE vfloat splat(float x) { return x - vfloat{}; }
GENFAST_SIMD_INLINE vfloat select(vint mask, vfloat a, vfloat b) {
  return reinterpret_cast<vfloat>((mask & reinterpret_cast<vint>(a)) |
                                  (~mask & reinterpret_cast<vint>(b)));
}
GENFAST_SIMD_INLINE vfloat abs(vfloat x) {
  return reinterpret_cast<vfloat>(reinterpret_cast<vint>(x) & 0x7fffffff);
}
GENFAST_SIMD_INLINE vfloat with_sign_of(vfloat magnitude, vfloat sign) {
  const vint sign_bit = reinterpret_cast<vint>(sign) & static_cast<int32_t>(0x80000000u);
  return reinterpret_cast<vfloat>(reinterpret_cast<vint>(magnitude) | sign_bit);
}
// Round to nearest (ties to even) for |x| < 2^22: adding 1.5 * 2^23 pushes the fraction out.
GENFAST_SIMD_INLINE vfloat round_nearest(vfloat x) {
  const vfloat shifter = splat(12582912.0f);
  return (x + shifter) - shifter;
}
GENFAST_SIMD_INLINE vfloat sqrt(vfloat x) {
  vfloat r;
  for (int i = 0; i < kLanes; ++i) r[i] = __builtin_sqrtf(x[i]);
  return r;
}

// exp(x): x = n*ln2 + r with |r| <= ln2/2, exp(r) by polynomial, 2^n built in the exponent as
// 2^(n/2) * 2^(n - n/2): n runs from -126 to 128, past what one exponent field holds.
// Overflows to inf above ln(FLT_MAX), flushes results below FLT_MIN to zero, keeps NaN.
GENFAST_SIMD_INLINE vfloat exp(vfloat x) {
  const vfloat hi = splat(88.72283935546875f), lo = splat(-87.3365447505531f);
  vfloat xc = x < hi ? x : hi;
  xc = xc > lo ? xc : lo;
  const vfloat n = round_nearest(xc * 1.44269504088896341f);
  const vfloat r = xc - n * 0.693359375f - n * -2.12194440e-4f;
  vfloat p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const vint ni = __builtin_convertvector(n, vint), half = ni >> 1;
  const vfloat scale_a = reinterpret_cast<vfloat>((half + 127) << 23);
  const vfloat scale_b = reinterpret_cast<vfloat>((ni - half + 127) << 23);
  vfloat y = p * scale_a * scale_b;
  y = select(x > hi, splat(__builtin_inff()), y);
  y = select(x < lo, splat(0.0f), y);
  return select(x != x, x, y);
}

// log(x): x = m * 2^e with m in [sqrt(1/2), sqrt(2)), subnormals scaled up by 2^23 first;
// log(0) = -inf, log(inf) = inf, NaN for x < 0 and for NaN.
GENFAST_SIMD_INLINE vfloat log(vfloat x) {
  const vint subnormal = x < splat(1.17549435e-38f);
  const vint bits = reinterpret_cast<vint>(select(subnormal, x * 8388608.0f, x));
  vfloat e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, vfloat);
  e = select(subnormal, e - 23.0f, e);
  vfloat m = reinterpret_cast<vfloat>((bits & 0x807fffff) | 0x3f000000);  // in [0.5, 1)
  const vint small = m < splat(0.707106781186547524f);
  e = select(small, e - 1.0f, e);
  m = select(small, m + m, m) - 1.0f;
  const vfloat z = m * m;
  vfloat p = splat(7.0376836292e-2f);
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  const vfloat y = p * m * z + e * -2.12194440e-4f - 0.5f * z;
  vfloat r = m + y + e * 0.693359375f;
  const vfloat inf = splat(__builtin_inff());
  r = select(x == inf, inf, r);
  r = select(x == splat(0.0f), -inf, r);
  return select(x < splat(0.0f) || x != x, splat(__builtin_nanf("")), r);
}

// sigmoid and tanh both come from exp of a non-positive argument, so nothing overflows and NaN
// propagates. Each is split into its exponential and a finish given inv = 1 / (1 + e), so that
// a caller with several gates (the LSTM cell) can share one division among them.
// sigmoid(x) = inv for x >= 0 and e * inv otherwise, with e = exp(-|x|).
GENFAST_SIMD_INLINE vfloat sigmoid_finish(vfloat x, vfloat e, vfloat inv) {
  return select(x >= splat(0.0f), inv, e * inv);  // false for NaN, which flows through e * inv
}
// tanh(x) = sign(x) (1 - t) * inv with t = exp(-2|x|), inv = 1 / (1 + t); (1 - t) cancels for
// small |x|, where Cephes' odd polynomial is used instead.
GENFAST_SIMD_INLINE vfloat tanh_finish(vfloat x, vfloat t, vfloat inv) {
  const vfloat a = abs(x), z = a * a;
  vfloat p = splat(-5.7049848004e-3f);
  p = p * z + 2.0639085375e-2f;
  p = p * z - 5.3739714545e-2f;
  p = p * z + 1.3331442192e-1f;
  p = p * z - 3.3333281942e-1f;
  const vfloat small = a + a * z * p;
  return with_sign_of(select(a < splat(0.625f), small, (1.0f - t) * inv), x);
}
GENFAST_SIMD_INLINE vfloat sigmoid(vfloat x) {
  const vfloat e = exp(-abs(x));
  return sigmoid_finish(x, e, 1.0f / (1.0f + e));
}
GENFAST_SIMD_INLINE vfloat tanh(vfloat x) {
  const vfloat t = exp(-2.0f * abs(x));
  return tanh_finish(x, t, 1.0f / (1.0f + t));
}

// cos and sin of 2*pi*u for any finite u. Whole turns and quarter turns are removed exactly in
// float arithmetic first, leaving an angle in [-pi/4, pi/4] for the polynomials.
GENFAST_SIMD_INLINE void sincos_turns(vfloat u, vfloat* cos_out, vfloat* sin_out) {
  const vfloat quarters = 4.0f * (u - round_nearest(u));  // in [-2, 2]
  const vfloat q = round_nearest(quarters);
  const vfloat t = (quarters - q) * 1.57079632679489662f;  // in [-pi/4, pi/4]
  const vfloat t2 = t * t;
  const vfloat s =
      ((-1.9515295891e-4f * t2 + 8.3321608736e-3f) * t2 - 1.6666654611e-1f) * t2 * t + t;
  const vfloat c = ((2.443315711809948e-5f * t2 - 1.388731625493765e-3f) * t2 +
                    4.166664568298827e-2f) * t2 * t2 - 0.5f * t2 + 1.0f;
  // Rotate by q quarter turns: q mod 4 picks (cos, sin) among (c, s), (-s, c), (-c, -s), (s, -c).
  // Masks and sign flips come from the bits of q: integer vector compares would be scalarised.
  const vint quadrant = __builtin_convertvector(q, vint) & 3;
  const vint swap = -(quadrant & 1);
  const vfloat cos_v = select(swap, s, c), sin_v = select(swap, c, s);
  const vint cos_sign = (((quadrant + 1) >> 1) & 1) << 31;  // quadrants 1 and 2
  const vint sin_sign = ((quadrant >> 1) & 1) << 31;        // quadrants 2 and 3
  *cos_out = reinterpret_cast<vfloat>(reinterpret_cast<vint>(cos_v) ^ cos_sign);
  *sin_out = reinterpret_cast<vfloat>(reinterpret_cast<vint>(sin_v) ^ sin_sign);
}

// fn(x) over n floats (any n), for the accuracy tests of this layer at every ISA level.
template <typename Fn>
GENFAST_SIMD_INLINE void apply(const float* x, float* y, int64_t n, Fn fn) {
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) store(y + k, fn(load(x + k)));
  if (k < n) {
    alignas(64) float in[kLanes] = {}, out[kLanes];
    std::memcpy(in, x + k, sizeof(float) * (n - k));
    store(out, fn(load(in)));
    std::memcpy(y + k, out, sizeof(float) * (n - k));
  }
}

}  // namespace genfast::cpu::GENFAST_ISA_NS::simd

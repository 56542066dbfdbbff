// Branch-free float32 exp, log and sin/cos(2*pi*u) on GCC/Clang vector extensions, so the
// CPU kernels vectorise at whatever width the compiler targets (see GENFAST_TARGET_CLONES).
// Polynomials are the classic Cephes single-precision ones; each is within about 2 ulp.
#pragma once
#include <cstdint>
#include <cstring>

namespace genfast::simd {

constexpr int kLanes = 16;
typedef float vfloat __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t vint __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef uint32_t vuint __attribute__((vector_size(kLanes * sizeof(uint32_t))));
typedef uint64_t vulong __attribute__((vector_size(kLanes * sizeof(uint64_t))));

// Multiversioned hot loops: one clone per ISA level, chosen once at load time (ifunc).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define GENFAST_TARGET_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GENFAST_TARGET_CLONES
#endif

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

// exp(x): x = n*ln2 + r with |r| <= ln2/2, exp(r) by polynomial, 2^n built in the exponent.
GENFAST_SIMD_INLINE vfloat exp(vfloat x) {
  const vfloat clamped_hi = splat(88.3762626647949f), clamped_lo = splat(-87.3365447505531f);
  vfloat xc = x < clamped_hi ? x : clamped_hi;
  xc = xc > clamped_lo ? xc : clamped_lo;
  vfloat n = round_nearest(xc * 1.44269504088896341f);
  vfloat r = xc - n * 0.693359375f - n * -2.12194440e-4f;
  vfloat p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  vint scale_bits = (__builtin_convertvector(n, vint) + 127) << 23;
  vfloat y = p * reinterpret_cast<vfloat>(scale_bits);
  // Past the clamps: overflow to inf, flush underflow to zero, and let NaN through.
  y = select(x > splat(88.72283935546875f), splat(__builtin_inff()), y);
  y = select(x < clamped_lo, splat(0.0f), y);
  return select(x != x, x, y);
}

// log(x) for finite x > 0 (normal numbers): x = m * 2^e with m in [sqrt(1/2), sqrt(2)).
GENFAST_SIMD_INLINE vfloat log(vfloat x) {
  vint bits = reinterpret_cast<vint>(x);
  vfloat e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, vfloat);
  vfloat m = reinterpret_cast<vfloat>((bits & 0x807fffff) | 0x3f000000);  // in [0.5, 1)
  vint small = m < splat(0.707106781186547524f);
  e = select(small, e - 1.0f, e);
  m = select(small, m + m, m) - 1.0f;
  vfloat z = m * m;
  vfloat p = splat(7.0376836292e-2f);
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  vfloat y = p * m * z + e * -2.12194440e-4f - 0.5f * z;
  return m + y + e * 0.693359375f;
}

// cos and sin of 2*pi*u for any finite u. Whole turns and quarter turns are removed exactly in
// float arithmetic first, leaving an angle in [-pi/4, pi/4] for the polynomials.
GENFAST_SIMD_INLINE void sincos_turns(vfloat u, vfloat* cos_out, vfloat* sin_out) {
  vfloat quarters = 4.0f * (u - round_nearest(u));  // in [-2, 2]
  vfloat q = round_nearest(quarters);
  vfloat t = (quarters - q) * 1.57079632679489662f;  // in [-pi/4, pi/4]
  vfloat t2 = t * t;
  vfloat s = ((-1.9515295891e-4f * t2 + 8.3321608736e-3f) * t2 - 1.6666654611e-1f) * t2 * t + t;
  vfloat c = ((2.443315711809948e-5f * t2 - 1.388731625493765e-3f) * t2 +
              4.166664568298827e-2f) * t2 * t2 - 0.5f * t2 + 1.0f;
  // Rotate by q quarter turns: q mod 4 picks (cos, sin) among (c, s), (-s, c), (-c, -s), (s, -c).
  // Masks and sign flips come from the bits of q: integer vector compares would be scalarised.
  vint quadrant = __builtin_convertvector(q, vint) & 3;
  vint swap = -(quadrant & 1);
  vfloat cos_v = select(swap, s, c), sin_v = select(swap, c, s);
  vint cos_sign = (((quadrant + 1) >> 1) & 1) << 31;  // quadrants 1 and 2
  vint sin_sign = ((quadrant >> 1) & 1) << 31;        // quadrants 2 and 3
  *cos_out = reinterpret_cast<vfloat>(reinterpret_cast<vint>(cos_v) ^ cos_sign);
  *sin_out = reinterpret_cast<vfloat>(reinterpret_cast<vint>(sin_v) ^ sin_sign);
}

}  // namespace genfast::simd

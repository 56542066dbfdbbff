// The cell maths of genfast::lstm_rows on the CPU; see lstm_cell.h and csrc/lstm_row.cpp.
#include "lstm_cell.h"

#include <algorithm>
#include <cmath>

#include "simd_math.h"

namespace genfast::lstm_row {

using simd::kLanes;
using simd::vfloat;
using simd::vint;

// ----------------------------------------------------------------------------- cell maths

GENFAST_SIMD_INLINE vfloat vabs(vfloat x) {
  return reinterpret_cast<vfloat>(reinterpret_cast<vint>(x) & 0x7fffffff);
}

// exp(x) for x <= 0, the only arguments the gates need; NaN propagates. Cheaper than simd::exp,
// which handles overflow and infinities too: this is the most executed code of the cell maths.
// x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two so that n * kLn2Hi is exact), exp(r) from
// its Taylor series to r^7 (the next term is under 6e-9 relative), 2^n built in the exponent
// bits: adding 1.5 * 2^23 to x / ln2 rounds it and leaves n in the low mantissa bits. Below
// -87.3 the result is 2^-126-ish instead of 0, which no gate can tell apart.
GENFAST_SIMD_INLINE vfloat exp_nonpositive(vfloat x) {
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  const vfloat lowest = simd::splat(-87.33f);
  x = x < lowest ? lowest : x;
  const vfloat shifted = x * 1.44269504088896341f + 12582912.0f;
  const vfloat n = shifted - 12582912.0f;
  const vfloat r = (x - n * kLn2Hi) - n * kLn2Lo;
  vfloat p = simd::splat(1.0f / 5040);
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vint scale = (reinterpret_cast<vint>(shifted) << 23) + (127 << 23);
  return p * reinterpret_cast<vfloat>(scale);
}

// Both nonlinearities come from exp of a non-positive argument, so nothing overflows, and NaN
// propagates. sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) otherwise, with e = exp(-|x|);
// tanh(|x|) = (1 - t) / (1 + t) with t = exp(-2|x|). Each is split into the exponential and
// the finish given 1 / (1 + e), so that the four gates can share one division.
GENFAST_SIMD_INLINE vfloat sigmoid_finish(vfloat x, vfloat e, vfloat inv) {
  return simd::select(x >= simd::splat(0.0f), inv, e * inv);
}
// (1 - t) / (1 + t) cancels below |x| = 1/4: the Taylor series to x^9 is used there instead (the
// next term is under 1e-8 relative).
GENFAST_SIMD_INLINE vfloat tanh_finish(vfloat x, vfloat t, vfloat inv) {
  const vfloat a = vabs(x), z = a * a;
  const vfloat series =
      a + a * z * (-1.0f / 3 + z * (2.0f / 15 + z * (-17.0f / 315 + z * (62.0f / 2835))));
  const vfloat m = simd::select(a < simd::splat(0.25f), series, (1.0f - t) * inv);
  const vint sign = reinterpret_cast<vint>(x) & static_cast<int32_t>(0x80000000u);
  return reinterpret_cast<vfloat>(reinterpret_cast<vint>(m) | sign);
}
GENFAST_SIMD_INLINE vfloat tanh(vfloat x) {
  const vfloat t = exp_nonpositive(-2.0f * vabs(x));
  return tanh_finish(x, t, 1.0f / (1.0f + t));
}

static double sigmoid(double x) {
  const double e = std::exp(-std::abs(x)), q = 1.0 / (1.0 + e);
  return x >= 0.0 ? q : e * q;
}

// ----------------------------------------------------------------------------- the cells

// The n values from p into the L2 cache (kWrite: for an output): see ForwardRun::ahead.
template <int kWrite, typename T>
GENFAST_SIMD_INLINE void prefetch(const T* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t bytes = n * static_cast<int64_t>(sizeof(T));
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, kWrite, 2);
  __builtin_prefetch(c + bytes - 1, kWrite, 2);
}

// Loads and stores of lanes [l0, l0 + kLanes) of a run; kShort: the whole run is shorter than a
// vector and goes through a zero-padded copy.
template <bool kShort>
GENFAST_SIMD_INLINE vfloat ld(const float* p, int64_t n, int64_t l0) {
  if constexpr (kShort) {
    alignas(64) float t[kLanes] = {};
    for (int64_t l = 0; l < n; ++l) t[l] = p[l];
    return simd::load(t);
  } else {
    (void)n;
    return simd::load(p + l0);
  }
}
template <bool kShort>
GENFAST_SIMD_INLINE void st(float* p, int64_t n, int64_t l0, vfloat v) {
  if constexpr (kShort) {
    alignas(64) float t[kLanes];
    simd::store(t, v);
    for (int64_t l = 0; l < n; ++l) p[l] = t[l];
  } else {
    (void)n;
    simd::store(p + l0, v);
  }
}

// The bias runs are readable a whole vector past l0 even in a short run (see ForwardRun), so they
// are loaded directly: the lanes past the run compute values no one stores.
template <bool kShort>
GENFAST_SIMD_INLINE void forward_vector(const ForwardRun<float>& q, int64_t n, int64_t l0) {
  const vfloat xi =
      ld<kShort>(q.pre[0], n, l0) + ld<kShort>(q.in[0], n, l0) + simd::load(q.bias[0] + l0);
  const vfloat xf =
      ld<kShort>(q.pre[1], n, l0) + ld<kShort>(q.in[1], n, l0) + simd::load(q.bias[1] + l0);
  const vfloat xo =
      ld<kShort>(q.pre[2], n, l0) + ld<kShort>(q.in[2], n, l0) + simd::load(q.bias[2] + l0);
  const vfloat xg =
      ld<kShort>(q.pre[3], n, l0) + ld<kShort>(q.in[3], n, l0) + simd::load(q.bias[3] + l0);
  const vfloat ei = exp_nonpositive(-vabs(xi)), ef = exp_nonpositive(-vabs(xf));
  const vfloat eo = exp_nonpositive(-vabs(xo)), tg = exp_nonpositive(-2.0f * vabs(xg));
  // 1 / (1 + e) of all four from one division: each denominator is in [1, 2].
  const vfloat di = 1.0f + ei, df = 1.0f + ef, dout = 1.0f + eo, dg = 1.0f + tg;
  const vfloat dif = di * df, dog = dout * dg, inv = 1.0f / (dif * dog);
  const vfloat i = sigmoid_finish(xi, ei, df * dog * inv);
  const vfloat f = sigmoid_finish(xf, ef, di * dog * inv);
  const vfloat o = sigmoid_finish(xo, eo, dg * dif * inv);
  const vfloat g = tanh_finish(xg, tg, dout * dif * inv);
  const vfloat c = f * ld<kShort>(q.c_prev, n, l0) + i * g;
  const vfloat h = o * tanh(c);
  st<kShort>(q.gates[0], n, l0, i);
  st<kShort>(q.gates[1], n, l0, f);
  st<kShort>(q.gates[2], n, l0, o);
  st<kShort>(q.gates[3], n, l0, g);
  st<kShort>(q.c, n, l0, c);
  st<kShort>(q.h, n, l0, h);
  st<kShort>(q.state, n, l0, h);
}

// Every output lane is a function of input lanes alone, and no input is an output, so the last
// vector may overlap the one before it.
GENFAST_TARGET_CLONES
void forward_run(const ForwardRun<float>& q, int64_t n) {
  if (q.ahead) {
    for (int g = 0; g < 4; ++g) {
      prefetch<0>(q.in[g] + q.ahead, n);
      prefetch<1>(q.gates[g] + q.gates_ahead, n);
    }
    prefetch<1>(q.c + q.ahead, n);
    prefetch<1>(q.h + q.ahead, n);
  }
  if (n < kLanes) {
    forward_vector<true>(q, n, 0);
    return;
  }
  for (int64_t l = 0; l < n; l += kLanes) forward_vector<false>(q, n, std::min(l, n - kLanes));
}

void forward_run(const ForwardRun<double>& q, int64_t n) {
  for (int64_t l = 0; l < n; ++l) {
    const double i = sigmoid(q.pre[0][l] + q.in[0][l] + q.bias[0][l]);
    const double f = sigmoid(q.pre[1][l] + q.in[1][l] + q.bias[1][l]);
    const double o = sigmoid(q.pre[2][l] + q.in[2][l] + q.bias[2][l]);
    const double g = std::tanh(q.pre[3][l] + q.in[3][l] + q.bias[3][l]);
    const double c = f * q.c_prev[l] + i * g;
    q.gates[0][l] = i, q.gates[1][l] = f, q.gates[2][l] = o, q.gates[3][l] = g;
    q.c[l] = c;
    q.h[l] = q.state[l] = o * std::tanh(c);
  }
}

// dL/dh_r = grad_h + dh, dL/dc_r = grad_c + dc_in + dL/dh_r o (1 - tanh(c_r)^2); from them the
// gate gradients dL/dpre, and dL/dc_{r-1} = dL/dc_r f through the forget gate.
template <bool kShort>
GENFAST_SIMD_INLINE void backward_vector(const BackwardRun<float>& q, int64_t n, int64_t l0) {
  const vfloat i = ld<kShort>(q.act[0], n, l0), f = ld<kShort>(q.act[1], n, l0);
  const vfloat o = ld<kShort>(q.act[2], n, l0), g = ld<kShort>(q.act[3], n, l0);
  const vfloat grad_h = q.grad_h ? ld<kShort>(q.grad_h, n, l0) : simd::splat(q.grad_h_value);
  const vfloat grad_c = q.grad_c ? ld<kShort>(q.grad_c, n, l0) : simd::splat(q.grad_c_value);
  const vfloat tc = tanh(ld<kShort>(q.c, n, l0));
  const vfloat dh = ld<kShort>(q.dh, n, l0) + grad_h;
  const vfloat dc = ld<kShort>(q.dc_in, n, l0) + grad_c + dh * o * (1.0f - tc * tc);
  const vfloat di = dc * g * i * (1.0f - i);
  const vfloat df = dc * ld<kShort>(q.c_prev, n, l0) * f * (1.0f - f);
  const vfloat dout = dh * tc * o * (1.0f - o);
  const vfloat dg = dc * i * (1.0f - g * g);
  st<kShort>(q.dpre[0], n, l0, di);
  st<kShort>(q.dpre[1], n, l0, df);
  st<kShort>(q.dpre[2], n, l0, dout);
  st<kShort>(q.dpre[3], n, l0, dg);
  st<kShort>(q.grad_in[0], n, l0, di);
  st<kShort>(q.grad_in[1], n, l0, df);
  st<kShort>(q.grad_in[2], n, l0, dout);
  st<kShort>(q.grad_in[3], n, l0, dg);
  st<kShort>(q.dc_out, n, l0, dc * f);
}

GENFAST_TARGET_CLONES
void backward_run(const BackwardRun<float>& q, int64_t n) {
  if (q.ahead) {  // the runs of the row before
    for (int g = 0; g < 4; ++g) {
      prefetch<0>(q.act[g] + q.gates_ahead, n);
      prefetch<1>(q.grad_in[g] + q.gates_ahead, n);
    }
    prefetch<0>(q.c_prev + q.ahead, n);
    if (q.grad_h) prefetch<0>(q.grad_h + q.ahead, n);
    if (q.grad_c) prefetch<0>(q.grad_c + q.ahead, n);
  }
  if (n < kLanes) {
    backward_vector<true>(q, n, 0);
    return;
  }
  for (int64_t l = 0; l < n; l += kLanes) backward_vector<false>(q, n, std::min(l, n - kLanes));
}

void backward_run(const BackwardRun<double>& q, int64_t n) {
  for (int64_t l = 0; l < n; ++l) {
    const double i = q.act[0][l], f = q.act[1][l], o = q.act[2][l], g = q.act[3][l];
    const double tc = std::tanh(q.c[l]);
    const double dh = q.dh[l] + (q.grad_h ? q.grad_h[l] : q.grad_h_value);
    const double dc = q.dc_in[l] + (q.grad_c ? q.grad_c[l] : q.grad_c_value) +
                      dh * o * (1.0 - tc * tc);
    const double grads[4] = {dc * g * i * (1.0 - i), dc * q.c_prev[l] * f * (1.0 - f),
                             dh * tc * o * (1.0 - o), dc * i * (1.0 - g * g)};
    for (int k = 0; k < 4; ++k) q.dpre[k][l] = q.grad_in[k][l] = grads[k];
    q.dc_out[l] = dc * f;
  }
}

}  // namespace genfast::lstm_row

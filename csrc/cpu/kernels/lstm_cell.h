// The LSTM cell maths of genfast::lstm_rows (csrc/cpu/lstm_cell.h describes the runs) at this
// ISA level: gates, cell and hidden updates of a run of values in vectors along the run, forward
// and backward, on the vector maths layer.
#pragma once
#include <algorithm>

#include "vector_math.h"

namespace genfast::cpu::GENFAST_ISA_NS::lstm {

using simd::kLanes;
using simd::vfloat;

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
GENFAST_SIMD_INLINE void forward_vector(const lstm_row::ForwardRun<float>& q, int64_t n,
                                         int64_t l0) {
  const vfloat xi =
      ld<kShort>(q.pre[0], n, l0) + ld<kShort>(q.in[0], n, l0) + simd::load(q.bias[0] + l0);
  const vfloat xf =
      ld<kShort>(q.pre[1], n, l0) + ld<kShort>(q.in[1], n, l0) + simd::load(q.bias[1] + l0);
  const vfloat xo =
      ld<kShort>(q.pre[2], n, l0) + ld<kShort>(q.in[2], n, l0) + simd::load(q.bias[2] + l0);
  const vfloat xg =
      ld<kShort>(q.pre[3], n, l0) + ld<kShort>(q.in[3], n, l0) + simd::load(q.bias[3] + l0);
  const vfloat ei = simd::exp(-simd::abs(xi)), ef = simd::exp(-simd::abs(xf));
  const vfloat eo = simd::exp(-simd::abs(xo)), tg = simd::exp(-2.0f * simd::abs(xg));
  // 1 / (1 + e) of all four from one division: each denominator is in [1, 2].
  const vfloat di = 1.0f + ei, df = 1.0f + ef, dout = 1.0f + eo, dg = 1.0f + tg;
  const vfloat dif = di * df, dog = dout * dg, inv = 1.0f / (dif * dog);
  const vfloat i = simd::sigmoid_finish(xi, ei, df * dog * inv);
  const vfloat f = simd::sigmoid_finish(xf, ef, di * dog * inv);
  const vfloat o = simd::sigmoid_finish(xo, eo, dg * dif * inv);
  const vfloat g = simd::tanh_finish(xg, tg, dout * dif * inv);
  const vfloat c = f * ld<kShort>(q.c_prev, n, l0) + i * g;
  const vfloat h = o * simd::tanh(c);
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
void forward_run(const lstm_row::ForwardRun<float>& q, int64_t n) {
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

// dL/dh_r = grad_h + dh, dL/dc_r = grad_c + dc_in + dL/dh_r o (1 - tanh(c_r)^2); from them the
// gate gradients dL/dpre, and dL/dc_{r-1} = dL/dc_r f through the forget gate.
template <bool kShort>
GENFAST_SIMD_INLINE void backward_vector(const lstm_row::BackwardRun<float>& q, int64_t n,
                                          int64_t l0) {
  const vfloat i = ld<kShort>(q.act[0], n, l0), f = ld<kShort>(q.act[1], n, l0);
  const vfloat o = ld<kShort>(q.act[2], n, l0), g = ld<kShort>(q.act[3], n, l0);
  const vfloat grad_h = q.grad_h ? ld<kShort>(q.grad_h, n, l0) : simd::splat(q.grad_h_value);
  const vfloat grad_c = q.grad_c ? ld<kShort>(q.grad_c, n, l0) : simd::splat(q.grad_c_value);
  const vfloat tc = simd::tanh(ld<kShort>(q.c, n, l0));
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

void backward_run(const lstm_row::BackwardRun<float>& q, int64_t n) {
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

}  // namespace genfast::cpu::GENFAST_ISA_NS::lstm

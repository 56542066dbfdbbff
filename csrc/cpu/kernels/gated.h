// The gated activation's vector loops (csrc/gated.cpp): y = tanh(a) * sigmoid(b) and its
// gradients, over n floats, the last partial vector through a buffer.
#pragma once
#include <algorithm>

#include "vector_math.h"

namespace genfast::cpu::GENFAST_ISA_NS::gated {

using simd::kLanes;
using simd::vfloat;

struct Gate {
  vfloat tanh_a;   // tanh(a)
  vfloat sech2_a;  // 1 - tanh(a)^2 (backward only)
  vfloat sig_b;    // sigmoid(b)
  vfloat dsig_b;   // sigmoid(b) * (1 - sigmoid(b)) (backward only)
};

template <bool kBackward>
GENFAST_SIMD_INLINE Gate gate(vfloat a, vfloat b) {
  Gate g;
  const vfloat t = simd::exp(-2.0f * simd::abs(a)), r = 1.0f / (1.0f + t);
  g.tanh_a = simd::tanh_finish(a, t, r);
  const vfloat e = simd::exp(-simd::abs(b)), q = 1.0f / (1.0f + e);
  g.sig_b = simd::sigmoid_finish(b, e, q);
  if constexpr (kBackward) {
    // From t and e rather than 1 - tanh^2 and s (1 - s), which cancel for large |a| and b.
    g.sech2_a = 4.0f * t * r * r;
    g.dsig_b = e * q * q;
  }
  return g;
}

void forward(const float* __restrict a, const float* __restrict b, float* __restrict y,
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
void backward(const float* __restrict a, const float* __restrict b, const float* __restrict gy,
              float* __restrict ga, float* __restrict gb, int64_t n) {
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    const Gate g = gate<true>(simd::load(a + k), simd::load(b + k));
    const vfloat dy = simd::load(gy + k);
    simd::store(ga + k, dy * g.sig_b * g.sech2_a);
    simd::store(gb + k, dy * g.tanh_a * g.dsig_b);
  }
  if (k < n) {
    alignas(64) float ab[kLanes] = {}, bb[kLanes] = {}, gyb[kLanes] = {};
    alignas(64) float gab[kLanes], gbb[kLanes];
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

}  // namespace genfast::cpu::GENFAST_ISA_NS::gated

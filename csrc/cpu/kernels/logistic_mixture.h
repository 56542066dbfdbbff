// The discretized logistic mixture's float tile steps (csrc/logistic_mixture.cpp) at this ISA
// level: the maths of csrc/logistic_mixture_maths.h on vectors of simd::kLanes pixels.
#pragma once
#include <cmath>

#include "vector_math.h"

namespace genfast::cpu::GENFAST_ISA_NS::logistic_mixture {

// The operations the shared maths needs, on float vectors of this level.
struct VectorOps {
  using Scalar = float;
  using V = simd::vfloat;
  using Mask = simd::vint;
  static constexpr int kLanes = simd::kLanes;
  static V splat(double x) { return simd::splat(static_cast<float>(x)); }
  static V load(const float* p) { return simd::load(p); }
  static void store(float* p, V v) { simd::store(p, v); }
  static V exp(V x) { return simd::exp(x); }
  static V log(V x) { return simd::log(x); }
  static V tanh(V x) { return simd::tanh(x); }
  static V abs(V x) { return simd::abs(x); }
  static V max(V a, V b) { return a > b ? a : b; }
  static V select(Mask m, V a, V b) { return simd::select(m, a, b); }
  static Mask mask_not(Mask m) { return ~m; }
  static Mask mask_and(Mask a, Mask b) { return a & b; }
  static Mask mask_or(Mask a, Mask b) { return a | b; }
  static bool any(Mask m) {
    Mask folded = m;
    int32_t bits = 0;
    for (int l = 0; l < kLanes; ++l) bits |= folded[l];
    return bits != 0;
  }
};

#include "../../logistic_mixture_maths.h"

void forward(const float* params, const float* levels, int64_t n, int64_t stride, int channels,
             int mixtures, float levels_minus_1, float* scratch, float* log_lik) {
  mixture_log_likelihood<VectorOps>(params, levels, n, stride,
                                    MixtureShape{channels, mixtures, levels_minus_1}, scratch,
                                    log_lik);
}

void backward(const float* params, const float* levels, int64_t n, int64_t stride, int channels,
              int mixtures, float levels_minus_1, float grad_nll, float* grad, float* log_lik) {
  mixture_gradient<VectorOps>(params, levels, n, stride,
                              MixtureShape{channels, mixtures, levels_minus_1}, grad_nll, grad,
                              log_lik);
}

}  // namespace genfast::cpu::GENFAST_ISA_NS::logistic_mixture

// The reparameterisation's float tile steps (csrc/reparam.cpp); n is a multiple of 16 in
// std_and_kl (tiles are padded with zeros), any n elsewhere.
#pragma once
#include "vector_math.h"

namespace genfast::cpu::GENFAST_ISA_NS::reparam {

using simd::kLanes;

// std = exp(logvar / 2) and, if kl is given, the elementwise KL. Returns the KL summed over the
// first n elements (the rest of the padded tile is zeros and is ignored).
float std_and_kl(const float* __restrict mu, const float* __restrict logvar, int64_t n,
                 float* __restrict std_out, float* __restrict kl) {
  simd::vfloat kl_sum = simd::splat(0.0f);
  const int64_t padded = (n + 15) / 16 * 16;
  for (int64_t k = 0; k < padded; k += kLanes) {
    const simd::vfloat m = simd::load(mu + k), lv = simd::load(logvar + k);
    const simd::vfloat s = simd::exp(0.5f * lv);
    simd::store(std_out + k, s);
    if (kl != nullptr) {
      const simd::vfloat d = 0.5f * (m * m + s * s - 1.0f - lv);
      simd::store(kl + k, d);
      if (k + kLanes <= n) {
        kl_sum += d;
      } else {
        for (int64_t l = 0; l < n - k && l < kLanes; ++l) kl_sum[l] += d[l];
      }
    }
  }
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += kl_sum[l];
  return total;
}

void sample(const float* __restrict mu, const float* __restrict std_dev,
            float* __restrict noise_to_z, int64_t n) {
  for (int64_t k = 0; k < n; ++k) noise_to_z[k] = mu[k] + std_dev[k] * noise_to_z[k];
}

void accumulate(const float* __restrict grad_z, const float* __restrict noise,
                float* __restrict sum_g, float* __restrict sum_gn, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    sum_g[k] += grad_z[k];
    sum_gn[k] += grad_z[k] * noise[k];
  }
}

// d/dmu: dz/dmu = 1, dKL/dmu = mu.  d/dlogvar: dz/dlogvar = std * eps / 2 and
// dKL/dlogvar = (exp(logvar) - 1) / 2 = (std^2 - 1) / 2.
void grads(const float* __restrict mu, const float* __restrict std_dev,
           const float* __restrict sum_g, const float* __restrict sum_gn,
           const float* __restrict grad_kl, float* __restrict grad_mu,
           float* __restrict grad_logvar, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    grad_mu[k] = sum_g[k] + grad_kl[k] * mu[k];
    grad_logvar[k] =
        0.5f * (std_dev[k] * sum_gn[k] + grad_kl[k] * (std_dev[k] * std_dev[k] - 1.0f));
  }
}

}  // namespace genfast::cpu::GENFAST_ISA_NS::reparam

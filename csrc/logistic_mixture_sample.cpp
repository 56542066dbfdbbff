// CPU kernel of genfast::logistic_mixture_sample: draws integer images from the discretized
// logistic mixture of PixelCNN++ (Salimans et al. 2017, section 2.2), with the maths of
// logistic_mixture_sample_ref (genfast/ops/logistic_mixture.py) in float64, and its uniforms
// from genfast's Philox stream (uniform_of below, philox_uniform_ref in genfast/ops/philox.py),
// so that both draw the same image from the same seed except within rounding of a boundary.
//
// The cached PixelCNN++ sampler calls this once per pixel with params [B, P, 1, 1]: the work is
// a few dozen flops per image, so the call does no more than check, allocate and loop.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "logistic_mixture_common.h"
#include "philox.h"
#include "reparam_common.h"

namespace genfast::logistic_mixture {
namespace {

using at::Tensor;

constexpr double kLogScaleMin = -7.0;
constexpr int64_t kPixelsPerTask = 4096;  // fewer pixels run on the calling thread

// Uniform e of the stream (key, offset): output e % 4 of the philox block offset + e / 4, as
// (bits + 1/2) / 2^32, exactly representable in float64 and strictly inside (0, 1).
double uniform_of(uint64_t key, uint64_t offset, uint64_t e) {
  const PhiloxOut out = philox4x32(key, offset + e / 4);
  return (static_cast<double>(out.x[e % 4]) + 0.5) * 0x1p-32;
}

template <typename scalar_t>
void sample_kernel(const Tensor& params, const Problem& p, reparam::Seed seed, Tensor& out) {
  const scalar_t* params_p = params.const_data_ptr<scalar_t>();
  int64_t* out_p = out.mutable_data_ptr<int64_t>();
  const int64_t m_count = p.mixtures, c_count = p.channels, hw = p.pixels;
  at::parallel_for(0, p.batch * hw, kPixelsPerTask, [&](int64_t i0, int64_t i1) {
    std::vector<double> cdf(m_count);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / hw, pix = i % hw;
      auto param = [&](int64_t plane) {
        return static_cast<double>(params_p[(b * p.planes + plane) * hw + pix]);
      };
      // The uniforms of this pixel: planes of a [B, 1 + C, H, W] stream.
      auto uniform = [&](int64_t plane) {
        return uniform_of(seed.key, seed.offset,
                          static_cast<uint64_t>((b * (1 + c_count) + plane) * hw + pix));
      };
      // The component: inverse CDF of softmax(logits) at u * (total probability).
      double top = param(0);
      for (int64_t m = 1; m < m_count; ++m) top = std::max(top, param(m));
      double total = 0.0;
      for (int64_t m = 0; m < m_count; ++m) total += cdf[m] = std::exp(param(m) - top);
      double running = 0.0;
      for (int64_t m = 0; m < m_count; ++m) cdf[m] = running += cdf[m] / total;
      const double target = uniform(0) * cdf[m_count - 1];
      int64_t pick = 0;
      while (pick < m_count - 1 && cdf[pick] < target) ++pick;
      // Each channel's logistic by inverse CDF, its mean shifted by the earlier channels' draws.
      double drawn[4];
      int64_t k = 0;
      for (int64_t c = 0; c < c_count; ++c) {
        double mean = param(m_count + c * m_count + pick);
        for (int64_t e = 0; e < c; ++e, ++k)
          mean += std::tanh(param(m_count + 2 * c_count * m_count + k * m_count + pick)) *
                  drawn[e];
        const double log_scale =
            std::max(param(m_count + (c_count + c) * m_count + pick), kLogScaleMin);
        const double u = uniform(1 + c);
        const double x = mean + std::exp(log_scale) * (std::log(u) - std::log1p(-u));
        drawn[c] = std::clamp(x, -1.0, 1.0);
        // Round half to even, as torch.round.
        out_p[(b * c_count + c) * hw + pix] = static_cast<int64_t>(
            std::nearbyint((drawn[c] + 1.0) * (static_cast<double>(p.levels - 1) / 2.0)));
      }
    }
  });
}

Tensor logistic_mixture_sample_cpu(const Tensor& params, int64_t channels, int64_t levels,
                                   const Tensor& seed) {
  const Problem p = check_sample_args(params, channels, levels, c10::DeviceType::CPU);
  const reparam::Seed s = reparam::read_seed(seed);
  Tensor out = at::empty({p.batch, p.channels, params.size(2), params.size(3)},
                         params.options().dtype(at::kLong));
  if (out.numel() == 0) return out;
  const Tensor params_c = params.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params.scalar_type(),
                                  "logistic_mixture_sample",
                                  [&] { sample_kernel<scalar_t>(params_c, p, s, out); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("logistic_mixture_sample", &logistic_mixture_sample_cpu);
}

}  // namespace genfast::logistic_mixture

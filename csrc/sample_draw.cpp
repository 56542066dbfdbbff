// CPU kernels of the autoregressive samplers' categorical draws (genfast.models.sampling).
//
// categorical_draw: one draw per row of logits [n, L] by inverse CDF, the first level whose
// cumulative probability exceeds u * total for the row's uniform u. pointwise_categorical_draw
// fuses it with a sampler's output layer: the 1 x 1 masked convolution at one pixel per image,
// only the L output channels of the colour being drawn, then the draw, in one call. Both use the
// same row routine, so the cached sampler (fused) and the naive one (logits of the whole
// network, then categorical_draw) draw the same level from the same logits.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "cpu/kernel_table.h"
#include "masked_conv_common.h"
#include "masked_conv_pointwise.h"

namespace genfast::sampling {
namespace {

constexpr int64_t kLanes = cpu::kPadLanes<float>;  // exp_in_place takes whole 64-byte blocks

// The level drawn from one row of logits (`stride` apart) with uniform u in [0, 1).
// Probabilities exp(l - max) in float32 (float64 for float64 logits), sums in float64.
template <typename T>
int64_t draw_row(const T* logits, int64_t stride, int64_t levels, double u) {
  using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
  thread_local std::vector<acc_t> e;
  const int64_t padded = (levels + kLanes - 1) / kLanes * kLanes;
  e.assign(padded, -std::numeric_limits<acc_t>::infinity());  // exp(-inf) = 0 in the tail
  acc_t top = -std::numeric_limits<acc_t>::infinity();
  for (int64_t l = 0; l < levels; ++l) top = std::max(top, static_cast<acc_t>(logits[l * stride]));
  for (int64_t l = 0; l < levels; ++l) e[l] = static_cast<acc_t>(logits[l * stride]) - top;
  if constexpr (std::is_same_v<acc_t, float>) {
    cpu::kernels().exp_in_place(e.data(), padded);
  } else {
    for (int64_t l = 0; l < levels; ++l) e[l] = std::exp(e[l]);
  }
  double total = 0;
  for (int64_t l = 0; l < levels; ++l) total += e[l];
  const double target = u * total;
  double cumulative = 0;
  for (int64_t l = 0; l < levels; ++l) {
    cumulative += e[l];
    if (cumulative > target) return l;
  }
  return levels - 1;  // u * total rounded up to the total (or NaN logits)
}

void check_uniform(const at::Tensor& uniform, int64_t n) {
  TORCH_CHECK(uniform.device().is_cpu() && uniform.scalar_type() == at::kDouble &&
                  uniform.dim() == 1 && uniform.size(0) == n,
              "genfast: uniform must be a float64 CPU tensor of shape [", n, "], got ",
              uniform.sizes(), " ", uniform.scalar_type());
}

at::Tensor draw_rows(const at::Tensor& logits, const at::Tensor& uniform) {
  const int64_t n = logits.size(0), levels = logits.size(1);
  at::Tensor values = at::empty({n}, logits.options().dtype(at::kLong));
  const double* u = uniform.const_data_ptr<double>();
  int64_t* out = values.mutable_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "categorical_draw", [&] {
    const scalar_t* p = logits.const_data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i)
      out[i] = draw_row(p + i * logits.stride(0), logits.stride(1), levels,
                        u[i * uniform.stride(0)]);
  });
  return values;
}

at::Tensor categorical_draw_cpu(const at::Tensor& logits, const at::Tensor& uniform) {
  TORCH_CHECK(logits.device().is_cpu() && logits.dim() == 2 && logits.size(1) >= 1 &&
                  (logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble),
              "genfast: logits must be a float32/float64 CPU tensor [n, levels], got ",
              logits.sizes(), " ", logits.scalar_type());
  check_uniform(uniform, logits.size(0));
  return draw_rows(logits, uniform);
}

at::Tensor pointwise_categorical_draw_cpu(const at::Tensor& x, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias,
                                          int64_t data_channels, int64_t colour,
                                          const at::Tensor& uniform) {
  const masked_conv::Geometry g =
      masked_conv::make_geometry(x, weight, masked_conv::kMaskB, data_channels, 1, {});
  TORCH_CHECK(g.kh == 1 && g.kw == 1 && g.height == 1 && g.width == 1,
              "genfast: pointwise_categorical_draw needs a 1 x 1 weight and one pixel per image");
  TORCH_CHECK(0 <= colour && colour < data_channels,
              "genfast: colour must be in [0, data_channels), got ", colour);
  TORCH_CHECK(g.out_channels % data_channels == 0,
              "genfast: the output channels must split into data_channels equal blocks");
  check_uniform(uniform, g.batch);
  const int64_t levels = g.out_channels / data_channels;
  const at::Tensor logits =
      masked_conv::pointwise_pixel_rows(x, weight, bias, g, colour * levels, levels);
  return draw_rows(logits.view({g.batch, levels}), uniform);
}

}  // namespace

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("categorical_draw", &categorical_draw_cpu);
  m.impl("pointwise_categorical_draw", &pointwise_categorical_draw_cpu);
}

}  // namespace genfast::sampling

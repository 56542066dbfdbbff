#include "masked_conv_pointwise.h"

namespace genfast::masked_conv {
namespace {

at::ScalarType compute_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// x's output window as [B, Cin, pixels], in the compute dtype.
at::Tensor window_pixels(const at::Tensor& x, const Geometry& g) {
  return x.slice(2, g.row0, g.row1)
      .slice(3, g.col0, g.col1)
      .to(compute_type(x))
      .reshape({g.batch, g.in_channels, g.out_h() * g.out_w()});
}

// The masked weight as [Cout, Cin], in the compute dtype.
at::Tensor masked_matrix(const at::Tensor& weight, const Geometry& g, at::ScalarType type) {
  const at::Tensor w = weight.to(type);
  return (w * weight_mask(g, w.options())).reshape({g.out_channels, g.in_channels});
}

}  // namespace

bool is_pointwise(const Geometry& g) { return g.kh == 1 && g.kw == 1; }

at::Tensor pointwise_forward(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, const Geometry& g) {
  const auto format = x.suggest_memory_format();
  if (g.batch * g.out_channels * g.out_h() * g.out_w() == 0)
    return at::zeros({g.batch, g.out_channels, g.out_h(), g.out_w()},
                     x.options().memory_format(format));
  const at::ScalarType type = compute_type(x);
  at::Tensor y = at::matmul(masked_matrix(weight, g, type), window_pixels(x, g));
  if (bias.has_value()) y.add_(bias->to(type).unsqueeze(1));
  return y.view({g.batch, g.out_channels, g.out_h(), g.out_w()})
      .to(x.scalar_type())
      .contiguous(format);
}

std::tuple<at::Tensor, at::Tensor> pointwise_backward(const at::Tensor& grad_y,
                                                      const at::Tensor& x,
                                                      const at::Tensor& weight,
                                                      const Geometry& g,
                                                      std::array<bool, 3> output_mask) {
  const at::ScalarType type = compute_type(x);
  const at::Tensor gy = grad_y.to(type).reshape({g.batch, g.out_channels, g.out_h() * g.out_w()});
  at::Tensor gx = at::empty({0}, x.options()), gw = at::empty({0}, weight.options());
  if (output_mask[0]) {
    const at::Tensor gx_window = at::matmul(masked_matrix(weight, g, type).t(), gy)
                                     .view({g.batch, g.in_channels, g.out_h(), g.out_w()});
    const auto format = x.suggest_memory_format();
    if (g.out_h() == g.height && g.out_w() == g.width) {
      gx = gx_window.to(x.scalar_type()).contiguous(format);
    } else {
      // Pixels outside the output window reach no output of a 1 x 1 convolution.
      gx = at::zeros(x.sizes(), x.options().memory_format(format));
      gx.slice(2, g.row0, g.row1).slice(3, g.col0, g.col1).copy_(gx_window);
    }
  }
  if (output_mask[1]) {
    // Summed over the batch; the hidden channel pairs get zero, as through the reference's mask.
    const at::Tensor per_image = at::bmm(gy, window_pixels(x, g).transpose(1, 2));
    const at::Tensor w = per_image.sum(0).view(weight.sizes());
    gw = (w * weight_mask(g, w.options())).to(weight.scalar_type());
  }
  return {gx, gw};
}

}  // namespace genfast::masked_conv

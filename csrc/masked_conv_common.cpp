#include "masked_conv_common.h"

#include <algorithm>

namespace genfast::masked_conv {

static std::vector<Tap> visible_taps(const Geometry& g) {
  std::vector<Tap> taps;
  if (g.mask_type == kMaskV) {
    for (int64_t ty = 0; ty <= g.centre_y; ++ty)
      for (int64_t tx = 0; tx < g.kw; ++tx) taps.push_back(Tap{ty, tx, false});
    return taps;
  }
  // Groups grow with the channel index, so some pair passes the colour rule if the lowest input
  // group (0) passes it with the highest output group: a closed form, where trying every pair
  // would cost a one-pixel call as much as its convolution.
  const bool centre_used = g.in_channels > 0 && g.out_channels > 0 &&
                           g.centre_allows(0, g.out_channels - 1);
  for (int64_t ty = 0; ty <= g.centre_y; ++ty) {
    for (int64_t tx = 0; tx < g.kw; ++tx) {
      const bool centre = ty == g.centre_y && tx == g.centre_x;
      if (ty == g.centre_y && tx > g.centre_x) break;
      if (centre && !centre_used) continue;
      taps.push_back(Tap{ty, tx, centre});
    }
  }
  return taps;
}

Geometry make_geometry(const at::Tensor& x, const at::Tensor& weight, int64_t mask_type,
                       int64_t data_channels, int64_t dilation, at::IntArrayRef window) {
  TORCH_CHECK(x.dim() == 4, "genfast: masked_conv2d expects x of shape [batch, channels, height, "
              "width], got ", x.dim(), " dimensions");
  TORCH_CHECK(weight.dim() == 4, "genfast: masked_conv2d expects weight of shape [out, in, kh, kw]"
              ", got ", weight.dim(), " dimensions");
  TORCH_CHECK(x.size(1) == weight.size(1), "genfast: x has ", x.size(1), " channels but weight "
              "expects ", weight.size(1));
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), "genfast: x and weight must have the same "
              "dtype, got ", x.scalar_type(), " and ", weight.scalar_type());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "genfast: masked_conv2d needs floating-point "
              "inputs, got ", x.scalar_type());
  TORCH_CHECK(x.device() == weight.device(), "genfast: x and weight are on different devices");
  TORCH_CHECK(mask_type == kMaskA || mask_type == kMaskB || mask_type == kMaskV,
              "genfast: mask_type must be 0 (A), 1 (B) or 2 (V), got ", mask_type);
  TORCH_CHECK(dilation >= 1, "genfast: dilation must be >= 1, got ", dilation);
  TORCH_CHECK(weight.size(2) >= 1 && weight.size(3) >= 1, "genfast: empty kernel");
  Geometry g;
  g.batch = x.size(0);
  g.in_channels = x.size(1);
  g.height = x.size(2);
  g.width = x.size(3);
  g.out_channels = weight.size(0);
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  g.dilation = dilation;
  g.centre_y = (g.kh - 1) / 2;
  g.centre_x = (g.kw - 1) / 2;
  g.mask_type = mask_type;
  g.data_channels = data_channels;
  TORCH_CHECK(data_channels >= 1 && data_channels <= std::max<int64_t>(1, g.in_channels) &&
                  data_channels <= std::max<int64_t>(1, g.out_channels),
              "genfast: data_channels must be between 1 and the number of input and output "
              "channels, got ", data_channels, " with ", g.in_channels, " in and ",
              g.out_channels, " out");
  if (window.empty()) {
    g.row0 = 0, g.row1 = g.height, g.col0 = 0, g.col1 = g.width;
  } else {
    TORCH_CHECK(window.size() == 4, "genfast: window must be [row0, row1, col0, col1]");
    g.row0 = window[0], g.row1 = window[1], g.col0 = window[2], g.col1 = window[3];
    TORCH_CHECK(0 <= g.row0 && g.row0 <= g.row1 && g.row1 <= g.height && 0 <= g.col0 &&
                    g.col0 <= g.col1 && g.col1 <= g.width,
                "genfast: window ", window, " is not inside the ", g.height, "x", g.width,
                " output");
  }
  g.taps = visible_taps(g);
  return g;
}

void check_grad_output(const at::Tensor& grad_y, const Geometry& g) {
  TORCH_CHECK(grad_y.dim() == 4 && grad_y.size(0) == g.batch &&
                  grad_y.size(1) == g.out_channels && grad_y.size(2) == g.out_h() &&
                  grad_y.size(3) == g.out_w(),
              "genfast: grad_y must have the output's shape [", g.batch, ", ", g.out_channels,
              ", ", g.out_h(), ", ", g.out_w(), "], got ", grad_y.sizes());
}

// floor(ci * dc / cin) < m exactly when ci < ceil(m * cin / dc), with m = go for mask A and
// go + 1 for mask B. Mask V's centre carries every pair.
std::vector<int64_t> centre_inputs(const Geometry& g) {
  std::vector<int64_t> n(g.out_channels, g.in_channels);
  for (int64_t co = 0; co < g.out_channels && g.mask_type != kMaskV; ++co) {
    const int64_t m = co * g.data_channels / g.out_channels + (g.mask_type == kMaskA ? 0 : 1);
    n[co] = std::min(g.in_channels, (m * g.in_channels + g.data_channels - 1) / g.data_channels);
  }
  return n;
}

at::Tensor weight_mask(const Geometry& g, const at::TensorOptions& options) {
  auto mask = at::zeros({g.out_channels, g.in_channels, g.kh, g.kw}, at::kFloat);  // built on the CPU
  auto m = mask.accessor<float, 4>();
  const std::vector<int64_t> centre = centre_inputs(g);
  for (const Tap& t : g.taps)
    for (int64_t co = 0; co < g.out_channels; ++co)
      for (int64_t ci = 0; ci < g.in_channels; ++ci)
        m[co][ci][t.ty][t.tx] = !t.centre || ci < centre[co] ? 1.0f : 0.0f;
  return mask.to(options.dtype());
}

at::Tensor grad_bias(const at::Tensor& grad_y, const at::Tensor& x, bool wanted) {
  if (!wanted) return at::empty({0}, x.options());
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return grad_y.sum({0, 2, 3}, false, acc).to(x.scalar_type());
}

}  // namespace genfast::masked_conv

// Geometry of genfast::masked_conv2d, shared by the CPU and CUDA kernels: which taps of the kernel
// a PixelCNN mask leaves visible, the colour-group rule of the centre tap, the output window, and
// the argument checks. van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.4.
//
// The kernel's centre is tap ((kh - 1) / 2, (kw - 1) / 2) and 'same' padding puts it on the output
// pixel (as nn.Conv2d's padding="same"). Visible: every tap in a row above the centre, the taps left
// of the centre in its row, and the centre itself for the (input group, output group) pairs the
// colour rule allows: input group < output group for mask A, <= for mask B. Channel k of C belongs
// to group k * data_channels / C, so with data_channels = 1 mask A hides the centre and mask B shows it.
// Mask V is the vertical stack of the Gated PixelCNN: the centre row and every row above, whole.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace genfast::masked_conv {

enum MaskType : int64_t { kMaskA = 0, kMaskB = 1, kMaskV = 2 };

struct Tap {
  int64_t ty, tx;  // kernel row and column
  bool centre;     // the centre tap, visible only for the channel pairs the colour rule allows
};

struct Geometry {
  int64_t batch, in_channels, out_channels, height, width;
  int64_t kh, kw, dilation, centre_y, centre_x;
  int64_t mask_type, data_channels;
  // Output window [row0, row1) x [col0, col1) of the 'same'-sized output.
  int64_t row0, row1, col0, col1;
  std::vector<Tap> taps;  // visible taps in raster order

  int64_t out_h() const { return row1 - row0; }
  int64_t out_w() const { return col1 - col0; }
  // Whether the centre tap carries input channel ci to output channel co.
  bool centre_allows(int64_t ci, int64_t co) const {
    int64_t gi = ci * data_channels / in_channels, go = co * data_channels / out_channels;
    return mask_type == kMaskA ? gi < go : gi <= go;
  }
};

// The padded pixel-major copies the CPU and CUDA kernels make of the input (P) and of grad_y (Q).
// P covers the output window's receptive field: rows [row0 - cy*d, row1), columns
// [col0 - cx*d, col1 + (kw-1-cx)*d); tap (ty, tx) of output (oi, oj) reads P(oi + ty*d, oj + tx*d).
// Q holds grad_y with (cy*d, (kw-1)*d) zeros around it, so grad-input reads
// Q(pr - ty*d + q_row0, pc - tx*d + q_col0).
struct PaddedBuffers {
  int64_t ph, pw;  // P's rows and columns
  int64_t qh, qw;  // Q's rows and columns
  int64_t q_row0, q_col0;

  explicit PaddedBuffers(const Geometry& g)
      : ph(g.out_h() + g.centre_y * g.dilation),
        pw(g.out_w() + (g.kw - 1) * g.dilation),
        qh(g.out_h() + 2 * g.centre_y * g.dilation),
        qw(g.out_w() + 2 * (g.kw - 1) * g.dilation),
        q_row0(g.centre_y * g.dilation),
        q_col0((g.kw - 1) * g.dilation) {}
  // Image row and column of P's row pr and column pc.
  int64_t image_row(const Geometry& g, int64_t pr) const {
    return g.row0 - g.centre_y * g.dilation + pr;
  }
  int64_t image_col(const Geometry& g, int64_t pc) const {
    return g.col0 - g.centre_x * g.dilation + pc;
  }
  // P's rows [r_lo, r_hi) and columns [c_lo, c_hi) that lie inside the image.
  int64_t r_lo(const Geometry& g) const { return std::max<int64_t>(0, -image_row(g, 0)); }
  int64_t r_hi(const Geometry& g) const {
    return std::min<int64_t>(ph, g.height - image_row(g, 0));
  }
  int64_t c_lo(const Geometry& g) const { return std::max<int64_t>(0, -image_col(g, 0)); }
  int64_t c_hi(const Geometry& g) const {
    return std::min<int64_t>(pw, g.width - image_col(g, 0));
  }
};

// Checks the arguments (clear errors for every misuse) and works out the geometry.
Geometry make_geometry(const at::Tensor& x, const at::Tensor& weight, int64_t mask_type,
                       int64_t data_channels, int64_t dilation, at::IntArrayRef window);

// Checks what backward receives against the forward geometry.
void check_grad_output(const at::Tensor& grad_y, const Geometry& g);

// centre_allows as counts, for loops over channel pairs (it costs two divisions a pair): the
// centre tap carries input channels [0, n[co]) to output channel co, since groups grow with the
// channel index (all of them for mask V).
std::vector<int64_t> centre_inputs(const Geometry& g);

// The [out, in, kh, kw] 0/1 mask the op applies to the weight, in the weight's dtype.
at::Tensor weight_mask(const Geometry& g, const at::TensorOptions& options);

// dL/dbias = grad_y summed over batch and pixels, accumulated in float32 (float64 for double)
// and returned in x's dtype; an empty tensor when not wanted. The same on every device.
at::Tensor grad_bias(const at::Tensor& grad_y, const at::Tensor& x, bool wanted);

}  // namespace genfast::masked_conv

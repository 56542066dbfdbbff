#include "masked_conv_pointwise.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/kernel_table.h"
#include "cpu/strided_copy.h"

namespace genfast::masked_conv {
namespace {

using cpu::Segment;
using cpu::TileArgs;

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

// ----------------------------------------------------------------------------- forward
//
// The forward pass of an NCHW map: Y[co][j] = bias[co] + sum_ci Wm[co][ci] X[ci][j] image by image,
// X and Y being x's and y's window (each channel's pixels contiguous), with the register tiles of
// kernels/conv_tile.h: rows = output channels, SIMD vectors along the pixels, and the last partial
// vector of an image through a zero-padded copy. Not BLAS: BLAS picks its kernel by shape, so a
// one-pixel window came out with other bits than the same pixel of the full map, and a sampler's
// cached and naive samples drifted apart. Here every output element sums ci in order from zero,
// then adds the bias, as the gather kernel of masked_conv.cpp does with its one tap (the products
// taken the other way round, which IEEE multiplication does not mind); that kernel runs every
// other 1 x 1 forward (small windows, channels_last, float16/bfloat16) with the same bits.

// A parallel_for launch costs about what a core does in this many multiply-adds; less work per
// thread runs on the calling thread.
constexpr int64_t kParallelMacs = int64_t{1} << 18;

// C[n][j] = bias[n] + sum_{k < kdim} A[n][k] B[k][j], for n < rows and j < cols (a multiple of the
// vector width, at most kMaxVectors vectors): one column block, tiled over the rows.
template <typename acc_t>
void column_block(const acc_t* a, int64_t rows, int64_t kdim, const acc_t* b, int64_t b_stride,
                  int64_t cols, const acc_t* bias, acc_t* c, int64_t c_stride) {
  const int vectors = static_cast<int>(cols / cpu::lanes<acc_t>());
  const int64_t most = cpu::kernels().max_rows[vectors], count = (rows + most - 1) / most;
  const Segment seg{0, 0};
  const TileArgs args{kdim, 1, b_stride, kdim, c_stride, false};
  for (int64_t i = 0; i < count; ++i) {
    const int64_t n0 = i * rows / count, n1 = (i + 1) * rows / count;
    cpu::tile_kernel<acc_t>(static_cast<int>(n1 - n0), vectors, true)(
        a + n0 * kdim, b, &seg, 1, args, c + n0 * c_stride);
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t j = 0; j < cols; ++j) c[n * c_stride + j] += bias[n];
  }
}

// Columns [j0, j0 + cols) of an image's X (b_stride apart per channel) into Y (c_stride apart per
// channel), cols <= kMaxVectors vectors: whole vectors in place, a partial one through copies.
template <typename acc_t>
void columns(const acc_t* a, const Geometry& g, const acc_t* bias, const acc_t* x,
             int64_t x_stride, acc_t* y, int64_t y_stride, int64_t j0, int64_t cols) {
  const int64_t lanes = cpu::lanes<acc_t>();
  const int64_t cin = g.in_channels, cout = g.out_channels;
  const int64_t whole = cols / lanes * lanes, rest = cols - whole;
  if (whole > 0) column_block(a, cout, cin, x + j0, x_stride, whole, bias, y + j0, y_stride);
  if (rest == 0) return;
  std::vector<acc_t> xt(cin * lanes, acc_t(0)), yt(cout * lanes);
  cpu::copy_2d(x + j0 + whole, x_stride, int64_t{1}, xt.data(), lanes, int64_t{1}, cin, rest);
  column_block(a, cout, cin, xt.data(), lanes, lanes, bias, yt.data(), lanes);
  cpu::copy_2d(yt.data(), lanes, int64_t{1}, y + j0 + whole, y_stride, int64_t{1}, cout, rest);
}

// The column blocks of `n` columns: whole blocks of kMaxVectors vectors, then the rest.
template <typename acc_t>
int64_t blocks_of(int64_t n) {
  const int64_t block = cpu::kernels().max_vectors * cpu::lanes<acc_t>();
  return (n + block - 1) / block;
}

// NCHW: X and Y are x's and y's window, image by image.
template <typename acc_t>
void forward_in_place(const acc_t* a, const Geometry& g, const acc_t* bias, const at::Tensor& x,
                      at::Tensor& y) {
  const int64_t npix = g.out_h() * g.out_w(), blocks = blocks_of<acc_t>(npix);
  const int64_t block = cpu::kernels().max_vectors * cpu::lanes<acc_t>();
  const acc_t* xp = x.const_data_ptr<acc_t>() + g.row0 * x.stride(2) + g.col0 * x.stride(3);
  acc_t* yp = y.mutable_data_ptr<acc_t>();
  const int64_t block_macs = std::max<int64_t>(1, block * g.in_channels * g.out_channels);
  const int64_t grain = std::max<int64_t>(1, kParallelMacs / block_macs);
  at::parallel_for(0, g.batch * blocks, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / blocks, j0 = t % blocks * block;
      columns(a, g, bias, xp + b * x.stride(0), x.stride(1), yp + b * y.stride(0), y.stride(1),
              j0, std::min(block, npix - j0));
    }
  });
}

// One output pixel per image (a sampler's window): the images are the columns instead, so one
// register tile still covers a whole vector. X^T [Cin][images] is gathered, the same column
// blocks run with the same k order, and Y^T is scattered back.
template <typename acc_t>
void forward_one_pixel(const acc_t* a, const Geometry& g, const acc_t* bias, const at::Tensor& x,
                       at::Tensor& y) {
  const int64_t lanes = cpu::lanes<acc_t>();
  const int64_t block = cpu::kernels().max_vectors * lanes;
  const int64_t cin = g.in_channels, cout = g.out_channels;
  const acc_t* xp = x.const_data_ptr<acc_t>() + g.row0 * x.stride(2) + g.col0 * x.stride(3);
  acc_t* yp = y.mutable_data_ptr<acc_t>();
  thread_local std::vector<acc_t> xt, yt;
  for (int64_t b0 = 0; b0 < g.batch; b0 += block) {
    const int64_t cols = std::min(block, g.batch - b0);
    const int64_t padded = (cols + lanes - 1) / lanes * lanes;
    xt.assign(cin * padded, acc_t(0));
    yt.resize(cout * padded);
    cpu::copy_2d(xp + b0 * x.stride(0), x.stride(1), x.stride(0), xt.data(), padded, int64_t{1},
                 cin, cols);
    column_block(a, cout, cin, xt.data(), padded, padded, bias, yt.data(), padded);
    cpu::copy_2d(yt.data(), padded, int64_t{1}, yp + b0 * y.stride(0), y.stride(1), y.stride(0),
                 cout, cols);
  }
}

bool one_pixel(const Geometry& g) { return g.out_h() == 1 && g.out_w() == 1; }

}  // namespace

bool is_pointwise(const Geometry& g) { return g.kh == 1 && g.kw == 1; }

bool pointwise_forward_applies(const at::Tensor& x, const Geometry& g) {
  const bool f32 = x.scalar_type() == at::kFloat;
  if ((f32 || x.scalar_type() == at::kDouble) && one_pixel(g)) return true;
  return (f32 || x.scalar_type() == at::kDouble) &&
         x.suggest_memory_format() == at::MemoryFormat::Contiguous && x.stride(3) == 1 &&
         (g.out_h() == 1 || x.stride(2) == g.out_w()) &&
         g.out_h() * g.out_w() >= (f32 ? cpu::lanes<float>() : cpu::lanes<double>());
}

namespace {

// The masked weight as a [Cout][Cin] matrix (the weight itself when the mask hides nothing and
// it is laid out so) and the bias as a vector, in per-thread scratch; valid until the next call.
template <typename scalar_t>
std::pair<const scalar_t*, const scalar_t*> matrix_and_bias(
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, const Geometry& g) {
  const int64_t cin = g.in_channels, cout = g.out_channels;
  const scalar_t* wp = weight.const_data_ptr<scalar_t>();
  const int64_t w_co = weight.stride(0), w_ci = weight.stride(1);
  const std::vector<int64_t> centre = centre_inputs(g);
  const bool unmasked =
      std::all_of(centre.begin(), centre.end(), [cin](int64_t n) { return n == cin; });
  thread_local std::vector<scalar_t> a, b;
  const scalar_t* matrix = wp;
  if (!unmasked || w_ci != 1 || w_co != cin) {
    a.assign(cout * cin, scalar_t(0));
    for (int64_t co = 0; co < cout; ++co)
      for (int64_t ci = 0; ci < centre[co]; ++ci) a[co * cin + ci] = wp[co * w_co + ci * w_ci];
    matrix = a.data();
  }
  b.assign(cout, scalar_t(0));
  if (bias.has_value()) {
    const at::Tensor bc = bias->to(weight.scalar_type());
    const scalar_t* bp = bc.const_data_ptr<scalar_t>();
    for (int64_t co = 0; co < cout; ++co) b[co] = bp[co * bc.stride(0)];
  }
  return {matrix, b.data()};
}

}  // namespace

at::Tensor pointwise_forward(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, const Geometry& g) {
  TORCH_INTERNAL_ASSERT(pointwise_forward_applies(x, g));
  at::Tensor y = at::empty({g.batch, g.out_channels, g.out_h(), g.out_w()}, x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "masked_conv2d_1x1", [&] {
    const auto [matrix, b] = matrix_and_bias<scalar_t>(weight, bias, g);
    if (one_pixel(g))
      forward_one_pixel<scalar_t>(matrix, g, b, x, y);
    else
      forward_in_place<scalar_t>(matrix, g, b, x, y);
  });
  return y;
}

at::Tensor pointwise_pixel_rows(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, const Geometry& g,
                                int64_t row0, int64_t rows) {
  TORCH_CHECK(one_pixel(g) && pointwise_forward_applies(x, g) && 0 <= row0 && rows > 0 &&
                  row0 + rows <= g.out_channels,
              "genfast: pointwise_pixel_rows needs one float32/float64 pixel per image and "
              "output rows inside the weight");
  at::Tensor y = at::empty({g.batch, rows, 1, 1}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "masked_conv2d_1x1_rows", [&] {
    const auto [matrix, b] = matrix_and_bias<scalar_t>(weight, bias, g);
    Geometry part = g;  // forward_one_pixel reads only the sizes: rows instead of every output
    part.out_channels = rows;
    forward_one_pixel<scalar_t>(matrix + row0 * g.in_channels, part, b + row0, x, y);
  });
  return y;
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
